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
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import discord

from bots.discord import components, messages
from bots.discord.target import Target
from core import images, wording
from core.errors import Undeliverable
from core.jobs import Job, Outcome, Progress
from core.service import Service

log = logging.getLogger(__name__)

LOGIN_TIMEOUT_SECONDS = 120.0
PROGRESS_SETTLE_SECONDS = 10.0
NO_PING = discord.AllowedMentions.none()
NO_IMAGE = "The model made no image this time; try again or change the prompt."


class _ImageBytes(io.BytesIO):
    """The bytes of an image to upload, read without a copy of them.

    aiohttp sizes an upload with `getbuffer()`, and a BytesIO made from bytes copies them
    when a buffer is asked of it: a 6.5 MB copy per 4K upload, held until it is sent, and
    not counted in the memory budget. The buffer here is a read-only view of the bytes."""

    def __init__(self, data: bytes) -> None:
        super().__init__(data)
        self._data = data

    def getbuffer(self) -> memoryview:  # type: ignore[override]
        return memoryview(self._data)

    def release(self) -> None:
        """Let go of the image's bytes once the upload is over.

        discord.py never closes a file object it was handed (the caller owns it), and its
        `File` leaves one in a reference cycle (it sets `fp.close` back to `fp`'s own bound
        method). Unreleased, every uploaded image stayed in memory until the garbage
        collector's next full pass, outside the memory budget: ~450 MB at the peak of a
        burst of 200 4K images. Dropping discord.py's `close` breaks the cycle."""
        vars(self).pop("close", None)
        self._data = b""
        super().close()


@dataclass
class Rendered:
    """A message body; files are kept as bytes so every attempt can send them afresh."""

    content: str = ""
    embeds: list[discord.Embed] = field(default_factory=list)
    files: list[tuple[str, bytes]] = field(default_factory=list)
    view: discord.ui.View | None = None
    # the uploads made for the attempts so far, released after each (release_files)
    _uploads: list[_ImageBytes] = field(default_factory=list, init=False, repr=False, compare=False)

    def discord_files(self) -> list[discord.File]:
        uploads = [(_ImageBytes(data), name) for name, data in self.files]
        self._uploads.extend(upload for upload, _ in uploads)
        return [discord.File(upload, filename=name) for upload, name in uploads]

    def release_files(self) -> None:
        """After an attempt, sent or not: the bytes of its uploads are let go at once."""
        while self._uploads:
            self._uploads.pop().release()

    def without_embeds(self) -> Rendered:
        """The same message with its cards written out as text (for when Embed Links is
        denied); the image shows as a plain attachment."""
        text = [self.content, *(messages.embed_as_text(embed) for embed in self.embeds)]
        content = messages.clip("\n".join(t for t in text if t), messages.CONTENT_MAX)
        return Rendered(content=content, files=self.files, view=self.view)

    def edit_fields(self) -> dict[str, Any]:
        return {
            "content": self.content,
            "embeds": self.embeds,
            "attachments": self.discord_files(),
            "view": self.view,
            "allowed_mentions": NO_PING,
        }

    def send_fields(self) -> dict[str, Any]:
        fields: dict[str, Any] = {
            "content": self.content or None,
            "embeds": self.embeds,
            "files": self.discord_files(),
            "allowed_mentions": NO_PING,
        }
        if self.view is not None:
            fields["view"] = self.view
        return fields


Send = Callable[[Rendered], Awaitable[int]]


class _Gone(Exception):
    """The place no longer exists (a deleted message, a dead token): try the next one."""


class _MissingPermission(Exception):
    """Discord refused the message for a permission the bot lacks in that channel."""


class _CannotPost(Exception):
    def __init__(self, permission: str) -> None:
        super().__init__(f"the bot lacks {permission}")
        self.permission = permission


# Discord's JSON error codes that say why a message could not be posted
UNKNOWN_MESSAGE = 10008
UNKNOWN_WEBHOOK = 10015
MISSING_ACCESS = 50001
CANNOT_DM = 50007
MISSING_PERMISSIONS = 50013
_CAUSES = {
    UNKNOWN_MESSAGE: "the message was deleted",
    UNKNOWN_WEBHOOK: "the interaction's webhook is gone",
    MISSING_ACCESS: "the bot cannot see the channel (Missing Access)",
    CANNOT_DM: "the user does not take DMs from the bot",
    MISSING_PERMISSIONS: "a permission is denied to the bot in the channel",
}


def _cause(exc: discord.HTTPException) -> str:
    if exc.status == 401:
        return "the token was refused (an interaction's lasts 15 minutes)"
    return _CAUSES.get(exc.code, f"HTTP {exc.status}, code {exc.code}: {exc.text[:200]}")


async def _attempt(send: Send, rendered: Rendered) -> int:
    """One try at one place, its refusal sorted into what the caller does next."""
    try:
        return await send(rendered)
    except discord.Forbidden as exc:
        if exc.code == MISSING_PERMISSIONS:
            raise _MissingPermission from None
        if exc.code == MISSING_ACCESS:
            raise _CannotPost("View Channel") from None
        raise _Gone(_cause(exc)) from None
    except discord.NotFound as exc:
        raise _Gone(_cause(exc)) from None
    except discord.HTTPException as exc:
        if exc.status == 401:  # the token died early
            raise _Gone(_cause(exc)) from None
        raise
    finally:
        rendered.release_files()


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
        view: discord.ui.View | None = components.progress_view(job.id)
        if update.state == "generating":
            text = messages.generating(update.elapsed_seconds)
        elif update.state == "cancelling":
            text, view = f"✖️ {wording.CANCELLING}", None
        else:
            text = messages.queued(update.position)
        # an edit on its way must land before the result's edit, never after it
        target = Target.from_dict(job.target)
        task = asyncio.ensure_future(self.show_text(target, text, view=view))
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

    async def show_text(
        self, target: Target, text: str, *, view: discord.ui.View | None = None
    ) -> None:
        """Replace the text of the job's message (queued, generating; with `view`, its
        buttons, else none); no fallback."""
        await self.show(target, content=text, view=view)

    async def show(
        self,
        target: Target,
        *,
        content: str = "",
        embeds: list[discord.Embed] | None = None,
        view: discord.ui.View | None = None,
    ) -> None:
        """Replace the response's message: text, cards and buttons (none unless given)."""
        await self._rest_ready()
        fields: dict[str, Any] = {
            "content": content,
            "embeds": embeds or [],
            "allowed_mentions": NO_PING,
            "view": view,
        }
        if target.token_usable(time.time()):
            await self._webhook(target).edit_message(_original(target), **fields)
        elif target.message_id is not None and target.bot_can_post:
            await self._message(target, target.message_id).edit(**fields)

    async def _render(self, job: Job, outcome: Outcome, target: Target) -> Rendered:
        if not outcome.ok:
            return Rendered(
                content=messages.failure(outcome.error or NO_IMAGE),
                view=components.failure_view(job.id),
            )
        limit = messages.display_limit(target.upload_limit)
        files: list[tuple[str, bytes]] = []
        notes: list[str] = []
        # several images of one request show one image each (the first of each answer)
        shown = (
            [v.outcome.images[:1] for v in outcome.variations if v.outcome.ok]
            if outcome.variations
            else [outcome.images]
        )
        for index, image in enumerate(image for each in shown for image in each):
            fitted = await images.fit_under(image.data, image.mime_type, limit)
            if fitted.note:
                log.info("image %d %s", index + 1, fitted.note, extra={"job_id": job.id})
                note = messages.fitted_note(fitted.note)
                if note not in notes:
                    notes.append(note)
            files.append((messages.image_filename(job, index, fitted.mime_type), fitted.data))
        if outcome.notice:
            notes.append(outcome.notice)
        catalog = self._service.catalog
        if outcome.variations:
            made = [v for v in outcome.variations if v.outcome.ok]
            embeds = messages.variation_embeds(
                job,
                outcome,
                catalog,
                image_names=[name for name, _ in files],
                failures=[
                    v.outcome.error or NO_IMAGE for v in outcome.variations if not v.outcome.ok
                ],
                notes=notes,
            )
            rows = [(v.job.id, await self._service.upscale_sizes(v.job)) for v in made]
            return Rendered(
                embeds=embeds, files=files, view=components.variations_view(rows, job.id)
            )
        embed = messages.result_embed(
            job, outcome, catalog, image_name=files[0][0] if files else None, notes=notes
        )
        view = components.result_view(job.id, await self._service.upscale_sizes(job))
        return Rendered(embeds=[embed], files=files, view=view)

    async def _put(self, target: Target, rendered: Rendered) -> int:
        """Show `rendered` in the job's message, or the next place that can take it: the
        same message edited with the bot's token (the interaction's may die early), a
        follow-up while the token lasts, a new message where the bot may post, and last
        the requester's DMs. Each place gets the message without its card, then without
        its image, before it is given up (a channel may deny Embed Links or Attach Files)."""
        places: list[tuple[str, Send]] = []
        token = target.token_usable(time.time())
        if token:
            places.append(("the command's answer", partial(self._edit_original, target)))
        if target.bot_can_post and target.message_id is not None:
            places.append(("the job's message", partial(self._edit_message, target)))
        if token:
            places.append(("a follow-up", partial(self._follow_up, target)))
        if target.bot_can_post:
            places.append(("a new message", partial(self._post_new, target)))
        reason = messages.LATE if not target.bot_can_post else messages.GONE_HERE
        for where, send in places:
            try:
                return await self._fitted(target, rendered, send, where)
            except _Gone as exc:
                log.warning("%s is out of reach (%s)", where, exc)
            except _CannotPost as exc:
                log.warning("cannot post %s: %s", where, exc)
                reason = messages.cannot_post(exc.permission)
                break
        return await self._direct_message(target, rendered, reason)

    async def _fitted(self, target: Target, rendered: Rendered, send: Send, where: str) -> int:
        """Send the whole message; without its card when Embed Links is denied; without its
        image when Attach Files is, saying so, with the image sent to the requester's DMs."""
        try:
            return await _attempt(send, rendered)
        except _MissingPermission:
            if not rendered.files and not rendered.embeds:
                raise _CannotPost("Send Messages") from None
        plain = rendered.without_embeds()
        if rendered.embeds:
            try:
                message_id = await _attempt(send, plain)
            except _MissingPermission:
                pass
            else:
                log.warning("%s: the bot lacks Embed Links; sent the image without its card", where)
                return message_id
        if not rendered.files:
            raise _CannotPost("Send Messages")
        log.warning("%s: the bot lacks Attach Files; sending the image by DM", where)
        in_dm = await self._direct_message_quietly(target, rendered, messages.NOT_ATTACHED_HERE)
        note = Rendered(
            content=messages.clip(
                f"{plain.content}\n\n{messages.not_attached(sent_by_dm=in_dm is not None)}",
                messages.CONTENT_MAX,
            ),
            view=rendered.view,
        )
        if in_dm is None:
            try:
                return await _attempt(send, note)
            except _MissingPermission:
                raise _CannotPost("Attach Files") from None
        # the image is delivered: the note here is a courtesy, never a reason to send again
        try:
            return await _attempt(send, note)
        except Exception as exc:
            log.warning("%s: could not say the image went by DM: %r", where, exc)
            return in_dm

    async def _edit_original(self, target: Target, rendered: Rendered) -> int:
        message = await self._webhook(target).edit_message(
            _original(target), **rendered.edit_fields()
        )
        return message.id

    async def _follow_up(self, target: Target, rendered: Rendered) -> int:
        message = await self._webhook(target).send(wait=True, **rendered.send_fields())
        return message.id

    async def _edit_message(self, target: Target, rendered: Rendered) -> int:
        assert target.message_id is not None
        message = await self._message(target, target.message_id).edit(**rendered.edit_fields())
        return message.id

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
        message = await channel.send(
            reference=reference,  # type: ignore[arg-type]
            mention_author=False,
            **{**rendered.send_fields(), "content": content or None},
        )
        return message.id

    async def _direct_message(self, target: Target, rendered: Rendered, reason: str) -> int:
        """The result in the requester's DMs, with why it is there; raises when they do not
        take it (nothing else can reach them). Without buttons: the job belongs to the
        server, and a click in a DM would not find it."""
        try:
            channel = await self._client.create_dm(discord.Object(target.requester_id))
            lead = messages.in_dm_instead(
                target.channel_id, target.guild_id, reason, image=bool(rendered.files)
            )
            content = messages.clip(f"{lead}\n{rendered.content}".strip(), messages.CONTENT_MAX)
            fields = {**rendered.send_fields(), "content": content}
            fields.pop("view", None)
            message = await channel.send(**fields)
        except discord.HTTPException as exc:
            raise Undeliverable(f"{reason}, and no DM either ({_cause(exc)})") from None
        finally:
            rendered.release_files()
        log.info("delivered by DM instead: %s", reason)
        return message.id

    async def _direct_message_quietly(
        self, target: Target, rendered: Rendered, reason: str
    ) -> int | None:
        try:
            return await self._direct_message(target, rendered, reason)
        except Undeliverable as exc:
            log.warning("%s", exc)
            return None

    def _webhook(self, target: Target) -> discord.Webhook:
        assert target.app_id is not None and target.token is not None
        return discord.Webhook.partial(target.app_id, target.token, client=self._client)

    def _message(self, target: Target, message_id: int) -> discord.PartialMessage:
        channel = self._client.get_partial_messageable(target.channel_id, guild_id=target.guild_id)
        return channel.get_partial_message(message_id)


def _original(target: Target) -> int:
    # "@original" also names an interaction's response, for a target stored without its id
    return target.message_id if target.message_id is not None else "@original"  # type: ignore[return-value]
