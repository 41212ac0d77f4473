"""Modal submissions: the settings form and the Edit form."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import ValidationError

from bots.slack import messages
from bots.slack.context import SlackContext
from bots.slack.events import PLATFORM, clean_text, view_key
from bots.slack.payloads import ViewSubmission
from bots.slack.target import Target
from core.errors import UserFacingError
from core.jobs import Job, Request
from core.options import Options, check_prompt, parse

log = logging.getLogger(__name__)

Ack = Callable[..., Awaitable[Any]]


class Modals:
    def __init__(self, ctx: SlackContext) -> None:
        self.ctx = ctx

    async def settings(self, ack: Ack, body: dict[str, Any]) -> None:
        """Saves the defaults before answering, so a wrong pick shows under its field."""
        try:
            submission = ViewSubmission.model_validate(body)
        except ValidationError:
            await ack()
            return
        view = submission.view
        picked = {
            block: None if view.choice(block) == messages.DEFAULT_CHOICE else view.choice(block)
            for block in messages.SETTINGS_BLOCKS
        }
        wanted = Options(
            model=picked["model"], aspect_ratio=picked["aspect_ratio"], size=picked["size"]
        )
        catalog = self.ctx.service.catalog
        try:
            saved = await self.ctx.service.set_user_defaults(
                PLATFORM, submission.team.id, submission.user.id, wanted
            )
        except UserFacingError as exc:
            field = _field_of(exc.message, wanted)
            await ack(response_action="errors", errors={field: exc.message})
            return
        summary = messages.describe(
            Options(
                model=saved.model or catalog.default.id,
                aspect_ratio=saved.aspect_ratio,
                size=saved.size,
            ),
            catalog,
        )
        await ack(response_action="update", view=messages.settings_saved_view(summary))

    async def edit(self, ack: Ack, body: dict[str, Any]) -> None:
        """Checks the wording and the image at once (errors show in the form), then submits."""
        try:
            submission = ViewSubmission.model_validate(body)
        except ValidationError:
            await ack()
            return
        text = clean_text(submission.view.text(messages.EDIT_BLOCK), None)
        job_id = submission.view.private_metadata
        try:
            prompt, _ = parse(text)
            check_prompt(prompt, self.ctx.settings.max_prompt_chars)
            job = await self.ctx.service.job(job_id) if job_id else None
            if job is None or job.tenant != submission.team.id:
                raise UserFacingError(messages.GONE, detail=f"edit of missing job {job_id!r}")
        except UserFacingError as exc:
            await ack(response_action="errors", errors={messages.EDIT_BLOCK: exc.message})
            return
        await ack()
        self.ctx.spawn(self._submit_edit(submission, job, text), "edit")

    async def _submit_edit(self, submission: ViewSubmission, job: Job, text: str) -> None:
        ctx, user = self.ctx, submission.user.id
        target = Target.of(job).follow_up(user)
        request = Request(
            platform=PLATFORM,
            tenant=job.tenant,
            user_id=user,
            text=text,
            idempotency_key=view_key(submission.team.id, submission.view.id),
            kind="edit",
            continue_job=job.id,
            target=target.as_dict(),
        )
        try:
            await ctx.service.submit(request, announce=ctx.delivery.announce)
        except UserFacingError as exc:
            log.info("edit by %s refused: %s %s", user, exc.message, exc.detail)
            await ctx.respond(
                None,
                messages.escape(exc.message),
                channel=target.channel,
                user=user,
                thread_ts=target.thread_ts,
            )
        except Exception:
            log.exception("the edit of job=%s failed", job.id)
            await ctx.respond(
                None,
                messages.INTERNAL,
                channel=target.channel,
                user=user,
                thread_ts=target.thread_ts,
            )


def _field_of(message: str, wanted: Options) -> str:
    """The settings field an error is about (the option's value leads the sentence)."""
    for block, value in (("size", wanted.size), ("aspect_ratio", wanted.aspect_ratio)):
        if value and message.startswith(value):
            return block
    return "model"
