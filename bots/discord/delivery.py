"""The service's Discord adapter: shows progress and delivers results, over REST only.

Nothing here needs the gateway: interaction responses are edited as webhooks with the
interaction's token, other messages with the bot token, so a job finishing while the
gateway reconnects is delivered all the same.
"""

from __future__ import annotations

import asyncio
import io
import logging
import time
from dataclasses import dataclass, field

import discord

from bots.discord import components, messages
from bots.discord.target import Target
from core import images
from core.jobs import Job, Outcome, Progress
from core.service import Service

log = logging.getLogger(__name__)

LOGIN_TIMEOUT_SECONDS = 120.0
PROGRESS_SETTLE_SECONDS = 10.0
NO_PING = discord.AllowedMentions.none()
NO_IMAGE = "The model made no image this time; try again or change the prompt."


@dataclass
class Rendered:
    """A message body; files are kept as bytes so every attempt can send them afresh."""

    content: str = ""
    embeds: list[discord.Embed] = field(default_factory=list)
    files: list[tuple[str, bytes]] = field(default_factory=list)
    view: discord.ui.View | None = None

    def discord_files(self) -> list[discord.File]:
        return [discord.File(io.BytesIO(data), filename=name) for name, data in self.files]


class DiscordDelivery:
    def __init__(self, client: discord.Client, service: Service) -> None:
        self._client = client
        self._service = service
        self._logged_in = asyncio.Event()
        self._progress: dict[str, asyncio.Task[None]] = {}

    def logged_in(self) -> None:
        """REST works from here on (the gateway may still be connecting)."""
        self._logged_in.set()

    async def _rest_ready(self) -> None:
        # jobs recovered at start-up are delivered as soon as the client has logged in
        async with asyncio.timeout(LOGIN_TIMEOUT_SECONDS):
            await self._logged_in.wait()

    # the Adapter protocol

    async def progress(self, job: Job, update: Progress) -> None:
        if update.state == "generating":
            text = messages.generating(update.elapsed_seconds)
        else:
            text = messages.queued(update.position)
        # an edit on its way must land before the result's edit, never after it
        task = asyncio.ensure_future(self.show_text(Target.from_dict(job.target), text))
        self._progress[job.id] = task
        task.add_done_callback(lambda done: self._forget_progress(job.id, done))
        await asyncio.shield(task)

    def _forget_progress(self, job_id: str, task: asyncio.Task[None]) -> None:
        if self._progress.get(job_id) is task:
            del self._progress[job_id]

    async def deliver(self, job: Job, outcome: Outcome) -> list[str]:
        pending = self._progress.get(job.id)
        if pending is not None:
            await asyncio.wait({pending}, timeout=PROGRESS_SETTLE_SECONDS)
        await self._rest_ready()
        target = Target.from_dict(job.target)
        rendered = await self._render(job, outcome, target)
        message_id = await self._put(target, rendered)
        return [str(message_id)]

    # showing things

    async def show_text(self, target: Target, text: str) -> None:
        """Replace the text of the job's message (queued, generating); no fallback."""
        await self._rest_ready()
        if target.token_usable(time.time()):
            await self._webhook(target).edit_message(
                _original(target), content=text, allowed_mentions=NO_PING
            )
        elif target.message_id is not None:
            await self._message(target, target.message_id).edit(
                content=text, allowed_mentions=NO_PING
            )

    async def _render(self, job: Job, outcome: Outcome, target: Target) -> Rendered:
        if not outcome.ok:
            return Rendered(
                content=messages.failure(outcome.error or NO_IMAGE),
                view=components.failure_view(job.id),
            )
        limit = messages.display_limit(target.upload_limit)
        files: list[tuple[str, bytes]] = []
        notes: list[str] = []
        for index, image in enumerate(outcome.images):
            fitted = await images.fit_under(image.data, image.mime_type, limit)
            if fitted.note:
                log.info("image %d %s", index + 1, fitted.note, extra={"job_id": job.id})
                note = messages.fitted_note(fitted.note)
                if note not in notes:
                    notes.append(note)
            files.append((messages.image_filename(job, index, fitted.mime_type), fitted.data))
        if outcome.notice:
            notes.append(outcome.notice)
        embed = messages.result_embed(
            job,
            outcome,
            self._service.catalog,
            image_name=files[0][0] if files else None,
            notes=notes,
        )
        view = components.result_view(job.id, await self._service.upscale_sizes(job))
        return Rendered(embeds=[embed], files=files, view=view)

    async def _put(self, target: Target, rendered: Rendered) -> int:
        """Show `rendered` in the job's message; a new message when that one is out of reach."""
        if target.token_usable(time.time()):
            try:
                message = await self._webhook(target).edit_message(
                    _original(target),
                    content=rendered.content,
                    embeds=rendered.embeds,
                    attachments=rendered.discord_files(),
                    view=rendered.view,
                    allowed_mentions=NO_PING,
                )
                return message.id
            except (discord.NotFound, discord.Forbidden) as exc:
                log.warning("interaction response is gone (%s); posting a new message", exc.code)
            except discord.HTTPException as exc:
                if exc.status != 401:  # 401: the token died early
                    raise
        elif target.message_id is not None:
            try:
                message = await self._message(target, target.message_id).edit(
                    content=rendered.content,
                    embeds=rendered.embeds,
                    attachments=rendered.discord_files(),
                    view=rendered.view,
                    allowed_mentions=NO_PING,
                )
                return message.id
            except (discord.NotFound, discord.Forbidden) as exc:
                log.warning("progress message is gone (%s); posting a new message", exc.code)
        return await self._post_new(target, rendered)

    async def _post_new(self, target: Target, rendered: Rendered) -> int:
        channel = self._client.get_partial_messageable(target.channel_id, guild_id=target.guild_id)
        content = rendered.content
        if target.reply_to is None:
            # an interaction's answer, posted afresh: say whose it was (a mention never pings)
            content = messages.clip(f"<@{target.requester_id}> {content}".strip(), 2000)
        reference = None
        answers = target.reply_to or target.message_id
        if answers is not None:
            reference = discord.MessageReference(
                message_id=answers, channel_id=target.channel_id, fail_if_not_exists=False
            )
        kwargs = {"view": rendered.view} if rendered.view is not None else {}
        message = await channel.send(
            content=content or None,
            embeds=rendered.embeds,
            files=rendered.discord_files(),
            reference=reference,  # type: ignore[arg-type]
            allowed_mentions=NO_PING,
            mention_author=False,
            **kwargs,
        )
        return message.id

    def _webhook(self, target: Target) -> discord.Webhook:
        assert target.app_id is not None and target.token is not None
        return discord.Webhook.partial(target.app_id, target.token, client=self._client)

    def _message(self, target: Target, message_id: int) -> discord.PartialMessage:
        channel = self._client.get_partial_messageable(target.channel_id, guild_id=target.guild_id)
        return channel.get_partial_message(message_id)


def _original(target: Target) -> int:
    # "@original" also names an interaction's response, for a target stored without its id
    return target.message_id if target.message_id is not None else "@original"  # type: ignore[return-value]
