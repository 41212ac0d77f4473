"""The Slack app over the wire: acks, HTTP and Socket Mode, signatures, retries, duplicates.

Real slack_bolt and slack_sdk run against FakeSlack and FakeGemini; nothing inside the app is
replaced. The harness here is shared by the other Slack test modules.
"""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from PIL import Image

from bots.slack import SlackApp, create_app
from core.config import ConfigError, Settings
from core.runtime import open_service
from core.service import Service
from tests.conftest import make_settings
from tests.fakes.gemini import FakeGemini, pixel_size
from tests.fakes.slack import FakeSlack, SlackCall

SECRET = "signing-secret-for-tests"
FLASH = "gemini-3.1-flash-image-preview"
FINAL = (":white_check_mark:", ":warning:")


def png_bytes(width: int = 40, height: int = 30) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 40, 90)).save(out, format="PNG")
    return out.getvalue()


@dataclass
class Running:
    """One app over one service, with the fakes it talks to."""

    fake: FakeSlack
    gemini: FakeGemini
    service: Service
    app: SlackApp
    settings: Settings

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.app.port}/slack/events"

    async def post(self, body: tuple[bytes, str], **kwargs: Any) -> tuple[int, bytes, float]:
        return await self.fake.post_to_app(
            self.url, body[0], body[1], signing_secret=SECRET, **kwargs
        )

    async def command(
        self, text: str, *, user: str = "U1", channel: str = "C1", **kwargs: Any
    ) -> tuple[int, bytes, float]:
        body = self.fake.slash_command_body(text, user_id=user, channel_id=channel)
        return await self.post(body, **kwargs)

    async def event(self, event: dict[str, Any], **kwargs: Any) -> tuple[int, bytes, float]:
        event_id = kwargs.pop("event_id", None)
        return await self.post(self.fake.event_body(event, event_id=event_id), **kwargs)

    async def click(
        self,
        action_id: str,
        *,
        status: tuple[str, str],
        user: str = "U1",
        block_id: str | None = None,
        **kwargs: Any,
    ) -> tuple[int, bytes, float]:
        channel, ts = status
        value = self.button(status, action_id, block_id)["value"]
        body = self.fake.block_action_body(
            action_id, user_id=user, channel_id=channel, message_ts=ts, value=value, **kwargs
        )
        return await self.post(body)

    def button(
        self, status: tuple[str, str], action_id: str, block_id: str | None = None
    ) -> dict[str, Any]:
        """The first button `action_id` on the message (in block `block_id`, when given)."""
        message = self.fake.messages[status]
        for block in message.get("blocks") or []:
            if block_id is not None and block.get("block_id") != block_id:
                continue
            for element in block.get("elements", []):
                if element.get("action_id") == action_id:
                    return element
        raise AssertionError(f"no {action_id} button on {status}")

    async def job_count(self) -> int:
        return (await self.service.store.counts())["jobs"]

    async def status_posted(self, count: int = 1) -> tuple[str, str]:
        """(channel, ts) of the `count`-th status message the bot posted."""
        calls = await self.fake.wait_for_call(
            "chat.postMessage", count=count, predicate=_is_status_post
        )
        answer = calls[count - 1].response
        return answer["channel"], answer["ts"]

    async def final(self, status: tuple[str, str], timeout: float = 15.0) -> dict[str, Any]:
        """The status message once it shows the job's end (done or the reason why not)."""

        def ended() -> dict[str, Any] | None:
            message = self.fake.messages.get(status)
            if message and any(mark in message["text"] for mark in FINAL):
                return message
            return None

        message = await self.fake.wait_until(ended, timeout=timeout, what=f"the end of {status}")
        await self.delivered(status)
        return message

    async def delivered(self, status: tuple[str, str]) -> None:
        """Waits until the service has recorded the delivery of the job behind `status`.

        Stopping the service while it writes that record would cut a transaction short.
        """
        key = f"{status[0]}:{status[1]}"
        async with asyncio.timeout(5):
            while True:
                job = await self.service.job_for_message("slack", self.fake.team_id, key)
                if job is not None and job.delivered_at is not None:
                    return
                await asyncio.sleep(0.01)


def _is_status_post(call: SlackCall) -> bool:
    return (
        call.status == 200 and call.response.get("ok") and "asked" in str(call.params.get("blocks"))
    )


@asynccontextmanager
async def running(
    tmp_path: Path,
    gemini: FakeGemini,
    *,
    fake: FakeSlack | None = None,
    socket_mode: bool = False,
    delivery_backoff_seconds: float = 1.0,
    **env: Any,
) -> AsyncIterator[Running]:
    """A started service and Slack app (HTTP mode unless `socket_mode`), stopped on exit."""
    async with _fake_slack(fake) as slack:
        values: dict[str, Any] = {
            "SLACK_BOT_TOKEN": slack.bot_token,
            "SLACK_SIGNING_SECRET": SECRET,
            "SLACK_API_URL": slack.api_url,
            "SLACK_FILE_HOSTS": "127.0.0.1",
            "IMAGEBOT_PROGRESS_INTERVAL_SECONDS": 0.2,
            **env,
        }
        if socket_mode:
            values["SLACK_APP_TOKEN"] = slack.app_token
        # PORT=0 (any free port) is what a test needs; the setting itself starts at 1
        settings = make_settings(tmp_path, gemini, **values).model_copy(update={"port": 0})
        async with open_service(
            settings, delivery_backoff_seconds=delivery_backoff_seconds
        ) as service:
            app = create_app(settings, service, host="127.0.0.1")
            await service.start()
            serving = asyncio.create_task(app.serve())
            try:
                async with asyncio.timeout(10):
                    await app.wait_ready()
                yield Running(slack, gemini, service, app, settings)
            finally:
                serving.cancel()
                await asyncio.gather(serving, return_exceptions=True)


@asynccontextmanager
async def _fake_slack(existing: FakeSlack | None) -> AsyncIterator[FakeSlack]:
    if existing is not None:
        yield existing
        return
    async with FakeSlack() as fake:
        yield fake


def image_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        assert image.format == "PNG"
        image.load()
        return image.size


# the acceptance flow


async def test_slash_command_is_acked_at_once_and_the_image_lands_in_the_status_thread(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    fake_gemini.latency = 4  # slower than Slack's 3 s, as a real image API is
    async with running(tmp_path, fake_gemini) as slack:
        status_code, body, elapsed = await slack.command("a lighthouse at dusk --ar 16:9")
        acked_at = time.monotonic()

        assert (status_code, body) == (200, b"")
        assert elapsed < 0.5  # Slack allows 3 s; the ack does no work at all
        [api_request] = await fake_gemini.wait_for_requests(1)
        assert not fake_gemini.responses  # acked long before the image API answered
        assert api_request.received_at + 4 > acked_at

        status = await slack.status_posted()
        assert status[0] == "C1"
        shown = slack.fake.messages[status]["text"]
        assert "<@U1>" in shown and "a lighthouse at dusk" in shown

        [upload] = await slack.fake.wait_until(lambda: slack.fake.uploads, timeout=20)
        assert (upload.channel, upload.thread_ts) == status
        assert image_size(upload.data) == pixel_size(FLASH, "16:9", "1K")
        steps = [c.method for c in slack.fake.calls if c.method.startswith("files.")]
        assert steps == ["files.getUploadURLExternal", "files.completeUploadExternal"]
        done = await slack.final(status)
        assert ":white_check_mark: Done in 4" in done["text"]  # 4 s and a bit
        assert "16:9" in str(done["blocks"])


async def test_a_slash_command_is_acked_at_once_while_slack_rate_limits_the_bot(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    async with running(tmp_path, fake_gemini) as slack:
        # the first request makes Bolt authorize with auth.test; Slack answers 429 for 2 s
        slack.fake.fail_next("auth.test", retry_after=2)
        status_code, body, elapsed = await slack.command("a quiet harbour")

        assert (status_code, body) == (200, b"")
        assert elapsed < 0.5  # Slack shows "operation_timeout" after 3 s
        status = await slack.status_posted()
        assert "a quiet harbour" in slack.fake.messages[status]["text"]
        done = await slack.final(status)
        assert ":white_check_mark: Done" in done["text"]
        assert [c.status for c in slack.fake.calls_to("auth.test")][-2:] == [429, 200]


async def test_when_slack_refuses_the_bot_the_user_is_told_through_the_response_url(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    async with running(tmp_path, fake_gemini) as slack:
        # the app was uninstalled after start-up: Bolt's authorization of the command fails
        slack.fake.fail_next("auth.test", error="account_inactive")
        status_code, body, _ = await slack.command("a quiet harbour")
        assert (status_code, body) == (200, b"")
        [told] = await slack.fake.wait_until(lambda: slack.fake.response_url_posts)
        assert "reinstall this app" in told["body"]["text"]
        assert told["body"]["response_type"] == "ephemeral"
        assert await slack.job_count() == 0


async def test_a_prompt_with_the_word_payload_is_read_as_a_command(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    async with running(tmp_path, fake_gemini) as slack:
        status_code, _, _ = await slack.command("a truck and its payload --ar 3:2")
        assert status_code == 200
        status = await slack.status_posted()
        assert "a truck and its payload" in slack.fake.messages[status]["text"]
        await slack.final(status)
        [request] = fake_gemini.requests
        assert request.json is not None
        assert request.json["contents"][0]["parts"] == [{"text": "a truck and its payload"}]


async def test_socket_mode_acks_the_command_envelope_promptly_and_delivers(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    fake_gemini.latency = 1
    async with running(tmp_path, fake_gemini, socket_mode=True) as slack:
        payload = slack.fake.slash_command_payload("a red kite", user_id="U1", channel_id="C1")
        started = time.perf_counter()
        envelope = await slack.fake.send_envelope(
            "slash_commands", payload, accepts_response_payload=True
        )
        ack = await slack.fake.wait_for_ack(envelope)
        assert time.perf_counter() - started < 0.5
        assert not fake_gemini.responses
        assert "payload" not in ack or not ack["payload"]

        status = await slack.status_posted()
        [upload] = await slack.fake.wait_until(lambda: slack.fake.uploads, timeout=10)
        assert (upload.channel, upload.thread_ts) == status
        assert image_size(upload.data) == pixel_size(FLASH, None, "1K")
        await slack.final(status)


async def test_health_check_answers_ok(tmp_path: Path, fake_gemini: FakeGemini) -> None:
    async with running(tmp_path, fake_gemini) as slack, aiohttp.ClientSession() as http:
        async with http.get(slack.url.replace("/slack/events", "/healthz")) as response:
            assert response.status == 200
            assert await response.json() == {"ok": True}


# security and exactly-once


async def test_bad_signature_or_six_minute_old_timestamp_gets_401_and_no_job(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    async with running(tmp_path, fake_gemini) as slack:
        forged, _, _ = await slack.command("a fox", bad_signature=True)
        stale, _, _ = await slack.command("a fox", timestamp=int(time.time()) - 360)
        mention = slack.fake.app_mention_event("a fox", user="U1", channel="C1")
        forged_event, _, _ = await slack.event(mention, bad_signature=True)

        assert (forged, stale, forged_event) == (401, 401, 401)
        assert await slack.job_count() == 0
        assert not fake_gemini.requests
        assert not slack.fake.calls_to("chat.postMessage")


async def test_event_delivered_three_times_makes_one_generation_and_one_post(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    async with running(tmp_path, fake_gemini) as slack:
        mention = slack.fake.app_mention_event("a castle in fog", user="U1", channel="C1")
        answers = [await slack.event(mention, event_id="Ev1")]
        for retry in (1, 2):
            answers.append(
                await slack.event(
                    mention, event_id="Ev1", retry_num=retry, retry_reason="http_timeout"
                )
            )
        assert [a[0] for a in answers] == [200, 200, 200]

        status = await slack.status_posted()
        assert slack.fake.messages[status]["thread_ts"] == mention["ts"]
        await slack.final(status)
        assert await slack.job_count() == 1
        assert len(fake_gemini.requests) == 1
        assert len(slack.fake.calls_to("chat.postMessage")) == 1
        assert len(slack.fake.uploads) == 1


async def test_app_mention_and_message_for_one_message_make_one_job(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    async with running(tmp_path, fake_gemini) as slack:
        mention = slack.fake.app_mention_event("a quiet harbour", user="U1", channel="C1")
        message = {**mention, "type": "message", "channel_type": "channel"}
        await slack.event(mention)
        await slack.event(message)

        status = await slack.status_posted()
        await slack.final(status)
        assert await slack.job_count() == 1
        assert len(fake_gemini.requests) == 1


async def test_bot_messages_edits_and_deletions_make_no_job(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    async with running(tmp_path, fake_gemini, SLACK_THREAD_REPLIES="true") as slack:
        fake = slack.fake
        own = fake.message_event(
            f"<@{fake.bot_user_id}> draw a cat",
            user=fake.bot_user_id,
            channel="D1",
            channel_type="im",
        )
        other_bot = fake.message_event(
            "draw a cat",
            user=None,
            bot_id="B0OTHER",
            subtype="bot_message",
            channel="D1",
            channel_type="im",
        )
        edited = fake.message_event(
            "draw a cat", channel="D1", channel_type="im", subtype="message_changed"
        )
        deleted = fake.message_event("", channel="D1", channel_type="im", subtype="message_deleted")
        joined = fake.message_event("has joined", channel="C1", subtype="channel_join")
        for event in (own, other_bot, edited, deleted, joined):
            status, _, _ = await slack.event(event)
            assert status == 200

        # a plain DM right after proves the events above were read and passed over
        await slack.event(fake.message_event("draw a dog", channel="D1", channel_type="im"))
        status = await slack.status_posted()
        await slack.final(status)
        assert await slack.job_count() == 1
        assert "draw a dog" in fake.messages[status]["text"]


async def test_a_retried_delivery_shares_the_image_once(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    fake_gemini.latency = 0.5
    async with running(tmp_path, fake_gemini, IMAGEBOT_PROGRESS_INTERVAL_SECONDS=30) as slack:
        await slack.command("a lantern")
        status = await slack.status_posted()
        await slack.fake.wait_for_call("chat.update")  # the one progress edit
        slack.fake.fail_next("chat.update", status=500)  # the final edit fails once

        done = await slack.final(status)
        assert ":white_check_mark:" in done["text"]
        assert [c.status for c in slack.fake.calls_to("chat.update")] == [200, 500, 200]
        assert len(slack.fake.uploads) == 1


# configuration


async def test_http_mode_without_signing_secret_is_a_config_error(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    settings = make_settings(tmp_path, fake_gemini, SLACK_BOT_TOKEN="xoxb-1")
    async with open_service(settings) as service:
        with pytest.raises(ConfigError, match="SLACK_SIGNING_SECRET"):
            create_app(settings, service)
    bare = make_settings(tmp_path, fake_gemini, SLACK_SIGNING_SECRET="s")
    async with open_service(bare) as service:
        with pytest.raises(ConfigError, match="SLACK_BOT_TOKEN"):
            create_app(bare, service)


async def test_a_refused_bot_token_stops_serve_with_a_config_error(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    async with FakeSlack() as fake:
        settings = make_settings(
            tmp_path,
            fake_gemini,
            SLACK_BOT_TOKEN="xoxb-wrong",
            SLACK_SIGNING_SECRET=SECRET,
            SLACK_API_URL=fake.api_url,
        ).model_copy(update={"port": 0})
        async with open_service(settings) as service:
            app = create_app(settings, service, host="127.0.0.1")
            with pytest.raises(ConfigError, match="SLACK_BOT_TOKEN was refused"):
                await app.serve()
