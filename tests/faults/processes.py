"""An adapter (`python -m bots.slack` or `bots.discord`) in a child process, for SIGKILL.

Each start is a new process over the same SQLite file, logging to its own file; the test
process keeps the fakes, so what users saw survives every kill.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.bots.test_slack_app import SECRET
from tests.conftest import API_KEY
from tests.fakes.discord import FakeDiscord
from tests.fakes.gemini import FakeGemini
from tests.fakes.slack import FakeSlack

REPO = Path(__file__).resolve().parents[2]
READY = {
    "slack": re.compile(r"Slack: listening on http://[^ ]+?:(\d+)/slack/events"),
    "discord": re.compile(r"connected to Discord as "),
}
OWN_SETTINGS = ("GEMINI_", "IMAGEBOT_", "SLACK_", "DISCORD_", "DATABASE_URL", "PORT")
START_TIMEOUT = 20.0


def slack_settings(fake: FakeSlack) -> dict[str, str]:
    """HTTP mode on any free port, against FakeSlack."""
    return {
        "SLACK_BOT_TOKEN": fake.bot_token,
        "SLACK_SIGNING_SECRET": SECRET,
        "SLACK_API_URL": fake.api_url,
        "PORT": "0",
    }


def discord_settings(fake: FakeDiscord) -> dict[str, str]:
    return {
        "DISCORD_BOT_TOKEN": fake.token,
        "DISCORD_API_URL": fake.api_url,
        "DISCORD_GATEWAY_URL": fake.gateway_url,
        "DISCORD_FILE_HOSTS": "127.0.0.1",
    }


@dataclass
class AdapterProcesses:
    """Starts, kills and stops one platform's adapter process, one process at a time."""

    platform: str
    workdir: Path
    gemini: FakeGemini
    settings: dict[str, str] = field(default_factory=dict)
    started: int = 0
    process: asyncio.subprocess.Process | None = None
    ready: re.Match[str] | None = None  # the log line that said the process was ready

    @property
    def db(self) -> Path:
        return self.workdir / "imagebot.sqlite3"

    def log(self) -> Path:
        return self.workdir / f"{self.platform}-{self.started}.log"

    def env(self) -> dict[str, str]:
        env = {k: v for k, v in os.environ.items() if not k.startswith(OWN_SETTINGS)}
        env.update(
            {
                "GEMINI_API_KEY": API_KEY,
                "GEMINI_BASE_URL": self.gemini.base_url,
                "GEMINI_RETRY_BACKOFF_SECONDS": "0.05",
                "DATABASE_URL": f"sqlite:///{self.db}",  # unless the settings name another
                "IMAGEBOT_LOG_LEVEL": "INFO",
                "PYTHONPATH": str(REPO),
                **self.settings,
            }
        )
        return env

    async def start(self) -> None:
        """A new process; returns once it says it is ready for the platform."""
        assert self.process is None, "one process at a time"
        self.started += 1
        with self.log().open("wb") as log:
            # the working directory holds no .env, so only these settings apply
            self.process = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                f"bots.{self.platform}",
                cwd=self.workdir,
                env=self.env(),
                stdin=asyncio.subprocess.DEVNULL,
                stdout=log,
                stderr=log,
            )
        loop = asyncio.get_running_loop()
        deadline = loop.time() + START_TIMEOUT
        while loop.time() < deadline:
            self.ready = READY[self.platform].search(self.log().read_text(errors="replace"))
            if self.ready is not None:
                return
            if self.process.returncode is not None:
                break
            await asyncio.sleep(0.05)
        raise AssertionError(f"the {self.platform} process did not start:\n{self.tail()}")

    def tail(self, lines: int = 40) -> str:
        text = self.log().read_text(errors="replace") if self.log().exists() else ""
        return "\n".join(text.splitlines()[-lines:])

    async def kill(self) -> None:
        """SIGKILL: no shutdown, no lease handed back."""
        assert self.process is not None
        self.process.send_signal(signal.SIGKILL)
        await self.process.wait()
        self.process = None

    async def stop(self) -> None:
        """SIGTERM, as a platform stops a process; killed if it hangs."""
        if self.process is None:
            return
        if self.process.returncode is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.process.wait(), 15)
            except TimeoutError:
                self.process.kill()
                await self.process.wait()
        self.process = None


async def slack_command(procs: AdapterProcesses, fake: FakeSlack, text: str) -> None:
    """/imagine to the Slack process, signed as Slack signs it; it must be acknowledged."""
    body = fake.slash_command_body(text, user_id="U1", channel_id="C1")
    await _post(procs, fake, body, f"/imagine {text!r}")


async def slack_event(procs: AdapterProcesses, fake: FakeSlack, event: dict[str, Any]) -> None:
    """An event to the Slack process, signed; it must be acknowledged."""
    await _post(procs, fake, fake.event_body(event), f"the {event['type']} event")


async def _post(
    procs: AdapterProcesses, fake: FakeSlack, body: tuple[bytes, str], what: str
) -> None:
    assert procs.ready is not None
    url = f"http://127.0.0.1:{procs.ready.group(1)}/slack/events"
    status, _, _ = await fake.post_to_app(url, *body, signing_secret=SECRET)
    assert status == 200, f"{what} was not acknowledged ({status})"
