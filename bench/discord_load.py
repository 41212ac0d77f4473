"""Load through the Discord adapter: INTERACTION_CREATE over the gateway, webhooks watched."""

from __future__ import annotations

import asyncio
import json
import math
import os
import re
import sys
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from bench import cpu, phases, stack
from bench.measure import Spread
from bench.stack import Fakes
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

    async def wait_acked(self, asks: Sequence[Ask], *, within: float) -> bool:
        """Until every request was answered (deferred or refused) or can no longer be."""

        def done() -> bool:
            self.scan()
            now = time.monotonic()
            return all(a.acked or now - a.sent_at > _INTERACTION_TTL + 1 for a in asks)

        try:
            await self.fake.wait_until(done, within, lambda: "acks still missing")
        except TimeoutError:
            return False
        return True


# Acknowledgement latency with N in flight: the bot against a bare aiohttp floor ----------------

ACK_COUNTS = (50, 200)
# idle time before each of the bot's bursts: longer than the 15 s discord.py keeps an idle
# connection by default, shorter than the bot's KEEPALIVE_SECONDS
PAUSE_SECONDS = 20.0


class NewConnections:
    """TCP connections FakeDiscord accepts while this is open (REST, gateway or CDN), counted
    at the fake's HTTP server as each is made."""

    def __init__(self, fake: FakeDiscord) -> None:
        runner = fake._runner
        assert runner is not None, "FakeDiscord is not started"
        self.count = 0
        self._server = runner.server
        assert self._server is not None
        self._made = self._server.connection_made

    def __enter__(self) -> NewConnections:
        made = self._made

        def counted(handler: Any, transport: Any) -> None:
            self.count += 1
            made(handler, transport)

        self._server.connection_made = counted  # type: ignore[method-assign]
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._server.connection_made = self._made  # type: ignore[method-assign]


@dataclass
class AckBurst:
    """One burst's acknowledgements, and the connections the fake accepted until the last."""

    count: int
    acks: list[float]
    connections: int

    @property
    def spread(self) -> Spread:
        return Spread.of(self.acks)


def _summary(bursts: Sequence[AckBurst]) -> dict[str, Any]:
    acks = Spread.of([s for b in bursts for s in b.acks])
    return {
        "count": acks.count,
        "p50": acks.p50,
        "p99": acks.p99,
        "max": acks.worst,
        "p50_per_burst": [b.spread.p50 for b in bursts],
        "p99_per_burst": [b.spread.p99 for b in bursts],
        "connections_per_burst": [b.connections for b in bursts],
    }


async def _ack_burst(
    load: DiscordLoad, pid: int, tag: str, count: int, *, pause: float = 0.0
) -> tuple[list[Ask], AckBurst]:
    asks = load.prepare(tag, count, "1K")
    await _quiet(pid)
    await asyncio.sleep(pause)
    with NewConnections(load.fake) as opened:
        await load.burst(asks)
        await load.wait_acked(asks, within=_INTERACTION_TTL + 5)
    acks = [a.ack_seconds for a in asks if a.acked]
    return asks, AckBurst(count, acks, opened.count)


async def _quiet(pid: int, *, window: float = 0.5, within: float = 30.0) -> None:
    """Until process `pid` has used under 2 % of a core for `window` seconds: the images of
    the last burst are delivered before the bot has read Discord's echoes of them, stored
    their ends and let their requests go, and a burst sent then would share the bot with it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    used = cpu.process_seconds(pid)
    while loop.time() < deadline:
        await asyncio.sleep(window)
        now = cpu.process_seconds(pid)
        if now - used < 0.02 * window:
            return
        used = now


async def ack_rows(
    fakes: Fakes,
    workdir: Path,
    *,
    counts: Sequence[int] = ACK_COUNTS,
    rounds: int = 3,
    pause: float = PAUSE_SECONDS,
    bot_env: Mapping[str, str] | None = None,
    progress: Callable[[str], None] = lambda line: None,
) -> dict[str, dict[int, dict[str, Any]]]:
    """Discord ack latency with `counts` interactions in flight, for a fresh bot process and
    for the bare-aiohttp floor, against the same fakes, one after the other.

    Bot: started with default settings (plus `bot_env`), one warm-up generation per size,
    then `rounds` times one burst of each count. Before each burst the bot has finished the
    last one (every image delivered, its CPU idle) and then idled `pause` seconds, as
    between real bursts. Floor: `python -m bench.discord_load` (see `floor_client`), the
    same bursts without the pause (its connections are kept open regardless), each waited
    on until acknowledged. An ack is timed by the fake from its INTERACTION_CREATE dispatch
    to the type-5 callback's handler.

    Returns {"bot": {count: row}, "floor": {count: row}}; a row holds the pooled "count",
    "p50", "p99" and "max" in seconds over its rounds, "p50_per_burst", "p99_per_burst" and
    "connections_per_burst" (TCP connections the fake accepted from the first dispatch to
    the last ack of each burst).
    """
    extra = dict(bot_env or {})
    bot: dict[int, list[AckBurst]] = {n: [] for n in counts}
    floor: dict[int, list[AckBurst]] = {n: [] for n in counts}
    latency = fakes.gemini.latency
    env = stack.bot_env(fakes, "discord", workdir, extra)
    process = stack.BotProcess("discord", env, workdir)
    identified = fakes.discord.identifies
    await process.start()
    try:
        await process.wait_until(_identified_again(fakes.discord, identified))
        load = DiscordLoad(fakes.discord, fakes.gemini)
        try:
            await phases.warm_up(load, latency)
            for r in range(rounds):
                for count in counts:
                    progress(f"discord ack: bot, {count} in flight, round {r + 1} of {rounds}")
                    asks, measured = await _ack_burst(
                        load, process.pid, f"b{count}r{r}x", count, pause=pause
                    )
                    bot[count].append(measured)
                    await load.wait(asks, within=phases.settle_timeout(count, latency, 8))
        finally:
            await load.close()
    finally:
        code = await process.stop()
        if code not in (0, None):
            raise RuntimeError(f"the discord bot ended with {code}:\n{process.tail()}")
    identified = fakes.discord.identifies
    client = await _start_floor(fakes, workdir, warm=max(counts))
    try:
        await _wait_identified(client, fakes.discord, identified)
        load = DiscordLoad(fakes.discord, fakes.gemini)
        try:
            for r in range(rounds):
                for count in counts:
                    progress(f"discord ack: floor, {count} in flight, round {r + 1} of {rounds}")
                    _, measured = await _ack_burst(load, client.pid, f"f{count}r{r}x", count)
                    floor[count].append(measured)
        finally:
            await load.close()
    finally:
        if client.returncode is None:
            client.terminate()
        await client.wait()
    return {
        "bot": {n: _summary(b) for n, b in bot.items()},
        "floor": {n: _summary(b) for n, b in floor.items()},
    }


def _identified_again(fake: FakeDiscord, before: int) -> Callable[[], Awaitable[bool]]:
    async def ready() -> bool:
        if fake.identifies <= before:
            return False
        try:
            await fake.wait_until_ready(timeout=0.2)
        except TimeoutError:
            return False
        return True

    return ready


async def _start_floor(fakes: Fakes, workdir: Path, warm: int) -> asyncio.subprocess.Process:
    """`floor_client` in a process of its own, as the bot runs, its log in `workdir` (made
    when the bot started)."""
    env = {
        **os.environ,
        "PYTHONPATH": str(stack.REPO),
        "DISCORD_BOT_TOKEN": fakes.discord.token,
        "DISCORD_API_URL": fakes.discord.api_url,
        "DISCORD_GATEWAY_URL": fakes.discord.gateway_url,
        # the bot's own, as it identified, so the fake sends the floor the same events
        "FLOOR_INTENTS": str(fakes.discord.intents or 0),
        "FLOOR_WARM": str(warm),
    }
    with (workdir / "floor.log").open("wb") as log:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.discord_load",
            cwd=workdir,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            preexec_fn=stack._end_with_parent,
        )


async def _wait_identified(
    client: asyncio.subprocess.Process, fake: FakeDiscord, before: int, within: float = 30.0
) -> None:
    ready = _identified_again(fake, before)
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not await ready():
        if client.returncode is not None:
            raise RuntimeError(f"the floor client exited ({client.returncode})")
        if loop.time() > deadline:
            raise TimeoutError("the floor client did not identify")
        await asyncio.sleep(0.05)


# The floor: the least any aiohttp client must do to answer the same burst ------------------------


async def floor_client(
    gateway_url: str, api_url: str, token: str, *, intents: int, warm: int
) -> None:
    """A bare gateway client: IDENTIFY with the bot's intents, heartbeat, and for each
    INTERACTION_CREATE the type-5 callback discord.py's `defer(thinking=True)` sends
    (`?with_response=1`, answer read), over a REST session with `warm` connections opened
    at READY and kept alive (as many as the largest burst: every answer finds one open).
    Every other event (READY, GUILD_CREATE, the echoed MESSAGE_CREATEs) is parsed and
    dropped. No checks, no store, no command tree."""
    loads = _json_loads()
    rest = aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(limit=0, keepalive_timeout=3600.0),
        cookie_jar=aiohttp.DummyCookieJar(),
    )
    auth = {"Authorization": f"Bot {token}"}
    answering: set[asyncio.Task[None]] = set()
    seq: int | None = None

    async def callback(interaction_id: str, interaction_token: str) -> None:
        url = f"{api_url}/interactions/{interaction_id}/{interaction_token}/callback"
        async with rest.post(url, params={"with_response": "1"}, json={"type": 5}) as answer:
            await answer.read()

    async def open_connections() -> None:
        async def one() -> None:
            async with rest.get(f"{api_url}/users/@me", headers=auth) as answer:
                await answer.read()

        await asyncio.gather(*(one() for _ in range(warm)))

    async with (
        aiohttp.ClientSession() as gateway,
        gateway.ws_connect(f"{gateway_url}?v=10&encoding=json", max_msg_size=0) as ws,
    ):
        hello = loads((await ws.receive()).data)
        interval = hello["d"]["heartbeat_interval"] / 1000

        async def heartbeat() -> None:
            while True:
                await asyncio.sleep(interval)
                await ws.send_str(json.dumps({"op": 1, "d": seq}))

        beating = asyncio.create_task(heartbeat())
        identify = {
            "token": token,
            "intents": intents,
            "properties": {"os": "linux", "browser": "floor", "device": "floor"},
        }
        await ws.send_str(json.dumps({"op": 2, "d": identify}))
        async for frame in ws:
            if frame.type is not aiohttp.WSMsgType.TEXT:
                break
            message = loads(frame.data)
            seq = message.get("s") or seq
            if message.get("op") != 0:
                continue
            if message["t"] == "INTERACTION_CREATE":
                data = message["d"]
                task = asyncio.create_task(callback(data["id"], data["token"]))
                answering.add(task)
                task.add_done_callback(answering.discard)
            elif message["t"] == "READY":
                await open_connections()
        beating.cancel()
    await rest.close()


def _json_loads() -> Callable[[str | bytes], Any]:
    """The JSON parser discord.py uses: orjson when it is installed."""
    try:
        import orjson
    except ImportError:
        return json.loads
    return orjson.loads


def _floor_main() -> None:
    asyncio.run(
        floor_client(
            os.environ["DISCORD_GATEWAY_URL"],
            os.environ["DISCORD_API_URL"],
            os.environ["DISCORD_BOT_TOKEN"],
            intents=int(os.environ["FLOOR_INTENTS"]),
            warm=int(os.environ["FLOOR_WARM"]),
        )
    )


if __name__ == "__main__":
    _floor_main()
