"""The measurements, each a phase run against one bot process through any platform's load."""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from bench.measure import Memory, RssWatch, Spread, listen_overflows
from bench.stack import BotProcess
from bench.tracking import Ask


class Load(Protocol):
    """What a platform's load driver offers the phases (see slack_load, discord_load)."""

    asks: dict[str, Ask]

    def prepare(self, tag: str, count: int, size: str) -> list[Ask]: ...

    async def burst(self, asks: Sequence[Ask]) -> None: ...

    async def stream(
        self, asks: Sequence[Ask], *, concurrency: int, spacing: float, within: float
    ) -> None: ...

    async def wait(self, asks: Sequence[Ask], *, within: float) -> bool: ...


@dataclass
class Burst:
    """Every request sent at once, then followed until each was settled."""

    asks: list[Ask]
    seconds: float  # first request sent until the last image delivered
    memory: Memory  # after it, with VmHWM the high-water mark of the process's life
    sampled_peak: int  # highest VmRSS seen by sampling, a cross-check of VmHWM
    listen_overflows: int  # connections the kernel dropped for a full accept queue

    @property
    def acks(self) -> Spread:
        return Spread.of([a.ack_seconds for a in self.asks if a.acked])

    @property
    def delivered(self) -> int:
        return sum(bool(a.delivered_at) for a in self.asks)

    @property
    def per_second(self) -> float:
        return self.delivered / self.seconds if self.seconds > 0 else math.nan

    @property
    def queue_wait(self) -> Spread:
        return Spread.of([a.queue_wait for a in self.asks if a.delivered_at])


@dataclass
class Stream:
    """A steady load with fewer requests in flight than workers, so nothing queues."""

    asks: list[Ask]
    concurrency: int
    parts: dict[str, Spread] = field(default_factory=dict)

    @property
    def overhead(self) -> Spread:
        return Spread.of([a.overhead for a in self.asks if a.delivered_at and a.api_calls])


def settle_timeout(count: int, latency: float, workers: int) -> float:
    """Generous time for `count` jobs to finish on `workers` workers."""
    return 60.0 + 3 * math.ceil(count / workers) * (latency + 0.5)


async def warm_up(load: Load, latency: float) -> None:
    """One generation at each size, unmeasured: the first request after start pays one-time
    costs (Bolt's auth.test, the fake rendering its photo for a new size), and a photo
    rendered during a timed phase would hold answers back and fall in step."""
    for size in ("1K", "4K"):
        asks = load.prepare(f"w{size[0]}", 1, size)
        await load.burst(asks)
        await load.wait(asks, within=settle_timeout(1, latency, 1))


async def burst(
    load: Load,
    bot: BotProcess,
    *,
    tag: str,
    size: str,
    count: int,
    latency: float,
    workers: int,
) -> Burst:
    asks = load.prepare(tag, count, size)
    overflows = listen_overflows()
    with RssWatch(bot.pid) as watch:
        started = time.monotonic()
        await load.burst(asks)
        overflows = listen_overflows() - overflows
        await load.wait(asks, within=settle_timeout(count, latency, workers))
    last = max((a.delivered_at[-1] for a in asks if a.delivered_at), default=started)
    return Burst(asks, last - started, bot.memory(), watch.highest, overflows)


async def stream(
    load: Load,
    *,
    tag: str,
    size: str,
    count: int,
    concurrency: int,
    latency: float,
) -> Stream:
    asks = load.prepare(tag, count, size)
    await load.stream(
        asks,
        concurrency=concurrency,
        spacing=latency / concurrency,
        within=settle_timeout(1, latency, 1),
    )
    done = [a for a in asks if a.delivered_at and a.api_calls]
    parts = {
        "sent → API request": Spread.of([a.before_api for a in done]),
        "API answer → delivered": Spread.of([a.after_api for a in done]),
        "ack": Spread.of([a.ack_seconds for a in done]),
    }
    return Stream(asks, concurrency, parts)
