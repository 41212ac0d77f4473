"""The system under test: the fakes in this process, and the real bot in a process of its own."""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import os
import signal
import socket
import sys
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from aiohttp import web

from bench.measure import Memory, memory
from tests.fakes.discord import FakeDiscord
from tests.fakes.gemini import FakeGemini
from tests.fakes.slack import FakeSlack

REPO = Path(__file__).resolve().parents[1]
API_KEY = "bench-key"
SIGNING_SECRET = "bench-signing-secret"
# Settings the bot must not pick up from whoever runs the bench: the bench sets what it needs.
_PR_SET_PDEATHSIG = 1
LISTEN_BACKLOG = 4096
_OWN_PREFIXES = ("GEMINI_", "IMAGEBOT_", "SLACK_", "DISCORD_", "DATABASE_URL", "PORT")


@dataclass
class Fakes:
    gemini: FakeGemini
    slack: FakeSlack
    discord: FakeDiscord

    async def stop(self) -> None:
        await self.discord.stop()
        await self.slack.stop()
        await self.gemini.stop()


async def start_fakes(*, latency: float, photo: str) -> Fakes:
    gemini = FakeGemini(api_key=API_KEY, latency=latency, photo=photo)
    await gemini.start("127.0.0.1", 0)
    slack = FakeSlack()
    await slack.start()
    discord = FakeDiscord()
    await discord.start()
    for fake in (gemini, slack, discord):
        _deepen_backlog(fake._runner)
    return Fakes(gemini, slack, discord)


def _deepen_backlog(runner: web.AppRunner | None) -> None:
    """Let the fakes queue as many connections as the real services would.

    aiohttp listens with a backlog of 128; when the bot opens a couple of hundred connections
    at once (discord.py answering 200 interactions), the kernel drops the SYNs past that,
    the bot retries a second later, and the fake, not the bot, would set the latency.
    Listening again on a listening socket only changes its backlog.
    """
    assert runner is not None
    for site in runner.sites:
        server = getattr(site, "_server", None)
        for listening in getattr(server, "sockets", ()) or ():
            # asyncio hands out a wrapper without listen(); a duplicate shares the socket
            with socket.fromfd(listening.fileno(), listening.family, listening.type) as dup:
                dup.listen(LISTEN_BACKLOG)


def bot_env(fakes: Fakes, platform: str, workdir: Path, extra: Mapping[str, str]) -> dict[str, str]:
    """Environment for the bot: the fakes on 127.0.0.1, a fresh database, default settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(_OWN_PREFIXES)}
    env.update(
        PYTHONPATH=str(REPO),
        GEMINI_API_KEY=API_KEY,
        GEMINI_BASE_URL=fakes.gemini.base_url,
        DATABASE_URL=f"sqlite:///{workdir / 'imagebot.sqlite3'}",
        IMAGEBOT_OUTPUT_DIR=str(workdir / "out"),
    )
    if platform == "slack":
        env.update(
            SLACK_BOT_TOKEN=fakes.slack.bot_token,
            SLACK_SIGNING_SECRET=SIGNING_SECRET,
            SLACK_API_URL=fakes.slack.api_url,
            PORT=str(free_port()),
        )
    elif platform == "discord":
        env.update(
            DISCORD_BOT_TOKEN=fakes.discord.token,
            DISCORD_API_URL=fakes.discord.api_url,
            DISCORD_GATEWAY_URL=fakes.discord.gateway_url,
        )
    env.update(extra)
    return env


def _end_with_parent() -> None:
    """In the child before exec: a SIGTERM when the bench dies, so no bot is left running."""
    libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
    libc.prctl(_PR_SET_PDEATHSIG, signal.SIGTERM)


def free_port() -> int:
    """A port nothing listens on now (the bot binds it a moment later)."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


class BotProcess:
    """`python -m bots.<platform>` with its log in a file; its memory read from /proc."""

    def __init__(self, platform: str, env: dict[str, str], workdir: Path) -> None:
        self.platform = platform
        self.env = env
        self.workdir = workdir
        self.log_path = workdir / f"{platform}.log"
        self.process: asyncio.subprocess.Process | None = None

    @property
    def pid(self) -> int:
        assert self.process is not None
        return self.process.pid

    async def start(self) -> None:
        self.workdir.mkdir(parents=True, exist_ok=True)
        with self.log_path.open("wb") as log:
            # cwd is the work directory, so a developer's .env in the repository is not read
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                f"bots.{self.platform}",
                cwd=self.workdir,
                env=self.env,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                preexec_fn=_end_with_parent,
            )

    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    async def wait_until(self, ready: Callable[[], Awaitable[bool]], within: float = 30.0) -> None:
        """Polls `ready()` until it is true; fails if the bot exits or time runs out."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + within
        while not await ready():
            assert self.process is not None
            if self.process.returncode is not None:
                raise RuntimeError(f"the bot exited ({self.process.returncode}):\n{self.tail()}")
            if loop.time() > deadline:
                raise TimeoutError(f"the bot was not ready within {within:g} s:\n{self.tail()}")
            await asyncio.sleep(0.05)

    def tail(self, lines: int = 30) -> str:
        return "\n".join(self.log().splitlines()[-lines:])

    def memory(self) -> Memory:
        return memory(self.pid)

    async def stop(self, grace: float = 30.0) -> int | None:
        """SIGTERM (a graceful stop), then SIGKILL if it does not end in time."""
        if self.process is None or self.process.returncode is not None:
            return None if self.process is None else self.process.returncode
        self.process.send_signal(signal.SIGTERM)
        try:
            return await asyncio.wait_for(self.process.wait(), grace)
        except TimeoutError:
            self.process.kill()
            return await self.process.wait()
