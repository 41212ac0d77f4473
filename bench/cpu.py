"""CPU time from /proc: per process, per process tree, and the whole machine's busy time.

Read before and after a phase, the differences say who used the cores: the bot processes,
the PostgreSQL server, the bench itself (load driver and fakes), or something else running
on the machine at the same time.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

TICK = os.sysconf("SC_CLK_TCK")


def _stat_fields(pid: int | str) -> list[str]:
    """The fields of /proc/<pid>/stat after the command name (which may hold spaces)."""
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2 :].split()


def process_seconds(pid: int | str, *, reaped_children: bool = False) -> float:
    """User + system CPU seconds of a live process (0.0 once it is gone); with
    `reaped_children`, also those of its children that have exited and been waited for."""
    try:
        fields = _stat_fields(pid)
    except (OSError, ValueError):
        return 0.0
    # after the name: state(0) ppid(1) ... utime(11) stime(12) cutime(13) cstime(14)
    ticks = int(fields[11]) + int(fields[12])
    if reaped_children:
        ticks += int(fields[13]) + int(fields[14])
    return ticks / TICK


def tree_seconds(root: int) -> float:
    """CPU seconds of `root` and all its descendants, living or reaped (a PostgreSQL
    postmaster and its backends)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            parent = int(_stat_fields(entry.name)[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(parent, []).append(int(entry.name))
    total, todo = 0.0, [root]
    while todo:
        pid = todo.pop()
        total += process_seconds(pid, reaped_children=True)
        todo += children.get(pid, [])
    return total


@dataclass(frozen=True)
class MachineTime:
    """The machine's busy and total CPU seconds since boot, over all cores."""

    busy: float
    total: float


def machine_time() -> MachineTime:
    first = Path("/proc/stat").read_text().splitlines()[0].split()
    # cpu user nice system idle iowait irq softirq steal [guest guest_nice: already in user]
    values = [int(v) for v in first[1:9]]
    idle = values[3] + values[4]
    return MachineTime((sum(values) - idle) / TICK, sum(values) / TICK)
