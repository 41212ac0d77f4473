"""The results table: one row per measurement, its target and whether it was met."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from bench.measure import Spread


@dataclass(frozen=True)
class Row:
    measurement: str
    platform: str
    result: str
    target: str = ""
    met: bool | None = None  # None: no target, shown for information

    @property
    def verdict(self) -> str:
        if self.met is None:
            return ""
        return "PASS" if self.met else "MISS"


def ms(seconds: float) -> str:
    return "n/a" if math.isnan(seconds) else f"{seconds * 1000:.1f} ms"


def spread_ms(spread: Spread) -> str:
    if spread.count == 0:
        return "n/a (no samples)"
    return f"p50 {ms(spread.p50)}, p99 {ms(spread.p99)} (n={spread.count})"


def under(value: float, limit: float) -> bool:
    return not math.isnan(value) and value <= limit


def table(rows: Sequence[Row]) -> str:
    """A Markdown table, readable in a terminal and pasteable into the README."""
    header = ("measurement", "platform", "result", "target", "")
    cells = [header] + [(r.measurement, r.platform, r.result, r.target, r.verdict) for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]

    def line(row: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(cells[0]), rule, *(line(r) for r in cells[1:])])
