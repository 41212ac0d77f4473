"""Discord shards: DISCORD_SHARD_COUNT and DISCORD_SHARD_IDS, one process running every shard,
and shards spread over processes on one database, each guild answered by its shard's process."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path
from typing import Any

import discord
import pytest

import bots.discord.app as discord_app
from core.config import ConfigError, load_settings
from core.runtime import open_service
from tests.bots.test_discord_harness import (
    USER,
    answers,
    assert_every_interaction_answered_in_time,
    bot_settings,
    custom_ids,
    discord_server,
    finished,
    replies_to,
    running_bot,
)
from tests.fakes.discord import FakeDiscord, StoredMessage
from tests.fakes.gemini import FakeGemini
from tests.faults.processes import AdapterProcesses, discord_settings

JSON = dict[str, Any]


# settings ------------------------------------------------------------------------------------


def _settings(**values: str) -> Any:
    return load_settings(_env_file=None, DISCORD_BOT_TOKEN="token", **values)


def test_without_a_shard_count_one_process_runs_everything_as_before() -> None:
    assert _settings().discord_shards is None
    assert _settings(DISCORD_SHARD_COUNT="3").discord_shards == [0, 1, 2]
    assert _settings(DISCORD_SHARD_COUNT="4", DISCORD_SHARD_IDS=" 3, 1").discord_shards == [3, 1]


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"DISCORD_SHARD_IDS": "0"},
            "DISCORD_SHARD_IDS needs DISCORD_SHARD_COUNT, the number of shards across all "
            "processes: set it as well",
        ),
        (
            {"DISCORD_SHARD_COUNT": "2", "DISCORD_SHARD_IDS": "0,2"},
            "DISCORD_SHARD_IDS has shard 2, but DISCORD_SHARD_COUNT=2 numbers the shards 0 to 1: "
            "list only shards below the count",
        ),
        (
            {"DISCORD_SHARD_COUNT": "2", "DISCORD_SHARD_IDS": "1,0,1"},
            "DISCORD_SHARD_IDS lists shard 1 more than once: list each shard once",
        ),
        (
            {"DISCORD_SHARD_COUNT": "2", "DISCORD_SHARD_IDS": "0,,1"},
            "DISCORD_SHARD_IDS must be comma-separated shard numbers, such as 0,1 (got '0,,1')",
        ),
        (
            {"DISCORD_SHARD_COUNT": "2", "DISCORD_SHARD_IDS": "-1"},
            "DISCORD_SHARD_IDS must be comma-separated shard numbers, such as 0,1 (got '-1')",
        ),
        ({"DISCORD_SHARD_COUNT": "0"}, "DISCORD_SHARD_COUNT Input should be greater than or"),
    ],
)
def test_shard_settings_that_cannot_work_stop_the_start_with_one_sentence(
    values: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError) as refused:
        _settings(**values)
    assert str(refused.value).startswith(message)
    assert "\n" not in str(refused.value)


# one process, every shard ----------------------------------------------------------------------


async def test_one_process_running_both_shards_answers_in_both_guilds_and_in_dms(
    tmp_path: Path, fake_gemini: FakeGemini, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="bots.discord.app")
    # max_concurrency 2: both shards may IDENTIFY at once, so start-up waits for neither
    async with discord_server(max_concurrency=2) as fake:
        second = fake.add_guild("Second", shard=(1, 2))
        async with running_bot(tmp_path, fake_gemini, fake, DISCORD_SHARD_COUNT="2") as bot:
            client = bot.app.client
            assert isinstance(client, discord.AutoShardedClient)
            assert fake.live_shards() == [(0, 2), (1, 2)]
            assert sorted(client.shards) == [0, 1]

            sent: list[tuple[JSON, int]] = []  # what users did, and the shard it belongs to
            results: dict[int, list[StoredMessage]] = {}
            for shard, channel_id in ((0, fake.channel_id), (1, second.channel_id)):
                slash = await bot.slash(
                    {"prompt": f"a lighthouse on shard {shard}"}, channel_id=channel_id
                )
                said = await bot.say("a red kite", channel_id=channel_id)
                sent += [(slash, shard), (said, shard)]
                results[channel_id] = [await bot.result_of(slash), await bot.reply_to(said)]

            # buttons and the edit form on the second shard
            first = results[second.channel_id][0]
            reroll = await bot.click(first, _button(first, "reroll"))
            edit = await bot.click(first, _button(first, "edit"))
            opened = await bot.callback(edit)
            submit = fake.interaction_modal_submit(
                opened.json["data"]["custom_id"],
                {"change": "at night"},
                user_id=USER,
                message=first,
            )
            await fake.dispatch("INTERACTION_CREATE", submit)
            sent += [(reroll, 1), (edit, 1), (submit, 1)]
            rerolled, edited = await bot.result_of(reroll), await bot.result_of(submit)

            dm = fake.add_dm_channel(USER)
            said_in_dm = await bot.say("a paper crane", mention=False, channel_id=dm)
            sent.append((said_in_dm, 0))
            in_dm = await bot.reply_to(said_in_dm)

    for channel_id, shown in results.items():
        assert all(m.channel_id == channel_id and m.attachments for m in shown)
    assert rerolled.channel_id == edited.channel_id == second.channel_id
    assert rerolled.attachments and edited.attachments and edited.embeds[0]["title"] == "✏️ Edit"
    assert in_dm.channel_id == dm and in_dm.attachments
    assert len(fake_gemini.requests) == 7

    # each went only to its guild's shard (a DM to shard 0) and was answered once
    for payload, shard in sent:
        assert [e.shard for e in fake.events if e.data.get("id") == payload["id"]] == [shard]
        if "token" in payload:
            answered = fake.calls_to("POST", rf"/interactions/{payload['id']}/[^/]+/callback")
            assert [c.status for c in answered] == [200]
        else:
            assert len(_bot_replies(fake, payload)) == 1
    assert_every_interaction_answered_in_time(fake)
    assert "Discord: this process runs shards 0, 1 of 2" in caplog.text


def _bot_replies(fake: FakeDiscord, payload: JSON) -> list[StoredMessage]:
    return [
        m
        for msgs in fake.messages.values()
        for m in msgs
        if m.author_id == fake.bot_user_id and replies_to(m, payload)
    ]


def _button(message: StoredMessage, action: str) -> str:
    return next(i for i in custom_ids(message) if i.startswith(f"imagebot:{action}:"))


async def test_a_shard_that_resumes_or_identifies_again_keeps_answering_its_guild(
    tmp_path: Path, fake_gemini: FakeGemini, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(discord_app, "IDENTIFY_INTERVAL_SECONDS", 0.05)
    async with discord_server(max_concurrency=2) as fake:
        second = fake.add_guild("Second", shard=(1, 2))
        async with running_bot(tmp_path, fake_gemini, fake, DISCORD_SHARD_COUNT="2") as bot:
            await fake.send_reconnect(shard=1)
            # sent while shard 1 is away: replayed to it after its RESUME
            gap = await bot.slash({"prompt": "a gap"}, channel_id=second.channel_id)
            await fake.wait_for_resume()
            await fake.invalidate_session(shard=0)
            await fake.wait_until_ready()
            said = await bot.say("a new session", channel_id=fake.channel_id)
            answered = [await bot.result_of(gap), await bot.reply_to(said)]

    assert all(m.attachments for m in answered)
    assert [event.data.get("id") for event in fake.replayed] == [gap["id"]]
    assert (fake.identifies, fake.resumes) == (3, 1)
    assert [p["shard"] for p in fake.identify_payloads] == [[0, 2], [1, 2], [0, 2]]
    assert_every_interaction_answered_in_time(fake)


async def test_shards_in_one_rate_limit_bucket_identify_an_interval_apart(
    tmp_path: Path, fake_gemini: FakeGemini, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Discord: one IDENTIFY per bucket (shard id % max_concurrency) every 5 s; shortened here
    monkeypatch.setattr(discord_app, "IDENTIFY_INTERVAL_SECONDS", 0.4)
    gaps = {}
    for concurrency in (1, 2):
        async with (
            discord_server(max_concurrency=concurrency) as fake,
            running_bot(tmp_path / str(concurrency), fake_gemini, fake, DISCORD_SHARD_COUNT="2"),
        ):
            first, second = fake.identified_at
            gaps[concurrency] = second - first
    # the first IDENTIFY may take longer to arrive than the second: a little leeway
    assert gaps[1] > 0.3 > gaps[2]


@pytest.mark.parametrize("shards", [{}, {"DISCORD_SHARD_COUNT": "1"}])
async def test_a_bot_in_too_many_servers_for_its_shards_is_told_to_set_a_shard_count(
    tmp_path: Path, fake_gemini: FakeGemini, shards: dict[str, str]
) -> None:
    async with discord_server() as fake:
        fake.add_guild()
        fake.max_guilds_per_shard = 1
        settings = bot_settings(tmp_path, fake_gemini, fake, **shards)
        async with open_service(settings) as service:
            app = discord_app.create_app(settings, service)
            with pytest.raises(ConfigError) as refused:
                await asyncio.wait_for(app.serve(), 10)
    assert str(refused.value) == (
        "Discord requires more shards for a bot in this many servers: set "
        "DISCORD_SHARD_COUNT to at least one shard per 2,500 servers"
    )


# shards spread over processes -----------------------------------------------------------------


class ShardProcess(AdapterProcesses):
    """`python -m bots.discord` in its own working directory, on a database file shared with
    the other shards' processes (one level up)."""

    @property
    def db(self) -> Path:
        return self.workdir.parent / "imagebot.sqlite3"


async def test_two_processes_each_answer_exactly_the_guilds_of_their_shard(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    async with discord_server(max_concurrency=2) as fake:
        second = fake.add_guild("Second", shard=(1, 2))
        procs = []
        for shard in (0, 1):
            workdir = tmp_path / f"shard-{shard}"
            workdir.mkdir()
            settings = {
                **discord_settings(fake),
                "DISCORD_SHARD_COUNT": "2",
                "DISCORD_SHARD_IDS": str(shard),
            }
            procs.append(ShardProcess("discord", workdir, fake_gemini, settings))
        try:
            await asyncio.gather(*(p.start() for p in procs))
            await fake.wait_until_ready()
            assert fake.live_shards() == [(0, 2), (1, 2)]

            asked: dict[int, list[tuple[JSON, bool]]] = {0: [], 1: []}  # by shard
            for shard, channel_id in ((0, fake.channel_id), (1, second.channel_id)):
                for text in ("a lighthouse", "a windmill"):
                    asked[shard].append((await _slash(fake, text, channel_id), True))
                asked[shard].append((await _mention(fake, "a red kite", channel_id), False))
            dm = fake.add_dm_channel(USER)
            asked[0].append((await _mention(fake, "a paper crane", dm, mention=False), False))

            shown: dict[int, list[StoredMessage]] = {0: [], 1: []}
            for shard, requests in asked.items():
                for payload, is_interaction in requests:
                    shown[shard].append(await _answer(fake, payload, is_interaction))
        finally:
            await asyncio.gather(*(p.stop() for p in procs))

    logs = [p.log().read_text(errors="replace") for p in procs]
    for shard, log in enumerate(logs):
        assert f"Discord: this process runs shard {shard} of 2" in log, log
    for shard, requests in asked.items():
        for (payload, is_interaction), message in zip(requests, shown[shard], strict=True):
            # sent only on the connection of the guild's shard (a DM: shard 0)
            assert [e.shard for e in fake.events if e.data.get("id") == payload["id"]] == [shard]
            # answered exactly once: one interaction response, or one reply to the message
            if is_interaction:
                answered = fake.calls_to("POST", rf"/interactions/{payload['id']}/[^/]+/callback")
                assert [c.status for c in answered] == [200]
            else:
                assert _bot_replies(fake, payload) == [message]
            # ... by the process that runs the guild's shard: it took the job, the other
            # process never heard of it (on SQLite each process runs the jobs it took; on
            # PostgreSQL's shared queue either may run it, tests/faults/test_scale_out.py)
            job = custom_ids(message)[0].rsplit(":", 1)[1]
            assert f"job={job}" in logs[shard], f"job {job} not in shard {shard}'s log"
            assert job not in logs[1 - shard], f"job {job} in shard {1 - shard}'s log"
    assert len(fake_gemini.requests) == 7
    assert_every_interaction_answered_in_time(fake)


async def _slash(fake: FakeDiscord, prompt: str, channel_id: int) -> JSON:
    payload = fake.interaction_slash_command(
        "imagine",
        [{"name": "prompt", "type": 3, "value": prompt}],
        user_id=USER,
        channel_id=channel_id,
    )
    await fake.dispatch("INTERACTION_CREATE", payload)
    return payload


async def _mention(fake: FakeDiscord, text: str, channel_id: int, *, mention: bool = True) -> JSON:
    payload = fake.message_create(
        f"<@{fake.bot_user_id}> {text}" if mention else text,
        author_id=USER,
        channel_id=channel_id,
        mentions=[fake.bot_user_id] if mention else [],
    )
    await fake.dispatch("MESSAGE_CREATE", payload)
    return payload


async def _answer(fake: FakeDiscord, payload: JSON, is_interaction: bool) -> StoredMessage:
    """The bot's finished answer to an interaction or a message."""
    if is_interaction:
        return await fake.wait_for_message(lambda m: answers(m, payload) and finished(m))
    return await fake.wait_for_message(lambda m: replies_to(m, payload) and finished(m))
