"""Oversized and malformed input is refused cleanly and the bot keeps working.

For each kind of bad input: the process does not fall over (a normal request afterwards
still makes an image), a person who sent it gets one clear sentence, no job is stored for
it, and nothing is logged as an unhandled exception (an ERROR line with a traceback).
"""

from __future__ import annotations

import asyncio
import gc
import json
import logging
import unicodedata
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from tests.bots.test_discord_harness import (
    USER,
    Bot,
    discord_server,
    png,
    replies_to,
    running_bot,
)
from tests.bots.test_slack_app import Running, png_bytes, running
from tests.fakes.gemini import FakeGemini
from tests.security.file_server import FileServer

_DROP = object()  # an attachment field to leave out
EVIL_NAME = "\u202egnp.exe\x1b[31m\r\nINFO forged log line\x00" + "a" * 10_000 + ".png"


def _unhandled(caplog: pytest.LogCaptureFixture) -> list[str]:
    gc.collect()  # a task that died with an exception reports it when collected
    return [
        f"{r.name}: {r.getMessage()[:200]}"
        for r in caplog.records
        if r.levelno >= logging.ERROR and r.exc_info
    ]


def _shows_name_safely(text: str) -> None:
    """A file name in a message: one printable line, no bidi override, not 10,000 chars."""
    assert "\u202e" not in text and "\x1b" not in text and "\x00" not in text
    assert "\r" not in text and "\n" not in text
    assert not any(unicodedata.category(c) == "Cf" for c in text)
    assert "a" * 200 not in text
    assert len(text) < 600


@pytest.fixture
async def origin() -> AsyncIterator[FileServer]:
    async with FileServer("127.0.0.1") as server:
        yield server


# Slack


async def _still_works(slack: Running, count: int = 1) -> None:
    await slack.command("a lighthouse")
    await slack.final(await slack.status_posted(count))


async def _slack_reply(slack: Running, words: str) -> str:
    [call] = await slack.fake.wait_for_call(
        "chat.postMessage", predicate=lambda c: words in str(c.params.get("text"))
    )
    return str(call.params["text"])


async def test_a_slack_request_of_several_megabytes_is_refused_and_the_app_keeps_working(
    tmp_path: Path, fake_gemini: FakeGemini, caplog: pytest.LogCaptureFixture
) -> None:
    async with running(tmp_path, fake_gemini) as slack:
        mention = slack.fake.app_mention_event("x" * 5_000_000, user="U1", channel="C1")
        status, _, _ = await slack.event(mention)

        assert status == 413
        await _still_works(slack)
        assert await slack.job_count() == 1
    assert _unhandled(caplog) == []


async def test_a_prompt_of_hundreds_of_kilobytes_is_refused_in_one_sentence(
    tmp_path: Path, fake_gemini: FakeGemini, caplog: pytest.LogCaptureFixture
) -> None:
    async with running(tmp_path, fake_gemini) as slack:
        # the text comes twice in an event (text and blocks): 2 x 400 KB stays under 1 MB
        await slack.event(slack.fake.app_mention_event("y" * 400_000, user="U1", channel="C1"))

        said = await _slack_reply(slack, "characters long")
        assert "400,000" in said and len(said) < 300
        assert await slack.job_count() == 0
        await _still_works(slack)
    assert len(fake_gemini.requests) == 1
    assert _unhandled(caplog) == []


def _slack_event_variants(slack: Running) -> list[dict[str, Any]]:
    fake = slack.fake
    good = fake.app_mention_event("a fox", user="U1", channel="C1")
    photo = fake.add_file(png_bytes(), name="fox.png", mimetype="image/png")
    return [
        {k: v for k, v in good.items() if k != "channel"},
        {k: v for k, v in good.items() if k != "ts"},
        {**good, "text": {"type": "rich_text"}},
        {**good, "user": ["U1"]},
        {**good, "files": "fox.png"},
        {**good, "files": [{"name": "fox.png"}]},
        {**good, "files": [{**photo, "size": "big", "mimetype": 7}]},
        {**good, "thread_ts": {"ts": "1.0"}},
    ]


async def test_slack_events_with_missing_fields_or_wrong_types_are_ignored_without_a_job(
    tmp_path: Path, fake_gemini: FakeGemini, caplog: pytest.LogCaptureFixture
) -> None:
    async with running(tmp_path, fake_gemini) as slack:
        for event in _slack_event_variants(slack):
            status, _, _ = await slack.event(event)
            assert status == 200

        await _still_works(slack)
        assert await slack.job_count() == 1
        assert len(fake_gemini.requests) == 1
    assert _unhandled(caplog) == []


def _click(slack: Running) -> dict[str, Any]:
    return slack.fake.block_action_payload(
        "imagebot.reroll", user_id="U1", channel_id="C1", message_ts="1.0", value="f" * 32
    )


async def _interact(slack: Running, payload: dict[str, Any]) -> int:
    form = urlencode({"payload": json.dumps(payload)}).encode()
    status, _, _ = await slack.post((form, "application/x-www-form-urlencoded"))
    return status


async def test_slack_clicks_and_commands_missing_their_fields_make_no_job(
    tmp_path: Path, fake_gemini: FakeGemini, caplog: pytest.LogCaptureFixture
) -> None:
    async with running(tmp_path, fake_gemini) as slack:
        click = _click(slack)
        for payload in (
            {**click, "actions": [{"action_id": "imagebot.reroll", "value": {"job": 1}}]},
            {k: v for k, v in click.items() if k != "user"},
        ):
            assert await _interact(slack, payload) == 200
        command = slack.fake.slash_command_payload("a fox", user_id="U1", channel_id="C1")
        del command["team_id"]
        form = urlencode(command).encode()
        status, _, _ = await slack.post((form, "application/x-www-form-urlencoded"))
        assert status == 200

        await _still_works(slack)
        assert await slack.job_count() == 1
    assert _unhandled(caplog) == []


async def test_signed_slack_envelopes_bolt_cannot_read_get_a_4xx_without_an_unhandled_error(
    tmp_path: Path, fake_gemini: FakeGemini, caplog: pytest.LogCaptureFixture
) -> None:
    async with running(tmp_path, fake_gemini) as slack:
        answers = [
            await _interact(slack, {**_click(slack), "actions": []}),
            await _interact(
                slack, {"type": "view_submission", "team": {"id": "T0001"}, "view": "imagebot.edit"}
            ),
        ]
        event = {**slack.fake.event_payload({"type": "app_mention"}), "event": "not an event"}
        status, _, _ = await slack.post((json.dumps(event).encode(), "application/json"))
        answers.append(status)

        await _still_works(slack)
        assert await slack.job_count() == 1
    assert _unhandled(caplog) == []
    assert all(400 <= status < 500 for status in answers), answers


async def test_a_slash_command_without_text_answers_with_help_and_makes_no_job(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    async with running(tmp_path, fake_gemini) as slack:
        command = slack.fake.slash_command_payload("", user_id="U1", channel_id="C1")
        del command["text"]
        await slack.post((urlencode(command).encode(), "application/x-www-form-urlencoded"))
        await slack.command("   ")
        await slack.fake.wait_until(lambda: len(slack.fake.response_url_posts) >= 2, what="help")

        assert all("*Make an image:*" in p["body"]["text"] for p in slack.fake.response_url_posts)
        assert await slack.job_count() == 0
        assert not fake_gemini.requests


async def test_unreadable_slack_bodies_get_a_4xx_without_an_unhandled_error(
    tmp_path: Path, fake_gemini: FakeGemini, caplog: pytest.LogCaptureFixture
) -> None:
    bodies = [
        (b"{not json", "application/json"),
        (b"[1, 2]", "application/json"),
        (b"payload=%7Bnot+json", "application/x-www-form-urlencoded"),
        (b"payload=%5B1%5D", "application/x-www-form-urlencoded"),
        (b"\xff\xfe\x00{", "application/json"),
    ]
    async with running(tmp_path, fake_gemini) as slack:
        answers = []
        for body in bodies:
            for forged in (True, False):  # nobody needs the signing secret to send these
                status, _, _ = await slack.post(body, bad_signature=forged)
                answers.append(status)
        await _still_works(slack)
        assert await slack.job_count() == 1
    assert _unhandled(caplog) == []
    assert all(400 <= status < 500 for status in answers), answers


async def test_a_slack_file_declared_small_but_endless_is_cut_off_at_the_cap(
    tmp_path: Path, fake_gemini: FakeGemini, origin: FileServer
) -> None:
    total = 64 * 1024 * 1024
    url = origin.stream("/photo.png", total)
    async with running(tmp_path, fake_gemini, IMAGEBOT_MAX_ATTACHMENT_MB=1) as slack:
        shared = slack.fake.add_file(png_bytes(), name="photo.png", mimetype="image/png")
        shared.update(size=120, url_private=url, url_private_download=url)
        await slack.event(slack.fake.app_mention_event("use this", channel="C1", files=[shared]))

        said = await _slack_reply(slack, "photo.png")
        assert "the limit is 1 MB" in said
        async with asyncio.timeout(5):
            await origin.streams["/photo.png"].ended.wait()
        assert origin.streams["/photo.png"].sent < total // 2
        assert await slack.job_count() == 0
        await _still_works(slack)


@pytest.mark.parametrize(
    ("mimetype", "data"), [("text/plain", b"just words"), ("image/png", b"not a png at all")]
)
async def test_a_slack_file_name_with_controls_bidi_and_10000_chars_is_shown_tamed(
    tmp_path: Path, fake_gemini: FakeGemini, mimetype: str, data: bytes
) -> None:
    async with running(tmp_path, fake_gemini) as slack:
        shared = slack.fake.add_file(data, name=EVIL_NAME, mimetype=mimetype)
        await slack.event(slack.fake.app_mention_event("use this", channel="C1", files=[shared]))

        said = await _slack_reply(slack, "gnp.exe")
        _shows_name_safely(said)
        assert "…" in said
        assert await slack.job_count() == 0


# Discord


async def _discord_failure(bot: Bot, payload: dict[str, Any]) -> str:
    message = await bot.fake.wait_for_message(
        lambda m: replies_to(m, payload) and m.content.startswith("⚠️"), timeout=5
    )
    return message.content


def _mention_with(bot: Bot, attachment: dict[str, Any], **changes: Any) -> dict[str, Any]:
    fake = bot.fake
    payload = fake.message_create(
        f"<@{fake.bot_user_id}> use this",
        author_id=USER,
        attachments=[attachment],
        mentions=[fake.bot_user_id],
    )
    payload["attachments"][0].update(changes)
    for key in [k for k, v in changes.items() if v is _DROP]:
        del payload["attachments"][0][key]
    return payload


async def _discord_still_works(bot: Bot) -> None:
    """A plain mention still gets its image, unless the client died (which fails fast)."""
    said = await bot.say("a lighthouse")
    async with asyncio.timeout(10):
        while not any(replies_to(m, said) and m.attachments for m in bot.fake.channel_messages()):
            assert not bot.app.client.is_closed(), "the Discord client stopped"
            await asyncio.sleep(0.01)


async def test_a_discord_attachment_of_absurd_declared_size_is_refused_before_download(
    tmp_path: Path, fake_gemini: FakeGemini, caplog: pytest.LogCaptureFixture
) -> None:
    async with discord_server() as fake, running_bot(tmp_path, fake_gemini, fake) as bot:
        payload = _mention_with(bot, fake.add_attachment(png(), "big.png"), size=10**30)
        await fake.dispatch("MESSAGE_CREATE", payload)

        said = await _discord_failure(bot, payload)
        assert "the limit is 20 MB" in said and len(said) < 300
        assert not fake.cdn_downloads
        assert (await bot.service.store.counts())["jobs"] == 0
        await _discord_still_works(bot)
    assert _unhandled(caplog) == []


async def test_a_discord_attachment_declared_small_but_endless_is_cut_off_at_the_cap(
    tmp_path: Path, fake_gemini: FakeGemini, origin: FileServer
) -> None:
    total = 64 * 1024 * 1024
    url = origin.stream("/photo.png", total)
    async with (
        discord_server() as fake,
        running_bot(tmp_path, fake_gemini, fake, IMAGEBOT_MAX_ATTACHMENT_MB=1) as bot,
    ):
        payload = _mention_with(bot, fake.add_attachment(png(), "photo.png"), size=-5, url=url)
        await fake.dispatch("MESSAGE_CREATE", payload)

        said = await _discord_failure(bot, payload)
        assert "the limit is 1 MB" in said
        async with asyncio.timeout(5):
            await origin.streams["/photo.png"].ended.wait()
        assert origin.streams["/photo.png"].sent < total // 2
        assert (await bot.service.store.counts())["jobs"] == 0


async def test_a_discord_file_name_with_controls_bidi_and_10000_chars_is_shown_tamed(
    tmp_path: Path, fake_gemini: FakeGemini, origin: FileServer
) -> None:
    url = origin.stream("/photo.png", 8 * 1024 * 1024)
    async with (
        discord_server() as fake,
        running_bot(tmp_path, fake_gemini, fake, IMAGEBOT_MAX_ATTACHMENT_MB=1) as bot,
    ):
        payload = _mention_with(
            bot, fake.add_attachment(png(), "x.png"), filename=EVIL_NAME, url=url, size=100
        )
        await fake.dispatch("MESSAGE_CREATE", payload)

        said = await _discord_failure(bot, payload)
        assert (await bot.service.store.counts())["jobs"] == 0
    _shows_name_safely(said)


def _slash_variant(fake: Any, case: str) -> dict[str, Any]:
    if case == "prompt_is_a_number":
        return fake.interaction_slash_command(
            "imagine", [{"name": "prompt", "type": 4, "value": 5}], user_id=USER
        )
    if case == "unknown_option":
        return fake.interaction_slash_command(
            "imagine",
            [
                {"name": "prompt", "type": 3, "value": "a fox"},
                {"name": "evil", "type": 3, "value": "x" * 5000},
            ],
            user_id=USER,
        )
    payload = fake.interaction_slash_command("imagine", [], user_id=USER)
    if case == "no_data":
        del payload["data"]
    return payload


_UNHANDLED = "an ERROR with a traceback is logged for a payload Discord's schema rules out"


@pytest.mark.parametrize(
    "case",
    [
        pytest.param("unknown_option"),
        pytest.param("prompt_is_a_number"),
        pytest.param("no_options"),
        pytest.param("no_data"),
    ],
)
async def test_a_malformed_discord_command_makes_no_job_and_no_unhandled_error(
    tmp_path: Path, fake_gemini: FakeGemini, caplog: pytest.LogCaptureFixture, case: str
) -> None:
    async with discord_server() as fake, running_bot(tmp_path, fake_gemini, fake) as bot:
        payload = _slash_variant(fake, case)
        await fake.dispatch("INTERACTION_CREATE", payload)
        await _discord_still_works(bot)
        jobs = (await bot.service.store.counts())["jobs"]
    assert jobs == (2 if case == "unknown_option" else 1)
    assert _unhandled(caplog) == []


async def test_a_discord_temperature_that_is_not_a_number_is_refused_before_any_job(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    async with discord_server() as fake, running_bot(tmp_path, fake_gemini, fake) as bot:
        payload = fake.interaction_slash_command(
            "imagine",
            [
                {"name": "prompt", "type": 3, "value": "a fox"},
                {"name": "temperature", "type": 3, "value": "hot"},
            ],
            user_id=USER,
        )
        await fake.dispatch("INTERACTION_CREATE", payload)
        answer = await fake.wait_for_message(
            lambda m: (
                (m.interaction_metadata or {}).get("id") == payload["id"]
                and m.content.startswith("⚠️")
            ),
            timeout=5,
        )
        jobs = (await bot.service.store.counts())["jobs"]
    assert "temp" in answer.content
    assert jobs == 0
    assert not fake_gemini.requests


_ATTACHMENT_CASES: dict[str, Callable[[Bot], dict[str, Any]]] = {
    "size_is_text": lambda bot: _mention_with(
        bot, bot.fake.add_attachment(png(), "a.png"), size="12"
    ),
    "no_url": lambda bot: _mention_with(bot, bot.fake.add_attachment(png(), "a.png"), url=_DROP),
}


@pytest.mark.parametrize(
    "case",
    [
        pytest.param("size_is_text"),
        pytest.param("no_url"),
    ],
)
async def test_a_discord_message_with_a_malformed_attachment_leaves_the_bot_working(
    tmp_path: Path, fake_gemini: FakeGemini, caplog: pytest.LogCaptureFixture, case: str
) -> None:
    async with discord_server() as fake, running_bot(tmp_path, fake_gemini, fake) as bot:
        payload = _ATTACHMENT_CASES[case](bot)
        await fake.dispatch("MESSAGE_CREATE", payload)
        await _discord_still_works(bot)
        jobs = (await bot.service.store.counts())["jobs"]
    # a size that is not a number counts as unknown: the file is still fetched, under the
    # download's own cap; an attachment without a url is dropped with the event
    assert jobs == (2 if case == "size_is_text" else 1)
    assert _unhandled(caplog) == []
