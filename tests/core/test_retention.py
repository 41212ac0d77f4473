"""Bounded storage: old conversations and images are cleared, the file shrinks, and a
continuation of what was cleared gets a sentence."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest

from core import metrics
from core.errors import UserFacingError
from tests.conftest import make_settings
from tests.core.service_harness import RecordingAdapter, request, running
from tests.fakes.gemini import FakeGemini

DAY = 86400.0


async def test_old_conversations_and_images_are_cleared_and_the_file_shrinks(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    fake_gemini.photo = "png"  # realistic sizes, so freed pages show in the file
    adapter = RecordingAdapter()
    settings = make_settings(tmp_path, fake_gemini, IMAGEBOT_MAX_JOBS_PER_USER=10)
    async with running(settings, adapter) as service:
        for n in range(4):
            submitted = await service.submit(request(f"a fox {n}", f"k{n}", thread_key=f"t{n}"))
            await adapter.wait_for(submitted.job.id)
        before = service.store.size_bytes()
        kept = await service.apply_retention(now=time.time() + 10 * DAY)
        removed = await service.apply_retention(now=time.time() + 100 * DAY)
        after = service.store.size_bytes()
        counts = await service.store.counts()
        with pytest.raises(UserFacingError) as caught:
            await service.submit(request("now make it snow", "k-late", thread_key="t1"))
        runner = await metrics.serve(0, host="127.0.0.1", health=service.health)
        try:
            async with httpx.AsyncClient() as client:
                scraped = (
                    await client.get(f"http://127.0.0.1:{runner.addresses[0][1]}/metrics")
                ).text
        finally:
            await runner.cleanup()

    assert kept == 0 and removed > 0
    assert counts["jobs"] == 0 and counts.get("images", 0) == 0
    assert after < before / 2, f"{before} -> {after} bytes"
    assert caught.value.message == (
        "This conversation is older than 90 days and was cleared; start a new one with /imagine."
    )
    assert "imagebot_database_bytes" in scraped


async def test_a_continuation_whose_image_was_cleared_says_so_without_a_call(
    tmp_path: Path, fake_gemini: FakeGemini, database_url: str
) -> None:
    adapter = RecordingAdapter()
    settings = make_settings(tmp_path, fake_gemini, DATABASE_URL=database_url)
    async with running(settings, adapter) as service:
        first = await service.submit(request("a fox", "k1", thread_key="t"))
        await adapter.wait_for(first.job.id)
        await service.apply_retention(now=time.time() + 40 * DAY)
        later = await service.submit(request("now make it snow", "k2", thread_key="t"))
        outcome = await adapter.wait_for(later.job.id)

    assert outcome.error == (
        "The image this continues from is older than 30 days and was deleted; start a new one "
        "with /imagine."
    )
    assert len(fake_gemini.requests) == 1


def test_conversations_are_kept_at_least_a_month() -> None:
    from core.config import ConfigError, load_settings

    with pytest.raises(ConfigError, match="at least 32"):
        load_settings(_env_file=None, IMAGEBOT_KEEP_CONVERSATIONS_DAYS=7)


async def test_an_image_still_used_by_a_conversation_is_kept(
    tmp_path: Path, fake_gemini: FakeGemini, database_url: str
) -> None:
    from core.runtime import open_service
    from tests.core.test_leases import Clock

    clock = Clock()
    adapter = RecordingAdapter()
    settings = make_settings(tmp_path, fake_gemini, DATABASE_URL=database_url)
    async with open_service(settings, clock=clock) as service:
        service.register("test", adapter)
        await service.start()
        first = await service.submit(request("a fox", "k1", thread_key="t"))
        await adapter.wait_for(first.job.id)
        clock.advance(20 * DAY)
        second = await service.submit(request("now in snow", "k2", thread_key="t"))
        await adapter.wait_for(second.job.id)
        clock.advance(20 * DAY)  # the first image is 40 days old, but was used 20 days ago
        await service.apply_retention()
        third = await service.submit(request("now at night", "k3", thread_key="t"))
        outcome = await adapter.wait_for(third.job.id)

    assert outcome.ok
    last = fake_gemini.requests[-1].json
    assert last is not None
    sent = [p for c in last["contents"] for p in c["parts"] if "inlineData" in p]
    assert len(sent) == 2, "both earlier images went along"
