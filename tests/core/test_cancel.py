"""The requester's Cancel: a queued job is never sent; a running one is not shown, and its
API call still counts; nobody else can cancel it."""

from __future__ import annotations

from pathlib import Path

import pytest

from core import wording
from core.errors import UserFacingError
from tests.conftest import make_settings
from tests.core.service_harness import RecordingAdapter, delivered, request, running
from tests.fakes.gemini import FakeGemini


async def test_a_queued_job_cancelled_is_never_sent_and_says_so(
    tmp_path: Path, fake_gemini: FakeGemini, database_url: str
) -> None:
    fake_gemini.latency = 0.5
    adapter = RecordingAdapter()
    settings = make_settings(
        tmp_path, fake_gemini, DATABASE_URL=database_url, IMAGEBOT_MAX_CONCURRENCY=1
    )
    async with running(settings, adapter) as service:
        first = await service.submit(request("a fox", "k1"))
        await fake_gemini.wait_for_requests(1)
        second = await service.submit(request("a badger", "k2"))
        said = await service.cancel("test", "T1", second.job.id, "U1")
        cancelled = await adapter.wait_for(second.job.id)
        made = await adapter.wait_for(first.job.id)
        job = await delivered(service, second.job.id)

    assert said == "Cancelled: it was never sent to the model."
    assert not cancelled.ok and cancelled.error == wording.CANCELLED_QUEUED
    assert made.ok
    assert len(fake_gemini.requests) == 1
    assert job.state == "failed" and job.api_calls == 0


async def test_a_running_job_cancelled_is_not_shown_and_its_call_still_counts(
    tmp_path: Path, fake_gemini: FakeGemini, database_url: str
) -> None:
    fake_gemini.latency = 0.5
    adapter = RecordingAdapter()
    async with running(
        make_settings(tmp_path, fake_gemini, DATABASE_URL=database_url), adapter
    ) as service:
        submitted = await service.submit(request("a heron", "k1"))
        await fake_gemini.wait_for_requests(1)
        said = await service.cancel("test", "T1", submitted.job.id, "U1")
        outcome = await adapter.wait_for(submitted.job.id)
        job = await delivered(service, submitted.job.id)
        # nothing to continue from: the image is not in the conversation
        with pytest.raises(UserFacingError, match="no image to continue from"):
            await service.submit(request("make it night", "k2", continue_job=submitted.job.id))

    assert said.startswith("Cancelled: the image will not be shown.")
    assert not outcome.ok and outcome.error == wording.CANCELLED_RUNNING
    assert not outcome.images
    assert job.state == "failed" and job.api_calls == 1 and job.cost_usd
    assert job.model_turn_id is None
    assert len(fake_gemini.requests) == 1


async def test_only_the_requester_cancels_and_a_finished_job_cannot_be(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    fake_gemini.latency = 0.3
    adapter = RecordingAdapter()
    async with running(make_settings(tmp_path, fake_gemini), adapter) as service:
        submitted = await service.submit(request("an owl", "k1"))
        with pytest.raises(UserFacingError) as other:
            await service.cancel("test", "T1", submitted.job.id, "U2")
        made = await adapter.wait_for(submitted.job.id)
        await delivered(service, submitted.job.id)
        with pytest.raises(UserFacingError) as late:
            await service.cancel("test", "T1", submitted.job.id, "U1")

    assert other.value.message == wording.ONLY_REQUESTER_CANCELS
    assert made.ok
    assert late.value.message == "This image has already finished, so there is nothing to cancel."
