"""Where a job shows up in Slack: its channel, thread and status message, kept in the job."""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import Any

from core.jobs import Job


@dataclass(frozen=True)
class Target:
    """The delivery address stored with a job (core keeps it as an opaque dict).

    The status message goes into `thread_ts` (None: the channel itself). Images go into
    the thread of the status message, except in a DM's main view (`threaded` False), where
    they follow the status message directly.
    """

    channel: str
    user: str
    thread_ts: str | None = None
    ts: str | None = None  # the status message, once posted
    threaded: bool = True

    @property
    def results_thread(self) -> str | None:
        """The thread the images, and any later turn of the conversation, go into."""
        return self.thread_ts or (self.ts if self.threaded else None)

    @property
    def status_key(self) -> str | None:
        return f"{self.channel}:{self.ts}" if self.ts else None

    def follow_up(self, user: str) -> Target:
        """Where a new request made from this job's result (re-roll, upscale, edit) goes."""
        return Target(self.channel, user, thread_ts=self.results_thread, threaded=self.threaded)

    def posted(self, ts: str) -> Target:
        return replace(self, ts=ts)

    def as_dict(self) -> dict[str, Any]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def of(cls, job: Job) -> Target:
        raw = job.target
        return cls(
            channel=str(raw.get("channel", "")),
            user=str(raw.get("user") or job.user_id),
            thread_ts=_str_or_none(raw.get("thread_ts")),
            ts=_str_or_none(raw.get("ts")),
            threaded=bool(raw.get("threaded", True)),
        )


def _str_or_none(value: Any) -> str | None:
    return str(value) if value else None
