"""Known fake secrets, and logging as production configures it, captured for inspection."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest

from core.config import Settings
from core.runtime import configure_logging

# Distinctive values, long enough for the log scrubber, each unlike any other string in a run.
GEMINI_KEY = "sk-gemini-SECRET-5b1f0c9e7a2d4e6f"
SLACK_BOT_TOKEN = "xoxb-4242-SECRET-bot-9d8c7b6a5f4e"
SLACK_APP_TOKEN = "xapp-1-A0001-SECRET-app-3e2d1c0b"
SLACK_SIGNING_SECRET = "SECRET-signing-1a2b3c4d5e6f7a8b"
DISCORD_TOKEN = "MTAwMA.SECRET-discord.Zk9y8x7w6v5u4t"
SECRETS = {
    "GEMINI_API_KEY": GEMINI_KEY,
    "SLACK_BOT_TOKEN": SLACK_BOT_TOKEN,
    "SLACK_APP_TOKEN": SLACK_APP_TOKEN,
    "SLACK_SIGNING_SECRET": SLACK_SIGNING_SECRET,
    "DISCORD_BOT_TOKEN": DISCORD_TOKEN,
}


def leaked(text: str) -> list[str]:
    """The names of the secrets that appear in `text`."""
    return [name for name, value in SECRETS.items() if value in text]


def assert_no_secret(where: str, values: Iterable[Any]) -> None:
    """Every value (strings, or anything JSON can show) is free of every secret."""
    for value in values:
        text = value if isinstance(value, str) else json.dumps(value, default=repr)
        found = leaked(text)
        assert not found, f"{', '.join(found)} leaked into {where}: {text[:300]!r}"


@dataclass
class CapturedLogs:
    """What the configured root handler wrote, and the records as loggers made them."""

    stream: io.StringIO
    caplog: pytest.LogCaptureFixture

    @property
    def text(self) -> str:
        return self.stream.getvalue()

    @property
    def raw(self) -> str:
        """The records as caplog formatted them when they were emitted, before the scrubber
        (which edits records in place) had run: a secret here was handed to logging."""
        return self.caplog.text

    def unhandled(self) -> list[str]:
        """ERROR lines with a traceback: exceptions nobody handled."""
        return [
            f"{r.name}: {r.getMessage()[:200]}"
            for r in self.caplog.records
            if r.levelno >= logging.ERROR and r.exc_info
        ]


@pytest.fixture
def production_logging(
    caplog: pytest.LogCaptureFixture,
) -> Iterator[Callable[[Settings], CapturedLogs]]:
    """`configure(settings)` sets logging up as `imagebot run` does and returns the capture.

    caplog's handler goes in front of the configured one, so it formats each record before
    the secret scrubber touches it.
    """
    root = logging.getLogger()
    level, httpx_level = root.level, logging.getLogger("httpx").level
    added: list[logging.Handler] = []

    def configure(settings: Settings) -> CapturedLogs:
        configure_logging(settings)
        [handler] = root.handlers
        assert isinstance(handler, logging.StreamHandler)
        stream = io.StringIO()
        handler.setStream(stream)
        root.handlers.insert(0, caplog.handler)
        added.extend(root.handlers)
        return CapturedLogs(stream, caplog)

    yield configure
    for handler in added:
        root.removeHandler(handler)
    root.setLevel(level)
    logging.getLogger("httpx").setLevel(httpx_level)
