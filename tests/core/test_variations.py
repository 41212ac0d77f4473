"""Variations (--n): several images for one request, each its own generation (sent,
counted and charged on its own), shown together once all have ended; picking one continues
the conversation from that image."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path

import pytest

from core import wording
from core.config import Settings
from core.conversations import StoredPart
from core.errors import Undeliverable, UserFacingError
from core.jobs import Job, Outcome
from core.options import Options
from core.store import JobResult, NewJob, Store
from tests.conftest import make_settings
from tests.core.service_harness import RecordingAdapter, delivered, request, running
from tests.fakes.gemini import FakeGemini, Fault, inline_images


async def test_n_4_makes_four_calls_at_once_and_shows_them_together_then_one_continues(
    tmp_path: Path, fake_gemini: FakeGemini, database_url: str
) -> None:
    fake_gemini.latency = 0.3
    adapter = RecordingAdapter()
    settings = make_settings(tmp_path, fake_gemini, DATABASE_URL=database_url)
    async with running(settings, adapter) as service:
        submitted = await service.submit(request("a fox --n 4 --ar 16:9", "k1"))
        # all four are sent before any answers: in parallel, not one after another
        await fake_gemini.wait_for_requests(4)
        assert all(r.status is None for r in fake_gemini.requests)
        shown = await adapter.wait_for(submitted.job.id)
        first = await delivered(service, submitted.job.id)
        picks = [v.job for v in shown.variations]
        stored = [await service.job(p.id) for p in picks]
        deliveries = len(adapter.deliveries)

        third = picks[2]
        night = await service.submit(request("make it night", "k2", continue_job=third.id))
        await delivered(service, night.job.id)
        usage = await service.usage("test", "T1", "U1")

    assert deliveries == 1  # one message for all four
    assert [v.outcome.ok for v in shown.variations] == [True] * 4
    images = [v.outcome.images[0].data for v in shown.variations]
    assert len(set(images)) == 4
    assert sorted(images) == sorted(r.image for r in fake_gemini.responses[:4])
    assert first.group_id == first.id == picks[0].id
    for job in stored:
        assert job is not None and job.state == "succeeded" and job.delivered_at is not None
        assert job.api_calls == 1 and job.cost_usd > 0 and job.group_id == first.id
        assert job.options.aspect_ratio == "16:9" and job.options.n == 4
        assert job.user_turn_id == first.user_turn_id  # one prompt, four answers beside it
    assert len({job.model_turn_id for job in stored if job}) == 4
    # the edit of image 3 sends image 3, and no other of the four
    edit = fake_gemini.requests[4].json
    assert inline_images(edit["contents"]) == [shown.variations[2].outcome.images[0].data]
    assert edit["contents"][-1]["parts"][-1]["text"] == "make it night"
    assert usage.images == 5  # each variation counts as an image


async def test_one_variation_failing_still_shows_the_others_with_its_reason(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    fake_gemini.faults.append(Fault("prompt_blocked"))
    adapter = RecordingAdapter()
    async with running(make_settings(tmp_path, fake_gemini), adapter) as service:
        submitted = await service.submit(request("a fox --n 3", "k1"))
        shown = await adapter.wait_for(submitted.job.id)
    assert shown.ok
    assert sorted(v.outcome.ok for v in shown.variations) == [False, True, True]
    failed = next(v for v in shown.variations if not v.outcome.ok)
    assert "safety" in (failed.outcome.error or "")
    assert len(fake_gemini.requests) == 3


async def test_limits_count_each_variation_and_refuse_before_any_call(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    adapter = RecordingAdapter()
    settings = make_settings(
        tmp_path, fake_gemini, IMAGEBOT_MAX_JOBS_PER_USER=3, IMAGEBOT_DAILY_IMAGES_PER_USER=5
    )
    async with running(settings, adapter) as service:
        with pytest.raises(UserFacingError) as too_many:
            await service.submit(request("a fox --n 4", "k1"))
        made = await service.submit(request("a fox --n 3", "k2"))
        await delivered(service, made.job.id)
        with pytest.raises(UserFacingError) as daily:
            await service.submit(request("a fox --n 3", "k3"))
        jobs = await service.history("test", "T1", "U1")
    assert too_many.value.message == (
        "4 images would put you over the 3 you may have in progress at once (you have 0): "
        "ask for fewer with `--n`, or wait for one to finish."
    )
    assert daily.value.message.startswith(
        "You have 2 images left today, not enough for 3: ask for fewer with `--n`;"
    )
    assert len(fake_gemini.requests) == 3
    assert len(jobs.items) == 3


@pytest.mark.parametrize("raw", ["0", "5", "two", "1.5", "-1"])
async def test_a_bad_n_is_one_sentence(tmp_path: Path, fake_gemini: FakeGemini, raw: str) -> None:
    adapter = RecordingAdapter()
    async with running(make_settings(tmp_path, fake_gemini), adapter) as service:
        with pytest.raises(UserFacingError) as caught:
            await service.submit(request(f"a fox --n {raw}", "k1"))
    assert caught.value.message == (
        "`--n` is how many images to make at once, a whole number from 1 to 4 (for example "
        f"`--n 4`), not `{raw}`."
    )
    assert not fake_gemini.requests


async def test_a_saved_n_applies_and_reroll_and_upscale_make_one(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    adapter = RecordingAdapter()
    async with running(make_settings(tmp_path, fake_gemini), adapter) as service:
        await service.set_user_defaults("test", "T1", "U1", Options(n=2))
        submitted = await service.submit(request("a fox", "k1"))
        shown = await adapter.wait_for(submitted.job.id)
        second = shown.variations[1].job
        again = await service.submit(request("", "r1", kind="reroll", continue_job=second.id))
        rerolled = await adapter.wait_for(again.job.id)
        varied = await service.submit(request("", "v1", kind="vary", continue_job=second.id))
        variations = await adapter.wait_for(varied.job.id)
    assert len(shown.variations) == 2
    assert rerolled.ok and not rerolled.variations and again.job.group_id is None
    # Vary makes as many as the request it picks from, each from the picked image
    assert len(variations.variations) == 2
    vary_calls = fake_gemini.requests[3:]
    assert len(vary_calls) == 2
    for call in vary_calls:
        assert inline_images(call.json["contents"]) == [shown.variations[1].outcome.images[0].data]
        assert call.json["contents"][-1]["parts"][-1]["text"] == wording.VARY_PROMPT


async def test_cancel_of_the_request_stops_every_variation(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    fake_gemini.latency = 0.5
    adapter = RecordingAdapter()
    settings = make_settings(tmp_path, fake_gemini, IMAGEBOT_MAX_CONCURRENCY=1)
    async with running(settings, adapter) as service:
        submitted = await service.submit(request("a fox --n 3", "k1"))
        await fake_gemini.wait_for_requests(1)
        said = await service.cancel("test", "T1", submitted.job.id, "U1")
        shown = await adapter.wait_for(submitted.job.id)
        await delivered(service, submitted.job.id)
    assert said.startswith("Cancelled: the image will not be shown.")
    assert not shown.ok
    assert [v.outcome.error for v in shown.variations] == [
        wording.CANCELLED_RUNNING,
        wording.CANCELLED_QUEUED,
        wording.CANCELLED_QUEUED,
    ]
    assert len(fake_gemini.requests) == 1  # the two queued were never sent
    assert len(adapter.deliveries) == 1


async def test_variations_are_delivered_once_by_whoever_ends_the_last_even_after_a_crash(
    database_url: str,
) -> None:
    store = await Store.open(database_url)
    try:
        new = NewJob(
            id="first",
            idempotency_key="k",
            kind="generate",
            platform="test",
            tenant="T1",
            user_id="U1",
            prompt="a fox",
            options=Options(model="gemini-3.1-flash-image-preview", size="1K", n=3),
            target={},
        )
        first, created = await store.create_job(
            new,
            thread_key="t1",
            parent_turn_id=None,
            user_parts=[StoredPart(text="a fox")],
            user_images=[],
            owner="a",
            lease_seconds=0.0,
            variations=["second", "third"],
        )
        assert created and first.group_id == "first"
        # three processes run one each; "a" ends first, "b" next, "c" (which dies) last
        assert await store.claim("first", "a", 30.0)
        # the other two were left by "a" (their leases ran out): "b" takes both, keeps the
        # second and loses the third to "c" the same way
        assert len(await store.take_over_expired(["test"], "b", 30.0)) == 2
        assert await store.claim("second", "b", 30.0)
        assert await store.claim("third", "b", 0.0)
        assert [j.id for j in await store.take_over_expired(["test"], "c", 30.0)] == ["third"]
        assert await store.claim("third", "c", 0.0)
        done = JobResult("failed", api_calls=1, error_message="no")
        await store.finish("first", "a", done)
        assert await store.variations_to_deliver("first", "a") is None  # two still open
        await store.finish("second", "b", done)
        assert await store.variations_to_deliver("first", "b") is None
        await store.finish("third", "c", done)
        # the last to end is the deliverer, and nobody else
        assert await store.variations_to_deliver("first", "a") is None
        assert [j.id for j in await store.variations_to_deliver("first", "c") or []] == [
            "first",
            "second",
            "third",
        ]
        # "c" dies before delivering: its lease runs out, and only the first job is taken
        # over (it shows them all); the others never are
        deadline = time.time() + 5
        taken: list[Job] = []
        while not taken and time.time() < deadline:
            taken = await store.take_over_expired(["test"], "d", 30.0)
        assert [j.id for j in taken] == ["first"]
        jobs = await store.variations_to_deliver("first", "d")
        assert jobs is not None and len(jobs) == 3
        await store.record_delivery(jobs[0], ["m1"])
        assert await store.variations_to_deliver("first", "d") is None
        assert all(j.delivered_at for j in await store.variations("first"))
        assert await store.take_over_expired(["test"], "e", 30.0) == []
    finally:
        await store.close()


class _Nowhere(RecordingAdapter):
    """A chat that takes nothing: every delivery is refused for good."""

    def __init__(self) -> None:
        super().__init__()
        self.attempts: list[Outcome] = []
        self.told = asyncio.Event()  # the sentence saying so was tried too

    async def deliver(self, job: Job, outcome: Outcome) -> list[str]:
        self.attempts.append(outcome)
        if not outcome.variations:
            self.told.set()
        raise Undeliverable("the bot was removed from the channel")


async def test_variations_that_cannot_be_delivered_are_tried_once_not_once_each(
    tmp_path: Path, fake_gemini: FakeGemini, database_url: str
) -> None:
    adapter = _Nowhere()
    settings = make_settings(tmp_path, fake_gemini, DATABASE_URL=database_url)
    async with running(settings, adapter) as service:
        submitted = await service.submit(request("a fox --n 4", "k1"))
        async with asyncio.timeout(10):
            await adapter.told.wait()
        # leaving waits for every delivery task still running: each job's has its look
    first = await _job_after(settings, submitted.job.id)

    # the images once, then the one sentence saying they could not be posted
    assert [bool(o.variations) for o in adapter.attempts] == [True, False]
    assert first is not None and first.delivery_attempts == 1


async def _job_after(settings: Settings, job_id: str) -> Job | None:
    store = await Store.open(settings.database_url)
    try:
        return await store.job(job_id)
    finally:
        await store.close()
