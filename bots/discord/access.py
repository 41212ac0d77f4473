"""Who may use the bot where: the allow and deny lists from settings, as pure decisions."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

from core.config import ConfigError, Settings

DENIED = "You are not allowed to use imagebot here."
DMS_OFF = "imagebot does not answer direct messages here: use it in a server channel."


@dataclass(frozen=True)
class AccessLists:
    """Discord ids from DISCORD_ALLOWED_* and DISCORD_DENIED_*; an empty allow list allows all."""

    allowed_guilds: frozenset[int] = frozenset()
    allowed_channels: frozenset[int] = frozenset()
    allowed_roles: frozenset[int] = frozenset()
    allowed_users: frozenset[int] = frozenset()
    denied_users: frozenset[int] = frozenset()
    denied_roles: frozenset[int] = frozenset()

    @classmethod
    def from_settings(cls, settings: Settings) -> AccessLists:
        """Raises ConfigError naming the variable when an entry is not a numeric id."""
        return cls(
            allowed_guilds=_ids(
                settings, "DISCORD_ALLOWED_GUILDS", settings.discord_allowed_guilds
            ),
            allowed_channels=_ids(
                settings, "DISCORD_ALLOWED_CHANNELS", settings.discord_allowed_channels
            ),
            allowed_roles=_ids(settings, "DISCORD_ALLOWED_ROLES", settings.discord_allowed_roles),
            allowed_users=_ids(settings, "DISCORD_ALLOWED_USERS", settings.discord_allowed_users),
            denied_users=_ids(settings, "DISCORD_DENIED_USERS", settings.discord_denied_users),
            denied_roles=_ids(settings, "DISCORD_DENIED_ROLES", settings.discord_denied_roles),
        )


@dataclass(frozen=True)
class Place:
    """Who is asking, and where."""

    user_id: int
    guild_id: int | None  # None in a direct message
    channel_id: int
    parent_channel_id: int | None = None  # for a thread: the channel it belongs to
    role_ids: frozenset[int] = frozenset()


def is_allowed(lists: AccessLists, place: Place) -> bool:
    """Deny lists win; then every allow list that is set must let the request through.

    In a direct message there is no guild, channel or role to check, so when any guild,
    channel or role allow list is set, only users named in DISCORD_ALLOWED_USERS get in:
    otherwise a DM would be a way around the lists.
    """
    if place.user_id in lists.denied_users or place.role_ids & lists.denied_roles:
        return False
    if place.guild_id is None:
        if lists.allowed_users:
            return place.user_id in lists.allowed_users
        return not (lists.allowed_guilds or lists.allowed_channels or lists.allowed_roles)
    if lists.allowed_guilds and place.guild_id not in lists.allowed_guilds:
        return False
    if lists.allowed_channels and not (
        place.channel_id in lists.allowed_channels
        or place.parent_channel_id in lists.allowed_channels
    ):
        return False
    if lists.allowed_users or lists.allowed_roles:
        return place.user_id in lists.allowed_users or bool(place.role_ids & lists.allowed_roles)
    return True


def _ids(settings: Settings, name: str, value: str) -> frozenset[int]:
    return frozenset(_parse_ids(name, settings.split(value)))


def _parse_ids(name: str, items: Iterable[str]) -> Iterable[int]:
    for item in items:
        if not item.isdigit():
            raise ConfigError(f"{name} must list numeric Discord ids, and {item!r} is not one")
        yield int(item)
