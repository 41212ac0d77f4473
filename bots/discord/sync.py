"""Registering the slash commands with Discord: run once after setup or a change, not per start."""

from __future__ import annotations

import logging

import discord

from bots.discord.app import ImageBotClient, point_at
from bots.discord.commands import add_commands
from core.config import ConfigError, Settings
from core.errors import UserFacingError
from core.runtime import catalog_from

log = logging.getLogger(__name__)


async def sync_commands(settings: Settings, guild_id: int | None) -> list[str]:
    """Replace the bot's commands with ours, in one guild or everywhere; returns their names.

    A guild's commands show up at once, which suits trying the bot out; global ones can take
    a while to reach every client. Uses REST only: no gateway connection.
    """
    settings.require("DISCORD_BOT_TOKEN")
    assert settings.discord_bot_token is not None
    point_at(settings)
    client = ImageBotClient(intents=discord.Intents.none())
    try:
        await client.login(settings.discord_bot_token.get_secret_value())
        # users can install the commands only when the application allows it (developer
        # portal → Installation → Installation Contexts → User Install)
        application = await client.application_info()
        user_installs = application.user_integration_config is not None
        add_commands(
            client.tree,
            catalog_from(settings),
            dms=settings.discord_dms,
            user_installs=user_installs,
        )
        if guild_id is None:
            synced = await client.tree.sync()
        else:
            guild = discord.Object(id=guild_id)
            client.tree.copy_global_to(guild=guild)
            synced = await client.tree.sync(guild=guild)
    except discord.LoginFailure:
        raise ConfigError("DISCORD_BOT_TOKEN was refused by Discord") from None
    except discord.Forbidden:
        raise ConfigError(
            f"the bot may not add commands to server {guild_id}: invite it with the "
            "applications.commands scope (see README, Discord)"
        ) from None
    except discord.HTTPException as exc:
        raise UserFacingError(
            f"Discord refused the commands ({exc.status}): {exc.text or 'no reason given'}"
        ) from None
    finally:
        await client.close()
    names = [command.name for command in synced]
    log.info(
        "registered %s %s(%s)",
        ", ".join(names),
        f"in guild {guild_id} " if guild_id else "",
        "for servers and users" if user_installs else "for servers only: User Install is off",
    )
    return names
