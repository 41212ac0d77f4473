"""A service over the fake image API, and an adapter that records what it is handed."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from core.config import Settings
from core.jobs import Job, Outcome, Progress, Request
from core.runtime import open_service
from core.service import Service

PLATFORM = "test"


class RecordingAdapter:
    """The chat side of a test: keeps every progress update and delivery."""

    def __init__(self, *, failures_before_success: int = 0) -> None:
        self.progress_updates: list[tuple[str, Progress]] = []
        self.deliveries: list[tuple[Job, Outcome]] = []
        self.failures_left = failures_before_success
        self._changed = asyncio.Condition()

    async def progress(self, job: Job, update: Progress) -> None:
        self.progress_updates.append((job.id, update))

    async def deliver(self, job: Job, outcome: Outcome) -> list[str]:
        if self.failures_left > 0:
            self.failures_left -= 1
            raise ConnectionError("chat platform unreachable")
        async with self._changed:
            self.deliveries.append((job, outcome))
            self._changed.notify_all()
        return [f"message-for-{job.id}"]

    def outcome_of(self, job_id: str) -> Outcome | None:
        return next((o for j, o in self.deliveries if j.id == job_id), None)

    async def wait_for(self, job_id: str, timeout: float = 10.0) -> Outcome:
        async with asyncio.timeout(timeout), self._changed:
            await self._changed.wait_for(lambda: self.outcome_of(job_id) is not None)
        outcome = self.outcome_of(job_id)
        assert outcome is not None
        return outcome


@asynccontextmanager
async def running(
    settings: Settings, adapter: RecordingAdapter, **service_options: Any
) -> AsyncIterator[Service]:
    async with open_service(settings, **service_options) as service:
        service.register(PLATFORM, adapter)
        await service.start()
        yield service


def request(text: str, key: str, **fields: Any) -> Request:
    values: dict[str, Any] = {
        "platform": PLATFORM,
        "tenant": "T1",
        "user_id": "U1",
        "text": text,
        "idempotency_key": key,
    }
    return Request(**{**values, **fields})


def db_path(settings: Settings) -> Path:
    return settings.sqlite_path


async def delivered(service: Service, job_id: str, timeout: float = 10.0) -> Job:
    """The job once the service has recorded its delivery: an adapter hears of a result
    before the record is written (on PostgreSQL, a read may come between)."""
    async with asyncio.timeout(timeout):
        while True:
            job = await service.job(job_id)
            if job is not None and job.delivered_at is not None:
                return job
            await asyncio.sleep(0.01)
