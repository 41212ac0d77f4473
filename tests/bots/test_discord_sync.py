"""`imagebot discord-sync`: the commands are registered over REST, globally or in one guild."""

from __future__ import annotations

from pathlib import Path

import pytest

from bots.discord import sync_commands
from core.config import ConfigError
from tests.bots.test_discord_harness import bot_settings, discord_server
from tests.fakes.gemini import FakeGemini

NAMES = ["imagine", "describe", "imagine-settings", "imagine-usage", "imagine-history", "blend"]


async def test_commands_are_synced_to_a_guild_with_typed_options_and_catalog_choices(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    async with discord_server() as fake:
        names = await sync_commands(bot_settings(tmp_path, fake_gemini, fake), fake.guild_id)

    assert names == NAMES
    assert [c["name"] for c in fake.commands[fake.guild_id]] == NAMES
    assert fake.connections == 0  # REST only
    imagine = fake.commands[fake.guild_id][0]
    options = {o["name"]: o for o in imagine["options"]}
    assert list(options) == [
        "prompt",
        "aspect_ratio",
        "size",
        "model",
        "temperature",
        "image",
        "image2",
        "image3",
        "text",
        "n",
    ]
    assert options["prompt"]["required"] is True
    assert (options["temperature"]["type"], options["temperature"]["min_value"]) == (10, 0.0)
    assert options["temperature"]["max_value"] == 1.0
    assert (options["n"]["type"], options["n"]["min_value"], options["n"]["max_value"]) == (4, 1, 4)
    assert [options[n]["type"] for n in ("image", "image2", "image3", "text")] == [11, 11, 11, 5]
    models = {c["value"]: c["name"] for c in options["model"]["choices"]}
    assert models["pro"] == "Gemini 3 Pro Image (pro)"
    assert "8:1" in [c["value"] for c in options["aspect_ratio"]["choices"]]
    assert [c["value"] for c in options["size"]["choices"]] == ["0.5K", "1K", "2K", "4K"]


async def test_commands_sync_globally_and_leave_dms_out_when_they_are_off(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    async with discord_server() as fake:
        settings = bot_settings(tmp_path, fake_gemini, fake, DISCORD_DMS="false")
        assert await sync_commands(settings, None) == NAMES

    assert all(command["contexts"] == [0] for command in fake.commands[None])


async def test_a_refused_token_is_one_clear_line(tmp_path: Path, fake_gemini: FakeGemini) -> None:
    async with discord_server() as fake:
        settings = bot_settings(tmp_path, fake_gemini, fake, DISCORD_BOT_TOKEN="wrong")
        with pytest.raises(ConfigError, match="DISCORD_BOT_TOKEN was refused by Discord"):
            await sync_commands(settings, None)


async def test_commands_can_be_installed_by_users_when_the_application_allows_it(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    async with discord_server() as fake:
        settings = bot_settings(tmp_path, fake_gemini, fake)
        await sync_commands(settings, None)
        for_users = fake.commands[None]
        fake.user_install = False  # User Install switched off in the developer portal
        await sync_commands(settings, None)
        for_servers = fake.commands[None]

    assert all(c["integration_types"] == [0, 1] for c in for_users)
    assert all(c["contexts"] == [0, 1, 2] for c in for_users)
    assert all(c["integration_types"] == [0] for c in for_servers)
    assert all(c["contexts"] == [0, 1] for c in for_servers)
