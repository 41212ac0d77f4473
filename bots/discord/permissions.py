"""The channel permissions the bot needs, and the invite link that asks for exactly those:
the one table README.md's invite section and `imagebot doctor` follow (a test holds the
README to it)."""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import urlencode

from core.config import Settings

INVITE_SCOPES = ("bot", "applications.commands")
AUTHORIZE_URL = "https://discord.com/oauth2/authorize"


@dataclass(frozen=True)
class Permission:
    """One permission bit; `setting` names the setting that needs it (None: always)."""

    name: str
    value: int
    why: str
    setting: str | None = None


PERMISSIONS: tuple[Permission, ...] = (
    Permission("View Channels", 1 << 10, "see the channels it answers in"),
    Permission("Send Messages", 1 << 11, "reply to mentions and replies"),
    Permission("Embed Links", 1 << 14, "the card under each image (prompt, options, requester)"),
    Permission("Attach Files", 1 << 15, "upload the image"),
    Permission("Read Message History", 1 << 16, "a reply needs to see the message it answers"),
    Permission(
        "Create Public Threads",
        1 << 35,
        "a mention opens a thread",
        setting="DISCORD_THREAD_MESSAGES",
    ),
    Permission("Send Messages in Threads", 1 << 38, "answer inside threads"),
)


def needed(*, thread_messages: bool) -> int:
    """The permissions integer for the invite link."""
    total = 0
    for permission in PERMISSIONS:
        if permission.setting is None or thread_messages:
            total |= permission.value
    return total


def invite_url(application_id: int | str, settings: Settings) -> str:
    query = {
        "client_id": str(application_id),
        "scope": " ".join(INVITE_SCOPES),
        "permissions": str(needed(thread_messages=settings.discord_thread_messages)),
    }
    return f"{AUTHORIZE_URL}?{urlencode(query)}"
