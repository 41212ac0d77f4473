"""The service's way back into Slack: the status message, its progress edits and the images."""

from __future__ import annotations

import asyncio
import logging
from collections import OrderedDict
from typing import Any

from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bots.slack import messages
from bots.slack.events import PLATFORM, message_link
from bots.slack.files import upload_images
from bots.slack.target import Target
from bots.slack.workspaces import Workspaces
from core.errors import UserFacingError
from core.jobs import Job, Outcome, Progress
from core.service import Service

log = logging.getLogger(__name__)

# The bot cannot post there: someone has to invite it (or it was removed).
NOT_A_MEMBER = frozenset({"not_in_channel", "channel_not_found"})
# Retrying a delivery cannot fix these; the service would only try five times in vain.
UNDELIVERABLE = NOT_A_MEMBER | {"is_archived", "restricted_action", "team_access_not_granted"}
STATUS_GONE = frozenset({"message_not_found", "cant_update_message"})
FILE_TITLE_CHARS = 80
REMEMBERED_JOBS = 10_000


class SlackDelivery:
    """Shows each job as one status message that is edited as the job moves on.

    The images go into the thread of that message (in a DM's main view, right after it):
    the thread is the conversation, so the next reply there continues from them. Every call
    goes with the token of the job's workspace (its tenant).
    """

    def __init__(self, service: Service, workspaces: Workspaces) -> None:
        self.service = service
        self.catalog = service.catalog
        self.workspaces = workspaces
        # One edit of a status message at a time, and none after the final one: a progress
        # edit still in flight when the job ends must not land over the result.
        self._locks: dict[str, asyncio.Lock] = {}
        self._finished: OrderedDict[str, None] = OrderedDict()
        self._edits: set[asyncio.Task[None]] = set()
        # file ids already shared for a job, so a retried delivery does not post them twice
        self._uploaded: dict[str, list[str]] = {}
        self._reposted: dict[str, str] = {}

    # the announce hook of Service.submit

    async def announce(self, job: Job, position: int) -> dict[str, Any]:
        """Post the status message; its ts becomes part of the job's target."""
        target = Target.of(job)
        client = await self.workspaces.client(job.tenant)
        try:
            posted = await client.chat_postMessage(
                channel=target.channel,
                thread_ts=target.thread_ts,
                unfurl_links=False,
                unfurl_media=False,
                **messages.queued(job, self.catalog, position),
            )
        except SlackApiError as exc:
            error = str(exc.response.get("error"))
            if error in NOT_A_MEMBER:
                raise UserFacingError(
                    messages.not_in_channel(await self._bot_name(job.tenant), target.channel),
                    detail=f"chat.postMessage: {error}",
                ) from None
            raise UserFacingError(
                messages.POST_FAILED, detail=f"chat.postMessage: {error}"
            ) from None
        except Exception as exc:
            raise UserFacingError(messages.POST_FAILED, detail=repr(exc)[:300]) from None
        ts = str(posted["ts"])
        try:
            await self._link(job, target.posted(ts))
        except Exception as exc:
            log.exception("could not link its status message", extra={"job_id": job.id})
            await self._show_quietly(
                client, target.channel, ts, messages.failed(job, self.catalog, messages.INTERNAL)
            )
            raise UserFacingError(messages.INTERNAL, detail=repr(exc)[:300]) from None
        return {"ts": ts}

    async def _link(self, job: Job, target: Target) -> None:
        assert target.status_key is not None
        await self.service.link_message(job, target.status_key)
        if target.thread_ts:
            # the thread's parent (a mention, say) leads to the conversation as well, which
            # is how a later reply there is known to be in one of the bot's threads
            parent = message_link(target.channel, target.thread_ts)
            if await self.service.job_for_message(PLATFORM, job.tenant, parent) is None:
                await self.service.link_message(job, parent)

    # Adapter

    async def progress(self, job: Job, update: Progress) -> None:
        target = Target.of(job)
        if target.ts is None or job.id in self._finished:
            return
        # shielded: cancelling the ticker must not cut an edit off half-way, or it could
        # still reach Slack after the final edit and hide the result
        edit = asyncio.create_task(self._edit_progress(job, target, update))
        self._edits.add(edit)
        edit.add_done_callback(self._edits.discard)
        await asyncio.shield(edit)

    async def _edit_progress(self, job: Job, target: Target, update: Progress) -> None:
        async with self._lock(job.id):
            if job.id in self._finished:
                return
            if update.state == "queued":
                message = messages.queued(job, self.catalog, update.position)
            elif update.state == "cancelling":
                message = messages.cancelling(job, self.catalog)
            else:
                message = messages.generating(job, self.catalog, update.elapsed_seconds)
            client = await self.workspaces.client(job.tenant)
            await client.chat_update(channel=target.channel, ts=target.ts, **message)

    async def deliver(self, job: Job, outcome: Outcome) -> list[str]:
        target = Target.of(job)
        async with self._lock(job.id):
            self._finish(job.id)
            try:
                keys = await self._deliver(job, outcome, target)
            except SlackApiError as exc:
                error = str(exc.response.get("error"))
                if error not in UNDELIVERABLE:
                    raise
                log.warning(
                    "cannot be shown in %s: %s", target.channel, error, extra={"job_id": job.id}
                )
                keys = [target.status_key] if target.status_key else []
        self._locks.pop(job.id, None)
        self._uploaded.pop(job.id, None)
        self._reposted.pop(job.id, None)
        return keys

    async def _deliver(self, job: Job, outcome: Outcome, target: Target) -> list[str]:
        client = await self.workspaces.client(job.tenant)
        linked = await self.service.message_keys(job)
        if target.ts is None:
            # a crash between posting the status message and storing it in the job: the
            # link made at once after posting still names it
            status = _status_key(linked, target)
            if status is not None:
                target = target.posted(status)
        if target.ts is None:
            # the status message was never recorded (a crash right after posting it)
            if job.id not in self._reposted:
                posted = await client.chat_postMessage(
                    channel=target.channel,
                    thread_ts=target.thread_ts,
                    **messages.generating(job, self.catalog, 0),
                )
                self._reposted[job.id] = str(posted["ts"])
            target = target.posted(self._reposted[job.id])
        assert target.ts is not None
        keys = [message_link(target.channel, target.ts)]
        if not outcome.ok:
            reason = outcome.error or messages.INTERNAL
            await self._show(
                client, target, messages.failed(job, self.catalog, reason, outcome.text)
            )
            return keys
        # each image with the job that made it: one, or each of several variations'
        made = [(v.job, v.outcome) for v in outcome.variations if v.outcome.ok] or [(job, outcome)]
        shared = [key.removeprefix("file:") for key in linked if key.startswith("file:")]
        if shared:
            # uploaded by an earlier attempt, perhaps in a process that has since died
            self._uploaded.setdefault(job.id, shared)
        if job.id not in self._uploaded:
            self._uploaded[job.id] = await upload_images(
                client,
                [image for _, shown in made for image in shown.images],
                channel=target.channel,
                thread_ts=target.results_thread,
                comment=messages.escape(outcome.text) if outcome.text else None,
                title=_file_title(job),
                stem=f"imagebot-{job.id[:8]}",
            )
        uploaded = iter(self._uploaded[job.id])
        for maker, shown in made:
            for file_id in [next(uploaded, None) for _ in shown.images]:
                if file_id is not None and f"file:{file_id}" not in linked:
                    # stored before the final edit, so a retry after a crash finds it; a
                    # reply to a variation's file continues from that variation
                    await self.service.link_message(maker, f"file:{file_id}")
                if file_id is not None and maker.id == job.id:
                    keys.append(f"file:{file_id}")
        await self._show(client, target, await self._done(job, outcome, target))
        return keys

    async def _done(self, job: Job, outcome: Outcome, target: Target) -> messages.Message:
        seconds = _took([v.job for v in outcome.variations] or [job])
        if outcome.variations:
            return messages.done_variations(
                job,
                self.catalog,
                outcome.variations,
                seconds=seconds,
                notice=outcome.notice,
                upscale_sizes=[await self.service.upscale_sizes(v.job) for v in outcome.variations],
            )
        return messages.done(
            job,
            self.catalog,
            seconds=seconds,
            notice=outcome.notice,
            upscale_sizes=await self.service.upscale_sizes(job),
            images_below=target.thread_ts is not None or not target.threaded,
        )

    async def _show(
        self, client: AsyncWebClient, target: Target, message: messages.Message
    ) -> None:
        """Edit the status message; when someone deleted it, post the news afresh."""
        assert target.ts is not None
        try:
            await client.chat_update(channel=target.channel, ts=target.ts, **message)
        except SlackApiError as exc:
            if exc.response.get("error") not in STATUS_GONE:
                raise
            await client.chat_postMessage(
                channel=target.channel, thread_ts=target.results_thread, **message
            )

    async def _show_quietly(
        self, client: AsyncWebClient, channel: str, ts: str, message: messages.Message
    ) -> None:
        try:
            await client.chat_update(channel=channel, ts=ts, **message)
        except Exception:
            log.warning("could not update the status message %s:%s", channel, ts, exc_info=True)

    # Delete

    async def delete(self, job: Job) -> None:
        """Remove the job's images and its status message."""
        target = Target.of(job)
        client = await self.workspaces.client(job.tenant)
        for key in await self.service.message_keys(job):
            if key.startswith("file:"):
                await self._quietly("files.delete", client.files_delete(file=key[5:]))
        if target.ts:
            await self._quietly(
                "chat.delete", client.chat_delete(channel=target.channel, ts=target.ts)
            )
        log.info("deleted by its requester", extra={"job_id": job.id})

    async def _quietly(self, what: str, call: Any) -> None:
        try:
            await call
        except SlackApiError as exc:
            # already gone, or not allowed: nothing a click can fix
            log.warning("%s failed: %s", what, exc.response.get("error"))

    # bookkeeping

    async def _bot_name(self, team: str) -> str:
        """The bot's name in the workspace, to say whom to invite."""
        try:
            return (await self.workspaces.bot(team)).user
        except Exception:
            log.warning("could not tell the bot's name in %s", team, exc_info=True)
            return "imagebot"

    def _lock(self, job_id: str) -> asyncio.Lock:
        return self._locks.setdefault(job_id, asyncio.Lock())

    def _finish(self, job_id: str) -> None:
        self._finished[job_id] = None
        if len(self._finished) > REMEMBERED_JOBS:
            self._finished.popitem(last=False)

    async def close(self) -> None:
        for edit in list(self._edits):
            edit.cancel()
        await asyncio.gather(*self._edits, return_exceptions=True)


def _took(jobs: list[Job]) -> float | None:
    """From the first start to the last end: how long the person waited for the images."""
    starts = [j.started_at for j in jobs if j.started_at]
    ends = [j.finished_at for j in jobs if j.finished_at]
    return max(ends) - min(starts) if starts and ends else None


def _file_title(job: Job) -> str:
    if job.kind == "upscale":
        return f"Upscaled to {job.options.size}"
    prompt = " ".join(job.prompt.split())
    return prompt if len(prompt) <= FILE_TITLE_CHARS else prompt[: FILE_TITLE_CHARS - 1] + "…"


def _status_key(linked: list[str], target: Target) -> str | None:
    """The ts of the status message among a job's linked messages (not its thread's parent)."""
    for key in linked:
        channel, _, ts = key.partition(":")
        if channel == target.channel and ts and ts != target.thread_ts:
            return ts
    return None
