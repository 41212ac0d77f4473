"""Several processes on one PostgreSQL: two Slack HTTP processes behind one URL and two
Discord processes running two shards each, a burst to all of them, one Slack process
SIGKILLed in the middle. Every acknowledged request ends in one image or one sentence, no
image is posted twice, and API calls exceed requests only by what the dead process had in
flight."""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import asyncpg

from tests.bots.test_discord_harness import USER, answers, discord_server, finished
from tests.fakes.discord import FakeDiscord, StoredMessage
from tests.fakes.gemini import FakeGemini
from tests.fakes.slack import FakeSlack
from tests.faults.checks import OPEN_STATES
from tests.faults.processes import (
    AdapterProcesses,
    _post,
    discord_settings,
    slack_settings,
)

SHARDS = 4
LEASE = "1.0"
BURST_PER_TARGET = 3  # requests to each Slack process and to each Discord guild


async def _jobs(url: str) -> list[dict[str, Any]]:
    connection = await asyncpg.connect(url)
    try:
        return [dict(r) for r in await connection.fetch("SELECT * FROM jobs ORDER BY seq")]
    finally:
        await connection.close()


async def _held(url: str) -> int:
    connection = await asyncpg.connect(url)
    try:
        return int(await connection.fetchval("SELECT count(*) FROM intake"))
    finally:
        await connection.close()


async def _settled(url: str, count: int, timeout: float = 45.0) -> list[dict[str, Any]]:
    """Polls the shared jobs table until `count` jobs exist and all are finished and shown."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    rows: list[dict[str, Any]] = []
    while loop.time() < deadline:
        rows = await _jobs(url)
        if len(rows) >= count and all(
            r["state"] not in OPEN_STATES and r["delivered_at"] is not None for r in rows
        ):
            return rows
        await asyncio.sleep(0.1)
    states = Counter(f"{r['state']}/{bool(r['delivered_at'])}" for r in rows)
    raise TimeoutError(f"{len(rows)} jobs of {count} settled after {timeout}s: {states}")


@asynccontextmanager
async def _processes(procs: list[AdapterProcesses]) -> AsyncIterator[None]:
    try:
        await asyncio.gather(*(p.start() for p in procs))
        yield
    finally:
        await asyncio.gather(*(p.stop() for p in procs))


async def test_a_burst_over_four_processes_on_postgresql_survives_a_kill(
    tmp_path: Path, fake_gemini: FakeGemini, postgres_url: str
) -> None:
    fake_gemini.latency = 0.3
    common = {"DATABASE_URL": postgres_url, "IMAGEBOT_LEASE_SECONDS": LEASE}
    async with FakeSlack() as slack, discord_server(max_concurrency=SHARDS) as discord:
        guilds = [(discord.guild_id, discord.channel_id)] + [
            (g.id, g.channel_id)
            for g in (discord.add_guild(f"Guild {n}", shard=(n, SHARDS)) for n in (1, 2, 3))
        ]
        procs: list[AdapterProcesses] = []
        for n in range(2):
            workdir = tmp_path / f"slack-{n}"
            workdir.mkdir()
            procs.append(
                AdapterProcesses("slack", workdir, fake_gemini, {**slack_settings(slack), **common})
            )
        for n in range(2):
            workdir = tmp_path / f"discord-{n}"
            workdir.mkdir()
            shards = {
                "DISCORD_SHARD_COUNT": str(SHARDS),
                "DISCORD_SHARD_IDS": f"{2 * n},{2 * n + 1}",
            }
            procs.append(
                AdapterProcesses(
                    "discord",
                    workdir,
                    fake_gemini,
                    {**discord_settings(discord), **common, **shards},
                )
            )
        slack_a, slack_b = procs[0], procs[1]
        async with _processes(procs):
            await discord.wait_until_ready()
            asked_slack = 0
            interactions: list[dict[str, Any]] = []
            for round_ in range(BURST_PER_TARGET):
                sends = []
                for target in (slack_a, slack_b):
                    if target.process is None:
                        continue  # dead: a load balancer stops sending to it
                    body = slack.slash_command_body(
                        f"a lighthouse {round_} via {target.workdir.name}",
                        user_id=f"U{round_}",
                        channel_id="C1",
                    )
                    sends.append(_post(target, slack, body, "/imagine"))
                    asked_slack += 1
                for guild_id, channel_id in guilds:
                    payload = discord.interaction_slash_command(
                        "imagine",
                        [{"name": "prompt", "type": 3, "value": f"a glacier {round_} {guild_id}"}],
                        user_id=USER,
                        channel_id=channel_id,
                    )
                    interactions.append(payload)
                    sends.append(discord.dispatch("INTERACTION_CREATE", payload))
                await asyncio.gather(*sends)
                if round_ == 1:
                    # mid-burst: a Slack process dies with requests and jobs of its own
                    await slack_a.kill()
                    cut_off = await _in_flight(postgres_url, fake_gemini)
            rows = await _settled(postgres_url, asked_slack + len(interactions))
            shown = [await _answer(discord, payload) for payload in interactions]
            held = await _held(postgres_url)
        logs = [p.log().read_text(errors="replace") for p in procs]

    assert discord.errors == []
    assert all(r["state"] == "succeeded" for r in rows), Counter(r["state"] for r in rows)
    assert held == 0
    # one image each: one upload per Slack job, one finished answer per interaction
    uploads = Counter(u.thread_ts for u in slack.uploads)  # each job shows in its own thread
    assert len(slack.uploads) == asked_slack and max(uploads.values()) == 1
    assert all(len(m.attachments) == 1 for m in shown)
    # calls beyond one per request: only runs the kill cut off
    assert len(fake_gemini.requests) - len(rows) <= cut_off
    # the queue is shared: Discord jobs ran in both Discord processes, and what the dead
    # Slack process had taken in was finished by the other one
    ran = [sum(f"job={r['id']}" in log for r in rows) for log in logs]
    assert ran[2] > 0 and ran[3] > 0, ran
    orphans = [r for r in rows if "via slack-0" in r["prompt"]]
    assert len(orphans) == 2 and all(f"job={r['id']}" in logs[1] for r in orphans), ran


async def _in_flight(url: str, gemini: FakeGemini) -> int:
    """API calls counted by jobs whose result was not stored: what a kill cuts off."""
    return sum(int(r["api_calls"]) for r in await _jobs(url) if not r["finished_at"])


async def _answer(fake: FakeDiscord, payload: dict[str, Any]) -> StoredMessage:
    return await fake.wait_for_message(lambda m: answers(m, payload) and finished(m), timeout=30)
