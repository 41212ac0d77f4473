"""Modal submissions: the settings form and the Edit form."""

from __future__ import annotations

import logging
from typing import Any

from pydantic import ValidationError

from bots.slack import messages
from bots.slack.context import Ack, SlackContext
from bots.slack.events import PLATFORM, clean_text, view_key
from bots.slack.payloads import ViewSubmission
from bots.slack.target import Target
from core.errors import UserFacingError
from core.jobs import Job, Request
from core.options import Options, check_prompt, parse

log = logging.getLogger(__name__)


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
            model=picked["model"],
            aspect_ratio=picked["aspect_ratio"],
            size=picked["size"],
            n=int(picked["n"]) if (picked["n"] or "").isdigit() else None,
        )
        service, team, user = self.ctx.service, submission.workspace, submission.user.id
        scope = view.private_metadata
        try:
            if not scope:
                saved = await service.set_user_defaults(PLATFORM, team, user, wanted)
            elif not await self.ctx.is_admin(team, user):  # asked again: roles change
                raise UserFacingError(messages.ONLY_ADMINS)
            else:
                channel = (
                    scope.removeprefix(messages.CHANNEL_SCOPE)
                    if scope != messages.WORKSPACE_SCOPE
                    else None
                )
                saved = await service.set_shared_defaults(PLATFORM, team, channel, wanted, user)
        except UserFacingError as exc:
            field = _field_of(exc.message, wanted)
            await ack(response_action="errors", errors={field: exc.message})
            return
        summary = messages.settings_summary(saved, service.catalog)
        await ack(response_action="update", view=messages.settings_saved_view(summary, scope))

    async def edit(self, ack: Ack, body: dict[str, Any]) -> None:
        """Checks the wording and the image at once (errors show in the form), then the
        edit is taken in like any request."""
        try:
            submission = ViewSubmission.model_validate(body)
        except ValidationError:
            await ack()
            return
        try:
            await self._edited_job(submission)
        except UserFacingError as exc:
            await ack(response_action="errors", errors={messages.EDIT_BLOCK: exc.message})
            return
        await self.ctx.take(self.editing, body, ack)

    async def _edited_job(self, submission: ViewSubmission) -> tuple[Job, str]:
        text = clean_text(submission.view.text(messages.EDIT_BLOCK), None)
        job_id = submission.view.private_metadata
        prompt, _ = parse(text)
        check_prompt(prompt, self.ctx.settings.max_prompt_chars)
        job = await self.ctx.service.job_for(PLATFORM, submission.workspace, job_id)
        return job, text

    @property
    def editing(self) -> EditForm:
        return EditForm(self)


class EditForm:
    """A submitted Edit form, taken in by core's Intake after the form is checked."""

    kind = "edit"

    def __init__(self, modals: Modals) -> None:
        self.modals = modals
        self.ctx = modals.ctx

    async def accept(self, body: dict[str, Any]) -> str | None:
        submission = ViewSubmission.model_validate(body)
        return view_key(submission.workspace, submission.view.id)

    async def run(self, body: dict[str, Any]) -> None:
        submission = ViewSubmission.model_validate(body)
        job, text = await self.modals._edited_job(submission)
        target = Target.of(job).follow_up(submission.user.id)
        request = Request(
            platform=PLATFORM,
            tenant=job.tenant,
            user_id=submission.user.id,
            text=text,
            idempotency_key=view_key(job.tenant, submission.view.id),
            kind="edit",
            continue_job=job.id,
            target=target.as_dict(),
            channel=target.channel,
        )
        await self.ctx.service.submit(request, announce=self.ctx.delivery.announce)

    async def tell(self, body: dict[str, Any], message: str) -> None:
        submission = ViewSubmission.model_validate(body)
        job_id = submission.view.private_metadata
        job = await self.ctx.service.job(job_id) if job_id else None
        if job is None:
            return
        target = Target.of(job).follow_up(submission.user.id)
        await self.ctx.respond(
            None,
            messages.escape(message),
            team=job.tenant,
            channel=target.channel,
            user=submission.user.id,
            thread_ts=target.thread_ts,
        )


def _field_of(message: str, wanted: Options) -> str:
    """The settings field an error is about (the option's value leads the sentence)."""
    for block, value in (("size", wanted.size), ("aspect_ratio", wanted.aspect_ratio)):
        if value and message.startswith(value):
            return block
    return "model"
