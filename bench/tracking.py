"""What happened to each request, as the fakes saw it: one record per request, by key."""

from __future__ import annotations

import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field

from tests.fakes.gemini import FakeGemini, RecordedRequest

KEY = re.compile(r"\bbench-([a-z0-9]+)\b")


@dataclass
class Ask:
    """One request the bench sends, and the times the fakes recorded for it (monotonic s)."""

    key: str
    user: str
    channel: str
    text: str
    sent_at: float = math.nan
    ack_seconds: float = math.nan
    ack_status: int | None = None
    announced_at: float = math.nan  # the status message ("queued") was posted
    api_received_at: float = math.nan
    api_answered_at: float = math.nan
    api_calls: int = 0
    delivered_at: list[float] = field(default_factory=list)  # the image reached the platform
    refused: bool = False  # answered with a reason instead of a job
    failed: bool = False  # the job ended with a message saying why

    @property
    def acked(self) -> bool:
        return self.ack_status == 200

    @property
    def settled(self) -> bool:
        return bool(self.delivered_at) or self.refused or self.failed

    @property
    def end_to_end(self) -> float:
        return self.delivered_at[0] - self.sent_at if self.delivered_at else math.nan

    @property
    def api_seconds(self) -> float:
        return self.api_answered_at - self.api_received_at

    @property
    def overhead(self) -> float:
        """Time the bot added: end to end, less the image API's own time."""
        return self.end_to_end - self.api_seconds

    @property
    def before_api(self) -> float:
        """Request sent until the image API got it: ack, submit, queue wait, history."""
        return self.api_received_at - self.sent_at

    @property
    def after_api(self) -> float:
        """The image API's answer sent until the image was delivered."""
        return self.delivered_at[0] - self.api_answered_at if self.delivered_at else math.nan

    @property
    def queue_wait(self) -> float:
        """Status message posted until the image API got the request."""
        return self.api_received_at - self.announced_at


def key_in(text: str) -> str | None:
    found = KEY.search(text)
    return found.group(1) if found else None


def prompt_text(body: object) -> str:
    """The user text of a generateContent request body."""
    if not isinstance(body, dict):
        return ""
    texts = []
    for content in body.get("contents") or []:
        if isinstance(content, dict) and content.get("role") == "user":
            texts += [str(p["text"]) for p in content.get("parts") or [] if "text" in p]
    return " ".join(texts)


class ApiTimes:
    """Reads the fake image API's record into the asks, incrementally."""

    def __init__(self, gemini: FakeGemini) -> None:
        self.gemini = gemini
        self._seen = len(gemini.requests)
        self._unfinished: list[RecordedRequest] = []

    def scan(self, asks: dict[str, Ask]) -> None:
        requests = self.gemini.requests
        fresh, self._seen = requests[self._seen :], len(requests)
        waiting, self._unfinished = self._unfinished + fresh, []
        for record in waiting:
            ask = asks.get(key_in(prompt_text(record.json)) or "")
            if ask is None:
                continue
            if record.status is None or (record.status == 200 and record.answered_at == 0.0):
                # still being answered; a connection that broke mid-answer stays here
                self._unfinished.append(record)
                continue
            ask.api_calls += 1
            if record.status == 200:
                ask.api_received_at = record.received_at
                ask.api_answered_at = record.answered_at
        # the answers' bytes are not needed here and would pile up over a long run
        self.gemini.responses.clear()


def outcome_counts(asks: Iterable[Ask]) -> dict[str, int]:
    listed = list(asks)
    return {
        "sent": len(listed),
        "acked": sum(a.acked for a in listed),
        "delivered": sum(bool(a.delivered_at) for a in listed),
        "refused": sum(a.refused for a in listed),
        "failed": sum(a.failed for a in listed),
        "lost": sum(a.acked and not a.settled for a in listed),
        "duplicated": sum(len(a.delivered_at) > 1 for a in listed),
    }
