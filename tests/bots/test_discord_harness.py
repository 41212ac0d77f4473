"""Shared helpers for the Discord tests: the bot running against FakeDiscord and FakeGemini.

Also proves the harness itself: the bot logs in, identifies with the intents it documents,
and registers nothing on start.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import subprocess
import sys
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image

from bots.discord import DiscordApp, create_app
from core.config import Settings
from core.runtime import open_service
from core.service import Service
from tests.conftest import make_settings
from tests.fakes.discord import (
    INTENT_DIRECT_MESSAGES,
    INTENT_GUILD_MESSAGES,
    INTENT_GUILDS,
    INTENT_MESSAGE_CONTENT,
    DiscordCall,
    FakeDiscord,
    StoredMessage,
)
from tests.fakes.gemini import FakeGemini

USER = 5000
OTHER = 5001
JSON = dict[str, Any]
CALLBACK = r"/interactions/\d+/[^/]+/callback"
_OPTION_TYPES = {str: 3, bool: 5, int: 4, float: 10}


@contextlib.asynccontextmanager
async def discord_server(**options: Any) -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord(**options) as fake:
        restore = fake.point_discord_py_here()
        try:
            yield fake
        finally:
            restore()
        assert fake.errors == []


@dataclass
class Bot:
    fake: FakeDiscord
    gemini: FakeGemini
    service: Service
    app: DiscordApp
    settings: Settings

    def slash_payload(
        self,
        options: Mapping[str, Any] | None = None,
        *,
        name: str = "imagine",
        user: int = USER,
        channel_id: int | None = None,
        attachments: Mapping[str, JSON] | None = None,
        user_install: bool = False,
    ) -> JSON:
        """The interaction for `/name` with typed options."""
        typed = [
            {"name": key, "type": _OPTION_TYPES[type(value)], "value": value}
            for key, value in (options or {}).items()
        ]
        return self.fake.interaction_slash_command(
            name,
            typed,
            user_id=user,
            channel_id=channel_id,
            attachments=attachments,
            user_install=user_install,
        )

    async def slash(
        self,
        options: Mapping[str, Any] | None = None,
        *,
        name: str = "imagine",
        user: int = USER,
        channel_id: int | None = None,
        attachments: Mapping[str, JSON] | None = None,
    ) -> JSON:
        """Dispatch `/name` with typed options; returns the INTERACTION_CREATE payload."""
        payload = self.slash_payload(
            options, name=name, user=user, channel_id=channel_id, attachments=attachments
        )
        await self.fake.dispatch("INTERACTION_CREATE", payload)
        return payload

    async def click(self, message: StoredMessage, custom_id: str, *, user: int = USER) -> JSON:
        payload = self.fake.interaction_component(custom_id, message, user_id=user)
        await self.fake.dispatch("INTERACTION_CREATE", payload)
        return payload

    async def say(
        self,
        content: str,
        *,
        user: int = USER,
        mention: bool = True,
        channel_id: int | None = None,
        attachments: Sequence[JSON] = (),
        reply_to: StoredMessage | None = None,
    ) -> JSON:
        """A user's message (mentioning the bot unless told not to); returns the event data."""
        text = f"<@{self.fake.bot_user_id}> {content}" if mention else content
        payload = self.fake.message_create(
            text,
            author_id=user,
            channel_id=channel_id,
            attachments=attachments,
            mentions=[self.fake.bot_user_id] if mention else [],
            referenced_message=reply_to,
        )
        await self.fake.dispatch("MESSAGE_CREATE", payload)
        return payload

    async def result_of(self, payload: JSON, timeout: float = 10.0) -> StoredMessage:
        """The public response to an interaction, once it shows an image or a failure."""
        message = await self.fake.wait_for_message(
            lambda m: answers(m, payload) and finished(m), timeout=timeout
        )
        await self.delivered(message)
        return message

    async def reply_to(self, payload: JSON, timeout: float = 10.0) -> StoredMessage:
        """The bot's reply to a user's message, once it shows an image or a failure."""
        message = await self.fake.wait_for_message(
            lambda m: replies_to(m, payload) and finished(m), timeout=timeout
        )
        await self.delivered(message)
        return message

    async def delivered(self, message: StoredMessage) -> None:
        """Wait until the service has recorded `message` as showing a job (it is linked)."""
        tenant = str(message.guild_id) if message.guild_id else None
        async with asyncio.timeout(10):
            while True:
                tenants = [tenant] if tenant else _dm_tenants(self.fake)
                for key in tenants:
                    if await self.service.job_for_message("discord", key, str(message.id)):
                        return
                await asyncio.sleep(0.01)

    async def callback(self, payload: JSON, timeout: float = 5.0) -> DiscordCall:
        return await self.fake.wait_for_call(
            "POST", rf"/interactions/{payload['id']}/[^/]+/callback", timeout=timeout
        )


def bot_settings(tmp_path: Path, gemini: FakeGemini, fake: FakeDiscord, **values: Any) -> Settings:
    defaults = {
        "DISCORD_BOT_TOKEN": fake.token,
        "DISCORD_API_URL": fake.api_url,
        "DISCORD_GATEWAY_URL": fake.gateway_url,
        "DISCORD_FILE_HOSTS": "127.0.0.1",
    }
    return make_settings(tmp_path, gemini, **{**defaults, **values})


@contextlib.asynccontextmanager
async def running_bot(
    tmp_path: Path,
    gemini: FakeGemini,
    fake: FakeDiscord,
    *,
    delivery_backoff_seconds: float = 1.0,
    **values: Any,
) -> AsyncIterator[Bot]:
    """The bot as the runner starts it: service, adapter, start(), serve() until cancelled."""
    settings = bot_settings(tmp_path, gemini, fake, **values)
    async with open_service(settings, delivery_backoff_seconds=delivery_backoff_seconds) as service:
        app = create_app(settings, service, guild_ready_timeout=0.05)
        await service.start()
        serving = asyncio.create_task(app.serve())
        try:
            await _until_ready(serving, app, fake, gateway=settings.discord_gateway)
            if app.port is not None:
                fake.interactions_url = f"http://127.0.0.1:{app.port}/discord/interactions"
            yield Bot(fake, gemini, service, app, settings)
        finally:
            serving.cancel()
            await asyncio.gather(serving, return_exceptions=True)


async def _until_ready(
    serving: asyncio.Task[None], app: DiscordApp, fake: FakeDiscord, *, gateway: bool = True
) -> None:
    async def ready() -> None:
        if gateway:
            await fake.wait_until_ready()
        await app.wait_until_ready()

    waiter = asyncio.create_task(ready())
    done, _ = await asyncio.wait({serving, waiter}, timeout=10, return_when="FIRST_COMPLETED")
    if serving in done:
        waiter.cancel()
        serving.result()
        raise AssertionError("the bot stopped before it was ready")
    if waiter not in done:
        waiter.cancel()
        raise TimeoutError("the bot did not become ready")


def _dm_tenants(fake: FakeDiscord) -> list[str]:
    return [f"dm:{user_id}" for user_id in fake.users]


def answers(message: StoredMessage, payload: JSON) -> bool:
    meta = message.interaction_metadata or {}
    return meta.get("id") == payload["id"] and not message.ephemeral


def replies_to(message: StoredMessage, payload: JSON) -> bool:
    reference = message.message_reference or {}
    return reference.get("message_id") == payload["id"]


def finished(message: StoredMessage) -> bool:
    return bool(message.attachments) or message.content.startswith("⚠️")


def image_size(data: bytes) -> tuple[int, int]:
    with Image.open(io.BytesIO(data)) as image:
        return image.size


def png(width: int = 64, height: int = 48, colour: str = "red") -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(buffer, "PNG")
    return buffer.getvalue()


def callbacks(fake: FakeDiscord) -> list[DiscordCall]:
    return fake.calls_to("POST", CALLBACK)


def assert_every_interaction_answered_in_time(fake: FakeDiscord) -> None:
    """What keeps Discord from showing "This interaction failed"."""
    answered = {c.path.split("/")[2]: c for c in callbacks(fake) if c.status in (200, 204)}
    dispatched = [e.data["id"] for e in fake.events if e.type == "INTERACTION_CREATE"]
    for interaction_id in dispatched:
        call = answered.get(interaction_id)
        assert call is not None, f"interaction {interaction_id} was never answered"
        assert call.since_dispatch is not None and call.since_dispatch < 3.0


def custom_ids(message: StoredMessage) -> list[str]:
    return [
        button["custom_id"]
        for row in message.components
        for button in row.get("components", [])
        if "custom_id" in button
    ]


def contents_of(gemini: FakeGemini, index: int = -1) -> list[JSON]:
    body = gemini.requests[index].json
    assert isinstance(body, dict)
    contents: list[JSON] = body["contents"]
    return contents


def texts(contents: list[JSON]) -> list[str]:
    return [p["text"] for c in contents for p in c["parts"] if "text" in p]


async def wait_for(check: Callable[[], bool], fake: FakeDiscord, what: str) -> None:
    await fake.wait_until(check, 10.0, lambda: what)


# the harness itself -------------------------------------------------------------------------


async def test_the_bot_identifies_without_message_content_and_registers_nothing_on_start(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    async with discord_server() as fake, running_bot(tmp_path, fake_gemini, fake):
        assert fake.identifies == 1
        intents = fake.intents or 0
        assert intents & INTENT_GUILDS and intents & INTENT_GUILD_MESSAGES
        assert intents & INTENT_DIRECT_MESSAGES
        assert not intents & INTENT_MESSAGE_CONTENT
    assert fake.calls_to("PUT", r"/applications/\d+(/guilds/\d+)?/commands") == []


def test_starting_the_client_warns_about_no_voice_library() -> None:
    # a fresh interpreter: discord.py warns once per process, at the first client made
    script = (
        "import logging; logging.basicConfig(level=logging.WARNING)\n"
        "import discord\n"
        "from bots.discord.app import ImageBotClient\n"
        "ImageBotClient(intents=discord.Intents.default())\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", script],
        cwd=Path(__file__).resolve().parents[2],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    assert "PyNaCl" not in done.stderr and "davey" not in done.stderr, done.stderr


async def test_thread_messages_ask_for_the_message_content_intent(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    async with (
        discord_server() as fake,
        running_bot(tmp_path, fake_gemini, fake, DISCORD_THREAD_MESSAGES="true"),
    ):
        assert (fake.intents or 0) & INTENT_MESSAGE_CONTENT


async def test_a_refused_token_stops_the_bot_with_one_clear_line(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    import pytest

    from core.config import ConfigError

    async with discord_server() as fake:
        settings = bot_settings(tmp_path, fake_gemini, fake, DISCORD_BOT_TOKEN="wrong")
        async with open_service(settings) as service:
            app = create_app(settings, service)
            with pytest.raises(ConfigError, match="DISCORD_BOT_TOKEN was refused by Discord"):
                await app.serve()
