"""A database that stops taking writes (read-only, or full) during a burst: every request
ends in an image or one sentence, /healthz says so, and nothing is generated twice."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg
import httpx
import pytest

from core import metrics
from core.conversations import StoredPart
from core.errors import StoreError
from core.service import Service
from core.store import Store
from tests.conftest import make_settings
from tests.core.service_harness import RecordingAdapter, request, running
from tests.fakes.gemini import FakeGemini


@asynccontextmanager
async def refusing_writes(store: Store, kind: str) -> AsyncIterator[None]:
    """The fault, injected on the store's own SQLite connection: a read-only database
    (`query_only`), or a full one (no page may be added)."""
    db = store.database.connection  # type: ignore[attr-defined]  # SQLite's one connection
    if kind == "read-only":
        await db.execute("PRAGMA query_only = ON")
    else:
        # no free page left to fill either, whatever the page size
        await db.executescript("PRAGMA incremental_vacuum;")
        pages = (await (await db.execute("PRAGMA page_count")).fetchone())[0]
        await db.execute(f"PRAGMA max_page_count = {pages}")
    try:
        yield
    finally:
        await db.execute("PRAGMA query_only = OFF")
        await db.execute("PRAGMA max_page_count = 1073741823")


async def until(check: object, what: str, timeout: float = 10.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.02)


async def healthz(
    service: Service, *, until_status: int | None = None, timeout: float = 10.0
) -> httpx.Response:
    """GET /healthz once, or until it answers `until_status`."""
    runner = await metrics.serve(0, host="127.0.0.1", health=service.health)
    try:
        port = runner.addresses[0][1]
        deadline = asyncio.get_running_loop().time() + timeout
        async with httpx.AsyncClient() as client:
            while True:
                answer = await client.get(f"http://127.0.0.1:{port}/healthz")
                if until_status in (None, answer.status_code):
                    return answer
                assert asyncio.get_running_loop().time() < deadline, f"no {until_status}"
                await asyncio.sleep(0.02)
    finally:
        await runner.cleanup()


@asynccontextmanager
async def postgresql_refusing_writes(url: str) -> AsyncIterator[None]:
    """The fault on PostgreSQL: the database turned read-only, as a failover to a standby
    leaves it, with every connection to it cut (the pool connects again, read-only)."""
    admin = await asyncpg.connect(url)
    name = await admin.fetchval("SELECT current_database()")

    async def read_only(on: bool) -> None:
        await admin.execute(
            f'ALTER DATABASE "{name}" SET default_transaction_read_only = {"on" if on else "off"}'
        )
        await admin.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
            "WHERE datname = $1 AND pid <> pg_backend_pid()",
            name,
        )

    await read_only(True)
    try:
        yield
    finally:
        await read_only(False)
        await admin.close()


@pytest.fixture(params=["read-only", "full", "postgresql read-only"])
def fault(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, str]:
    """The kind of fault, and the database it strikes."""
    kind = str(request.param)
    if kind.startswith("postgresql"):
        return kind, str(request.getfixturevalue("postgres_url"))
    return kind, f"sqlite:///{tmp_path / 'imagebot.sqlite3'}"


async def test_a_burst_through_a_store_fault_ends_in_images_or_one_sentence(
    tmp_path: Path, fake_gemini: FakeGemini, fault: tuple[str, str]
) -> None:
    kind, url = fault
    fake_gemini.latency = 0.4
    settings = make_settings(
        tmp_path,
        fake_gemini,
        DATABASE_URL=url,
        IMAGEBOT_LEASE_SECONDS=0.3,
        IMAGEBOT_MAX_JOBS_PER_USER=20,
    )
    adapter = RecordingAdapter()
    refused: list[str] = []
    async with running(settings, adapter) as service:
        before = [(await service.submit(request(f"fox {n}", f"k{n}"))).job.id for n in range(4)]
        await fake_gemini.wait_for_requests(4)
        refusing = (
            postgresql_refusing_writes(url)
            if kind.startswith("postgresql")
            else refusing_writes(service.store, kind)
        )
        async with refusing:
            # the four under way are answered while nothing can be stored
            await until(lambda: len(fake_gemini.responses) == 4, "the four answers")
            # /healthz while writes are refused (a write that needs no new page may still
            # succeed on a full disk and clear it for a moment: polled, not read once)
            during = await healthz(service, until_status=503)
            for n in range(4, 7):
                try:
                    await service.submit(request(f"cat {n} " + "x" * 3000, f"k{n}"))
                except StoreError as exc:
                    refused.append(exc.message)
            assert adapter.deliveries == [], "nothing is shown before it is stored"
        for job_id in before:
            await adapter.wait_for(job_id)
        after = await service.submit(request("an owl", "k-after"))
        await adapter.wait_for(after.job.id)
        await until(lambda: service.health()[0], "health to come back")
        healthy = await healthz(service)

    assert during.status_code == 503 and during.json()["ok"] is False
    assert "cannot write" in during.json()["database"]
    assert healthy.status_code == 200
    if kind.endswith("read-only"):
        assert len(refused) == 3
    assert all(m.startswith("I could not save this") for m in refused)
    outcomes = [o for _, o in adapter.deliveries]
    assert all(o.ok and len(o.images) == 1 for o in outcomes)
    # every image was paid for once: the answers kept in memory were stored, not asked again
    delivered = len(adapter.deliveries)
    assert len(fake_gemini.requests) == delivered == 5 + (3 - len(refused))


async def test_a_job_whose_worker_lost_it_is_not_kept_alive_by_lease_renewal(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    settings = make_settings(tmp_path, fake_gemini, IMAGEBOT_LEASE_SECONDS=0.3)
    adapter = RecordingAdapter()
    async with running(settings, adapter) as service:
        store = service.store
        # a job this process claimed and then lost track of, as a crashed worker leaves it
        stray = await service.submit(request("a stray fox", "k-stray"))
        await adapter.wait_for(stray.job.id)
        created, _ = await store.create_job(
            _new_job("lost"),
            thread_key="t-lost",
            parent_turn_id=None,
            user_parts=[StoredPart(text="a lost fox")],
            user_images=[],
            owner=service.owner,
            lease_seconds=0.3,
        )
        assert await store.claim(created.id, service.owner, 0.3)
        # its lease lapses, so this very process takes it over and runs it
        outcome = await adapter.wait_for(created.id)

    assert outcome.ok


def _new_job(key: str):  # type: ignore[no-untyped-def]
    from core.options import Options
    from core.store import NewJob

    return NewJob(
        id=f"job-{key}",
        idempotency_key=key,
        kind="generate",
        platform="test",
        tenant="T1",
        user_id="U9",
        prompt="a lost fox",
        options=Options(model="gemini-3.1-flash-image", size="1K"),
        target={},
    )


async def test_a_request_answered_while_the_store_fails_is_let_go_once_it_works(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    from core.intake import Intake

    settings = make_settings(tmp_path, fake_gemini, IMAGEBOT_LEASE_SECONDS=0.3)
    told: list[str] = []

    async def tell(message: str) -> None:
        told.append(message)

    async def acknowledge() -> None:
        return None

    async with running(settings, RecordingAdapter()) as service:
        intake = Intake(service, "test")
        assert await intake.receive("k1", {"text": "a fox"}, acknowledge=acknowledge, tell=tell)
        async with refusing_writes(service.store, "read-only"):
            await intake.finish("k1", lambda: service.submit(request("a fox", "k1")), tell)
            held_during = await service.store.database.fetchrow("SELECT count(*) FROM intake")
        await until(lambda: service.health()[0], "the store to take writes again")
        await service.upkeep()
        held_after = await service.store.database.fetchrow("SELECT count(*) FROM intake")

    assert told and told[0].startswith("I could not save this")
    assert held_during is not None and held_during[0] == 1
    assert held_after is not None and held_after[0] == 0, "let go, so no process runs it later"
