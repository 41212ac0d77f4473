"""Facts about an incoming Discord event: who and where it is from, its keys, seen-before."""

from __future__ import annotations

from collections import OrderedDict

import discord

from bots.discord.access import Place

PLATFORM = "discord"
RECENT_EVENTS = 4096


def tenant_of(guild_id: int | None, user_id: int) -> str:
    """Conversations, defaults and usage never cross a guild; each DM user is their own."""
    return str(guild_id) if guild_id is not None else f"dm:{user_id}"


def interaction_key(interaction_id: int) -> str:
    return f"discord:interaction:{interaction_id}"


def message_key(message_id: int) -> str:
    return f"discord:message:{message_id}"


def place_of(
    user: discord.abc.User, guild_id: int | None, channel: object | None, channel_id: int
) -> Place:
    """The access-list view of an author in a channel (a thread counts as its parent too)."""
    roles = frozenset(role.id for role in user.roles) if isinstance(user, discord.Member) else None
    parent = channel.parent_id if isinstance(channel, discord.Thread) else None
    return Place(
        user_id=user.id,
        guild_id=guild_id,
        channel_id=channel_id,
        parent_channel_id=parent,
        role_ids=roles or frozenset(),
    )


class RecentIds:
    """Event ids handled lately, so a dispatch delivered twice is handled once per process.

    Across processes the service's idempotency keys do the same job; this only spares a
    second acknowledgement, download and database round trip.
    """

    def __init__(self, size: int = RECENT_EVENTS) -> None:
        self._size = size
        self._seen: OrderedDict[str, None] = OrderedDict()

    def first_time(self, key: str) -> bool:
        if key in self._seen:
            return False
        self._seen[key] = None
        while len(self._seen) > self._size:
            self._seen.popitem(last=False)
        return True
