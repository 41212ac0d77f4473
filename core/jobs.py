"""Jobs: what was asked, where it stands, and what an adapter is handed back."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, Protocol

from core.options import Options
from core.quotas import Limits

JobState = Literal["queued", "running", "succeeded", "failed"]
# "describe" is answered at once (words about an image) and never becomes a job
JobKind = Literal["generate", "reroll", "upscale", "edit", "blend", "vary", "describe"]
OPEN_STATES: tuple[JobState, ...] = ("queued", "running")


@dataclass(frozen=True)
class Job:
    id: str
    idempotency_key: str
    kind: JobKind
    platform: str
    tenant: str
    user_id: str
    conversation_id: int
    user_turn_id: int
    prompt: str
    options: Options  # as resolved at submit: model id, ratio, size, temperature, text
    target: dict[str, Any]  # the adapter's own delivery address, opaque to core
    state: JobState
    seq: int = 0
    model_turn_id: int | None = None
    attempts: int = 0  # runs started (claims)
    api_calls: int = 0
    paid_runs: int = 0  # runs that sent at least one request to the image API
    error_message: str | None = None
    notice: str | None = None
    output_tokens: int = 0
    total_tokens: int = 0
    cost_usd: float = 0.0
    created_at: float = 0.0
    started_at: float | None = None
    finished_at: float | None = None
    delivered_at: float | None = None
    delivery_attempts: int = 0
    # variations (--n): every job of one request names the first one, which shows them all
    group_id: str | None = None

    @property
    def finished(self) -> bool:
        return self.state in ("succeeded", "failed")

    @property
    def leads_group(self) -> bool:
        """Ungrouped, or the first of its variations: the job whose message shows them."""
        return self.group_id is None or self.group_id == self.id


@dataclass(frozen=True)
class ResultImage:
    data: bytes
    mime_type: str
    width: int
    height: int
    sha256: str


@dataclass(frozen=True)
class Outcome:
    """What a finished job shows: images and text, or the sentence saying why not."""

    images: tuple[ResultImage, ...] = ()
    text: str = ""
    error: str | None = None
    notice: str | None = None  # e.g. older images left out of the history
    # variations: every job of the request with what it shows, in order (the first included)
    variations: tuple[Variation, ...] = ()

    @property
    def every_image(self) -> tuple[ResultImage, ...]:
        """Its images, or each variation's in turn."""
        if self.variations:
            return tuple(image for v in self.variations for image in v.outcome.images)
        return self.images

    @property
    def ok(self) -> bool:
        if self.variations:
            return any(v.outcome.ok for v in self.variations)
        return self.error is None and bool(self.images)


@dataclass(frozen=True)
class Variation:
    """One image of a request for several: its own job (for its buttons) and outcome."""

    job: Job
    outcome: Outcome


@dataclass(frozen=True)
class Progress:
    # "cancelling": its requester cancelled it while the API call was under way
    state: Literal["queued", "generating", "cancelling"]
    position: int = 0  # 1 = next to run
    elapsed_seconds: float = 0.0


@dataclass(frozen=True)
class Submitted:
    job: Job
    created: bool  # False when the idempotency key was seen before
    position: int  # place in the queue when created; 0 when already running or done


class Adapter(Protocol):
    """What a chat platform gives the service to report back through."""

    async def progress(self, job: Job, update: Progress) -> None: ...

    async def deliver(self, job: Job, outcome: Outcome) -> list[str]:
        """Show the outcome; returns platform message keys that now show it."""
        ...


@dataclass(frozen=True)
class UsageSummary:
    images: int = 0
    failed: int = 0
    cost_usd: float = 0.0
    by_model: dict[str, int] = field(default_factory=dict)


@dataclass(frozen=True)
class Attachment:
    """An image a user sent, already downloaded by the adapter; checked by the service."""

    name: str
    data: bytes


@dataclass(frozen=True)
class Request:
    """One thing asked of the bot, in platform-free terms."""

    platform: str
    tenant: str  # workspace or guild: conversations never cross it
    user_id: str
    text: str  # the prompt with any option flags, bot mention removed
    idempotency_key: str
    kind: JobKind = "generate"
    thread_key: str | None = None  # continue this conversation; None starts a new one
    reply_to: str | None = None  # platform message key of a result to continue from (a fork)
    continue_job: str | None = None  # continue from this job's result (Edit, Upscale)
    attachments: tuple[Attachment, ...] = ()
    options: Options | None = None  # options typed in a form; they win over flags in text
    target: dict[str, Any] = field(default_factory=dict)
    channel: str | None = None  # where it was asked: that channel's defaults apply


@dataclass(frozen=True)
class Defaults:
    """The saved defaults that apply to a person in a channel: theirs win over the
    channel's, the channel's over the workspace's or server's."""

    team: Options
    channel: Options
    user: Options

    @property
    def effective(self) -> Options:
        return self.user.over(self.channel.over(self.team))


@dataclass(frozen=True)
class HistoryItem:
    """One of a person's images: the job that made it, and the messages that show it."""

    job: Job
    message_keys: list[str]


@dataclass(frozen=True)
class HistoryPage:
    """A page of a person's images, newest first (`page` counts from 1)."""

    items: list[HistoryItem]
    page: int
    more: bool


@dataclass(frozen=True)
class UsageReport:
    """What `usage` shows: this month for a user and their workspace, today, and the limits."""

    user: UsageSummary
    tenant: UsageSummary
    user_today: int
    tenant_today: int
    limits: Limits
    tenant_noun: str = "workspace"

    def lines(self) -> list[str]:
        """Plain sentences any adapter can show (each adapter adds its own formatting)."""
        limits = self.limits
        budget = (
            f" of the ${limits.monthly_budget_usd:.2f} monthly budget"
            if limits.monthly_budget_usd
            else ""
        )
        lines = [
            f"You: {_images(self.user_today, limits.daily_per_user)} today, "
            f"{_images(self.user.images)} this month (about ${self.user.cost_usd:.2f}).",
            f"This {self.tenant_noun}: {_images(self.tenant_today, limits.daily_per_tenant)} "
            f"today, {_images(self.tenant.images)} this month "
            f"(about ${self.tenant.cost_usd:.2f}{budget}).",
        ]
        if limits.daily_per_user or limits.daily_per_tenant or limits.monthly_budget_usd:
            lines.append("Daily limits reset at 00:00 UTC, the budget on the 1st of the month.")
        return lines


def _images(count: int, limit: int = 0) -> str:
    noun = "image" if (limit or count) == 1 else "images"
    return f"{count} of {limit} {noun}" if limit else f"{count} {noun}"
