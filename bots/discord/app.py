"""The Discord app: the client, its intents and event wiring, and serving until cancelled."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Sequence
from typing import Any

import aiohttp
import discord
import yarl
from discord.gateway import DiscordWebSocket
from discord.http import Route

from bots.discord import components, files
from bots.discord.access import AccessLists
from bots.discord.commands import Tree, add_commands
from bots.discord.conversations import Conversations
from bots.discord.delivery import NO_PING, DiscordDelivery
from bots.discord.events import PLATFORM, RecentIds
from bots.discord.http_interactions import Verifier, add_routes
from bots.discord.intake import Held
from bots.discord.interactions import Interactions
from bots.web import WebServer
from core.config import ConfigError, Settings
from core.intake import Intake
from core.service import Service

log = logging.getLogger(__name__)


def point_at(settings: Settings) -> None:
    """Aim discord.py at DISCORD_API_URL and DISCORD_GATEWAY_URL (class-wide in discord.py)."""
    Route.BASE = settings.discord_api_url.rstrip("/")
    DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(settings.discord_gateway_url)


# How long an idle connection to Discord's API is kept for the next request. discord.py
# leaves aiohttp's 15 s, so a burst of interactions more than 15 s after the last one
# opened a connection per answer again. Cloudflare, in front of the API, closes idle
# HTTP/1.1 connections after 400 s, and NAT gateways commonly forget idle ones after
# 240-350 s: 120 s keeps bursts minutes apart on warm connections, well before either.
KEEPALIVE_SECONDS = 120.0


def rest_connector() -> aiohttp.TCPConnector:
    """The connection pool of discord.py's HTTP client (REST, interaction answers, webhooks).

    No limit on its size, as discord.py's own: an HTTP/1.1 connection carries one request
    at a time, so with fewer connections than answers in flight each answer would wait for
    Discord to finish the ones before it on its connection (and for uploads of images)."""
    return aiohttp.TCPConnector(limit=0, keepalive_timeout=KEEPALIVE_SECONDS)


def intents_for(settings: Settings) -> discord.Intents:
    intents = discord.Intents.default()
    intents.guilds = True
    intents.guild_messages = True
    intents.dm_messages = True
    # Mentions of the bot, replies that ping it and DMs carry their text without the
    # privileged Message Content intent; only ordinary messages in the bot's threads need
    # it, so it is asked for only when DISCORD_THREAD_MESSAGES is on (and must then be
    # switched on in the developer portal, or Discord refuses the connection).
    intents.message_content = settings.discord_thread_messages
    return intents


def _drop_malformed_events(parsers: dict[str, Callable[[Any], None]]) -> None:
    """An event discord.py cannot parse (say, an attachment without a url) would end the
    gateway loop and the bot with it; log it and drop that one event instead."""

    def tolerant(event: str, parse: Callable[[Any], None]) -> Callable[[Any], None]:
        def parse_or_drop(data: Any) -> None:
            try:
                parse(data)
            except Exception as exc:
                log.warning("dropped a %s event discord.py could not read: %r", event, exc)

        return parse_or_drop

    for event, parse in list(parsers.items()):
        parsers[event] = tolerant(event, parse)


class _ImageBot:
    """Our command tree, buttons and event handlers, on either of discord.py's clients."""

    def __init__(self, *, intents: discord.Intents, **options: Any) -> None:
        # the bot never joins a voice channel: discord.py's warnings about the voice
        # libraries it lacks (PyNaCl, davey) would only worry whoever reads the log
        discord.VoiceClient.warn_nacl = False
        discord.VoiceClient.warn_dave = False
        super().__init__(intents=intents, allowed_mentions=NO_PING, **options)
        _drop_malformed_events(self._connection.parsers)
        self.tree = Tree(self)
        self.handlers: Interactions | None = None
        self.conversations: Conversations | None = None
        self.delivery: DiscordDelivery | None = None
        # set at the first READY (of every shard this process runs); unlike
        # wait_until_ready() it may be awaited before login
        self.connected = asyncio.Event()

    async def login(self, token: str) -> None:
        connector = self.http.connector
        if connector is discord.utils.MISSING or connector.closed:
            # made here, in the running loop, where discord.py would make its own
            self.http.connector = rest_connector()
        await super().login(token)

    async def setup_hook(self) -> None:
        self.add_dynamic_items(*components.DYNAMIC_ITEMS)
        if self.delivery is not None:
            self.delivery.logged_in()

    async def on_ready(self) -> None:
        self.connected.set()
        log.info("connected to Discord as %s in %d servers", self.user, len(self.guilds))

    async def on_message(self, message: discord.Message) -> None:
        if self.conversations is not None and self.user is not None:
            await self.conversations.on_message(message, self.user)

    async def on_interaction(self, interaction: discord.Interaction) -> None:
        # Edit forms are read here rather than through discord.py's Modal objects, which
        # live in memory only: a form opened before a restart is still answered after it.
        if interaction.type is not discord.InteractionType.modal_submit or self.handlers is None:
            return
        custom_id = str((interaction.data or {}).get("custom_id", ""))
        match = components.EDIT_FORM.fullmatch(custom_id)
        if match is not None:
            await self.handlers.edit_submitted(interaction, match["job"])


class ImageBotClient(_ImageBot, discord.Client):
    """discord.py's client with our command tree, buttons and event handlers attached: one
    gateway connection for every server (no DISCORD_SHARD_COUNT)."""


# Discord lets each rate-limit bucket of shards (shard id % max_concurrency) IDENTIFY once
# every 5 seconds, counted across all of a bot's processes.
IDENTIFY_INTERVAL_SECONDS = 5.0


class ShardedImageBotClient(_ImageBot, discord.AutoShardedClient):
    """The same bot on discord.py's AutoShardedClient: one gateway connection per shard this
    process runs (DISCORD_SHARD_IDS) out of DISCORD_SHARD_COUNT."""

    def __init__(
        self,
        *,
        intents: discord.Intents,
        shard_count: int,
        shard_ids: Sequence[int],
        **options: Any,
    ) -> None:
        super().__init__(
            intents=intents, shard_count=shard_count, shard_ids=list(shard_ids), **options
        )
        self.identify_interval = IDENTIFY_INTERVAL_SECONDS
        self.max_concurrency = 1  # from GET /gateway/bot at start-up
        self._identified: dict[int, float] = {}  # rate-limit bucket -> its last IDENTIFY

    async def launch_shards(self) -> None:
        try:
            limits = await self.fetch_session_start_limits()
        except (discord.HTTPException, discord.GatewayNotFound) as exc:
            log.warning("could not read Discord's session start limits: %s", exc)
        else:
            self.max_concurrency = max(1, limits.max_concurrency)
            if limits.remaining < len(self.shard_ids or ()):
                log.warning(
                    "Discord allows %d more gateway sessions for %.0f s; %d shards are starting",
                    limits.remaining,
                    limits.reset_after / 1000,
                    len(self.shard_ids or ()),
                )
        log.info(
            "Discord: this process runs shard%s %s of %d",
            "" if len(self.shard_ids or ()) == 1 else "s",
            ", ".join(str(shard) for shard in self.shard_ids or ()),
            self.shard_count or 0,
        )
        await super().launch_shards()

    async def before_identify_hook(self, shard_id: int | None, *, initial: bool = False) -> None:
        """Wait until the shard's bucket may IDENTIFY again (discord.py waits 5 s before
        every IDENTIFY but the first, whatever the bucket)."""
        bucket = (shard_id or 0) % self.max_concurrency
        loop = asyncio.get_running_loop()
        last = self._identified.get(bucket)
        if last is not None:
            wait = last + self.identify_interval - loop.time()
            if wait > 0:
                await asyncio.sleep(wait)
        self._identified[bucket] = loop.time()

    async def on_shard_ready(self, shard_id: int) -> None:
        servers = sum(1 for guild in self.guilds if guild.shard_id == shard_id)
        log.info("shard %d of %d ready in %d servers", shard_id, self.shard_count or 0, servers)


def make_client(settings: Settings, **options: Any) -> ImageBotClient | ShardedImageBotClient:
    """The sharded client when DISCORD_SHARD_COUNT is set, else the plain one."""
    shards = settings.discord_shards
    if settings.discord_shard_count is None or shards is None:
        return ImageBotClient(intents=intents_for(settings), **options)
    return ShardedImageBotClient(
        intents=intents_for(settings),
        shard_count=settings.discord_shard_count,
        shard_ids=shards,
        **options,
    )


class DiscordApp:
    """The Discord adapter; `serve()` connects and handles Discord until cancelled.

    Interactions arrive over the gateway, or, with DISCORD_PUBLIC_KEY, as HTTP requests to
    `host`:PORT; DISCORD_GATEWAY=false leaves the gateway out altogether.
    """

    def __init__(
        self,
        settings: Settings,
        service: Service,
        *,
        host: str = "0.0.0.0",
        web_server: WebServer | None = None,
        **client_options: Any,
    ) -> None:
        settings.require("DISCORD_BOT_TOKEN")
        if not settings.discord_gateway:
            try:
                settings.require("DISCORD_PUBLIC_KEY")
            except ConfigError as exc:
                raise ConfigError(
                    f"{exc}: DISCORD_GATEWAY=false leaves only interactions over HTTP"
                ) from None
        self.host = host
        self.port: int | None = None  # the bound port, once serving HTTP interactions
        self.web: WebServer | None = None
        if settings.discord_public_key is not None:
            self.web = web_server or WebServer(host, settings.port, service.health)
            self.web.expect()
        access = AccessLists.from_settings(settings)
        point_at(settings)
        self.settings = settings
        self.service = service
        self.client = make_client(settings, **client_options)
        self.http = files.http_client()
        recent = RecentIds()
        self.delivery = DiscordDelivery(self.client, service)
        self.client.delivery = self.delivery
        self.intake = Intake(service, PLATFORM)
        self.client.handlers = Interactions(
            settings, service, self.intake, self.delivery, access, self.http, recent
        )
        self.client.conversations = Conversations(
            settings, service, self.intake, access, self.http, recent
        )
        add_commands(self.client.tree, service.catalog, dms=settings.discord_dms)
        service.register(PLATFORM, self.delivery, tenant_noun="server", resume=self._resume)

    async def _resume(self, payload: dict[str, Any]) -> None:
        """A request held by a process that died before its job was stored."""
        try:
            held = Held.from_dict(payload)
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            # the service lets it go, or every restart would take it up again
            raise ValueError(f"a held Discord request this version did not write: {exc!r}") from exc
        await self.client.connected.wait()  # held requests are taken over as the service starts
        assert self.client.handlers is not None and self.client.conversations is not None
        if held.source == "interaction":
            await self.client.handlers.resume(held)
        else:
            await self.client.conversations.resume(held, self.client)

    async def serve(self) -> None:
        assert self.settings.discord_bot_token is not None
        token = self.settings.discord_bot_token.get_secret_value()
        try:
            await self.client.login(token)
            if self.settings.discord_public_key is not None:
                await self._serve_http(self.settings.discord_public_key)
            if self.settings.discord_gateway:
                await self.client.connect()
            else:
                log.info("Discord: interactions over HTTP only, no gateway connection")
                self.client.connected.set()
                await asyncio.Event().wait()
        except discord.LoginFailure:
            raise ConfigError(
                "DISCORD_BOT_TOKEN was refused by Discord: copy the token again from the "
                "developer portal (Bot → Reset Token)"
            ) from None
        except discord.PrivilegedIntentsRequired:
            raise ConfigError(
                "DISCORD_THREAD_MESSAGES needs the Message Content intent: switch it on in the "
                "developer portal (Bot → Privileged Gateway Intents) or set "
                "DISCORD_THREAD_MESSAGES=false"
            ) from None
        except discord.ConnectionClosed as exc:
            if exc.code == 4011:  # Sharding required
                raise ConfigError(
                    "Discord requires more shards for a bot in this many servers: set "
                    "DISCORD_SHARD_COUNT to at least one shard per 2,500 servers"
                ) from None
            if exc.code == 4010:  # Invalid shard
                raise ConfigError(
                    "Discord refused the shard settings: check DISCORD_SHARD_COUNT and "
                    "DISCORD_SHARD_IDS"
                ) from None
            raise
        finally:
            if self.web is not None:
                await self.web.close()
            await self.intake.stop()
            await self.client.close()
            await self.http.aclose()

    async def _serve_http(self, public_key: str) -> None:
        """Answer interactions POSTed to PORT (after login: buttons are registered then)."""
        assert self.web is not None
        add_routes(self.web.app, self.client, Verifier(public_key))
        self.port = await self.web.serve()
        log.info("Discord: interactions over HTTP on port %s at /discord/interactions", self.port)

    async def wait_until_ready(self) -> None:
        await self.client.connected.wait()


def create_app(
    settings: Settings,
    service: Service,
    *,
    web_server: WebServer | None = None,
    **client_options: Any,
) -> DiscordApp:
    """The Discord adapter, registered with `service` (call before `service.start()`).

    `web_server`: the process's HTTP server, when another adapter serves on PORT as well.
    `client_options` go to discord.Client, or to discord.AutoShardedClient when
    DISCORD_SHARD_COUNT is set (tests pass a short `guild_ready_timeout`).
    """
    return DiscordApp(settings, service, web_server=web_server, **client_options)
