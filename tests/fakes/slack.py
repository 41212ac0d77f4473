"""A fake Slack on 127.0.0.1: Web API, file upload and hosting, Socket Mode, and event senders.

The real slack_sdk `AsyncWebClient(base_url=fake.api_url)` and slack_bolt (HTTP mode and
`AsyncSocketModeHandler`) run unmodified against it. Every Web API call is recorded in
`calls`; the visible state of channels (messages, uploads, ephemerals, views, reactions) is kept
so tests can assert what a user would see. Waiting helpers are event-based: every state change
wakes the waiters.

Approximations worth knowing: file sharing after `files.completeUploadExternal` is immediate
(real Slack shares asynchronously), any user id is known to `users.info`, and the fake never
sends events on its own; tests send them with `send_envelope` or `post_to_app`.

Many workspaces: `add_workspace` makes one the app can be installed in through OAuth v2
(`GET /oauth/v2/authorize` stands for Slack's consent page and redirects back with a code;
`oauth.v2.access` exchanges the code, or with `grant_type=refresh_token` a refresh token,
for that workspace's own bot token). Each workspace has its own bot user and bot id, and
every Web API call is answered as the workspace its token belongs to; `uninstall` revokes
its tokens. The payload builders take `team_id=` to come from one of them.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import io
import itertools
import json
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import quote, urlencode, urlsplit, urlunsplit

import aiohttp
from aiohttp import WSMsgType, web

_T = TypeVar("_T")

APP_ID = "A0001"
CLIENT_ID = "1111.2222"
CLIENT_SECRET = "fake-client-secret-0123456789"
TEAM_DOMAIN = "fake-team"
BOT_SCOPES = (
    "commands,chat:write,files:write,files:read,app_mentions:read,channels:history,"
    "groups:history,im:history,mpim:history,reactions:write,users:read"
)
# Slash command response URLs accept a handful of posts; past that Slack refuses them.
RESPONSE_URL_MAX_POSTS = 5
TRIGGER_ID_LIFETIME_S = 3.0
LOGIN_PAGE = (
    "<!DOCTYPE html><html><head><title>Slack</title></head>"
    "<body><h1>Sign in to your workspace</h1></body></html>"
)


@dataclass(frozen=True)
class SlackCall:
    """One Web API call as the fake received and answered it.

    `params` merges query, form and JSON body as sent (form values stay strings, so form-encoded
    `blocks` are JSON text); the token is kept apart in `token`; `time` is `time.monotonic()`.
    """

    method: str
    params: dict[str, Any]
    headers: dict[str, str]
    token: str | None
    http_method: str
    time: float
    status: int
    response: dict[str, Any]


@dataclass(frozen=True)
class SlackUpload:
    """A file that went through all three steps of the external upload."""

    id: str
    filename: str
    title: str
    data: bytes
    mimetype: str
    channel: str | None
    thread_ts: str | None
    initial_comment: str | None
    message_ts: str | None
    alt_txt: str | None


@dataclass(frozen=True)
class SlackDownload:
    """One GET of a hosted file; `authorized` says whether a live bot token came with it,
    `token` which one."""

    file_id: str
    url: str
    authorized: bool
    time: float
    token: str | None = None


# a rotated token lives 12 hours, as Slack's do
ROTATED_EXPIRES_IN = 43_200


@dataclass
class FakeWorkspace:
    """A workspace the app can be installed in through OAuth, with its own bot.

    `rotation` turns token rotation on: the first token expires in `expires_in` seconds,
    each refreshed one in ROTATED_EXPIRES_IN; a refresh token works once. `tokens` lists
    every access token issued, oldest first; `token` is the newest.
    """

    team_id: str
    name: str
    enterprise_id: str | None
    bot_user_id: str
    bot_id: str
    rotation: bool = False
    expires_in: int = ROTATED_EXPIRES_IN
    installer: str = "U0ADMIN"
    scopes: str = ""  # granted at the last install: what the consent page was asked for
    installed: bool = False
    tokens: list[str] = field(default_factory=list)
    refresh_token: str | None = None
    expires_at: dict[str, float] = field(default_factory=dict)  # token -> time.time()

    @property
    def token(self) -> str | None:
        return self.tokens[-1] if self.tokens else None


@dataclass
class _Fault:
    status: int
    retry_after: int
    error: str
    remaining: int


@dataclass
class _PendingUpload:
    id: str
    filename: str
    length: int
    alt_txt: str | None
    data: bytes | None = None


@dataclass
class _HostedFile:
    id: str
    data: bytes
    info: dict[str, Any]


@dataclass
class _ResponseUrl:
    channel: str
    user: str
    posts: int = 0


class _SlackError(Exception):
    """Ends a Web API method with `{"ok": false, "error": error}`."""

    def __init__(self, error: str) -> None:
        super().__init__(error)
        self.error = error


class FakeSlack:
    """Slack's Web API, file hosts, Socket Mode server and event delivery, in one local server."""

    def __init__(
        self,
        *,
        bot_token: str = "xoxb-test-token",
        app_token: str = "xapp-test-token",
        team_id: str = "T0001",
        bot_user_id: str = "U0BOT",
        bot_id: str = "B0BOT",
    ) -> None:
        self.bot_token = bot_token
        self.app_token = app_token
        self.team_id = team_id
        self.bot_user_id = bot_user_id
        self.bot_id = bot_id
        self.app_id = APP_ID
        self.client_id = CLIENT_ID
        self.client_secret = CLIENT_SECRET
        # what the x-oauth-scopes header of every Web API answer says the token was granted
        self.scopes = BOT_SCOPES
        # many workspaces: those the app can be installed in, and the app's Redirect URL
        # (OAuth & Permissions), where the consent page sends the installer back
        self.workspaces: dict[str, FakeWorkspace] = {}
        self.redirect_url: str | None = None
        self.consents: list[dict[str, str]] = []  # what each visit of the consent page asked
        self._codes: dict[str, str] = {}  # code -> team id, each good once
        self._token_owners: dict[str, FakeWorkspace] = {}
        self._caller: FakeWorkspace | None = None  # whose token the current call carries

        self.calls: list[SlackCall] = []
        self.messages: dict[tuple[str, str], dict[str, Any]] = {}
        self.deleted_messages: list[dict[str, Any]] = []
        self.ephemerals: list[dict[str, Any]] = []
        self.uploads: list[SlackUpload] = []
        self.views: dict[str, dict[str, Any]] = {}
        # each user's Home tab, as views.publish last set it
        self.home_views: dict[str, dict[str, Any]] = {}
        self.reactions: list[dict[str, Any]] = []
        self.downloads: list[SlackDownload] = []
        self.response_url_posts: list[dict[str, Any]] = []
        self.users: dict[str, dict[str, Any]] = {}
        self.socket_envelopes: list[dict[str, Any]] = []
        self.socket_acks: list[dict[str, Any]] = []
        self.socket_connections = 0
        self.socket_pings = 0

        self._faults: dict[str, list[_Fault]] = {}
        self._pending_uploads: dict[str, _PendingUpload] = {}
        self._files: dict[str, _HostedFile] = {}
        self._response_urls: dict[str, _ResponseUrl] = {}
        self._trigger_ids: dict[str, float] = {}
        self._used_trigger_ids: set[str] = set()
        self._tickets: set[str] = set()
        self._sockets: list[web.WebSocketResponse] = []
        self._ids = itertools.count(1)
        self._ts_micros = itertools.count(1_700_000_000_000_100, 100)
        self._changed = asyncio.Event()

        self._runner: web.AppRunner | None = None
        self._session: aiohttp.ClientSession | None = None
        self._base = ""
        self._methods: dict[str, Callable[[dict[str, Any]], dict[str, Any]]] = {
            "auth.test": self._auth_test,
            "chat.postMessage": self._chat_post_message,
            "chat.update": self._chat_update,
            "chat.delete": self._chat_delete,
            "chat.postEphemeral": self._chat_post_ephemeral,
            "chat.getPermalink": self._chat_get_permalink,
            "files.getUploadURLExternal": self._files_get_upload_url_external,
            "files.completeUploadExternal": self._files_complete_upload_external,
            "files.info": self._files_info,
            "views.open": self._views_open,
            "views.publish": self._views_publish,
            "views.update": self._views_update,
            "reactions.add": self._reactions_add,
            "users.info": self._users_info,
            "conversations.info": self._conversations_info,
            "apps.connections.open": self._apps_connections_open,
        }

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> None:
        app = web.Application(client_max_size=200 * 1024 * 1024)
        app.router.add_route("*", "/api/{method}", self._handle_api)
        app.router.add_post("/upload/v1/{file_id}", self._handle_upload)
        app.router.add_get("/files-pri/{key}/{tail:.*}", self._handle_file_download)
        # slash commands answer to /commands/..., buttons and shortcuts to /actions/...
        app.router.add_post("/commands/{team}/{hook}/{secret}", self._handle_response_url)
        app.router.add_post("/actions/{team}/{hook}/{secret}", self._handle_response_url)
        app.router.add_get("/socket-mode", self._handle_socket)
        app.router.add_get("/oauth/v2/authorize", self._handle_consent)
        self._runner = web.AppRunner(app, shutdown_timeout=1.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self._base = f"http://127.0.0.1:{port}"
        self._session = aiohttp.ClientSession()

    async def stop(self) -> None:
        for ws in list(self._sockets):
            await ws.close(code=aiohttp.WSCloseCode.GOING_AWAY, message=b"server shutdown")
        if self._session is not None:
            await self._session.close()
            self._session = None
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeSlack:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    @property
    def base_url(self) -> str:
        if not self._base:
            raise RuntimeError("FakeSlack is not started")
        return self._base

    @property
    def api_url(self) -> str:
        return f"{self.base_url}/api/"

    @property
    def file_host_url(self) -> str:
        return f"{self.base_url}/files-pri/"

    # ------------------------------------------------------------------ queries and waiting

    def calls_to(self, method: str) -> list[SlackCall]:
        return [c for c in self.calls if c.method == method]

    def thread_messages(self, channel: str, thread_ts: str) -> list[dict[str, Any]]:
        """The parent and its replies as they are now, oldest first."""
        found = [
            m
            for (ch, ts), m in self.messages.items()
            if ch == channel and (ts == thread_ts or m.get("thread_ts") == thread_ts)
        ]
        return sorted(found, key=lambda m: _ts_key(m["ts"]))

    # The waiting helpers take `timeout=` because tests read better with it than with a
    # surrounding `asyncio.timeout` block.
    async def wait_until(
        self,
        predicate: Callable[[], _T],
        *,
        timeout: float = 10.0,
        what: str = "a condition",
    ) -> _T:
        """Returns the predicate's first truthy value, re-checked whenever the state changes."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            result = predicate()
            if result:
                return result
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError(f"FakeSlack: timed out after {timeout}s waiting for {what}")
            changed = self._changed
            try:
                await asyncio.wait_for(changed.wait(), remaining)
            except TimeoutError:
                pass

    async def wait_for_call(
        self,
        method: str,
        *,
        count: int = 1,
        timeout: float = 10.0,
        predicate: Callable[[SlackCall], bool] | None = None,
    ) -> list[SlackCall]:
        """Waits until `count` answered calls to `method` match `predicate`; returns them all."""

        def matching() -> list[SlackCall]:
            found = [c for c in self.calls_to(method) if predicate is None or predicate(c)]
            return found if len(found) >= count else []

        return await self.wait_until(matching, timeout=timeout, what=f"{count} x {method}")

    async def wait_for_ack(
        self,
        envelope_id: str,
        timeout: float = 5.0,
    ) -> dict[str, Any]:
        def ack() -> dict[str, Any] | None:
            return next((a for a in self.socket_acks if a.get("envelope_id") == envelope_id), None)

        return await self.wait_until(ack, timeout=timeout, what=f"the ack of {envelope_id}")

    async def wait_for_socket_connections(
        self,
        count: int,
        timeout: float = 5.0,
    ) -> int:
        """Waits until `count` Socket Mode connections have been made in total."""
        return await self.wait_until(
            lambda: self.socket_connections if self.socket_connections >= count else 0,
            timeout=timeout,
            what=f"{count} socket connections",
        )

    def _notify(self) -> None:
        self._changed.set()
        self._changed = asyncio.Event()

    # ------------------------------------------------------------------ fault injection

    def fail_next(
        self,
        method: str,
        *,
        status: int | None = None,
        retry_after: int = 1,
        error: str | None = None,
        times: int = 1,
    ) -> None:
        """Makes the next `times` calls to `method` fail.

        With no status and no error: HTTP 429, `Retry-After`, `ratelimited`. With only an error:
        HTTP 200 `{"ok": false, "error": error}`. With a status such as 500: that status.
        """
        if status is None:
            status = 429 if error is None else 200
        if error is None:
            error = {429: "ratelimited", 200: "fatal_error"}.get(status, "internal_error")
        fault = _Fault(status=status, retry_after=retry_after, error=error, remaining=times)
        self._faults.setdefault(method, []).append(fault)

    def _take_fault(self, method: str) -> _Fault | None:
        queue = self._faults.get(method)
        if not queue:
            return None
        fault = queue[0]
        fault.remaining -= 1
        if fault.remaining <= 0:
            queue.pop(0)
        return fault

    # ------------------------------------------------------------------ ids

    def _next_ts(self) -> str:
        micros = next(self._ts_micros)
        return f"{micros // 1_000_000}.{micros % 1_000_000:06d}"

    def _next_id(self, prefix: str) -> str:
        return f"{prefix}{next(self._ids):010d}"

    def _new_trigger_id(self) -> str:
        trigger_id = f"{next(self._ids)}.{self.team_id[1:]}.{secrets.token_hex(16)}"
        self._trigger_ids[trigger_id] = time.monotonic()
        return trigger_id

    def _new_response_url(
        self, *, channel: str, user: str, kind: str = "commands", team_id: str | None = None
    ) -> str:
        hook = str(next(self._ids))
        self._response_urls[hook] = _ResponseUrl(channel=channel, user=user)
        team = team_id or self.team_id
        return f"{self.base_url}/{kind}/{team}/{hook}/{secrets.token_hex(12)}"

    # ------------------------------------------------------------------ Web API

    async def _handle_api(self, request: web.Request) -> web.Response:
        method = request.match_info["method"]
        try:
            params = await _read_params(request)
        except ValueError:
            params, invalid_json = dict(request.query), True
        else:
            invalid_json = False
        token = _bearer(request.headers.get("Authorization")) or params.get("token")
        params.pop("token", None)
        if invalid_json:
            status, body, headers = 200, {"ok": False, "error": "invalid_json"}, {}
        elif method == "oauth.v2.access":
            status, body, headers = 200, self._oauth_v2_access(params, request.headers), {}
        else:
            status, body, headers = self._answer(method, params, token)
        call = SlackCall(
            method=method,
            params=params,
            headers=dict(request.headers),
            token=token,
            http_method=request.method,
            time=time.monotonic(),
            status=status,
            response=body,
        )
        self.calls.append(call)
        self._notify()
        owner = self._token_owners.get(token or "")
        headers["X-OAuth-Scopes"] = owner.scopes if owner else self.scopes
        return web.json_response(body, status=status, headers=headers)

    def _answer(
        self, method: str, params: dict[str, Any], token: str | None
    ) -> tuple[int, dict[str, Any], dict[str, str]]:
        handler = self._methods.get(method)
        if handler is None:
            return 200, {"ok": False, "error": "unknown_method"}, {}
        auth_error = self._check_token(method, token)
        if auth_error is not None:
            return 200, {"ok": False, "error": auth_error}, {}
        fault = self._take_fault(method)
        if fault is not None:
            headers = {"Retry-After": str(fault.retry_after)} if fault.status == 429 else {}
            return fault.status, {"ok": False, "error": fault.error}, headers
        # the call is answered as the workspace its token belongs to
        self._caller = self._token_owners.get(token or "")
        try:
            return 200, {"ok": True, **handler(params)}, {}
        except _SlackError as e:
            return 200, {"ok": False, "error": e.error}, {}
        finally:
            self._caller = None

    def _check_token(self, method: str, token: str | None) -> str | None:
        expected = self.app_token if method == "apps.connections.open" else self.bot_token
        if not token:
            return "not_authed"
        if token == expected:
            return None
        if token in (self.app_token, self.bot_token):
            return "not_allowed_token_type"
        owner = self._token_owners.get(token)
        if owner is None:
            return "invalid_auth"
        if method == "apps.connections.open":
            return "not_allowed_token_type"
        return self._token_problem(owner, token)

    def _token_problem(self, owner: FakeWorkspace, token: str) -> str | None:
        """Why a workspace's token is refused now, or None when it is good."""
        if not owner.installed:
            return "token_revoked"
        expires = owner.expires_at.get(token)
        if expires is not None and expires <= time.time():
            return "token_expired"
        return None

    @property
    def _me(self) -> tuple[str, str, str]:
        """(team id, bot user id, bot id) of the workspace the current call comes from."""
        if self._caller is not None:
            return self._caller.team_id, self._caller.bot_user_id, self._caller.bot_id
        return self.team_id, self.bot_user_id, self.bot_id

    def _auth_test(self, p: dict[str, Any]) -> dict[str, Any]:
        team_id, bot_user_id, bot_id = self._me
        caller = self._caller
        return {
            "url": f"https://{TEAM_DOMAIN}.slack.com/",
            "team": caller.name if caller else "Fake Team",
            "user": "imagebot",
            "team_id": team_id,
            "user_id": bot_user_id,
            "bot_id": bot_id,
            "enterprise_id": caller.enterprise_id if caller else None,
            "is_enterprise_install": False,
        }

    # ------------------------------------------------------------------ many workspaces

    def add_workspace(
        self,
        team_id: str,
        *,
        name: str | None = None,
        enterprise_id: str | None = None,
        rotation: bool = False,
        expires_in: int = ROTATED_EXPIRES_IN,
        installer: str = "U0ADMIN",
    ) -> FakeWorkspace:
        """A workspace the app can be installed in (through the consent page); its bot
        user and bot ids are its own."""
        suffix = team_id.removeprefix("T")
        workspace = FakeWorkspace(
            team_id=team_id,
            name=name or f"Team {team_id}",
            enterprise_id=enterprise_id,
            bot_user_id=f"U0BOT{suffix}",
            bot_id=f"B0BOT{suffix}",
            rotation=rotation,
            expires_in=expires_in,
            installer=installer,
        )
        self.workspaces[team_id] = workspace
        return workspace

    def grant_code(self, team_id: str, scopes: str = BOT_SCOPES) -> str:
        """A code for installing the app in `team_id`, as the consent page hands out."""
        workspace = self.workspaces[team_id]
        workspace.scopes = scopes
        code = f"{next(self._ids)}.{secrets.token_hex(16)}"
        self._codes[code] = team_id
        return code

    def uninstall(self, team_id: str) -> None:
        """The workspace removed the app: every token of it is revoked."""
        workspace = self.workspaces[team_id]
        workspace.installed = False
        workspace.refresh_token = None
        self._notify()

    def workspace_of(self, token: str | None) -> str | None:
        """The team id a token was issued for (the default workspace's for bot_token)."""
        if token == self.bot_token:
            return self.team_id
        owner = self._token_owners.get(token or "")
        return owner.team_id if owner else None

    async def _handle_consent(self, request: web.Request) -> web.Response:
        """Slack's consent page, where an installer picks the workspace (`team`) and clicks
        Allow at once: back to the redirect URL with a code and the state."""
        query = dict(request.query)
        self.consents.append(query)
        target = query.get("redirect_uri") or self.redirect_url
        if query.get("client_id") != self.client_id or not target:
            return web.Response(status=400, text="invalid_client_id or no redirect URL")
        team = query.get("team") or next(iter(self.workspaces), "")
        if team not in self.workspaces:
            return web.Response(status=400, text="unknown team")
        code = self.grant_code(team, scopes=query.get("scope", ""))
        back = {"code": code, "state": query.get("state", "")}
        parts = urlsplit(target)
        url = urlunsplit(parts._replace(query=urlencode(back)))
        raise web.HTTPFound(url)

    def _oauth_v2_access(self, p: dict[str, Any], headers: Any) -> dict[str, Any]:
        client_id, client_secret = p.get("client_id"), p.get("client_secret")
        basic = headers.get("Authorization", "")
        if basic.startswith("Basic "):
            decoded = base64.b64decode(basic[len("Basic ") :]).decode()
            client_id, _, client_secret = decoded.partition(":")
        if client_id != self.client_id:
            return {"ok": False, "error": "invalid_client_id"}
        if client_secret != self.client_secret:
            return {"ok": False, "error": "bad_client_secret"}
        if p.get("grant_type") == "refresh_token":
            owner = next(
                (
                    w
                    for w in self.workspaces.values()
                    if w.refresh_token and w.refresh_token == p.get("refresh_token")
                ),
                None,
            )
            if owner is None or not owner.installed:
                return {"ok": False, "error": "invalid_refresh_token"}
            return {"ok": True, **self._issue(owner, ROTATED_EXPIRES_IN)}
        team = self._codes.pop(str(p.get("code", "")), None)
        if team is None:
            return {"ok": False, "error": "invalid_code"}
        workspace = self.workspaces[team]
        workspace.installed = True
        answer = self._issue(workspace, workspace.expires_in)
        answer["authed_user"] = {"id": workspace.installer}
        return {"ok": True, **answer}

    def _issue(self, workspace: FakeWorkspace, expires_in: int) -> dict[str, Any]:
        """A new bot token for the workspace (and, with rotation, a new refresh token: the
        one just used is spent)."""
        number = next(self._ids)
        prefix = "xoxe.xoxb-1-" if workspace.rotation else "xoxb-"
        token = f"{prefix}{workspace.team_id}-{number}-{secrets.token_hex(12)}"
        workspace.tokens.append(token)
        self._token_owners[token] = workspace
        answer: dict[str, Any] = {
            "access_token": token,
            "token_type": "bot",
            "scope": workspace.scopes,
            "bot_user_id": workspace.bot_user_id,
            "app_id": self.app_id,
            "team": {"id": workspace.team_id, "name": workspace.name},
            "enterprise": (
                {"id": workspace.enterprise_id, "name": f"Org {workspace.enterprise_id}"}
                if workspace.enterprise_id
                else None
            ),
            "is_enterprise_install": False,
        }
        if workspace.rotation:
            workspace.refresh_token = f"xoxe-1-{workspace.team_id}-{secrets.token_hex(16)}"
            workspace.expires_at[token] = time.time() + expires_in
            answer["refresh_token"] = workspace.refresh_token
            answer["expires_in"] = expires_in
        self._notify()
        return answer

    def _bot_message(self, channel: str, p: dict[str, Any], ts: str) -> dict[str, Any]:
        team_id, bot_user_id, bot_id = self._me
        message: dict[str, Any] = {
            "type": "message",
            "channel": channel,
            "ts": ts,
            "text": p.get("text") or "",
            "user": bot_user_id,
            "bot_id": bot_id,
            "app_id": self.app_id,
            "team": team_id,
        }
        for key in ("blocks", "attachments", "metadata"):
            if p.get(key) is not None:
                message[key] = _json_param(p[key], key)
        if p.get("thread_ts"):
            message["thread_ts"] = str(p["thread_ts"])
            message["parent_user_id"] = self._author_of(channel, str(p["thread_ts"]))
        for key in ("username", "icon_url", "icon_emoji"):
            if p.get(key):
                message[key] = p[key]
        return message

    def _author_of(self, channel: str, ts: str) -> str | None:
        parent = self.messages.get((channel, ts))
        return None if parent is None else parent.get("user")

    def _chat_post_message(self, p: dict[str, Any]) -> dict[str, Any]:
        channel = _required(p, "channel", "channel_not_found")
        if not (p.get("text") or p.get("blocks") or p.get("attachments")):
            raise _SlackError("no_text")
        ts = self._next_ts()
        message = self._bot_message(channel, p, ts)
        self.messages[(channel, ts)] = message
        return {"channel": channel, "ts": ts, "message": _public(message)}

    def _chat_update(self, p: dict[str, Any]) -> dict[str, Any]:
        channel = _required(p, "channel", "channel_not_found")
        ts = _required(p, "ts", "message_not_found")
        current = self.messages.get((channel, ts))
        if current is None:
            raise _SlackError("message_not_found")
        _, bot_user_id, bot_id = self._me
        if current.get("bot_id") != bot_id:
            raise _SlackError("cant_update_message")
        updated = dict(current)
        if "text" in p:
            updated["text"] = p["text"] or ""
        for key in ("blocks", "attachments", "metadata"):
            if p.get(key) is not None:
                updated[key] = _json_param(p[key], key)
        updated["edited"] = {"user": bot_user_id, "ts": self._next_ts()}
        self.messages[(channel, ts)] = updated
        return {"channel": channel, "ts": ts, "text": updated["text"], "message": _public(updated)}

    def _chat_delete(self, p: dict[str, Any]) -> dict[str, Any]:
        channel = _required(p, "channel", "channel_not_found")
        ts = _required(p, "ts", "message_not_found")
        current = self.messages.get((channel, ts))
        if current is None:
            raise _SlackError("message_not_found")
        if current.get("bot_id") != self._me[2]:
            raise _SlackError("cant_delete_message")
        self.deleted_messages.append(self.messages.pop((channel, ts)))
        return {"channel": channel, "ts": ts}

    def _chat_post_ephemeral(self, p: dict[str, Any]) -> dict[str, Any]:
        channel = _required(p, "channel", "channel_not_found")
        user = _required(p, "user", "user_not_found")
        if not (p.get("text") or p.get("blocks") or p.get("attachments")):
            raise _SlackError("no_text")
        message_ts = self._next_ts()
        self.ephemerals.append(
            {
                "channel": channel,
                "user": user,
                "text": p.get("text") or "",
                "blocks": _json_param(p["blocks"], "blocks") if p.get("blocks") else None,
                "thread_ts": p.get("thread_ts"),
                "message_ts": message_ts,
            }
        )
        return {"message_ts": message_ts}

    def _chat_get_permalink(self, p: dict[str, Any]) -> dict[str, Any]:
        channel = _required(p, "channel", "channel_not_found")
        ts = _required(p, "message_ts", "message_not_found")
        if (channel, ts) not in self.messages:
            raise _SlackError("message_not_found")
        return {"channel": channel, "permalink": self._permalink(channel, ts)}

    def _permalink(self, channel: str, ts: str) -> str:
        return f"https://{TEAM_DOMAIN}.slack.com/archives/{channel}/p{ts.replace('.', '')}"

    # ------------------------------------------------------------------ files

    def _files_get_upload_url_external(self, p: dict[str, Any]) -> dict[str, Any]:
        filename = _required(p, "filename", "invalid_arguments")
        try:
            length = int(p.get("length", ""))
        except ValueError:
            raise _SlackError("invalid_arguments") from None
        if length <= 0:
            raise _SlackError("invalid_arguments")
        file_id = self._next_id("F")
        self._pending_uploads[file_id] = _PendingUpload(
            id=file_id, filename=filename, length=length, alt_txt=p.get("alt_txt")
        )
        return {"upload_url": f"{self.base_url}/upload/v1/{file_id}", "file_id": file_id}

    async def _handle_upload(self, request: web.Request) -> web.Response:
        pending = self._pending_uploads.get(request.match_info["file_id"])
        if pending is None:
            return web.Response(status=404, text="Not Found")
        if request.content_type == "multipart/form-data":
            form = await request.post()
            parts = [v.file.read() for v in form.values() if isinstance(v, web.FileField)]
            data = parts[0] if parts else b""
        else:
            data = await request.read()
        if len(data) != pending.length:
            return web.Response(
                status=400, text=f"length mismatch: got {len(data)}, expected {pending.length}"
            )
        pending.data = data
        self._notify()
        return web.Response(text=f"OK - {len(data)}")

    def _files_complete_upload_external(self, p: dict[str, Any]) -> dict[str, Any]:
        entries = _required_json(p, "files")
        if not isinstance(entries, list) or not entries:
            raise _SlackError("invalid_arguments")
        channels = [c for c in str(p.get("channels") or "").split(",") if c]
        channel = p.get("channel_id") or (channels[0] if channels else None)
        thread_ts = str(p["thread_ts"]) if p.get("thread_ts") else None
        initial_comment = p.get("initial_comment")
        pending = []
        for entry in entries:
            upload = self._pending_uploads.get(str(entry.get("id")))
            if upload is None or upload.data is None:
                raise _SlackError("file_not_found")
            pending.append((upload, entry.get("title") or upload.filename))

        message_ts = self._next_ts() if channel else None
        completed = []
        for upload, title in pending:
            del self._pending_uploads[upload.id]
            assert upload.data is not None
            info = self._host(
                upload.id,
                upload.data,
                name=upload.filename,
                title=title,
                mimetype=_guess_mimetype(upload.filename, upload.data),
                user=self._me[1],
            )
            if channel and message_ts:
                share = {"ts": message_ts, **({"thread_ts": thread_ts} if thread_ts else {})}
                info["shares"] = {"public": {channel: [share]}}
                info["channels"] = [channel]
            completed.append(info)
            self.uploads.append(
                SlackUpload(
                    id=upload.id,
                    filename=upload.filename,
                    title=title,
                    data=upload.data,
                    mimetype=info["mimetype"],
                    channel=channel,
                    thread_ts=thread_ts,
                    initial_comment=initial_comment,
                    message_ts=message_ts,
                    alt_txt=upload.alt_txt,
                )
            )
        if channel and message_ts:
            text = initial_comment or ""
            message = self._bot_message(channel, {"text": text, "thread_ts": thread_ts}, message_ts)
            message.update(files=completed, upload=True, display_as_bot=False)
            self.messages[(channel, message_ts)] = message
        return {"files": completed}

    def _files_info(self, p: dict[str, Any]) -> dict[str, Any]:
        hosted = self._files.get(str(p.get("file", "")))
        if hosted is None:
            raise _SlackError("file_not_found")
        return {"file": hosted.info, "comments": [], "response_metadata": {"next_cursor": ""}}

    def add_file(
        self, data: bytes, *, name: str, mimetype: str, user: str = "U0USER"
    ) -> dict[str, Any]:
        """Hosts `data` as a file a user shared; returns the Slack file object for events."""
        return self._host(
            self._next_id("F"), data, name=name, title=name, mimetype=mimetype, user=user
        )

    def _host(
        self, file_id: str, data: bytes, *, name: str, title: str, mimetype: str, user: str
    ) -> dict[str, Any]:
        now = int(time.time())
        key = f"{self.team_id}-{file_id}"
        info: dict[str, Any] = {
            "id": file_id,
            "created": now,
            "timestamp": now,
            "name": name,
            "title": title,
            "mimetype": mimetype,
            "filetype": name.rsplit(".", 1)[-1].lower() if "." in name else "binary",
            "pretty_type": mimetype.split("/")[-1].upper(),
            "user": user,
            "user_team": self.team_id,
            "editable": False,
            "size": len(data),
            "mode": "hosted",
            "is_external": False,
            "external_type": "",
            "is_public": True,
            "public_url_shared": False,
            "display_as_bot": False,
            "url_private": f"{self.file_host_url}{key}/{quote(name)}",
            "url_private_download": f"{self.file_host_url}{key}/download/{quote(name)}",
            "permalink": f"https://{TEAM_DOMAIN}.slack.com/files/{user}/{file_id}/{quote(name)}",
            "permalink_public": f"https://slack-files.com/{key}-{secrets.token_hex(5)}",
        }
        size = _image_size(data) if mimetype.startswith("image/") else None
        if size is not None:
            info["original_w"], info["original_h"] = size
        self._files[file_id] = _HostedFile(id=file_id, data=data, info=info)
        return info

    async def _handle_file_download(self, request: web.Request) -> web.Response:
        file_id = request.match_info["key"].split("-", 1)[-1]
        hosted = self._files.get(file_id)
        if hosted is None:
            return web.Response(status=404, text="Not Found")
        token = _bearer(request.headers.get("Authorization"))
        owner = self._token_owners.get(token or "")
        authorized = token == self.bot_token or (
            owner is not None and self._token_problem(owner, token or "") is None
        )
        self.downloads.append(
            SlackDownload(
                file_id=file_id,
                url=str(request.url),
                authorized=authorized,
                time=time.monotonic(),
                token=token,
            )
        )
        self._notify()
        if not authorized:
            # Slack answers an unauthenticated file request with its sign-in page, not a 401.
            return web.Response(text=LOGIN_PAGE, content_type="text/html")
        headers = {}
        if request.match_info["tail"].startswith("download/"):
            headers["Content-Disposition"] = f'attachment; filename="{hosted.info["name"]}"'
        return web.Response(body=hosted.data, content_type=hosted.info["mimetype"], headers=headers)

    # ------------------------------------------------------------------ views, reactions, users

    def _views_open(self, p: dict[str, Any]) -> dict[str, Any]:
        trigger_id = _required(p, "trigger_id", "invalid_arguments")
        self._use_trigger_id(trigger_id)
        view = _required_json(p, "view")
        view_id = self._next_id("V")
        stored = {
            **view,
            "id": view_id,
            "team_id": self.team_id,
            "app_id": self.app_id,
            "bot_id": self.bot_id,
            "state": {"values": {}},
            "hash": secrets.token_hex(8),
            "private_metadata": view.get("private_metadata", ""),
            "callback_id": view.get("callback_id", ""),
            "root_view_id": view_id,
            "previous_view_id": None,
        }
        self.views[view_id] = stored
        return {"view": stored}

    def _views_publish(self, p: dict[str, Any]) -> dict[str, Any]:
        """A user's Home tab: only a view of type home, of at most 100 blocks."""
        user_id = _required(p, "user_id", "invalid_arguments")
        view = _required_json(p, "view")
        if view.get("type") != "home" or len(view.get("blocks") or []) > 100:
            raise _SlackError("invalid_arguments")
        stored = {**view, "id": self._next_id("V"), "team_id": self.team_id}
        self.home_views[user_id] = stored
        return {"view": stored}

    def app_home_opened_event(self, user: str = "U0USER", *, tab: str = "home") -> dict[str, Any]:
        """A user opening the app's Home tab (or its Messages tab)."""
        return {
            "type": "app_home_opened",
            "user": user,
            "channel": "D0HOME",
            "tab": tab,
            "event_ts": f"{time.time():.6f}",
        }

    def _use_trigger_id(self, trigger_id: str) -> None:
        if trigger_id in self._used_trigger_ids:
            raise _SlackError("exchanged_trigger_id")
        issued = self._trigger_ids.get(trigger_id)
        if issued is not None and time.monotonic() - issued > TRIGGER_ID_LIFETIME_S:
            raise _SlackError("expired_trigger_id")
        self._used_trigger_ids.add(trigger_id)

    def _views_update(self, p: dict[str, Any]) -> dict[str, Any]:
        view_id = p.get("view_id")
        if not view_id and p.get("external_id"):
            view_id = next(
                (k for k, v in self.views.items() if v.get("external_id") == p["external_id"]),
                None,
            )
        current = self.views.get(str(view_id or ""))
        if current is None:
            raise _SlackError("not_found")
        if p.get("hash") and p["hash"] != current["hash"]:
            raise _SlackError("hash_conflict")
        view = _required_json(p, "view")
        updated = {
            **current,
            **view,
            "id": current["id"],
            "hash": secrets.token_hex(8),
            "previous_view_id": None,
        }
        self.views[current["id"]] = updated
        return {"view": updated}

    def _reactions_add(self, p: dict[str, Any]) -> dict[str, Any]:
        channel = _required(p, "channel", "channel_not_found")
        ts = _required(p, "timestamp", "message_not_found")
        name = _required(p, "name", "invalid_name")
        message = self.messages.get((channel, ts))
        if message is None:
            raise _SlackError("message_not_found")
        reactions = message.setdefault("reactions", [])
        reaction = next((r for r in reactions if r["name"] == name), None)
        if reaction is None:
            reaction = {"name": name, "users": [], "count": 0}
            reactions.append(reaction)
        if self.bot_user_id in reaction["users"]:
            raise _SlackError("already_reacted")
        reaction["users"].append(self.bot_user_id)
        reaction["count"] += 1
        self.reactions.append({"channel": channel, "timestamp": ts, "name": name})
        return {}

    def add_user(
        self,
        user_id: str,
        *,
        name: str,
        real_name: str | None = None,
        display_name: str | None = None,
        tz: str = "Europe/Berlin",
        tz_offset: int = 3600,
        is_bot: bool = False,
        is_admin: bool = False,
        is_owner: bool = False,
    ) -> dict[str, Any]:
        """Defines what `users.info` answers for `user_id` (unknown ids get a plain default)."""
        real = real_name or name
        user = {
            "id": user_id,
            "team_id": self.team_id,
            "name": name,
            "deleted": False,
            "real_name": real,
            "tz": tz,
            "tz_label": tz,
            "tz_offset": tz_offset,
            "is_bot": is_bot,
            "is_admin": is_admin or is_owner,  # Slack marks owners as admins too
            "is_owner": is_owner,
            "is_primary_owner": False,
            "is_app_user": False,
            "profile": {
                "real_name": real,
                "display_name": display_name if display_name is not None else name,
                "image_72": f"https://avatars.slack-edge.com/{user_id}_72.png",
                "team": self.team_id,
            },
        }
        self.users[user_id] = user
        return user

    def _users_info(self, p: dict[str, Any]) -> dict[str, Any]:
        if "users:read" not in self.scopes.split(","):
            raise _SlackError("missing_scope")
        user_id = _required(p, "user", "user_not_found")
        if user_id not in self.users:
            if user_id == self.bot_user_id:
                self.add_user(user_id, name="imagebot", is_bot=True)
            else:
                self.add_user(user_id, name=user_id.lower(), real_name=f"User {user_id}")
        return {"user": self.users[user_id]}

    def _conversations_info(self, p: dict[str, Any]) -> dict[str, Any]:
        channel = _required(p, "channel", "channel_not_found")
        is_im = channel.startswith("D")
        return {
            "channel": {
                "id": channel,
                "name": None if is_im else f"channel-{channel.lower()}",
                "is_channel": channel.startswith("C"),
                "is_group": channel.startswith("G"),
                "is_im": is_im,
                "is_private": not channel.startswith("C"),
                "is_archived": False,
                "is_member": True,
                "context_team_id": self.team_id,
            }
        }

    # ------------------------------------------------------------------ Socket Mode

    def _apps_connections_open(self, p: dict[str, Any]) -> dict[str, Any]:
        ticket = uuid.uuid4().hex
        self._tickets.add(ticket)
        ws_base = self.base_url.replace("http://", "ws://", 1)
        return {"url": f"{ws_base}/socket-mode?ticket={ticket}&app_id={self.app_id}"}

    async def _handle_socket(self, request: web.Request) -> web.StreamResponse:
        if request.query.get("ticket") not in self._tickets:
            return web.Response(status=401, text="invalid ticket")
        # Pings are answered by hand so they can be counted.
        ws = web.WebSocketResponse(autoping=False)
        await ws.prepare(request)
        open_sockets = [s for s in self._sockets if not s.closed]
        await ws.send_str(
            json.dumps(
                {
                    "type": "hello",
                    "num_connections": len(open_sockets) + 1,
                    "debug_info": {
                        "host": "applink-fake-1",
                        "build_number": 1,
                        "approximate_connection_time": 18060,
                    },
                    "connection_info": {"app_id": self.app_id},
                }
            )
        )
        self._sockets.append(ws)
        self.socket_connections += 1
        self._notify()
        try:
            async for msg in ws:
                if msg.type == WSMsgType.PING:
                    self.socket_pings += 1
                    await ws.pong(msg.data)
                elif msg.type == WSMsgType.TEXT:
                    self._on_socket_text(msg.data)
        finally:
            self._sockets.remove(ws)
            self._notify()
        return ws

    def _on_socket_text(self, data: str) -> None:
        try:
            message = json.loads(data)
        except json.JSONDecodeError:
            return
        if isinstance(message, dict) and "envelope_id" in message:
            self.socket_acks.append(message)
            self._notify()

    def _open_socket(self) -> web.WebSocketResponse | None:
        return next((s for s in reversed(self._sockets) if not s.closed), None)

    async def send_envelope(
        self,
        type_: str,
        payload: dict[str, Any],
        *,
        accepts_response_payload: bool = False,
        retry_attempt: int = 0,
        retry_reason: str = "",
        timeout: float = 5.0,
    ) -> str:
        """Sends an envelope over the newest open connection; returns its envelope_id."""
        ws = await self.wait_until(self._open_socket, timeout=timeout, what="a socket connection")
        envelope_id = str(uuid.uuid4())
        envelope: dict[str, Any] = {
            "envelope_id": envelope_id,
            "payload": payload,
            "type": type_,
            "accepts_response_payload": accepts_response_payload,
        }
        if type_ == "events_api":
            envelope["retry_attempt"] = retry_attempt
            envelope["retry_reason"] = retry_reason
        self.socket_envelopes.append(envelope)
        await ws.send_str(json.dumps(envelope))
        return envelope_id

    async def disconnect_socket(
        self, reason: str = "refresh_requested", *, grace: float = 2.0
    ) -> None:
        """Asks the client to reconnect, then closes the connection if it has not left by itself."""
        ws = self._open_socket()
        if ws is None:
            raise RuntimeError("FakeSlack: no open socket connection to disconnect")
        await ws.send_str(
            json.dumps(
                {"type": "disconnect", "reason": reason, "debug_info": {"host": "applink-fake-1"}}
            )
        )
        try:
            await self.wait_until(lambda: ws not in self._sockets, timeout=grace, what="close")
        except TimeoutError:
            pass
        if not ws.closed:
            await ws.close()

    # ------------------------------------------------------------------ payload builders

    def slash_command_payload(
        self,
        text: str,
        *,
        user_id: str,
        channel_id: str,
        command: str = "/imagine",
        response_url: str | None = None,
        trigger_id: str | None = None,
        user_name: str | None = None,
        channel_name: str = "general",
        team_id: str | None = None,
    ) -> dict[str, str]:
        """A slash command's fields, as Slack sends them (form fields, or a Socket Mode payload);
        `team_id` makes it come from another workspace than the default one."""
        team = team_id or self.team_id
        return {
            "token": "verification-token",
            "team_id": team,
            "team_domain": TEAM_DOMAIN,
            "channel_id": channel_id,
            "channel_name": channel_name,
            "user_id": user_id,
            "user_name": user_name or user_id.lower(),
            "command": command,
            "text": text,
            "api_app_id": self.app_id,
            "is_enterprise_install": "false",
            "response_url": response_url
            or self._new_response_url(channel=channel_id, user=user_id, team_id=team),
            "trigger_id": trigger_id or self._new_trigger_id(),
        }

    def slash_command_body(self, text: str, **kwargs: Any) -> tuple[bytes, str]:
        """The form-encoded body and content type; arguments as for `slash_command_payload`."""
        payload = self.slash_command_payload(text, **kwargs)
        return urlencode(payload).encode(), "application/x-www-form-urlencoded"

    def event_payload(
        self, event: dict[str, Any], *, event_id: str | None = None, team_id: str | None = None
    ) -> dict[str, Any]:
        """The event_callback envelope Slack wraps around an event (from `team_id`'s
        workspace, the default one's unless given)."""
        event_ts = event.get("event_ts") or event.get("ts") or f"{time.time():.6f}"
        team = team_id or self.team_id
        workspace = self.workspaces.get(team)
        bot_user_id = workspace.bot_user_id if workspace else self.bot_user_id
        enterprise_id = workspace.enterprise_id if workspace else None
        return {
            "token": "verification-token",
            "team_id": team,
            "context_team_id": team,
            "context_enterprise_id": enterprise_id,
            "api_app_id": self.app_id,
            "event": event,
            "type": "event_callback",
            "event_id": event_id or f"Ev{next(self._ids):010d}",
            "event_time": int(float(event_ts)),
            "authorizations": [
                {
                    "enterprise_id": enterprise_id,
                    "team_id": team,
                    "user_id": bot_user_id,
                    "is_bot": True,
                    "is_enterprise_install": False,
                }
            ],
            "is_ext_shared_channel": False,
            "event_context": f"4-{secrets.token_hex(16)}",
        }

    def event_body(
        self, event: dict[str, Any], *, event_id: str | None = None, team_id: str | None = None
    ) -> tuple[bytes, str]:
        payload = self.event_payload(event, event_id=event_id, team_id=team_id)
        return json.dumps(payload).encode(), "application/json"

    def app_uninstalled_body(self, team_id: str) -> tuple[bytes, str]:
        """What Slack sends once a workspace removed the app (its tokens are revoked)."""
        event = {"type": "app_uninstalled", "event_ts": f"{time.time():.6f}"}
        payload = self.event_payload(event, team_id=team_id)
        payload.pop("authorizations")  # nothing is authorized any more
        return json.dumps(payload).encode(), "application/json"

    def tokens_revoked_body(self, team_id: str) -> tuple[bytes, str]:
        """What Slack sends when a workspace's bot token was revoked."""
        workspace = self.workspaces[team_id]
        event = {
            "type": "tokens_revoked",
            "tokens": {"oauth": [], "bot": [workspace.bot_user_id]},
            "event_ts": f"{time.time():.6f}",
        }
        payload = self.event_payload(event, team_id=team_id)
        payload.pop("authorizations")
        return json.dumps(payload).encode(), "application/json"

    def block_action_payload(
        self,
        action_id: str,
        *,
        user_id: str,
        channel_id: str,
        message_ts: str,
        value: str = "",
        block_id: str = "actions",
        action_type: str = "button",
        trigger_id: str | None = None,
    ) -> dict[str, Any]:
        """A block_actions interaction on a button in the message at (channel_id, message_ts)."""
        message = self.messages.get((channel_id, message_ts))
        container: dict[str, Any] = {
            "type": "message",
            "message_ts": message_ts,
            "channel_id": channel_id,
            "is_ephemeral": False,
        }
        if message is not None and message.get("thread_ts"):
            container["thread_ts"] = message["thread_ts"]
        return {
            "type": "block_actions",
            "user": self._user_ref(user_id),
            "api_app_id": self.app_id,
            "token": "verification-token",
            "container": container,
            "trigger_id": trigger_id or self._new_trigger_id(),
            "team": {"id": self.team_id, "domain": TEAM_DOMAIN},
            "enterprise": None,
            "is_enterprise_install": False,
            "channel": {"id": channel_id, "name": "general"},
            "message": _public(message) if message else {"type": "message", "ts": message_ts},
            "state": {"values": {}},
            "response_url": self._new_response_url(
                channel=channel_id, user=user_id, kind="actions"
            ),
            "actions": [
                {
                    "action_id": action_id,
                    "block_id": block_id,
                    "text": {"type": "plain_text", "text": action_id, "emoji": True},
                    "value": value,
                    "type": action_type,
                    "action_ts": f"{time.time():.6f}",
                }
            ],
        }

    def home_action_body(
        self, action_id: str, *, user_id: str, value: str = ""
    ) -> tuple[bytes, str]:
        """A click on a button of `user_id`'s Home tab: its container is the view, and it has
        no channel, message or response URL."""
        view = self.home_views[user_id]
        payload = {
            "type": "block_actions",
            "user": self._user_ref(user_id),
            "api_app_id": self.app_id,
            "token": "verification-token",
            "container": {"type": "view", "view_id": view["id"]},
            "trigger_id": self._new_trigger_id(),
            "team": {"id": self.team_id, "domain": TEAM_DOMAIN},
            "enterprise": None,
            "is_enterprise_install": False,
            "view": view,
            "actions": [
                {
                    "action_id": action_id,
                    "block_id": "home",
                    "text": {"type": "plain_text", "text": action_id, "emoji": True},
                    "value": value,
                    "type": "button",
                    "action_ts": f"{time.time():.6f}",
                }
            ],
        }
        return _interactivity_body(payload)

    def block_action_body(self, action_id: str, **kwargs: Any) -> tuple[bytes, str]:
        return _interactivity_body(self.block_action_payload(action_id, **kwargs))

    def view_submission_payload(
        self,
        view: str | dict[str, Any],
        *,
        user_id: str,
        values: dict[str, dict[str, dict[str, Any]]] | None = None,
        trigger_id: str | None = None,
        user_team: str | None = None,
    ) -> dict[str, Any]:
        """A view_submission of `view` (an id from `views`, or a view dict) with state values.

        `user_team` makes the user an external one (Slack Connect): `team` is then the user's
        own organisation and only `view.app_installed_team_id` names the installation."""
        current = self.views[view] if isinstance(view, str) else view
        submitted = {
            "id": current.get("id") or self._next_id("V"),
            "team_id": self.team_id,
            "type": current.get("type", "modal"),
            "callback_id": current.get("callback_id", ""),
            "private_metadata": current.get("private_metadata", ""),
            "blocks": current.get("blocks", []),
            "title": current.get("title"),
            "hash": current.get("hash", secrets.token_hex(8)),
            "app_id": self.app_id,
            "bot_id": self.bot_id,
            "app_installed_team_id": self.team_id,
            **{k: v for k, v in current.items() if k not in ("state",)},
            "state": {"values": values or {}},
        }
        team = user_team or self.team_id
        return {
            "type": "view_submission",
            "team": {"id": team, "domain": TEAM_DOMAIN if team == self.team_id else "partner"},
            "user": {**self._user_ref(user_id), "team_id": team},
            "api_app_id": self.app_id,
            "token": "verification-token",
            "trigger_id": trigger_id or self._new_trigger_id(),
            "view": submitted,
            "response_urls": [],
            "is_enterprise_install": False,
            "enterprise": None,
        }

    def view_submission_body(self, view: str | dict[str, Any], **kwargs: Any) -> tuple[bytes, str]:
        return _interactivity_body(self.view_submission_payload(view, **kwargs))

    def _user_ref(self, user_id: str) -> dict[str, str]:
        name = user_id.lower()
        return {"id": user_id, "username": name, "name": name, "team_id": self.team_id}

    # ------------------------------------------------------------------ event builders

    def app_mention_event(
        self,
        text: str,
        *,
        user: str = "U0USER",
        channel: str = "C0001",
        thread_ts: str | None = None,
        files: list[dict[str, Any]] | None = None,
        ts: str | None = None,
        team_id: str | None = None,
    ) -> dict[str, Any]:
        """An app_mention event, text led by the bot's mention (the bot of `team_id`'s
        workspace, when given); the message is recorded."""
        workspace = self.workspaces.get(team_id or "")
        bot_user_id = workspace.bot_user_id if workspace else self.bot_user_id
        return self._user_event(
            "app_mention",
            f"<@{bot_user_id}> {text}",
            user=user,
            channel=channel,
            thread_ts=thread_ts,
            files=files,
            ts=ts,
            team_id=team_id,
        )

    def message_event(
        self,
        text: str,
        *,
        user: str | None = "U0USER",
        channel: str = "C0001",
        thread_ts: str | None = None,
        files: list[dict[str, Any]] | None = None,
        subtype: str | None = None,
        channel_type: str = "channel",
        bot_id: str | None = None,
        ts: str | None = None,
        team_id: str | None = None,
    ) -> dict[str, Any]:
        """A message event (subtype file_share when files are given); the message is recorded."""
        event = self._user_event(
            "message",
            text,
            user=user,
            channel=channel,
            thread_ts=thread_ts,
            files=files,
            ts=ts,
            team_id=team_id,
        )
        event["channel_type"] = channel_type
        subtype = subtype or ("file_share" if files else None)
        if subtype:
            event["subtype"] = subtype
        if bot_id:
            event["bot_id"] = bot_id
        return event

    def _user_event(
        self,
        type_: str,
        text: str,
        *,
        user: str | None,
        channel: str,
        thread_ts: str | None,
        files: list[dict[str, Any]] | None,
        ts: str | None,
        team_id: str | None = None,
    ) -> dict[str, Any]:
        ts = ts or self._next_ts()
        event: dict[str, Any] = {
            "type": type_,
            "text": text,
            "ts": ts,
            "channel": channel,
            "team": team_id or self.team_id,
            "event_ts": ts,
            "client_msg_id": str(uuid.uuid4()),
            "blocks": [
                {
                    "type": "rich_text",
                    "block_id": secrets.token_hex(3),
                    "elements": [
                        {"type": "rich_text_section", "elements": [{"type": "text", "text": text}]}
                    ],
                }
            ],
        }
        if user is not None:
            event["user"] = user
        if thread_ts:
            event["thread_ts"] = thread_ts
            parent_user = self._author_of(channel, thread_ts)
            if parent_user:
                event["parent_user_id"] = parent_user
        if files:
            event["files"] = files
            event["upload"] = False
            event["display_as_bot"] = False
        recorded = {k: v for k, v in event.items() if k not in ("event_ts", "client_msg_id")}
        recorded["type"] = "message"
        self.messages.setdefault((channel, ts), recorded)
        return event

    # ------------------------------------------------------------------ delivery to an HTTP app

    async def post_to_app(
        self,
        url: str,
        body: bytes,
        content_type: str,
        *,
        signing_secret: str,
        timestamp: int | None = None,
        retry_num: int | None = None,
        retry_reason: str | None = None,
        bad_signature: bool = False,
    ) -> tuple[int, bytes, float]:
        """POSTs a signed request the way Slack does; returns status, body and elapsed seconds."""
        if self._session is None:
            raise RuntimeError("FakeSlack is not started")
        ts = str(int(time.time()) if timestamp is None else timestamp)
        secret = signing_secret + ("-not-the-secret" if bad_signature else "")
        signature = hmac.new(
            secret.encode(), b"v0:" + ts.encode() + b":" + body, hashlib.sha256
        ).hexdigest()
        headers = {
            "Content-Type": content_type,
            "User-Agent": "Slackbot 1.0 (+https://api.slack.com/robots)",
            "X-Slack-Request-Timestamp": ts,
            "X-Slack-Signature": f"v0={signature}",
        }
        if retry_num is not None:
            headers["X-Slack-Retry-Num"] = str(retry_num)
        if retry_reason is not None:
            headers["X-Slack-Retry-Reason"] = retry_reason
        started = time.perf_counter()
        async with self._session.post(url, data=body, headers=headers) as resp:
            answer = await resp.read()
            return resp.status, answer, time.perf_counter() - started

    async def _handle_response_url(self, request: web.Request) -> web.Response:
        hook = self._response_urls.get(request.match_info["hook"])
        if hook is None:
            return web.Response(status=404, text="no_service")
        if hook.posts >= RESPONSE_URL_MAX_POSTS:
            return web.Response(status=404, text="used_url")
        hook.posts += 1
        try:
            body = await request.json(loads=json.loads)
        except json.JSONDecodeError:
            return web.Response(status=400, text="invalid_payload")
        self.response_url_posts.append(
            {"url": str(request.url), "body": body, "time": time.monotonic()}
        )
        if body.get("response_type") == "in_channel":
            ts = self._next_ts()
            self.messages[(hook.channel, ts)] = self._bot_message(hook.channel, body, ts)
        elif not body.get("delete_original"):
            self.ephemerals.append(
                {
                    "channel": hook.channel,
                    "user": hook.user,
                    "text": body.get("text") or "",
                    "blocks": body.get("blocks"),
                    "thread_ts": body.get("thread_ts"),
                    "message_ts": None,
                }
            )
        self._notify()
        return web.Response(text="ok")


# ---------------------------------------------------------------------- helpers


async def _read_params(request: web.Request) -> dict[str, Any]:
    params: dict[str, Any] = dict(request.query)
    if not request.body_exists:
        return params
    if request.content_type == "application/json":
        body = await request.json()
        if not isinstance(body, dict):
            raise ValueError("a JSON call must carry an object")
        params.update(body)
    elif request.content_type in ("application/x-www-form-urlencoded", "multipart/form-data"):
        form = await request.post()
        for key, value in form.items():
            params[key] = value.file.read() if isinstance(value, web.FileField) else value
    return params


def _bearer(header: str | None) -> str | None:
    if header and header.startswith("Bearer "):
        return header[len("Bearer ") :].strip() or None
    return None


def _required(p: dict[str, Any], key: str, error: str) -> str:
    value = p.get(key)
    if value is None or value == "":
        raise _SlackError(error)
    return str(value)


def _required_json(p: dict[str, Any], key: str) -> Any:
    value = p.get(key)
    if value is None or value == "":
        raise _SlackError("invalid_arguments")
    return _json_param(value, key)


def _json_param(value: Any, name: str) -> Any:
    """Form-encoded calls carry blocks, views and file lists as JSON text; JSON calls, objects."""
    if not isinstance(value, str):
        return value
    try:
        return json.loads(value)
    except json.JSONDecodeError:
        raise _SlackError(f"invalid_{name}") from None


def _public(message: dict[str, Any]) -> dict[str, Any]:
    """A message as the API returns it: without the channel key the fake keeps for itself."""
    return {k: v for k, v in message.items() if k != "channel"}


def _ts_key(ts: str) -> tuple[int, int]:
    seconds, _, micros = ts.partition(".")
    return int(seconds), int(micros or 0)


def _interactivity_body(payload: dict[str, Any]) -> tuple[bytes, str]:
    return urlencode({"payload": json.dumps(payload)}).encode(), "application/x-www-form-urlencoded"


def _guess_mimetype(filename: str, data: bytes) -> str:
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "image/png"
    if data.startswith(b"\xff\xd8\xff"):
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data.startswith((b"GIF87a", b"GIF89a")):
        return "image/gif"
    if filename.lower().endswith((".txt", ".md")):
        return "text/plain"
    return "application/octet-stream"


def _image_size(data: bytes) -> tuple[int, int] | None:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(io.BytesIO(data)) as image:
            return image.size
    except (UnidentifiedImageError, OSError, ValueError):
        return None
