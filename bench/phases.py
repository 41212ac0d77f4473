"""The measurements, each a phase run against one bot process through any platform's load."""

from __future__ import annotations

import asyncio
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

    async def send(self, ask: Ask) -> None: ...

    async def burst(self, asks: Sequence[Ask]) -> None: ...

    async def wait(self, asks: Sequence[Ask], *, within: float) -> bool: ...


class BurstMeasures:
    """What any burst is judged by: its acks and the images it delivered per second."""

    asks: list[Ask]
    seconds: float  # first request sent until the last image delivered

    @property
    def acks(self) -> Spread:
        return Spread.of([a.ack_seconds for a in self.asks if a.acked])

    @property
    def delivered(self) -> int:
        return sum(bool(a.delivered_at) for a in self.asks)

    @property
    def per_second(self) -> float:
        return self.delivered / self.seconds if self.seconds > 0 else math.nan


@dataclass
class Burst(BurstMeasures):
    """Every request sent at once, then followed until each was settled."""

    asks: list[Ask]
    seconds: float
    memory: Memory  # after it, with VmHWM the high-water mark of the process's life
    sampled_peak: int  # highest VmRSS seen by sampling, a cross-check of VmHWM
    listen_overflows: int  # connections dropped for a full accept queue, any socket

    @property
    def queue_wait(self) -> Spread:
        return Spread.of([a.queue_wait for a in self.asks if a.delivered_at])


@dataclass
class Stream:
    """A steady load with fewer requests in flight than workers, so nothing queues.

    Requests start on a fixed schedule, not when earlier ones finish: with a closed loop,
    one hiccup that bunched the requests would keep them bunched, each then waiting for
    the others' CPU, and the overhead measured would be that of the bunching.
    """

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
        await load.wait(asks, within=settle_timeout(count, latency, workers))
        overflows = listen_overflows() - overflows
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
    workers: int,
) -> Stream:
    """`count` requests, one every `latency / concurrency` seconds (so about `concurrency`
    wait on the image API at a time), never more than `workers` in flight."""
    asks = load.prepare(tag, count, size)
    interval = latency / concurrency
    slots = asyncio.Semaphore(workers)
    loop = asyncio.get_running_loop()
    started = loop.time()

    async def one(ask: Ask) -> None:
        try:
            await load.send(ask)
            await load.wait([ask], within=settle_timeout(1, latency, 1))
        finally:
            slots.release()

    tasks = []
    for n, ask in enumerate(asks):
        await asyncio.sleep(max(0.0, started + n * interval - loop.time()))
        await slots.acquire()
        tasks.append(asyncio.create_task(one(ask)))
    await asyncio.gather(*tasks)
    done = [a for a in asks if a.delivered_at and a.api_calls]
    parts = {
        "sent → API request": Spread.of([a.before_api for a in done]),
        "API answer → delivered": Spread.of([a.after_api for a in done]),
        "ack": Spread.of([a.ack_seconds for a in done]),
    }
    return Stream(asks, concurrency, parts)
