"""Messages into requests: mentions, replies to the bot's images, the bot's threads and DMs.

A reply to one of the bot's images continues from that image, so replying to an older one
forks the conversation there. A mention starts a conversation (in a thread of its own when
thread messages are on). Messages in a thread the bot started, and in a DM, follow the
latest image of that thread or DM.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, replace
from typing import Any, Literal

import discord
import httpx

from bots.discord import components, files, messages
from bots.discord.access import AccessLists, is_allowed
from bots.discord.delivery import NO_PING
from bots.discord.events import PLATFORM, RecentIds, message_key, place_of, tenant_of
from bots.discord.intake import Held
from bots.discord.target import DEFAULT_UPLOAD_LIMIT, Target
from core.config import Settings
from core.errors import UserFacingError
from core.intake import Intake
from core.jobs import Job, Request
from core.service import Service

log = logging.getLogger(__name__)

# a message as it came in, or the same message known by id only (after a restart)
Answerable = discord.Message | discord.PartialMessage
Route = Literal["reply", "thread", "dm", "mention"]
THREAD_NAME_MAX = 90
THREAD_ARCHIVE_MINUTES = 1440


@dataclass(frozen=True)
class MessageFacts:
    """What decides whether and how a message is a request to the bot."""

    in_dm: bool
    mentions_bot: bool
    replies_to_bot: bool
    in_bot_thread: bool
    readable: bool  # has text or files (without MESSAGE_CONTENT most messages have neither)


def route(facts: MessageFacts, *, dms: bool, thread_messages: bool) -> Route | None:
    """How a message from a person is handled; None when it is not for the bot."""
    if not facts.readable:
        return None
    if facts.in_dm:
        if not dms:
            return None
        return "reply" if facts.replies_to_bot else "dm"
    if facts.replies_to_bot:
        return "reply"
    if facts.in_bot_thread and (thread_messages or facts.mentions_bot):
        return "thread"
    if facts.mentions_bot:
        return "mention"
    return None


def without_mention(content: str, bot_id: int, role_id: int | None = None) -> str:
    """The text with the bot's mentions taken out (of its user, or of its own role)."""
    role = rf"|<@&{role_id}>" if role_id is not None else ""
    return re.sub(rf"<@!?{bot_id}>{role}", " ", content).strip()


def _own_role(message: discord.Message) -> int | None:
    """The role Discord made for the bot in this server (people's autocomplete offers it)."""
    if message.guild is None:
        return None
    role = message.guild.self_role
    return role.id if role is not None else None


def _mentions_bot(message: discord.Message, bot_user: discord.ClientUser) -> bool:
    role = _own_role(message)
    return any(user.id == bot_user.id for user in message.mentions) or _mentions_role(message, role)


def _mentions_role(message: discord.Message, role: int | None) -> bool:
    # `role_mentions` comes from the payload's mention_roles, which is sent even when the
    # text is not; `raw_role_mentions` reads the text, for roles missing from the cache
    return role is not None and (
        any(r.id == role for r in message.role_mentions) or role in message.raw_role_mentions
    )


def _is_voice(message: discord.Message) -> bool:
    """A voice message, sent or forwarded (a forward carries the flag on its snapshot)."""
    return message.flags.voice or any(s.flags.voice for s in message.message_snapshots)


def _why_unreadable(message: discord.Message) -> str | None:
    """Why a message with no text or files the bot can see still deserves an answer."""
    if _mentions_role(message, _own_role(message)):
        # without the Message Content intent its text may not be sent to the bot
        return messages.ROLE_MENTION_UNREAD
    if message.guild is None and message.stickers:
        return messages.STICKER_ONLY
    return None


def _what_it_says(message: discord.Message) -> tuple[str, list[discord.Attachment]]:
    """Text and files; a forwarded message has none of its own, its snapshot carries them."""
    if message.content or message.attachments or not message.message_snapshots:
        return message.content, list(message.attachments)
    snapshot = message.message_snapshots[0]
    return snapshot.content, list(snapshot.attachments)


def thread_name(text: str) -> str:
    first_line = (text.strip().splitlines() or [""])[0]
    return messages.clip(messages.no_ping(first_line), THREAD_NAME_MAX) or "imagebot"


class Conversations:
    def __init__(
        self,
        settings: Settings,
        service: Service,
        intake: Intake,
        access: AccessLists,
        http: httpx.AsyncClient,
        recent: RecentIds,
    ) -> None:
        self.settings = settings
        self.service = service
        self.intake = intake
        self.access = access
        self.http = http
        self.recent = recent

    async def on_message(self, message: discord.Message, bot_user: discord.ClientUser) -> None:
        if message.author.bot or message.webhook_id is not None:
            return  # our own messages come back as events too
        guild_id = message.guild.id if message.guild is not None else None
        tenant = tenant_of(guild_id, message.author.id)
        content, attachments = _what_it_says(message)
        readable = bool(content or attachments)
        # nothing to read, yet plainly for the bot: answered with why, not with silence
        unreadable = None if readable else _why_unreadable(message)
        facts = MessageFacts(
            in_dm=guild_id is None,
            mentions_bot=_mentions_bot(message, bot_user),
            replies_to_bot=await self._replies_to_bot(message, bot_user, tenant),
            in_bot_thread=isinstance(message.channel, discord.Thread)
            and message.channel.owner_id == bot_user.id,
            readable=readable or unreadable is not None,
        )
        kind = route(
            facts,
            dms=self.settings.discord_dms,
            thread_messages=self.settings.discord_thread_messages,
        )
        if kind is None:
            return
        if not self.recent.first_time(message_key(message.id)):
            log.info("message %s delivered again; ignored", message.id)
            return
        place = place_of(message.author, guild_id, message.channel, message.channel.id)
        if not is_allowed(self.access, place):
            log.info("user %s ignored in channel %s", message.author.id, message.channel.id)
            return
        refusal = messages.VOICE_MESSAGE if _is_voice(message) else unreadable
        if refusal is not None:
            await _answer(message, messages.failure(refusal))
            return
        text = without_mention(content, bot_user.id, _own_role(message))
        await self._handle(message, kind, text, tenant, attachments)

    async def _replies_to_bot(
        self, message: discord.Message, bot_user: discord.ClientUser, tenant: str
    ) -> bool:
        reference = message.reference
        if reference is None or reference.message_id is None:
            return False
        if reference.type == discord.MessageReferenceType.forward:
            return False  # a forward points at its original, wherever that is
        resolved = reference.resolved
        if isinstance(resolved, discord.Message):
            return resolved.author.id == bot_user.id
        if isinstance(resolved, discord.DeletedReferencedMessage):
            return False
        if not (message.content or message.attachments):
            return False
        # not sent along: the store knows whether that message shows one of our jobs
        job = await self.service.job_for_message(PLATFORM, tenant, str(reference.message_id))
        return job is not None

    async def _handle(
        self,
        message: discord.Message,
        kind: Route,
        text: str,
        tenant: str,
        attachments: list[discord.Attachment],
    ) -> None:
        guild = message.guild
        target = Target(
            channel_id=message.channel.id,
            guild_id=guild.id if guild is not None else None,
            requester_id=message.author.id,
            upload_limit=guild.filesize_limit if guild is not None else DEFAULT_UPLOAD_LIMIT,
            reply_to=message.id,
        )
        thread_key: str | None = None
        reply_to: str | None = None
        new_thread = False
        if kind == "reply":
            assert message.reference is not None
            reply_to = str(message.reference.message_id)
        elif kind == "thread":
            thread_key = str(message.channel.id)
        elif kind == "dm":
            thread_key = f"dm:{message.channel.id}"
        elif self.settings.discord_thread_messages and isinstance(
            message.channel, discord.TextChannel
        ):
            # a thread started from a message takes that message's id
            thread_key = str(message.id)
            new_thread = True
        request = Request(
            platform=PLATFORM,
            tenant=tenant,
            user_id=str(message.author.id),
            text=text,
            idempotency_key=message_key(message.id),
            thread_key=thread_key,
            reply_to=reply_to,
            target=target.to_dict(),
            # a thread's parent, where the thread was opened: its defaults apply
            channel=str(getattr(message.channel, "parent_id", None) or message.channel.id),
        )
        held = Held.of("message", request, attachments, new_thread=new_thread)
        # Discord sends a message once, with nothing to acknowledge: it is kept in the store
        # as it arrives, so a crash before its job is stored (say while files download)
        # leaves it to the next process
        await self.intake.take(
            held.key,
            held.to_dict(),
            acknowledge=_nothing,
            work=lambda: self._submit(message, held),
            tell=lambda text: _answer(message, messages.failure(text)),
        )

    async def resume(self, held: Held, client: discord.Client) -> None:
        """A message taken in by a process that died before its job was stored."""
        target = held.target
        assert target.reply_to is not None  # Held.from_dict makes sure of it
        channel = client.get_partial_messageable(target.channel_id, guild_id=target.guild_id)
        message = channel.get_partial_message(target.reply_to)
        await self.intake.finish(
            held.key,
            lambda: self._submit(message, held),
            lambda text: _answer(message, messages.failure(text)),
        )

    async def _submit(self, message: Answerable, held: Held) -> None:
        request, target = held.request, held.target
        fetched = await files.fetch(self.http, held.files, self.settings)

        async def announce(job: Job, position: int) -> dict[str, Any]:
            return await self._announce(
                message, target, request.text, position, job.id, new_thread=held.new_thread
            )

        await self.service.submit(held.with_files(fetched), announce=announce)

    async def _announce(
        self,
        message: Answerable,
        target: Target,
        text: str,
        position: int,
        job_id: str,
        *,
        new_thread: bool,
    ) -> dict[str, Any]:
        """Post the "queued" reply that becomes the result; where it went is the job's target."""
        shown = messages.queued(position)
        cancel = components.progress_view(job_id)
        try:
            if new_thread:
                try:
                    thread = await message.create_thread(
                        name=thread_name(text), auto_archive_duration=THREAD_ARCHIVE_MINUTES
                    )
                except (discord.HTTPException, ValueError) as exc:
                    # ValueError: a message known by id only, in a server not in the cache
                    log.warning("could not open a thread on message %s: %s", message.id, exc)
                else:
                    sent = await thread.send(shown, view=cancel, allowed_mentions=NO_PING)
                    # in its own thread the result needs no reply arrow
                    return replace(
                        target, channel_id=thread.id, reply_to=None, message_id=sent.id
                    ).to_dict()
            sent = await message.reply(
                shown, view=cancel, mention_author=False, allowed_mentions=NO_PING
            )
        except discord.HTTPException as exc:
            raise UserFacingError(
                "I could not post in this channel.", detail=f"announce failed: {exc}"
            ) from exc
        return target.with_message(sent.id).to_dict()


async def _nothing() -> None:
    """A gateway message needs no acknowledgement."""


async def _answer(message: Answerable, text: str) -> None:
    try:
        await message.reply(text, mention_author=False, allowed_mentions=NO_PING)
    except discord.HTTPException as exc:
        log.warning("could not answer message %s: %s", message.id, exc)
