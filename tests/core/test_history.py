"""A person's images, newest first, a page at a time: only theirs, only in this workspace or
server, only those made and shown."""

from __future__ import annotations

from pathlib import Path

from core.service import HISTORY_PAGE
from tests.conftest import make_settings
from tests.core.service_harness import RecordingAdapter, delivered, request, running
from tests.fakes.gemini import FakeGemini, Fault


async def test_history_pages_through_the_requesters_shown_images_newest_first(
    tmp_path: Path, fake_gemini: FakeGemini, database_url: str
) -> None:
    adapter = RecordingAdapter()
    settings = make_settings(tmp_path, fake_gemini, DATABASE_URL=database_url)
    async with running(settings, adapter) as service:
        mine = []
        for n in range(HISTORY_PAGE + 2):
            job = (await service.submit(request(f"fox {n}", f"k{n}"))).job
            await adapter.wait_for(job.id)
            await delivered(service, job.id)
            mine.append(job.id)
        others = [
            request("someone else's", "o1", user_id="U2"),
            request("another workspace's", "o2", tenant="T2"),
        ]
        for other in others:
            job = (await service.submit(other)).job
            await delivered(service, job.id)
        fake_gemini.faults.append(Fault("prompt_blocked"))
        failed = (await service.submit(request("a blocked fox", "f1"))).job
        await delivered(service, failed.id)

        first = await service.history("test", "T1", "U1")
        second = await service.history("test", "T1", "U1", page=2)
        third = await service.history("test", "T1", "U1", page=3)

    assert [i.job.id for i in first.items] == mine[::-1][:HISTORY_PAGE]
    assert first.more and first.page == 1
    assert [i.job.id for i in second.items] == mine[::-1][HISTORY_PAGE:]
    assert not second.more
    assert third.items == [] and not third.more
    assert all(item.message_keys for item in first.items)
