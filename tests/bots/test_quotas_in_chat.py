"""Quotas as people meet them in each chat: the refusal, and what usage shows."""

from __future__ import annotations

from pathlib import Path

from tests.bots.test_discord_harness import discord_server, running_bot
from tests.bots.test_discord_imagine import _private_text
from tests.bots.test_slack_app import running
from tests.bots.test_slack_commands import _ephemeral
from tests.fakes.gemini import FakeGemini


async def test_slack_refuses_past_the_daily_limit_and_usage_shows_it(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    async with running(tmp_path, fake_gemini, IMAGEBOT_DAILY_IMAGES_PER_USER=1) as slack:
        await slack.command("a heron", user="U1")
        await slack.final(await slack.status_posted())
        jobs_before = await slack.job_count()

        await slack.command("a crane", user="U1")
        refusal = (await _ephemeral(slack))["text"]
        assert "You have made 1 image today, your daily limit; it resets at 00:00 UTC" in refusal
        assert await slack.job_count() == jobs_before

        await slack.command("usage", user="U1")
        usage = (await _ephemeral(slack, 2))["text"]
        assert "You: 1 of 1 image today" in usage
    assert len(fake_gemini.requests) == 1


async def test_discord_refuses_past_the_server_budget_and_usage_shows_it(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    async with (
        discord_server() as fake,
        running_bot(tmp_path, fake_gemini, fake, IMAGEBOT_MONTHLY_BUDGET_USD=0.1) as bot,
    ):
        first = await bot.slash({"prompt": "a red kite"})
        await bot.result_of(first)
        second = await bot.slash({"prompt": "a blue kite"})
        await fake.wait_until(lambda: _private_text(fake, second) is not None)
        refusal = _private_text(fake, second) or ""
        assert "This server has used $0.07 of its $0.10 monthly image budget" in refusal
        assert "it resets on" in refusal
        usage = await bot.slash({}, name="imagine-usage")
        await fake.wait_until(lambda: _private_text(fake, usage) is not None)
        text = _private_text(fake, usage) or ""
        assert "(about $0.07 of the $0.10 monthly budget)" in text
    assert len(fake_gemini.requests) == 1
