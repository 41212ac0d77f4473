"""The `/imagine` slash command: a new image, or help, settings, usage and history."""

from __future__ import annotations

import logging
from datetime import UTC, datetime
from typing import Any

from pydantic import ValidationError

from bots.slack import messages
from bots.slack.context import SlackContext
from bots.slack.events import (
    PLATFORM,
    command_key,
    command_request,
    history_page,
    settings_scope,
    subcommand,
)
from bots.slack.payloads import SlashCommand
from bots.slack.target import Target
from core.jobs import Job

log = logging.getLogger(__name__)


class Commands:
    """A slash command, taken in by core's Intake: `accept` names it, `run` does it after
    the ack, `tell` answers the person when it fails."""

    kind = "command"

    def __init__(self, ctx: SlackContext) -> None:
        self.ctx = ctx

    async def accept(self, body: dict[str, Any]) -> str | None:
        try:
            command = SlashCommand.model_validate(body)
        except ValidationError as exc:
            log.warning("ignored a malformed slash command: %s", exc.errors()[:1])
            return None
        return command_key(command.team_id, command.trigger_id)

    async def run(self, body: dict[str, Any]) -> None:
        command = SlashCommand.model_validate(body)
        match subcommand(command.text):
            case "help":
                service = self.ctx.service
                layers = await service.defaults(
                    PLATFORM, command.team_id, command.user_id, command.channel_id
                )
                await self._tell(
                    command,
                    messages.help_text(
                        service.catalog,
                        command=command.command,
                        bot_user_id=await self.ctx.bot_user_id(command.team_id),
                        shared=messages.shared_summary(layers, service.catalog),
                    ),
                )
            case "settings":
                await self._settings(command)
            case "usage":
                await self._usage(command)
            case "history":
                await self._history(command)
            case "blend":
                bot_user_id = await self.ctx.bot_user_id(command.team_id)
                await self._tell(command, messages.how_to_blend(bot_user_id))
            case "describe":
                bot_user_id = await self.ctx.bot_user_id(command.team_id)
                await self._tell(command, messages.how_to_describe(bot_user_id))
            case _:
                await self._imagine(command)

    async def tell(self, body: dict[str, Any], message: str) -> None:
        await self._tell(SlashCommand.model_validate(body), messages.escape(message))

    async def _imagine(self, command: SlashCommand) -> None:
        submitted = await self.ctx.service.submit(
            command_request(command), announce=self.ctx.delivery.announce
        )
        if not submitted.created:
            log.info("repeated delivery of one command", extra={"job_id": submitted.job.id})

    async def _settings(self, command: SlashCommand) -> None:
        """Someone's own defaults or, for admins and owners, the workspace's or the
        channel's (`/imagine settings workspace|channel`)."""
        service, team = self.ctx.service, command.team_id
        layers = await service.defaults(PLATFORM, team, command.user_id, command.channel_id)
        scope = settings_scope(command.text)
        if scope is None:
            view = messages.settings_view(service.catalog, layers.user, shared=layers)
        elif not await self.ctx.is_admin(team, command.user_id):
            await self._tell(command, messages.ONLY_ADMINS)
            return
        elif scope == "channel":
            form = messages.CHANNEL_SCOPE + command.channel_id
            view = messages.settings_view(service.catalog, layers.channel, scope=form)
        else:
            view = messages.settings_view(
                service.catalog, layers.team, scope=messages.WORKSPACE_SCOPE
            )
        client = await self.ctx.client(team)
        await client.views_open(trigger_id=command.trigger_id, view=view)

    async def _usage(self, command: SlashCommand) -> None:
        service = self.ctx.service
        report = await service.usage_report(PLATFORM, command.team_id, command.user_id)
        month = datetime.now(UTC).strftime("%B")
        await self._tell(command, messages.usage_text(report, month))

    async def _history(self, command: SlashCommand) -> None:
        page = await self.ctx.service.history(
            PLATFORM, command.team_id, command.user_id, history_page(command.text)
        )
        client = await self.ctx.client(command.team_id)
        links: list[str | None] = []
        for item in page.items:
            links.append(await permalink(client, item.job))
        text = messages.history_text(page, links, self.ctx.service.catalog, command=command.command)
        await self._tell(command, text)

    async def _tell(self, command: SlashCommand, text: str) -> None:
        await self.ctx.respond(
            command.response_url,
            text,
            team=command.team_id,
            channel=command.channel_id,
            user=command.user_id,
        )


async def permalink(client: Any, job: Job) -> str | None:
    """A link to the job's status message (its image is in that thread), or None."""
    target = Target.of(job)
    if target.ts is None:
        return None
    try:
        answer = await client.chat_getPermalink(channel=target.channel, message_ts=target.ts)
    except Exception as exc:
        log.info("no link to %s: %r", target.ts, exc, extra={"job_id": job.id})
        return None
    link = answer.get("permalink")
    return str(link) if link else None
