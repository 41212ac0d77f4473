"""A process SIGKILLed 0, 5, 20 and 50 ms after the platform heard "received", on every kind
of request that makes a job on each platform (commands, mentions, Re-roll and Upscale
clicks, Edit forms): nothing acknowledged is lost, and nothing is paid twice."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from tests.bots.test_discord_harness import USER, callbacks
from tests.fakes.discord import FakeDiscord
from tests.fakes.gemini import FakeGemini
from tests.faults.checks import held_requests, job_rows, settled
from tests.faults.processes import AdapterProcesses, _post, discord_settings, slack_event
from tests.faults.test_crash_restart import FAST, SETTINGS, WAIT, slack_processes, stopping

# how long after the acknowledgement each kill lands: the variable under test, not a wait
KILL_AFTER = (0.0, 0.005, 0.02, 0.05)


class Kills:
    """Kills the process, counting the API calls it cut off: counted (before each is sent) by
    a job whose result was not stored. Read from the database once the process is dead, not
    from the fake, which may still be reading a request the dead process had already sent."""

    def __init__(self, procs: AdapterProcesses, gemini: FakeGemini) -> None:
        self.procs, self.gemini, self.cut_off = procs, gemini, 0
        self._seen: dict[str, int] = {}

    async def kill_and_restart(self) -> None:
        await self.procs.kill()
        for row in job_rows(self.procs.db):
            if not row["finished_at"]:
                calls = int(row["api_calls"])
                self.cut_off += calls - self._seen.get(str(row["id"]), 0)
                self._seen[str(row["id"])] = calls
        await self.procs.start()


def assert_every_request_answered_once(
    rows: list[dict[str, Any]], gemini: FakeGemini, kills: Kills
) -> None:
    unanswered = [r for r in rows if not (r["state"] == "succeeded" and r["delivered_at"])]
    assert unanswered == [], "; ".join(
        f"{r['prompt']!r} {r['state']}: {r['error_message']} [{r['error_detail']}] "
        f"(attempts {r['attempts']}, API calls {r['api_calls']})"
        for r in unanswered
    )
    # counted before each call is sent: never fewer than the API saw, and one more only
    # where a kill fell between the count and the request leaving
    counted = sum(int(r["api_calls"]) for r in rows)
    assert 0 <= counted - len(gemini.requests) <= len(KILL_AFTER)
    # a call is made again only when a kill cut it off before its answer was stored
    assert len(gemini.requests) - len(rows) <= kills.cut_off


async def test_slack_commands_mentions_and_clicks_survive_a_kill_just_after_the_ack(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    fake_gemini.latency = FAST
    async with slack_processes(tmp_path, fake_gemini) as run:
        kills = Kills(run.procs, fake_gemini)
        await run.procs.start()
        await run.command("the first lighthouse")
        [first] = await settled(run.db, 1, timeout=WAIT)
        target = json.loads(first["target"])
        for n, delay in enumerate(KILL_AFTER):
            # the last round's jobs end first: one cut off by kill after kill (a slow machine)
            # would be given up after three, as a crash loop is
            await settled(run.db, 1 + 4 * n, timeout=WAIT)
            click = run.slack.block_action_body(
                "imagebot.reroll",
                user_id="U1",
                channel_id=target["channel"],
                message_ts=target["ts"],
                value=first["id"],
            )
            mention = run.slack.app_mention_event(f"a lighthouse by mention {n}", user="U1")
            # the Edit form of the first image, opened by its button, submitted in the round
            opening = run.slack.block_action_body(
                "imagebot.edit",
                user_id="U1",
                channel_id=target["channel"],
                message_ts=target["ts"],
                value=first["id"],
            )
            await _post(run.procs, run.slack, opening, "the Edit click")
            opened = await run.slack.wait_for_call("views.open", count=n + 1)
            typed = {"instruction": {"text": {"type": "plain_text_input", "value": f"snow {n}"}}}
            form = run.slack.view_submission_body(
                opened[n].response["view"]["id"], user_id="U1", values=typed
            )
            await asyncio.gather(
                run.command(f"a lighthouse by command {n}"),
                slack_event(run.procs, run.slack, mention),
                _post(run.procs, run.slack, click, "the Re-roll click"),
                _post(run.procs, run.slack, form, "the Edit form"),
            )
            await asyncio.sleep(delay)
            await kills.kill_and_restart()
        rows = await settled(run.db, 1 + 4 * len(KILL_AFTER), timeout=30)

    assert_every_request_answered_once(rows, fake_gemini, kills)
    assert held_requests(run.db) == 0
    kinds = [str(r["kind"]) for r in rows]
    assert kinds.count("reroll") == kinds.count("edit") == len(KILL_AFTER)


async def test_discord_slash_commands_mentions_and_clicks_survive_a_kill_just_after_the_ack(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    fake_gemini.latency = FAST
    async with FakeDiscord() as fake:
        settings = {**SETTINGS, **discord_settings(fake)}
        async with stopping(AdapterProcesses("discord", tmp_path, fake_gemini, settings)) as procs:
            kills = Kills(procs, fake_gemini)
            await procs.start()
            first = fake.interaction_slash_command(
                "imagine",
                [{"name": "prompt", "type": 3, "value": "the first glacier"}],
                user_id=USER,
            )
            await fake.dispatch("INTERACTION_CREATE", first)
            [done] = await settled(procs.db, 1, timeout=WAIT)
            [shown] = [
                m
                for m in fake.channel_messages()
                if (m.interaction_metadata or {}).get("id") == first["id"]
            ]
            opening = fake.interaction_component(f"imagebot:edit:{done['id']}", shown, user_id=USER)
            await fake.dispatch("INTERACTION_CREATE", opening)
            opened = await fake.wait_for_call(
                "POST", rf"/interactions/{opening['id']}/[^/]+/callback"
            )
            form_id = opened.json["data"]["custom_id"]
            for n, delay in enumerate(KILL_AFTER):
                # as on Slack: the last round's jobs end before the next kill
                await settled(procs.db, 1 + 5 * n, timeout=WAIT)
                await fake.wait_until_ready()
                slash = fake.interaction_slash_command(
                    "imagine",
                    [{"name": "prompt", "type": 3, "value": f"a glacier by slash {n}"}],
                    user_id=USER,
                )
                click = fake.interaction_component(
                    f"imagebot:reroll:{done['id']}", shown, user_id=USER
                )
                upscale = fake.interaction_component(
                    f"imagebot:upscale:2K:{done['id']}", shown, user_id=USER
                )
                edit = fake.interaction_modal_submit(
                    form_id, {"change": f"add a balloon {n}"}, user_id=USER, message=shown
                )
                said = fake.message_create(
                    f"<@{fake.bot_user_id}> a glacier by mention {n}",
                    author_id=USER,
                    mentions=[fake.bot_user_id],
                )
                answered = len([c for c in callbacks(fake) if c.status in (200, 204)])
                await fake.dispatch("MESSAGE_CREATE", said)
                for interaction in (slash, click, upscale, edit):
                    await fake.dispatch("INTERACTION_CREATE", interaction)
                # every deferral answered: Discord will send none of them again
                await fake.wait_until(
                    lambda a=answered: (
                        len([c for c in callbacks(fake) if c.status in (200, 204)]) >= a + 4
                    ),
                    WAIT,
                    lambda: "the deferrals",
                )
                await asyncio.sleep(delay)
                await kills.kill_and_restart()
            rows = await settled(procs.db, 1 + 5 * len(KILL_AFTER), timeout=40)

    assert fake.errors == []
    assert_every_request_answered_once(rows, fake_gemini, kills)
    assert held_requests(procs.db) == 0
    kinds = [str(r["kind"]) for r in rows]
    assert kinds.count("reroll") == kinds.count("upscale") == kinds.count("edit") == len(KILL_AFTER)
