"""Discord's ack over HTTP interactions: signed /imagine POSTs to the bot's endpoint, timed
from the first byte sent to the last byte of the answer, beside a bare aiohttp server that
answers the same bursts (the floor).

The bot runs as HTTP workers do (DISCORD_PUBLIC_KEY, DISCORD_GATEWAY=false); each answer it
gives is handed to FakeDiscord as Discord would take it, so the images that follow are
delivered through the interactions' webhooks as usual.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench import rawhttp, stack
from bench.discord_load import FIRST_USER, _quiet
from bench.measure import Spread
from bench.report import Row, ms
from bench.stack import Fakes

COUNT = 200
ROUNDS = 3
ACK_TARGET_SECONDS = 0.050
FLOOR_FACTOR = 1.25
# the floor must answer these, and the bot's first answer must be a deferral
_DEFERRED = {"type": 5}
_USERS_TAKEN = 500_000  # above bench.discord_load's users, so the two never meet


@dataclass
class HttpAcks:
    """The acks of `rounds` bursts of `count`, pooled, and what was refused."""

    count: int
    acks: list[float]
    failed: int

    @property
    def spread(self) -> Spread:
        return Spread.of(self.acks)

    def as_json(self) -> dict[str, Any]:
        spread = self.spread
        return {
            "count": spread.count,
            "p50": spread.p50,
            "p99": spread.p99,
            "max": spread.worst,
            "failed": self.failed,
        }


class _Bursts:
    """Signed /imagine interactions from new users, posted all at once to one URL."""

    def __init__(self, fakes: Fakes) -> None:
        self.fake = fakes.discord
        self._users = FIRST_USER + _USERS_TAKEN

    def payloads(self, tag: str, count: int) -> list[dict[str, Any]]:
        made = []
        for n in range(count):
            self._users += 1
            self.fake.add_user(self._users, f"http{self._users}")
            made.append(
                self.fake.interaction_slash_command(
                    "imagine",
                    [{"name": "prompt", "type": 3, "value": f"http-{tag}{n:04d} a lighthouse"}],
                    user_id=self._users,
                )
            )
        return made

    async def burst(self, port: int, payloads: list[dict[str, Any]]) -> tuple[list[float], int]:
        """The ack times of the answers that were deferrals, and how many were not."""
        url = f"http://127.0.0.1:{port}/discord/interactions"
        requests = []
        for payload in payloads:
            body = json.dumps(payload, separators=(",", ":")).encode()
            requests.append(rawhttp.post_bytes(url, body, self.fake.signed_headers(body)))

        async def one(request: bytes) -> tuple[int, float, bytes]:
            try:
                return await rawhttp.exchange_for_body("127.0.0.1", port, request)
            except (OSError, asyncio.IncompleteReadError):
                return 0, 0.0, b""

        for payload in payloads:
            self.fake.sending_over_http(payload)
        # the answers are handed to the fake once all are in, so that its work on them (a
        # message for each) is not timed as the endpoint's
        exchanged = await asyncio.gather(*(one(request) for request in requests))
        acks = []
        for payload, (status, seconds, raw) in zip(payloads, exchanged, strict=True):
            answer = json.loads(raw) if status == 200 else None
            await self.fake.answered_over_http(payload, status, answer)
            if answer == _DEFERRED:
                acks.append(seconds)
        return acks, len(payloads) - len(acks)

    async def rounds(
        self,
        name: str,
        port: int,
        pid: int,
        count: int,
        rounds: int,
        progress: Callable[[str], None],
        *,
        settle: float | None = None,
    ) -> HttpAcks:
        """`rounds` bursts of `count`, each once process `pid` is idle (and, with `settle`,
        its images delivered within that many seconds)."""
        acks: list[float] = []
        failed = 0
        for r in range(rounds):
            progress(f"discord http ack: {name}, {count} in flight, round {r + 1} of {rounds}")
            payloads = self.payloads(f"{name[0]}{r}x", count)
            await _quiet(pid)
            times, refused = await self.burst(port, payloads)
            acks += times
            failed += refused
            if settle is not None:
                await self.delivered(payloads, settle)
        return HttpAcks(count, acks, failed)

    async def delivered(self, payloads: list[dict[str, Any]], within: float) -> None:
        """Until every interaction's response shows its image (or a failure)."""
        wanted = {p["id"] for p in payloads}

        def done() -> bool:
            finished = {
                (m.interaction_metadata or {}).get("id")
                for messages in self.fake.messages.values()
                for m in messages
                if m.attachments or m.content.startswith("⚠️")
            }
            return wanted <= finished

        await self.fake.wait_until(done, within, lambda: "not every image was delivered")


async def _serving(port: int, process: asyncio.subprocess.Process) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 30
    while not await _healthy(port):
        if process.returncode is not None or loop.time() > deadline:
            raise RuntimeError(f"the floor did not serve on port {port}")
        await asyncio.sleep(0.05)


async def http_ack_rows(
    fakes: Fakes,
    workdir: Path,
    *,
    count: int = COUNT,
    rounds: int = ROUNDS,
    progress: Callable[[str], None] = lambda line: None,
) -> dict[str, HttpAcks]:
    """`rounds` bursts of `count` at the bot, then at the floor; {"bot": ..., "floor": ...}.

    Before each burst the last one's images are delivered and the process is idle. The bot
    has made one image first (its first request pays one-time costs)."""
    bursts = _Bursts(fakes)
    port = stack.free_port()
    env = stack.bot_env(
        fakes,
        "discord",
        workdir,
        {
            "DISCORD_PUBLIC_KEY": fakes.discord.public_key,
            "DISCORD_GATEWAY": "false",
            "PORT": str(port),
        },
    )
    bot = stack.BotProcess("discord", env, workdir)
    results: dict[str, HttpAcks] = {}
    await bot.start()
    try:
        await bot.wait_until(lambda: _healthy(port))
        warm = bursts.payloads("warm", 1)
        await bursts.burst(port, warm)
        await bursts.delivered(warm, 60)
        settle = 120 + 3 * count * fakes.gemini.latency
        results["bot"] = await bursts.rounds(
            "bot", port, bot.pid, count, rounds, progress, settle=settle
        )
    finally:
        code = await bot.stop()
        if code not in (0, None):
            raise RuntimeError(f"the discord bot ended with {code}:\n{bot.tail()}")
    floor_port = stack.free_port()
    floor = await _start_floor(floor_port, fakes.discord.public_key, workdir)
    try:
        await _serving(floor_port, floor)
        results["floor"] = await bursts.rounds(
            "floor", floor_port, floor.pid, count, rounds, progress
        )
    finally:
        if floor.returncode is None:
            floor.terminate()
        await floor.wait()
    return results


def rows(acks: dict[str, HttpAcks]) -> list[Row]:
    """The row for the report: the bot's p99 against 50 ms and against 1.25x the floor's."""
    bot, floor = acks.get("bot"), acks.get("floor")
    if bot is None or floor is None:
        return []
    mine, least = bot.spread, floor.spread
    failed = f", {bot.failed} not deferred" if bot.failed else ""
    return [
        Row(
            f"ack latency over HTTP interactions, {bot.count} in flight (imagebot vs bare aiohttp)",
            "Discord",
            f"p50 {ms(mine.p50)}, p99 {ms(mine.p99)} (n={mine.count}{failed}); bare aiohttp "
            f"p50 {ms(least.p50)}, p99 {ms(least.p99)}; {mine.p99 / least.p99:.2f}x",
            f"p99 <= {ms(ACK_TARGET_SECONDS)} and <= {FLOOR_FACTOR}x bare",
            bot.failed == 0
            and mine.p99 <= ACK_TARGET_SECONDS
            and mine.p99 <= FLOOR_FACTOR * least.p99,
        )
    ]


async def _healthy(port: int) -> bool:
    return await rawhttp.get_status("127.0.0.1", port, "/healthz") == 200


async def _start_floor(port: int, public_key: str, workdir: Path) -> asyncio.subprocess.Process:
    env = {**os.environ, "PYTHONPATH": str(stack.REPO)}
    with (workdir / "http-floor.log").open("wb") as log:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.discord_http",
            str(port),
            public_key,
            cwd=workdir,
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=log,
            stderr=log,
            preexec_fn=stack._end_with_parent,
        )


# The floor: the least a correct endpoint does -------------------------------------------------


def _floor_main(port: int, public_key: str) -> None:
    """A bare aiohttp server: reads the body, verifies its Ed25519 signature (what any
    endpoint must do before anything else), parses the JSON and answers a deferral. No
    timestamp window, no store, no discord.py."""
    from aiohttp import web
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    key = Ed25519PublicKey.from_public_bytes(bytes.fromhex(public_key))

    async def interactions(request: web.Request) -> web.Response:
        body = await request.read()
        stamp = request.headers.get("X-Signature-Timestamp", "")
        try:
            key.verify(
                bytes.fromhex(request.headers.get("X-Signature-Ed25519", "")), stamp.encode() + body
            )
        except (InvalidSignature, ValueError):
            return web.Response(status=401)
        payload = json.loads(body)
        return web.json_response({"type": 1} if payload["type"] == 1 else _DEFERRED)

    async def healthz(request: web.Request) -> web.Response:
        return web.Response(text="ok")

    app = web.Application()
    app.router.add_post("/discord/interactions", interactions)
    app.router.add_get("/healthz", healthz)
    web.run_app(app, host="127.0.0.1", port=port, access_log=None, backlog=1024, print=None)


if __name__ == "__main__":
    _floor_main(int(sys.argv[1]), sys.argv[2])
