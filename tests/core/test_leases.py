"""Leases on a clock the test moves: what a dead process left is taken over, queued, run and
delivered by a live one, and nothing is taken before its lease runs out."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

from core.runtime import open_service
from tests.conftest import make_settings
from tests.core.service_harness import RecordingAdapter, request
from tests.fakes.gemini import FakeGemini


class Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


async def test_a_job_left_running_by_a_dead_process_is_taken_over_only_when_its_lease_ends(
    tmp_path: Path, fake_gemini: FakeGemini, database_url: str
) -> None:
    clock = Clock()
    # long leases: nothing lapses by the wall clock while the test runs
    settings = make_settings(
        tmp_path, fake_gemini, DATABASE_URL=database_url, IMAGEBOT_LEASE_SECONDS=60
    )
    fake_gemini.latency = 30.0
    async with open_service(settings, clock=clock, owner="dead") as dead:
        dead.register("test", RecordingAdapter())
        await dead.start()
        submitted = await dead.submit(request("a fox", "k1"))
        await fake_gemini.wait_for_requests(1)
        await dead.abandon()  # SIGKILL mid-call: the job stays running, leased to "dead"
    fake_gemini.latency = 0.0
    adapter = RecordingAdapter()
    async with open_service(settings, clock=clock, owner="alive") as alive:
        alive.register("test", adapter)
        await alive.start()
        await alive.upkeep()
        before = await alive.job(submitted.job.id)
        shown_before = list(adapter.progress_updates)
        clock.advance(61)
        await alive.upkeep()  # the lease has run out: taken over, queued, run
        outcome = await adapter.wait_for(submitted.job.id)
        after = await alive.job(submitted.job.id)

    assert before is not None and before.state == "running" and shown_before == []
    assert outcome.ok and after is not None and after.attempts == 2
    assert len(fake_gemini.requests) == 2 and after.api_calls == 2


async def test_a_held_request_of_a_dead_process_is_resumed_once_its_lease_ends(
    tmp_path: Path, fake_gemini: FakeGemini, database_url: str
) -> None:
    clock = Clock()
    settings = make_settings(
        tmp_path, fake_gemini, DATABASE_URL=database_url, IMAGEBOT_LEASE_SECONDS=60
    )
    async with open_service(settings, clock=clock, owner="dead") as dead:
        dead.register("test", RecordingAdapter())
        assert await dead.hold("test", "msg-1", {"text": "a fox"})
        await dead.abandon()
    resumed: list[dict[str, object]] = []
    arrived = asyncio.Event()

    async def resume(payload: dict[str, object]) -> None:
        resumed.append(payload)
        arrived.set()

    async with open_service(settings, clock=clock, owner="alive") as alive:
        alive.register("test", RecordingAdapter(), resume=resume)
        await alive.start()
        await alive.upkeep()
        early = list(resumed)
        clock.advance(61)
        await alive.upkeep()
        async with asyncio.timeout(5):  # resumed in a task of its own
            await arrived.wait()

    assert early == [] and resumed == [{"text": "a fox"}]
