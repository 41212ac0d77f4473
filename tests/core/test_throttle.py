"""Concurrency that follows the image API: each model's limit shrinks to what the API
accepts and grows back when it takes more, jobs are served in turns across users and
tenants, and a budget bounds the answer bytes held in memory."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from core.jobs import Job, Outcome
from core.service import Service
from core.throttle import AdaptiveLimit
from tests.conftest import make_settings
from tests.core.service_harness import RecordingAdapter, delivered, request, running
from tests.fakes.gemini import FakeGemini


async def until(check: object, what: str, timeout: float = 20.0) -> None:
    deadline = asyncio.get_running_loop().time() + timeout
    while not check():  # type: ignore[operator]
        assert asyncio.get_running_loop().time() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


async def burst(service: Service, adapter: RecordingAdapter, prefix: str, n: int) -> list[Job]:
    submitted = [
        await service.submit(request(f"{prefix} {i}", f"{prefix}-{i}", user_id=f"{prefix}{i}"))
        for i in range(n)
    ]
    for s in submitted:
        await adapter.wait_for(s.job.id, timeout=30)
    return [await delivered(service, s.job.id) for s in submitted]


async def test_the_limit_shrinks_to_what_the_api_takes_and_grows_when_it_takes_more(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    fake_gemini.latency = 0.1
    fake_gemini.capacity = 3  # the API takes 3 at once and answers 429 beyond
    fake_gemini.capacity_retry_delay = 0.1
    settings = make_settings(tmp_path, fake_gemini, IMAGEBOT_MAX_CONCURRENCY=32)
    adapter = RecordingAdapter()
    async with running(settings, adapter) as service:
        sent = service.catalog.default.wire_id(service.gemini.provider.name)
        limit = service.gemini.throttle.limit_for(sent)
        first = await burst(service, adapter, "fox", 18)
        shrunk, refused_then = limit.limit, fake_gemini.refused

        fake_gemini.capacity = 8  # the quota was raised
        second = await burst(service, adapter, "owl", 32)

    # no request failed for the API's refusals, and each was counted as the API saw it
    assert all(o.ok for _, o in adapter.deliveries) and len(adapter.deliveries) == 50
    assert sum(job.api_calls for job in first + second) == len(fake_gemini.requests)
    assert 3 <= shrunk < 5, "the limit settles on what the API takes, probing one above"
    # a few rounds of refusals found the limit; then at most one probe per few calls
    assert refused_then < 18 + 18
    assert limit.limit >= 5, "more successes at the limit raised it"
    assert fake_gemini.peak_in_flight >= 5


async def test_a_refusal_pauses_every_call_to_the_model_for_the_time_asked() -> None:
    limit = AdaptiveLimit("m", 8)
    loop = asyncio.get_running_loop()
    async with limit.slot() as slot:
        slot.refused(0.3)
    refused_at = loop.time()
    assert limit.room == 0
    async with limit.slot() as slot:  # waits out the pause, as every other call would
        started = loop.time()
        slot.succeeded()
    assert started - refused_at >= 0.29
    assert limit.limit == 4.0, "halved at most: nothing else was in flight to measure"


async def test_the_limit_keeps_what_was_in_flight_when_the_refusal_came() -> None:
    limit = AdaptiveLimit("m", 64)
    release = asyncio.Event()
    entered = 0

    async def accepted() -> None:
        nonlocal entered
        async with limit.slot() as slot:
            entered += 1
            await release.wait()
            slot.succeeded()

    running_calls = [asyncio.create_task(accepted()) for _ in range(40)]
    await until(lambda: entered == 40, "40 calls in flight")
    async with limit.slot() as slot:
        slot.refused(0.05)
    await until(lambda: not limit.paused and limit.limit < 64, "the pause to end")
    assert limit.limit == 40.0
    release.set()
    await asyncio.gather(*running_calls)


@pytest.mark.parametrize("tenants", ["one workspace", "two workspaces"])
async def test_a_burst_of_20_does_not_keep_another_users_2_waiting(
    tmp_path: Path, fake_gemini: FakeGemini, database_url: str, tenants: str
) -> None:
    fake_gemini.latency = 0.3  # the other user's two are queued long before two ants end
    settings = make_settings(
        tmp_path,
        fake_gemini,
        DATABASE_URL=database_url,
        IMAGEBOT_MAX_CONCURRENCY=2,  # the API's pace: two at a time
        IMAGEBOT_MAX_JOBS_PER_USER=20,
    )
    other = "T2" if tenants == "two workspaces" else "T1"
    adapter = RecordingAdapter()
    async with running(settings, adapter) as service:
        many = [await service.submit(request(f"ant {n}", f"a{n}", user_id="UA")) for n in range(20)]
        await fake_gemini.wait_for_requests(2)
        few = [
            await service.submit(request(f"bee {n}", f"b{n}", user_id="UB", tenant=other))
            for n in range(2)
        ]
        fake_gemini.latency = 0.02  # the order is settled: the rest may go quickly
        for s in many + few:
            await adapter.wait_for(s.job.id, timeout=30)
        jobs = [await service.job(s.job.id) for s in many + few]

    # the order in which the jobs were taken to run
    taken = [job.prompt for job in sorted(jobs, key=lambda j: (j.started_at, j.seq))]
    assert len(fake_gemini.requests) == 22
    # two of the burst were under way; the other user's two come next, not after all 20
    assert taken.index("bee 1") < 6, taken
    # the places shown were true: next, and the one after
    assert [s.position for s in few] == [1, 2]
    ants = [p for p in taken if p.startswith("ant")]
    assert ants == [f"ant {n}" for n in range(20)], "one user's own requests keep their order"


class BlockingAdapter(RecordingAdapter):
    """Deliveries wait until released: answers pile up between the API and the chat."""

    def __init__(self) -> None:
        super().__init__()
        self.release = asyncio.Event()
        self.waiting = 0

    async def deliver(self, job: Job, outcome: Outcome) -> list[str]:
        self.waiting += 1
        await self.release.wait()
        return await super().deliver(job, outcome)


async def test_the_memory_budget_holds_a_burst_of_large_answers(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    fake_gemini.photo = "png"  # ~2.5 MB a picture at 1K, 3.3 MB of base64 in the answer
    settings = make_settings(
        tmp_path,
        fake_gemini,
        IMAGEBOT_MEMORY_BUDGET_MB=16,
        IMAGEBOT_MAX_JOBS_PER_USER=12,
    )
    adapter = BlockingAdapter()
    async with running(settings, adapter) as service:
        budget = service.gemini.throttle.memory
        jobs = [(await service.submit(request(f"kiwi {n}", f"k{n}"))).job for n in range(12)]
        await fake_gemini.wait_for_requests(12)
        await until(lambda: len(fake_gemini.responses) == 12, "every answer sent")
        await until(lambda: adapter.waiting >= 2, "deliveries to wait")
        await until(lambda: budget.waiting > 0, "answers to wait for memory")
        held_up = [job.id for job in jobs if (await service.job(job.id)).state == "running"]
        assert budget.used <= budget.capacity
        assert held_up, "answers beyond the budget wait, unread, until memory is free"
        assert adapter.waiting < 12
        adapter.release.set()
        for job in jobs:
            assert (await adapter.wait_for(job.id, timeout=30)).ok
        assert budget.peak <= budget.capacity
    assert budget.used == 0, "every hold was let go once its job was delivered"
