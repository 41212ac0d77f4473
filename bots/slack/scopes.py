"""The bot token scopes the Slack adapter needs, and why: the one table that manifest.yml,
README.md and `imagebot doctor` follow (tests hold the first two to it).

The adapter calls auth.test, chat.postMessage, chat.postEphemeral, chat.update,
chat.delete, files.getUploadURLExternal, files.completeUploadExternal (files_upload_v2),
files.delete, files.info, users.info, views.open (which needs a trigger_id, not a scope),
views.publish and chat.getPermalink (no scope either), downloads attached files and answers
response_url. It calls neither reactions.* nor conversations.*, so reactions:write and the
*:read conversation scopes are not asked for.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from core.config import Settings


@dataclass(frozen=True)
class Scope:
    """A bot token scope; `setting` names the setting that needs it (None: always needed);
    `event` is the event subscription that comes with it, if any."""

    name: str
    why: str
    setting: str | None = None
    event: str | None = None


# events that come with no scope: the Home tab is drawn when someone opens it
EVENTS_WITHOUT_SCOPE = ("app_home_opened",)

SCOPES: tuple[Scope, ...] = (
    Scope("commands", "the /imagine slash command"),
    Scope(
        "chat:write",
        "post the request card, progress and failures, and update or delete them "
        "(chat.postMessage, chat.postEphemeral, chat.update, chat.delete)",
    ),
    Scope(
        "files:write",
        "upload each image into the thread (files.getUploadURLExternal, "
        "files.completeUploadExternal) and delete it (files.delete)",
    ),
    Scope(
        "files:read",
        "download the images people attach (url_private) and complete Slack Connect file "
        "stubs (files.info)",
    ),
    Scope("app_mentions:read", "mentions of the bot, in channels and threads", event="app_mention"),
    Scope(
        "users:read",
        "tell workspace admins and owners, who may set the defaults of the workspace and of "
        "a channel (users.info)",
    ),
    Scope("im:history", "direct messages to the bot", event="message.im"),
    Scope(
        "channels:history",
        "replies without a mention in the bot's threads in public channels",
        setting="SLACK_THREAD_REPLIES",
        event="message.channels",
    ),
    Scope(
        "groups:history",
        "replies without a mention in the bot's threads in private channels",
        setting="SLACK_THREAD_REPLIES",
        event="message.groups",
    ),
    Scope(
        "mpim:history",
        "replies without a mention in the bot's threads in group DMs",
        setting="SLACK_THREAD_REPLIES",
        event="message.mpim",
    ),
)


def _on(settings: Settings, name: str) -> bool:
    field = next(f for f, info in Settings.model_fields.items() if info.validation_alias == name)
    return bool(getattr(settings, field))


def needed(settings: Settings) -> list[Scope]:
    """The scopes the enabled features need, in table order."""
    return [s for s in SCOPES if s.setting is None or _on(settings, s.setting)]


def missing(settings: Settings, granted: Sequence[str]) -> list[Scope]:
    have = {name.strip() for name in granted}
    return [s for s in needed(settings) if s.name not in have]


def unneeded(settings: Settings, granted: Sequence[str]) -> list[str]:
    """Granted scopes the enabled features do not use (least privilege says drop them)."""
    wanted = {s.name for s in needed(settings)}
    return [name for name in granted if name and name not in wanted]
