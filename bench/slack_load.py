"""Load through the Slack adapter in HTTP mode: signed slash commands in, uploads watched."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import math
import time
from collections.abc import Sequence
from urllib.parse import urlencode, urlsplit

from bench import rawhttp
from bench.tracking import ApiTimes, Ask
from tests.fakes.gemini import FakeGemini
from tests.fakes.slack import FakeSlack


class SlackLoad:
    """Sends `/imagine` commands to the bot and follows each one through FakeSlack's record.

    Every request has its own user and channel, so each stays under the per-user limit and
    every message the bot posts can be traced back to the request it answers.
    """

    def __init__(self, fake: FakeSlack, gemini: FakeGemini, url: str, secret: str) -> None:
        self.fake = fake
        self.url = url
        self.secret = secret
        self.asks: dict[str, Ask] = {}
        self._api = ApiTimes(gemini)
        self._by_channel: dict[str, Ask] = {}
        self._by_response_url: dict[str, Ask] = {}
        self._bodies: dict[str, bytes] = {}
        # what the fake recorded before this load began belongs to another bot process
        self._calls_seen = len(fake.calls)
        self._posts_seen = len(fake.response_url_posts)
        address = urlsplit(url)
        self._host, self._port = address.hostname or "127.0.0.1", address.port or 80

    async def close(self) -> None:
        pass

    def prepare(self, tag: str, count: int, size: str) -> list[Ask]:
        asks = []
        for n in range(count):
            key = f"{tag}{n:04d}"
            ask = Ask(
                key=key,
                user=f"U{key.upper()}",
                channel=f"C{key.upper()}",
                text=f"bench-{key} a lighthouse at dusk, seen from the sea --size {size}",
            )
            payload = self.fake.slash_command_payload(
                ask.text, user_id=ask.user, channel_id=ask.channel
            )
            self._bodies[key] = urlencode(payload).encode()
            self._by_response_url[payload["response_url"]] = ask
            self._by_channel[ask.channel] = ask
            self.asks[key] = ask
            asks.append(ask)
        return asks

    def _headers(self, body: bytes) -> dict[str, str]:
        ts = str(int(time.time()))
        signature = hmac.new(
            self.secret.encode(), b"v0:" + ts.encode() + b":" + body, hashlib.sha256
        ).hexdigest()
        return {
            "User-Agent": "Slackbot 1.0 (+https://api.slack.com/robots)",
            "Content-Type": "application/x-www-form-urlencoded",
            "X-Slack-Request-Timestamp": ts,
            "X-Slack-Signature": f"v0={signature}",
        }

    async def send(self, ask: Ask, request: bytes | None = None) -> None:
        if request is None:
            request = self._request(ask)
        ask.sent_at = time.monotonic()
        try:
            ask.ack_status, ask.ack_seconds = await rawhttp.exchange(
                self._host, self._port, request
            )
        except (OSError, asyncio.IncompleteReadError, ValueError):
            ask.ack_status = None

    def _request(self, ask: Ask) -> bytes:
        body = self._bodies[ask.key]
        return rawhttp.post_bytes(self.url, body, self._headers(body))

    async def burst(self, asks: Sequence[Ask]) -> None:
        """Every request at once: built and signed beforehand, so the clock covers only the
        exchange with the bot."""
        built = [(ask, self._request(ask)) for ask in asks]
        await asyncio.gather(*(self.send(ask, request) for ask, request in built))

    async def wait(self, asks: Sequence[Ask], *, within: float) -> bool:
        """Until every acked request is settled (delivered, refused or failed) or the time
        is up; False if some are not."""

        def done() -> bool:
            self.scan()
            return all(a.settled for a in asks if a.acked)

        try:
            await self.fake.wait_until(done, timeout=within, what="the results")
        except TimeoutError:
            return False
        return True

    def scan(self) -> None:
        """Reads what FakeSlack recorded since the last scan into the asks."""
        calls = self.fake.calls
        while self._calls_seen < len(calls):
            call = calls[self._calls_seen]
            self._calls_seen += 1
            channel = str(call.params.get("channel") or call.params.get("channel_id") or "")
            ask = self._by_channel.get(channel)
            if ask is None or not call.response.get("ok"):
                continue
            if call.method == "chat.postMessage" and math.isnan(ask.announced_at):
                ask.announced_at = call.time
            elif call.method == "files.completeUploadExternal":
                ask.delivered_at.append(call.time)
            elif call.method == "chat.update" and str(call.params.get("text", "")).startswith(
                ":warning:"
            ):
                ask.failed = True
        posts = self.fake.response_url_posts
        while self._posts_seen < len(posts):
            post = posts[self._posts_seen]
            self._posts_seen += 1
            ask = self._by_response_url.get(post["url"])
            if ask is not None:
                ask.refused = True
        self._api.scan(self.asks)
