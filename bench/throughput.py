"""Throughput at a real latency: a burst of 200 against an image API that answers in 10 s
and takes only K calls at once (429 with a retryDelay beyond them), and the same burst
against one with no limit. The ideal is count / K × latency (count / count × latency with
no limit); the bot must come within 1.3× of it, failing and losing nothing."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from bench import phases
from bench.measure import megabytes
from bench.phases import Burst
from bench.report import Row
from bench.stack import Fakes
from bench.tracking import outcome_counts

LATENCY = 10.0  # seconds: a real API's answer at 1K (10–35 s)
RETRY_DELAY = 2.0  # seconds, in the 429's RetryInfo
TARGET = 1.3  # × the ideal


@dataclass
class LimitedBurst:
    capacity: int | None  # calls the API takes at once; None: no limit
    latency: float
    burst: Burst
    refused: int  # 429s the API answered for want of capacity
    peak_in_flight: int  # most calls the API held at once
    api_calls: int

    @property
    def ideal(self) -> float:
        count = len(self.burst.asks)
        return count / min(count, self.capacity or count) * self.latency

    @property
    def ratio(self) -> float:
        return self.burst.seconds / self.ideal

    def row(self, platform: str) -> Row:
        counts = outcome_counts(self.burst.asks)
        failed = counts["sent"] - self.burst.delivered
        limit = f"K = {self.capacity}" if self.capacity else "no limit"
        return Row(
            f"{len(self.burst.asks)}-job 1K burst, API {self.latency:g} s, {limit}",
            platform,
            f"{self.burst.seconds:.1f} s = {self.ratio:.2f}× ideal {self.ideal:.0f} s; "
            f"{failed} failed, {counts['lost']} lost; {self.api_calls} calls, "
            f"{self.refused} refused, peak {self.peak_in_flight} at once; "
            f"VmHWM {megabytes(self.burst.memory.hwm):.0f} MB",
            f"≤ {TARGET}× ideal, 0 failed, 0 lost",
            self.ratio <= TARGET and failed == 0 and counts["lost"] == 0,
        )


async def limited_bursts(
    fakes: Fakes,
    workdir: Path,
    *,
    count: int,
    capacity: int,
    latency: float,
    progress: Callable[[str], None],
) -> list[LimitedBurst]:
    """The burst against an API limited to `capacity`, then against one with no limit, each
    on a fresh Slack bot (a bot learns the limit: the second must not start from it)."""
    from bench.run import bot_and_load  # the bench's one way to start a bot

    results = []
    gemini = fakes.gemini
    for limit in (capacity, None):
        name = f"K={limit}" if limit else "no-limit"
        progress(f"throughput: {count} at once, API {latency:g} s, {name}")
        async with bot_and_load("slack", fakes, workdir / f"throughput-{name}") as (bot, load):
            await phases.warm_up(load, 0.0)
            saved = gemini.latency
            gemini.latency, gemini.capacity = latency, limit
            gemini.capacity_retry_delay = RETRY_DELAY
            refused, calls, gemini.peak_in_flight = gemini.refused, len(gemini.requests), 0
            try:
                burst = await phases.burst(
                    load,
                    bot,
                    tag=f"t{limit or 0}-",
                    size="1K",
                    count=count,
                    latency=latency,
                    workers=limit or count,
                )
            finally:
                gemini.latency, gemini.capacity = saved, None
            results.append(
                LimitedBurst(
                    limit,
                    latency,
                    burst,
                    gemini.refused - refused,
                    gemini.peak_in_flight,
                    len(gemini.requests) - calls,
                )
            )
    return results
