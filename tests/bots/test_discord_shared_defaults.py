"""Server and channel defaults on Discord: `/imagine-settings for:` set by members with
Manage Server, under each person's own."""

from __future__ import annotations

from pathlib import Path

from tests.bots.test_discord_harness import (
    OTHER,
    USER,
    assert_every_interaction_answered_in_time,
    discord_server,
    running_bot,
)
from tests.bots.test_discord_imagine import _private_text
from tests.fakes.gemini import FakeGemini


async def test_managers_set_server_and_channel_defaults_that_others_start_from(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    async with discord_server() as fake, running_bot(tmp_path, fake_gemini, fake) as bot:
        fake.managers.add(USER)
        other_channel = fake.add_text_channel("other")
        refused = await bot.slash(
            {"for": "server", "size": "2K"}, name="imagine-settings", user=OTHER
        )
        await fake.wait_until(lambda: _private_text(fake, refused) is not None)
        server = await bot.slash({"for": "server", "size": "2K"}, name="imagine-settings")
        await fake.wait_until(lambda: _private_text(fake, server) is not None)
        channel = await bot.slash(
            {"for": "channel", "aspect_ratio": "16:9"}, name="imagine-settings"
        )
        await fake.wait_until(lambda: _private_text(fake, channel) is not None)
        shown = await bot.slash({}, name="imagine-settings", user=OTHER)
        await fake.wait_until(lambda: _private_text(fake, shown) is not None)

        await bot.result_of(await bot.slash({"prompt": "a kite"}, user=OTHER))
        await bot.result_of(await bot.slash({"prompt": "a kite"}, channel_id=other_channel))

    assert (_private_text(fake, refused) or "").startswith(
        "⚠️ Only members with Manage Server can change the server's or a channel's defaults"
    )
    assert "Saved. This server's defaults now:" in (_private_text(fake, server) or "")
    assert "Size: **2K**" in (_private_text(fake, server) or "")
    mine = _private_text(fake, shown) or ""
    assert mine.startswith("Your defaults:")
    assert "Set for everyone in this server: 2K." in mine
    assert "Set for everyone in this channel: 16:9." in mine
    config = fake_gemini.requests[0].json["generationConfig"]["imageConfig"]
    assert config == {"aspectRatio": "16:9", "imageSize": "2K"}
    elsewhere = fake_gemini.requests[1].json["generationConfig"]["imageConfig"]
    assert elsewhere == {"imageSize": "2K"}
    assert_every_interaction_answered_in_time(fake)
