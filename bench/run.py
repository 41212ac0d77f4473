"""The whole bench: for each platform, two fresh bot processes and the phases run on them."""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench import discord_http, floor, phases, rawhttp, throughput
from bench.discord_load import DiscordLoad, ack_rows
from bench.measure import Memory, megabytes, settled_memory
from bench.phases import Burst, Load, Stream
from bench.report import Row, ms, spread_ms, table, under
from bench.slack_load import SlackLoad
from bench.stack import SIGNING_SECRET, BotProcess, Fakes, bot_env, start_fakes
from bench.tracking import Ask, outcome_counts
from core.config import Settings

PLATFORMS = ("slack", "discord")
# generations at once per process, at most (below it, each model's limit follows the API)
CONCURRENCY = int(Settings.model_fields["max_concurrency"].default)
ACK_P99 = 0.050
OVERHEAD_P50 = {"1K": 0.030, "4K": 0.300, "4K PNG": None}
FLOOR_RATIO = 1.5  # 4K answer → delivered, at most this many times the floor
PNG_SPACING = 2.0  # seconds between the 4K PNG stream's requests
IDLE_RSS = 150_000_000
PEAK_RSS = 1_000_000_000


@dataclass(frozen=True)
class Config:
    requests: int
    overhead_requests: int
    concurrency: int
    latency: float
    photo: str
    platforms: tuple[str, ...]
    workdir: Path
    bot_env: dict[str, str] = field(default_factory=dict)
    # the API-limited bursts (bench.throughput): calls the API takes at once (0: skipped),
    # its latency, and the burst's size
    throughput_capacity: int = 40
    throughput_latency: float = throughput.LATENCY
    throughput_requests: int = 200
    # the Discord ack over HTTP interactions, even without the Discord platform's rows
    discord_http: bool = False


@dataclass
class PlatformResults:
    platform: str
    idle: Memory
    ack_burst: Burst
    overhead: dict[str, Stream]
    burst_4k: Burst
    asks: list[Ask] = field(default_factory=list)
    floors: dict[str, dict[str, float]] = field(default_factory=dict)  # by photo format

    def rows(self, config: Config) -> list[Row]:
        name = self.platform.capitalize()
        acks = self.ack_burst.acks
        ceiling = min(CONCURRENCY, config.requests)
        ideal = ceiling / config.latency if config.latency > 0 else math.inf
        counts = outcome_counts(self.asks)
        rows = [
            Row(
                f"ack latency, {config.requests} in flight",
                name,
                spread_ms(acks),
                f"p99 ≤ {ACK_P99 * 1000:.0f} ms",
                under(acks.p99, ACK_P99) and acks.count == config.requests,
            )
        ]
        for size, stream in self.overhead.items():
            spread = stream.overhead
            target = OVERHEAD_P50.get(size)
            rows.append(
                Row(
                    f"overhead per generation, {size}",
                    name,
                    spread_ms(spread),
                    f"p50 ≤ {target * 1000:.0f} ms" if target else "",
                    under(spread.p50, target) and spread.count == len(stream.asks)
                    if target
                    else None,
                )
            )
        for size, fmt in (("4K", config.photo), ("4K PNG", "png")):
            stream, lowest = self.overhead.get(size), self.floors.get(fmt)
            if stream is None or lowest is None:
                continue
            after = stream.parts["API answer → delivered"]
            rows.append(
                Row(
                    f"4K {fmt.upper()} answer → delivered vs the floor",
                    name,
                    f"p50 {ms(after.p50)} = {after.p50 * 1000 / lowest['total_ms']:.2f}× the "
                    f"floor {lowest['total_ms']:.1f} ms (decode {lowest['decode_ms']:.1f}, "
                    f"hash {lowest['sha256_ms']:.1f}, store "
                    f"{lowest['sqlite_write_ms'] + lowest['sqlite_checkpoint_ms']:.1f}, "
                    f"upload {lowest['upload_ms']:.1f})",
                    f"≤ {FLOOR_RATIO}× the floor",
                    under(after.p50 * 1000, FLOOR_RATIO * lowest["total_ms"]),
                )
            )
        for burst, size in ((self.ack_burst, "1K"), (self.burst_4k, "4K")):
            rows.append(
                Row(
                    f"queue wait in the {size} burst",
                    name,
                    spread_ms(burst.queue_wait),
                )
            )
            rows.append(
                Row(
                    f"completed generations/s, {len(burst.asks)}-job {size} burst",
                    name,
                    f"{burst.per_second:.2f}/s ({burst.delivered} in {burst.seconds:.1f} s; "
                    f"{ceiling} at once / {config.latency:g} s latency = {ideal:.2f}/s)",
                )
            )
        rows += [
            Row(
                "idle RSS (VmRSS)",
                name,
                f"{megabytes(self.idle.rss):.0f} MB",
                f"≤ {megabytes(IDLE_RSS):.0f} MB",
                self.idle.rss <= IDLE_RSS,
            ),
            Row(
                f"peak RSS (VmHWM), {len(self.burst_4k.asks)}-job 4K burst",
                name,
                f"{megabytes(self.burst_4k.memory.hwm):.0f} MB "
                f"(sampled VmRSS max {megabytes(self.burst_4k.sampled_peak):.0f} MB)",
                f"≤ {megabytes(PEAK_RSS):.0f} MB for 200 jobs",
                # the target is set for 200 jobs: a smaller burst says nothing about it
                self.burst_4k.memory.hwm <= PEAK_RSS if len(self.burst_4k.asks) >= 200 else None,
            ),
            Row(
                "lost results (acked, never delivered)",
                name,
                f"{counts['lost']} of {counts['acked']} acked",
                "0",
                counts["lost"] == 0 and counts["acked"] == counts["sent"],
            ),
            Row(
                "duplicated results (delivered twice)",
                name,
                str(counts["duplicated"]),
                "0",
                counts["duplicated"] == 0,
            ),
        ]
        return rows

    def as_json(self) -> dict[str, Any]:
        def spread(s: phases.Spread) -> dict[str, float]:
            return {"count": s.count, "p50": s.p50, "p99": s.p99, "max": s.worst}

        return {
            "idle_rss": self.idle.rss,
            "ack": spread(self.ack_burst.acks),
            "listen_overflows": self.ack_burst.listen_overflows,
            "burst_1k": {
                "seconds": self.ack_burst.seconds,
                "per_second": self.ack_burst.per_second,
                "queue_wait": spread(self.ack_burst.queue_wait),
            },
            "overhead": {
                size: {
                    "overhead": spread(s.overhead),
                    **{part: spread(v) for part, v in s.parts.items()},
                }
                for size, s in self.overhead.items()
            },
            "burst_4k": {
                "seconds": self.burst_4k.seconds,
                "per_second": self.burst_4k.per_second,
                "queue_wait": spread(self.burst_4k.queue_wait),
                "vm_hwm": self.burst_4k.memory.hwm,
                "rss_after": self.burst_4k.memory.rss,
                "sampled_peak": self.burst_4k.sampled_peak,
            },
            "outcomes": outcome_counts(self.asks),
        }


@dataclass
class Results:
    config: Config
    platforms: list[PlatformResults]
    throughput: list[throughput.LimitedBurst] = field(default_factory=list)
    # Discord acks at 50 and 200 in flight: {"bot"|"floor": {count: row}} (bench.discord_load)
    discord_acks: dict[str, dict[int, dict[str, Any]]] = field(default_factory=dict)
    # Discord acks over HTTP interactions: {"bot"|"floor": HttpAcks} (bench.discord_http)
    discord_http_acks: dict[str, discord_http.HttpAcks] = field(default_factory=dict)

    def all_rows(self) -> list[Row]:
        rows = [row for p in self.platforms for row in p.rows(self.config)]
        rows += [t.row("Slack") for t in self.throughput]
        for count, bot in sorted(self.discord_acks.get("bot", {}).items()):
            floor_row = self.discord_acks.get("floor", {}).get(count)
            beside = (
                f"; bare aiohttp p50 {ms(floor_row['p50'])}, p99 {ms(floor_row['p99'])}"
                if floor_row
                else ""
            )
            rows.append(
                Row(
                    f"ack latency, {count} in flight, warm (imagebot vs bare aiohttp)",
                    "Discord",
                    f"p50 {ms(bot['p50'])}, p99 {ms(bot['p99'])} (n={bot['count']}){beside}",
                )
            )
        rows += discord_http.rows(self.discord_http_acks)
        return rows

    def table(self) -> str:
        return table(self.all_rows())

    def all_met(self) -> bool:
        return all(row.met is not False for row in self.all_rows())

    def notes(self) -> str:
        lines = []
        for p in self.platforms:
            for size, stream in p.overhead.items():
                parts = ", ".join(
                    f"{part} p50 {ms(spread.p50)}" for part, spread in stream.parts.items()
                )
                lines.append(f"{p.platform} {size} (concurrency {stream.concurrency}): {parts}")
            burst = p.ack_burst
            lines.append(
                f"{p.platform} ack burst: slowest {ms(burst.acks.worst)}, "
                f"accept-queue overflows {burst.listen_overflows}"
            )
        return "\n".join(lines)

    def as_json(self) -> dict[str, Any]:
        return {
            "config": {k: str(v) for k, v in vars(self.config).items()},
            "max_concurrency": CONCURRENCY,
            "results": {p.platform: p.as_json() for p in self.platforms},
            "discord_acks": self.discord_acks,
            "discord_http_acks": {k: v.as_json() for k, v in self.discord_http_acks.items()},
            "throughput": [
                {
                    "capacity": t.capacity,
                    "latency": t.latency,
                    "seconds": t.burst.seconds,
                    "ideal": t.ideal,
                    "delivered": t.burst.delivered,
                    "api_calls": t.api_calls,
                    "refused": t.refused,
                    "peak_in_flight": t.peak_in_flight,
                    "vm_hwm": t.burst.memory.hwm,
                }
                for t in self.throughput
            ],
        }


@asynccontextmanager
async def bot_and_load(
    platform: str, fakes: Fakes, workdir: Path, extra_env: dict[str, str] | None = None
) -> AsyncIterator[tuple[BotProcess, Load]]:
    """A fresh bot process with default settings and a fresh database, ready for load."""
    bot = BotProcess(platform, bot_env(fakes, platform, workdir, extra_env or {}), workdir)
    await bot.start()
    load: Any = None
    try:
        if platform == "slack":
            # /healthz answers once the bot has identified itself and listens
            port = int(bot.env["PORT"])

            async def listening() -> bool:
                return await rawhttp.get_status("127.0.0.1", port, "/healthz") == 200

            await bot.wait_until(listening)
            url = f"http://127.0.0.1:{port}/slack/events"
            load = SlackLoad(fakes.slack, fakes.gemini, url, SIGNING_SECRET)
        else:

            async def identified() -> bool:
                try:
                    await fakes.discord.wait_until_ready(timeout=0.2)
                except TimeoutError:
                    return False
                return True

            await bot.wait_until(identified)
            load = DiscordLoad(fakes.discord, fakes.gemini)
        yield bot, load
    finally:
        code = await bot.stop()
        if load is not None:
            await load.wait(list(load.asks.values()), within=0.1)  # a last look
            await load.close()
        if code not in (0, None):
            raise RuntimeError(f"the {platform} bot ended with {code}:\n{bot.tail()}")


async def run_platform(
    platform: str, fakes: Fakes, config: Config, progress: Callable[[str], None]
) -> PlatformResults:
    latency = config.latency
    asks: list[Ask] = []
    progress(f"{platform}: starting the bot")
    async with bot_and_load(platform, fakes, config.workdir / f"{platform}-a", config.bot_env) as (
        bot,
        load,
    ):
        idle = await settled_memory(bot.pid)
        await phases.warm_up(load, latency)
        progress(f"{platform}: idle RSS {megabytes(idle.rss):.0f} MB; {config.requests} at once")
        ack_burst = await phases.burst(
            load,
            bot,
            tag="a",
            size="1K",
            count=config.requests,
            latency=latency,
            workers=CONCURRENCY,
        )
        overhead = {}
        streams = [("1K", "o", config.photo), ("4K", "f", config.photo)]
        if config.photo != "png":
            streams.append(("4K PNG", "p", "png"))  # the worst case of the 4K path
        for name, tag, photo in streams:
            # a 4K PNG answer costs the bot ~0.3 s of CPU and the fakes more: spaced closer,
            # the answers would queue behind each other and the stream would time the queue
            spaced = photo == "png" and name.startswith("4K")
            progress(f"{platform}: timing {config.overhead_requests} generations at {name}")
            fakes.gemini.photo = photo
            try:
                await fakes.gemini.prepare_photo(4096, 4096)
                overhead[name] = await phases.stream(
                    load,
                    tag=tag,
                    size=name.split()[0],
                    count=config.overhead_requests,
                    concurrency=1 if spaced else config.concurrency,
                    latency=max(PNG_SPACING, latency) if spaced else latency,
                    workers=CONCURRENCY,
                )
            finally:
                fakes.gemini.photo = config.photo
        asks += load.asks.values()
    progress(f"{platform}: a fresh bot for {config.requests} 4K images at once")
    async with bot_and_load(platform, fakes, config.workdir / f"{platform}-b", config.bot_env) as (
        bot,
        load,
    ):
        await settled_memory(bot.pid)
        await phases.warm_up(load, latency)
        burst_4k = await phases.burst(
            load,
            bot,
            tag="k",
            size="4K",
            count=config.requests,
            latency=latency,
            workers=CONCURRENCY,
        )
        asks += load.asks.values()
    progress(f"{platform}: the floor of the 4K path, in this process")
    floors = {fmt: await floor.floor(fmt) for fmt in dict.fromkeys((config.photo, "png"))}
    return PlatformResults(platform, idle, ack_burst, overhead, burst_4k, asks, floors)


async def run(config: Config, progress: Callable[[str], None]) -> Results:
    fakes = await start_fakes(latency=config.latency, photo=config.photo)
    try:
        results = []
        for platform in config.platforms:
            results.append(await run_platform(platform, fakes, config, progress))
        acks: dict[str, dict[int, dict[str, Any]]] = {}
        if "discord" in config.platforms:
            progress("discord: ack latency at 50 and 200 in flight, bot and bare aiohttp")
            acks = await ack_rows(
                fakes,
                config.workdir / "discord-acks",
                bot_env=config.bot_env,
                progress=progress,
                **({"rounds": 1, "pause": 0.0} if config.requests < 200 else {}),
            )
        http_acks: dict[str, discord_http.HttpAcks] = {}
        if "discord" in config.platforms or config.discord_http:
            progress("discord: ack latency over HTTP interactions, bot and bare aiohttp")
            http_acks = await discord_http.http_ack_rows(
                fakes,
                config.workdir / "discord-http",
                count=config.requests,
                rounds=3 if config.requests >= 200 else 1,
                progress=progress,
            )
        limited = []
        if config.throughput_capacity:
            limited = await throughput.limited_bursts(
                fakes,
                config.workdir,
                count=config.throughput_requests,
                capacity=config.throughput_capacity,
                latency=config.throughput_latency,
                progress=progress,
            )
        return Results(config, results, limited, acks, http_acks)
    finally:
        await fakes.stop()
