"""Workspaces and guilds never see each other's conversations, images or jobs.

Two tenants using the same thread key, channel id and message ids each get only their own
history in the image API request (read from FakeGemini's recorded `contents`); a button,
form or request naming another tenant's job is refused without any work being done.
"""

from __future__ import annotations

import asyncio
import base64
import json
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest

from core.errors import UserFacingError
from core.jobs import Job, Outcome
from tests.bots.test_discord_harness import (
    OTHER,
    USER,
    Bot,
    custom_ids,
    discord_server,
    finished,
    replies_to,
    running_bot,
)
from tests.bots.test_slack_app import Running, running
from tests.conftest import make_settings
from tests.core.service_harness import RecordingAdapter, request
from tests.core.service_harness import running as running_service
from tests.fakes.discord import StoredMessage
from tests.fakes.gemini import FakeGemini

T1, T2 = "T0001", "T0002"  # T0001 is FakeSlack's own team
SHARED_TS = "1800000000.000100"


def _user_texts(gemini: FakeGemini, index: int) -> list[str]:
    body = gemini.requests[index].json
    assert isinstance(body, dict)
    return [
        part["text"]
        for content in body["contents"]
        if content["role"] == "user"
        for part in content["parts"]
        if "text" in part
    ]


def _images_sent(gemini: FakeGemini, index: int) -> list[bytes]:
    body = gemini.requests[index].json
    assert isinstance(body, dict)
    return [
        base64.b64decode(part["inlineData"]["data"])
        for content in body["contents"]
        for part in content["parts"]
        if "inlineData" in part
    ]


# Slack: two workspaces, the same channel id and the same message ts


def _as_team(payload: dict[str, Any], team: str) -> dict[str, Any]:
    payload = json.loads(json.dumps(payload))
    for holder in (payload, *payload.get("authorizations", [])):
        holder["team_id"] = team
    if "context_team_id" in payload:
        payload["context_team_id"] = team
    if isinstance(payload.get("team"), dict):
        payload["team"]["id"] = team
    if isinstance(payload.get("view"), dict):
        payload["view"]["team_id"] = team
        payload["view"]["app_installed_team_id"] = team
    event = payload.get("event")
    if isinstance(event, dict):
        event["team"] = team
    return payload


async def _event_as(slack: Running, team: str, event: dict[str, Any]) -> None:
    body = json.dumps(_as_team(slack.fake.event_payload(event), team)).encode()
    status, _, _ = await slack.post((body, "application/json"))
    assert status == 200


async def _interact_as(slack: Running, team: str, payload: dict[str, Any]) -> tuple[int, bytes]:
    form = urlencode({"payload": json.dumps(_as_team(payload, team))}).encode()
    status, body, _ = await slack.post((form, "application/x-www-form-urlencoded"))
    return status, body


async def _slack_result(slack: Running, team: str, count: int) -> tuple[str, str]:
    """The `count`-th status message, once its job is delivered in `team`."""
    status = await slack.status_posted(count)
    key = f"{status[0]}:{status[1]}"
    async with asyncio.timeout(10):
        while True:
            job = await slack.service.job_for_message("slack", team, key)
            if job is not None and job.delivered_at is not None:
                return status
            await asyncio.sleep(0.01)


async def test_two_slack_workspaces_with_the_same_channel_and_ts_keep_their_own_history(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    async with running(tmp_path, fake_gemini) as slack:
        fake = slack.fake
        # the same channel id and message ts in both workspaces
        await _event_as(
            slack, T1, fake.app_mention_event("a red apple", channel="C1", ts=SHARED_TS)
        )
        await _slack_result(slack, T1, 1)
        await _event_as(
            slack, T2, fake.app_mention_event("a blue pear", channel="C1", ts=SHARED_TS)
        )
        await _slack_result(slack, T2, 2)
        assert _user_texts(fake_gemini, 1) == ["a blue pear"]

        reply = fake.app_mention_event(
            "make it bigger", channel="C1", thread_ts=SHARED_TS, ts="1800000000.000200"
        )
        await _event_as(slack, T2, reply)
        await _slack_result(slack, T2, 3)
        other = fake.app_mention_event(
            "now at night", channel="C1", thread_ts=SHARED_TS, ts="1800000000.000300"
        )
        await _event_as(slack, T1, other)
        await _slack_result(slack, T1, 4)

    apple, pear = fake_gemini.responses[0].image, fake_gemini.responses[1].image
    assert _user_texts(fake_gemini, 2) == ["a blue pear", "make it bigger"]
    assert _images_sent(fake_gemini, 2) == [pear]
    assert _user_texts(fake_gemini, 3) == ["a red apple", "now at night"]
    assert _images_sent(fake_gemini, 3) == [apple]


async def test_a_plain_reply_counts_only_in_a_thread_the_bot_started_in_that_workspace(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    async with running(tmp_path, fake_gemini, SLACK_THREAD_REPLIES="true") as slack:
        fake = slack.fake
        await _event_as(
            slack, T1, fake.app_mention_event("a red apple", channel="C1", ts=SHARED_TS)
        )
        await _slack_result(slack, T1, 1)

        for team, text, ts in (
            (T2, "hijack this", "1800000000.000200"),
            (T1, "now at night", "1800000000.000300"),
        ):
            reply = fake.message_event(text, channel="C1", thread_ts=SHARED_TS, ts=ts)
            await _event_as(slack, team, reply)
        await _slack_result(slack, T1, 2)

        assert await slack.job_count() == 2
    assert len(fake_gemini.requests) == 2
    assert _user_texts(fake_gemini, 1) == ["a red apple", "now at night"]


@pytest.mark.parametrize(
    "action_id", ["imagebot.reroll", "imagebot.upscale.2K", "imagebot.edit", "imagebot.delete"]
)
async def test_a_slack_button_click_from_another_workspace_is_refused(
    tmp_path: Path, fake_gemini: FakeGemini, action_id: str
) -> None:
    async with running(tmp_path, fake_gemini) as slack:
        await slack.command("a red apple")
        status = await slack.status_posted()
        await slack.final(status)
        job_id = slack.button(status, action_id)["value"]

        payload = slack.fake.block_action_payload(
            action_id, user_id="U1", channel_id=status[0], message_ts=status[1], value=job_id
        )
        answer, _ = await _interact_as(slack, T2, payload)
        assert answer == 200
        await slack.fake.wait_until(lambda: slack.fake.response_url_posts, what="the refusal")

        [refusal] = slack.fake.response_url_posts
        assert refusal["body"]["text"] == "That image belongs to another workspace."
        assert await slack.job_count() == 1
        assert len(fake_gemini.requests) == 1
        assert not slack.fake.calls_to("views.open")
        assert status in slack.fake.messages  # nothing was deleted


async def test_a_slack_edit_form_naming_another_workspaces_job_is_refused(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    async with running(tmp_path, fake_gemini) as slack:
        await slack.command("a red apple")
        status = await slack.status_posted()
        await slack.final(status)
        job_id = slack.button(status, "imagebot.edit")["value"]

        view = {"id": "V9", "callback_id": "imagebot.edit", "private_metadata": job_id}
        typed = {"instruction": {"text": {"type": "plain_text_input", "value": "add a worm"}}}
        payload = slack.fake.view_submission_payload(view, user_id="U9", values=typed)
        answer, body = await _interact_as(slack, T2, payload)

        assert answer == 200
        assert json.loads(body)["response_action"] == "errors"
        assert await slack.job_count() == 1
        assert len(fake_gemini.requests) == 1


# the service: the same keys in two tenants


class _SameMessageKey(RecordingAdapter):
    """A platform whose message ids collide across tenants: every result is message M1."""

    async def deliver(self, job: Job, outcome: Outcome) -> list[str]:
        await super().deliver(job, outcome)
        return ["M1"]


async def test_the_same_thread_key_and_message_key_in_two_tenants_are_two_conversations(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    adapter = _SameMessageKey()
    async with running_service(make_settings(tmp_path, fake_gemini), adapter) as service:
        for tenant, prompt in (("T1", "a red apple"), ("T2", "a blue pear")):
            made = await service.submit(
                request(prompt, f"{tenant}-first", tenant=tenant, thread_key="C1:1.0")
            )
            await adapter.wait_for(made.job.id)
        follow_ups = [
            ("T2", "bigger, by thread", {"thread_key": "C1:1.0"}),
            ("T1", "at night, by reply", {"reply_to": "M1"}),
            ("T2", "in snow, by reply", {"reply_to": "M1"}),
        ]
        for tenant, prompt, where in follow_ups:
            made = await service.submit(
                request(prompt, f"{tenant}-{prompt}", tenant=tenant, **where)
            )
            await adapter.wait_for(made.job.id)

    apple, pear = fake_gemini.responses[0].image, fake_gemini.responses[1].image
    assert _user_texts(fake_gemini, 2) == ["a blue pear", "bigger, by thread"]
    assert _images_sent(fake_gemini, 2) == [pear]
    assert _user_texts(fake_gemini, 3)[0] == "a red apple"
    assert "a blue pear" not in _user_texts(fake_gemini, 3)
    assert pear not in _images_sent(fake_gemini, 3)
    assert _user_texts(fake_gemini, 4)[0] == "a blue pear"
    assert apple not in _images_sent(fake_gemini, 4)


async def test_continuing_another_tenants_job_is_refused_before_anything_is_stored(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    adapter = RecordingAdapter()
    async with running_service(make_settings(tmp_path, fake_gemini), adapter) as service:
        made = await service.submit(request("a red apple", "k1", tenant="T1"))
        await adapter.wait_for(made.job.id)
        before = await service.store.counts()

        for kind, text in (("edit", "add a worm"), ("upscale", "bigger")):
            with pytest.raises(UserFacingError, match="another workspace"):
                await service.submit(
                    request(text, f"k-{kind}", tenant="T2", kind=kind, continue_job=made.job.id)
                )
        with pytest.raises(UserFacingError, match="another workspace"):
            await service.submit(
                request("add a worm", "k-platform", platform="other", continue_job=made.job.id)
            )

        assert await service.store.counts() == before
    assert len(fake_gemini.requests) == 1


# Discord: a guild and a DM are different tenants


async def _guild_image(bot: Bot, prompt: str = "a red apple") -> StoredMessage:
    return await bot.result_of(await bot.slash({"prompt": prompt}))


def _dm_message_with_buttons(bot: Bot, source: StoredMessage, user: int) -> StoredMessage:
    """A bot message in a DM carrying the buttons of an image from the guild."""
    channel = bot.fake.add_dm_channel(user)
    return bot.fake.add_bot_message("here", channel_id=channel, components=source.components)


def _button(message: StoredMessage, action: str) -> str:
    return next(i for i in custom_ids(message) if i.startswith(f"imagebot:{action}:"))


async def _answer(bot: Bot, payload: dict[str, Any]) -> StoredMessage:
    """What answers an interaction in the end: a private note, or a finished result."""
    return await bot.fake.wait_for_message(
        lambda m: (
            (m.interaction_metadata or {}).get("id") == payload["id"]
            and (m.ephemeral or finished(m))
        ),
        timeout=5,
    )


@pytest.mark.parametrize("action", ["upscale:2K", "edit-form"])
async def test_a_discord_upscale_or_edit_from_another_tenant_is_refused(
    tmp_path: Path, fake_gemini: FakeGemini, action: str
) -> None:
    async with discord_server() as fake, running_bot(tmp_path, fake_gemini, fake) as bot:
        first = await _guild_image(bot)
        job_id = _button(first, "reroll").rsplit(":", 1)[1]
        if action == "edit-form":
            channel = fake.add_dm_channel(OTHER)
            payload = fake.interaction_modal_submit(
                f"imagebot:edit-form:{job_id}",
                {"change": "add a worm"},
                user_id=OTHER,
                channel_id=channel,
            )
            await fake.dispatch("INTERACTION_CREATE", payload)
        else:
            elsewhere = _dm_message_with_buttons(bot, first, OTHER)
            payload = await bot.click(elsewhere, _button(first, action), user=OTHER)

        answer = await _answer(bot, payload)
        assert answer.ephemeral and "another server" in answer.content
        assert (await bot.service.store.counts())["jobs"] == 1
    assert len(fake_gemini.requests) == 1


async def test_a_discord_reroll_from_another_tenant_is_refused(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    async with discord_server() as fake, running_bot(tmp_path, fake_gemini, fake) as bot:
        first = await _guild_image(bot)
        elsewhere = _dm_message_with_buttons(bot, first, OTHER)
        payload = await bot.click(elsewhere, _button(first, "reroll"), user=OTHER)

        answer = await _answer(bot, payload)
        assert not answer.attachments, "the other tenant's image was made again and shown"
        assert answer.ephemeral and "another" in answer.content
        assert (await bot.service.store.counts())["jobs"] == 1
    assert len(fake_gemini.requests) == 1


async def test_a_dm_reply_to_a_guild_image_starts_afresh_without_the_guilds_history(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    async with discord_server() as fake, running_bot(tmp_path, fake_gemini, fake) as bot:
        first = await _guild_image(bot)
        channel = fake.add_dm_channel(USER)
        payload = fake.message_create(
            "make it green", author_id=USER, channel_id=channel, referenced_message=first
        )
        await fake.dispatch("MESSAGE_CREATE", payload)
        await fake.wait_for_message(lambda m: replies_to(m, payload) and finished(m))

    assert _user_texts(fake_gemini, 1) == ["make it green"]
    assert _images_sent(fake_gemini, 1) == []
