"""Answering slash commands, buttons and the Edit form: acknowledge in time, then submit.

Discord shows "This interaction failed" unless it hears back within 3 seconds, so checks
that need no I/O come first (and refuse with a private reply), then the interaction is
held in the store and deferred (core's Intake), and only then are files downloaded and the
job stored. The deferred response is
the job's message: queued, generating, then the result.
"""

from __future__ import annotations

import logging
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, Literal

import aiohttp
import discord
import httpx

from bots.discord import components, files, forms, messages
from bots.discord.access import DENIED, DMS_OFF, AccessLists, is_allowed
from bots.discord.delivery import NO_PING, DiscordDelivery
from bots.discord.events import (
    PLATFORM,
    RecentIds,
    interaction_key,
    place_of,
    tenant_of,
)
from bots.discord.intake import Held
from bots.discord.target import TOKEN_LIFETIME_SECONDS, Target
from core import wording
from core.config import Settings
from core.errors import UserFacingError
from core.intake import Intake
from core.jobs import Job, Request
from core.options import Options
from core.service import Announce, Service

log = logging.getLogger(__name__)

ALREADY_ACKNOWLEDGED = 40060
UNKNOWN_INTERACTION = 10062


class Interactions:
    def __init__(
        self,
        settings: Settings,
        service: Service,
        intake: Intake,
        delivery: DiscordDelivery,
        access: AccessLists,
        http: httpx.AsyncClient,
        recent: RecentIds,
    ) -> None:
        self.settings = settings
        self.service = service
        self.catalog = service.catalog
        self.delivery = delivery
        self.access = access
        self.http = http
        self.recent = recent
        self.intake = intake

    # /imagine

    async def imagine(
        self, interaction: discord.Interaction, typed: forms.ImagineOptions, images: list[Any]
    ) -> None:
        await self._generate(interaction, typed, images, kind="generate")

    async def blend(
        self, interaction: discord.Interaction, typed: forms.ImagineOptions, images: list[Any]
    ) -> None:
        """/blend: two or more images made into one, with an optional prompt."""
        await self._generate(interaction, typed, images, kind="blend")

    async def _generate(
        self,
        interaction: discord.Interaction,
        typed: forms.ImagineOptions,
        images: list[Any],
        *,
        kind: Literal["generate", "blend"],
    ) -> None:
        """Checked (privately refused) before it is acknowledged, then taken in."""
        if not await self._admit(interaction):
            return
        attachments: list[discord.Attachment] = [a for a in images if a is not None]
        options = typed.options()
        try:
            if kind == "blend" and len(attachments) < 2:
                raise UserFacingError(wording.BLEND_NEEDS_TWO)
            forms.precheck(
                # a blend needs no words: core writes what it asks for
                typed.prompt or ("blend" if kind == "blend" else ""),
                options,
                self.catalog,
                reference_images=len(attachments),
                max_prompt_chars=self.settings.max_prompt_chars,
            )
            files.check_sizes(attachments, self.settings.max_attachment_bytes)
        except UserFacingError as exc:
            await _reply_privately(interaction, exc.message)
            return
        await self._take(
            interaction, text=typed.prompt, kind=kind, options=options, attachments=attachments
        )

    async def resume(self, held: Held) -> None:
        """An interaction acknowledged by a process that died before its job was stored."""
        target = held.target

        async def tell(message: str) -> None:
            await self.delivery.show_text(target, messages.failure(message))

        await self.intake.finish(held.key, lambda: self._submit(held, target), tell)

    # buttons

    async def reroll(self, interaction: discord.Interaction, job_id: str) -> None:
        if await self._admit(interaction):
            await self._take(interaction, text="", kind="reroll", continue_job=job_id)

    async def describe(self, interaction: discord.Interaction, image: discord.Attachment) -> None:
        """/describe: prompts that would make the image, each with a button that makes it."""
        if not await self._admit(interaction):
            return
        try:
            files.check_sizes([image], self.settings.max_attachment_bytes)
        except UserFacingError as exc:
            await _reply_privately(interaction, exc.message)
            return
        await self._take(interaction, text="", kind="describe", attachments=[image])

    async def imagine_suggestion(self, interaction: discord.Interaction, number: int) -> None:
        """A prompt Describe suggested, read from its card and made like an /imagine."""
        if not await self._admit(interaction):
            return
        message = interaction.message
        prompt = messages.suggestion(message.embeds if message else [], number)
        if prompt is None:
            await _reply_privately(interaction, messages.NO_SUGGESTION)
            return
        await self._take(interaction, text=prompt, kind="generate")

    async def vary(self, interaction: discord.Interaction, job_id: str) -> None:
        if await self._admit(interaction):
            # core says what a variation asks for, and makes as many as the image's request
            await self._take(interaction, text="", kind="vary", continue_job=job_id)

    async def upscale(self, interaction: discord.Interaction, job_id: str, size: str) -> None:
        if await self._admit(interaction):
            await self._take(
                interaction,
                text="",  # core says what an upscale asks for
                kind="upscale",
                continue_job=job_id,
                options=Options(size=size),
            )

    async def edit(self, interaction: discord.Interaction, job_id: str) -> None:
        if not await self._admit(interaction):
            return
        form = components.edit_form(job_id, self.settings.max_prompt_chars)
        try:
            await interaction.response.send_modal(form)
        except discord.HTTPException as exc:
            _log_late(interaction, exc)
        finally:
            # submissions are read from the raw interaction (they may come after a restart)
            form.stop()

    async def edit_submitted(self, interaction: discord.Interaction, job_id: str) -> None:
        if not await self._admit(interaction):
            return
        change = forms.form_values(interaction.data).get(forms.CHANGE_FIELD, "")  # type: ignore[arg-type]
        try:
            forms.precheck(
                change,
                Options(),
                self.catalog,
                reference_images=0,
                max_prompt_chars=self.settings.max_prompt_chars,
            )
        except UserFacingError as exc:
            await _reply_privately(interaction, exc.message)
            return
        await self._take(interaction, text=change, kind="edit", continue_job=job_id)

    async def delete(self, interaction: discord.Interaction, job_id: str) -> None:
        if not await self._admit(interaction):
            return
        tenant = tenant_of(interaction.guild_id, interaction.user.id)
        try:
            job = await self.service.job_for(PLATFORM, tenant, job_id)
            if job.user_id != str(interaction.user.id):
                await _reply_privately(interaction, messages.ONLY_REQUESTER)
                return
            await interaction.response.defer()
            await interaction.delete_original_response()
            log.info("result deleted by its requester", extra={"job_id": job.id})
        except UserFacingError as exc:
            await _reply_privately(interaction, exc.message)
        except discord.HTTPException as exc:
            _log_late(interaction, exc)
        except Exception:
            log.exception("deleting job=%s failed", job_id)
            await _say_failed(interaction)

    async def cancel(self, interaction: discord.Interaction, job_id: str) -> None:
        if not await self._admit(interaction):
            return
        tenant = tenant_of(interaction.guild_id, interaction.user.id)
        try:
            said = await self.service.cancel(PLATFORM, tenant, job_id, str(interaction.user.id))
        except UserFacingError as exc:
            await _reply_privately(interaction, exc.message)
            return
        except Exception:
            log.exception("cancelling job=%s failed", job_id)
            await _say_failed(interaction)
            return
        try:
            await interaction.response.send_message(said, ephemeral=True, allowed_mentions=NO_PING)
        except discord.HTTPException as exc:
            _log_late(interaction, exc)

    # /imagine-settings and /imagine-usage

    async def show_settings(
        self,
        interaction: discord.Interaction,
        *,
        model: str | None,
        aspect_ratio: str | None,
        size: str | None,
        reset: bool,
        n: int | None = None,
        scope: str = "me",
    ) -> None:
        """Someone's own defaults or, for members with Manage Server, the server's or this
        channel's (`scope`)."""
        if not await self._admit(interaction):
            return
        shared = scope in ("server", "channel")
        if shared and interaction.guild_id is None:
            await _reply_privately(interaction, messages.SHARED_DEFAULTS_IN_SERVERS)
            return
        if shared and not interaction.permissions.manage_guild:
            await _reply_privately(interaction, messages.ONLY_MANAGERS)
            return
        if not await _defer_privately(interaction):
            return
        tenant = tenant_of(interaction.guild_id, interaction.user.id)
        user = str(interaction.user.id)
        channel = defaults_channel(interaction)
        whose = channel if scope == "channel" else None
        changes = Options(model=model, aspect_ratio=aspect_ratio, size=size, n=n)
        service = self.service
        try:
            if reset or changes != Options():
                wanted = Options() if reset else changes
                if shared:
                    change = (
                        service.set_shared_defaults if reset else service.change_shared_defaults
                    )
                    await change(PLATFORM, tenant, whose, wanted, user)
                elif reset:
                    await service.set_user_defaults(PLATFORM, tenant, user, wanted)
                else:
                    await service.change_user_defaults(PLATFORM, tenant, user, wanted)
            layers = await service.defaults(PLATFORM, tenant, user, channel)
            text = messages.settings_text(
                layers, self.catalog, saved=reset or changes != Options(), scope=scope
            )
        except UserFacingError as exc:
            text = messages.failure(exc.message)
        except Exception:
            log.exception("settings for user %s failed", user)
            text = messages.failure(messages.INTERNAL)
        await _edit_original(interaction, text)

    async def show_usage(self, interaction: discord.Interaction) -> None:
        if not await self._admit(interaction):
            return
        if not await _defer_privately(interaction):
            return
        tenant = tenant_of(interaction.guild_id, interaction.user.id)
        try:
            report = await self.service.usage_report(PLATFORM, tenant, str(interaction.user.id))
            now = datetime.now(UTC)
            month = datetime(now.year, now.month, 1, tzinfo=UTC)
            text = messages.usage_text(
                report, self.catalog, month, in_server=interaction.guild_id is not None
            )
        except Exception:
            log.exception("usage for user %s failed", interaction.user.id)
            text = messages.failure(messages.INTERNAL)
        await _edit_original(interaction, text)

    async def show_history(self, interaction: discord.Interaction, page: int) -> None:
        if not await self._admit(interaction):
            return
        if not await _defer_privately(interaction):
            return
        tenant = tenant_of(interaction.guild_id, interaction.user.id)
        try:
            found = await self.service.history(PLATFORM, tenant, str(interaction.user.id), page)
            text = messages.history_text(found, self.catalog)
        except Exception:
            log.exception("history for user %s failed", interaction.user.id)
            text = messages.failure(messages.INTERNAL)
        await _edit_original(interaction, text)

    # the shared steps

    async def _admit(self, interaction: discord.Interaction) -> bool:
        """False (after telling the user why, privately) when this interaction is not ours."""
        if not self.recent.first_time(interaction_key(interaction.id)):
            log.info("interaction %s delivered again; ignored", interaction.id)
            return False
        if interaction.guild_id is None and not self.settings.discord_dms:
            await _reply_privately(interaction, DMS_OFF)
            return False
        channel_id = interaction.channel_id or 0
        place = place_of(interaction.user, interaction.guild_id, interaction.channel, channel_id)
        if not is_allowed(self.access, place):
            log.info("user %s refused in channel %s", interaction.user.id, channel_id)
            await _reply_privately(interaction, DENIED)
            return False
        return True

    async def _take(
        self,
        interaction: discord.Interaction,
        *,
        text: str,
        kind: Any = "generate",
        continue_job: str | None = None,
        options: Options | None = None,
        attachments: list[discord.Attachment] | None = None,
    ) -> None:
        """Core's Intake: held (with its files by URL) before the deferral answers Discord,
        then the files fetched and the job submitted; a refusal replaces "thinking…"."""
        target = _target(interaction)
        request = Request(
            platform=PLATFORM,
            tenant=tenant_of(interaction.guild_id, interaction.user.id),
            user_id=str(interaction.user.id),
            text=text,
            idempotency_key=interaction_key(interaction.id),
            kind=kind,
            continue_job=continue_job,
            options=options,
            target=target.to_dict(),
            channel=defaults_channel(interaction),
        )
        held = Held.of("interaction", request, attachments or [])

        async def acknowledge() -> bool:
            nonlocal target
            deferred = await _defer(interaction, target)
            if deferred is None:
                return False
            target = deferred
            return True

        async def tell(message: str) -> None:
            await _withdraw(interaction, message)

        await self.intake.take(
            held.key,
            held.to_dict(),
            acknowledge=acknowledge,
            work=lambda: self._submit(held, target),
            tell=tell,
        )

    async def _submit(self, held: Held, target: Target) -> None:
        fetched = await files.fetch(self.http, held.files, self.settings)
        request = replace(held.with_files(fetched), target=target.to_dict())
        if request.kind == "describe":
            prompts = await self.service.describe(request)
            await self.delivery.show(
                target,
                embeds=[messages.described_embed(prompts, request.user_id)],
                view=components.suggestions_view(len(prompts)),
            )
            return
        submitted = await self.service.submit(request, announce=self._announce(target))
        if not submitted.created:
            log.info("%s was submitted before; job=%s", held.key, submitted.job.id)

    def _announce(self, target: Target) -> Announce:
        async def announce(job: Job, position: int) -> dict[str, Any] | None:
            try:
                await self.delivery.show_text(
                    target, messages.queued(position), view=components.progress_view(job.id)
                )
            except Exception as exc:
                # the job runs anyway; its delivery posts a new message if this one is gone
                log.warning(
                    "could not show its place in the queue: %r", exc, extra={"job_id": job.id}
                )
            return None

        return announce


async def _reply_privately(interaction: discord.Interaction, text: str) -> None:
    try:
        if interaction.response.is_done():
            await interaction.followup.send(
                messages.failure(text), ephemeral=True, allowed_mentions=NO_PING
            )
        else:
            await interaction.response.send_message(
                messages.failure(text), ephemeral=True, allowed_mentions=NO_PING
            )
    except discord.HTTPException as exc:
        _log_late(interaction, exc)


def defaults_channel(interaction: discord.Interaction) -> str | None:
    """The channel whose defaults apply: a thread's parent, where the thread was opened."""
    parent = getattr(interaction.channel, "parent_id", None)
    channel = parent or interaction.channel_id
    return str(channel) if channel else None


def _target(interaction: discord.Interaction) -> Target:
    """Where the answer goes: the interaction's own response, through its webhook."""
    return Target(
        channel_id=interaction.channel_id or 0,
        guild_id=interaction.guild_id,
        requester_id=interaction.user.id,
        upload_limit=interaction.filesize_limit,
        app_id=interaction.application_id,
        token=interaction.token,
        token_expires_at=interaction.created_at.timestamp() + TOKEN_LIFETIME_SECONDS,
        bot_can_post=_bot_can_post(interaction),
    )


def _bot_can_post(interaction: discord.Interaction) -> bool:
    """Whether the bot itself may post where the interaction happened: in a server that
    installed the app, or in its own DM with the user; not where only a user installed it
    (whoever clicks a button there)."""
    return interaction.is_guild_integration() or interaction.context.dm_channel


async def _defer(interaction: discord.Interaction, target: Target) -> Target | None:
    """Acknowledge with "thinking…"; None when the interaction expired unanswered. One
    another process acknowledged already is this one's to finish all the same: that
    process found it held here and left the work to it."""
    try:
        try:
            answer = await interaction.response.defer(thinking=True)
        except (aiohttp.ServerDisconnectedError, aiohttp.ClientOSError) as exc:
            # a kept-alive connection the other end closed just as it was reused: once more
            # (if the first did arrive, Discord answers "already acknowledged", taken below)
            log.info("interaction %s: deferring again after %r", interaction.id, exc)
            answer = await interaction.response.defer(thinking=True)
    except discord.HTTPException as exc:
        _log_late(interaction, exc)
        return target if exc.code == ALREADY_ACKNOWLEDGED else None
    if answer is not None and answer.message_id is not None:
        return target.with_message(answer.message_id)
    return target


async def _defer_privately(interaction: discord.Interaction) -> bool:
    try:
        await interaction.response.defer(ephemeral=True, thinking=True)
    except discord.HTTPException as exc:
        _log_late(interaction, exc)
        return False
    return True


async def _edit_original(interaction: discord.Interaction, text: str) -> None:
    try:
        await interaction.edit_original_response(content=text, allowed_mentions=NO_PING)
    except discord.HTTPException as exc:
        _log_late(interaction, exc)


async def _withdraw(interaction: discord.Interaction, reason: str) -> None:
    """Take back the public "thinking…" message and tell the user why, privately."""
    try:
        await interaction.delete_original_response()
        await interaction.followup.send(
            messages.failure(reason), ephemeral=True, allowed_mentions=NO_PING
        )
    except discord.HTTPException:
        try:
            await interaction.edit_original_response(
                content=messages.failure(reason), allowed_mentions=NO_PING
            )
        except discord.HTTPException as exc:
            _log_late(interaction, exc)


async def _say_failed(interaction: discord.Interaction) -> None:
    await _reply_privately(interaction, messages.INTERNAL)


def _log_late(interaction: discord.Interaction, exc: discord.HTTPException) -> None:
    if exc.code == ALREADY_ACKNOWLEDGED:
        log.info("interaction %s was answered elsewhere; ignored", interaction.id)
    elif exc.code == UNKNOWN_INTERACTION:
        log.warning("interaction %s expired before it was answered", interaction.id)
    else:
        log.warning("interaction %s could not be answered: %s", interaction.id, exc)
