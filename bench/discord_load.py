"""Load through the Discord adapter: INTERACTION_CREATE over the gateway, webhooks watched."""

from __future__ import annotations

import asyncio
import math
import re
import time
from collections.abc import Sequence
from typing import Any

from bench.tracking import ApiTimes, Ask
from tests.fakes.discord import FakeDiscord
from tests.fakes.gemini import FakeGemini

_CALLBACK = re.compile(r"/interactions/(\d+)/([^/]+)/callback")
_WEBHOOK = re.compile(r"/webhooks/\d+/([^/]+)(/messages/.+)?")
_CHANNEL_MESSAGE = re.compile(r"/channels/\d+/messages(/\d+)?")
_MENTION = re.compile(r"<@!?(\d+)>")
_EPHEMERAL = 1 << 6
_WARNING = "⚠️"
# past this, Discord has given up on an interaction that was never answered
_INTERACTION_TTL = 3.0
FIRST_USER = 10_000_000


class DiscordLoad:
    """Sends `/imagine` interactions and follows each through FakeDiscord's record.

    FakeDiscord keeps no times for REST calls, so a watcher notes the moment each call is
    first seen; it wakes on every change in the fake, a loop iteration after the call.
    Every request comes from its own user, to stay under the per-user limit.
    """

    def __init__(self, fake: FakeDiscord, gemini: FakeGemini) -> None:
        self.fake = fake
        self.asks: dict[str, Ask] = {}
        self._api = ApiTimes(gemini)
        self._payloads: dict[str, dict[str, Any]] = {}
        self._by_interaction: dict[str, Ask] = {}
        self._by_token: dict[str, Ask] = {}
        self._by_user: dict[str, Ask] = {}
        self._users = 0
        # what the fake recorded before this load began belongs to another bot process
        self._calls_seen = len(fake.calls)
        self._watcher = asyncio.create_task(self._watch())

    async def close(self) -> None:
        self._watcher.cancel()
        await asyncio.gather(self._watcher, return_exceptions=True)

    def prepare(self, tag: str, count: int, size: str) -> list[Ask]:
        asks = []
        for n in range(count):
            key = f"{tag}{n:04d}"
            self._users += 1
            user = FIRST_USER + self._users
            self.fake.add_user(user, f"bench{user}")
            ask = Ask(
                key=key,
                user=str(user),
                channel=str(self.fake.channel_id),
                text=f"bench-{key} a lighthouse at dusk, seen from the sea",
            )
            payload = self.fake.interaction_slash_command(
                "imagine",
                [
                    {"name": "prompt", "type": 3, "value": ask.text},
                    {"name": "size", "type": 3, "value": size},
                ],
                user_id=user,
            )
            self._payloads[key] = payload
            self._by_interaction[payload["id"]] = ask
            self._by_token[payload["token"]] = ask
            self._by_user[ask.user] = ask
            self.asks[key] = ask
            asks.append(ask)
        return asks

    async def send(self, ask: Ask) -> None:
        ask.sent_at = time.monotonic()
        await self.fake.dispatch("INTERACTION_CREATE", self._payloads[ask.key])

    async def burst(self, asks: Sequence[Ask]) -> None:
        """Every interaction dispatched back to back over the gateway; the fake times each
        from its own dispatch."""
        for ask in asks:
            await self.send(ask)

    async def wait(self, asks: Sequence[Ask], *, within: float) -> bool:
        """Until every request is settled, or was never acked in time, or the time is up."""

        def done() -> bool:
            self.scan()
            now = time.monotonic()
            return all(
                a.settled or (not a.acked and now - a.sent_at > _INTERACTION_TTL + 1) for a in asks
            )

        try:
            await self.fake.wait_until(done, within, lambda: "results still missing")
        except TimeoutError:
            return False
        return True

    async def _watch(self) -> None:
        while True:
            try:
                await self.fake.wait_until(lambda: bool(self.scan()) and False, 3600.0)
            except TimeoutError:
                continue

    def scan(self) -> None:
        """Reads the REST calls FakeDiscord recorded since the last scan into the asks."""
        calls = self.fake.calls
        now = time.monotonic()
        while self._calls_seen < len(calls):
            call = calls[self._calls_seen]
            self._calls_seen += 1
            ok = 200 <= call.status < 300
            body = call.json if isinstance(call.json, dict) else {}
            found = _CALLBACK.fullmatch(call.path)
            if found is not None and call.method == "POST":
                ask = self._by_interaction.get(found.group(1))
                if ask is None:
                    continue
                data = body.get("data") or {}
                if body.get("type") == 5 and ok:
                    ask.ack_status = 200
                    ask.ack_seconds = call.since_dispatch or math.nan
                    ask.announced_at = ask.sent_at + ask.ack_seconds
                elif body.get("type") == 4 and int(data.get("flags") or 0) & _EPHEMERAL:
                    ask.ack_status = 200
                    ask.ack_seconds = call.since_dispatch or math.nan
                    ask.refused = True
                continue
            found = _WEBHOOK.fullmatch(call.path)
            if found is not None:
                ask = self._by_token.get(found.group(1))
            elif _CHANNEL_MESSAGE.fullmatch(call.path) and call.method in ("POST", "PATCH"):
                mention = _MENTION.search(str(body.get("content") or ""))
                ask = self._by_user.get(mention.group(1)) if mention else None
            else:
                continue
            if ask is None or not ok:
                continue
            if call.files:
                ask.delivered_at.append(now)
            elif str(body.get("content") or "").startswith(_WARNING):
                if int(body.get("flags") or 0) & _EPHEMERAL:
                    ask.refused = True
                else:
                    ask.failed = True
        self._api.scan(self.asks)
