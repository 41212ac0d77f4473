"""Results Discord will not take where they were asked for: a channel denying the bot Embed
Links or Attach Files (403 50013), a deleted answer, a user-installed command answered after
its token died. Each ends in the image somewhere the requester sees it, or a sentence."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from bots.discord.target import TOKEN_LIFETIME_SECONDS
from core.jobs import Job
from tests.bots.test_discord_harness import USER, Bot, discord_server, running_bot
from tests.fakes.discord import FakeDiscord, StoredMessage
from tests.fakes.gemini import FakeGemini
from tests.faults.checks import job_rows, poll_until

NOT_ATTACHED = "the **Attach Files** permission is denied to me in this channel"


def _answer(fake: FakeDiscord, payload: dict[str, Any]) -> StoredMessage | None:
    for message in fake.channel_messages(fake.channel_id):
        if (message.interaction_metadata or {}).get("id") == payload["id"]:
            return message
    return None


def _dms(fake: FakeDiscord) -> list[StoredMessage]:
    return fake.channel_messages(fake.add_dm_channel(USER))


def _channel_posts(fake: FakeDiscord) -> list[str]:
    """Posts with the bot token in the channel the command was used in (not in DMs)."""
    return [c.path for c in fake.calls_to("POST", rf"/channels/{fake.channel_id}/messages")]


async def _late_user_installed_imagine(fake: FakeDiscord) -> dict[str, Any]:
    """/imagine from the app installed to the user's account, its token about to die."""
    payload = fake.interaction_slash_command(
        "imagine",
        [{"name": "prompt", "type": 3, "value": "a late owl"}],
        user_id=USER,
        user_install=True,
        age_seconds=TOKEN_LIFETIME_SECONDS - 1.0,
    )
    await fake.dispatch("INTERACTION_CREATE", payload)
    return payload


async def _settled(
    bot: Bot,
    payload: dict[str, Any],
    done: Callable[[Job], bool] = lambda job: job.delivered_at is not None,
) -> Job:
    """The job behind an interaction once `done` holds (by default: its delivery is
    recorded), polled from the store, which has nothing to wait on."""
    key = f"discord:interaction:{payload['id']}"
    async with asyncio.timeout(15):
        while True:
            job = await bot.service.store.job_by_key(key)
            if job is not None and done(job):
                return job
            await asyncio.sleep(0.02)


async def test_without_embed_links_the_image_is_posted_with_its_card_as_text(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    async with discord_server() as fake, running_bot(tmp_path, fake_gemini, fake) as bot:
        fake.deny(fake.channel_id, "EMBED_LINKS")
        payload = await bot.slash({"prompt": "a lighthouse at dusk"})
        result = await bot.result_of(payload)

    assert len(result.attachments) == 1 and result.embeds == []
    assert "a lighthouse at dusk" in result.content
    assert "**Options:** Gemini 3.1 Flash Image · 1K" in result.content
    assert _dms(fake) == []


async def test_without_attach_files_the_card_says_why_and_the_image_goes_by_dm(
    tmp_path: Path, fake_gemini: FakeGemini, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="bots.discord.delivery")
    async with discord_server() as fake, running_bot(tmp_path, fake_gemini, fake) as bot:
        fake.deny(fake.channel_id, "ATTACH_FILES")
        payload = await bot.slash({"prompt": "a red kite"})
        job = await _settled(bot, payload)
        answer = _answer(fake, payload)
        [dm] = _dms(fake)

    assert job.delivered_at is not None
    assert answer is not None and answer.attachments == []
    assert NOT_ATTACHED in answer.content and "so I sent it to you in a DM" in answer.content
    assert "a red kite" in answer.content
    assert len(dm.attachments) == 1
    assert dm.content.startswith(f"Here is the image you asked for in <#{fake.channel_id}>")
    assert "lacks Attach Files" in caplog.text and "message is gone" not in caplog.text


async def test_without_attach_files_and_with_closed_dms_the_card_still_ends_in_a_sentence(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    async with discord_server() as fake, running_bot(tmp_path, fake_gemini, fake) as bot:
        fake.deny(fake.channel_id, "ATTACH_FILES")
        fake.closed_dms.add(USER)
        payload = await bot.slash({"prompt": "a red kite"})
        job = await _settled(bot, payload)
        answer = _answer(fake, payload)

    assert job.delivered_at is not None
    assert answer is not None and answer.attachments == []
    assert "could not DM it to you either" in answer.content
    assert "Generating" not in answer.content


async def test_a_mention_in_a_channel_without_attach_files_is_answered_the_same_way(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    async with discord_server() as fake, running_bot(tmp_path, fake_gemini, fake) as bot:
        fake.deny(fake.channel_id, "ATTACH_FILES")
        said = await bot.say("a paper boat")
        reply = await fake.wait_for_message(
            lambda m: (
                (m.message_reference or {}).get("message_id") == said["id"]
                and NOT_ATTACHED in m.content
            ),
            channel_id=fake.channel_id,
        )
        [dm] = await _wait_for_dm(fake)

    assert reply.attachments == [] and "a paper boat" in reply.content
    assert len(dm.attachments) == 1


async def _wait_for_dm(fake: FakeDiscord) -> list[StoredMessage]:
    await fake.wait_until(lambda: bool(_dms(fake)), 10.0, lambda: "no DM")
    return _dms(fake)


async def test_a_deleted_answer_gets_a_follow_up_through_the_interaction_not_the_bot(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    fake_gemini.latency = 1.0
    async with discord_server() as fake, running_bot(tmp_path, fake_gemini, fake) as bot:
        payload = await bot.slash({"prompt": "a glass whale"})
        await bot.callback(payload)
        await fake_gemini.wait_for_requests(1)
        original = _answer(fake, payload)
        assert original is not None
        await fake.delete_message(original.id)
        job = await _settled(bot, payload)
        [result] = [m for m in fake.channel_messages(fake.channel_id) if m.attachments]

    assert job.delivered_at is not None
    # posted with the interaction's webhook: works where the bot itself may not post
    assert result.webhook_id == fake.application_id
    assert _channel_posts(fake) == []


async def test_a_user_installed_command_finishing_after_its_token_died_comes_by_dm(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    fake_gemini.latency = 1.5
    async with discord_server() as fake, running_bot(tmp_path, fake_gemini, fake) as bot:
        # the bot is not in this channel: only the interaction could post there
        fake.deny(fake.channel_id, "SEND_MESSAGES")
        payload = await _late_user_installed_imagine(fake)
        assert (await bot.callback(payload)).json["type"] == 5
        job = await _settled(bot, payload)
        [dm] = _dms(fake)

    assert job.delivered_at is not None
    assert len(dm.attachments) == 1
    assert "finished after the 15 minutes Discord gives me" in dm.content
    assert _channel_posts(fake) == []
    assert fake.calls_to("PATCH", r"/channels/.*") == []


async def test_a_late_user_installed_result_with_closed_dms_is_given_up_at_once(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    fake_gemini.latency = 1.5
    async with discord_server() as fake, running_bot(tmp_path, fake_gemini, fake) as bot:
        fake.closed_dms.add(USER)
        payload = await _late_user_installed_imagine(fake)
        await _settled(bot, payload, lambda job: job.delivery_attempts > 0)
        [row] = await poll_until(
            lambda: [r for r in job_rows(bot.settings.sqlite_path) if r["delivery_abandoned_at"]],
            timeout=5,
            what="the delivery given up",
        )

    # nothing can reach the requester: given up at the first try, nothing posted where the
    # bot is not a member
    assert row["delivery_attempts"] == 1 and row["delivered_at"] is None
    assert "no DM either" in row["delivery_error"]
    assert _channel_posts(fake) == []
    assert _dms(fake) == []
