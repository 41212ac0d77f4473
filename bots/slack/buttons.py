"""The buttons under a result (Re-roll, Upscale, Edit, Vary and Delete) and under a job in
progress (Cancel).

A button carries only the job id; the job, its thread and its owner are read from the
store, so buttons on messages from before a restart keep working.
"""

from __future__ import annotations

import logging
from typing import Any

from pydantic import ValidationError

from bots.slack import messages
from bots.slack.context import SlackContext
from bots.slack.events import PLATFORM, click_key
from bots.slack.payloads import Action, BlockActions
from bots.slack.target import Target
from core.jobs import Job, Request
from core.options import Options

log = logging.getLogger(__name__)


class Buttons:
    """A click, taken in by core's Intake: `accept` names it, `run` does it after the ack,
    `tell` answers the person who clicked when it fails."""

    kind = "click"

    def __init__(self, ctx: SlackContext) -> None:
        self.ctx = ctx

    async def accept(self, body: dict[str, Any]) -> str | None:
        try:
            click = BlockActions.model_validate(body)
        except ValidationError as exc:
            log.warning("ignored a malformed button click: %s", exc.errors()[:1])
            return None
        if not click.actions:
            return None
        action = click.actions[0]
        return click_key(click.team.id, click.trigger_id, action.action_ts, click.user.id)

    async def run(self, body: dict[str, Any]) -> None:
        click = BlockActions.model_validate(body)
        action = click.actions[0]
        if action.action_id == messages.OPEN_SETTINGS:  # on the Home tab: no job behind it
            await self._open_settings(click)
            return
        if action.action_id == messages.IMAGINE:  # under Describe's prompts: no job either
            await self._imagine(click, action)
            return
        job = await self._job(action.value, click.team.id)
        await self._run(click, action, job)

    async def tell(self, body: dict[str, Any], message: str) -> None:
        await self._tell(BlockActions.model_validate(body), messages.escape(message))

    async def _job(self, job_id: str, team: str) -> Job:
        return await self.ctx.service.job_for(PLATFORM, team, job_id)

    async def _run(self, click: BlockActions, action: Action, job: Job) -> None:
        ctx, user = self.ctx, click.user.id
        key = click_key(click.team.id, click.trigger_id, action.action_ts, user)
        target = Target.of(job).follow_up(user).as_dict()
        if action.action_id == messages.EDIT:
            # first: the trigger id is good for three seconds only
            client = await ctx.client(click.team.id)
            await client.views_open(trigger_id=click.trigger_id, view=messages.edit_view(job))
        elif action.action_id in (messages.REROLL, messages.VARY):
            request = Request(
                platform=PLATFORM,
                tenant=click.team.id,
                user_id=user,
                text="",  # core says what a variation asks for
                idempotency_key=key,
                kind="reroll" if action.action_id == messages.REROLL else "vary",
                continue_job=job.id,
                target=target,
                channel=Target.of(job).channel,
            )
            await ctx.service.submit(request, announce=ctx.delivery.announce)
        elif action.action_id.startswith(messages.UPSCALE):
            size = action.action_id.removeprefix(messages.UPSCALE)
            request = Request(
                platform=PLATFORM,
                tenant=job.tenant,
                user_id=user,
                text="",  # core says what an upscale asks for
                idempotency_key=key,
                kind="upscale",
                continue_job=job.id,
                options=Options(size=size),
                target=target,
                channel=Target.of(job).channel,
            )
            await ctx.service.submit(request, announce=ctx.delivery.announce)
        elif action.action_id == messages.DELETE:
            if user != job.user_id:
                # told directly: the mention in it must stay a mention, not escaped text
                await self._tell(click, messages.only_owner_deletes(job.user_id))
                return
            await ctx.delivery.delete(job)
        elif action.action_id == messages.CANCEL:
            said = await ctx.service.cancel(PLATFORM, job.tenant, job.id, user)
            await self._tell(click, messages.escape(said))
        else:
            log.warning("ignored an unknown button %s", action.action_id)

    async def _imagine(self, click: BlockActions, action: Action) -> None:
        """A prompt Describe suggested, made as if typed to /imagine where it was shown: a
        new conversation, its card in the channel (or the DM)."""
        channel = click.container.channel_id or (click.channel.id if click.channel else "")
        request = Request(
            platform=PLATFORM,
            tenant=click.team.id,
            user_id=click.user.id,
            text=action.value,
            idempotency_key=click_key(
                click.team.id, click.trigger_id, action.action_ts, click.user.id
            ),
            target=Target(channel, click.user.id).as_dict(),
            channel=channel,
        )
        await self.ctx.service.submit(request, announce=self.ctx.delivery.announce)

    async def _open_settings(self, click: BlockActions) -> None:
        ctx = self.ctx
        current = await ctx.service.user_defaults(PLATFORM, click.team.id, click.user.id)
        client = await ctx.client(click.team.id)
        await client.views_open(
            trigger_id=click.trigger_id, view=messages.settings_view(ctx.service.catalog, current)
        )

    async def _tell(self, click: BlockActions, text: str) -> None:
        await self.ctx.respond(
            click.response_url,
            text,
            team=click.team.id,
            channel=click.container.channel_id or (click.channel.id if click.channel else ""),
            user=click.user.id,
            thread_ts=click.container.thread_ts,
        )
