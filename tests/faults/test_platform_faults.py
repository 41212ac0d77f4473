"""Slack and Discord answering 429 and 5xx while results are delivered: shown once, or given up.

The faults are injected into the platform fakes right before the call that shows the result
(the upload steps, the final status edit, the interaction response edit, a channel post), so
the SDKs' own retries and the service's delivery retries both get exercised.
"""

from __future__ import annotations

import logging
import random
import re
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bots.slack import messages as slack_messages
from core.service import DELIVERY_ATTEMPTS, UNDELIVERABLE
from tests.bots.test_discord_harness import (
    Bot,
    answers,
    discord_server,
    finished,
    replies_to,
    running_bot,
)
from tests.bots.test_slack_app import Running, running
from tests.fakes.discord import FakeDiscord, StoredMessage
from tests.fakes.gemini import FakeGemini
from tests.faults.checks import job_rows, settled

DONE = ":white_check_mark:"
# one progress edit when a job starts, then none until long after the job is over
ENV = {"IMAGEBOT_PROGRESS_INTERVAL_SECONDS": 30, "IMAGEBOT_MAX_JOBS_PER_USER": 100}
FAST_RETRIES = 0.02  # seconds before the service's first delivery retry


# Slack


async def _slack_job(slack: Running, prompt: str) -> tuple[tuple[str, str], dict[str, Any]]:
    """Sends /imagine; returns its status message once the job has started generating."""
    posted = len([c for c in slack.fake.calls_to("chat.postMessage") if c.response.get("ok")])
    await slack.command(prompt)
    status = await slack.status_posted(posted + 1)
    await slack.fake.wait_for_call(
        "chat.update", predicate=lambda c: c.params.get("ts") == status[1]
    )
    [row] = [r for r in job_rows(slack.settings.sqlite_path) if r["prompt"] == prompt]
    return status, row


def _slack_uploads(slack: Running, status: tuple[str, str]) -> int:
    return len([u for u in slack.fake.uploads if (u.channel, u.thread_ts) == status])


SLACK_STEPS = [
    ("files.getUploadURLExternal", 429),
    ("files.getUploadURLExternal", 500),
    ("files.completeUploadExternal", 429),
    ("files.completeUploadExternal", 503),
    ("chat.update", 429),
    ("chat.update", 500),
]


async def test_slack_429_and_5xx_on_each_delivery_step_still_show_the_image_exactly_once(
    tmp_path: Path, fake_gemini: FakeGemini, rng: random.Random
) -> None:
    steps = [(method, status, rng.choice([1, 2])) for method, status in SLACK_STEPS]
    rng.shuffle(steps)
    print("delivery faults:", steps)
    fake_gemini.latency = 0.3
    async with running(
        tmp_path, fake_gemini, delivery_backoff_seconds=FAST_RETRIES, **ENV
    ) as slack:
        for n, (method, code, times) in enumerate(steps):
            failed_before = len([c for c in slack.fake.calls_to(method) if c.status == code])
            status, _ = await _slack_job(slack, f"delivery {n} {method} {code}")
            # the job is generating now: the next such call is the one showing its result
            slack.fake.fail_next(method, status=code, retry_after=0, times=times)
            shown = await slack.final(status)

            what = f"{method} answering {code} x{times}"
            failed_now = len([c for c in slack.fake.calls_to(method) if c.status == code])
            assert failed_now - failed_before == times, what
            assert DONE in shown["text"], what
            assert _slack_uploads(slack, status) == 1, what

        rows = await settled(slack.settings.sqlite_path, len(steps))
    assert all(row["api_calls"] == 1 and row["delivered_at"] for row in rows)
    assert len(slack.fake.uploads) == len(steps)


async def test_slack_failing_for_good_abandons_the_delivery_logs_it_and_never_uploads_twice(
    tmp_path: Path, fake_gemini: FakeGemini, caplog: pytest.LogCaptureFixture
) -> None:
    fake_gemini.latency = 0.3
    caplog.set_level(logging.WARNING, logger="core.service")
    async with running(
        tmp_path, fake_gemini, delivery_backoff_seconds=FAST_RETRIES, **ENV
    ) as slack:
        # the image is uploaded, but the status message can never be ended
        edited, edit_row = await _slack_job(slack, "the final edit keeps failing")
        slack.fake.fail_next("chat.update", status=500, times=DELIVERY_ATTEMPTS)
        edit_row = await _closed(slack.settings.sqlite_path, edit_row["id"])
        # the upload itself can never start
        slack.fake.fail_next("files.getUploadURLExternal", status=503, times=DELIVERY_ATTEMPTS)
        uploading, upload_row = await _slack_job(slack, "the upload keeps failing")
        upload_row = await _closed(slack.settings.sqlite_path, upload_row["id"])

        assert _slack_uploads(slack, edited) == 1  # uploaded once, not once per attempt
        assert _slack_uploads(slack, uploading) == 0
        for status in (edited, uploading):
            assert DONE not in slack.fake.messages[status]["text"]
        for row in (edit_row, upload_row):
            assert row["state"] == "succeeded" and row["delivered_at"] is None
            assert row["delivery_abandoned_at"] is not None
            assert row["delivery_attempts"] == DELIVERY_ATTEMPTS and row["delivery_error"]
            assert row["api_calls"] == 1
    _assert_gave_up_in_the_log(caplog, 2)


async def _closed(db: Path, job_id: str) -> dict[str, Any]:
    """The job once every job is closed (delivered, or its delivery given up)."""
    [row] = [r for r in await settled(db, 1) if r["id"] == job_id]
    return row


def _assert_gave_up_in_the_log(caplog: pytest.LogCaptureFixture, jobs: int) -> None:
    last = [
        r
        for r in caplog.records
        if r.getMessage().startswith(f"delivery attempt {DELIVERY_ATTEMPTS} failed")
    ]
    assert len(last) == jobs
    assert all(r.levelno == logging.WARNING and r.exc_info for r in last)


# Discord


async def _slash_job(bot: Bot, prompt: str) -> tuple[dict[str, Any], str]:
    """Sends /imagine; returns the interaction and the path of its response, once generating."""
    payload = await bot.slash({"prompt": prompt})
    path = rf"/webhooks/\d+/{re.escape(payload['token'])}/messages/.+"
    await bot.fake.wait_for_call("PATCH", path, predicate=_generating)
    return payload, path


async def _mention_job(bot: Bot, prompt: str) -> tuple[dict[str, Any], StoredMessage, str]:
    """Mentions the bot; returns the message, the bot's reply and its path, once generating."""
    said = await bot.say(prompt)
    reply = await bot.fake.wait_for_message(lambda m: replies_to(m, said))
    path = rf"/channels/{reply.channel_id}/messages/{reply.id}"
    await bot.fake.wait_for_call("PATCH", path, predicate=_generating)
    return said, reply, path


def _generating(call: Any) -> bool:
    return str((call.json or {}).get("content", "")).startswith("🎨")


def _results(fake: FakeDiscord, shows: Any) -> list[StoredMessage]:
    return [m for m in fake.channel_messages() if shows(m) and finished(m)]


async def test_discord_429_and_5xx_on_the_result_edit_and_post_still_show_the_image_exactly_once(
    tmp_path: Path, fake_gemini: FakeGemini, rng: random.Random
) -> None:
    fake_gemini.latency = 0.5
    # discord.py itself waits 1 s, then 3 s, before trying a webhook again after a 5xx
    slash_faults = [(429, rng.choice([1, 2])), (503, 1), (500, 1)]
    mention_faults = [(429, rng.choice([1, 2])), (503, rng.choice([1, 2]))]
    rng.shuffle(slash_faults)
    rng.shuffle(mention_faults)
    print("result edit faults:", slash_faults, mention_faults)
    async with (
        discord_server() as fake,
        running_bot(
            tmp_path, fake_gemini, fake, delivery_backoff_seconds=FAST_RETRIES, **ENV
        ) as bot,
    ):
        for code, times in slash_faults:
            # an interaction's response is edited through its webhook
            payload, path = await _slash_job(bot, f"slash result edit answering {code}")
            fake.fail_next("PATCH", path, status=code, times=times)
            result = await bot.result_of(payload, timeout=15)
            assert len(result.attachments) == 1
            assert _results(fake, lambda m, p=payload: answers(m, p)) == [result]
            assert len([c for c in fake.calls_to("PATCH", path) if c.status == code]) == times

        for code, times in mention_faults:
            # a mention's reply is edited with the bot token
            said, reply, path = await _mention_job(bot, f"mention result edit answering {code}")
            fake.fail_next("PATCH", path, status=code, times=times)
            result = await bot.reply_to(said, timeout=15)
            assert result.id == reply.id and len(result.attachments) == 1
            assert _results(fake, lambda m, s=said: replies_to(m, s)) == [result]
            assert len([c for c in fake.calls_to("PATCH", path) if c.status == code]) == times

        # with its reply deleted meanwhile, the result is posted anew, which fails at first
        said, reply, _ = await _mention_job(bot, "mention result post answering 503")
        posts = rf"/channels/{reply.channel_id}/messages"
        fake.fail_next("POST", posts, status=503, times=2)
        await _delete_as_a_moderator(fake, reply)
        result = await bot.reply_to(said, timeout=15)
        assert result.id != reply.id and len(result.attachments) == 1
        assert _results(fake, lambda m: replies_to(m, said)) == [result]
        assert len([c for c in fake.calls_to("POST", posts) if c.status == 503]) == 2

        jobs = len(slash_faults) + len(mention_faults) + 1
        rows = await settled(bot.settings.sqlite_path, jobs)
    assert all(row["api_calls"] == 1 and row["delivered_at"] for row in rows)
    images = [m for m in fake.channel_messages() if m.attachments]
    assert len(images) == jobs  # one image per job, none twice


async def _delete_as_a_moderator(fake: FakeDiscord, message: StoredMessage) -> None:
    url = f"{fake.api_url}/channels/{message.channel_id}/messages/{message.id}"
    headers = {"Authorization": f"Bot {fake.token}"}
    async with aiohttp.ClientSession() as http, http.delete(url, headers=headers) as answer:
        assert answer.status == 204


async def test_discord_failing_for_good_abandons_the_delivery_logs_it_and_never_posts_twice(
    tmp_path: Path, fake_gemini: FakeGemini, caplog: pytest.LogCaptureFixture
) -> None:
    fake_gemini.latency = 0.3
    caplog.set_level(logging.WARNING, logger="core.service")
    async with (
        discord_server() as fake,
        running_bot(
            tmp_path, fake_gemini, fake, delivery_backoff_seconds=FAST_RETRIES, **ENV
        ) as bot,
    ):
        said, reply, path = await _mention_job(bot, "the result edit keeps failing")
        fake.fail_next("PATCH", path, status=503, times=DELIVERY_ATTEMPTS)
        [row] = await settled(bot.settings.sqlite_path, 1)

        assert row["delivery_abandoned_at"] is not None and row["delivered_at"] is None
        assert row["delivery_attempts"] == DELIVERY_ATTEMPTS
        assert "DiscordServerError" in row["delivery_error"]
        # the result could not be shown, so one sentence took the card's place (said just
        # after the delivery is recorded as given up)
        await fake.wait_until(
            lambda: fake.message(reply.id).content == f"⚠️ {UNDELIVERABLE}",
            5,
            lambda: f"the card still says {fake.message(reply.id).content!r}",
        )
        assert [m for m in fake.channel_messages() if m.attachments] == []
        assert [m for m in fake.channel_messages() if replies_to(m, said)] == [reply]
        failed = [c for c in fake.calls_to("PATCH", path) if c.status == 503]
        assert len(failed) == DELIVERY_ATTEMPTS
    _assert_gave_up_in_the_log(caplog, 1)


# before any work: the queued message cannot be posted


async def test_a_queued_message_refused_with_5xx_ends_the_request_in_one_notice_and_no_api_call(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    async with running(tmp_path / "slack", fake_gemini, **ENV) as slack:
        slack.fake.fail_next("chat.postMessage", status=503)
        await slack.command("a bridge, announced into an outage")
        [row] = await settled(slack.settings.sqlite_path, 1)
        [notice] = await slack.fake.wait_until(lambda: slack.fake.ephemerals, what="a notice")
        assert notice["text"] == slack_messages.POST_FAILED
        assert row["state"] == "failed" and row["delivery_abandoned_at"] is not None

    discord = tmp_path / "discord"
    async with discord_server() as fake, running_bot(discord, fake_gemini, fake, **ENV) as bot:
        fake.fail_next("POST", rf"/channels/{fake.channel_id}/messages", status=503)
        said = await bot.say("a bridge, announced into an outage")
        reply = await bot.fake.wait_for_message(lambda m: replies_to(m, said))
        [row] = await settled(bot.settings.sqlite_path, 1)
        assert reply.content == "⚠️ I could not post in this channel."
        assert [m for m in fake.channel_messages() if replies_to(m, said)] == [reply]
        assert row["state"] == "failed" and row["delivery_abandoned_at"] is not None
    assert fake_gemini.requests == []
