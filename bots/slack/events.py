"""Turning Slack payloads into core Requests: routing, text clean-up and idempotency keys."""

from __future__ import annotations

import re
from collections import OrderedDict
from dataclasses import dataclass

from bots.slack.payloads import MessageEvent, SlashCommand
from bots.slack.target import Target
from core.jobs import Attachment, JobKind, Request

PLATFORM = "slack"
# What people write: plain messages, with files, "Also send to channel" replies and /me
# messages. Edits, deletions, joins and the rest are not requests.
ACCEPTED_SUBTYPES = (None, "file_share", "thread_broadcast", "me_message")
SUBCOMMANDS = ("help", "settings", "usage", "history")
SETTINGS_SCOPES = ("workspace", "channel")  # `/imagine settings workspace`: for everyone

_MARKUP = re.compile(r"<([^<>\n]*)>")


# idempotency keys: the same Slack delivery, however often it arrives, makes one job


def command_key(team: str, trigger_id: str) -> str:
    return f"slack:{team}:cmd:{trigger_id}"


def message_key(team: str, channel: str, ts: str) -> str:
    # app_mention and message events for one message share it, as do retries of either
    return f"slack:{team}:msg:{channel}:{ts}"


def click_key(team: str, trigger_id: str, action_ts: str, user: str) -> str:
    return f"slack:{team}:click:{trigger_id or f'{user}:{action_ts}'}"


def view_key(team: str, view_id: str) -> str:
    return f"slack:{team}:view:{view_id}"


def message_link(channel: str, ts: str) -> str:
    """The key a Slack message is known by in the store."""
    return f"{channel}:{ts}"


# text


def unescape(text: str) -> str:
    """Undo Slack's escaping of the three characters it escapes."""
    return text.replace("&lt;", "<").replace("&gt;", ">").replace("&amp;", "&")


def mentions(text: str, user_id: str) -> bool:
    return f"<@{user_id}>" in text or f"<@{user_id}|" in text


def clean_text(text: str, bot_user_id: str | None) -> str:
    """What a person typed, as plain text: the bot's mention gone, Slack's markup undone."""

    def plain(match: re.Match[str]) -> str:
        target, _, label = match.group(1).partition("|")
        if target.startswith("@"):
            return "" if target[1:] == bot_user_id else f"@{label or target[1:]}"
        if target.startswith("#"):
            return f"#{label or target[1:]}"
        if target.startswith("!"):
            # <!here>, <!channel>, <!subteam^ID|@team>, <!date^...|fallback>
            return label or f"@{target[1:].split('^')[0]}"
        return label or target  # a link, <https://...|label>

    joined = unescape(_MARKUP.sub(plain, text))
    lines = (re.sub(r"[ \t]{2,}", " ", line).strip() for line in joined.splitlines())
    return "\n".join(lines).strip()


def subcommand(text: str) -> str | None:
    """`help`, `settings`, `usage` or `history` when that is all the command says (nothing:
    help; `history` may be followed by a page number)."""
    words = text.strip().lower().split()
    if not words:
        return "help"
    if words[0] == "history" and (len(words) == 1 or (len(words) == 2 and words[1].isdigit())):
        return "history"
    if words[0] == "settings" and len(words) == 2 and words[1] in SETTINGS_SCOPES:
        return "settings"
    if words in (["blend"], ["describe"]):
        return words[0]  # a slash command carries no files: told how to mention instead
    return words[0] if len(words) == 1 and words[0] in SUBCOMMANDS else None


def settings_scope(text: str) -> str | None:
    """Whose defaults `/imagine settings [workspace|channel]` is about (None: one's own)."""
    words = text.lower().split()
    return words[1] if len(words) == 2 and words[1] in SETTINGS_SCOPES else None


def history_page(text: str) -> int:
    """The page `/imagine history N` asks for (1 without a number)."""
    words = text.split()
    return max(1, int(words[1])) if len(words) == 2 and words[1].isdigit() else 1


# routing


@dataclass(frozen=True)
class Route:
    """Where a message-like event belongs, when it is a request to the bot at all."""

    channel: str
    thread_ts: str | None  # the thread the answer goes into; None: a DM's main view
    thread_key: str
    reply_to: str | None  # the thread's parent, which leads to the conversation there
    needs_bot_thread: bool  # a reply without a mention counts only in a thread of the bot's


def ignored(event: MessageEvent, bot_user_id: str) -> bool:
    """Bot posts (ours included), edits, deletions and other subtypes make no request."""
    return (
        event.subtype not in ACCEPTED_SUBTYPES
        or event.bot_id is not None
        or not event.user
        or event.user == bot_user_id
    )


def route_message(event: MessageEvent, bot_user_id: str, *, thread_replies: bool) -> Route | None:
    """Which conversation an event continues or starts; None when it is not for the bot.

    A DM is always for the bot. In channels: a mention outside a thread starts a
    conversation in a thread under it; in a thread, a mention continues the thread, and with
    `thread_replies` so does any reply, if the thread is one the bot started.
    """
    if ignored(event, bot_user_id):
        return None
    channel, thread = event.channel, event.thread_ts
    if event.channel_type == "im":
        parent = message_link(channel, thread) if thread else None
        return Route(channel, thread, f"{channel}:{thread or 'dm'}", parent, False)
    mentioned = event.type == "app_mention" or mentions(event.text, bot_user_id)
    if thread:
        if not mentioned and not thread_replies:
            return None
        key = message_link(channel, thread)
        return Route(channel, thread, key, key, needs_bot_thread=not mentioned)
    if not mentioned:
        return None
    return Route(channel, event.ts, message_link(channel, event.ts), None, False)


def message_request(
    team: str,
    event: MessageEvent,
    route: Route,
    text: str,
    attachments: tuple[Attachment, ...],
) -> Request:
    assert event.user is not None
    target = Target(
        route.channel, event.user, thread_ts=route.thread_ts, threaded=route.thread_ts is not None
    )
    # "blend [how]": the images attached made into one or, in a thread, its last two
    # ("blend of colours" elsewhere, with no image, is a prompt like any other); "describe"
    # with an image: prompts that would make it
    first, _, rest = text.partition(" ")
    kind: JobKind = "generate"
    if first.lower() == "blend" and (bool(attachments) or route.thread_ts is not None):
        kind = "blend"
    elif first.lower() == "describe" and attachments:
        kind = "describe"
    return Request(
        platform=PLATFORM,
        tenant=team,
        user_id=event.user,
        text=text if kind == "generate" else rest.strip(),
        kind=kind,
        idempotency_key=message_key(team, event.channel, event.ts),
        thread_key=route.thread_key,
        reply_to=route.reply_to,
        attachments=attachments,
        target=target.as_dict(),
        channel=route.channel,
    )


def command_request(command: SlashCommand) -> Request:
    """`/imagine` starts a conversation; its status message becomes the thread's parent."""
    return Request(
        platform=PLATFORM,
        tenant=command.team_id,
        user_id=command.user_id,
        text=clean_text(command.text, None),
        idempotency_key=command_key(command.team_id, command.trigger_id),
        target=Target(command.channel_id, command.user_id).as_dict(),
        channel=command.channel_id,
    )


class RecentKeys:
    """Keys this process has started on, so a duplicate delivery is dropped before any work.

    The store's unique idempotency key is what guarantees one job; this only spares the
    second delivery of an event a second download of its files.
    """

    def __init__(self, capacity: int = 10_000) -> None:
        self._keys: OrderedDict[str, None] = OrderedDict()
        self._capacity = capacity

    def claim(self, key: str) -> bool:
        """True the first time `key` is seen."""
        if key in self._keys:
            return False
        self._keys[key] = None
        if len(self._keys) > self._capacity:
            self._keys.popitem(last=False)
        return True
