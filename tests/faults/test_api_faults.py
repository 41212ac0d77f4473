"""Image API faults of every kind during a burst: each request ends once, within the retry policy.

Real slack_bolt / discord.py run against FakeSlack / FakeDiscord; FakeGemini answers each API
request with the next fault of a seeded plan. Which job meets which fault depends on the order
requests arrive in, so the checks hold for any order: one image or one failure per job, no job
left open, and API calls per job equal to what the job counted and within GEMINI_MAX_ATTEMPTS.
The burst mixes slash commands and mentions, whose results reach users by different calls.
"""

from __future__ import annotations

import asyncio
import json
import random
import re
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from tests.bots.test_discord_harness import (
    answers,
    assert_every_interaction_answered_in_time,
    discord_server,
    replies_to,
    running_bot,
)
from tests.bots.test_slack_app import running
from tests.fakes.discord import FakeDiscord
from tests.fakes.gemini import FakeGemini
from tests.fakes.slack import FakeSlack
from tests.faults.checks import (
    assert_api_calls_match_the_jobs,
    assert_no_open_jobs,
    describe,
    fault_plan,
    settled,
)

BURST = 32
MAX_ATTEMPTS = 3
ENV = {
    "GEMINI_MAX_ATTEMPTS": MAX_ATTEMPTS,
    # a "slow" fault longer than this is a timeout, which is retried too
    "GEMINI_TIMEOUT_SECONDS": 1.5,
    "IMAGEBOT_MAX_JOBS_PER_USER": 100,
    "IMAGEBOT_PROGRESS_INTERVAL_SECONDS": 0.5,
}
DONE, FAILED = ":white_check_mark:", ":warning:"
SUBJECTS = ("a lighthouse", "a red kite", "a fox in snow", "a harbour", "a desert road")


def _burst(rng: random.Random) -> list[tuple[str, str]]:
    """(kind, prompt) for each request: a slash command or a mention, drawn by the seed."""
    return [
        (rng.choice(["slash", "mention"]), f"burst {n:02d} {rng.choice(SUBJECTS)}")
        for n in range(BURST)
    ]


def _assert_the_burst_ran_its_course(
    rows: list[dict[str, Any]], keys: set[str], gemini: FakeGemini
) -> None:
    assert len(rows) == BURST
    assert {row["idempotency_key"] for row in rows} == keys  # every acknowledged request
    assert_no_open_jobs(rows)
    assert all(row["delivered_at"] is not None for row in rows)
    assert_api_calls_match_the_jobs(rows, gemini, MAX_ATTEMPTS)
    # the plan holds every retryable kind among first attempts, so retries happened
    assert max(row["api_calls"] for row in rows) > 1
    assert {row["state"] for row in rows} == {"succeeded", "failed"}


# Slack


async def test_slack_burst_with_random_api_faults_ends_every_job_in_one_image_or_one_failure(
    tmp_path: Path, fake_gemini: FakeGemini, rng: random.Random
) -> None:
    fake_gemini.latency = 0.05
    plan = fault_plan(rng, BURST, MAX_ATTEMPTS, slow_max=2.5)
    print("fault plan:", describe(plan))
    async with running(tmp_path, fake_gemini, **ENV) as slack:
        fake = slack.fake
        fake_gemini.faults.extend(plan)
        keys: set[str] = set()
        bodies: list[tuple[bytes, str]] = []
        for n, (kind, prompt) in enumerate(_burst(rng)):
            if kind == "slash":
                payload = fake.slash_command_payload(prompt, user_id=f"U{n % 4}", channel_id="C1")
                keys.add(f"slack:{fake.team_id}:cmd:{payload['trigger_id']}")
                bodies.append((urlencode(payload).encode(), "application/x-www-form-urlencoded"))
            else:
                event = fake.app_mention_event(prompt, user=f"U{n % 4}", channel="C2")
                keys.add(f"slack:{fake.team_id}:msg:C2:{event['ts']}")
                bodies.append(fake.event_body(event))
        answered = await asyncio.gather(*(slack.post(body) for body in bodies))
        assert [status for status, _, _ in answered] == [200] * BURST

        rows = await settled(slack.settings.sqlite_path, BURST, timeout=45)

        _assert_the_burst_ran_its_course(rows, keys, fake_gemini)
        status_posts = [c for c in fake.calls_to("chat.postMessage") if c.response.get("ok")]
        assert len(status_posts) == BURST  # one status message per job, never a second
        assert fake.ephemerals == []  # nothing was refused
        for row in rows:
            _assert_slack_job_shown_once(fake, row)


def _assert_slack_job_shown_once(fake: FakeSlack, row: dict[str, Any]) -> None:
    target = json.loads(row["target"])
    status = (target["channel"], target["ts"])
    thread = (target["channel"], target.get("thread_ts") or target["ts"])
    uploads = [u for u in fake.uploads if (u.channel, u.thread_ts) == thread]
    endings = [
        c
        for c in fake.calls_to("chat.update")
        if c.response.get("ok")
        and c.params.get("ts") == status[1]
        and (DONE in str(c.params.get("text")) or FAILED in str(c.params.get("text")))
    ]
    shown = _unescape(fake.messages[status]["text"])
    what = f"{row['prompt']!r} ({row['state']}, {row['error_message']!r})"
    assert len(endings) == 1, f"{what}: the status was ended {len(endings)} times"
    if row["state"] == "succeeded":
        assert len(uploads) == 1, f"{what}: {len(uploads)} uploads"
        assert DONE in shown, what
    else:
        assert uploads == [], f"{what}: a failed job uploaded {len(uploads)} files"
        assert f"{FAILED} {row['error_message']}" in shown, what


def _unescape(text: str) -> str:
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


# Discord


async def test_discord_burst_with_random_api_faults_ends_every_job_in_one_image_or_one_failure(
    tmp_path: Path, fake_gemini: FakeGemini, rng: random.Random
) -> None:
    fake_gemini.latency = 0.05
    plan = fault_plan(rng, BURST, MAX_ATTEMPTS, slow_max=2.5)
    print("fault plan:", describe(plan))
    async with (
        discord_server() as fake,
        running_bot(tmp_path, fake_gemini, fake, **ENV) as bot,
    ):
        fake_gemini.faults.extend(plan)
        sent: dict[str, tuple[str, dict[str, Any]]] = {}  # idempotency key -> request
        for kind, prompt in _burst(rng):
            if kind == "slash":
                payload = await bot.slash({"prompt": prompt})
                sent[f"discord:interaction:{payload['id']}"] = (kind, payload)
            else:
                payload = await bot.say(prompt)
                sent[f"discord:message:{payload['id']}"] = (kind, payload)

        rows = await settled(bot.settings.sqlite_path, BURST, timeout=45)

        _assert_the_burst_ran_its_course(rows, set(sent), fake_gemini)
        assert_every_interaction_answered_in_time(fake)
        for row in rows:
            kind, payload = sent[row["idempotency_key"]]
            _assert_discord_job_shown_once(fake, row, kind, payload)
        # one reply per mention, and nothing posted afresh: each message became its result
        posts = fake.calls_to("POST", rf"/channels/{fake.channel_id}/messages")
        mentions = [kind for kind, _ in sent.values() if kind == "mention"]
        assert len([c for c in posts if c.status == 200]) == len(mentions)


def _assert_discord_job_shown_once(
    fake: FakeDiscord, row: dict[str, Any], kind: str, payload: dict[str, Any]
) -> None:
    if kind == "slash":
        # shown in the interaction's response, edited through its webhook
        [shown] = [m for m in fake.channel_messages() if answers(m, payload)]
        path = rf"/webhooks/\d+/{re.escape(payload['token'])}/messages/.+"
    else:
        # shown in the bot's reply, edited with the bot token
        [shown] = [m for m in fake.channel_messages() if replies_to(m, payload)]
        path = rf"/channels/{shown.channel_id}/messages/{shown.id}"
    edits = [c for c in fake.calls_to("PATCH", path) if c.status == 200]
    with_image = [c for c in edits if c.files]
    with_failure = [c for c in edits if str((c.json or {}).get("content", "")).startswith("⚠️")]
    what = f"{kind} {row['prompt']!r} ({row['state']}, {row['error_message']!r})"
    if row["state"] == "succeeded":
        assert (len(with_image), len(with_failure)) == (1, 0), what
        assert len(shown.attachments) == 1, what
    else:
        assert (len(with_image), len(with_failure)) == (0, 1), what
        assert shown.attachments == [] and shown.content.startswith("⚠️"), what
        assert row["error_message"] in shown.content, what
