"""An adapter's process killed with SIGKILL and started again over the same SQLite file.

`python -m bots.slack` (HTTP mode) and `python -m bots.discord` run as child processes against
the fakes in the test process. Jobs are caught at a point (queued, API call in flight, result
stored but not shown) and the process is killed there; the next process must finish each
acknowledged job with exactly one delivered result, at the cost of at most one more API call
per interruption, and leave no job open.
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web

from core.service import MAX_PAID_RUNS
from tests.bots.test_discord_harness import (
    USER,
    answers,
    callbacks,
    finished,
    png,
    replies_to,
)
from tests.fakes.discord import FakeDiscord
from tests.fakes.gemini import FakeGemini
from tests.fakes.slack import FakeSlack
from tests.faults.checks import (
    api_calls_by_prompt,
    assert_no_open_jobs,
    held_requests,
    job_rows,
    poll_until,
    prompt_of,
    settled,
)
from tests.faults.processes import (
    AdapterProcesses,
    discord_settings,
    slack_command,
    slack_event,
    slack_settings,
)

DONE = ":white_check_mark:"
FAST, STUCK = 0.05, 30.0  # API latencies: answered at once, or not before the kill
WAIT = 15.0  # seconds allowed for each point to be reached
SETTINGS = {
    "IMAGEBOT_LEASE_SECONDS": "0.6",
    "IMAGEBOT_MAX_CONCURRENCY": "2",
    "IMAGEBOT_MAX_JOBS_PER_USER": "100",
    # one progress edit as a job starts; the next would come long after the test
    "IMAGEBOT_PROGRESS_INTERVAL_SECONDS": "30",
}


@asynccontextmanager
async def stopping(procs: AdapterProcesses) -> AsyncIterator[AdapterProcesses]:
    """Stops the last process however the test ends, showing its log if the test failed."""
    try:
        yield procs
    except BaseException:
        print(f"log of {procs.platform} process {procs.started}:\n{procs.tail()}")
        raise
    finally:
        await procs.stop()


@dataclass
class SlackRun:
    procs: AdapterProcesses
    slack: FakeSlack
    gemini: FakeGemini

    @property
    def db(self) -> Path:
        return self.procs.db

    async def command(self, text: str) -> None:
        await slack_command(self.procs, self.slack, text)

    def status_posts(self) -> int:
        return len([c for c in self.slack.calls_to("chat.postMessage") if c.response.get("ok")])

    def failed_uploads(self) -> int:
        calls = self.slack.calls_to("files.getUploadURLExternal")
        return len([c for c in calls if c.status == 500])


@asynccontextmanager
async def slack_processes(tmp_path: Path, gemini: FakeGemini) -> AsyncIterator[SlackRun]:
    async with FakeSlack() as slack:
        settings = {**SETTINGS, **slack_settings(slack)}
        async with stopping(AdapterProcesses("slack", tmp_path, gemini, settings)) as procs:
            yield SlackRun(procs, slack, gemini)


def in_flight(gemini: FakeGemini, prompts: list[str]) -> set[str]:
    """Those of `prompts` whose API request has arrived and not been answered."""
    return {
        prompt_of(r.json)
        for r in gemini.requests
        if r.status is None and prompt_of(r.json) in prompts
    }


def announced(db: Path, prompts: list[str]) -> bool:
    """Every job of `prompts` is stored with its status message."""
    rows = [r for r in job_rows(db) if r["prompt"] in prompts]
    return len(rows) == len(prompts) and all(json.loads(r["target"]).get("ts") for r in rows)


# Slack: killed at points the seed orders

ROUNDS = {"queued": 4, "in_flight": 2, "stored_not_shown": 2}  # jobs sent in each round


async def _run_to(point: str, run: SlackRun, prompts: list[str]) -> None:
    """Sends `prompts` and returns once their jobs are at `point`."""
    posted = run.status_posts()
    failed = run.failed_uploads()
    if point == "stored_not_shown":
        run.slack.fail_next("files.getUploadURLExternal", status=500, times=len(prompts))
    else:
        run.gemini.latency = STUCK
    for prompt in prompts:
        await run.command(prompt)
    await poll_until(
        lambda: run.status_posts() >= posted + len(prompts), timeout=WAIT, what="status posts"
    )
    # A status message whose ts is not stored yet is posted afresh after a restart (and the
    # first one is left saying "Queued"): kill only once every job knows its message.
    await poll_until(lambda: announced(run.db, prompts), timeout=WAIT, what="stored status")
    if point == "queued":
        # two workers: two calls in flight, the other jobs waiting behind them
        await poll_until(
            lambda: len(in_flight(run.gemini, prompts)) == 2, timeout=WAIT, what="2 calls"
        )
    elif point == "in_flight":
        await poll_until(
            lambda: in_flight(run.gemini, prompts) == set(prompts), timeout=WAIT, what="calls"
        )
    else:
        # each job's first upload failed; its next try is half a second away or more
        await poll_until(
            lambda: run.failed_uploads() >= failed + len(prompts), timeout=WAIT, what="uploads"
        )


def _assert_point_reached(point: str, rows: list[dict[str, Any]]) -> None:
    states = sorted(r["state"] for r in rows)
    if point == "queued":
        assert states.count("queued") >= 1 and states.count("running") == 2, states
    elif point == "in_flight":
        assert set(states) == {"running"}, states
    else:
        stored = [r for r in rows if r["state"] == "succeeded" and r["delivered_at"] is None]
        assert stored, [(r["state"], r["delivered_at"]) for r in rows]


async def test_slack_process_killed_at_random_points_delivers_every_acknowledged_job_once(
    tmp_path: Path, fake_gemini: FakeGemini, rng: random.Random
) -> None:
    points = rng.sample(sorted(ROUNDS), len(ROUNDS))
    print("kill points in order:", points)
    prompts: list[str] = []
    cut_off: set[str] = set()  # prompts whose API call a kill interrupted
    async with slack_processes(tmp_path, fake_gemini) as run:
        for number, point in enumerate(points, start=1):
            fake_gemini.latency = FAST
            await run.procs.start()
            # what the killed process left is finished first, once its lease has run out
            await settled(run.db, len(prompts), timeout=20)
            new = [f"round {number} job {k} {point}" for k in range(ROUNDS[point])]
            await _run_to(point, run, new)
            cut_off |= in_flight(fake_gemini, new)
            await run.procs.kill()
            prompts += new
            _assert_point_reached(point, [r for r in job_rows(run.db) if r["prompt"] in new])

        fake_gemini.latency = FAST
        await run.procs.start()
        rows = await settled(run.db, len(prompts), timeout=20)

    assert sorted(r["prompt"] for r in rows) == sorted(prompts)
    assert_no_open_jobs(rows)
    assert all(r["state"] == "succeeded" and r["delivered_at"] for r in rows)
    assert run.status_posts() == len(prompts)  # no status message posted twice
    calls = api_calls_by_prompt(fake_gemini)
    for row in rows:
        interrupted = row["prompt"] in cut_off
        # the call a kill cut off was made once more, and the job counted both
        assert calls[row["prompt"]] == row["api_calls"] == 1 + interrupted
        assert row["attempts"] == 1 + interrupted
        _assert_shown_once(run.slack, row)
    assert len(run.slack.uploads) == len(prompts)


def _assert_shown_once(slack: FakeSlack, row: dict[str, Any]) -> None:
    target = json.loads(row["target"])
    status = (target["channel"], target["ts"])
    uploads = [u for u in slack.uploads if (u.channel, u.thread_ts) == status]
    assert len(uploads) == 1, f"{row['prompt']!r}: {len(uploads)} uploads"
    assert DONE in slack.messages[status]["text"], row["prompt"]


async def test_a_job_cut_off_in_flight_by_every_restart_ends_in_one_failure_notice(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    fake_gemini.latency = STUCK
    async with slack_processes(tmp_path, fake_gemini) as run:
        await run.procs.start()
        await run.command("a comet, whose process never lives long enough")
        for interruption in range(1, MAX_PAID_RUNS + 1):
            await poll_until(
                lambda n=interruption: len(fake_gemini.requests) == n,
                timeout=WAIT,
                what=f"API call {interruption}",
            )
            await run.procs.kill()
            await run.procs.start()
        # the next run gives up instead of calling the API once more
        [row] = await settled(run.db, 1, timeout=20)

    assert row["state"] == "failed" and row["delivered_at"] is not None
    assert row["attempts"] == MAX_PAID_RUNS + 1
    assert row["api_calls"] == row["paid_runs"] == len(fake_gemini.requests) == MAX_PAID_RUNS
    target = json.loads(row["target"])
    shown = run.slack.messages[(target["channel"], target["ts"])]["text"]
    assert ":warning: I could not finish this request after several tries" in shown
    endings = [c for c in run.slack.calls_to("chat.update") if ":warning:" in str(c.params)]
    assert len(endings) == 1 and run.slack.uploads == []
    assert run.status_posts() == 1


async def test_slack_process_killed_between_the_upload_and_the_status_edit_uploads_only_once(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    fake_gemini.latency = FAST
    async with slack_processes(tmp_path, fake_gemini) as run:
        slack = run.slack
        await run.procs.start()
        await run.command("a lighthouse, killed while its status is edited")
        await poll_until(
            lambda: slack.calls_to("chat.update"), timeout=WAIT, what="the first progress edit"
        )
        # the image gets shared; the edit that would show it done fails, to be tried again
        slack.fail_next("chat.update", status=500)
        await poll_until(
            lambda: [c for c in slack.calls_to("chat.update") if c.status == 500],
            timeout=WAIT,
            what="the failed status edit",
        )
        await run.procs.kill()
        [row] = job_rows(run.db)
        assert row["state"] == "succeeded" and row["delivered_at"] is None
        assert len(slack.uploads) == 1

        await run.procs.start()
        [row] = await settled(run.db, 1, timeout=20)

    assert row["delivered_at"] is not None and row["api_calls"] == 1
    assert len(fake_gemini.requests) == 1
    target = json.loads(row["target"])
    assert DONE in slack.messages[(target["channel"], target["ts"])]["text"]
    assert len(slack.uploads) == 1, "the image was shared again after the restart"


@asynccontextmanager
async def stalling_file_host(
    then: bytes | None = None,
) -> AsyncIterator[tuple[str, list[str]]]:
    """A file host on 127.0.0.1 whose first download of each path never finishes; later
    ones get `then` (or stall too, without it). Yields its root URL and the paths asked."""
    asked: list[str] = []
    closing = asyncio.Event()

    async def stall(request: web.Request) -> web.StreamResponse:
        asked.append(request.path)
        if then is not None and asked.count(request.path) > 1:
            return web.Response(body=then, content_type="image/png")
        await closing.wait()
        return web.Response(status=503)

    app = web.Application()
    app.router.add_get("/{tail:.*}", stall)
    runner = web.AppRunner(app, shutdown_timeout=0.5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        yield f"http://127.0.0.1:{runner.addresses[0][1]}/", asked
    finally:
        closing.set()
        await runner.cleanup()


async def test_a_mention_acknowledged_and_killed_while_its_photo_downloads_is_not_lost(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    fake_gemini.latency = FAST
    async with slack_processes(tmp_path, fake_gemini) as run, stalling_file_host() as (root, asked):
        slack = run.slack
        run.procs.settings["SLACK_FILE_HOSTS"] = "127.0.0.1"
        await run.procs.start()
        photo = slack.add_file(b"\x89PNG\r\n\x1a\n", name="boat.png", mimetype="image/png")
        photo.update(url_private=f"{root}boat.png", url_private_download=f"{root}boat.png")
        event = slack.app_mention_event("put this boat at sea", channel="C1", files=[photo])
        await slack_event(run.procs, slack, event)  # acknowledged: Slack will not send it again
        await poll_until(lambda: asked, timeout=WAIT, what="the download")
        await run.procs.kill()

        await run.procs.start()
        # the request ends as a job, or at least as a reply saying why not
        seen = await _within(
            3.0,
            lambda: job_rows(run.db) or slack.thread_messages("C1", event["ts"])[1:],
        )
    assert seen, "the acknowledged mention left no job and no reply"


async def _within(seconds: float, check: Any) -> Any:
    """`check()`'s first truthy value within `seconds`, or its last value."""
    try:
        return await poll_until(check, timeout=seconds, what="an outcome")
    except TimeoutError:
        return check()


# Discord


async def test_discord_process_killed_mid_call_delivers_each_request_once_and_ignores_replays(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    slash_prompt, mention_prompt = "a glacier, asked with /imagine", "a glacier, asked by mention"
    fake_gemini.latency = STUCK
    async with FakeDiscord() as fake:
        settings = {**SETTINGS, **discord_settings(fake)}
        async with stopping(AdapterProcesses("discord", tmp_path, fake_gemini, settings)) as procs:
            await procs.start()
            slash = fake.interaction_slash_command(
                "imagine", [{"name": "prompt", "type": 3, "value": slash_prompt}], user_id=USER
            )
            said = _mention(fake, mention_prompt)
            await fake.dispatch("INTERACTION_CREATE", slash)
            await fake.dispatch("MESSAGE_CREATE", said)
            prompts = [slash_prompt, mention_prompt]
            await poll_until(
                lambda: in_flight(fake_gemini, prompts) == set(prompts), timeout=WAIT, what="calls"
            )
            await procs.kill()

            fake_gemini.latency = FAST
            await procs.start()
            # the new session is sent both dispatches again: neither may make a second job
            await fake.wait_until_ready()
            await fake.dispatch("INTERACTION_CREATE", slash)
            await fake.dispatch("MESSAGE_CREATE", said)
            await fake.wait_for_call(
                "POST",
                rf"/interactions/{slash['id']}/[^/]+/callback",
                predicate=lambda c: c.status == 400,  # "already acknowledged"
            )
            # a message sent after the replays is handled after them
            await fake.dispatch("MESSAGE_CREATE", _mention(fake, "a glacier, asked later"))
            rows = await settled(procs.db, 3, timeout=20)

    assert fake.errors == []
    assert len(rows) == 3 and all(r["state"] == "succeeded" and r["delivered_at"] for r in rows)
    assert fake.identifies == 2
    calls = api_calls_by_prompt(fake_gemini)
    assert calls == {slash_prompt: 2, mention_prompt: 2, "a glacier, asked later": 1}
    assert all(r["api_calls"] == 2 and r["attempts"] == 2 for r in rows[:2])
    for shows, payload in ((answers, slash), (replies_to, said)):
        [shown] = [m for m in fake.channel_messages() if shows(m, payload)]
        assert finished(shown) and len(shown.attachments) == 1
    answered = [c for c in callbacks(fake) if c.status in (200, 204)]
    assert len(answered) == 1  # the interaction was deferred once, by the first process


def _mention(fake: FakeDiscord, text: str) -> dict[str, Any]:
    return fake.message_create(
        f"<@{fake.bot_user_id}> {text}", author_id=USER, mentions=[fake.bot_user_id]
    )


@pytest.mark.parametrize(
    ("threads", "stopped_by"),
    [(False, "SIGKILL"), (True, "SIGKILL"), (False, "SIGTERM")],
    ids=["replies-killed", "threads-killed", "replies-stopped"],
)
async def test_discord_requests_cut_off_while_their_photos_download_finish_after_the_restart(
    tmp_path: Path, fake_gemini: FakeGemini, threads: bool, stopped_by: str
) -> None:
    slash_prompt, mention_prompt = "put this boat at sea", "put this kite in the sky"
    fake_gemini.latency = FAST
    photo = png()
    async with FakeDiscord() as fake, stalling_file_host(then=photo) as (root, asked):
        settings = {
            **SETTINGS,
            **discord_settings(fake),
            # with thread messages on, a mention is answered in a thread of its own
            "DISCORD_THREAD_MESSAGES": str(threads).lower(),
        }
        async with stopping(AdapterProcesses("discord", tmp_path, fake_gemini, settings)) as procs:
            await procs.start()
            boat = {**fake.add_attachment(photo, "boat.png", "image/png"), "url": f"{root}boat"}
            kite = fake.add_attachment(photo, "kite.png", "image/png")
            slash = fake.interaction_slash_command(
                "imagine",
                [{"name": "prompt", "type": 3, "value": slash_prompt}],
                user_id=USER,
                attachments={"image": boat},
            )
            said = fake.message_create(
                f"<@{fake.bot_user_id}> {mention_prompt}",
                author_id=USER,
                mentions=[fake.bot_user_id],
                attachments=[kite],
            )
            said["attachments"] = [{**said["attachments"][0], "url": f"{root}kite"}]
            await fake.dispatch("INTERACTION_CREATE", slash)
            await fake.dispatch("MESSAGE_CREATE", said)
            await poll_until(lambda: len(asked) == 2, timeout=WAIT, what="both downloads")
            # deferred and seen: Discord sends neither again
            if stopped_by == "SIGKILL":
                await procs.kill()
            else:  # a deploy: the shutdown cancels the downloads and must keep both held
                await procs.stop()
            # both held, and free to take over as soon as the next process starts
            await poll_until(
                lambda: held_requests(procs.db, expired_by=time.time()) == 2,
                timeout=WAIT,
                what="leases",
            )

            await procs.start()
            rows = await settled(procs.db, 2, timeout=20)

    assert fake.errors == []
    assert sorted(asked) == ["/boat", "/boat", "/kite", "/kite"]
    assert all(r["state"] == "succeeded" and r["delivered_at"] for r in rows)
    assert api_calls_by_prompt(fake_gemini) == {slash_prompt: 1, mention_prompt: 1}
    for request in fake_gemini.requests:  # the photo went along as the reference image
        assert request.json is not None
        [inline] = [p for p in request.json["contents"][-1]["parts"] if "inlineData" in p]
        assert base64.b64decode(inline["inlineData"]["data"]) == photo
    [shown] = [m for m in fake.channel_messages() if answers(m, slash)]
    assert finished(shown) and len(shown.attachments) == 1
    if threads:  # a thread started from a message takes that message's id
        [shown] = fake.channel_messages(int(said["id"]))
        assert fake.channels[int(said["id"])]["name"] == mention_prompt
    else:
        [shown] = [m for m in fake.channel_messages() if replies_to(m, said)]
    assert finished(shown) and len(shown.attachments) == 1
    answered = [c for c in callbacks(fake) if c.status in (200, 204)]
    assert len(answered) == 1  # deferred once, by the first process
    assert held_requests(procs.db) == 0  # nothing left held


async def test_a_deploy_sigterm_during_a_burst_of_30_pays_for_each_image_once(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    fake_gemini.latency = 0.6
    prompts = [f"burst picture {n}" for n in range(30)]
    async with slack_processes(tmp_path, fake_gemini) as run:
        run.procs.settings["IMAGEBOT_MAX_CONCURRENCY"] = "8"
        await run.procs.start()
        await asyncio.gather(*(run.command(prompt) for prompt in prompts))
        await poll_until(
            lambda: len(in_flight(fake_gemini, prompts)) >= 4, timeout=WAIT, what="calls under way"
        )
        under_way = len(in_flight(fake_gemini, prompts))
        await run.procs.stop()  # SIGTERM: those under way finish; the queue is handed back
        answered_before_restart = len(fake_gemini.responses)
        await run.procs.start()
        rows = await settled(run.db, len(prompts), timeout=60)

    assert answered_before_restart >= under_way
    assert len(fake_gemini.requests) == len(fake_gemini.responses) == len(prompts)
    assert sorted(r["api_calls"] for r in rows) == [1] * len(prompts)
    for row in rows:
        _assert_shown_once(run.slack, row)
