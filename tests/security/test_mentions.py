"""Prompts full of mention syntax are shown back as typed, and never ping anyone.

On Slack the bot's text is parsed for `<!channel>`, `<@U…>` and friends, so whatever a
person typed must reach Slack with `<`, `>` and `&` escaped. On Discord every message and
edit carries `allowed_mentions: {parse: []}` and the echoed text has its mentions broken.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from tests.bots.test_discord_harness import USER, Bot, discord_server, running_bot
from tests.bots.test_slack_app import Running, running
from tests.fakes.discord import DiscordCall
from tests.fakes.gemini import FakeGemini

SLACK_PROMPT = (
    "<!channel> <!here> <!everyone> <@U123> <#C123> <!subteam^S123> @everyone @here "
    "<@&role> <@123> &lt;!channel&gt; &lt;@U123&gt; a castle &amp; a moat"
)
DISCORD_PROMPT = (
    "@everyone @here <@123> <@!456> <@&789> <@&role> <#111> <!channel> <!here> a castle"
)
PING = re.compile(r"@(everyone|here)\b")
DISCORD_MENTION = re.compile(r"<@[!&]?\d+>")


# Slack


def _slack_shown(slack: Running) -> list[str]:
    """Every text the bot handed Slack to show: messages, edits, ephemerals, file comments."""
    fake = slack.fake
    shown: list[str] = []
    for call in fake.calls:
        if call.method in ("chat.postMessage", "chat.update", "chat.postEphemeral"):
            shown += [str(call.params.get("text") or ""), str(call.params.get("blocks") or "")]
        if call.method == "files.completeUploadExternal":
            shown.append(str(call.params.get("initial_comment") or ""))
    shown += [json.dumps(post["body"]) for post in fake.response_url_posts]
    return shown


def _assert_slack_inert(slack: Running, *, allowed_users: set[str]) -> None:
    shown = _slack_shown(slack)
    assert shown
    for text in shown:
        assert "<!" not in text, text
        assert "<#" not in text, text
        assert set(re.findall(r"<@[^>]*>", text)) <= {f"<@{u}>" for u in allowed_users}, text
    assert not any(c.params.get("link_names") for c in slack.fake.calls)


async def test_slack_status_and_result_echo_mention_syntax_escaped(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    async with running(tmp_path, fake_gemini) as slack:
        await slack.command(f"{SLACK_PROMPT} --text")
        status = await slack.status_posted()
        done = await slack.final(status)

        assert ":white_check_mark:" in done["text"]
        shown = str(done["blocks"])
        assert "&lt;!channel&gt;" in shown  # typed as characters, shown as characters
        assert "&amp;" in shown
        [upload] = slack.fake.uploads
        assert upload.initial_comment and "&lt;!channel&gt;" in upload.initial_comment
        _assert_slack_inert(slack, allowed_users={"U1"})


async def test_slack_thread_mention_echoes_mention_syntax_escaped(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    async with running(tmp_path, fake_gemini) as slack:
        mention = slack.fake.app_mention_event(SLACK_PROMPT, user="U1", channel="C1")
        await slack.event(mention)
        await slack.final(await slack.status_posted())

        _assert_slack_inert(slack, allowed_users={"U1"})


async def test_slack_refusals_quoting_what_was_typed_echo_it_escaped(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    async with running(tmp_path, fake_gemini) as slack:
        # what Slack sends when someone types the characters `--ar <!channel>`
        await slack.command("a cat --ar &lt;!channel&gt;")
        await slack.fake.wait_until(lambda: slack.fake.response_url_posts, what="the refusal")
        notes = slack.fake.add_file(b"just text", name="<!here>.txt", mimetype="text/plain")
        await slack.event(slack.fake.app_mention_event("use this", channel="C1", files=[notes]))
        await slack.fake.wait_for_call(
            "chat.postMessage", predicate=lambda c: "is not one" in str(c.params.get("text"))
        )

        assert await slack.job_count() == 0
        _assert_slack_inert(slack, allowed_users={"U1", "U0USER", slack.fake.bot_user_id})


# Discord


def _visible_texts(body: dict[str, Any]) -> list[str]:
    texts = [str(body.get("content") or ""), str(body.get("name") or "")]
    for embed in body.get("embeds") or []:
        texts += [str(embed.get(key) or "") for key in ("title", "description")]
        texts += [str(f.get("value") or "") for f in embed.get("fields") or []]
        texts.append(str((embed.get("footer") or {}).get("text") or ""))
    return texts


def _bodies(fake_calls: list[DiscordCall]) -> list[dict[str, Any]]:
    """Message bodies the bot sent or edited (an interaction's type 4 answer included)."""
    bodies = []
    for call in fake_calls:
        if call.method not in ("POST", "PATCH") or not isinstance(call.json, dict):
            continue
        body = call.json
        if call.path.endswith("/callback"):
            body = body.get("data") or {}
        if body.get("content") or body.get("embeds"):
            bodies.append(body)
    return bodies


def _assert_discord_inert(bot: Bot) -> None:
    bodies = _bodies(bot.fake.calls)
    assert bodies
    for body in bodies:
        allowed = body.get("allowed_mentions")
        assert allowed is not None, body
        assert allowed.get("parse") == [], allowed
        assert not allowed.get("users") and not allowed.get("roles"), allowed
        for text in _visible_texts(body):
            assert not PING.search(text), text
            assert set(DISCORD_MENTION.findall(text)) <= {f"<@{USER}>"}, text
    for call in bot.fake.calls_to("POST", r"/channels/\d+/messages/\d+/threads"):
        for text in _visible_texts(call.json or {}):
            assert not PING.search(text) and not DISCORD_MENTION.search(text), text


async def test_discord_slash_result_echoes_mentions_without_pinging(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    async with discord_server() as fake, running_bot(tmp_path, fake_gemini, fake) as bot:
        result = await bot.result_of(await bot.slash({"prompt": DISCORD_PROMPT, "text": True}))

        [embed] = result.embeds
        assert "@\u200beveryone" in embed["description"]
        assert "<@\u200b&789>" in embed["description"]
        model_said = [f["value"] for f in embed["fields"] if f["name"] == "Model"]
        assert model_said and "@\u200bhere" in model_said[0]
        _assert_discord_inert(bot)


async def test_discord_mentions_threads_and_refusals_echo_mentions_without_pinging(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    async with (
        discord_server() as fake,
        running_bot(tmp_path, fake_gemini, fake, DISCORD_THREAD_MESSAGES="true") as bot,
    ):
        said = await bot.say(DISCORD_PROMPT)
        await fake.wait_for_message(lambda m: bool(m.attachments), timeout=10)
        refused = await bot.say("a cat --ar @everyone")
        await fake.wait_for_message(
            lambda m: (
                (m.message_reference or {}).get("message_id") == refused["id"]
                and m.content.startswith("⚠️")
            )
        )
        slash = await bot.slash({"prompt": "a dog --temp <@&789>"})
        await fake.wait_for_message(
            lambda m: (m.interaction_metadata or {}).get("id") == slash["id"]
        )

        assert fake.calls_to("POST", rf"/channels/\d+/messages/{said['id']}/threads")
        _assert_discord_inert(bot)
