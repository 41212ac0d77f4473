from __future__ import annotations

import asyncio
import io
import struct
import zlib
from pathlib import Path

import pytest
from PIL import Image

from core.errors import UserFacingError
from core.jobs import Attachment, Job, Outcome
from core.options import Options
from core.runtime import open_service
from core.service import DELIVERY_ATTEMPTS, UNDELIVERABLE
from core.store import Store
from tests.conftest import make_settings
from tests.core.service_harness import RecordingAdapter, delivered, request, running
from tests.fakes.gemini import SKIP_SIGNATURE, FakeGemini, Fault, pixel_size


def png(width: int = 64, height: int = 48, colour: str = "teal") -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(out, "PNG")
    return out.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims a size without holding its pixels (a decompression bomb)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    return (
        b"\x89PNG\r\n\x1a\n"
        + struct.pack(">I", len(ihdr))
        + chunk
        + struct.pack(">I", zlib.crc32(chunk))
    )


async def test_a_request_becomes_an_image_of_the_asked_size_and_cost_is_recorded(
    tmp_path: Path, fake_gemini: FakeGemini, database_url: str
) -> None:
    adapter = RecordingAdapter()
    async with running(
        make_settings(tmp_path, fake_gemini, DATABASE_URL=database_url),
        adapter,
    ) as service:
        submitted = await service.submit(request("a red fox --ar 16:9 --size 2K", "k1"))
        outcome = await adapter.wait_for(submitted.job.id)
        job = await delivered(service, submitted.job.id)
    assert outcome.ok and outcome.error is None
    image = Image.open(io.BytesIO(outcome.images[0].data))
    assert image.size == pixel_size("gemini-3.1-flash-image-preview", "16:9", "2K")
    assert outcome.images[0].data == fake_gemini.responses[0].image
    assert job is not None and job.state == "succeeded" and job.delivered_at is not None
    assert job.cost_usd == pytest.approx(0.101) and job.output_tokens == 1680
    assert job.api_calls == 1


async def test_two_submits_with_one_idempotency_key_cost_one_api_call(
    tmp_path: Path, fake_gemini: FakeGemini, database_url: str
) -> None:
    adapter = RecordingAdapter()
    async with running(
        make_settings(tmp_path, fake_gemini, DATABASE_URL=database_url),
        adapter,
    ) as service:
        first, second = await asyncio.gather(
            service.submit(request("a fox", "same-key")),
            service.submit(request("a fox", "same-key")),
        )
        await adapter.wait_for(first.job.id)
        third = await service.submit(request("a fox", "same-key"))
    assert first.job.id == second.job.id == third.job.id
    assert [first.created, second.created, third.created].count(True) == 1
    assert len(fake_gemini.requests) == 1 and len(adapter.deliveries) == 1


@pytest.mark.parametrize(
    ("faults", "api_calls"),
    [
        ([Fault("rate_limit", retry_delay=0.05)], 2),
        ([Fault("server_error")], 2),
        ([Fault("unavailable"), Fault("unavailable")], 3),
        ([Fault("drop")], 2),
        ([Fault("slow", seconds=0.2)], 1),
    ],
)
async def test_transient_faults_are_retried_and_then_succeed(
    tmp_path: Path, fake_gemini: FakeGemini, database_url: str, faults: list[Fault], api_calls: int
) -> None:
    fake_gemini.faults.extend(faults)
    adapter = RecordingAdapter()
    async with running(
        make_settings(tmp_path, fake_gemini, DATABASE_URL=database_url),
        adapter,
    ) as service:
        submitted = await service.submit(request("a fox", "k"))
        outcome = await adapter.wait_for(submitted.job.id)
        job = await service.job(submitted.job.id)
    assert outcome.ok
    assert job is not None and job.state == "succeeded" and job.api_calls == api_calls


@pytest.mark.parametrize(
    ("fault", "sentence"),
    [
        ("quota_per_day", "used up for today"),
        ("prompt_blocked", "safety"),
        ("image_blocked", "safety"),
        ("malformed", "could not read"),
        ("text_only", "answered in words but made no image"),
        ("reseller_401", "API key"),
    ],
)
async def test_final_faults_end_in_one_clear_sentence_after_one_call(
    tmp_path: Path, fake_gemini: FakeGemini, database_url: str, fault: str, sentence: str
) -> None:
    fake_gemini.faults.append(Fault(fault))
    adapter = RecordingAdapter()
    async with running(
        make_settings(tmp_path, fake_gemini, DATABASE_URL=database_url),
        adapter,
    ) as service:
        submitted = await service.submit(request("a fox", "k"))
        outcome = await adapter.wait_for(submitted.job.id)
        job = await service.job(submitted.job.id)
    assert outcome.error is not None and sentence.lower() in outcome.error.lower()
    assert outcome.error.count(". ") == 0 and "\n" not in outcome.error  # one sentence
    assert job is not None and job.state == "failed" and job.api_calls == 1
    assert len(fake_gemini.requests) == 1


async def test_retries_stop_at_the_attempt_limit_and_the_job_ends_failed(
    tmp_path: Path, fake_gemini: FakeGemini, database_url: str
) -> None:
    fake_gemini.faults.extend([Fault("unavailable")] * 5)
    adapter = RecordingAdapter()
    settings = make_settings(
        tmp_path, fake_gemini, DATABASE_URL=database_url, GEMINI_MAX_ATTEMPTS=3
    )
    async with running(settings, adapter) as service:
        submitted = await service.submit(request("a fox", "k"))
        outcome = await adapter.wait_for(submitted.job.id)
        job = await service.job(submitted.job.id)
    assert outcome.error is not None and "overloaded" in outcome.error
    assert job is not None and job.state == "failed" and job.api_calls == 3
    assert len(fake_gemini.requests) == 3


async def test_a_conversation_sends_history_with_signatures_and_forks_by_turn(
    tmp_path: Path, fake_gemini: FakeGemini, database_url: str
) -> None:
    adapter = RecordingAdapter()
    async with running(
        make_settings(tmp_path, fake_gemini, DATABASE_URL=database_url),
        adapter,
    ) as service:
        first = await service.submit(
            request("a lighthouse --model pro --ar 16:9", "k1", thread_key="thread")
        )
        await adapter.wait_for(first.job.id)
        second = await service.submit(
            request(
                "make it night",
                "k2",
                thread_key="thread",
                attachments=(Attachment("moon.png", png()),),
            )
        )
        await adapter.wait_for(second.job.id)
        fork = await service.submit(
            request("make it winter", "k3", reply_to=f"message-for-{first.job.id}")
        )
        await adapter.wait_for(fork.job.id)
    assert all(r.status == 200 for r in fake_gemini.requests)
    second_body = fake_gemini.requests[1].json
    assert second_body is not None
    roles = [c["role"] for c in second_body["contents"]]
    assert roles == ["user", "model", "user"]
    model_parts = second_body["contents"][1]["parts"]
    issued = fake_gemini.responses[0].signatures
    assert [p.get("thoughtSignature") for p in model_parts if "thoughtSignature" in p] == issued
    assert second_body["contents"][2]["parts"][1]["inlineData"]["mimeType"] == "image/png"
    # the thread's model, ratio and size carry over to the follow-up
    assert fake_gemini.requests[1].path.endswith("gemini-3-pro-image-preview:generateContent")
    assert second_body["generationConfig"]["imageConfig"]["aspectRatio"] == "16:9"
    fork_body = fake_gemini.requests[2].json
    assert fork_body is not None
    assert [c["role"] for c in fork_body["contents"]] == ["user", "model", "user"]
    assert fork_body["contents"][2]["parts"] == [{"text": "make it winter"}]


async def test_an_empty_signature_in_an_answer_is_sent_back_as_the_placeholder(
    tmp_path: Path, fake_gemini: FakeGemini, database_url: str
) -> None:
    adapter = RecordingAdapter()
    fake_gemini.faults.append(Fault("empty_signatures"))
    async with running(
        make_settings(tmp_path, fake_gemini, DATABASE_URL=database_url),
        adapter,
    ) as service:
        first = await service.submit(request("a kite --model pro", "k1", thread_key="t"))
        await adapter.wait_for(first.job.id)
        second = await service.submit(request("make it red", "k2", thread_key="t"))
        outcome = await adapter.wait_for(second.job.id)

    assert outcome.error is None
    body = fake_gemini.requests[1].json
    assert body is not None
    model_parts = body["contents"][1]["parts"]
    assert [p["thoughtSignature"] for p in model_parts if "inlineData" in p] == [SKIP_SIGNATURE]


async def test_a_small_budget_drops_the_oldest_images_and_says_so(
    tmp_path: Path, fake_gemini: FakeGemini, database_url: str
) -> None:
    adapter = RecordingAdapter()
    settings = make_settings(
        tmp_path, fake_gemini, DATABASE_URL=database_url, GEMINI_REQUEST_BUDGET_MB=0.06
    )
    async with running(settings, adapter) as service:
        keys = ["k1", "k2", "k3"]
        outcomes = []
        for key in keys:
            submitted = await service.submit(request(f"picture {key}", key, thread_key="t"))
            outcomes.append(await adapter.wait_for(submitted.job.id))
    assert outcomes[0].notice is None
    assert outcomes[2].notice is not None and "left out" in outcomes[2].notice
    last = fake_gemini.requests[2].json
    assert last is not None
    images = [p for c in last["contents"] for p in c["parts"] if "inlineData" in p]
    assert len(images) == 1  # only the newest earlier image fits
    assert all(r.status == 200 for r in fake_gemini.requests)


async def test_a_failed_delivery_is_retried_without_generating_again(
    tmp_path: Path, fake_gemini: FakeGemini, database_url: str
) -> None:
    adapter = RecordingAdapter(failures_before_success=2)
    async with running(
        make_settings(tmp_path, fake_gemini, DATABASE_URL=database_url),
        adapter,
        delivery_backoff_seconds=0.01,
    ) as service:
        submitted = await service.submit(request("a fox", "k"))
        await adapter.wait_for(submitted.job.id)
        job = await delivered(service, submitted.job.id)
    assert job.delivery_attempts == 3
    assert len(fake_gemini.requests) == 1


async def test_a_result_stored_but_not_delivered_is_delivered_after_a_restart(
    tmp_path: Path, fake_gemini: FakeGemini, database_url: str
) -> None:
    settings = make_settings(
        tmp_path, fake_gemini, DATABASE_URL=database_url, IMAGEBOT_LEASE_SECONDS=0.3
    )
    stuck = RecordingAdapter(failures_before_success=1_000)
    # it will never get to try again
    async with open_service(settings, delivery_backoff_seconds=60) as crashed:
        crashed.register("test", stuck)
        await crashed.start()
        submitted = await crashed.submit(request("a fox", "k"))
        deadline = asyncio.get_running_loop().time() + 10
        while (await crashed.job(submitted.job.id)).state != "succeeded":  # type: ignore[union-attr]
            assert asyncio.get_running_loop().time() < deadline
            await asyncio.sleep(0.02)
        # the process dies: its tasks stop and it never hands its leases back
        await crashed.abandon()
        adapter = RecordingAdapter()
        async with running(settings, adapter) as restarted:
            outcome = await adapter.wait_for(submitted.job.id)
            job = await delivered(restarted, submitted.job.id)
    assert outcome.ok and job.delivered_at is not None
    assert len(fake_gemini.requests) == 1  # delivered again, never generated again


async def test_the_per_user_limit_refuses_more_jobs_in_flight(
    tmp_path: Path, fake_gemini: FakeGemini, database_url: str
) -> None:
    fake_gemini.latency = 1.0
    adapter = RecordingAdapter()
    settings = make_settings(
        tmp_path, fake_gemini, DATABASE_URL=database_url, IMAGEBOT_MAX_JOBS_PER_USER=2
    )
    async with running(settings, adapter) as service:
        await service.submit(request("one", "k1"))
        await service.submit(request("two", "k2"))
        with pytest.raises(UserFacingError, match="You already have 2 images in progress"):
            await service.submit(request("three", "k3"))
        other = await service.submit(request("mine", "k4", user_id="U2"))
        assert other.created


async def test_reroll_makes_a_sibling_and_upscale_sizes_follow_the_model(
    tmp_path: Path, fake_gemini: FakeGemini, database_url: str
) -> None:
    adapter = RecordingAdapter()
    async with running(
        make_settings(tmp_path, fake_gemini, DATABASE_URL=database_url),
        adapter,
    ) as service:
        first = await service.submit(request("a fox --model pro", "k1", thread_key="t"))
        await adapter.wait_for(first.job.id)
        job = await service.job(first.job.id)
        assert job is not None
        assert await service.upscale_sizes(job) == ["2K", "4K"]
        again = await service.submit(request("", "r1", kind="reroll", continue_job=job.id))
        await adapter.wait_for(again.job.id)
        up = await service.submit(
            request(
                "sharper", "u1", kind="upscale", continue_job=job.id, options=Options(size="4K")
            )
        )
        await adapter.wait_for(up.job.id)
        rerolled = await service.job(again.job.id)
    assert rerolled is not None and rerolled.user_turn_id == job.user_turn_id
    assert fake_gemini.requests[1].body == fake_gemini.requests[0].body
    upscale_body = fake_gemini.requests[2].json
    assert upscale_body is not None
    assert upscale_body["generationConfig"]["imageConfig"]["imageSize"] == "4K"
    assert [c["role"] for c in upscale_body["contents"]] == ["user", "model", "user"]


TEN_MB_PLUS = b"\x89PNG\r\n\x1a\n" + b"\0" * 21_000_000
NON_UTF8_NAME = b"r\xe9sum\xe9.pdf".decode("utf-8", "surrogateescape")
BAD_INPUTS = [
    ("a fox --style anime", (), "`--style` is not an option"),
    ("a fox --ar 8:1 --model pro", (), "8:1 is not available on Gemini 3 Pro Image"),
    ("a fox --size 4K --model 2.5-flash", (), "4K is not available on Gemini 2.5 Flash Image"),
    (
        "a fox",
        tuple(Attachment(f"{n}.png", png()) for n in range(15)),
        "takes at most 14 reference images",
    ),
    (
        "a fox --model 2.5-flash",
        tuple(Attachment(f"{n}.png", png()) for n in range(4)),
        "takes at most 3 reference images",
    ),
    ("a fox", (Attachment("report.pdf", b"%PDF-1.7\n%\xe2\xe3\n1 0 obj"),), "is a PDF"),
    ("a fox", (Attachment("cut.png", png()[:60]),), "damaged or truncated"),
    ("a fox", (Attachment("huge.png", png_header_only(30000, 30000)),), "30000x30000"),
    ("", (), "Tell me what to draw"),
    ("   --ar 16:9", (), "Tell me what to draw"),
    ("a fox", (Attachment("big.png", TEN_MB_PLUS),), "the limit is 20 MB"),
    ("x" * 20_000, (), "20,000 characters long"),
    ("a fox", (Attachment(NON_UTF8_NAME, b"%PDF-1.4 minimal"),), "is a PDF"),
    ("a fox --model gemini-9-ultra", (), "There is no model called 'gemini-9-ultra'"),
    ("a fox --temp 2", (), "`--temp` must be a number from 0 to 1"),
    ("a fox --size 3K", (), "`--size` must be one of 0.5K, 1K, 2K, 4K"),
    ("a fox --ar", (), "`--ar` needs a value"),
    ("a fox --ar 1:1 --ar 2:3", (), "`--ar` is given twice"),
    ("a fox --size 0.5K --model pro", (), "0.5K is not available on Gemini 3 Pro Image"),
    ("a fox", (Attachment("empty.png", b""),), "empty"),
    ("a fox", (Attachment("notes.txt", b"just some words"),), "not an image"),
    ("a fox", (Attachment("photo.heic", b"\0\0\0\x18ftypheic\0\0\0\0mif1heic"),), "HEIC"),
]


@pytest.mark.parametrize(("text", "attachments", "message"), BAD_INPUTS)
async def test_bad_input_gets_its_message_and_leaves_the_store_intact(
    tmp_path: Path,
    fake_gemini: FakeGemini,
    database_url: str,
    text: str,
    attachments: tuple[Attachment, ...],
    message: str,
) -> None:
    adapter = RecordingAdapter()
    async with running(
        make_settings(tmp_path, fake_gemini, DATABASE_URL=database_url),
        adapter,
    ) as service:
        good = await service.submit(request("a fox", "good", thread_key="t"))
        await delivered(service, good.job.id)
        before = await service.store.counts()
        with pytest.raises(UserFacingError) as caught:
            await service.submit(request(text, "bad", thread_key="t", attachments=attachments))
        after = await service.store.counts()
    assert message in caught.value.message
    assert "\n" not in caught.value.message and "\udce9" not in caught.value.message
    assert after == before
    assert len(fake_gemini.requests) == 1


async def test_a_wrong_api_key_fails_the_job_with_a_sentence_and_no_secret(
    tmp_path: Path, fake_gemini: FakeGemini, database_url: str
) -> None:
    adapter = RecordingAdapter()
    settings = make_settings(
        tmp_path, fake_gemini, DATABASE_URL=database_url, GEMINI_API_KEY="sk-wrong-secret"
    )
    async with running(settings, adapter) as service:
        submitted = await service.submit(request("a fox", "k"))
        outcome = await adapter.wait_for(submitted.job.id)
    assert outcome.error is not None and "API key" in outcome.error
    assert "sk-wrong-secret" not in outcome.error
    store = await Store.open(settings.database_url)
    job = await store.job(submitted.job.id)
    await store.close()
    assert job is not None and job.state == "failed"


async def test_a_held_request_is_handed_back_after_a_crash_and_dropped_once_stored(
    tmp_path: Path, fake_gemini: FakeGemini, database_url: str
) -> None:
    settings = make_settings(
        tmp_path, fake_gemini, DATABASE_URL=database_url, IMAGEBOT_LEASE_SECONDS=0.3
    )
    async with open_service(settings) as crashed:
        crashed.register("test", RecordingAdapter())
        assert await crashed.hold("test", "msg-1", {"text": "a fox"})
        assert await crashed.hold("test", "msg-2", {"text": "a cat"})
        submitted = await crashed.submit(request("a cat", "msg-2"))  # stored: no longer held
        assert submitted.created
        await crashed.abandon()  # it dies holding msg-1
    resumed: list[dict[str, object]] = []
    arrived = asyncio.Event()

    async def resume(payload: dict[str, object]) -> None:
        resumed.append(payload)
        arrived.set()

    async with open_service(settings) as restarted:
        restarted.register("test", RecordingAdapter(), resume=resume)
        await restarted.start()
        async with asyncio.timeout(5):
            await arrived.wait()
        # the job that was stored is not held any more, and a held key with a job is refused
        assert not await restarted.hold("test", "msg-2", {"text": "a cat"})
    assert resumed == [{"text": "a fox"}]


async def test_stopping_lets_generations_under_way_finish_and_hands_back_the_queue(
    tmp_path: Path, fake_gemini: FakeGemini, database_url: str
) -> None:
    fake_gemini.latency = 0.5
    settings = make_settings(
        tmp_path, fake_gemini, DATABASE_URL=database_url, IMAGEBOT_MAX_CONCURRENCY=3
    )
    first = RecordingAdapter()
    async with open_service(settings) as stopping:
        stopping.register("test", first)
        await stopping.start()
        ids = [
            (await stopping.submit(request(f"fox {n}", f"k{n}", user_id=f"U{n}"))).job.id
            for n in range(7)
        ]
        await fake_gemini.wait_for_requests(3)
        await stopping.stop()  # a deploy's SIGTERM, with three generations under way
    finished_first = {job.id for job, _ in first.deliveries}
    second = RecordingAdapter()
    async with running(settings, second):
        for job_id in set(ids) - finished_first:
            await second.wait_for(job_id)

    assert len(finished_first) == 3, "the three under way finished and were delivered"
    assert len(fake_gemini.requests) == 7, "nothing was generated twice"
    assert {job.id for job, _ in second.deliveries} == set(ids) - finished_first


async def test_stopping_past_the_grace_period_cuts_the_generation_off(
    tmp_path: Path, fake_gemini: FakeGemini, database_url: str
) -> None:
    fake_gemini.latency = 30.0
    settings = make_settings(
        tmp_path, fake_gemini, DATABASE_URL=database_url, IMAGEBOT_SHUTDOWN_GRACE_SECONDS=0.2
    )
    adapter = RecordingAdapter()
    async with open_service(settings) as service:
        service.register("test", adapter)
        await service.start()
        await service.submit(request("a slow fox", "k1"))
        await fake_gemini.wait_for_requests(1)
        started = asyncio.get_running_loop().time()
        await service.stop()
        stopped_after = asyncio.get_running_loop().time() - started

    assert stopped_after < 5.0 and adapter.deliveries == []


class UploadsRefused(RecordingAdapter):
    """A chat that refuses every result with an image, as a channel without Attach Files."""

    async def deliver(self, job: Job, outcome: Outcome) -> list[str]:
        if outcome.images:
            raise PermissionError("403 Missing Permissions")
        return await super().deliver(job, outcome)


async def test_a_result_that_can_never_be_posted_ends_in_one_sentence_instead(
    tmp_path: Path, fake_gemini: FakeGemini, database_url: str
) -> None:
    adapter = UploadsRefused()
    async with running(
        make_settings(tmp_path, fake_gemini, DATABASE_URL=database_url),
        adapter,
        delivery_backoff_seconds=0.01,
    ) as service:
        submitted = await service.submit(request("a fox", "k"))
        outcome = await adapter.wait_for(submitted.job.id)
        job = await service.job(submitted.job.id)

    assert outcome.error == UNDELIVERABLE and outcome.images == ()
    assert job is not None and job.delivery_attempts == DELIVERY_ATTEMPTS
    assert len(fake_gemini.requests) == 1


async def test_stopping_hands_queued_jobs_back_at_once_while_one_finishes(
    tmp_path: Path, fake_gemini: FakeGemini, database_url: str
) -> None:
    fake_gemini.latency = 1.0
    settings = make_settings(
        tmp_path, fake_gemini, DATABASE_URL=database_url, IMAGEBOT_MAX_CONCURRENCY=1
    )

    async def ours(job_id: str) -> bool:
        """Whether the job is still this process's alone (a lease it keeps up)."""
        row = await stopping.store.database.fetchrow(
            "SELECT owner, lease_expires_at FROM jobs WHERE id = ?", job_id
        )
        return row is not None and row["owner"] is not None and row["lease_expires_at"] != 0

    async with open_service(settings) as stopping:
        stopping.register("test", RecordingAdapter())
        await stopping.start()
        await stopping.submit(request("a fox", "k1"))
        queued = await stopping.submit(request("a cat", "k2"))
        await fake_gemini.wait_for_requests(1)
        stop = asyncio.create_task(stopping.stop())
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 5
        while await ours(queued.job.id):
            assert loop.time() < deadline, "the queued job was not handed back"
            await asyncio.sleep(0.02)
        handed_back_before_the_fox_finished = not stop.done()
        await stop

    assert handed_back_before_the_fox_finished
    assert len(fake_gemini.requests) == 1


async def test_a_job_is_not_run_before_it_is_shown(
    tmp_path: Path, fake_gemini: FakeGemini, database_url: str
) -> None:
    adapter = RecordingAdapter()
    shown = asyncio.Event()
    announcing = asyncio.Event()

    async def slow_announce(job: Job, position: int) -> dict[str, str]:
        announcing.set()
        await shown.wait()  # the platform takes its time to post "queued"
        return {"status": "posted"}

    settings = make_settings(tmp_path, fake_gemini, DATABASE_URL=database_url)
    async with running(settings, adapter) as service:
        first = asyncio.create_task(service.submit(request("a fox", "k1"), announce=slow_announce))
        await announcing.wait()
        # another request wakes every idle worker while the first is still being shown
        other = await service.submit(request("a cat", "k2"))
        await adapter.wait_for(other.job.id)
        assert [r.json["contents"][0]["parts"][0]["text"] for r in fake_gemini.requests] == [
            "a cat"
        ]
        shown.set()
        submitted = await first
        await adapter.wait_for(submitted.job.id)
        job = await delivered(service, submitted.job.id)

    assert job.target["status"] == "posted"  # run with where it was shown
