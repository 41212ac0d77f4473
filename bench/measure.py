"""Numbers from samples: percentiles, and a process's memory read from /proc."""

from __future__ import annotations

import asyncio
import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path


def percentile(values: Sequence[float], p: float) -> float:
    """The `p`th percentile (0-100) by the nearest-rank method; NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    rank = max(1, math.ceil(p / 100 * len(ordered)))
    return ordered[min(rank, len(ordered)) - 1]


@dataclass(frozen=True)
class Spread:
    """p50, p99 and the largest of a set of durations, in seconds."""

    count: int
    p50: float
    p99: float
    worst: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Spread:
        return cls(
            len(values),
            percentile(values, 50),
            percentile(values, 99),
            max(values) if values else math.nan,
        )


@dataclass(frozen=True)
class Memory:
    """Resident set now (VmRSS) and its high-water mark since start (VmHWM), in bytes."""

    rss: int
    hwm: int


def memory(pid: int) -> Memory:
    fields: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, rest = line.partition(":")
        if name in ("VmRSS", "VmHWM"):
            fields[name] = int(rest.split()[0]) * 1024  # reported in kB
    return Memory(fields["VmRSS"], fields["VmHWM"])


class RssWatch:
    """Samples VmRSS while running, as a cross-check of the kernel's VmHWM."""

    def __init__(self, pid: int, interval: float = 0.05) -> None:
        self.pid = pid
        self.interval = interval
        self.highest = 0
        self._task: asyncio.Task[None] | None = None

    def __enter__(self) -> RssWatch:
        self._task = asyncio.create_task(self._run())
        return self

    def __exit__(self, *exc_info: object) -> None:
        if self._task is not None:
            self._task.cancel()

    async def _run(self) -> None:
        while True:
            try:
                self.highest = max(self.highest, memory(self.pid).rss)
            except (OSError, KeyError):
                return
            await asyncio.sleep(self.interval)


async def settled_memory(pid: int, *, window: float = 1.0, within: float = 10.0) -> Memory:
    """VmRSS once it has stopped growing for `window` seconds (start-up work is over)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    last = memory(pid)
    stable_since = loop.time()
    while loop.time() < deadline:
        await asyncio.sleep(0.1)
        now = memory(pid)
        if now.rss > last.rss + 256 * 1024:
            stable_since = loop.time()
        last = now
        if loop.time() - stable_since >= window:
            break
    return last


def listen_overflows() -> int:
    """The kernel's count of connections dropped because a listening socket's accept queue
    was full (TcpExt ListenOverflows); a dropped SYN is retried after a second."""
    lines = Path("/proc/net/netstat").read_text().splitlines()
    for header, values in zip(lines[::2], lines[1::2], strict=False):
        if header.startswith("TcpExt:"):
            fields = dict(zip(header.split()[1:], values.split()[1:], strict=False))
            return int(fields.get("ListenOverflows", 0))
    return 0


def megabytes(n: int) -> float:
    return n / 1_000_000
