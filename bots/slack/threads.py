"""Conversations in messages: mentions, replies in the bot's threads, and DMs."""

from __future__ import annotations

import logging
from typing import Any

from pydantic import ValidationError

from bots.slack import messages
from bots.slack.context import SlackContext
from bots.slack.events import (
    PLATFORM,
    RecentKeys,
    Route,
    clean_text,
    message_key,
    message_request,
    route_message,
)
from bots.slack.files import complete_files, download_attachments
from bots.slack.payloads import EventCallback, MessageEvent

log = logging.getLogger(__name__)


class Threads:
    """Mentions and messages, taken in by core's Intake: `accept` decides whether one is
    for the bot (and names it), `run` answers it after the ack, `tell` says what failed."""

    kind = "message"

    def __init__(self, ctx: SlackContext) -> None:
        self.ctx = ctx
        self.recent = RecentKeys()

    async def _read(self, body: dict[str, Any]) -> tuple[str, MessageEvent, Route] | None:
        try:
            envelope = EventCallback.model_validate(body)
            event = MessageEvent.model_validate(envelope.event)
        except ValidationError:
            return None
        bot_user_id = await self.ctx.bot_user_id(envelope.workspace)
        route = route_message(
            event, bot_user_id, thread_replies=self.ctx.settings.slack_thread_replies
        )
        if route is None or event.user is None:
            return None
        return envelope.workspace, event, route

    async def accept(self, body: dict[str, Any]) -> str | None:
        read = await self._read(body)
        if read is None:
            log.debug("ignored an event that is not a message for the bot")
            return None
        team, event, route = read
        key = message_key(team, event.channel, event.ts)
        if not self.recent.claim(key):
            return None  # the same message again: a retry, or app_mention and message both
        if route.needs_bot_thread and not await self._bot_thread(team, route):
            return None
        return key

    async def run(self, body: dict[str, Any]) -> None:
        read = await self._read(body)
        assert read is not None, "accepted before"
        await self._submit(*read)

    async def tell(self, body: dict[str, Any], message: str) -> None:
        read = await self._read(body)
        if read is None:
            return
        team, event, route = read
        assert event.user is not None
        await self.ctx.reply(
            team,
            route.channel,
            route.thread_ts,
            messages.addressed(event.user, messages.escape(message)),
        )

    async def resumed(self, body: dict[str, Any]) -> None:
        """Told first when a message is taken over from a process that died."""
        read = await self._read(body)
        if read is not None:
            team, event, route = read
            assert event.user is not None
            await self.ctx.reply(
                team,
                route.channel,
                route.thread_ts,
                messages.addressed(event.user, messages.RESUMED),
            )

    async def _bot_thread(self, team: str, route: Route) -> bool:
        assert route.reply_to is not None
        return await self.ctx.service.job_for_message(PLATFORM, team, route.reply_to) is not None

    async def _submit(self, team: str, event: MessageEvent, route: Route) -> None:
        ctx = self.ctx
        bot_user_id = await ctx.bot_user_id(team)
        text = clean_text(event.text, bot_user_id)
        if text.lower() == "help" and not event.files:
            help_text = messages.help_text(
                ctx.service.catalog, command="/imagine", bot_user_id=bot_user_id
            )
            await ctx.reply(team, route.channel, route.thread_ts, help_text)
            return
        attachments = await download_attachments(
            ctx.http,
            await complete_files(await ctx.client(team), event.files),
            token=await ctx.workspaces.token(team),
            hosts=ctx.settings.split(ctx.settings.slack_file_hosts),
            max_bytes=ctx.settings.max_attachment_bytes,
        )
        request = message_request(team, event, route, text, attachments)
        if request.kind == "describe":
            prompts = await ctx.service.describe(request)
            assert event.user is not None
            await ctx.reply(
                team, route.channel, route.thread_ts, **messages.described(event.user, prompts)
            )
            return
        await ctx.service.submit(request, announce=ctx.delivery.announce)
