"""The Slack app: the factory, Bolt's listeners, and serving over Socket Mode or HTTP."""

from __future__ import annotations

import asyncio
import logging
import re
from functools import partial
from typing import Any
from urllib.parse import parse_qsl

import httpx
from aiohttp import web
from pydantic import ValidationError
from slack_bolt.adapter.aiohttp import to_aiohttp_response
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp
from slack_bolt.context.async_context import AsyncBoltContext
from slack_bolt.logger.messages import warning_client_prioritized_and_token_skipped
from slack_bolt.request.async_internals import build_async_context
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.async_handler import AsyncRetryHandler
from slack_sdk.http_retry.builtin_async_handlers import (
    AsyncConnectionErrorRetryHandler,
    AsyncRateLimitErrorRetryHandler,
)
from slack_sdk.signature import SignatureVerifier
from slack_sdk.web.async_client import AsyncWebClient

from bots.slack import messages, oauth
from bots.slack.buttons import Buttons
from bots.slack.commands import Commands
from bots.slack.context import Handler, SlackContext
from bots.slack.delivery import SlackDelivery
from bots.slack.events import PLATFORM
from bots.slack.home import Home
from bots.slack.modals import Modals
from bots.slack.payloads import ViewSubmission
from bots.slack.threads import Threads
from bots.slack.workspaces import (
    REFUSED_TOKEN,
    OneWorkspace,
    WorkspaceAuthorize,
    Workspaces,
)
from bots.web import WebServer
from core.config import ConfigError, Settings
from core.intake import Intake
from core.service import Service

log = logging.getLogger(__name__)

EVENTS_PATH = "/slack/events"
DOWNLOAD_TIMEOUT_SECONDS = 60.0


def create_app(
    settings: Settings,
    service: Service,
    *,
    host: str = "0.0.0.0",
    web_server: WebServer | None = None,
) -> SlackApp:
    """The Slack adapter, registered with `service`; `serve()` runs it until cancelled.

    With SLACK_APP_TOKEN it connects over Socket Mode; otherwise it serves HTTP on
    `host`:PORT (POST /slack/events for everything Slack sends, GET /healthz). With
    SLACK_CLIENT_ID it serves every workspace that installs it through GET /slack/install,
    each with its own token. `web_server`: the process's HTTP server, when another adapter
    serves on PORT as well.
    """
    return SlackApp(settings, service, host=host, web_server=web_server)


class SlackApp:
    """Bolt wired to the handlers; `port` and `wait_ready()` tell when Slack can reach it."""

    def __init__(
        self,
        settings: Settings,
        service: Service,
        *,
        host: str,
        web_server: WebServer | None = None,
    ) -> None:
        # many workspaces (OAuth) or one (SLACK_BOT_TOKEN)
        self.many = settings.slack_client_id is not None
        self.socket_mode = settings.slack_app_token is not None
        if self.many:
            oauth.check_settings(settings)
        else:
            settings.require("SLACK_BOT_TOKEN")
        if not self.socket_mode:
            try:
                settings.require("SLACK_SIGNING_SECRET")
            except ConfigError as exc:
                raise ConfigError(f"{exc}, or set SLACK_APP_TOKEN to use Socket Mode") from None
        self.settings = settings
        self.host = host
        self.health = service.health
        self.port: int | None = None  # the bound port in HTTP mode, once serving
        self.web: WebServer | None = None
        if not self.socket_mode:
            self.web = web_server or WebServer(host, settings.port, service.health)
            self.web.expect()
        retry_handlers: list[AsyncRetryHandler] = [
            AsyncConnectionErrorRetryHandler(max_retry_count=2),
            AsyncRateLimitErrorRetryHandler(max_retry_count=3),
        ]
        secret = settings.slack_signing_secret
        self._verifier = SignatureVerifier(secret.get_secret_value() if secret else "")
        workspaces: Workspaces
        if self.many:
            # no token of its own: each request's comes from its workspace's installation
            client = AsyncWebClient(base_url=settings.slack_api_url, retry_handlers=retry_handlers)
            oauth_settings, many = oauth.many_workspaces(
                settings, service.store, client, retry_handlers
            )
            workspaces = many
            options: dict[str, Any] = {
                "oauth_settings": oauth_settings,
                "authorize": WorkspaceAuthorize(many),
                "user_facing_authorize_error_message": messages.NOT_INSTALLED,
            }
        else:
            assert settings.slack_bot_token is not None
            token = settings.slack_bot_token.get_secret_value()
            client = AsyncWebClient(
                token=token, base_url=settings.slack_api_url, retry_handlers=retry_handlers
            )
            workspaces = self._one = OneWorkspace(client, token)
            options = {}
            _quiet_token_notice()
        self._client = client
        self.bolt = AsyncApp(
            name="imagebot",
            client=client,
            signing_secret=secret.get_secret_value() if secret else "",
            # the ack (an HTTP answer, a Socket Mode ack) goes out only once a listener has
            # returned, so a request is held in the store before Slack hears it arrived
            process_before_response=True,
            **options,
        )
        delivery = SlackDelivery(service, workspaces)
        self.ctx = SlackContext(
            settings=settings,
            service=service,
            workspaces=workspaces,
            delivery=delivery,
            http=httpx.AsyncClient(timeout=DOWNLOAD_TIMEOUT_SECONDS),
            retry_handlers=retry_handlers,
            intake=Intake(service, PLATFORM),
        )
        modals = Modals(self.ctx)
        self._commands = Commands(self.ctx)
        self._threads = Threads(self.ctx)
        self._handlers: dict[str, Handler] = {
            h.kind: h for h in (self._commands, self._threads, Buttons(self.ctx), modals.editing)
        }
        service.register(PLATFORM, delivery, resume=self._resume)
        self._listen(modals)
        self._ready = asyncio.Event()
        self._failure: BaseException | None = None

    def _listen(self, modals: Modals) -> None:
        """Every listener holds its request (core's Intake), acks, and leaves the work to a
        task of its own."""
        app, take, handlers = self.bolt, self.ctx.take, self._handlers
        home = Home(self.ctx)

        # any command name routes here, so an operator may call it /imagine-dev or /draw
        @app.command(re.compile(r"^/"))
        async def on_command(ack: Any, body: dict[str, Any]) -> None:
            await take(handlers["command"], body, ack)

        # Bolt acks an event itself, once the listener returns
        @app.event("app_mention")
        async def on_mention(ack: Any, body: dict[str, Any]) -> None:
            await take(handlers["message"], body, ack)

        @app.event("message")
        async def on_message(ack: Any, body: dict[str, Any]) -> None:
            await take(handlers["message"], body, ack)

        if self.many:
            # app_uninstalled, and tokens_revoked for the bot's token: Bolt's own listeners
            # remove the installation (our store also sets when the workspace's data goes)
            app.enable_token_revocation_listeners()

        @app.event("app_home_opened")
        async def on_home(ack: Any, body: dict[str, Any]) -> None:
            await ack()
            event = body.get("event") or {}
            team, user = body.get("team_id"), event.get("user")
            if event.get("tab") == "home" and isinstance(team, str) and isinstance(user, str):
                self.ctx.spawn(home.opened(team, user), "home")

        # any other event an operator subscribed the app to: answered 200 and dropped, or
        # Bolt would answer 404 and Slack would deliver it again and again
        @app.event(re.compile(".*"))
        async def on_other_event(ack: Any) -> None:
            await ack()

        @app.action(re.compile(rf"^{re.escape(messages.ACTION_PREFIX)}"))
        async def on_button(ack: Any, body: dict[str, Any]) -> None:
            await take(handlers["click"], body, ack)

        @app.view(messages.SETTINGS_CALLBACK)
        async def on_settings(ack: Any, body: dict[str, Any]) -> None:
            await modals.settings(ack, body)
            # the Home tab shows the settings: shown afresh
            try:
                submission = ViewSubmission.model_validate(body)
            except ValidationError:
                return  # told already, by the form
            self.ctx.spawn(home.opened(submission.workspace, submission.user.id), "home")

        @app.view(messages.EDIT_CALLBACK)
        async def on_edit(ack: Any, body: dict[str, Any]) -> None:
            await modals.edit(ack, body)

        @app.error
        async def on_error(error: Exception) -> None:
            log.error("a Slack listener failed", exc_info=error)

    # running

    async def serve(self) -> None:
        """Identify the bot, then handle Slack until cancelled."""
        try:
            await self._identify()
            if self.socket_mode:
                await self._serve_socket_mode()
            else:
                await self._serve_http()
        except BaseException as exc:
            self._failure = exc
            self._ready.set()
            raise
        finally:
            await self.ctx.drain()
            await self.ctx.delivery.close()
            await self.ctx.http.aclose()

    async def wait_ready(self) -> None:
        """Returns once Slack can reach the app (HTTP listening or socket connected)."""
        await self._ready.wait()
        if self._failure is not None:
            raise RuntimeError("the Slack app stopped before it was ready") from self._failure

    async def _identify(self) -> None:
        if self.many:
            # each workspace's bot is known from its installation, and its token
            log.info("Slack: serving every workspace that installs the app")
            return
        bot = await self._one.identify()
        log.info("Slack: signed in as @%s (%s) in team %s", bot.user, bot.user_id, bot.team_id)

    async def _serve_socket_mode(self) -> None:
        assert self.settings.slack_app_token is not None
        handler = AsyncSocketModeHandler(
            self.bolt, self.settings.slack_app_token.get_secret_value(), web_client=self._client
        )
        try:
            # asked here, once: inside connect_async a refused token is retried forever
            handler.client.wss_uri = await handler.client.issue_new_wss_url()
            await handler.connect_async()
        except SlackApiError as exc:
            error = exc.response.get("error")
            if error in REFUSED_TOKEN:
                raise ConfigError(
                    f"SLACK_APP_TOKEN was refused by Slack ({error}): use an app-level token "
                    "(xapp-...) with the connections:write scope"
                ) from None
            raise
        log.info("Slack: connected over Socket Mode")
        self._ready.set()
        try:
            await asyncio.Event().wait()
        finally:
            await handler.close_async()

    async def _serve_http(self) -> None:
        assert self.web is not None
        self.web.app.router.add_post(EVENTS_PATH, self._events)
        if self.bolt.oauth_flow is not None:
            # GET /slack/install and /slack/oauth_redirect
            oauth.add_routes(self.web.app, self.bolt.oauth_flow)
        try:
            self.port = await self.web.serve()
            log.info("Slack: listening on http://%s:%d%s", self.host, self.port, EVENTS_PATH)
            self._ready.set()
            await asyncio.Event().wait()
        finally:
            await self.web.close()

    async def _resume(self, payload: dict[str, Any]) -> None:
        """A request a dead process held: its work again (a message is told it resumed)."""
        await self._ready.wait()  # the bot's own id is known only once serving
        if "kind" not in payload:  # held by an older version: a message event's body
            key = await self._threads.accept(payload)
            payload = {"kind": "message", "key": key, "body": payload}
        handler = self._handlers.get(str(payload["kind"]))
        key, body = payload.get("key"), payload.get("body")
        if handler is None or not isinstance(key, str) or not isinstance(body, dict):
            raise ValueError("a held Slack request of a kind or shape this version does not know")
        if handler is self._threads:
            await self._threads.resumed(body)
        await self.ctx.intake.finish(key, partial(handler.run, body), partial(handler.tell, body))

    async def _events(self, request: web.Request) -> web.Response:
        """What Bolt's own aiohttp server does, made safe against what anyone can send.

        Bolt parses a body before it checks the signature, so unsigned junk could make it
        fail loudly; here the signature is checked first, and a signed body of the wrong
        shape is answered 400 with one log line. A signed slash command is held in the
        store, answered 200, and handed to Bolt in a task: its listener only acks anyway,
        and Bolt's own path to that ack costs about half a millisecond per request, which a
        burst of commands would otherwise queue behind one another.
        """
        try:
            raw = await request.text()
        except UnicodeDecodeError:
            return web.Response(status=400, text="the body is not UTF-8")
        headers = dict(request.headers)
        if not self._verifier.is_valid_request(raw, headers):
            return web.Response(status=401, text="invalid signature")
        if _is_slash_command(raw, request.content_type):
            key = await self._hold_command(raw)
            if key is not None:
                self.ctx.spawn(
                    self._dispatch_command(key, raw, request.query_string, headers), "ack"
                )
            return web.Response(status=200)
        try:
            response = await self._dispatch(raw, request.query_string, headers)
        except _UNEXPECTED_SHAPE as exc:
            log.warning("refused a signed Slack request of an unexpected shape: %r", exc)
            return web.Response(status=400, text="unexpected request shape")
        return await to_aiohttp_response(response)

    async def _hold_command(self, raw: str) -> str | None:
        """Held before the 200 goes out: its key, or None for a command held or stored
        already, or one that could not be held (the person was told)."""
        form = dict(parse_qsl(raw, keep_blank_values=True))
        key = await self._commands.accept(form)
        if key is None:
            return None
        payload = {"kind": self._commands.kind, "key": key, "body": form}
        held = await self.ctx.intake.receive(
            key, payload, acknowledge=_nothing, tell=partial(self._commands.tell, form)
        )
        if not held:
            return None
        self.ctx.pre_held.add(key)
        return key

    async def _dispatch(self, raw: str, query: str, headers: dict[str, str]) -> BoltResponse:
        request = AsyncBoltRequest(body=raw, query=query, headers=headers)
        _read_form_as_form(request)
        _check_shape(request.body)
        return await self.bolt.async_dispatch(request)

    async def _dispatch_command(
        self, key: str, raw: str, query: str, headers: dict[str, str]
    ) -> None:
        try:
            response = await self._dispatch(raw, query, headers)
        except _UNEXPECTED_SHAPE as exc:
            log.warning("dropped a signed slash command of an unexpected shape: %r", exc)
            self.ctx.pre_held.discard(key)
            await self.ctx.service.release(key)
            return
        if key not in self.ctx.pre_held:
            return  # taken by our listener, which finishes it and lets it go
        # Bolt answered it itself (its authorization failed, say): nothing left to hold
        self.ctx.pre_held.discard(key)
        await self.ctx.service.release(key)
        log.warning("Slack command not handled (%d): %s", response.status, response.body[:200])
        # Bolt's own answer, such as its note that authorization failed, was meant for the
        # user in the ack; the ack is gone, so it goes through the response URL instead
        if response.body and not response.body.startswith("{"):
            response_url = dict(parse_qsl(raw)).get("response_url")
            await self.ctx.respond(response_url, response.body)


async def _nothing() -> None:
    """The acknowledgement of a command held on the fast path: the 200 that follows."""


# what Bolt raises reading a signed body of a shape it does not expect
_UNEXPECTED_SHAPE = (ValueError, TypeError, AttributeError, IndexError, KeyError)


def _is_slash_command(raw: str, content_type: str) -> bool:
    """A form body with a `command` field and no interactivity `payload`."""
    if content_type != "application/x-www-form-urlencoded":
        return False
    fields = {name for name, _ in parse_qsl(raw, keep_blank_values=True)}
    return "command" in fields and "payload" not in fields


def _check_shape(body: Any) -> None:
    """The few shapes Bolt assumes before any listener can look: wrong ones raise."""
    if not isinstance(body, dict):
        raise ValueError("the body is not an object")
    for key in ("event", "view"):
        if key in body and not isinstance(body[key], dict):
            raise ValueError(f"{key} is not an object")
    if "actions" in body and not (isinstance(body["actions"], list) and body["actions"]):
        raise ValueError("actions is not a non-empty list")


def _read_form_as_form(request: AsyncBoltRequest) -> None:
    """Bolt takes any form body containing the word "payload" for an interactivity payload,
    so `/imagine a truck and its payload` arrived empty; read such a body as the form it is.

    Only the parsed view changes: the signature is still checked against the raw body.
    """
    raw = request.raw_body
    if request.body or "payload" not in raw or raw.startswith("{"):
        return
    form = dict(parse_qsl(raw, keep_blank_values=True))
    if "payload" not in form:
        request.body = form
        request.context = build_async_context(AsyncBoltContext({}), form)


class _DropTokenNotice(logging.Filter):
    """Bolt warns that SLACK_BOT_TOKEN is unused when a client is given: here the client is
    made from that very token, so the warning would only alarm an operator."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != warning_client_prioritized_and_token_skipped()


def _quiet_token_notice() -> None:
    bolt_log = logging.getLogger("slack_bolt.AsyncApp")
    if not any(isinstance(f, _DropTokenNotice) for f in bolt_log.filters):
        bolt_log.addFilter(_DropTokenNotice())
