"""Platform connections cut during a burst: nothing lost, nothing done twice.

Slack's Socket Mode is told to disconnect (and redelivers what was not acknowledged, as Slack
does); Discord's gateway is told to reconnect or is cut off, and replays what the bot missed
on RESUME, and some dispatches the bot had already handled are sent again.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from tests.bots.test_discord_harness import (
    answers,
    assert_every_interaction_answered_in_time,
    callbacks,
    discord_server,
    finished,
    replies_to,
    running_bot,
)
from tests.bots.test_slack_app import running
from tests.fakes.gemini import FakeGemini
from tests.fakes.slack import FakeSlack
from tests.faults.checks import api_calls_by_prompt, assert_no_open_jobs, settled

BURST = 16
CUTS = 3
REDELIVERY_ROUNDS = 3
ACK_WAIT = 2.0  # how long to wait for an ack before sending an envelope again, as Slack does
ENV = {"IMAGEBOT_MAX_JOBS_PER_USER": 100, "IMAGEBOT_PROGRESS_INTERVAL_SECONDS": 0.5}
DONE = ":white_check_mark:"


@dataclass
class Sent:
    """One request as Slack delivers it: the same payload in one or more envelopes."""

    kind: str  # slash_commands | events_api
    payload: dict[str, Any]
    envelopes: list[str] = field(default_factory=list)

    async def send(self, fake: FakeSlack) -> None:
        again = len(self.envelopes)
        if self.kind == "events_api":
            envelope = await fake.send_envelope(
                self.kind,
                self.payload,
                retry_attempt=again,
                retry_reason="timeout" if again else "",
            )
        else:
            envelope = await fake.send_envelope(
                self.kind, self.payload, accepts_response_payload=True
            )
        self.envelopes.append(envelope)

    def acked(self, fake: FakeSlack) -> bool:
        return any(a.get("envelope_id") in self.envelopes for a in fake.socket_acks)


async def test_socket_mode_disconnects_during_a_burst_lose_no_request_and_make_none_twice(
    tmp_path: Path, fake_gemini: FakeGemini, rng: random.Random
) -> None:
    fake_gemini.latency = 0.1
    # grace 0: the socket is closed at once, without waiting for the client to leave
    cuts = {n: rng.choice([0.0, 2.0]) for n in rng.sample(range(1, BURST), CUTS)}
    print("disconnects (grace seconds) before requests", dict(sorted(cuts.items())))
    async with running(tmp_path, fake_gemini, socket_mode=True, **ENV) as slack:
        fake = slack.fake
        sent: list[Sent] = []
        for n in range(BURST):
            if n in cuts:
                await fake.disconnect_socket(grace=cuts[n])
            prompt = f"socket {n:02d} a kite over the sea"
            if rng.random() < 0.5:
                payload = fake.slash_command_payload(prompt, user_id=f"U{n % 3}", channel_id="C1")
                request = Sent("slash_commands", payload)
            else:
                event = fake.app_mention_event(prompt, user=f"U{n % 3}", channel="C2")
                request = Sent("events_api", fake.event_payload(event))
            await request.send(fake)
            sent.append(request)

        # what was never acknowledged comes again, as Slack sends it again
        for _ in range(REDELIVERY_ROUNDS):
            try:
                await fake.wait_until(
                    lambda: all(s.acked(fake) for s in sent), timeout=ACK_WAIT, what="acks"
                )
                break
            except TimeoutError:
                for request in sent:
                    if not request.acked(fake):
                        await request.send(fake)
        assert all(s.acked(fake) for s in sent)
        # and an acknowledged event now and then, when its ack came late
        events = [s for s in sent if s.kind == "events_api"]
        for request in rng.sample(events, min(2, len(events))):
            await request.send(fake)

        rows = await settled(slack.settings.sqlite_path, BURST)
        await fake.wait_until(lambda: len(fake.uploads) >= BURST, what="every upload")

        assert fake.socket_connections >= 1 + CUTS
        assert len(rows) == BURST
        assert_no_open_jobs(rows)
        assert set(api_calls_by_prompt(fake_gemini).values()) == {1}
        assert len(fake_gemini.requests) == BURST
        status_posts = [c for c in fake.calls_to("chat.postMessage") if c.response.get("ok")]
        assert len(status_posts) == BURST
        assert len(fake.uploads) == BURST
        for row in rows:
            target = json.loads(row["target"])
            thread = target.get("thread_ts") or target["ts"]
            shown = [
                u for u in fake.uploads if (u.channel, u.thread_ts) == (target["channel"], thread)
            ]
            assert len(shown) == 1, row["prompt"]
            assert DONE in fake.messages[(target["channel"], target["ts"])]["text"]


async def test_gateway_cuts_during_a_burst_lose_no_request_and_replayed_dispatches_make_none_twice(
    tmp_path: Path, fake_gemini: FakeGemini, rng: random.Random
) -> None:
    fake_gemini.latency = 0.1
    cuts = {n: rng.choice(["reconnect", "drop"]) for n in rng.sample(range(1, BURST), CUTS)}
    print("gateway cuts before requests", dict(sorted(cuts.items())))
    async with discord_server() as fake, running_bot(tmp_path, fake_gemini, fake, **ENV) as bot:
        sent: list[tuple[str, dict[str, Any]]] = []
        for n in range(BURST):
            if n in cuts:
                await fake.wait_until_ready()
                if cuts[n] == "reconnect":
                    await fake.send_reconnect()
                else:
                    await fake.drop_connection()
            # dispatched at once, so the first lands while the gateway is down
            prompt = f"gateway {n:02d} a storm at sea"
            if rng.random() < 0.5:
                sent.append(("INTERACTION_CREATE", await bot.slash({"prompt": prompt})))
            else:
                sent.append(("MESSAGE_CREATE", await bot.say(prompt)))
        await fake.wait_for_resume(count=CUTS)
        # a resume from an older sequence number sends dispatches the bot has handled already
        for event_type, payload in rng.sample(sent, 4):
            await fake.dispatch(event_type, payload)

        rows = await settled(bot.settings.sqlite_path, BURST)

        assert (fake.identifies, fake.resumes) == (1, CUTS)
        assert fake.replayed, "no dispatch was missed and replayed"
        assert len(rows) == BURST
        assert_no_open_jobs(rows)
        assert set(api_calls_by_prompt(fake_gemini).values()) == {1}
        assert len(fake_gemini.requests) == BURST
        slashes = [p for t, p in sent if t == "INTERACTION_CREATE"]
        assert len(callbacks(fake)) == len(slashes)  # each interaction answered once
        assert_every_interaction_answered_in_time(fake)
        for event_type, payload in sent:
            shows = answers if event_type == "INTERACTION_CREATE" else replies_to
            shown = [m for m in fake.channel_messages() if shows(m, payload)]
            assert len(shown) == 1 and finished(shown[0]) and len(shown[0].attachments) == 1
