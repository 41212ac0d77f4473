"""Interactions over HTTP: Discord POSTs each one to /discord/interactions, signed with the
application's key, and the interaction's first answer is the HTTP response itself.

The interaction then takes the same path as one from the gateway (discord.py's command
tree, buttons and our handlers). Only its first answer differs: where discord.py would POST
it to the callback endpoint, it becomes the body of the response to Discord's request, and
the handler goes on once that body is on its way. Later answers (edits, follow-ups) go
through the interaction's webhook as they always do.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import discord
from aiohttp import web
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from discord.webhook.async_ import AsyncWebhookAdapter, async_context

log = logging.getLogger(__name__)

PATH = "/discord/interactions"
SIGNATURE_HEADER = "X-Signature-Ed25519"
TIMESTAMP_HEADER = "X-Signature-Timestamp"
# A signed request older (or newer) than this is refused: a captured one cannot be replayed
# later. Discord delivers within its own 3-second deadline, so five minutes only absorbs
# clock skew.
MAX_AGE_SECONDS = 300.0
# Discord waits 3 s for the answer; an interaction not answered by then has failed anyway.
ANSWER_WITHIN_SECONDS = 2.8
# Interactions are small (an /imagine with attachments is a few KB): more is not Discord.
MAX_BODY_BYTES = 256 * 1024
PING, PONG = 1, 1
AUTOCOMPLETE, NO_CHOICES = 4, {"type": 8, "data": {"choices": []}}


class Verifier:
    """Checks Discord's Ed25519 signature over timestamp + body, and the timestamp's age."""

    def __init__(
        self,
        public_key_hex: str,
        *,
        max_age_seconds: float = MAX_AGE_SECONDS,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(public_key_hex))
        self._max_age = max_age_seconds
        self._clock = clock

    def refusal(self, signature: str | None, timestamp: str | None, body: bytes) -> str | None:
        """Why the request is not Discord's (None: it is)."""
        if not signature or not timestamp:
            return "no signature headers"
        try:
            signed_at = float(timestamp)
            raw_signature = bytes.fromhex(signature)
        except ValueError:
            return "malformed signature headers"
        if abs(self._clock() - signed_at) > self._max_age:
            return f"timestamp {timestamp} is more than {self._max_age:.0f} s away"
        try:
            self._key.verify(raw_signature, timestamp.encode() + body)
        except InvalidSignature:
            return "the signature does not match the application's public key"
        return None


class _Replays:
    """Interaction ids seen lately: a signed request sent again is refused, not run twice."""

    def __init__(self, keep_seconds: float = 2 * MAX_AGE_SECONDS) -> None:
        self._seen: OrderedDict[str, float] = OrderedDict()
        self._keep = keep_seconds

    def first_time(self, interaction_id: str) -> bool:
        now = time.monotonic()
        while self._seen and next(iter(self._seen.values())) < now - self._keep:
            self._seen.popitem(last=False)
        if interaction_id in self._seen:
            return False
        self._seen[interaction_id] = now
        return True


@dataclass
class _Pending:
    """An interaction whose first answer goes back in the HTTP response."""

    answer: asyncio.Future[dict[str, Any]]
    sent: asyncio.Event = field(default_factory=asyncio.Event)
    delivered: bool = False


class _AnswerInResponse(AsyncWebhookAdapter):
    """discord.py's webhook adapter, except that the first answer to an interaction received
    over HTTP is handed to that request's response instead of POSTed to the callback."""

    def __init__(self) -> None:
        super().__init__()
        self.pending: dict[int, _Pending] = {}

    async def create_interaction_response(  # type: ignore[override]
        self,
        interaction_id: int,
        token: str,
        *,
        session: Any,
        proxy: str | None = None,
        proxy_auth: Any = None,
        params: Any,
    ) -> dict[str, Any]:
        pending = self.pending.pop(interaction_id, None)
        if pending is None or pending.answer.done() or params.files:
            # too late for the response (Discord decides whether it still counts), or an
            # answer with files, which only the callback takes
            return await super().create_interaction_response(
                interaction_id,
                token,
                session=session,
                proxy=proxy,
                proxy_auth=proxy_auth,
                params=params,
            )
        body: dict[str, Any] = params.payload
        pending.answer.set_result(body)
        await pending.sent.wait()
        if not pending.delivered:
            raise discord.NotFound(_Gone(), {"code": 10062, "message": "Unknown interaction"})
        flags = int((body.get("data") or {}).get("flags") or 0)
        # the shape of the callback's answer with_response, without a message id: Discord
        # gives none here, and "@original" names the message from now on
        return {
            "interaction": {
                "id": str(interaction_id),
                "response_message_loading": body.get("type") == 5,
                "response_message_ephemeral": bool(flags & 64),
            },
            "resource": {"type": body.get("type")},
        }


class _Gone:
    """Stands for the HTTP answer discord.NotFound expects when Discord hung up on us."""

    status = 404
    reason = "Not Found"


class InteractionsEndpoint:
    """POST /discord/interactions: verified, then run by `client` like a gateway interaction."""

    def __init__(self, client: discord.Client, verifier: Verifier) -> None:
        self._client = client
        self._verifier = verifier
        self._replays = _Replays()
        self._adapter = _AnswerInResponse()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        if request.content_length is not None and request.content_length > MAX_BODY_BYTES:
            return web.Response(status=413, text="too large for an interaction")
        body = await request.read()
        refusal = self._verifier.refusal(
            request.headers.get(SIGNATURE_HEADER), request.headers.get(TIMESTAMP_HEADER), body
        )
        if refusal is not None:
            log.warning("refused a request to %s: %s", PATH, refusal)
            return web.Response(status=401, text="invalid request signature")
        try:
            payload = json.loads(body)
            kind = payload["type"]
            interaction_id = str(payload["id"])
        except (ValueError, TypeError, KeyError) as exc:
            log.warning("refused a signed interaction that is not one: %r", exc)
            return web.Response(status=400, text="not an interaction")
        if kind == PING:
            return web.json_response({"type": PONG})
        if kind == AUTOCOMPLETE:  # no option of ours completes: an empty list, at once
            return web.json_response(NO_CHOICES)
        if not self._replays.first_time(interaction_id):
            log.warning("refused interaction %s: it was delivered before", interaction_id)
            return web.Response(status=401, text="replayed request")
        pending = _Pending(asyncio.get_running_loop().create_future())
        self._adapter.pending[int(interaction_id)] = pending
        # the tasks discord.py starts for this interaction (and theirs) see the adapter
        async_context.set(self._adapter)
        try:
            # discord.py reads HTTP interactions no differently from gateway ones, but has no
            # public call for one that arrived by other means than the gateway
            self._client._connection.parse_interaction_create(payload)
        except Exception as exc:
            self._adapter.pending.pop(int(interaction_id), None)
            log.warning("dropped interaction %s discord.py could not read: %r", interaction_id, exc)
            return web.Response(status=400, text="not an interaction discord.py can read")
        try:
            try:
                answer = await asyncio.wait_for(
                    asyncio.shield(pending.answer), ANSWER_WITHIN_SECONDS
                )
            except TimeoutError:
                log.warning("interaction %s had no answer within 3 seconds", interaction_id)
                return web.Response(status=500, text="no answer in time")
            response = web.json_response(answer)
            await response.prepare(request)
            await response.write_eof()
            pending.delivered = True
            return response
        finally:
            # however this request ends (answered, too late, cut off, cancelled), a handler
            # waiting on its answer goes on: told it was sent, or that it was not
            self._adapter.pending.pop(int(interaction_id), None)
            pending.answer.cancel()
            pending.sent.set()


def add_routes(app: web.Application, client: discord.Client, verifier: Verifier) -> None:
    """POST /discord/interactions on the process's HTTP server."""
    app.router.add_post(PATH, InteractionsEndpoint(client, verifier).handle)
