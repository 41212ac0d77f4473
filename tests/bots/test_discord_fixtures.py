"""Real Discord payloads (tests/fixtures/discord/README.md) replayed through the real discord.py
client against FakeDiscord: each must end in what a user would notice, as its `expect` says.

Before a payload is sent, `Replayer.rewrite` moves it into the fake's world: the ids its
`replay.ids` names (bot, guild, channel, the bot's thread, a DM channel, the bot's role, a
result of ours) become the fake's, its attachments become small files of the declared type on
the fake's CDN, and the message or interaction itself is registered with the fake under a fresh
id (and token). One bot per setting runs for the whole module: DISCORD_THREAD_MESSAGES off
("default") and on ("threads").
"""

from __future__ import annotations

import asyncio
import contextlib
import copy
import io
import json
import logging
import re
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from PIL import Image

from bots.discord.events import interaction_key, message_key
from bots.discord.forms import CHANGE_FIELD
from core.jobs import Job
from tests.bots.test_discord_harness import USER, Bot, discord_server, finished, running_bot
from tests.conftest import API_KEY
from tests.fakes.discord import DiscordCall, FakeDiscord, StoredMessage, snowflake
from tests.fakes.gemini import FakeGemini

JSON = dict[str, Any]
FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "discord"
BOTS: dict[str, dict[str, str]] = {"default": {}, "threads": {"DISCORD_THREAD_MESSAGES": "true"}}
SETUP_PROMPT = "a lighthouse at dusk"  # the result that buttons and the Edit form belong to
WAIT = 10.0
_ID = re.compile(r"\d{15,21}")
_FORMATS = {"image/png": "PNG", "image/jpeg": "JPEG", "image/webp": "WEBP", "image/gif": "GIF"}
# the first page of an Ogg Opus stream: what a voice message's file starts with
_OGG = b"OggS\x00\x02" + bytes(20) + b"\x01\x13OpusHead\x01\x01\x38\x01\x80\xbb\x00\x00\x00\x00\x00"


def _load(path: Path) -> JSON:
    data: JSON = json.loads(path.read_text(encoding="utf-8"))
    return data


def _params() -> list[Any]:
    """Every fixture, grouped by the bot it needs so that each bot starts once."""
    files = sorted(FIXTURES.glob("*.json"), key=lambda p: (_load(p)["replay"]["bot"], p.name))
    params = []
    for path in files:
        reason = _load(path).get("xfail")
        marks = [pytest.mark.xfail(strict=True, reason=reason)] if reason else []
        params.append(pytest.param(path, id=path.stem, marks=marks))
    return params


# ---------------------------------------------------------------------------- ids


def _rewrite(
    value: Any,
    ids: dict[str, str],
    *,
    app_ids: frozenset[str] = frozenset(),
    app_id: str = "",
    custom_ids: dict[str, str] | None = None,
) -> Any:
    """`value` with every id in `ids` replaced wherever it appears (values, keys, mentions,
    URLs). On Discord a bot's application id is its user id; the fake keeps two, so an
    `application_id` holding the bot's id becomes the fake's application id."""
    custom = custom_ids or {}

    def swap(text: str) -> str:
        return _ID.sub(lambda m: ids.get(m.group(), m.group()), text)

    def walk(item: Any, key: str | None = None) -> Any:
        if isinstance(item, dict):
            return {swap(k): walk(v, k) for k, v in item.items()}
        if isinstance(item, list):
            return [walk(v) for v in item]
        if isinstance(item, str):
            if key == "application_id" and item in app_ids:
                return app_id
            if key == "custom_id" and item in custom:
                return custom[item]
            return swap(item)
        return item

    return walk(value)


def _custom_id(ours: str, job_id: str) -> str:
    return {
        "reroll": f"imagebot:reroll:{job_id}",
        "edit": f"imagebot:edit:{job_id}",
        "edit_form": f"imagebot:edit-form:{job_id}",
        "change": CHANGE_FIELD,
    }[ours]


def _user_id(body: JSON) -> int:
    user = body.get("author") or body.get("user") or (body.get("member") or {}).get("user")
    return int(user["id"]) if user else USER


def _attachments(body: JSON) -> list[JSON]:
    """The message's files, a forward's (in its snapshots) and a command's attachment options."""
    found = list(body.get("attachments") or [])
    for snapshot in body.get("message_snapshots") or []:
        found += snapshot.get("message", {}).get("attachments") or []
    found += list(((body.get("data") or {}).get("resolved") or {}).get("attachments", {}).values())
    return [a for a in found if isinstance(a, dict) and "url" in a]


def _file_for(attachment: JSON) -> bytes:
    """Bytes of the declared type: a small image of the declared shape, or an Ogg page."""
    kind = attachment.get("content_type") or ""
    if kind not in _FORMATS:
        return _OGG
    width, height = attachment.get("width") or 64, attachment.get("height") or 48
    scale = 96 / max(width, height)
    size = (max(8, round(width * scale)), max(8, round(height * scale)))
    buffer = io.BytesIO()
    Image.new("RGB", size, "teal").save(buffer, _FORMATS[kind])
    return buffer.getvalue()


# ---------------------------------------------------------------------------- the world


@dataclass
class Handled:
    """Which messages and interactions reached the bot's handlers, and which they finished."""

    started: set[int] = field(default_factory=set)
    done: set[int] = field(default_factory=set)
    changed: asyncio.Event = field(default_factory=asyncio.Event)

    def wrap(self, handler: Callable[..., Any]) -> Callable[..., Any]:
        async def traced(first: Any, *args: Any, **kwargs: Any) -> Any:
            self.started.add(first.id)  # the message or the interaction
            try:
                return await handler(first, *args, **kwargs)
            finally:
                self.done.add(first.id)
                self.changed.set()

        return traced

    async def wait(self, ident: int, timeout: float = WAIT) -> None:
        async with asyncio.timeout(timeout):
            while True:
                self.changed.clear()
                if ident in self.done:
                    return
                await self.changed.wait()


@dataclass
class Sent:
    event: str
    body: JSON  # as dispatched
    id: int  # the message's or interaction's id in the fake's world
    mark: int  # REST calls the fake had answered before it was sent


class Replayer:
    """One running bot, the fake world it lives in, and what its handlers have done."""

    def __init__(self, kind: str, bot: Bot, gemini: FakeGemini) -> None:
        self.kind = kind
        self.bot = bot
        self.gemini = gemini
        self.fake: FakeDiscord = bot.fake
        self.handled = Handled()
        self._thread: int | None = None
        self._jobs: dict[str, tuple[StoredMessage, str]] = {}
        # the client calls these through the instance, so instance attributes shadow them
        traced = {
            bot.app.client.conversations: ("on_message",),
            bot.app.client.handlers: (
                "imagine",
                "reroll",
                "upscale",
                "edit",
                "edit_submitted",
                "delete",
                "show_usage",
            ),
        }
        for owner, names in traced.items():
            for name in names:
                setattr(owner, name, self.handled.wrap(getattr(owner, name)))

    # the fake's world ---------------------------------------------------------------------

    async def fake_id(self, role: str, body: JSON) -> int:
        fake = self.fake
        fixed = {
            "bot": fake.bot_user_id,
            "application": fake.application_id,
            "guild": fake.guild_id,
            "channel": fake.channel_id,
            "bot_role": fake.bot_role_id,
        }
        if role in fixed:
            return fixed[role]
        if role == "thread":
            return await self.thread()
        if role == "dm":
            return fake.add_dm_channel(_user_id(body))
        if role == "private_channel":
            return snowflake()  # a DM between people: the fake (and the bot) do not know it
        raise ValueError(f"unknown id role {role!r}")

    async def rewrite(self, fixture: JSON) -> JSON:
        """The fixture's body in the fake's world, its files hosted by the fake."""
        replay = fixture["replay"]
        body = copy.deepcopy(fixture["body"])
        result, job_id = await self.job(replay["needs"]) if replay.get("needs") else (None, "")
        ids: dict[str, str] = {}
        for real, role in replay["ids"].items():
            if role == "job_message":
                assert result is not None, "job_message needs `needs`"
                ids[real] = str(result.id)
            else:
                ids[real] = str(await self.fake_id(role, body))
        body = _rewrite(
            body,
            ids,
            app_ids=frozenset(r for r, role in replay["ids"].items() if role == "bot"),
            app_id=str(self.fake.application_id),
            custom_ids={k: _custom_id(v, job_id) for k, v in replay.get("custom_ids", {}).items()},
        )
        self.host_files(body)
        return body

    def host_files(self, body: JSON) -> None:
        channel = int(body.get("channel_id") or self.fake.channel_id)
        for attachment in _attachments(body):
            stored = self.fake.add_attachment(
                _file_for(attachment),
                attachment["filename"],
                attachment.get("content_type"),
                channel_id=channel,
            )
            attachment["url"], attachment["proxy_url"] = stored["url"], stored["proxy_url"]
            attachment["_stored"] = stored

    async def thread(self) -> int:
        """A public thread the bot owns: the recorded THREAD_CREATE, given to fake and client."""
        if self._thread is None:
            fixture = _load(FIXTURES / "thread_create_bot_thread.json")
            self._thread = snowflake()
            ids = {}
            for real, role in fixture["replay"]["ids"].items():
                ids[real] = str(self._thread if role == "thread" else await self.fake_id(role, {}))
            body = _rewrite(copy.deepcopy(fixture["body"]), ids)
            self.fake.channels[self._thread] = body
            await self.fake.dispatch("THREAD_CREATE", body)
            await self.barrier()
        return self._thread

    async def job(self, where: str) -> tuple[StoredMessage, str]:
        """A finished result of ours (and its job's id) to reply to or click on."""
        if where not in self._jobs:
            if where == "thread_job":
                payload = self.fake.message_create(
                    SETUP_PROMPT, author_id=USER, channel_id=await self.thread()
                )
                await self.fake.dispatch("MESSAGE_CREATE", payload)
            else:
                payload = await self.bot.say(SETUP_PROMPT)
            result = await self.bot.reply_to(payload)
            job = await self.bot.service.store.job_by_key(message_key(int(payload["id"])))
            assert job is not None and result.attachments, "the setup request made no image"
            self._jobs[where] = (result, job.id)
        return self._jobs[where]

    # sending ------------------------------------------------------------------------------

    async def send(self, fixture: JSON) -> Sent:
        event = fixture["event"]
        body = await self.rewrite(fixture)
        replay_ids = set(fixture["replay"]["ids"])
        if event == "MESSAGE_CREATE":
            ident = self.store_message(body, replay_ids)
        elif event == "INTERACTION_CREATE":
            ident = self.register_interaction(body)
        else:
            ident = int(body.get("id") or 0)
        for attachment in _attachments(body):
            del attachment["_stored"]
        mark = len(self.fake.calls)
        await self.fake.dispatch(event, body)
        return Sent(event, body, ident, mark)

    def store_message(self, body: JSON, replay_ids: set[str]) -> int:
        """The fake keeps the message (replies and threads need it) under a fresh id."""
        stored = self.fake.message_create(
            body.get("content") or "",
            author_id=int(body["author"]["id"]),
            channel_id=int(body["channel_id"]),
            attachments=[a["_stored"] for a in body.get("attachments") or []],
        )
        real = body["id"]
        if real in replay_ids:  # the id plays another part too (a thread's id, say)
            body["id"] = stored["id"]
        else:
            body.update(_rewrite(body, {real: stored["id"]}))
        return int(stored["id"])

    def register_interaction(self, body: JSON) -> int:
        """A fresh id and token the fake accepts the callback and the webhook calls for."""
        fake = self.fake
        user = _user_id(body)
        channel = int(body.get("channel_id") or fake.channel_id)
        data = body.get("data") or {}
        clicked: StoredMessage | None = None
        with contextlib.suppress(KeyError, ValueError, TypeError):
            clicked = fake.message(int(body["message"]["id"]))
        if body["type"] == 3 and clicked is not None:
            made = fake.interaction_component(data["custom_id"], clicked, user_id=user)
        elif body["type"] == 5:
            made = fake.interaction_modal_submit(
                data.get("custom_id", ""), {}, user_id=user, channel_id=channel, message=clicked
            )
        else:
            guild = int(body["guild_id"]) if body.get("guild_id") else None
            made = fake.interaction_slash_command(
                data.get("name") or "imagine", user_id=user, channel_id=channel, guild_id=guild
            )
        body["id"], body["token"] = made["id"], made["token"]
        return int(made["id"])

    # waiting ------------------------------------------------------------------------------

    async def barrier(self) -> None:
        """Every event sent before has reached on_message: a message that is not for the bot
        goes through it after them (the client handles events in order)."""
        sentinel = self.fake.message_create("sentinel", author_id=USER)
        await self.fake.dispatch("MESSAGE_CREATE", sentinel)
        await self.handled.wait(int(sentinel["id"]))

    async def interaction_barrier(self) -> None:
        """The same for interactions: a /imagine-usage goes through the command tree, defers
        and edits its answer, by which time earlier interactions were answered if ever."""
        payload = self.fake.interaction_slash_command("imagine-usage", user_id=USER)
        await self.fake.dispatch("INTERACTION_CREATE", payload)
        await self.handled.wait(int(payload["id"]))

    async def settle(self, sent: Sent) -> None:
        """Until the bot has finished with `sent`, or shown it will not take it up."""
        if sent.event == "INTERACTION_CREATE":
            await self.interaction_barrier()
        else:
            await self.barrier()
        if sent.id in self.handled.started:
            await self.handled.wait(sent.id)

    # what the bot did ---------------------------------------------------------------------

    def answers(self, sent: Sent) -> list[StoredMessage]:
        """The bot's messages answering `sent`: replies to it, in a thread opened on it, or
        the interaction's own response."""

        def answering(message: StoredMessage) -> bool:
            if message.author_id != self.fake.bot_user_id:
                return False
            if sent.event == "INTERACTION_CREATE":
                return (message.interaction_metadata or {}).get("id") == str(sent.id)
            if sent.event != "MESSAGE_CREATE":
                return False
            reference = (message.message_reference or {}).get("message_id")
            return reference == str(sent.id) or message.channel_id == sent.id

        return [m for msgs in self.fake.messages.values() for m in msgs if answering(m)]

    def said(self, sent: Sent) -> str:
        return " | ".join(m.content for m in self.answers(sent)) or "nothing"

    def actions_on(self, sent: Sent) -> list[DiscordCall]:
        """REST calls since `sent` that act on it (answer, reply to, open a thread on it)."""
        acting = []
        for call in self.fake.calls[sent.mark :]:
            if call.method == "GET":
                continue
            if sent.event == "INTERACTION_CREATE":
                token = str(sent.body["token"])
                hit = f"/interactions/{sent.id}/" in call.path or token in call.path
            elif sent.event == "MESSAGE_CREATE":
                sent_json = call.json if isinstance(call.json, dict) else {}
                reference = sent_json.get("message_reference") or {}
                hit = str(reference.get("message_id")) == str(sent.id) or (
                    f"/messages/{sent.id}/" in call.path
                )
            else:
                hit = call.path.startswith("/channels/")
            if hit:
                acting.append(call)
        return acting

    async def job_of(self, sent: Sent) -> Job | None:
        interaction = sent.event == "INTERACTION_CREATE"
        key = interaction_key(sent.id) if interaction else message_key(sent.id)
        return await self.bot.service.store.job_by_key(key)

    def request_for(self, prompt: str) -> list[JSON]:
        """The contents of the latest image request whose last user turn says `prompt`."""
        for request in reversed(self.gemini.requests):
            body = request.json
            contents: list[JSON] = body.get("contents", []) if isinstance(body, dict) else []
            users = [c for c in contents if c.get("role") == "user"]
            if users and any(prompt in part.get("text", "") for part in users[-1]["parts"]):
                return contents
        raise AssertionError(f"no image request asked for {prompt!r}")


class Bots:
    """The module's running bot, swapped only when a fixture needs the other setting."""

    def __init__(self, tmp: pytest.TempPathFactory) -> None:
        self.tmp = tmp
        self.current: Replayer | None = None
        self._stack: contextlib.AsyncExitStack | None = None

    async def get(self, kind: str) -> Replayer:
        if self.current is not None and self.current.kind == kind:
            return self.current
        await self.close()
        async with contextlib.AsyncExitStack() as stack:
            gemini = await stack.enter_async_context(FakeGemini(api_key=API_KEY))
            fake = await stack.enter_async_context(discord_server())
            # interactions come over the gateway, and over HTTP too where a test posts them
            http = {"DISCORD_PUBLIC_KEY": fake.public_key, "PORT": "0"}
            bot = await stack.enter_async_context(
                running_bot(self.tmp.mktemp(kind), gemini, fake, **BOTS[kind], **http)
            )
            self.current = Replayer(kind, bot, gemini)
            self._stack = stack.pop_all()
        return self.current

    async def close(self) -> None:
        stack, self._stack, self.current = self._stack, None, None
        if stack is not None:
            await stack.aclose()


@pytest_asyncio.fixture(scope="module", loop_scope="module")
async def bots(tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Bots]:
    running = Bots(tmp_path_factory)
    try:
        yield running
    finally:
        await running.close()


# ---------------------------------------------------------------------------- expectations


async def expect_ignored(world: Replayer, sent: Sent) -> None:
    assert await world.job_of(sent) is None, "a job was made"
    assert world.actions_on(sent) == [], f"the bot acted on it; it said: {world.said(sent)}"
    assert world.answers(sent) == [], f"the bot answered: {world.said(sent)}"


def expect_reply(world: Replayer, sent: Sent, words: str) -> None:
    texts = " ".join(m.content for m in world.answers(sent) if m.content)
    assert texts, "the bot said nothing"
    assert words.lower() in texts.lower()


def expect_form(world: Replayer, sent: Sent) -> None:
    callbacks = world.fake.calls_to("POST", rf"/interactions/{sent.id}/[^/]+/callback")
    assert callbacks, "the interaction was not answered"
    assert [c.json["type"] for c in callbacks] == [9], "not answered with the Edit form"


async def expect_job(world: Replayer, sent: Sent, expect: JSON) -> None:
    """A job with this prompt, and its image posted where it belongs."""
    job = await world.job_of(sent)
    assert job is not None, f"no job; the bot said: {world.said(sent)}"
    assert job.kind == expect.get("kind", "generate")
    if "prompt" in expect:
        assert job.prompt == expect["prompt"]
    if "prompt_contains" in expect:
        assert expect["prompt_contains"] in job.prompt
    await world.fake.wait_until(
        lambda: any(finished(m) for m in world.answers(sent)),
        WAIT,
        lambda: f"no result was posted; the bot said: {world.said(sent)}",
    )
    result = next(m for m in world.answers(sent) if finished(m))
    assert result.attachments, f"the job failed: {result.content}"
    where = expect["where"]
    if where == "interaction":
        assert (result.interaction_metadata or {}).get("id") == str(sent.id)
    elif where == "new_thread":
        assert result.channel_id == sent.id, "not in a thread opened on the message"
    else:  # reply, dm, thread: a reply to the message, where the message was
        assert (result.message_reference or {}).get("message_id") == str(sent.id)
        assert result.channel_id == int(sent.body["channel_id"])
        channel = world.fake.channels[result.channel_id]
        assert channel["type"] == {"reply": 0, "dm": 1, "thread": 11}[where]
    contents = world.request_for(job.prompt)
    images = [part for part in contents[-1]["parts"] if "inlineData" in part]
    assert len(images) == expect["reference_images"], "reference images sent to the model"
    if expect.get("continues"):
        assert any(c.get("role") == "model" for c in contents), "the earlier image was not sent"


# ---------------------------------------------------------------------------- tests


def test_every_fixture_names_its_public_source_and_is_in_the_readme() -> None:
    readme = (FIXTURES / "README.md").read_text(encoding="utf-8")
    files = sorted(FIXTURES.glob("*.json"))
    assert len(files) >= 30
    for path in files:
        fixture = _load(path)
        source = fixture["source"]
        assert isinstance(source, str) and source.startswith("https://"), path.name
        if "github.com" in source and "/blob/" in source:
            assert re.search(r"/blob/[0-9a-f]{40}/", source), f"{path.name}: no commit in URL"
        assert fixture["note"].strip() and fixture["event"] and fixture["body"], path.name
        assert fixture["expect"] and fixture["replay"]["bot"] in BOTS, path.name
        assert f"`{path.name}`" in readme, f"{path.name} is not in the README table"


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("path", _params())
async def test_a_real_payload_gets_what_a_user_would_expect(
    bots: Bots, path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING)
    fixture = _load(path)
    world = await bots.get(fixture["replay"]["bot"])
    sent = await world.send(fixture)
    await world.settle(sent)
    expect = fixture["expect"]
    if expect.get("ignored"):
        await expect_ignored(world, sent)
    elif "reply_contains" in expect:
        expect_reply(world, sent, expect["reply_contains"])
    elif expect.get("modal"):
        expect_form(world, sent)
    else:
        await expect_job(world, sent, expect["job"])
    expected_log = fixture["replay"].get("expect_log")
    problems = [
        f"{r.name}: {r.getMessage()}"
        for r in caplog.records
        if r.levelno >= logging.WARNING and "voice will NOT be supported" not in r.getMessage()
    ]
    if expected_log:
        assert any(expected_log in p for p in problems), f"expected a log saying {expected_log!r}"
    unexpected = [p for p in problems if not expected_log or expected_log not in p]
    assert unexpected == [], "the bot (or discord.py) complained"


# what the first answer over HTTP is, by what the same payload gets over the gateway
_HTTP_ANSWER = {"job": 5, "modal": 9}


def _http_params() -> list[Any]:
    return [
        pytest.param(path, id=path.stem)
        for path in sorted(FIXTURES.glob("*.json"))
        if _load(path)["event"] == "INTERACTION_CREATE"
        and path.stem != "interaction_button_unknown_custom_id"  # nothing answers it
    ]


@pytest.mark.asyncio(loop_scope="module")
@pytest.mark.parametrize("path", _http_params())
async def test_a_real_interaction_over_http_is_answered_in_the_response(
    bots: Bots, path: Path
) -> None:
    fixture = _load(path)
    world = await bots.get(fixture["replay"]["bot"])
    body = await world.rewrite(fixture)
    if body["type"] != 1:
        world.register_interaction(body)
    for attachment in _attachments(body):
        del attachment["_stored"]
    answer = await world.fake.post_interaction(body)
    if body["type"] != 1:  # a PING starts nothing
        await world.settle(Sent("INTERACTION_CREATE", body, int(body["id"]), len(world.fake.calls)))

    assert answer.status == 200 and answer.seconds < 3.0
    expect = fixture["expect"]
    if body["type"] == 1:
        assert answer.body == {"type": 1}
    elif body["type"] == 4:
        assert answer.body == {"type": 8, "data": {"choices": []}}
    else:
        kind = next(k for k in _HTTP_ANSWER if k in expect)
        assert answer.body["type"] == _HTTP_ANSWER[kind]
