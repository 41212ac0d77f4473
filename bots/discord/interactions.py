"""Answering slash commands, buttons and the Edit form: acknowledge in time, then submit.

Discord shows "This interaction failed" unless it hears back within 3 seconds, so checks
that need no I/O come first (and refuse with a private reply), then the interaction is
deferred, and only then are files downloaded and the job stored. The deferred response is
the job's message: queued, generating, then the result.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

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
from core.config import Settings
from core.errors import UserFacingError
from core.jobs import Job, Request, Submitted
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

    # /imagine

    async def imagine(
        self, interaction: discord.Interaction, typed: forms.ImagineOptions, images: list[Any]
    ) -> None:
        if not await self._admit(interaction):
            return
        attachments: list[discord.Attachment] = [a for a in images if a is not None]
        options = typed.options()
        try:
            forms.precheck(
                typed.prompt,
                options,
                self.catalog,
                reference_images=len(attachments),
                max_prompt_chars=self.settings.max_prompt_chars,
            )
            files.check_sizes(attachments, self.settings.max_attachment_bytes)
        except UserFacingError as exc:
            await _reply_privately(interaction, exc.message)
            return
        target = await self._defer(interaction)
        if target is None:
            return
        request = self._request(interaction, target, text=typed.prompt, options=options)
        # deferred, and Discord will not send it again: kept in the store until its job
        # exists, so a crash while the files download cannot lose it
        held = Held.of("interaction", request, attachments) if attachments else None
        if held is not None:
            try:
                if not await self.service.hold(PLATFORM, held.key, held.to_dict()):
                    return  # another process has it, or its job exists already
            except Exception:
                log.exception("could not keep interaction %s", interaction.id)
                await _withdraw(interaction, messages.INTERNAL)
                return

        async def submit() -> Submitted:
            fetched = await files.fetch(self.http, attachments, self.settings)
            return await self.service.submit(
                replace(request, attachments=fetched), announce=self._announce(target)
            )

        await self._submit(interaction, submit)
        if held is not None:
            await self.service.release(held.key)

    async def resume(self, held: Held) -> None:
        """An /imagine deferred by a process that died while its files downloaded."""
        target = held.target
        try:
            fetched = await files.fetch(self.http, held.files, self.settings)
            await self.service.submit(held.with_files(fetched), announce=self._announce(target))
        except UserFacingError as exc:
            log.info("resumed interaction refused: %s %s", exc.message, exc.detail)
            await self._show(target, messages.failure(exc.message))
        except Exception:
            log.exception("resumed interaction %s failed", held.key)
            await self._show(target, messages.failure(messages.INTERNAL))
        await self.service.release(held.key)

    async def _show(self, target: Target, text: str) -> None:
        try:
            await self.delivery.show_text(target, text)
        except Exception as exc:
            log.warning("could not answer a resumed interaction: %r", exc)

    # buttons

    async def reroll(self, interaction: discord.Interaction, job_id: str) -> None:
        if not await self._admit(interaction):
            return
        target = await self._defer(interaction)
        if target is None:
            return

        async def submit() -> Submitted:
            return await self.service.reroll(
                job_id,
                platform=PLATFORM,
                tenant=tenant_of(interaction.guild_id, interaction.user.id),
                user_id=str(interaction.user.id),
                idempotency_key=interaction_key(interaction.id),
                target=target.to_dict(),
                announce=self._announce(target),
            )

        await self._submit(interaction, submit)

    async def upscale(self, interaction: discord.Interaction, job_id: str, size: str) -> None:
        if not await self._admit(interaction):
            return
        target = await self._defer(interaction)
        if target is None:
            return

        async def submit() -> Submitted:
            request = self._request(
                interaction,
                target,
                text=forms.UPSCALE_TEXT,
                kind="upscale",
                continue_job=job_id,
                options=Options(size=size),
            )
            return await self.service.submit(request, announce=self._announce(target))

        await self._submit(interaction, submit)

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
        target = await self._defer(interaction)
        if target is None:
            return

        async def submit() -> Submitted:
            request = self._request(
                interaction, target, text=change, kind="edit", continue_job=job_id
            )
            return await self.service.submit(request, announce=self._announce(target))

        await self._submit(interaction, submit)

    async def delete(self, interaction: discord.Interaction, job_id: str) -> None:
        if not await self._admit(interaction):
            return
        try:
            job = await self.service.job(job_id)
            if job is None:
                await _reply_privately(interaction, messages.UNKNOWN_JOB)
                return
            if job.user_id != str(interaction.user.id):
                await _reply_privately(interaction, messages.ONLY_REQUESTER)
                return
            await interaction.response.defer()
            await interaction.delete_original_response()
            log.info("result deleted by its requester", extra={"job_id": job.id})
        except discord.HTTPException as exc:
            _log_late(interaction, exc)
        except Exception:
            log.exception("deleting job=%s failed", job_id)
            await _say_failed(interaction)

    # /imagine-settings and /imagine-usage

    async def show_settings(
        self,
        interaction: discord.Interaction,
        *,
        model: str | None,
        aspect_ratio: str | None,
        size: str | None,
        reset: bool,
    ) -> None:
        if not await self._admit(interaction):
            return
        if not await _defer_privately(interaction):
            return
        tenant = tenant_of(interaction.guild_id, interaction.user.id)
        user = str(interaction.user.id)
        try:
            current = await self.service.user_defaults(PLATFORM, tenant, user)
            if reset:
                saved = await self.service.set_user_defaults(PLATFORM, tenant, user, Options())
                text = messages.settings_text(saved, self.catalog, saved=True)
            elif model or aspect_ratio or size:
                wanted = self._defaults_after(current, model, aspect_ratio, size)
                saved = await self.service.set_user_defaults(PLATFORM, tenant, user, wanted)
                text = messages.settings_text(saved, self.catalog, saved=True)
            else:
                text = messages.settings_text(current, self.catalog, saved=False)
        except UserFacingError as exc:
            text = messages.failure(exc.message)
        except Exception:
            log.exception("settings for user %s failed", user)
            text = messages.failure(messages.INTERNAL)
        await _edit_original(interaction, text)

    def _defaults_after(
        self, current: Options, model: str | None, aspect_ratio: str | None, size: str | None
    ) -> Options:
        """New defaults: what was given, over the saved ones the (new) model still makes."""
        kept = Options(model=current.model, aspect_ratio=current.aspect_ratio, size=current.size)
        if model is not None:
            chosen = self.catalog.get(model)
            kept = Options(
                aspect_ratio=kept.aspect_ratio
                if kept.aspect_ratio in chosen.aspect_ratios
                else None,
                size=kept.size if kept.size in chosen.sizes else None,
            )
        return Options(model=model, aspect_ratio=aspect_ratio, size=size).over(kept)

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

    async def _defer(self, interaction: discord.Interaction) -> Target | None:
        """Acknowledge with "thinking…"; None when another process answered it already."""
        try:
            answer = await interaction.response.defer(thinking=True)
        except discord.HTTPException as exc:
            _log_late(interaction, exc)
            return None
        return Target(
            channel_id=interaction.channel_id or 0,
            guild_id=interaction.guild_id,
            requester_id=interaction.user.id,
            upload_limit=interaction.filesize_limit,
            message_id=answer.message_id if answer is not None else None,
            app_id=interaction.application_id,
            token=interaction.token,
            token_expires_at=interaction.created_at.timestamp() + TOKEN_LIFETIME_SECONDS,
        )

    def _request(
        self,
        interaction: discord.Interaction,
        target: Target,
        *,
        text: str,
        kind: Any = "generate",
        continue_job: str | None = None,
        options: Options | None = None,
        attachments: tuple[Any, ...] = (),
    ) -> Request:
        return Request(
            platform=PLATFORM,
            tenant=tenant_of(interaction.guild_id, interaction.user.id),
            user_id=str(interaction.user.id),
            text=text,
            idempotency_key=interaction_key(interaction.id),
            kind=kind,
            continue_job=continue_job,
            attachments=attachments,
            options=options,
            target=target.to_dict(),
        )

    def _announce(self, target: Target) -> Announce:
        async def announce(job: Job, position: int) -> dict[str, Any] | None:
            try:
                await self.delivery.show_text(target, messages.queued(position))
            except Exception as exc:
                # the job runs anyway; its delivery posts a new message if this one is gone
                log.warning(
                    "could not show its place in the queue: %r", exc, extra={"job_id": job.id}
                )
            return None

        return announce

    async def _submit(
        self, interaction: discord.Interaction, submit: Callable[[], Awaitable[Submitted]]
    ) -> None:
        """Run a submission after deferring; a refusal replaces "thinking…" with a private note."""
        try:
            submitted = await submit()
        except UserFacingError as exc:
            log.info("interaction %s refused: %s %s", interaction.id, exc.message, exc.detail)
            await _withdraw(interaction, exc.message)
            return
        except Exception:
            log.exception("interaction %s failed", interaction.id)
            await _withdraw(interaction, messages.INTERNAL)
            return
        if not submitted.created:
            log.info(
                "interaction %s was submitted before; job=%s", interaction.id, submitted.job.id
            )


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
