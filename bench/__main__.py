"""`python -m bench`: the real bot against local fakes, measured, and one table printed."""

from __future__ import annotations

import argparse
import asyncio
import json
import platform
import shutil
import sys
import tempfile
from pathlib import Path

from bench import run, scaling


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench",
        description=(
            "Runs the real bot (python -m bots.slack, python -m bots.discord) as a separate "
            "process against fake Slack, Discord and image APIs on 127.0.0.1, drives bursts of "
            "/imagine through it, and prints ack latency, bot overhead per generation, "
            "throughput, memory and lost/duplicated results against their targets."
        ),
    )
    parser.add_argument(
        "--requests",
        type=int,
        default=200,
        help="requests in each burst, all in flight at once (default 200)",
    )
    parser.add_argument(
        "--overhead-requests",
        type=int,
        default=60,
        help="generations timed for overhead, at 1K and again at 4K (default 60)",
    )
    parser.add_argument(
        "--concurrency",
        type=int,
        default=4,
        help="while timing overhead, a request starts every LATENCY/CONCURRENCY seconds, "
        "so about this many wait on the image API at once; never more in flight than the "
        "bot has workers, so nothing queues (default 4)",
    )
    parser.add_argument(
        "--latency",
        type=float,
        default=1.0,
        help="seconds the fake image API takes per request before answering (default 1.0)",
    )
    parser.add_argument(
        "--format",
        choices=("jpeg", "png"),
        default="jpeg",
        help="what the fake image API returns: photo-like JPEG (several MB at 4K, default) "
        "or PNG (tens of MB at 4K)",
    )
    parser.add_argument(
        "--platform",
        action="append",
        choices=run.PLATFORMS,
        help="measure only this platform (repeatable; default all)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="a small, fast run to check the bench works (20-request bursts, 10 timed "
        "one every 0.3 s, 0.3 s latency); its numbers are not the recorded results",
    )
    parser.add_argument(
        "--bot-env",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="extra environment for the bot processes (repeatable), e.g. to try a setting",
    )
    parser.add_argument(
        "--scaling-seconds",
        type=float,
        default=12.0,
        help="the scaling curve's burst (the same for every point) is sized to this many "
        "seconds of generation at the ceiling of 4 processes, processes × workers / latency "
        "(default 12: 384 requests at 8 workers and 1 s)",
    )
    parser.add_argument(
        "--scaling-only",
        action="store_true",
        help="run only the scaling curve (1, 2, 4 Slack processes on PostgreSQL; "
        "SQLite against PostgreSQL with one)",
    )
    parser.add_argument("--no-scaling", action="store_true", help="skip the scaling curve")
    parser.add_argument(
        "--throughput-capacity",
        type=int,
        default=40,
        metavar="K",
        help="the API-limited bursts: the fake API takes K calls at once and answers 429 "
        "with a retryDelay beyond them; 0 skips them (default 40)",
    )
    parser.add_argument(
        "--throughput-only", action="store_true", help="run only the API-limited bursts"
    )
    parser.add_argument(
        "--discord-http-only",
        action="store_true",
        help="run only the Discord ack over HTTP interactions, beside its bare aiohttp floor",
    )
    parser.add_argument("--workdir", type=Path, help="keep the bots' logs and databases here")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    args = parser.parse_args(argv)
    if args.quick:
        # one request every 0.3 s: the interval must stay above a 4K image's processing
        args.requests, args.overhead_requests, args.latency = 20, 10, 0.3
        args.concurrency = 1
        args.scaling_seconds = 0.9
    if args.throughput_only or args.discord_http_only:
        args.no_scaling = True
    if args.scaling_only and args.no_scaling:
        parser.error("--scaling-only and --no-scaling exclude each other")
    if args.scaling_seconds <= 0:
        parser.error("--scaling-seconds must be positive")
    for name in ("requests", "overhead_requests", "concurrency"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be at least 1")
    if args.latency < 0:
        parser.error("--latency must not be negative")
    if any("=" not in pair for pair in args.bot_env):
        parser.error("--bot-env takes NAME=VALUE")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(sys.argv[1:] if argv is None else argv)
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="imagebot-bench-"))
    config = run.Config(
        requests=args.requests,
        overhead_requests=args.overhead_requests,
        concurrency=args.concurrency,
        latency=args.latency,
        photo=args.format,
        platforms=()
        if args.throughput_only or args.discord_http_only
        else tuple(args.platform or run.PLATFORMS),
        workdir=workdir,
        bot_env=dict(pair.split("=", 1) for pair in args.bot_env),
        throughput_capacity=0 if args.discord_http_only else args.throughput_capacity,
        discord_http=args.discord_http_only,
        throughput_latency=1.0 if args.quick else run.throughput.LATENCY,
        throughput_requests=args.requests,
    )
    curve_config = scaling.ScalingConfig(
        latency=args.latency,
        seconds=args.scaling_seconds,
        photo=args.format,
        workdir=workdir,
        bot_env=config.bot_env,
    )
    print(machine_line(), flush=True)
    results = curve = None
    try:
        if not args.scaling_only:
            results = asyncio.run(run.run(config, progress=lambda line: print(line, flush=True)))
        if not args.no_scaling:
            curve = asyncio.run(
                scaling.run(curve_config, progress=lambda line: print(line, flush=True))
            )
    finally:
        if args.workdir is None:
            shutil.rmtree(workdir, ignore_errors=True)
    met = True
    data: dict = {}
    if results is not None:
        print()
        print(results.table())
        print()
        print(results.notes())
        met = met and results.all_met()
        data = results.as_json()
    if curve is not None:
        print()
        print(curve.table())
        print()
        print(curve.notes())
        met = met and curve.all_met()
        data["scaling"] = curve.as_json()
    if args.json:
        args.json.write_text(json.dumps(data, indent=2))
    return 0 if met else 1


def machine_line() -> str:
    cpu = "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    import os

    return (
        f"machine: {os.cpu_count()} CPUs ({cpu}), Python {platform.python_version()}, "
        f"{platform.system()} {platform.release()}"
    )


if __name__ == "__main__":
    raise SystemExit(main())
