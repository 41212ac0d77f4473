"""What every fault test relies on: seeded fault plans, the jobs table, and API calls per job."""

from __future__ import annotations

import asyncio
import math
import random
import sqlite3
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

from tests.fakes.gemini import FAULT_KINDS, FakeGemini, Fault

OPEN_STATES = ("queued", "running")


def passing() -> Fault:
    """No fault at all: the fake takes one fault per request, in order, and a slow answer
    that waits no time lets a request through untouched, leaving a gap in a plan."""
    return Fault("slow", seconds=0.0)


def random_fault(rng: random.Random, kind: str | None = None, *, slow_max: float = 2.0) -> Fault:
    """One fault of `kind` (any kind when None) with seeded details."""
    kind = kind or rng.choice(sorted(FAULT_KINDS))
    if kind == "rate_limit":
        return Fault(kind, retry_delay=rng.choice([None, 0.1, 0.3]))
    if kind == "slow":
        return Fault(kind, seconds=round(rng.uniform(0.2, slow_max), 2))
    return Fault(kind)


def fault_plan(
    rng: random.Random, jobs: int, max_attempts: int, *, rate: float = 0.35, slow_max: float = 2.0
) -> list[Fault]:
    """Faults for the requests of a burst of `jobs`, one entry per API request.

    Every kind sits somewhere among the first `jobs` entries, which first attempts are sure
    to use up; the rest hit at `rate`, enough for every retry the policy allows.
    """
    if jobs < len(FAULT_KINDS):
        raise ValueError(f"a burst needs at least {len(FAULT_KINDS)} jobs to meet every fault")
    first = [random_fault(rng, kind, slow_max=slow_max) for kind in sorted(FAULT_KINDS)]
    first += [
        random_fault(rng, slow_max=slow_max) if rng.random() < rate else passing()
        for _ in range(jobs - len(first))
    ]
    rng.shuffle(first)
    later = [
        random_fault(rng, slow_max=slow_max) if rng.random() < rate else passing()
        for _ in range(jobs * (max_attempts - 1))
    ]
    return first + later


def describe(plan: Iterable[Fault]) -> str:
    return " ".join("-" if f == passing() else f.kind for f in plan)


# the jobs table


def job_rows(db: Path) -> list[dict[str, Any]]:
    """Every job as stored, oldest first (read beside the service, as an operator would)."""
    with sqlite3.connect(db) as conn:
        conn.row_factory = sqlite3.Row
        return [dict(row) for row in conn.execute("SELECT * FROM jobs ORDER BY seq")]


def held_requests(db: Path, *, expired_by: float = math.inf) -> int:
    """Requests held in the intake table whose lease runs out before `expired_by` (any, by
    default)."""
    with sqlite3.connect(db) as conn:
        query = "SELECT count(*) FROM intake WHERE lease_expires_at < ?"
        return int(conn.execute(query, (expired_by,)).fetchone()[0])


def closed(row: dict[str, Any]) -> bool:
    """Finished, and its delivery either done or given up."""
    return row["state"] not in OPEN_STATES and (
        row["delivered_at"] is not None or row["delivery_abandoned_at"] is not None
    )


async def settled(db: Path, count: int, *, timeout: float = 30.0) -> list[dict[str, Any]]:
    """Polls the jobs table until `count` jobs exist and every one of them is closed."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    rows: list[dict[str, Any]] = []
    while loop.time() < deadline:
        try:
            rows = job_rows(db) if db.exists() else []
        except sqlite3.OperationalError:
            rows = []  # a process starting on a new file has not made the tables yet
        if len(rows) >= count and all(closed(row) for row in rows):
            return rows
        await asyncio.sleep(0.05)
    states = Counter(
        f"{r['state']}/{'delivered' if r['delivered_at'] else 'undelivered'}" for r in rows
    )
    raise TimeoutError(f"{len(rows)} jobs, wanted {count} closed, after {timeout}s: {states}")


async def poll_until(check: Callable[[], Any], *, timeout: float, what: str) -> Any:
    """Polls `check()` until it is truthy, for state kept where no event can be awaited
    (another process, the jobs table)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while not (result := check()):
        if loop.time() > deadline:
            raise TimeoutError(f"no {what} within {timeout}s")
        await asyncio.sleep(0.02)
    return result


def assert_no_open_jobs(rows: list[dict[str, Any]]) -> None:
    stuck = [(r["prompt"], r["state"]) for r in rows if r["state"] in OPEN_STATES]
    assert not stuck, f"jobs left open: {stuck}"


# API calls


def prompt_of(body: Any) -> str:
    """The prompt a generateContent body asks for: the text of its last user turn."""
    if not isinstance(body, dict):
        return ""
    for content in reversed(body.get("contents") or []):
        if content.get("role") == "user":
            return " ".join(p["text"] for p in content["parts"] if "text" in p).strip()
    return ""


def api_calls_by_prompt(gemini: FakeGemini) -> Counter[str]:
    return Counter(prompt_of(request.json) for request in gemini.requests)


def assert_api_calls_match_the_jobs(
    rows: list[dict[str, Any]], gemini: FakeGemini, max_attempts: int
) -> None:
    """Each job's requests at the fake are the calls it counted, and within the policy."""
    received = api_calls_by_prompt(gemini)
    for row in rows:
        calls = received[row["prompt"]]
        assert calls == row["api_calls"], (
            f"{row['prompt']!r}: the fake got {calls} requests, the job counted {row['api_calls']}"
        )
        # a 429 that was tried again was a rate limit: a pause, not one of the tries
        statuses = [r.status for r in gemini.requests if prompt_of(r.json) == row["prompt"]]
        tries = calls - statuses[:-1].count(429)
        assert 1 <= tries <= max_attempts, f"{row['prompt']!r}: {calls} API calls {statuses}"
    assert sum(received.values()) == sum(row["api_calls"] for row in rows)
