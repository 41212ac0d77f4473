"""The scaling curve: 1, 2 and 4 Slack processes sharing one PostgreSQL database, and one
process on SQLite beside one on PostgreSQL.

Each point starts fresh fakes, a fresh database and N `python -m bots.slack` processes (HTTP
mode, each on its own port), warms each process with one request, then sends one burst of
signed `/imagine` commands spread round-robin over the processes, all at once. On PostgreSQL
every process publishes the jobs it has shown and claims published jobs with
FOR UPDATE SKIP LOCKED, so a job acknowledged by one process may be generated and delivered
by another; completion is read from FakeSlack's record per channel, whoever delivered.

Every point gets the same burst, sized to `seconds` of generation at the highest ceiling
(most processes × workers / latency): the 4-process point runs that long at best, one process
four times as long, and the acks of all points answer the same number of requests at once.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from bench import rawhttp
from bench.cpu import machine_time, process_seconds, tree_seconds
from bench.measure import Spread, percentile
from bench.phases import BurstMeasures, settle_timeout
from bench.report import ms
from bench.slack_load import SlackLoad
from bench.stack import SIGNING_SECRET, BotProcess, Fakes, bot_env, start_fakes
from bench.tracking import Ask, outcome_counts

# generations at once per process: fixed for the curve, so that its ceiling (processes ×
# this / latency) is known and what is measured is the store's share of the work
WORKERS = 8
SHARE_OF_CEILING = 0.90
SIZE = "1K"
POSTGRESQL, SQLITE = "postgresql", "sqlite"
NAMES = {POSTGRESQL: "PostgreSQL", SQLITE: "SQLite"}


@dataclass(frozen=True)
class ScalingConfig:
    latency: float
    seconds: float  # generation at the ceiling that each burst is sized for
    photo: str
    workdir: Path
    processes: tuple[int, ...] = (1, 2, 4)
    bot_env: dict[str, str] = field(default_factory=dict)

    def points(self) -> list[tuple[str, int]]:
        """The PostgreSQL curve, then one process on SQLite to set beside one on PostgreSQL."""
        return [(POSTGRESQL, n) for n in self.processes] + [(SQLITE, 1)]

    def settings(self) -> dict[str, str]:
        """What every bot of the curve runs with: default settings, except 8 generations at
        once (WORKERS) and admission that lets the whole burst in (the default
        IMAGEBOT_MAX_JOBS_IN_FLIGHT of 200 counts jobs in flight across all processes of a
        database, and the 4-process burst is larger); `--bot-env` comes last and wins."""
        return {
            "IMAGEBOT_MAX_CONCURRENCY": str(WORKERS),
            "IMAGEBOT_MAX_JOBS_IN_FLIGHT": "0",
            **self.bot_env,
        }

    @property
    def workers(self) -> int:
        return int(self.settings()["IMAGEBOT_MAX_CONCURRENCY"])

    @property
    def requests(self) -> int:
        """The burst of every point: `seconds` at the ceiling of the most processes, in
        whole rounds of their workers."""
        rounds = max(1, round(self.seconds / self.latency)) if self.latency > 0 else 1
        return max(self.processes) * self.workers * rounds


class SpreadSlackLoad(SlackLoad):
    """SlackLoad over several bot processes: the asks of each `prepare` go round-robin over
    `urls`, in order, so a burst interleaves the processes from its first request on."""

    def __init__(self, fake: Any, gemini: Any, urls: Sequence[str], secret: str) -> None:
        super().__init__(fake, gemini, urls[0], secret)
        self.urls = list(urls)
        self.process_of: dict[str, int] = {}

    def prepare(self, tag: str, count: int, size: str) -> list[Ask]:
        asks = super().prepare(tag, count, size)
        for n, ask in enumerate(asks):
            self.process_of[ask.key] = n % len(self.urls)
        return asks

    def _request(self, ask: Ask) -> bytes:
        body = self._bodies[ask.key]
        return rawhttp.post_bytes(self.urls[self.process_of[ask.key]], body, self._headers(body))

    async def send(self, ask: Ask, request: bytes | None = None) -> None:
        if request is None:
            request = self._request(ask)
        address = urlsplit(self.urls[self.process_of[ask.key]])
        ask.sent_at = time.monotonic()
        try:
            ask.ack_status, ask.ack_seconds = await rawhttp.exchange(
                address.hostname or "127.0.0.1", address.port or 80, request
            )
        except (OSError, asyncio.IncompleteReadError, ValueError):
            ask.ack_status = None


@dataclass(frozen=True)
class CpuSplit:
    """CPU seconds used over `wall` seconds, by whom."""

    wall: float
    machine: float  # busy time of all cores together
    bots: float
    postgres: float | None  # None for SQLite, or a PostgreSQL server not started here
    bench: float  # this process: load driver, fake Slack and fake image API

    @property
    def other(self) -> float:
        return self.machine - self.bots - (self.postgres or 0.0) - self.bench

    def cores(self, seconds: float) -> float:
        return seconds / self.wall if self.wall > 0 else math.nan


class CpuClock:
    """Reads everyone's CPU time at the start of a phase, and the split at its end."""

    def __init__(self, bots: Sequence[BotProcess], postmaster: int | None) -> None:
        self.bots = bots
        self.postmaster = postmaster
        self._start = self._read()

    def _read(self) -> tuple[float, float, float, float | None, float]:
        return (
            time.monotonic(),
            machine_time().busy,
            sum(process_seconds(bot.pid) for bot in self.bots),
            tree_seconds(self.postmaster) if self.postmaster else None,
            process_seconds("self"),
        )

    def split(self) -> CpuSplit:
        end = self._read()
        start = self._start
        postgres = None if end[3] is None or start[3] is None else end[3] - start[3]
        return CpuSplit(
            end[0] - start[0], end[1] - start[1], end[2] - start[2], postgres, end[4] - start[4]
        )


@dataclass
class Point(BurstMeasures):
    database: str
    processes: int
    workers: int
    latency: float
    asks: list[Ask]
    seconds: float  # first request sent until the last image delivered
    cpu: CpuSplit
    process_of: dict[str, int]
    all_asks: list[Ask] = field(default_factory=list)  # warm-up included, for lost/duplicated

    @property
    def name(self) -> str:
        return f"{NAMES[self.database]} × {self.processes}"

    @property
    def ceiling(self) -> float:
        if self.latency <= 0:
            return math.inf
        return self.processes * self.workers / self.latency

    @property
    def share(self) -> float:
        return self.per_second / self.ceiling

    @property
    def throughput_met(self) -> bool:
        return self.delivered == len(self.asks) and self.share >= SHARE_OF_CEILING

    def acks_of(self, process: int) -> Spread:
        return Spread.of(
            [a.ack_seconds for a in self.asks if a.acked and self.process_of[a.key] == process]
        )

    @property
    def steady_per_second(self) -> float:
        """Deliveries per second between the 10th and the 90th percentile delivery: the
        rate once the queue is full, without the ramp-up and the tail."""
        times = sorted(a.delivered_at[0] for a in self.asks if a.delivered_at)
        if len(times) < 10:
            return math.nan
        low, high = percentile(times, 10), percentile(times, 90)
        between = sum(low < t <= high for t in times)
        return between / (high - low) if high > low else math.nan

    @property
    def admission(self) -> float:
        """First request sent until the last status message was posted: the time the burst
        took to be acknowledged, stored and shown."""
        shown = [a.announced_at for a in self.asks if not math.isnan(a.announced_at)]
        if not shown:
            return math.nan
        return max(shown) - min(a.sent_at for a in self.asks)

    @property
    def api_seconds(self) -> Spread:
        """The fake image API's own time per answer (latency, rendering, JSON), as it
        recorded it: above the configured latency when the fake could not keep up."""
        return Spread.of([a.api_seconds for a in self.asks if a.delivered_at and a.api_calls])

    def as_json(self) -> dict[str, Any]:
        def spread(s: Spread) -> dict[str, float]:
            return {"count": s.count, "p50": s.p50, "p99": s.p99, "max": s.worst}

        return {
            "database": self.database,
            "processes": self.processes,
            "workers": self.workers,
            "latency": self.latency,
            "requests": len(self.asks),
            "seconds": self.seconds,
            "per_second": self.per_second,
            "steady_per_second": self.steady_per_second,
            "admission_seconds": self.admission,
            "ceiling": self.ceiling,
            "ack": spread(self.acks),
            "ack_by_process": [spread(self.acks_of(n)) for n in range(self.processes)],
            "api_seconds": spread(self.api_seconds),
            "cpu": {
                "wall": self.cpu.wall,
                "machine": self.cpu.machine,
                "bots": self.cpu.bots,
                "postgres": self.cpu.postgres,
                "bench": self.cpu.bench,
                "other": self.cpu.other,
            },
            "outcomes": outcome_counts(self.all_asks),
        }


def verdict(met: bool | None) -> str:
    return "" if met is None else ("PASS" if met else "MISS")


def markdown(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    cells = [list(header), *(list(r) for r in rows)]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header))]

    def line(row: Sequence[str]) -> str:
        return "| " + " | ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)) + " |"

    rule = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(cells[0]), rule, *(line(r) for r in cells[1:])])


@dataclass
class Curve:
    config: ScalingConfig
    points: list[Point]

    def _reference(self) -> Point | None:
        """One PostgreSQL process: what more processes' acks are held against."""
        return next((p for p in self.points if p.database == POSTGRESQL and p.processes == 1), None)

    def ack_met(self, point: Point) -> bool | None:
        """Acks with the most processes no worse than with one (same database)."""
        reference = self._reference()
        most = max((p.processes for p in self.points if p.database == POSTGRESQL), default=1)
        if reference is None or point.database != POSTGRESQL or point.processes != most:
            return None
        if point is reference:
            return None
        return point.acks.count == len(point.asks) and point.acks.p99 <= reference.acks.p99

    def table(self) -> str:
        reference = self._reference()
        header = (
            "database",
            "processes × workers",
            "burst",
            "completed/s",
            "steady/s",
            "ceiling",
            "of ceiling",
            f"≥ {SHARE_OF_CEILING:.0%}",
            "ack p50",
            "ack p99",
            "ack p99 ≤ 1 process",
        )
        rows = []
        for p in self.points:
            met = self.ack_met(p)
            against = (
                f"{verdict(met)} (vs {ms(reference.acks.p99)})"
                if met is not None and reference
                else ""
            )
            rows.append(
                (
                    NAMES[p.database],
                    f"{p.processes} × {p.workers}",
                    f"{p.delivered}/{len(p.asks)} in {p.seconds:.1f} s",
                    f"{p.per_second:.2f}/s",
                    f"{p.steady_per_second:.2f}/s",
                    f"{p.ceiling:.2f}/s",
                    f"{p.share:.0%}",
                    verdict(p.throughput_met),
                    ms(p.acks.p50),
                    ms(p.acks.p99),
                    against,
                )
            )
        return markdown(header, rows)

    def notes(self) -> str:
        lines = [
            f"Slack HTTP processes, {self.config.workers} workers each, fake API latency "
            f"{self.config.latency:g} s, {SIZE} {self.config.photo.upper()} results; the same "
            f"burst of {self.config.requests} for every point ({self.config.seconds:g} s at the "
            "highest ceiling), sent at once, round-robin. completed/s (judged) = delivered / "
            "(first request sent → last image delivered); steady/s = deliveries between the "
            "10th and the 90th percentile delivery, over that time; all shown = first request "
            "sent → the last status message posted (the burst's admission); "
            "cores = CPU seconds / wall seconds of the burst."
        ]
        for p in self.points:
            c = p.cpu
            postgres = f", PostgreSQL {c.cores(c.postgres):.2f}" if c.postgres is not None else ""
            counts = outcome_counts(p.all_asks)
            by_process = " / ".join(f"{p.acks_of(n).p99 * 1000:.0f}" for n in range(p.processes))
            lines.append(
                f"{p.name}: all shown after {p.admission:.2f} s; "
                f"fake API answer p50 {ms(p.api_seconds.p50)}, p99 {ms(p.api_seconds.p99)}; "
                f"cores busy {c.cores(c.machine):.2f} (bots {c.cores(c.bots):.2f}{postgres}, "
                f"bench {c.cores(c.bench):.2f}, other {c.cores(c.other):.2f}); "
                f"bot CPU {c.bots / max(p.delivered, 1) * 1000:.0f} ms per image; "
                f"ack p99 by process {by_process} ms; "
                f"{counts['lost']} lost, {counts['duplicated']} duplicated, "
                f"{counts['refused'] + counts['failed']} refused or failed of {counts['acked']} "
                "acked"
            )
        return "\n".join(lines)

    def all_met(self) -> bool:
        for p in self.points:
            counts = outcome_counts(p.all_asks)
            if counts["lost"] or counts["duplicated"] or counts["acked"] != counts["sent"]:
                return False
            if not p.throughput_met or self.ack_met(p) is False:
                return False
        return True

    def as_json(self) -> dict[str, Any]:
        return {
            "config": {k: str(v) for k, v in vars(self.config).items()},
            "points": [p.as_json() for p in self.points],
        }


async def _stop_all(bots: Sequence[BotProcess]) -> list[int | None]:
    """SIGTERM to every bot at once, each waited for (and killed if it hangs)."""
    codes = await asyncio.gather(*(bot.stop() for bot in bots), return_exceptions=True)
    return [None if isinstance(c, BaseException) else c for c in codes]


def _tell_unsettled(
    bots: Sequence[BotProcess], asks: Sequence[Ask], progress: Callable[[str], None]
) -> None:
    """Some requests never ended: say how many, and what each bot logged last."""
    open_ = [a.key for a in asks if a.acked and not a.settled]
    progress(f"scaling: {len(open_)} of {len(asks)} requests never ended, e.g. {open_[:5]}")
    for n, bot in enumerate(bots):
        progress(f"--- bot {n} (pid {bot.pid}), last lines of {bot.log_path}:\n{bot.tail(15)}")


async def run_point(
    database: str,
    processes: int,
    config: ScalingConfig,
    server: Any,
    progress: Callable[[str], None],
) -> Point:
    """Fresh fakes, a fresh database and `processes` bots; a warm-up, one burst; all stopped."""
    workdir = config.workdir / f"scaling-{database}-{processes}"
    count = config.requests
    fakes: Fakes = await start_fakes(latency=config.latency, photo=config.photo)
    bots: list[BotProcess] = []
    url: str | None = None
    try:
        if database == POSTGRESQL:
            url = await asyncio.to_thread(server.create_database)
        else:
            workdir.mkdir(parents=True, exist_ok=True)
            url = f"sqlite:///{workdir / 'imagebot.sqlite3'}"
        settings = {**config.settings(), "DATABASE_URL": url}
        for n in range(processes):
            home = workdir / f"p{n}"
            bots.append(BotProcess("slack", bot_env(fakes, "slack", home, settings), home))
        for bot in bots:
            await bot.start()

        def listening(port: int) -> Callable[[], Any]:
            async def check() -> bool:
                return await rawhttp.get_status("127.0.0.1", port, "/healthz") == 200

            return check

        await asyncio.gather(*(bot.wait_until(listening(int(bot.env["PORT"]))) for bot in bots))
        urls = [f"http://127.0.0.1:{bot.env['PORT']}/slack/events" for bot in bots]
        load = SpreadSlackLoad(fakes.slack, fakes.gemini, urls, SIGNING_SECRET)
        # one generation through each process first: Bolt's auth.test on a process's first
        # request, and the fake rendering its photo, are paid before the clock starts
        warm = load.prepare("w", processes, SIZE)
        await load.burst(warm)
        if not await load.wait(warm, within=settle_timeout(1, config.latency, 1)):
            _tell_unsettled(bots, warm, progress)
        progress(f"scaling: {NAMES[database]} × {processes}: {count} requests at once")
        asks = load.prepare("s", count, SIZE)
        postmaster = getattr(getattr(server, "process", None), "pid", None)
        clock = CpuClock(bots, postmaster if database == POSTGRESQL else None)
        started = time.monotonic()
        await load.burst(asks)
        settled = await load.wait(
            asks, within=settle_timeout(count, config.latency, processes * config.workers)
        )
        cpu = clock.split()
        if not settled:
            _tell_unsettled(bots, asks, progress)
        last = max((a.delivered_at[-1] for a in asks if a.delivered_at), default=started)
        codes = await _stop_all(bots)
        await load.wait(list(load.asks.values()), within=0.1)  # a last look
        failed = [(bot, code) for bot, code in zip(bots, codes, strict=True) if code not in (0,)]
        if failed:
            bot, code = failed[0]
            raise RuntimeError(f"a slack bot ended with {code}:\n{bot.tail()}")
        return Point(
            database,
            processes,
            config.workers,
            config.latency,
            asks,
            last - started,
            cpu,
            dict(load.process_of),
            list(load.asks.values()),
        )
    finally:
        await _stop_all(bots)
        try:
            if database == POSTGRESQL and url is not None:
                await asyncio.to_thread(server.drop_database, url)
        finally:
            await fakes.stop()


async def run(config: ScalingConfig, progress: Callable[[str], None]) -> Curve:
    """Every point, with one PostgreSQL server for the curve (a fresh database per point),
    started from pgserver's binaries by tests/postgres.py and stopped however this ends."""
    from tests.postgres import open_server

    points = config.points()
    opened = open_server() if any(db == POSTGRESQL for db, _ in points) else None
    server = None
    if opened is not None:
        progress("scaling: starting PostgreSQL")
        server = await asyncio.to_thread(opened.__enter__)
    try:
        results = []
        for database, processes in points:
            progress(f"scaling: {NAMES[database]} × {processes}: starting the bots")
            results.append(await run_point(database, processes, config, server, progress))
        return Curve(config, results)
    finally:
        if opened is not None:
            await asyncio.to_thread(opened.__exit__, None, None, None)
