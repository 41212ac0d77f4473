"""Interactions are answered over kept-alive connections: one opened for an answer is still
used minutes later (discord.py alone dropped it after 15 s idle), and an answer whose
kept-alive connection drops as it is reused is sent again on another.

Connections are told apart at FakeDiscord's HTTP server: aiohttp makes one request handler
per TCP connection, and each request names the handler it came in on. Time passes for the
bot's connection pool only (aiohttp's clock is moved on); nothing here sleeps.
"""

from __future__ import annotations

import re
import time
from pathlib import Path
from typing import Any

import aiohttp.connector
import pytest
import yarl

from bots.discord.app import KEEPALIVE_SECONDS
from tests.bots.test_discord_harness import (
    CALLBACK,
    Bot,
    assert_every_interaction_answered_in_time,
    callbacks,
    discord_server,
    running_bot,
)
from tests.fakes.discord import API_PREFIX, JSON, FakeDiscord
from tests.fakes.gemini import FakeGemini
from tests.faults.checks import poll_until

# the API answers after the test is over: no image is made, and no progress is shown
QUIET = {
    "IMAGEBOT_SHUTDOWN_GRACE_SECONDS": 0,
    "IMAGEBOT_PROGRESS_INTERVAL_SECONDS": 600,
}
SLOW_API_SECONDS = 600.0
FIRST_USER = 7_000_000


class Connections:
    """The TCP connections FakeDiscord's server accepts, and which of them carried each
    interaction callback. Only connections made after it is installed are seen."""

    def __init__(self, fake: FakeDiscord) -> None:
        assert fake._runner is not None and fake._runner.server is not None
        server = fake._runner.server
        self.opened: list[Any] = []  # each connection's handler, kept so no id is reused
        self.of_callback: dict[str, Any] = {}  # interaction id -> its connection's handler
        self.drop_next_callback = False
        self.dropped: list[str] = []
        made, make_request = server.connection_made, server.request_factory

        def connection_made(handler: Any, transport: Any) -> None:
            self.opened.append(handler)
            made(handler, transport)

        def request_factory(message: Any, payload: Any, protocol: Any, *args: Any) -> Any:
            path = str(message.path).split("?", 1)[0].removeprefix(API_PREFIX)
            if message.method == "POST" and re.fullmatch(CALLBACK, path):
                interaction_id = path.split("/")[2]
                if self.drop_next_callback:
                    # the connection closes before the request is handled, as a kept-alive
                    # connection does when the other end drops it just as it is reused
                    self.drop_next_callback = False
                    self.dropped.append(interaction_id)
                    protocol.transport.abort()
                    gone = yarl.URL("/dropped")
                    message = message._replace(path=str(gone), url=gone)
                else:
                    self.of_callback[interaction_id] = protocol
            return make_request(message, payload, protocol, *args)

        server.connection_made = connection_made  # type: ignore[method-assign]
        server.request_factory = request_factory


async def _imagine(bot: Bot, user: int) -> JSON:
    """One /imagine, answered, its job shown as queued and then as generating, and every
    connection the bot used for it back in its pool, idle."""
    pool = bot.app.client.http.connector
    # connections lent out, by aiohttp's own count (it has no public one); when the bot is
    # idle, only its gateway connection
    held = len(pool._acquired)
    bot.fake.add_user(user, f"user{user}")
    requests = len(bot.gemini.requests)
    payload = await bot.slash({"prompt": "a lighthouse at dusk"}, user=user)
    await bot.callback(payload)
    edits = rf"/webhooks/\d+/{payload['token']}/messages/[^/]+"
    await bot.fake.wait_for_call("PATCH", edits, count=2)  # queued, then generating
    await bot.gemini.wait_for_requests(requests + 1)
    await poll_until(lambda: len(pool._acquired) == held, timeout=5, what="idle connections")
    return payload


def _later(monkeypatch: pytest.MonkeyPatch, seconds: float) -> None:
    """From now on aiohttp's connection pools see the time `seconds` later."""
    now = time.monotonic
    monkeypatch.setattr(aiohttp.connector, "monotonic", lambda: now() + seconds)


@pytest.mark.parametrize(
    ("idle_seconds", "reused"),
    # past aiohttp's (and so discord.py's) 15 s but within the bot's keep-alive; then past it
    [(60, True), (KEEPALIVE_SECONDS + 1, False)],
)
async def test_an_answer_after_a_lull_reuses_its_connection_within_the_keep_alive(
    tmp_path: Path,
    fake_gemini: FakeGemini,
    monkeypatch: pytest.MonkeyPatch,
    idle_seconds: float,
    reused: bool,
) -> None:
    fake_gemini.latency = SLOW_API_SECONDS
    async with discord_server() as fake:
        seen = Connections(fake)
        async with running_bot(tmp_path, fake_gemini, fake, **QUIET) as bot:
            first = await _imagine(bot, FIRST_USER)
            opened = len(seen.opened)
            _later(monkeypatch, idle_seconds)
            second = await _imagine(bot, FIRST_USER + 1)

        same = seen.of_callback[second["id"]] is seen.of_callback[first["id"]]
        assert same == reused
        if reused:
            assert len(seen.opened) == opened  # nor the queued message's edit
        assert_every_interaction_answered_in_time(fake)


async def test_an_answer_whose_kept_alive_connection_drops_is_sent_again(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    fake_gemini.latency = SLOW_API_SECONDS
    async with discord_server() as fake:
        seen = Connections(fake)
        async with running_bot(tmp_path, fake_gemini, fake, **QUIET) as bot:
            await _imagine(bot, FIRST_USER)
            seen.drop_next_callback = True
            payload = await _imagine(bot, FIRST_USER + 1)

    dropped = str(payload["id"])
    assert seen.dropped == [dropped]
    answers = [c for c in callbacks(fake) if c.path.split("/")[2] == dropped]
    assert [(c.json["type"], c.status) for c in answers] == [(5, 200)]
    assert_every_interaction_answered_in_time(fake)
