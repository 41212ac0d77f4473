"""The Discord adapter: `/imagine`, mentions, replies, threads and buttons over the service."""

from __future__ import annotations

from bots.discord.app import DiscordApp, create_app
from bots.discord.sync import sync_commands

__all__ = ["DiscordApp", "create_app", "sync_commands"]
