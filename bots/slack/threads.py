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
from bots.slack.files import download_attachments
from bots.slack.payloads import EventCallback, MessageEvent
from core.errors import UserFacingError

log = logging.getLogger(__name__)


class Threads:
    def __init__(self, ctx: SlackContext) -> None:
        self.ctx = ctx
        self.recent = RecentKeys()

    async def handle(self, body: dict[str, Any]) -> None:
        """An app_mention or message event, after the ack."""
        try:
            envelope = EventCallback.model_validate(body)
            event = MessageEvent.model_validate(envelope.event)
        except ValidationError:
            log.debug("ignored an event without the fields of a message")
            return
        route = route_message(
            event, self.ctx.bot_user_id, thread_replies=self.ctx.settings.slack_thread_replies
        )
        if route is None:
            return
        team = envelope.team_id
        if not self.recent.claim(message_key(team, event.channel, event.ts)):
            return  # the same message again: a retry, or app_mention and message both
        if route.needs_bot_thread and not await self._bot_thread(team, route):
            return
        assert event.user is not None
        key = message_key(team, event.channel, event.ts)
        # acknowledged already, and Slack will not send it again: kept in the store until
        # its job exists, so a crash during the downloads below cannot lose it
        try:
            if not await self.ctx.service.hold(PLATFORM, key, body):
                return  # another process has it, or its job exists already
        except Exception:
            log.exception("could not keep the message %s:%s", event.channel, event.ts)
            await self.ctx.reply(
                route.channel, route.thread_ts, messages.addressed(event.user, messages.INTERNAL)
            )
            return
        try:
            await self._submit(team, event, route)
        except UserFacingError as exc:
            log.info(
                "message %s:%s refused: %s %s", event.channel, event.ts, exc.message, exc.detail
            )
            await self.ctx.reply(
                route.channel,
                route.thread_ts,
                messages.addressed(event.user, messages.escape(exc.message)),
            )
        except Exception:
            log.exception("the message %s:%s failed", event.channel, event.ts)
            await self.ctx.reply(
                route.channel, route.thread_ts, messages.addressed(event.user, messages.INTERNAL)
            )
        # answered, or its job stored: nothing left to hold. Not in a `finally`: a shutdown
        # that cancels this leaves the message held for the next process.
        await self.ctx.service.release(key)

    async def resume(self, body: dict[str, Any]) -> None:
        """A message acknowledged by a process that died before storing its request."""
        try:
            event = MessageEvent.model_validate(EventCallback.model_validate(body).event)
        except ValidationError:
            return
        route = route_message(
            event, self.ctx.bot_user_id, thread_replies=self.ctx.settings.slack_thread_replies
        )
        if route is not None and event.user is not None:
            await self.ctx.reply(
                route.channel, route.thread_ts, messages.addressed(event.user, messages.RESUMED)
            )
        await self.handle(body)

    async def _bot_thread(self, team: str, route: Route) -> bool:
        assert route.reply_to is not None
        return await self.ctx.service.job_for_message(PLATFORM, team, route.reply_to) is not None

    async def _submit(self, team: str, event: MessageEvent, route: Route) -> None:
        ctx = self.ctx
        text = clean_text(event.text, ctx.bot_user_id)
        if text.lower() == "help" and not event.files:
            help_text = messages.help_text(
                ctx.service.catalog, command="/imagine", bot_user_id=ctx.bot_user_id
            )
            await ctx.reply(route.channel, route.thread_ts, help_text)
            return
        attachments = await download_attachments(
            ctx.http,
            event.files,
            token=ctx.token,
            hosts=ctx.settings.split(ctx.settings.slack_file_hosts),
            max_bytes=ctx.settings.max_attachment_bytes,
        )
        request = message_request(team, event, route, text, attachments)
        await ctx.service.submit(request, announce=ctx.delivery.announce)
