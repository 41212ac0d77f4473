"""A Discord REST API, gateway and CDN on 127.0.0.1 that real discord.py runs against unmodified.

One bot in one guild with one text channel (`add_guild` adds more guilds, each with its own
channel). `point_discord_py_here()` aims discord.py at it
(`Route.BASE`, which interaction callbacks and webhooks use too, and `DEFAULT_GATEWAY`). Every
REST call is recorded in `calls`; what users see is kept in `messages` (per channel, with
attachment bytes, after edits and deletes). The gateway speaks JSON text frames: HELLO,
heartbeats, IDENTIFY, READY + GUILD_CREATE, dispatches with rising sequence numbers, RESUME with
replay, RECONNECT and INVALID_SESSION. Builders make the events users cause (messages, slash
commands, clicks, modal submits). Waiting helpers wake on every state change.

Sharding as on Discord: an IDENTIFY with `shard: [id, count]` opens that shard's session (one
gateway connection each; an IDENTIFY without it is shard [0, 1]). READY lists, and GUILD_CREATE
follows for, only the guilds on the shard; a guild's events go only to shard
`(guild_id >> 22) % count`, and events without a guild (DMs) only to shard 0. `GET /gateway/bot`
reports `recommended_shards` and `max_concurrency`; an invalid shard is closed with 4010, and a
shard holding more than `max_guilds_per_shard` guilds (when set) with 4011.

As on Discord: interactions can be answered once and only within `interaction_ttl` seconds;
files over `upload_limit_bytes` get 413; empty or over-long messages get 400; the bot receives
its own messages as events; without MESSAGE_CONTENT, guild messages that do not mention the bot
arrive without text; events the client's intents exclude are not sent.

Approximations: permissions are fixed (no overwrites, nothing is ever forbidden);
rate limits exist only when injected with `fail_next`; follow-up tokens never expire; attachment
URLs never expire; reactions record only the bot's own; a new IDENTIFY for a shard replaces
that shard's session (Discord would keep both); IDENTIFY is never rate limited.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import io
import itertools
import json
import math
import mimetypes
import re
import secrets
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from http import HTTPStatus
from typing import Any, NamedTuple
from urllib.parse import quote, unquote

import aiohttp
from aiohttp import BodyPartReader, WSMsgType, web
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from multidict import CIMultiDict

JSON = dict[str, Any]

API_PREFIX = "/api/v10"
DEFAULT_UPLOAD_LIMIT = 10 * 1024 * 1024
DISCORD_EPOCH_MS = 1_420_070_400_000

INTENT_GUILDS = 1 << 0
INTENT_GUILD_MEMBERS = 1 << 1
INTENT_GUILD_PRESENCES = 1 << 8
INTENT_GUILD_MESSAGES = 1 << 9
INTENT_DIRECT_MESSAGES = 1 << 12
INTENT_MESSAGE_CONTENT = 1 << 15
PRIVILEGED_INTENTS = INTENT_GUILD_MEMBERS | INTENT_GUILD_PRESENCES | INTENT_MESSAGE_CONTENT

FLAG_EPHEMERAL = 1 << 6
FLAG_LOADING = 1 << 7

MAX_CONTENT_CHARS = 2000
MAX_FILES = 10
MAX_EMBEDS = 10
MAX_CUSTOM_ID_CHARS = 100

_EVERYONE_PERMISSIONS = (
    1 << 0  # create instant invite
    | 1 << 6  # add reactions
    | 1 << 10  # view channel
    | 1 << 11  # send messages
    | 1 << 14  # embed links
    | 1 << 15  # attach files
    | 1 << 16  # read message history
    | 1 << 18  # use external emojis
    | 1 << 26  # change nickname
    | 1 << 31  # use application commands
    | 1 << 35  # create public threads
    | 1 << 38  # send messages in threads
)
_BOT_PERMISSIONS = _EVERYONE_PERMISSIONS | 1 << 13 | 1 << 34  # manage messages, manage threads

# paths whose token travels in the URL; Discord checks no Authorization header on them
_TOKEN_IN_PATH = re.compile(r"/interactions/\d+/[^/]+/callback|/webhooks/\d+/[^/]+(/.*)?")
_WEBHOOK_TOKEN = re.compile(r"/webhooks/\d+/(?P<token>[^/]+)")
_FILE_FIELD = re.compile(r"files\[(\d+)\]")
_USER_MENTION = re.compile(r"<@!?(\d+)>")

_sequence = itertools.count()


def snowflake() -> int:
    """A fresh Discord id carrying the current time, as Discord makes them."""
    millis = int(time.time() * 1000) - DISCORD_EPOCH_MS
    return (millis << 22) | (next(_sequence) & 0x3FFFF)


def shard_of(guild_id: int | None, shard_count: int) -> int:
    """The shard Discord sends a guild's events to; events without a guild go to shard 0."""
    return 0 if guild_id is None else (guild_id >> 22) % shard_count


def guild_id_on_shard(shard_id: int, shard_count: int) -> int:
    """A fresh guild id (a snowflake) whose events go to `shard_id` of `shard_count`."""
    guild_id = snowflake()
    return guild_id + (((shard_id - shard_of(guild_id, shard_count)) % shard_count) << 22)


def _now_iso() -> str:
    return datetime.now(UTC).isoformat()


def _json_response(
    payload: Any, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    # discord.py parses a body as JSON only when Content-Type is exactly application/json
    return web.Response(
        status=status,
        body=json.dumps(payload).encode(),
        headers={"Content-Type": "application/json", **(headers or {})},
    )


class _ApiError(Exception):
    def __init__(self, status: int, code: int, message: str, errors: JSON | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.errors = status, code, message, errors

    def response(self) -> web.Response:
        body: JSON = {"message": self.message, "code": self.code}
        if self.errors is not None:
            body["errors"] = self.errors
        return _json_response(body, self.status)


def _form_error(field_name: str, code: str, message: str) -> _ApiError:
    errors = {field_name: {"_errors": [{"code": code, "message": message}]}}
    return _ApiError(400, 50035, "Invalid Form Body", errors)


def _unknown(what: str, code: int) -> _ApiError:
    return _ApiError(404, code, f"Unknown {what}")


class UploadedFile(NamedTuple):
    """One file part of a multipart request, exactly as received."""

    name: str
    filename: str
    content_type: str
    data: bytes


@dataclass
class DiscordCall:
    """One REST request the fake received and the status it answered with."""

    method: str
    path: str  # relative to the API root, e.g. /channels/4000/messages
    query: dict[str, str]
    headers: Mapping[str, str]
    json: Any = None  # the JSON body, or the payload_json part of a multipart body
    files: list[UploadedFile] = field(default_factory=list)
    status: int = 0
    since_dispatch: float | None = None  # interaction callbacks: seconds since INTERACTION_CREATE


# where the middleware leaves the parsed request for the route handlers
_CALL: Any = web.RequestKey("call", DiscordCall) if hasattr(web, "RequestKey") else "call"


class GatewayEvent(NamedTuple):
    seq: int
    type: str
    data: JSON
    shard: int = 0  # the shard whose session it was sent on


@dataclass
class StoredAttachment:
    """An uploaded file: what Discord stored and serves from its CDN."""

    id: int
    filename: str
    content_type: str
    data: bytes
    url: str
    proxy_url: str
    width: int | None = None
    height: int | None = None
    description: str | None = None

    @property
    def size(self) -> int:
        return len(self.data)

    def to_payload(self) -> JSON:
        payload: JSON = {
            "id": str(self.id),
            "filename": self.filename,
            "size": self.size,
            "url": self.url,
            "proxy_url": self.proxy_url,
            "content_type": self.content_type,
        }
        if self.width is not None:
            payload["width"], payload["height"] = self.width, self.height
        if self.description is not None:
            payload["description"] = self.description
        return payload


@dataclass
class StoredMessage:
    """A message as users see it now; edits change it in place, deletes move it away."""

    id: int
    channel_id: int
    guild_id: int | None
    author: JSON
    content: str = ""
    embeds: list[JSON] = field(default_factory=list)
    attachments: list[StoredAttachment] = field(default_factory=list)
    components: list[JSON] = field(default_factory=list)
    message_reference: JSON | None = None
    flags: int = 0
    type: int = 0
    timestamp: str = field(default_factory=_now_iso)
    edited_timestamp: str | None = None
    mentions: list[JSON] = field(default_factory=list)
    member: JSON | None = None
    webhook_id: int | None = None
    application_id: int | None = None
    interaction_metadata: JSON | None = None
    reactions: list[str] = field(default_factory=list)  # emoji the bot reacted with
    thread: JSON | None = None
    nonce: str | None = None
    tts: bool = False

    @property
    def author_id(self) -> int:
        return int(self.author["id"])

    @property
    def ephemeral(self) -> bool:
        return bool(self.flags & FLAG_EPHEMERAL)

    @property
    def loading(self) -> bool:
        """True while a deferred interaction response still shows "is thinking..."."""
        return bool(self.flags & FLAG_LOADING)

    def to_payload(self) -> JSON:
        payload: JSON = {
            "id": str(self.id),
            "type": self.type,
            "content": self.content,
            "channel_id": str(self.channel_id),
            "author": self.author,
            "attachments": [a.to_payload() for a in self.attachments],
            "embeds": self.embeds,
            "mentions": self.mentions,
            "mention_roles": [],
            "mention_everyone": False,
            "pinned": False,
            "tts": self.tts,
            "timestamp": self.timestamp,
            "edited_timestamp": self.edited_timestamp,
            "flags": self.flags,
            "components": self.components,
        }
        if self.nonce is not None:
            payload["nonce"] = self.nonce
        if self.webhook_id is not None:
            payload["webhook_id"] = str(self.webhook_id)
        if self.application_id is not None:
            payload["application_id"] = str(self.application_id)
        if self.interaction_metadata is not None:
            meta = self.interaction_metadata
            payload["interaction_metadata"] = meta
            payload["interaction"] = {
                "id": meta["id"],
                "type": meta["type"],
                "name": meta.get("name", ""),
                "user": meta["user"],
            }
        if self.message_reference is not None:
            payload["message_reference"] = self.message_reference
        if self.reactions:
            payload["reactions"] = [_reaction_payload(e) for e in self.reactions]
        if self.thread is not None:
            payload["thread"] = self.thread
        return payload


def _reaction_payload(emoji: str) -> JSON:
    name, _, emoji_id = emoji.partition(":")
    return {
        "emoji": {"id": emoji_id or None, "name": name},
        "count": 1,
        "count_details": {"burst": 0, "normal": 1},
        "me": True,
        "me_burst": False,
        "burst_colors": [],
    }


@dataclass
class _Interaction:
    id: int
    token: str
    type: int
    channel_id: int
    guild_id: int | None
    user_id: int
    name: str
    message_id: int | None
    created_at: float
    dispatched_at: float | None = None
    response_type: int | None = None
    original_message_id: int | None = None
    message_ids: set[int] = field(default_factory=set)
    # POSTed to the bot's interactions URL: webhook calls wait until its HTTP answer is in
    answering_over_http: bool = False
    answered_over_http: asyncio.Event = field(default_factory=asyncio.Event)


@dataclass
class HttpAnswer:
    """What the bot's interactions endpoint answered to one signed POST."""

    interaction_id: int
    status: int
    body: Any  # the JSON answer, or the text of a refusal
    seconds: float  # from sending the request to reading the whole answer


@dataclass
class _Fault:
    method: str
    pattern: re.Pattern[str]
    status: int
    retry_after: float
    remaining: int


@dataclass
class _Session:
    id: str
    intents: int | None
    shard: tuple[int, int] = (0, 1)  # [shard id, shard count] from IDENTIFY
    events: list[GatewayEvent] = field(default_factory=list)
    seq: int = 0
    live: _Connection | None = None  # the connection receiving its events, if any

    def receives(self, guild_id: int | None) -> bool:
        """Whether Discord sends this session an event of this guild (None: no guild)."""
        shard_id, count = self.shard
        return shard_of(guild_id, count) == shard_id


@dataclass
class FakeGuild:
    """A guild the bot is in, with the text channel it starts with."""

    id: int
    name: str
    channel_id: int
    bot_role_id: int


@dataclass
class _Connection:
    ws: web.WebSocketResponse
    request: web.Request
    query: dict[str, str]
    session: _Session | None = None
    closed: bool = False


class FakeDiscord:
    """Discord's REST API, gateway and CDN for one bot in one guild, on a random local port."""

    def __init__(
        self,
        *,
        token: str = "test-bot-token",
        application_id: int = 1000,
        bot_user_id: int = 2000,
        guild_id: int = 3000,
        channel_id: int = 4000,
        heartbeat_interval: int = 41250,
        interaction_ttl: float = 3.0,
        upload_limit_bytes: int = DEFAULT_UPLOAD_LIMIT,
        recommended_shards: int = 1,
        max_concurrency: int = 1,
    ) -> None:
        self.token = token
        self.application_id = application_id
        self.bot_user_id = bot_user_id
        self.guild_id = guild_id
        self.channel_id = channel_id
        self.heartbeat_interval = heartbeat_interval
        self.interaction_ttl = interaction_ttl
        self.upload_limit_bytes = upload_limit_bytes
        # what GET /gateway/bot reports: shards to use, and shard buckets that may IDENTIFY
        # at once (bucket = shard id % max_concurrency)
        self.recommended_shards = recommended_shards
        self.max_concurrency = max_concurrency
        # when set, an IDENTIFY for a shard with more guilds is closed with 4011 (sharding
        # required), as Discord does past 2,500 guilds a shard
        self.max_guilds_per_shard: int | None = None
        # privileged intents switched on in the developer portal; others close the gateway (4014)
        self.allowed_privileged_intents = PRIVILEGED_INTENTS
        # Discord sends the bot its own messages (and thread creations) over the gateway too
        self.echo_bot_messages = True
        # without MESSAGE_CONTENT, guild messages that do not mention the bot arrive without text
        self.enforce_message_content_intent = True

        self.owner_id = snowflake()
        self.bot_role_id = snowflake()
        self.users: dict[int, JSON] = {}
        self.bot_user = self.add_user(bot_user_id, "imagebot", bot=True)
        self.add_user(self.owner_id, "owner")
        self.guilds: dict[int, FakeGuild] = {
            guild_id: FakeGuild(guild_id, "Test Guild", channel_id, self.bot_role_id)
        }
        self.channels: dict[int, JSON] = {channel_id: self._text_channel(channel_id, "general")}

        self.calls: list[DiscordCall] = []
        self.cdn_downloads: list[str] = []
        self.messages: dict[int, list[StoredMessage]] = {}
        self.deleted_messages: list[StoredMessage] = []
        self.commands: dict[int | None, list[JSON]] = {}  # guild id (None: global) -> commands
        self.events: list[GatewayEvent] = []  # every event dispatched, all sessions
        self.replayed: list[GatewayEvent] = []  # events sent again after a RESUME
        self.identify_payloads: list[JSON] = []
        self.identified_at: list[float] = []  # time.monotonic() of each accepted IDENTIFY
        self.errors: list[Exception] = []  # requests the fake itself failed to handle
        self.intents: int | None = None
        self.connections = 0
        self.identifies = 0
        self.resumes = 0

        # channel overrides taking permissions from the bot: ATTACH_FILES, EMBED_LINKS, ...
        self.denied: dict[int, set[str]] = {}
        # members holding a role with Manage Server (shown in their interactions' permissions)
        self.managers: set[int] = set()
        # users who do not take DMs from the bot (privacy settings, or a block)
        self.closed_dms: set[int] = set()

        self._attachments: dict[int, StoredAttachment] = {}
        self._interactions: dict[int, _Interaction] = {}
        self._interactions_by_token: dict[str, _Interaction] = {}
        self._modals: dict[str, JSON] = {}
        self._faults: list[_Fault] = []
        # the application's Ed25519 key pair: interactions POSTed to the bot are signed with
        # it, and `public_key` is what DISCORD_PUBLIC_KEY is set to
        self._signing_key = Ed25519PrivateKey.generate()
        self.public_key = (
            self._signing_key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw).hex()
        )
        # the application's Interactions Endpoint URL; None: interactions go over the gateway
        self.interactions_url: str | None = None
        self.http_answers: list[HttpAnswer] = []
        self._client: aiohttp.ClientSession | None = None
        # the developer portal's Installation Contexts: User Install on (new apps have it)
        self.user_install = True
        self._sessions: dict[tuple[int, int], _Session] = {}  # by [shard id, shard count]
        self._open: list[_Connection] = []
        self._gateway_lock = asyncio.Lock()
        self._changed = asyncio.Event()
        self._runner: web.AppRunner | None = None
        self._base_url = ""

    # lifecycle ---------------------------------------------------------------------------------

    async def start(self) -> None:
        # large enough to read an oversized upload and answer 413 the way Discord does
        app = web.Application(
            client_max_size=self.upload_limit_bytes * (MAX_FILES + 2),
            middlewares=[self._api_middleware],
        )
        self._add_routes(app)
        self._runner = web.AppRunner(app, shutdown_timeout=2.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self._base_url = f"http://127.0.0.1:{port}"

    async def stop(self) -> None:
        if self._client is not None:
            await self._client.close()
            self._client = None
        for conn in list(self._open):
            with contextlib.suppress(Exception):
                await asyncio.wait_for(conn.ws.close(code=1001, message=b"Going away"), 2.0)
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeDiscord:
        await self.start()
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.stop()

    @property
    def api_url(self) -> str:
        return self._started_url() + API_PREFIX

    @property
    def gateway_url(self) -> str:
        return "ws" + self._started_url().removeprefix("http") + "/gateway"

    @property
    def cdn_url(self) -> str:
        return self._started_url() + "/cdn"

    def _started_url(self) -> str:
        if not self._base_url:
            raise RuntimeError("FakeDiscord is not started")
        return self._base_url

    def point_discord_py_here(self) -> Callable[[], None]:
        """Aim discord.py's REST root, gateway and asset CDN at this fake; returns the undo."""
        import yarl
        from discord.asset import Asset
        from discord.gateway import DiscordWebSocket
        from discord.http import Route

        saved = (Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY, Asset.BASE)
        Route.BASE = self.api_url
        DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(self.gateway_url)
        Asset.BASE = self.cdn_url

        def restore() -> None:
            Route.BASE, DiscordWebSocket.DEFAULT_GATEWAY, Asset.BASE = saved

        return restore

    # what tests look at --------------------------------------------------------------------------

    def calls_to(self, method: str, path_regex: str) -> list[DiscordCall]:
        """Recorded calls with this method whose path fully matches the regex."""
        pattern = re.compile(path_regex)
        return [c for c in self.calls if c.method == method and pattern.fullmatch(c.path)]

    async def wait_for_call(
        self,
        method: str,
        path_regex: str,
        *,
        count: int = 1,
        timeout: float = 10.0,
        predicate: Callable[[DiscordCall], bool] | None = None,
    ) -> DiscordCall:
        """Wait until `count` matching calls were answered; returns the `count`-th."""

        def matching() -> list[DiscordCall]:
            found = self.calls_to(method, path_regex)
            return [c for c in found if predicate is None or predicate(c)]

        def describe() -> str:
            seen = ", ".join(f"{c.method} {c.path} -> {c.status}" for c in self.calls[-20:])
            return f"no {count} x {method} {path_regex} within {timeout}s; recent calls: {seen}"

        await self.wait_until(lambda: len(matching()) >= count, timeout, describe)
        return matching()[count - 1]

    def channel_messages(self, channel_id: int | None = None) -> list[StoredMessage]:
        return self.messages.get(channel_id or self.channel_id, [])

    def message(self, message_id: int) -> StoredMessage:
        for channel_messages in self.messages.values():
            for msg in channel_messages:
                if msg.id == message_id:
                    return msg
        raise KeyError(message_id)

    async def wait_for_message(
        self,
        predicate: Callable[[StoredMessage], bool] | None = None,
        *,
        channel_id: int | None = None,
        timeout: float = 10.0,
    ) -> StoredMessage:
        """Wait until a message in the channel satisfies the predicate (e.g. has an image)."""

        def found() -> StoredMessage | None:
            channels = [channel_id] if channel_id is not None else list(self.messages)
            for cid in channels:
                for msg in self.messages.get(cid, []):
                    if predicate is None or predicate(msg):
                        return msg
            return None

        await self.wait_until(lambda: found() is not None, timeout, lambda: "no such message")
        result = found()
        assert result is not None
        return result

    def attachment_bytes(self, attachment: JSON | int) -> bytes:
        att_id = int(attachment["id"]) if isinstance(attachment, dict) else attachment
        return self._attachments[att_id].data

    # fault injection -----------------------------------------------------------------------------

    def fail_next(
        self,
        method: str,
        path_regex: str,
        *,
        status: int = 429,
        retry_after: float = 0.1,
        times: int = 1,
    ) -> None:
        """Answer the next `times` matching calls with 429 (rate limited) or a 5xx."""
        self._faults.append(_Fault(method, re.compile(path_regex), status, retry_after, times))

    def _take_fault(self, call: DiscordCall) -> _Fault | None:
        for fault in self._faults:
            if fault.remaining > 0 and fault.method == call.method:
                if fault.pattern.fullmatch(call.path):
                    fault.remaining -= 1
                    return fault
        return None

    @staticmethod
    def _fault_response(fault: _Fault) -> web.Response:
        if fault.status == 429:
            wait = fault.retry_after
            bucket = hashlib.sha1(fault.pattern.pattern.encode()).hexdigest()[:32]
            headers = {
                # without Via discord.py takes a 429 for a Cloudflare ban and gives up
                "Via": "1.1 google",
                "Retry-After": str(max(1, math.ceil(wait))),
                "X-RateLimit-Limit": "5",
                "X-RateLimit-Remaining": "0",
                "X-RateLimit-Reset": f"{time.time() + wait:.3f}",
                "X-RateLimit-Reset-After": f"{wait:.3f}",
                "X-RateLimit-Bucket": bucket,
                "X-RateLimit-Scope": "user",
            }
            body = {"message": "You are being rate limited.", "retry_after": wait, "global": False}
            return _json_response(body, 429, headers)
        reason = HTTPStatus(fault.status).phrase
        if fault.status in (502, 503, 504):
            # what Cloudflare answers in front of Discord: HTML, not JSON
            text = f"<html><body><h1>{fault.status} {reason}</h1></body></html>"
            return web.Response(status=fault.status, text=text, content_type="text/html")
        body = {"message": f"{fault.status}: {reason}", "code": 0}
        return _json_response(body, fault.status)

    # users, channels, attachments ----------------------------------------------------------------

    def add_user(self, user_id: int, username: str | None = None, *, bot: bool = False) -> JSON:
        name = username or f"user{user_id}"
        user: JSON = {
            "id": str(user_id),
            "username": name,
            "global_name": None if bot else name.title(),
            "discriminator": "0",
            "avatar": None,
            "public_flags": 0,
            "flags": 0,
            "banner": None,
            "accent_color": None,
            "avatar_decoration_data": None,
            "collectibles": None,
            "primary_guild": None,
        }
        if bot:
            user["bot"] = True
        self.users[user_id] = user
        return user

    def user(self, user_id: int) -> JSON:
        return self.users.get(user_id) or self.add_user(user_id)

    def add_text_channel(self, name: str, *, guild_id: int | None = None) -> int:
        """Another text channel in the guild (the client sees it after its next IDENTIFY)."""
        channel_id = snowflake()
        self.channels[channel_id] = self._text_channel(channel_id, name, guild_id)
        return channel_id

    def add_guild(
        self,
        name: str = "Second Guild",
        *,
        guild_id: int | None = None,
        shard: tuple[int, int] | None = None,
    ) -> FakeGuild:
        """Another guild the bot is in, with a "general" text channel; `shard` ([id, count])
        picks an id whose events go to that shard. Clients see it after their next IDENTIFY."""
        if guild_id is None:
            guild_id = guild_id_on_shard(*shard) if shard is not None else snowflake()
        elif shard is not None and shard_of(guild_id, shard[1]) != shard[0]:
            raise ValueError(f"guild {guild_id} is on shard {shard_of(guild_id, shard[1])}")
        guild = FakeGuild(guild_id, name, snowflake(), snowflake())
        self.guilds[guild_id] = guild
        self.channels[guild.channel_id] = self._text_channel(guild.channel_id, "general", guild_id)
        return guild

    def deny(self, channel_id: int, *permissions: str) -> None:
        """A channel override taking `permissions` (ATTACH_FILES, EMBED_LINKS, SEND_MESSAGES)
        from the bot: a message needing one is refused with 403 50013, as Discord does. Since
        2024 interaction responses and follow-ups are held to ATTACH_FILES and EMBED_LINKS
        too; SEND_MESSAGES does not apply to them."""
        self.denied.setdefault(channel_id, set()).update(permissions)

    def _check_permissions(
        self, channel_id: int, body: JSON, files: Sequence[UploadedFile], *, webhook: bool
    ) -> None:
        channel = self.channels.get(channel_id) or {}
        if channel.get("type") == 1 and int(channel["recipients"][0]["id"]) in self.closed_dms:
            raise _ApiError(403, 50007, "Cannot send messages to this user")
        denied = self.denied.get(channel_id, set())
        if (
            (not webhook and "SEND_MESSAGES" in denied)
            or (body.get("embeds") and "EMBED_LINKS" in denied)
            or (files and "ATTACH_FILES" in denied)
        ):
            raise _ApiError(403, 50013, "Missing Permissions")

    def add_dm_channel(self, user_id: int) -> int:
        """The DM channel between the bot and a user (made on first use)."""
        for channel in self.channels.values():
            if channel["type"] == 1 and channel["recipients"][0]["id"] == str(user_id):
                return int(channel["id"])
        channel_id = snowflake()
        self.channels[channel_id] = {
            "id": str(channel_id),
            "type": 1,
            "last_message_id": None,
            "flags": 0,
            "recipients": [self.user(user_id)],
        }
        return channel_id

    def add_attachment(
        self,
        data: bytes,
        filename: str,
        content_type: str | None = None,
        *,
        channel_id: int | None = None,
        description: str | None = None,
    ) -> JSON:
        """Store a file as if a user uploaded it; returns the attachment object for events."""
        stored = self._store_attachment(
            channel_id or self.channel_id, data, filename, content_type, description
        )
        return stored.to_payload()

    def add_bot_message(
        self,
        content: str = "",
        *,
        channel_id: int | None = None,
        components: Sequence[JSON] = (),
        embeds: Sequence[JSON] = (),
    ) -> StoredMessage:
        """A message the bot posted earlier (e.g. before a restart), for buttons to point at."""
        cid = channel_id or self.channel_id
        msg = StoredMessage(
            id=snowflake(),
            channel_id=cid,
            guild_id=self._guild_of(cid),
            author=self.bot_user,
            content=content,
            components=list(components),
            embeds=[_normalise_embed(e) for e in embeds],
        )
        self._store_message(msg)
        return msg

    def _store_attachment(
        self,
        channel_id: int,
        data: bytes,
        filename: str,
        content_type: str | None,
        description: str | None = None,
    ) -> StoredAttachment:
        att_id = snowflake()
        name = re.sub(r"\s+", "_", filename.rsplit("/", 1)[-1]) or "unknown"
        sniffed, width, height = _sniff(data, name, content_type)
        now = int(time.time())
        signature = f"?ex={now + 86400:x}&is={now:x}&hm={secrets.token_hex(32)}&"
        path = f"/attachments/{channel_id}/{att_id}/{quote(name)}"
        stored = StoredAttachment(
            id=att_id,
            filename=name,
            content_type=sniffed,
            data=bytes(data),
            url=f"{self.cdn_url}{path}{signature}",
            proxy_url=f"{self._started_url()}/media{path}{signature}",
            width=width,
            height=height,
            description=description,
        )
        self._attachments[att_id] = stored
        return stored

    def _text_channel(self, channel_id: int, name: str, guild_id: int | None = None) -> JSON:
        return {
            "id": str(channel_id),
            "type": 0,
            "guild_id": str(guild_id or self.guild_id),
            "name": name,
            "position": 0,
            "permission_overwrites": [],
            "rate_limit_per_user": 0,
            "nsfw": False,
            "topic": None,
            "last_message_id": None,
            "parent_id": None,
            "default_auto_archive_duration": 1440,
            "default_thread_rate_limit_per_user": 0,
            "flags": 0,
        }

    def _guild_of(self, channel_id: int) -> int | None:
        channel = self.channels.get(channel_id)
        if channel is None:
            return self.guild_id
        return int(channel["guild_id"]) if "guild_id" in channel else None

    def _channel(self, channel_id: int) -> JSON:
        channel = self.channels.get(channel_id)
        if channel is None:
            raise _unknown("Channel", 10003)
        return channel

    def _member(self, user_id: int, *, with_user: bool = True, guild_id: int | None = None) -> JSON:
        guild = self.guilds.get(guild_id or self.guild_id) or self.guilds[self.guild_id]
        member: JSON = {
            "roles": [str(guild.bot_role_id)] if user_id == self.bot_user_id else [],
            "nick": None,
            "avatar": None,
            "banner": None,
            "joined_at": "2024-01-01T00:00:00+00:00",
            "premium_since": None,
            "deaf": False,
            "mute": False,
            "flags": 0,
            "pending": False,
            "communication_disabled_until": None,
            "unusual_dm_activity_until": None,
        }
        if with_user:
            member["user"] = self.user(user_id)
        return member

    def _permissions_of(self, user_id: int) -> int:
        if user_id == self.bot_user_id:
            return _BOT_PERMISSIONS
        manage_guild = 1 << 5 if user_id in self.managers else 0
        return _EVERYONE_PERMISSIONS | manage_guild

    # gateway payloads ----------------------------------------------------------------------------

    def _application_flags(self) -> int:
        flags = 1 << 23  # APPLICATION_COMMAND_BADGE
        if self.allowed_privileged_intents & INTENT_GUILD_PRESENCES:
            flags |= 1 << 13
        if self.allowed_privileged_intents & INTENT_GUILD_MEMBERS:
            flags |= 1 << 15
        if self.allowed_privileged_intents & INTENT_MESSAGE_CONTENT:
            flags |= 1 << 19
        return flags

    def _ready_payload(self, session: _Session) -> JSON:
        return {
            "v": 10,
            "user": {**self.bot_user, "verified": True, "mfa_enabled": False, "email": None},
            "user_settings": {},
            "guilds": [
                {"id": str(guild_id), "unavailable": True}
                for guild_id in self.guilds
                if session.receives(guild_id)
            ],
            "session_id": session.id,
            "session_type": "normal",
            "resume_gateway_url": self.gateway_url,
            "relationships": [],
            "private_channels": [],
            "presences": [],
            "guild_join_requests": [],
            "geo_ordered_rtc_regions": ["fake"],
            "application": {"id": str(self.application_id), "flags": self._application_flags()},
            "auth": {},
            "_trace": ['["fake-gateway",{"micros":0}]'],
        }

    def _roles(self, guild: FakeGuild) -> list[JSON]:
        def role(role_id: int, name: str, permissions: int, position: int, **extra: Any) -> JSON:
            return {
                "id": str(role_id),
                "name": name,
                "permissions": str(permissions),
                "position": position,
                "color": 0,
                "colors": {"primary_color": 0, "secondary_color": None, "tertiary_color": None},
                "hoist": False,
                "managed": False,
                "mentionable": False,
                "icon": None,
                "unicode_emoji": None,
                "flags": 0,
                **extra,
            }

        return [
            role(guild.id, "@everyone", _EVERYONE_PERMISSIONS, 0),
            role(
                guild.bot_role_id,
                self.bot_user["username"],
                _BOT_PERMISSIONS,
                1,
                managed=True,
                tags={"bot_id": str(self.bot_user_id)},
            ),
        ]

    def _guild_rest_payload(self, guild: FakeGuild) -> JSON:
        return {
            "id": str(guild.id),
            "name": guild.name,
            "icon": None,
            "splash": None,
            "discovery_splash": None,
            "banner": None,
            "description": None,
            "owner_id": str(self.owner_id),
            "afk_channel_id": None,
            "afk_timeout": 300,
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "roles": self._roles(guild),
            "emojis": [],
            "stickers": [],
            "features": [],
            "mfa_level": 0,
            "application_id": None,
            "system_channel_id": str(guild.channel_id),
            "system_channel_flags": 0,
            "rules_channel_id": None,
            "public_updates_channel_id": None,
            "safety_alerts_channel_id": None,
            "max_members": 500000,
            "vanity_url_code": None,
            "premium_tier": 0,
            "premium_subscription_count": 0,
            "preferred_locale": "en-US",
            "nsfw_level": 0,
            "premium_progress_bar_enabled": False,
        }

    def _guild_create_payload(self, guild: FakeGuild) -> JSON:
        members = [
            self._member(self.bot_user_id, guild_id=guild.id),
            self._member(self.owner_id, guild_id=guild.id),
        ]
        guild_channels = [c for c in self.channels.values() if c.get("guild_id") == str(guild.id)]
        return {
            **self._guild_rest_payload(guild),
            "joined_at": "2024-01-01T00:00:00+00:00",
            "large": False,
            "lazy": True,
            "unavailable": False,
            "member_count": len(members),
            "members": members,
            "channels": [c for c in guild_channels if c["type"] in (0, 2, 4, 5, 13, 15)],
            "threads": [c for c in guild_channels if c["type"] in (10, 11, 12)],
            "voice_states": [],
            "presences": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
        }

    def _app_info_payload(self) -> JSON:
        return {
            "id": str(self.application_id),
            "name": self.bot_user["username"],
            "icon": None,
            "description": "",
            "summary": "",
            "type": None,
            "hook": True,
            "bot_public": True,
            "bot_require_code_grant": False,
            "flags": self._application_flags(),
            "owner": self.user(self.owner_id),
            "team": None,
            "bot": self.bot_user,
            "rpc_origins": [],
            "redirect_uris": [],
            "interactions_endpoint_url": self.interactions_url,
            "verify_key": self.public_key,
            "role_connections_verification_url": None,
            "tags": [],
            "install_params": {
                "scopes": ["bot", "applications.commands"],
                "permissions": str(_BOT_PERMISSIONS),
            },
            "integration_types_config": {"0": {}, "1": {}} if self.user_install else {"0": {}},
            "approximate_guild_count": len(self.guilds),
        }

    # builders: what users do ---------------------------------------------------------------------

    def message_create(
        self,
        content: str,
        *,
        author_id: int,
        channel_id: int | None = None,
        attachments: Sequence[JSON] = (),
        mentions: Iterable[int] = (),
        message_reference: JSON | int | None = None,
        referenced_message: JSON | StoredMessage | None = None,
        guild_id: int | None = None,
    ) -> JSON:
        """MESSAGE_CREATE data for a user's message; the message is also stored in the channel.

        `attachments` are objects from `add_attachment`; `mentions` are user ids.
        `guild_id` defaults to the channel's guild (none for a DM channel).
        """
        cid = channel_id or self.channel_id
        gid = guild_id if guild_id is not None else self._guild_of(cid)
        mentioned = [self._mention(uid, gid) for uid in mentions]
        msg = StoredMessage(
            id=snowflake(),
            channel_id=cid,
            guild_id=gid,
            author=self.user(author_id),
            content=content,
            attachments=[self._attachments[int(a["id"])] for a in attachments],
            mentions=mentioned,
            member=(
                self._member(author_id, with_user=False, guild_id=gid) if gid is not None else None
            ),
        )
        referenced = referenced_message
        if isinstance(referenced, StoredMessage):
            referenced = self._message_payload(referenced)
        if message_reference is None and referenced is not None:
            message_reference = int(referenced["id"])
        if message_reference is not None:
            ref_id = (
                message_reference
                if isinstance(message_reference, int)
                else int(message_reference["message_id"])
            )
            msg.message_reference = self._reference(ref_id, cid, gid)
            msg.type = 19
            if referenced is None:
                with contextlib.suppress(KeyError):
                    referenced = self._message_payload(self.message(ref_id))
        self._store_message(msg)
        payload = self._gateway_message(msg)
        if msg.message_reference is not None:
            payload["referenced_message"] = referenced
        return payload

    def interaction_slash_command(
        self,
        name: str,
        options: Sequence[JSON] = (),
        *,
        user_id: int,
        channel_id: int | None = None,
        guild_id: int | None = None,
        attachments: Mapping[str, JSON] | None = None,
        user_install: bool = False,
        age_seconds: float = 0.0,
    ) -> JSON:
        """INTERACTION_CREATE data for `/name` with options.

        `attachments` maps an attachment option's name to an object from `add_attachment`.
        `user_install`: the command comes from the app installed to the user's account and
        used where the bot is not a member (authorized by the user alone). `age_seconds`:
        the interaction was created that long ago (its id carries the time), for tokens
        near the end of their 15 minutes.
        """
        cid = channel_id or self.channel_id
        gid = guild_id if guild_id is not None else self._guild_of(cid)
        opts = [dict(o) for o in options]
        resolved: JSON = {}
        if attachments:
            resolved_attachments: JSON = {}
            for option_name, attachment in attachments.items():
                resolved_attachments[str(attachment["id"])] = attachment
                option = next((o for o in opts if o.get("name") == option_name), None)
                if option is None:
                    opts.append({"name": option_name, "type": 11, "value": str(attachment["id"])})
                else:
                    option.update(type=11, value=str(attachment["id"]))
            resolved["attachments"] = resolved_attachments
        command, command_guild = self._find_command(name, gid)
        data: JSON = {
            "id": command["id"] if command else str(snowflake()),
            "name": name,
            "type": 1,
            "options": opts,
        }
        if command_guild is not None:
            data["guild_id"] = str(command_guild)
        if resolved:
            data["resolved"] = resolved
        payload = self._interaction(
            2, data, user_id=user_id, channel_id=cid, guild_id=gid, name=name
        )
        if user_install:
            payload["authorizing_integration_owners"] = {"1": str(user_id)}
            payload["context"] = 0 if gid is not None else 2
        if age_seconds:
            inter = self._interactions.pop(int(payload["id"]))
            millis = int((time.time() - age_seconds) * 1000) - DISCORD_EPOCH_MS
            inter.id = (millis << 22) | (next(_sequence) & 0x3FFFF)
            self._interactions[inter.id] = inter
            payload["id"] = str(inter.id)
        return payload

    def interaction_component(
        self,
        custom_id: str,
        message: StoredMessage | JSON | int,
        *,
        user_id: int,
        values: Sequence[str] | None = None,
    ) -> JSON:
        """INTERACTION_CREATE data for a click on a component of `message` (type 3)."""
        payload = self._message_arg(message)
        cid = int(payload["channel_id"])
        component = _find_component(payload.get("components") or [], custom_id)
        data: JSON = {
            "custom_id": custom_id,
            "component_type": component["type"] if component else 2,
        }
        if component and "id" in component:
            data["id"] = component["id"]
        if values is not None:
            data["values"] = list(values)
        return self._interaction(
            3,
            data,
            user_id=user_id,
            channel_id=cid,
            guild_id=self._guild_of(cid),
            name=custom_id,
            message=payload,
        )

    def interaction_modal_submit(
        self,
        custom_id: str,
        values: Mapping[str, str],
        *,
        user_id: int,
        channel_id: int | None = None,
        message: StoredMessage | JSON | int | None = None,
    ) -> JSON:
        """INTERACTION_CREATE data for a submitted modal (type 5); `values` by text input id.

        The submitted components mirror the modal the bot opened (action rows or labels).
        """
        components: list[JSON] = []
        pending = dict(values)
        for row in self._modals.get(custom_id, {}).get("components", []):
            inner = row.get("component") if row.get("type") == 18 else None
            children = [inner] if inner else row.get("components", [])
            submitted = [
                {
                    "type": c["type"],
                    "custom_id": c["custom_id"],
                    "value": pending.pop(c["custom_id"]),
                }
                for c in children
                if c.get("custom_id") in pending
            ]
            if not submitted:
                continue
            if row.get("type") == 18:
                components.append({"type": 18, "component": submitted[0]})
            else:
                components.append({"type": 1, "components": submitted})
        for input_id, value in pending.items():
            components.append(
                {"type": 1, "components": [{"type": 4, "custom_id": input_id, "value": value}]}
            )
        payload = self._message_arg(message) if message is not None else None
        cid = int(payload["channel_id"]) if payload else (channel_id or self.channel_id)
        return self._interaction(
            5,
            {"custom_id": custom_id, "components": components},
            user_id=user_id,
            channel_id=cid,
            guild_id=self._guild_of(cid),
            name=custom_id,
            message=payload,
        )

    def _interaction(
        self,
        itype: int,
        data: JSON,
        *,
        user_id: int,
        channel_id: int,
        guild_id: int | None,
        name: str,
        message: JSON | None = None,
    ) -> JSON:
        inter = _Interaction(
            id=snowflake(),
            token="aW50ZXJhY3Rpb246" + secrets.token_urlsafe(96),
            type=itype,
            channel_id=channel_id,
            guild_id=guild_id,
            user_id=user_id,
            name=name,
            message_id=int(message["id"]) if message else None,
            created_at=time.monotonic(),
        )
        self._interactions[inter.id] = inter
        self._interactions_by_token[inter.token] = inter
        channel = dict(self.channels.get(channel_id) or {"id": str(channel_id), "type": 0})
        channel["permissions"] = str(self._permissions_of(user_id))
        payload: JSON = {
            "id": str(inter.id),
            "application_id": str(self.application_id),
            "type": itype,
            "token": inter.token,
            "version": 1,
            "data": data,
            "channel_id": str(channel_id),
            "channel": channel,
            "app_permissions": str(_BOT_PERMISSIONS),
            "locale": "en-US",
            "entitlements": [],
            "entitlement_sku_ids": [],
            "attachment_size_limit": self.upload_limit_bytes,
        }
        if guild_id is not None:
            member = self._member(user_id, guild_id=guild_id)
            member["permissions"] = str(self._permissions_of(user_id))
            payload.update(
                guild_id=str(guild_id),
                guild={"id": str(guild_id), "locale": "en-US", "features": []},
                guild_locale="en-US",
                member=member,
                authorizing_integration_owners={"0": str(guild_id)},
                context=0,
            )
        else:
            payload.update(
                user=self.user(user_id), authorizing_integration_owners={"0": "0"}, context=1
            )
        if message is not None:
            payload["message"] = message
        return payload

    def _find_command(self, name: str, guild_id: int | None) -> tuple[JSON | None, int | None]:
        if guild_id is not None:
            for command in self.commands.get(guild_id, []):
                if command["name"] == name and command.get("type", 1) == 1:
                    return command, guild_id
        for command in self.commands.get(None, []):
            if command["name"] == name and command.get("type", 1) == 1:
                return command, None
        return None, None

    def _message_arg(self, message: StoredMessage | JSON | int) -> JSON:
        if isinstance(message, StoredMessage):
            return self._message_payload(message)
        if isinstance(message, int):
            return self._message_payload(self.message(message))
        return message

    def _mention(self, user_id: int, guild_id: int | None) -> JSON:
        mention = dict(self.user(user_id))
        if guild_id is not None:
            mention["member"] = self._member(user_id, with_user=False, guild_id=guild_id)
        return mention

    def _reference(self, message_id: int, channel_id: int, guild_id: int | None) -> JSON:
        reference: JSON = {
            "type": 0,
            "message_id": str(message_id),
            "channel_id": str(channel_id),
        }
        if guild_id is not None:
            reference["guild_id"] = str(guild_id)
        return reference

    # message state -------------------------------------------------------------------------------

    def _store_message(self, msg: StoredMessage) -> None:
        self.messages.setdefault(msg.channel_id, []).append(msg)
        channel = self.channels.get(msg.channel_id)
        if channel is not None:
            channel["last_message_id"] = str(msg.id)
            if channel["type"] in (10, 11, 12):
                channel["message_count"] += 1
                channel["total_message_sent"] += 1
        self._touch()

    def _message_payload(self, msg: StoredMessage) -> JSON:
        payload = msg.to_payload()
        if msg.message_reference is not None:
            ref_id = int(msg.message_reference["message_id"])
            try:
                payload["referenced_message"] = self.message(ref_id).to_payload()
            except KeyError:
                payload["referenced_message"] = None
        return payload

    def _gateway_message(self, msg: StoredMessage) -> JSON:
        payload = self._message_payload(msg)
        if msg.guild_id is not None:
            payload["guild_id"] = str(msg.guild_id)
            payload["member"] = msg.member or self._member(
                msg.author_id, with_user=False, guild_id=msg.guild_id
            )
        return payload

    def _message_in(self, channel_id: int, message_id: int) -> StoredMessage:
        for msg in self.messages.get(channel_id, []):
            if msg.id == message_id and not msg.ephemeral:
                return msg
        raise _unknown("Message", 10008)

    def _new_message(
        self, channel_id: int, body: JSON, files: Sequence[UploadedFile]
    ) -> StoredMessage:
        """Validate a message body the way Discord does and store the new message."""
        self._channel(channel_id)
        _validate_body(body, files)
        guild_id = self._guild_of(channel_id)
        msg = StoredMessage(
            id=snowflake(),
            channel_id=channel_id,
            guild_id=guild_id,
            author=self.bot_user,
            content=body.get("content") or "",
            embeds=[_normalise_embed(e) for e in body.get("embeds") or []],
            components=list(body.get("components") or []),
            flags=int(body.get("flags") or 0) & ~FLAG_LOADING,
            tts=bool(body.get("tts")),
            nonce=body.get("nonce"),
            member=(
                self._member(self.bot_user_id, with_user=False, guild_id=guild_id)
                if guild_id
                else None
            ),
        )
        msg.mentions = [
            self._mention(int(uid), guild_id) for uid in _USER_MENTION.findall(msg.content)
        ]
        msg.attachments = self._new_attachments(channel_id, body.get("attachments"), files)
        reference = body.get("message_reference")
        if reference:
            ref_id = int(reference["message_id"])
            try:
                self.message(ref_id)
            except KeyError:
                if reference.get("fail_if_not_exists", True):
                    raise _form_error(
                        "message_reference", "MESSAGE_REFERENCE_UNKNOWN_MESSAGE", "Unknown message"
                    ) from None
            msg.message_reference = self._reference(
                ref_id, int(reference.get("channel_id") or channel_id), guild_id
            )
            msg.type = 19
        _resolve_embed_attachments(msg)
        _ensure_not_empty(msg)
        self._store_message(msg)
        return msg

    def _new_attachments(
        self, channel_id: int, entries: Any, files: Sequence[UploadedFile]
    ) -> list[StoredAttachment]:
        by_index = {str(e.get("id")): e for e in entries or [] if isinstance(e, dict)}
        stored = []
        for position, upload in enumerate(files):
            index = _file_index(upload.name, position)
            entry = by_index.get(str(index), {})
            stored.append(
                self._store_attachment(
                    channel_id,
                    upload.data,
                    entry.get("filename") or upload.filename,
                    upload.content_type,
                    entry.get("description"),
                )
            )
        return stored

    def _edit_message(self, msg: StoredMessage, body: JSON, files: Sequence[UploadedFile]) -> None:
        """Apply a PATCH body; a refused edit leaves the message as it was."""
        _validate_body(body, files)
        edited = replace(msg, flags=msg.flags & ~FLAG_LOADING)
        if "content" in body:
            edited.content = body["content"] or ""
        if "embeds" in body:
            edited.embeds = [_normalise_embed(e) for e in body["embeds"] or []]
        if "components" in body:
            edited.components = list(body["components"] or [])
        if body.get("flags") is not None:
            # only the flags a client may toggle; ephemeral-ness is fixed at creation
            edited.flags = (msg.flags & FLAG_EPHEMERAL) | (
                int(body["flags"]) & ~(FLAG_EPHEMERAL | FLAG_LOADING)
            )
        new = self._new_attachments(msg.channel_id, body.get("attachments"), files)
        if "attachments" in body:
            # listed ids are kept; entries whose id is a file index describe the new uploads
            new_indices = {str(_file_index(f.name, i)) for i, f in enumerate(files)}
            keep_ids = {
                int(e["id"])
                for e in body["attachments"] or []
                if isinstance(e, dict) and str(e.get("id")) not in new_indices
            }
            edited.attachments = [a for a in msg.attachments if a.id in keep_ids] + new
        else:
            edited.attachments = msg.attachments + new
        if not msg.loading:
            edited.edited_timestamp = _now_iso()
        edited.embeds = [dict(e) for e in edited.embeds]
        _resolve_embed_attachments(edited)
        _ensure_not_empty(edited)
        vars(msg).update(vars(edited))
        self._touch()

    async def delete_message(self, message_id: int) -> None:
        """Someone with Manage Messages deletes a message (the bot hears MESSAGE_DELETE)."""
        msg = self.message(message_id)
        self._delete_message(msg)
        await self._echo_message("MESSAGE_DELETE", msg)

    def _delete_message(self, msg: StoredMessage) -> None:
        self.messages[msg.channel_id].remove(msg)
        self.deleted_messages.append(msg)
        self._touch()

    def _new_thread(self, parent: JSON, name: str, thread_id: int, body: JSON) -> JSON:
        if not name or len(name) > 100:
            raise _form_error(
                "name", "BASE_TYPE_BAD_LENGTH", "Must be between 1 and 100 in length."
            )
        now = _now_iso()
        archive = int(body.get("auto_archive_duration") or 4320)
        thread: JSON = {
            "id": str(thread_id),
            "type": int(body.get("type") or 11),
            "guild_id": parent["guild_id"],
            "parent_id": parent["id"],
            "owner_id": str(self.bot_user_id),
            "name": name,
            "last_message_id": None,
            "rate_limit_per_user": int(body.get("rate_limit_per_user") or 0),
            "flags": 0,
            "message_count": 0,
            "member_count": 1,
            "total_message_sent": 0,
            "applied_tags": [],
            "thread_metadata": {
                "archived": False,
                "auto_archive_duration": archive,
                "archive_timestamp": now,
                "locked": False,
                "create_timestamp": now,
                "invitable": bool(body.get("invitable", True)),
            },
            "member": {
                "id": str(thread_id),
                "user_id": str(self.bot_user_id),
                "join_timestamp": now,
                "flags": 1,
            },
        }
        self.channels[thread_id] = thread
        self._touch()
        return thread

    # interaction state ---------------------------------------------------------------------------

    def _interaction_message(self, inter: _Interaction, msg: StoredMessage) -> None:
        msg.type = 20 if inter.type == 2 else 0
        msg.webhook_id = self.application_id
        msg.application_id = self.application_id
        msg.interaction_metadata = {
            "id": str(inter.id),
            "type": inter.type,
            "user": self.user(inter.user_id),
            "authorizing_integration_owners": {"0": str(inter.guild_id or 0)},
            "name": inter.name if inter.type == 2 else "",
        }
        if inter.message_id is not None:
            msg.interaction_metadata["interacted_message_id"] = str(inter.message_id)
        inter.message_ids.add(msg.id)

    def _webhook_interaction(self, request: web.Request) -> _Interaction:
        inter = self._interactions_by_token.get(request.match_info["token"])
        app_id = request.match_info["app_id"]
        if inter is None or app_id != str(self.application_id) or inter.response_type is None:
            raise _unknown("Webhook", 10015)
        return inter

    def _webhook_message(self, inter: _Interaction, message_ref: str) -> StoredMessage:
        if message_ref == "@original":
            message_id = inter.original_message_id
        else:
            message_id = int(message_ref) if message_ref.isdigit() else None
            if message_id not in inter.message_ids:
                message_id = None
        if message_id is None:
            raise _unknown("Message", 10008)
        try:
            return self.message(message_id)
        except KeyError:
            raise _unknown("Message", 10008) from None

    # interactions over HTTP ----------------------------------------------------------------------

    def interaction_ping(self) -> JSON:
        """The PING Discord sends when the Interactions Endpoint URL is saved, and now and then."""
        return {
            "id": str(snowflake()),
            "application_id": str(self.application_id),
            "type": 1,
            "token": "aW50ZXJhY3Rpb246" + secrets.token_urlsafe(96),
            "version": 1,
        }

    def sign(self, timestamp: str, body: bytes) -> str:
        """X-Signature-Ed25519 for `body` sent at `timestamp`: Ed25519(timestamp + body)."""
        return self._signing_key.sign(timestamp.encode() + body).hex()

    def signed_headers(
        self, body: bytes, *, timestamp: str | None = None, signature: str | None = None
    ) -> dict[str, str]:
        """The headers Discord sends with an interaction POSTed to the bot."""
        stamp = timestamp if timestamp is not None else str(int(time.time()))
        return {
            "Content-Type": "application/json",
            "User-Agent": "Discord-Interactions/1.0 (+https://discord.com)",
            "X-Signature-Ed25519": signature if signature is not None else self.sign(stamp, body),
            "X-Signature-Timestamp": stamp,
        }

    def sending_over_http(self, payload: JSON) -> None:
        """`payload` is on its way to the bot: webhook calls for it wait for its answer."""
        inter = self._interactions.get(int(payload.get("id") or 0))
        if inter is not None:
            inter.dispatched_at = time.monotonic()
            inter.answering_over_http = True

    async def answered_over_http(self, payload: JSON, status: int, answer: Any) -> None:
        """The bot's HTTP answer to `payload`: a 200 with JSON is the interaction's response."""
        inter = self._interactions.get(int(payload.get("id") or 0))
        try:
            if inter is not None and status == 200 and isinstance(answer, dict):
                if payload.get("type") != 1:
                    await self._respond(inter, answer, [])
        finally:
            if inter is not None:
                inter.answering_over_http = False
                inter.answered_over_http.set()

    async def post_interaction(
        self,
        payload: JSON,
        *,
        url: str | None = None,
        timestamp: str | None = None,
        signature: str | None = None,
        body: bytes | None = None,
    ) -> HttpAnswer:
        """POST `payload` to the bot's interactions URL as Discord does, signed with the
        application's key (unless `signature` is given); an answer of 200 is taken as the
        interaction's response, as Discord takes it."""
        target = url or self.interactions_url
        assert target is not None, "set interactions_url to the bot's endpoint first"
        raw = body if body is not None else json.dumps(payload, separators=(",", ":")).encode()
        headers = self.signed_headers(raw, timestamp=timestamp, signature=signature)
        if self._client is None:
            self._client = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        self.sending_over_http(payload)
        started = time.monotonic()
        answer: Any = None
        status = 0
        try:
            async with self._client.post(
                target, data=raw, headers=headers, timeout=aiohttp.ClientTimeout(total=3.0)
            ) as response:
                text = await response.text()
                status = response.status
            answer = text
            if status == 200 and response.content_type == "application/json":
                answer = json.loads(text)
        finally:
            await self.answered_over_http(payload, status, answer)
        recorded = HttpAnswer(
            int(payload.get("id") or 0), status, answer, time.monotonic() - started
        )
        self.http_answers.append(recorded)
        self._touch()
        return recorded

    async def _until_answered_over_http(self, call: DiscordCall) -> None:
        """Discord takes a webhook call for an interaction only once it has read that
        interaction's answer; one arriving while the answer is on its way waits for it."""
        match = _WEBHOOK_TOKEN.match(call.path)
        inter = self._interactions_by_token.get(match["token"]) if match else None
        if inter is not None and inter.answering_over_http:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(inter.answered_over_http.wait(), 3.0)

    # waiting -------------------------------------------------------------------------------------

    def _touch(self) -> None:
        changed, self._changed = self._changed, asyncio.Event()
        changed.set()

    async def wait_until(
        self,
        check: Callable[[], bool],
        seconds: float = 10.0,
        describe: Callable[[], str] = lambda: "condition not met",
    ) -> None:
        """Wait until `check()` holds; it is re-checked whenever the fake's state changes."""
        try:
            async with asyncio.timeout(seconds):
                while not check():
                    await self._changed.wait()
        except TimeoutError:
            raise TimeoutError(describe()) from None

    async def wait_until_ready(self, timeout: float = 10.0, *, shard: int | None = None) -> None:
        """Wait until a client has identified (or resumed) and receives events: on every shard
        of the shard count clients identified with, or on `shard` alone."""
        await self.wait_until(
            lambda: self._ready(shard),
            timeout,
            lambda: f"no client identified on the gateway ({self._describe_sessions()})",
        )

    async def wait_for_resume(self, timeout: float = 10.0, *, count: int = 1) -> None:
        """Wait until `count` RESUMEs in total have been answered (replay done, RESUMED sent)."""
        await self.wait_until(
            lambda: self.resumes >= count and self._ready(None),
            timeout,
            lambda: f"{self.resumes} resumes, wanted {count}",
        )

    def live_shards(self) -> list[tuple[int, int]]:
        """[shard id, shard count] of every session with a live connection, in order."""
        return sorted(key for key, session in self._sessions.items() if session.live is not None)

    def _ready(self, shard: int | None) -> bool:
        sessions = list(self._sessions.values())
        if shard is not None:
            return any(s.live is not None and s.shard[0] == shard for s in sessions)
        if not sessions or any(s.live is None for s in sessions):
            return False
        counts = {s.shard[1] for s in sessions}
        return all(
            {s.shard[0] for s in sessions if s.shard[1] == n} == set(range(n)) for n in counts
        )

    def _describe_sessions(self) -> str:
        if not self._sessions:
            return "no session"
        return ", ".join(
            f"shard {i} of {n} {'live' if s.live else 'not live'}"
            for (i, n), s in sorted(self._sessions.items())
        )

    # gateway -------------------------------------------------------------------------------------

    async def dispatch(self, event_type: str, data: JSON) -> int:
        """Send an op 0 event with the next sequence number; kept for replay after a RESUME.

        As on Discord, it goes only to the shard that has its guild (shard 0 when it has no
        guild, as DMs); a client whose intents exclude the event does not receive it (e.g.
        MESSAGE_CREATE in a guild needs GUILD_MESSAGES), and guild message text needs
        MESSAGE_CONTENT unless the bot is mentioned. Returns the event's sequence number.
        """
        if not self._sessions:
            raise RuntimeError("no gateway session: start a client and await wait_until_ready()")
        guild_id = _event_guild(event_type, data)
        sessions = [s for s in self._sessions.values() if s.receives(guild_id)]
        if not sessions:
            raise RuntimeError(
                f"no gateway session receives guild {guild_id}'s events "
                f"({self._describe_sessions()})"
            )
        return await self._dispatch_to(sessions, event_type, data)

    async def _dispatch_to(self, sessions: list[_Session], event_type: str, data: JSON) -> int:
        seqs = []
        async with self._gateway_lock:
            if event_type == "INTERACTION_CREATE":
                inter = self._interactions.get(int(data["id"]))
                if inter is not None:
                    inter.dispatched_at = time.monotonic()
            for session in sessions:
                session.seq += 1
                event = GatewayEvent(session.seq, event_type, data, session.shard[0])
                session.events.append(event)
                self.events.append(event)
                seqs.append(event.seq)
                if session.live is not None:
                    await self._send_event(session.live, event)
        self._touch()
        return seqs[0]

    async def send_reconnect(self, *, shard: int | None = None) -> None:
        """op 7: the client must reconnect and RESUME; events until then are replayed.
        `shard` picks the connection when several shards are live."""
        session = self._require_live(shard)
        conn, session.live = session.live, None
        assert conn is not None
        await self._send(conn, {"op": 7, "d": None})

    async def drop_connection(self, code: int | None = None, *, shard: int | None = None) -> None:
        """Cut the live connection: abruptly (no close frame) or with a close code."""
        session = self._require_live(shard)
        conn, session.live = session.live, None
        assert conn is not None
        if code is None:
            transport = conn.request.transport
            if transport is not None:
                transport.abort()
        else:
            await conn.ws.close(code=code, message=b"Dropped by the fake")

    async def invalidate_session(
        self, *, resumable: bool = False, shard: int | None = None
    ) -> None:
        """op 9: unless resumable, the session is gone and the client must IDENTIFY again."""
        session = self._require_live(shard)
        conn, session.live = session.live, None
        assert conn is not None
        if not resumable:
            del self._sessions[session.shard]
        await self._send(conn, {"op": 9, "d": resumable})

    def _require_live(self, shard: int | None) -> _Session:
        live = [
            s
            for s in self._sessions.values()
            if s.live is not None and (shard is None or s.shard[0] == shard)
        ]
        if not live:
            raise RuntimeError("no live gateway connection")
        if len(live) > 1:
            raise RuntimeError("several shards are connected: say which with shard=")
        return live[0]

    async def _echo(self, event_type: str, data: JSON) -> None:
        """What the bot did, sent back to it, to the shard that has the guild, if connected."""
        if not self.echo_bot_messages:
            return
        guild_id = _event_guild(event_type, data)
        sessions = [s for s in self._sessions.values() if s.receives(guild_id)]
        if sessions:
            await self._dispatch_to(sessions, event_type, data)

    async def _echo_message(self, event_type: str, msg: StoredMessage) -> None:
        if msg.ephemeral:
            return
        if event_type == "MESSAGE_DELETE":
            data: JSON = {"id": str(msg.id), "channel_id": str(msg.channel_id)}
            if msg.guild_id is not None:
                data["guild_id"] = str(msg.guild_id)
        else:
            data = self._gateway_message(msg)
        await self._echo(event_type, data)

    async def _gateway(self, request: web.Request) -> web.StreamResponse:
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        conn = _Connection(ws=ws, request=request, query=dict(request.query))
        self._open.append(conn)
        self.connections += 1
        self._touch()
        try:
            await self._send(conn, {"op": 10, "d": {"heartbeat_interval": self.heartbeat_interval}})
            async for frame in ws:
                if frame.type is not WSMsgType.TEXT:
                    continue
                try:
                    message = json.loads(frame.data)
                except ValueError:
                    await ws.close(code=4002, message=b"Error while decoding payload.")
                    break
                await self._on_gateway_message(conn, message)
        finally:
            self._closed(conn)
            self._open.remove(conn)
            self._touch()
        return ws

    @staticmethod
    def _closed(conn: _Connection) -> None:
        conn.closed = True
        if conn.session is not None and conn.session.live is conn:
            conn.session.live = None

    async def _on_gateway_message(self, conn: _Connection, message: JSON) -> None:
        op, data = message.get("op"), message.get("d")
        if op == 1:
            await self._send(conn, {"op": 11})
        elif op == 2:
            await self._identify(conn, data or {})
        elif op == 6:
            await self._resume(conn, data or {})
        elif op == 8:
            await self._send_members(conn, data or {})
        elif op not in (3, 4):
            await conn.ws.close(code=4001, message=b"Unknown opcode.")

    async def _identify(self, conn: _Connection, data: JSON) -> None:
        if data.get("token") != self.token:
            await conn.ws.close(code=4004, message=b"Authentication failed.")
            return
        intents = data.get("intents")
        if intents is not None and intents & PRIVILEGED_INTENTS & ~self.allowed_privileged_intents:
            await conn.ws.close(code=4014, message=b"Disallowed intent(s).")
            return
        shard = _shard_field(data.get("shard", [0, 1]))
        if shard is None:
            await conn.ws.close(code=4010, message=b"Invalid shard.")
            return
        session = _Session(id=uuid.uuid4().hex, intents=intents, shard=shard)
        guilds = [g for g in self.guilds.values() if session.receives(g.id)]
        if self.max_guilds_per_shard is not None and len(guilds) > self.max_guilds_per_shard:
            await conn.ws.close(code=4011, message=b"Sharding required.")
            return
        self.identifies += 1
        self.identify_payloads.append(data)
        self.identified_at.append(time.monotonic())
        self.intents = intents
        ready = self._ready_payload(session)
        if "shard" in data:
            ready["shard"] = list(shard)
        # a new IDENTIFY for a shard replaces its session
        self._sessions[shard] = session
        async with self._gateway_lock:
            conn.session = session
            dispatches = [("READY", ready)]
            dispatches += [("GUILD_CREATE", self._guild_create_payload(g)) for g in guilds]
            for event_type, payload in dispatches:
                session.seq += 1
                event = GatewayEvent(session.seq, event_type, payload, shard[0])
                session.events.append(event)
                self.events.append(event)
                await self._send_event(conn, event)
            if not conn.closed:
                session.live = conn
        self._touch()

    async def _resume(self, conn: _Connection, data: JSON) -> None:
        if data.get("token") != self.token:
            await conn.ws.close(code=4004, message=b"Authentication failed.")
            return
        session = next((s for s in self._sessions.values() if s.id == data.get("session_id")), None)
        if session is None:
            await self._send(conn, {"op": 9, "d": False})
            return
        after = int(data.get("seq") or 0)
        async with self._gateway_lock:
            conn.session = session
            for event in session.events:
                if event.seq > after:
                    await self._send_event(conn, event)
                    self.replayed.append(event)
            # RESUMED takes a number but is not replayed itself
            session.seq += 1
            await self._send(conn, {"op": 0, "t": "RESUMED", "s": session.seq, "d": {}})
            if not conn.closed:
                session.live = conn
            self.resumes += 1
        self._touch()

    async def _send_members(self, conn: _Connection, data: JSON) -> None:
        session = conn.session
        if session is None:
            return
        guild_id = int(data.get("guild_id") or self.guild_id)
        members = [
            self._member(self.bot_user_id, guild_id=guild_id),
            self._member(self.owner_id, guild_id=guild_id),
        ]
        chunk: JSON = {
            "guild_id": str(guild_id),
            "members": members,
            "chunk_index": 0,
            "chunk_count": 1,
            "not_found": [],
        }
        if data.get("nonce") is not None:
            chunk["nonce"] = data["nonce"]
        async with self._gateway_lock:
            session.seq += 1
            event = GatewayEvent(session.seq, "GUILD_MEMBERS_CHUNK", chunk, session.shard[0])
            session.events.append(event)
            self.events.append(event)
            await self._send_event(conn, event)

    async def _send_event(self, conn: _Connection, event: GatewayEvent) -> None:
        intents = conn.session.intents if conn.session else None
        if not _wanted(event.type, event.data, intents):
            return
        data = self._visible(event.type, event.data, intents)
        await self._send(conn, {"op": 0, "t": event.type, "s": event.seq, "d": data})

    def _visible(self, event_type: str, data: JSON, intents: int | None) -> JSON:
        """What a client with these intents receives: message text needs MESSAGE_CONTENT."""
        if event_type not in ("MESSAGE_CREATE", "MESSAGE_UPDATE") or intents is None:
            return data
        if not self.enforce_message_content_intent or intents & INTENT_MESSAGE_CONTENT:
            return data
        if not data.get("guild_id") or not _hides_content(data, self.bot_user_id):
            return data
        return {**data, "content": "", "embeds": [], "attachments": [], "components": []}

    async def _send(self, conn: _Connection, payload: JSON) -> None:
        if conn.closed or conn.ws.closed:
            return
        try:
            await conn.ws.send_str(json.dumps(payload))
        except (ConnectionError, RuntimeError):
            self._closed(conn)

    # HTTP plumbing -------------------------------------------------------------------------------

    def _add_routes(self, app: web.Application) -> None:
        api = [
            ("GET", "/users/@me", self._get_me),
            ("GET", "/users/@me/guilds", self._get_my_guilds),
            ("POST", "/users/@me/channels", self._create_dm),
            ("GET", "/users/{user_id}", self._get_user),
            ("GET", "/oauth2/applications/@me", self._get_application),
            ("GET", "/applications/@me", self._get_application),
            ("GET", "/gateway", self._get_gateway),
            ("GET", "/gateway/bot", self._get_gateway_bot),
            ("GET", "/applications/{app_id}/commands", self._list_commands),
            ("PUT", "/applications/{app_id}/commands", self._put_commands),
            ("POST", "/applications/{app_id}/commands", self._post_command),
            ("GET", "/applications/{app_id}/commands/{command_id}", self._get_command),
            ("PATCH", "/applications/{app_id}/commands/{command_id}", self._patch_command),
            ("DELETE", "/applications/{app_id}/commands/{command_id}", self._delete_command),
            ("GET", "/applications/{app_id}/guilds/{guild_id}/commands", self._list_commands),
            ("PUT", "/applications/{app_id}/guilds/{guild_id}/commands", self._put_commands),
            ("POST", "/applications/{app_id}/guilds/{guild_id}/commands", self._post_command),
            (
                "GET",
                "/applications/{app_id}/guilds/{guild_id}/commands/{command_id}",
                self._get_command,
            ),
            (
                "PATCH",
                "/applications/{app_id}/guilds/{guild_id}/commands/{command_id}",
                self._patch_command,
            ),
            (
                "DELETE",
                "/applications/{app_id}/guilds/{guild_id}/commands/{command_id}",
                self._delete_command,
            ),
            ("GET", "/guilds/{guild_id}", self._get_guild),
            ("GET", "/guilds/{guild_id}/channels", self._get_guild_channels),
            ("GET", "/guilds/{guild_id}/members/{user_id}", self._get_member),
            ("GET", "/channels/{channel_id}", self._get_channel),
            ("GET", "/channels/{channel_id}/messages", self._list_messages),
            ("POST", "/channels/{channel_id}/messages", self._post_message),
            ("GET", "/channels/{channel_id}/messages/{message_id}", self._get_message),
            ("PATCH", "/channels/{channel_id}/messages/{message_id}", self._patch_message),
            ("DELETE", "/channels/{channel_id}/messages/{message_id}", self._delete_message_route),
            ("POST", "/channels/{channel_id}/messages/{message_id}/threads", self._thread_from_msg),
            ("POST", "/channels/{channel_id}/threads", self._thread_without_message),
            (
                "PUT",
                "/channels/{channel_id}/messages/{message_id}/reactions/{emoji}/@me",
                self._add_reaction,
            ),
            (
                "DELETE",
                "/channels/{channel_id}/messages/{message_id}/reactions/{emoji}/@me",
                self._remove_reaction,
            ),
            ("POST", "/channels/{channel_id}/typing", self._typing),
            ("POST", "/interactions/{interaction_id}/{token}/callback", self._callback),
            ("POST", "/webhooks/{app_id}/{token}", self._followup),
            ("GET", "/webhooks/{app_id}/{token}/messages/{message_id}", self._get_webhook_msg),
            ("PATCH", "/webhooks/{app_id}/{token}/messages/{message_id}", self._patch_webhook_msg),
            ("DELETE", "/webhooks/{app_id}/{token}/messages/{message_id}", self._del_webhook_msg),
        ]
        for method, path, handler in api:
            app.router.add_route(method, API_PREFIX + path, handler)
        app.router.add_route("*", API_PREFIX + "/{tail:.*}", self._not_found)
        app.router.add_get("/gateway", self._gateway)
        app.router.add_get("/cdn/attachments/{channel_id}/{attachment_id}/{filename}", self._cdn)
        app.router.add_get("/media/attachments/{channel_id}/{attachment_id}/{filename}", self._cdn)

    @web.middleware
    async def _api_middleware(
        self, request: web.Request, handler: Callable[[web.Request], Any]
    ) -> web.StreamResponse:
        if not request.path.startswith(API_PREFIX + "/"):
            return await handler(request)
        call = DiscordCall(
            method=request.method,
            path=request.path[len(API_PREFIX) :],
            query=dict(request.query),
            headers=CIMultiDict(request.headers),
        )
        request[_CALL] = call
        try:
            await self._until_answered_over_http(call)
            await _read_body(request, call)
            fault = self._take_fault(call)
            if fault is not None:
                response: web.StreamResponse = self._fault_response(fault)
            else:
                self._check_auth(call)
                self._check_uploads(call)
                response = await handler(request)
        except _ApiError as exc:
            response = exc.response()
        except web.HTTPException as exc:
            response = _json_response(
                {"message": f"{exc.status}: {exc.reason}", "code": 0}, exc.status
            )
        except Exception as exc:
            # a flaw in the fake itself: fail fast (a 5xx would make discord.py retry for seconds)
            self.errors.append(exc)
            response = _json_response({"message": f"fake failed: {exc!r}", "code": 0}, 400)
        call.status = response.status
        self.calls.append(call)
        self._touch()
        return response

    def _check_auth(self, call: DiscordCall) -> None:
        if _TOKEN_IN_PATH.fullmatch(call.path):
            return
        if call.headers.get("Authorization") != f"Bot {self.token}":
            raise _ApiError(401, 0, "401: Unauthorized")

    def _check_uploads(self, call: DiscordCall) -> None:
        if any(len(f.data) > self.upload_limit_bytes for f in call.files):
            raise _ApiError(413, 40005, "Request entity too large")

    async def _not_found(self, request: web.Request) -> web.Response:
        raise _ApiError(404, 0, "404: Not Found")

    async def _cdn(self, request: web.Request) -> web.Response:
        self.cdn_downloads.append(request.path)
        try:
            stored = self._attachments[int(request.match_info["attachment_id"])]
        except (KeyError, ValueError):
            return web.Response(status=404, text="Not Found")
        if unquote(request.match_info["filename"]) != stored.filename:
            return web.Response(status=404, text="Not Found")
        return web.Response(body=stored.data, headers={"Content-Type": stored.content_type})

    # REST: identity and application --------------------------------------------------------------

    async def _get_me(self, request: web.Request) -> web.Response:
        return _json_response({**self.bot_user, "verified": True, "mfa_enabled": False})

    async def _get_my_guilds(self, request: web.Request) -> web.Response:
        # partial guilds, as Discord lists them; `permissions` is the bot's, as a string
        guilds = [
            {
                "id": str(guild.id),
                "name": guild.name,
                "icon": None,
                "banner": None,
                "owner": False,
                "permissions": str(_BOT_PERMISSIONS),
                "features": [],
            }
            for guild in self.guilds.values()
        ]
        return _json_response(guilds)

    async def _get_user(self, request: web.Request) -> web.Response:
        user_id = _int_param(request, "user_id")
        if user_id not in self.users:
            raise _unknown("User", 10013)
        return _json_response(self.users[user_id])

    async def _create_dm(self, request: web.Request) -> web.Response:
        body = request[_CALL].json or {}
        channel_id = self.add_dm_channel(int(body.get("recipient_id", 0)))
        return _json_response(self.channels[channel_id])

    async def _get_application(self, request: web.Request) -> web.Response:
        return _json_response(self._app_info_payload())

    async def _get_gateway(self, request: web.Request) -> web.Response:
        return _json_response({"url": self.gateway_url})

    async def _get_gateway_bot(self, request: web.Request) -> web.Response:
        return _json_response(
            {
                "url": self.gateway_url,
                "shards": self.recommended_shards,
                "session_start_limit": {
                    "total": 1000,
                    "remaining": 1000,
                    "reset_after": 0,
                    "max_concurrency": self.max_concurrency,
                },
            }
        )

    # REST: application commands ------------------------------------------------------------------

    def _command_scope(self, request: web.Request) -> int | None:
        if request.match_info["app_id"] != str(self.application_id):
            raise _unknown("Application", 10002)
        if "guild_id" not in request.match_info:
            return None
        return self._require_guild(request).id

    def _stored_command(self, scope: int | None, body: JSON, existing: JSON | None) -> JSON:
        if not body.get("name"):
            raise _form_error("name", "BASE_TYPE_REQUIRED", "This field is required")
        command: JSON = {
            "type": 1,
            "description": "",
            "options": [],
            "default_member_permissions": None,
            "dm_permission": True,
            "nsfw": False,
            "contexts": None,
            "integration_types": [0],
            "name_localizations": None,
            "description_localizations": None,
            **body,
            "id": existing["id"] if existing else str(snowflake()),
            "application_id": str(self.application_id),
            "version": str(snowflake()),
        }
        if scope is not None:
            command["guild_id"] = str(scope)
        return command

    def _same_command(self, scope: int | None, body: JSON) -> JSON | None:
        for command in self.commands.get(scope, []):
            if command["name"] == body.get("name") and command["type"] == body.get("type", 1):
                return command
        return None

    async def _list_commands(self, request: web.Request) -> web.Response:
        return _json_response(self.commands.get(self._command_scope(request), []))

    async def _put_commands(self, request: web.Request) -> web.Response:
        scope = self._command_scope(request)
        body = request[_CALL].json or []
        commands = [self._stored_command(scope, b, self._same_command(scope, b)) for b in body]
        self.commands[scope] = commands
        return _json_response(commands)

    async def _post_command(self, request: web.Request) -> web.Response:
        scope = self._command_scope(request)
        body = request[_CALL].json or {}
        existing = self._same_command(scope, body)
        command = self._stored_command(scope, body, existing)
        commands = [c for c in self.commands.get(scope, []) if c is not existing]
        self.commands[scope] = [*commands, command]
        return _json_response(command, 200 if existing else 201)

    def _command_by_id(self, request: web.Request) -> tuple[int | None, JSON]:
        scope = self._command_scope(request)
        for command in self.commands.get(scope, []):
            if command["id"] == request.match_info["command_id"]:
                return scope, command
        raise _unknown("application command", 10063)

    async def _get_command(self, request: web.Request) -> web.Response:
        return _json_response(self._command_by_id(request)[1])

    async def _patch_command(self, request: web.Request) -> web.Response:
        _, command = self._command_by_id(request)
        command.update(request[_CALL].json or {})
        return _json_response(command)

    async def _delete_command(self, request: web.Request) -> web.Response:
        scope, command = self._command_by_id(request)
        self.commands[scope] = [c for c in self.commands[scope] if c is not command]
        return web.Response(status=204)

    # REST: guild and channels --------------------------------------------------------------------

    def _require_guild(self, request: web.Request) -> FakeGuild:
        guild = self.guilds.get(_int_param(request, "guild_id"))
        if guild is None:
            raise _unknown("Guild", 10004)
        return guild

    async def _get_guild(self, request: web.Request) -> web.Response:
        return _json_response(self._guild_rest_payload(self._require_guild(request)))

    async def _get_guild_channels(self, request: web.Request) -> web.Response:
        guild = self._require_guild(request)
        channels = [
            c
            for c in self.channels.values()
            if c.get("guild_id") == str(guild.id) and c["type"] == 0
        ]
        return _json_response(channels)

    async def _get_member(self, request: web.Request) -> web.Response:
        guild = self._require_guild(request)
        user_id = _int_param(request, "user_id")
        if user_id not in self.users:
            raise _unknown("Member", 10007)
        return _json_response(self._member(user_id, guild_id=guild.id))

    async def _get_channel(self, request: web.Request) -> web.Response:
        return _json_response(self._channel(_int_param(request, "channel_id")))

    async def _list_messages(self, request: web.Request) -> web.Response:
        channel_id = _int_param(request, "channel_id")
        self._channel(channel_id)
        query = request.query
        limit = min(int(query.get("limit", 50)), 100)
        # ephemeral messages belong to one user's view, never to the channel's history
        found = [m for m in reversed(self.messages.get(channel_id, [])) if not m.ephemeral]
        if "before" in query:
            found = [m for m in found if m.id < int(query["before"])]
        if "after" in query:
            found = [m for m in found if m.id > int(query["after"])][-limit:]
        payloads = [self._rest_message(m) for m in found[:limit]]
        return _json_response(payloads)

    def _rest_message(self, msg: StoredMessage) -> JSON:
        payload = self._message_payload(msg)
        if msg.guild_id is None:
            return payload
        return self._visible(
            "MESSAGE_CREATE", {**payload, "guild_id": str(msg.guild_id)}, self.intents
        )

    async def _post_message(self, request: web.Request) -> web.Response:
        call: DiscordCall = request[_CALL]
        channel_id = _int_param(request, "channel_id")
        self._check_permissions(channel_id, call.json or {}, call.files, webhook=False)
        msg = self._new_message(channel_id, call.json or {}, call.files)
        await self._echo_message("MESSAGE_CREATE", msg)
        return _json_response(self._message_payload(msg))

    async def _get_message(self, request: web.Request) -> web.Response:
        msg = self._message_in(_int_param(request, "channel_id"), _int_param(request, "message_id"))
        return _json_response(self._rest_message(msg))

    async def _patch_message(self, request: web.Request) -> web.Response:
        call: DiscordCall = request[_CALL]
        msg = self._message_in(_int_param(request, "channel_id"), _int_param(request, "message_id"))
        if msg.author_id != self.bot_user_id:
            raise _ApiError(403, 50005, "Cannot edit a message authored by another user")
        self._check_permissions(msg.channel_id, call.json or {}, call.files, webhook=False)
        self._edit_message(msg, call.json or {}, call.files)
        await self._echo_message("MESSAGE_UPDATE", msg)
        return _json_response(self._message_payload(msg))

    async def _delete_message_route(self, request: web.Request) -> web.Response:
        msg = self._message_in(_int_param(request, "channel_id"), _int_param(request, "message_id"))
        self._delete_message(msg)
        await self._echo_message("MESSAGE_DELETE", msg)
        return web.Response(status=204)

    async def _thread_from_msg(self, request: web.Request) -> web.Response:
        channel_id = _int_param(request, "channel_id")
        parent = self._channel(channel_id)
        msg = self._message_in(channel_id, _int_param(request, "message_id"))
        if parent["type"] not in (0, 5):
            raise _ApiError(400, 50024, "Cannot execute action on this channel type")
        if msg.thread is not None:
            raise _ApiError(400, 160004, "A thread has already been created for this message")
        body = request[_CALL].json or {}
        # a thread started from a message takes the message's id
        thread = self._new_thread(parent, str(body.get("name") or ""), msg.id, {**body, "type": 11})
        msg.thread = thread
        await self._echo("THREAD_CREATE", {**thread, "newly_created": True})
        return _json_response(thread, 201)

    async def _thread_without_message(self, request: web.Request) -> web.Response:
        channel_id = _int_param(request, "channel_id")
        parent = self._channel(channel_id)
        if parent["type"] not in (0, 5):
            raise _ApiError(400, 50024, "Cannot execute action on this channel type")
        body = request[_CALL].json or {}
        thread = self._new_thread(parent, str(body.get("name") or ""), snowflake(), body)
        await self._echo("THREAD_CREATE", {**thread, "newly_created": True})
        return _json_response(thread, 201)

    async def _add_reaction(self, request: web.Request) -> web.Response:
        msg = self._message_in(_int_param(request, "channel_id"), _int_param(request, "message_id"))
        emoji = request.match_info["emoji"]
        if emoji not in msg.reactions:
            msg.reactions.append(emoji)
        return web.Response(status=204)

    async def _remove_reaction(self, request: web.Request) -> web.Response:
        msg = self._message_in(_int_param(request, "channel_id"), _int_param(request, "message_id"))
        emoji = request.match_info["emoji"]
        if emoji in msg.reactions:
            msg.reactions.remove(emoji)
        return web.Response(status=204)

    async def _typing(self, request: web.Request) -> web.Response:
        self._channel(_int_param(request, "channel_id"))
        return web.Response(status=204)

    # REST: interactions and their webhooks -------------------------------------------------------

    async def _callback(self, request: web.Request) -> web.Response:
        call: DiscordCall = request[_CALL]
        inter = self._interactions.get(_int_param(request, "interaction_id"))
        if inter is None or inter.token != request.match_info["token"]:
            raise _ApiError(404, 10062, "Unknown interaction")
        elapsed = time.monotonic() - (inter.dispatched_at or inter.created_at)
        call.since_dispatch = elapsed
        if inter.response_type is not None or inter.answering_over_http:
            raise _ApiError(400, 40060, "Interaction has already been acknowledged.")
        if elapsed > self.interaction_ttl:
            raise _ApiError(404, 10062, "Unknown interaction")
        resource, created = await self._respond(inter, call.json or {}, call.files)
        if request.query.get("with_response", "").lower() not in ("1", "true"):
            return web.Response(status=204)
        interaction: JSON = {"id": str(inter.id), "type": inter.type}
        if created is not None:
            interaction.update(
                response_message_id=str(created.id),
                response_message_loading=created.loading,
                response_message_ephemeral=created.ephemeral,
            )
        return _json_response({"interaction": interaction, "resource": resource})

    async def _respond(
        self, inter: _Interaction, body: JSON, files: Sequence[UploadedFile]
    ) -> tuple[JSON, StoredMessage | None]:
        """An interaction's first answer (from the callback or an HTTP response), applied."""
        response_type = body.get("type")
        data = body.get("data") or {}
        resource: JSON = {"type": response_type}
        created: StoredMessage | None = None
        if response_type in (4, 5):
            if response_type == 4:
                created = self._new_message(inter.channel_id, data, files)
            else:
                flags = FLAG_LOADING | (int(data.get("flags") or 0) & FLAG_EPHEMERAL)
                created = StoredMessage(
                    id=snowflake(),
                    channel_id=inter.channel_id,
                    guild_id=inter.guild_id,
                    author=self.bot_user,
                    flags=flags,
                )
                self._store_message(created)
            self._interaction_message(inter, created)
            inter.original_message_id = created.id
            resource["message"] = self._message_payload(created)
        elif response_type in (6, 7):
            if inter.type not in (3, 5) or inter.message_id is None:
                raise _form_error("type", "INTERACTION_RESPONSE_TYPE_INVALID", "Invalid type")
            inter.original_message_id = inter.message_id
            inter.message_ids.add(inter.message_id)
            if response_type == 7:
                created = self._message_in(inter.channel_id, inter.message_id)
                self._edit_message(created, data, files)
                resource["message"] = self._message_payload(created)
        elif response_type == 9:
            if inter.type == 5:
                raise _form_error("type", "INTERACTION_RESPONSE_TYPE_INVALID", "Invalid type")
            for name in ("custom_id", "title", "components"):
                if not data.get(name):
                    raise _form_error(
                        f"data.{name}", "BASE_TYPE_REQUIRED", "This field is required"
                    )
            _check_custom_ids([data])
            self._modals[data["custom_id"]] = data
        elif response_type not in (1, 8):
            raise _form_error("type", "BASE_TYPE_CHOICES", "Value must be one of 1, 4-9.")
        inter.response_type = response_type
        if created is not None:
            event = "MESSAGE_UPDATE" if response_type == 7 else "MESSAGE_CREATE"
            await self._echo_message(event, created)
        self._touch()
        return resource, created

    async def _followup(self, request: web.Request) -> web.Response:
        call: DiscordCall = request[_CALL]
        inter = self._webhook_interaction(request)
        self._check_permissions(inter.channel_id, call.json or {}, call.files, webhook=True)
        msg = self._new_message(inter.channel_id, call.json or {}, call.files)
        self._interaction_message(inter, msg)
        await self._echo_message("MESSAGE_CREATE", msg)
        if request.query.get("wait", "").lower() not in ("1", "true"):
            return web.Response(status=204)
        return _json_response(self._message_payload(msg))

    async def _get_webhook_msg(self, request: web.Request) -> web.Response:
        inter = self._webhook_interaction(request)
        msg = self._webhook_message(inter, request.match_info["message_id"])
        return _json_response(self._message_payload(msg))

    async def _patch_webhook_msg(self, request: web.Request) -> web.Response:
        call: DiscordCall = request[_CALL]
        inter = self._webhook_interaction(request)
        msg = self._webhook_message(inter, request.match_info["message_id"])
        self._check_permissions(msg.channel_id, call.json or {}, call.files, webhook=True)
        self._edit_message(msg, call.json or {}, call.files)
        await self._echo_message("MESSAGE_UPDATE", msg)
        return _json_response(self._message_payload(msg))

    async def _del_webhook_msg(self, request: web.Request) -> web.Response:
        inter = self._webhook_interaction(request)
        msg = self._webhook_message(inter, request.match_info["message_id"])
        self._delete_message(msg)
        await self._echo_message("MESSAGE_DELETE", msg)
        return web.Response(status=204)


# pure helpers ------------------------------------------------------------------------------------


async def _read_body(request: web.Request, call: DiscordCall) -> None:
    if request.content_type.startswith("multipart/"):
        reader = await request.multipart()
        while (part := await reader.next()) is not None:
            if not isinstance(part, BodyPartReader):
                continue
            data = bytes(await part.read(decode=False))
            if part.name == "payload_json":
                call.json = _parse_json(data)
            elif part.filename is not None:
                content_type = part.headers.get("Content-Type", "application/octet-stream")
                call.files.append(UploadedFile(part.name or "", part.filename, content_type, data))
        return
    raw = await request.read()
    if raw:
        call.json = _parse_json(raw)


def _parse_json(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        raise _ApiError(400, 50109, "The request body contains invalid JSON.") from None


def _int_param(request: web.Request, name: str) -> int:
    try:
        return int(request.match_info[name])
    except (KeyError, ValueError):
        raise _ApiError(404, 0, "404: Not Found") from None


def _file_index(field_name: str, position: int) -> int:
    match = _FILE_FIELD.fullmatch(field_name)
    return int(match.group(1)) if match else position


def _sniff(data: bytes, filename: str, declared: str | None) -> tuple[str, int | None, int | None]:
    """Content type and image size the way Discord reports them (it ignores octet-stream)."""
    try:
        from PIL import Image

        with Image.open(io.BytesIO(data)) as image:
            mime = Image.MIME.get(image.format or "")
            width, height = image.size
            return mime or declared or "application/octet-stream", width, height
    except Exception:
        pass
    if declared and declared != "application/octet-stream":
        return declared, None, None
    guessed, _ = mimetypes.guess_type(filename)
    return guessed or "application/octet-stream", None, None


def _normalise_embed(embed: JSON) -> JSON:
    return {"type": "rich", **embed}


def _resolve_embed_attachments(msg: StoredMessage) -> None:
    """attachment://name in an embed points at the message's own upload."""
    by_name = {a.filename: a for a in msg.attachments}
    for embed in msg.embeds:
        for key in ("image", "thumbnail"):
            media = embed.get(key)
            if not isinstance(media, dict) or not str(media.get("url", "")).startswith(
                "attachment://"
            ):
                continue
            stored = by_name.get(media["url"].removeprefix("attachment://"))
            if stored is not None:
                media.update(
                    url=stored.url,
                    proxy_url=stored.proxy_url,
                    width=stored.width,
                    height=stored.height,
                    content_type=stored.content_type,
                )


def _validate_body(body: JSON, files: Sequence[UploadedFile]) -> None:
    content = body.get("content")
    if content is not None and len(str(content)) > MAX_CONTENT_CHARS:
        raise _form_error(
            "content", "BASE_TYPE_MAX_LENGTH", f"Must be {MAX_CONTENT_CHARS} or fewer in length."
        )
    if len(files) > MAX_FILES:
        raise _form_error("files", "BASE_TYPE_MAX_LENGTH", f"Must be {MAX_FILES} or fewer.")
    if len(body.get("embeds") or []) > MAX_EMBEDS:
        raise _form_error("embeds", "BASE_TYPE_MAX_LENGTH", f"Must be {MAX_EMBEDS} or fewer.")
    _check_custom_ids(body.get("components") or [])


def _check_custom_ids(components: Iterable[JSON]) -> None:
    for component in _walk_components(components):
        custom_id = component.get("custom_id")
        if custom_id is not None and len(str(custom_id)) > MAX_CUSTOM_ID_CHARS:
            raise _form_error(
                "components",
                "BASE_TYPE_MAX_LENGTH",
                f"custom_id must be {MAX_CUSTOM_ID_CHARS} or fewer in length.",
            )


def _walk_components(components: Iterable[JSON]) -> Iterable[JSON]:
    for component in components:
        if not isinstance(component, dict):
            continue
        yield component
        yield from _walk_components(component.get("components") or [])
        for key in ("component", "accessory"):
            if isinstance(component.get(key), dict):
                yield from _walk_components([component[key]])


def _find_component(components: Iterable[JSON], custom_id: str) -> JSON | None:
    return next((c for c in _walk_components(components) if c.get("custom_id") == custom_id), None)


def _ensure_not_empty(msg: StoredMessage) -> None:
    if not (msg.content or msg.embeds or msg.attachments or msg.components or msg.loading):
        raise _ApiError(400, 50006, "Cannot send an empty message")


def _event_guild(event_type: str, data: JSON) -> int | None:
    """The guild an event belongs to (GUILD_CREATE and friends carry it as their own id)."""
    guild_id = data.get("guild_id")
    if guild_id is None and event_type in ("GUILD_CREATE", "GUILD_UPDATE", "GUILD_DELETE"):
        guild_id = data.get("id")
    return int(guild_id) if guild_id is not None else None


def _shard_field(value: Any) -> tuple[int, int] | None:
    """IDENTIFY's `shard: [id, count]`, or None when Discord would refuse it (4010)."""
    if not isinstance(value, list | tuple) or len(value) != 2:
        return None
    shard_id, count = value
    if not all(isinstance(n, int) and not isinstance(n, bool) for n in value):
        return None
    if count < 1 or not 0 <= shard_id < count:
        return None
    return shard_id, count


def _wanted(event_type: str, data: JSON, intents: int | None) -> bool:
    """Whether a client with these intents subscribed to this event."""
    if intents is None:
        return True
    if event_type.startswith("MESSAGE_") and not event_type.startswith("MESSAGE_REACTION"):
        needed = INTENT_GUILD_MESSAGES if data.get("guild_id") else INTENT_DIRECT_MESSAGES
    elif event_type.startswith(("THREAD_", "CHANNEL_")):
        needed = INTENT_GUILDS
    else:
        return True
    return bool(intents & needed)


def _hides_content(data: JSON, bot_user_id: int) -> bool:
    author = data.get("author") or {}
    if str(author.get("id")) == str(bot_user_id):
        return False
    return not any(str(m.get("id")) == str(bot_user_id) for m in data.get("mentions") or [])


__all__ = [
    "API_PREFIX",
    "DEFAULT_UPLOAD_LIMIT",
    "DiscordCall",
    "FakeDiscord",
    "FakeGuild",
    "GatewayEvent",
    "StoredAttachment",
    "StoredMessage",
    "UploadedFile",
    "guild_id_on_shard",
    "shard_of",
    "snowflake",
]
