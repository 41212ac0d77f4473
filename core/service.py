"""The use cases: submit a request, run it as a job, deliver the result, recover after a crash."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import time
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from core import describe as describing
from core import images, logs, metrics, quotas, wording
from core.catalog import Catalog, Model
from core.config import Settings
from core.conversations import StoredPart, Turn, build_history
from core.errors import StoreError, Undeliverable, UserFacingError
from core.gemini import (
    Content,
    GeminiClient,
    GeminiError,
    GenerationBlocked,
    ImageRequest,
    ImageResult,
    InlineImage,
    Part,
)
from core.jobs import (
    Adapter,
    Defaults,
    HistoryItem,
    HistoryPage,
    Job,
    Outcome,
    Progress,
    Request,
    ResultImage,
    Submitted,
    UsageReport,
    UsageSummary,
    Variation,
)
from core.options import Options, ResolvedOptions, check_prompt, parse, resolve
from core.store import JobResult, NewImage, NewJob, Store, StoredImage, image_hash
from core.store.jobs import JOBS_CHANNEL
from core.throttle import MemoryHold

log = logging.getLogger(__name__)

Announce = Callable[[Job, int], Awaitable[dict[str, Any] | None]]

# A job whose runs reached the image API this often is reported failed, not run again; a
# job that keeps being interrupted before any call (a crash loop) stops after MAX_CLAIMS.
MAX_PAID_RUNS = 3
MAX_CLAIMS = 10
RETENTION_EVERY_SECONDS = 3600.0
HISTORY_PAGE = 10  # images a page of /imagine history shows
MIN_DELIVERY_GRACE_SECONDS = 5.0
DAY = 86400.0
DELIVERY_ATTEMPTS = 5
TEXT_ONLY = (
    "The model answered in words but made no image: describe the picture you want and try again."
)
INTERNAL = "Something went wrong on my side while making this image; it has been logged."
UNDELIVERABLE = (
    "I made this but could not post it here after several tries (the reason is in the bot's "
    "log); ask whoever runs the bot to check its permissions in this conversation."
)


# what a button asks the model for when nobody typed anything
_SAID_FOR_YOU = {"upscale": wording.UPSCALE_PROMPT, "vary": wording.VARY_PROMPT}


class Service:
    def __init__(
        self,
        settings: Settings,
        catalog: Catalog,
        store: Store,
        gemini: GeminiClient,
        *,
        owner: str | None = None,
        delivery_backoff_seconds: float = 1.0,
    ) -> None:
        self.settings = settings
        self.catalog = catalog
        self.store = store
        self.gemini = gemini
        self.owner = owner or f"{uuid.uuid4().hex[:12]}"
        self._adapters: dict[str, Adapter] = {}
        self._resumable: set[str] = set()
        self._tenant_nouns: dict[str, str] = {}
        self._resumers: dict[str, Callable[[dict[str, Any]], Awaitable[None]]] = {}
        self.limits = quotas.Limits(
            daily_per_user=settings.daily_images_per_user,
            daily_per_tenant=settings.daily_images_per_workspace,
            monthly_budget_usd=settings.monthly_budget_usd,
            in_flight_per_user=settings.max_jobs_per_user,
            in_flight_total=settings.max_jobs_in_flight,
        )
        # workers wait for a wake-up when nothing is queued for them: a job queued here, or
        # (PostgreSQL) one another process published. Each wake-up sets the event workers
        # took before they looked, so none sent in between is missed.
        self._woken = asyncio.Event()
        self._announcing: set[str] = set()  # stored, not yet shown: not to be run yet
        # takes a job whenever the image API has room for one (core.throttle), and runs it
        # in a task of its own
        self._dispatcher: asyncio.Task[None] | None = None
        self._jobs: set[asyncio.Task[None]] = set()  # jobs being generated
        # jobs taken whose first API call has not yet reached its model's limit, and the
        # model id each will send: they count against the limit's room, so no more are
        # taken than it has
        self._starting: dict[str, str] = {}
        # set while no job is starting: progress edits wait for it, so that a burst's calls
        # reach the API before its "Generating…" cards are edited
        self._started = asyncio.Event()
        self._started.set()
        self._draining = False
        self._abandoned = False
        # jobs this process is advancing (queued here, running, or being delivered): the
        # only ones whose leases it renews
        self._active: set[str] = set()
        self._running: set[str] = set()  # claimed by a worker here, result not yet stored
        self._delivering: set[str] = set()
        # variations being looked at for delivery: a lock each, and how many use it
        self._group_locks: dict[str, tuple[asyncio.Lock, int]] = {}
        # held requests whose work this process is doing: the only holds it renews
        self._holding: set[str] = set()
        # work the store refused, done again once it takes writes: runs to queue again,
        # results to store, deliveries to record
        self._requeue_later: set[str] = set()
        self._unsaved: dict[str, tuple[Job, JobResult]] = {}
        self._unrecorded: dict[str, tuple[Job, list[str]]] = {}
        self._unreleased: set[str] = set()  # held requests answered, to let go of
        self._unfailed: dict[str, tuple[str, str]] = {}  # stored jobs to end failed
        self._upkeep: asyncio.Task[None] | None = None
        self._retention_due = 0.0  # time.monotonic() of the next retention pass
        self._deliveries: set[asyncio.Task[None]] = set()
        self._delivery_backoff = delivery_backoff_seconds

    # lifecycle

    def register(
        self,
        platform: str,
        adapter: Adapter,
        *,
        resumable: bool = True,
        tenant_noun: str = "workspace",
        resume: Callable[[dict[str, Any]], Awaitable[None]] | None = None,
    ) -> None:
        """Deliver jobs of `platform` through `adapter`; call before start().

        Jobs of a resumable platform that a dead process left behind are run and delivered
        here; those of a terminal session (not resumable) are closed as failed, since the
        person who asked is no longer there to see them. `tenant_noun` is what people call
        a tenant on this platform ("workspace", "server"), for limit messages. `resume`
        takes back a request held with hold() whose process died before storing it.
        """
        self._adapters[platform] = adapter
        self._tenant_nouns[platform] = tenant_noun
        if resume is not None:
            self._resumers[platform] = resume
        if resumable:
            self._resumable.add(platform)

    async def start(self) -> None:
        self._draining = False
        await self.store.database.listen(JOBS_CHANNEL, self._wake_soon)
        await self._take_over_expired()
        self.gemini.throttle.on_room(self._wake_soon)
        self._dispatcher = asyncio.create_task(self._dispatch(), name="imagebot-dispatcher")
        self._upkeep = asyncio.create_task(self._maintain(), name="imagebot-leases")

    async def stop(self) -> None:
        """Stop taking work, and hand what is only queued to the next process at once.
        Generations under way, and then their deliveries, get `shutdown_grace_seconds` in
        all (one cut off would be paid for again, a cut-off delivery shown twice); what is
        still open after that is handed back too."""
        if self._abandoned:
            return
        self._draining = True
        self.gemini.throttle.off_room(self._wake_soon)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.settings.shutdown_grace_seconds
        await self._stop_dispatching()
        queued = (
            self._active
            - self._running
            - self._delivering
            - {*self._unsaved, *self._unrecorded, *self._unfailed}
        )
        with contextlib.suppress(StoreError):
            await self.store.release(self.owner, queued, self._shared_platforms())
            self._active -= queued
        busy = list(self._jobs)
        if busy and self.settings.shutdown_grace_seconds > 0:
            log.info(
                "stopping: %d generation(s) under way get up to %g s to finish",
                len(busy),
                self.settings.shutdown_grace_seconds,
            )
            await asyncio.wait(busy, timeout=self.settings.shutdown_grace_seconds)
        for task in busy:
            task.cancel()
        await asyncio.gather(*busy, return_exceptions=True)
        if self._deliveries:
            # a delivery gets what is left of the grace, and at least a few seconds
            left = max(deadline - loop.time(), MIN_DELIVERY_GRACE_SECONDS)
            await asyncio.wait(list(self._deliveries), timeout=left)
        for task in list(self._deliveries):
            task.cancel()
        await asyncio.gather(*self._deliveries, return_exceptions=True)
        # leases were kept up until now, so no other process took a job that was finishing
        if self._upkeep is not None:
            self._upkeep.cancel()
            await asyncio.gather(self._upkeep, return_exceptions=True)
            self._upkeep = None
        try:
            # a last chance for what a fault held up; the next process delivers it
            await self._resume_after_store_fault(deliver=False)
            await self.store.release(self.owner, shared=self._shared_platforms())
        except StoreError as exc:
            log.error("stopping without handing work back (the database refuses writes): %s", exc)

    async def abandon(self) -> None:
        """Stop at once and hand nothing back: what a process killed with SIGKILL leaves
        behind. Its leases run out, and another process takes its work over."""
        self._abandoned = True
        tasks = [*self._jobs, *self._deliveries]
        if self._dispatcher is not None:
            tasks.append(self._dispatcher)
        if self._upkeep is not None:
            tasks.append(self._upkeep)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)

    def health(self) -> tuple[bool, dict[str, Any]]:
        """Whether this process can do its work, for /healthz: false while the database
        refuses writes, and why."""
        error = self.store.write_error
        if error is None:
            return True, {"ok": True}
        since = self.store.write_error_since or time.time()
        return False, {
            "ok": False,
            "database": f"cannot write: {error}",
            "failing_for_seconds": round(time.time() - since, 1),
            "waiting": sum(
                map(
                    len,
                    (
                        self._requeue_later,
                        self._unsaved,
                        self._unrecorded,
                        self._unreleased,
                        self._unfailed,
                    ),
                )
            ),
        }

    async def _maintain(self) -> None:
        interval = self.settings.lease_seconds / 3
        while True:
            await asyncio.sleep(interval)
            try:
                await self.upkeep()
            except StoreError:
                pass  # logged by the store when the fault began; tried again next round
            except Exception:
                log.exception("lease upkeep failed")

    async def upkeep(self) -> None:
        """One round of what runs every third of a lease: renew this process's leases (also
        the heartbeat that shows whether the database takes writes again), carry on with
        what a store fault held up, take over what dead processes left, and, hourly, apply
        retention."""
        faulty = self.store.write_error is not None
        await self.store.renew_leases(
            self.owner, self.settings.lease_seconds, list(self._active), list(self._holding)
        )
        if faulty:  # writes work again: workers that found the store failing look again
            self._wake_soon()
        await self._resume_after_store_fault()
        if self._draining:
            return
        await self._take_over_expired()
        with contextlib.suppress(StoreError):
            await self.store.measure()  # the size /metrics shows
        if time.monotonic() >= self._retention_due:
            self._retention_due = time.monotonic() + RETENTION_EVERY_SECONDS
            await self.apply_retention()

    async def apply_retention(self, now: float | None = None) -> int:
        """Clear conversations and images older than the settings keep them, and the data
        of tenants whose deletion fell due (an uninstalled workspace); returns the rows
        removed. Runs hourly in upkeep."""
        now = self.store.now() if now is None else now
        conversations, images = (
            self.settings.keep_conversations_days,
            self.settings.keep_images_days,
        )
        removed = await self.store.forget(
            now - conversations * DAY if conversations else None,
            now - images * DAY if images else None,
        )
        if removed:
            log.info("retention removed %d rows older than the settings keep them", removed)
        # the data of workspaces that uninstalled the app and did not come back in time
        gone = await self.store.forget_tenants(now)
        if gone:
            log.info("retention removed %d rows of workspaces that uninstalled the app", gone)
        return removed + gone

    async def _resume_after_store_fault(self, *, deliver: bool = True) -> None:
        """Carry on with what the store refused, now that it takes writes."""
        for job_id, (job, keys) in list(self._unrecorded.items()):
            await self.store.record_delivery(job, keys)
            del self._unrecorded[job_id]
            self._active.discard(job_id)
        for key in list(self._unreleased):
            await self.store.release_hold(key)
            self._unreleased.discard(key)
            self._holding.discard(key)
        for job_id, (message, detail) in list(self._unfailed.items()):
            await self.store.fail_open_job(
                job_id, message, detail, self.owner, self._lease, requester_gone=True
            )
            del self._unfailed[job_id]
            self._active.discard(job_id)
        for job_id, (job, result) in list(self._unsaved.items()):
            finished = await self.store.finish(job.id, self.owner, result)
            del self._unsaved[job_id]
            log.info("stored a result kept while the database failed", extra={"job_id": job_id})
            if finished is not None and deliver:
                self._deliver_later(finished)
            else:
                self._active.discard(job_id)
        for job_id in list(self._requeue_later):
            await self.store.requeue(job_id, self.owner)
            self._requeue_later.discard(job_id)
            if not self._draining:
                self._enqueue(job_id)

    def _enqueue(self, job_id: str) -> None:
        """A queued job of this process's, ready to run: a worker here claims it."""
        self._active.add(job_id)
        self._wake_soon()

    def _wake_soon(self) -> None:
        woken, self._woken = self._woken, asyncio.Event()
        woken.set()

    async def _stop_dispatching(self) -> None:
        if self._dispatcher is not None:
            self._dispatcher.cancel()
            await asyncio.gather(self._dispatcher, return_exceptions=True)
            self._dispatcher = None

    async def _dispatch(self) -> None:
        while not self._draining:
            for job in await self._next_jobs():
                model = self.catalog.find(job.options.model or "")
                if model is not None:
                    self._starting[job.id] = model.wire_id(self.gemini.provider.name)
                    self._started.clear()
                task = asyncio.create_task(self._work(job), name=f"imagebot-job-{job.id}")
                self._jobs.add(task)
                task.add_done_callback(self._jobs.discard)

    async def _work(self, job: Job) -> None:
        self._active.add(job.id)
        try:
            with logs.job_context(job.id):
                await self._run(job)
        except Exception:
            log.exception("crashed the job's task", extra={"job_id": job.id})
        finally:
            self._now_started(job.id)
            self._jobs.discard(asyncio.current_task())  # type: ignore[arg-type]
            self._wake_soon()  # room for another

    def _now_started(self, job_id: str) -> None:
        self._starting.pop(job_id, None)
        if not self._starting:
            self._started.set()

    def _room(self) -> tuple[int, list[str]]:
        """How many jobs to take now, and every name of each model whose limit has no room
        for one more: as many as the model with the least room left takes (a job's model
        is known only once it is taken), within the hard maximum."""
        throttle = self.gemini.throttle
        provider = self.gemini.provider.name
        starting = Counter(self._starting.values())
        full, rooms = [], []
        for model in self.catalog.models:
            sent = model.wire_id(provider)
            room = throttle.limit_for(sent).room - starting[sent]
            if room <= 0:
                full.extend(model.names())
            else:
                rooms.append(room)
        free = self.settings.max_concurrency - len(self._jobs)
        return max(1, min([free, *rooms])), full

    async def _next_jobs(self) -> list[Job]:
        """The next jobs to run here, waiting while there are none or no room for them: the
        hard maximum of jobs at once, and each model's limit. Jobs still being shown
        (their announce under way), and jobs to be ended failed once the store takes
        writes, are not ready to run."""
        while True:
            woken = self._woken
            if len(self._jobs) >= self.settings.max_concurrency:
                await woken.wait()  # a job's end wakes it
                continue
            count, full = self._room()
            try:
                jobs = await self.store.claim_jobs(
                    self.owner,
                    self._shared_platforms(),
                    self.settings.lease_seconds,
                    count,
                    not_ready=[*self._announcing, *self._unfailed],
                    skip_models=full,
                )
            except StoreError:
                jobs = []  # upkeep tries the store again; so does the next wake-up
            except Exception:
                # the dispatcher must outlive any one failure (a deadlock, a timeout)
                log.exception("could not look for the next job")
                jobs = []
            if jobs:
                return jobs
            # a long timeout only in case a notification was lost with its connection
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.lease_seconds):
                    await woken.wait()

    @property
    def _lease(self) -> float:
        return self.settings.lease_seconds

    def _shared_platforms(self) -> list[str]:
        """Platforms whose published jobs and held requests this process may take on: those
        it can deliver to and that outlive it (not the terminal, whose person is only here)."""
        return [p for p in self._adapters if p in self._resumable]

    async def _take_over_expired(self) -> None:
        for payload in await self.store.take_over_held(
            self._shared_platforms(), self.owner, self.settings.lease_seconds
        ):
            platform = str(payload.get("platform", ""))
            resume = self._resumers.get(platform)
            key = payload.get("key")
            if resume is not None:
                log.info("resuming a request acknowledged before a restart on %s", platform)
                if isinstance(key, str):
                    self._holding.add(key)
                self._resume_later(resume(payload["request"]), key)
        for job in await self.store.take_over_expired(
            list(self._adapters), self.owner, self.settings.lease_seconds
        ):
            if job.platform not in self._resumable:
                await self.store.fail_open_job(
                    job.id,
                    "This request was interrupted when imagebot stopped.",
                    "terminal session ended",
                    self.owner,
                    self._lease,
                    requester_gone=True,
                )
            elif job.finished:
                log.info("re-delivering after a restart", extra={"job_id": job.id})
                self._deliver_later(job)
            else:
                log.info(
                    "resuming after a restart (run %d)", job.attempts + 1, extra={"job_id": job.id}
                )
                self._enqueue(job.id)

    # submitting

    async def hold(self, platform: str, key: str, request: dict[str, Any]) -> bool:
        """Keep an acknowledged request (as the platform sent it) until submit() stores its
        job under `key`: if this process dies in between, say while attachments download,
        another process hands it back to the `resume` given to register().

        False when the request is already held or has a job: the caller then stops.
        """
        held = await self.store.hold(
            platform,
            key,
            {"platform": platform, "key": key, "request": request},
            self.owner,
            self.settings.lease_seconds,
        )
        if held:
            self._holding.add(key)
        return held

    async def release(self, key: str) -> None:
        """The held request has been answered: its job is stored, or the user was told why
        not. Call it only when that work ended, not from a `finally`: a shutdown that
        cancels the work must leave the request held for the next process. A release the
        store refuses is tried again once it takes writes."""
        try:
            await self.store.release_hold(key)
        except StoreError:
            self._unreleased.add(key)
            return
        except Exception:
            log.warning("could not let go of held request %s", key, exc_info=True)
        self._holding.discard(key)

    async def submit(self, request: Request, announce: Announce | None = None) -> Submitted:
        """Check a request and persist it as a queued job; nothing is generated here.

        Raises UserFacingError, before anything is stored, for anything wrong with it.
        `announce(job, position)` runs once the job is stored and before it can run: the
        adapter shows the request (a "queued" message) and may return more delivery target
        (that message's id) to store with the job. If it raises, the job ends failed. A
        re-roll names the job it repeats in `continue_job`.
        """
        if request.kind == "reroll":
            return await self._reroll(request, announce)
        existing = await self.store.job_by_key(request.idempotency_key)
        if existing is not None:
            return Submitted(existing, created=False, position=0)

        text = request.text
        if not text.strip() and request.kind in _SAID_FOR_YOU:
            text = _SAID_FOR_YOU[request.kind]
        prompt, typed = parse(text)
        if request.options is not None:
            typed = request.options.over(typed)
        if request.kind == "upscale":
            typed = replace(typed, n=1)  # the one image picked, larger
        parent, thread_key, inherited = await self._place(request)
        if request.kind == "blend":
            prompt = await self._blend_prompt(request, prompt, parent)
        saved = await self.defaults(
            request.platform, request.tenant, request.user_id, request.channel
        )
        defaults = inherited.over(saved.effective)
        resolved = resolve(typed, self.catalog, defaults, len(request.attachments))
        prompt = check_prompt(
            prompt, self.settings.max_prompt_chars, has_images=bool(request.attachments)
        )
        await self._check_limits(request, resolved)
        checked = [
            await images.check_reference(
                a.data,
                name=a.name,
                max_bytes=self.settings.max_attachment_bytes,
                max_pixels=self.settings.max_image_pixels,
            )
            for a in request.attachments
        ]
        new_images = [
            NewImage(c.data, c.mime_type, c.width, c.height, image_hash(c.data)) for c in checked
        ]
        parts = [StoredPart(text=prompt)] + [
            StoredPart(image_sha256=i.sha256, mime_type=i.mime_type) for i in new_images
        ]
        return await self._create(
            request, prompt, resolved, thread_key, parent, parts, new_images, announce
        )

    async def _reroll(self, request: Request, announce: Announce | None) -> Submitted:
        """The job `continue_job` names, again: a new image made beside the first (a sibling
        turn). The request's platform and tenant are where the click came from: never
        another tenant's job."""
        if request.continue_job is None:
            raise ValueError("a re-roll names the job it repeats in continue_job")
        original = await self.job_for(request.platform, request.tenant, request.continue_job)
        existing = await self.store.job_by_key(request.idempotency_key)
        if existing is not None:
            return Submitted(existing, created=False, position=0)
        request = replace(request, text=original.prompt, continue_job=None)
        resolved = resolve(Options(n=1), self.catalog, original.options)
        await self._check_limits(request, resolved)
        thread_key = await self.store.thread_key(original.conversation_id)
        assert thread_key is not None
        parent = await self.store.turn(original.user_turn_id)
        return await self._create(
            request, original.prompt, resolved, thread_key, parent, None, [], announce
        )

    async def describe(self, request: Request) -> list[str]:
        """Prompts that would make the one image attached to `request` again, read by the
        text model GEMINI_DESCRIBE_MODEL: words only, no image made, no job stored. Raises
        UserFacingError for anything wrong with the image or the answer."""
        if len(request.attachments) != 1:
            raise UserFacingError(wording.DESCRIBE_NEEDS_ONE)
        [attachment] = request.attachments
        checked = await images.check_reference(
            attachment.data,
            name=attachment.name,
            max_bytes=self.settings.max_attachment_bytes,
            max_pixels=self.settings.max_image_pixels,
        )
        question = ImageRequest(
            model_id=self.settings.gemini_describe_model,
            contents=(
                Content(
                    "user",
                    (
                        Part(image=InlineImage(checked.mime_type, checked.data)),
                        Part(text=describing.INSTRUCTION),
                    ),
                ),
            ),
            answer_schema=describing.ANSWER_SCHEMA,
        )
        try:
            answer = await self.gemini.generate(question)
        except GenerationBlocked as exc:
            # the image model's words ("…finishing the picture") do not fit a description
            raise UserFacingError(wording.DESCRIBE_NOTHING, detail=exc.detail) from None
        except GeminiError as exc:
            raise UserFacingError(exc.message, detail=exc.detail) from None
        said = "\n".join(p.text for p in answer.parts if p.text)
        found = describing.suggestions(
            said, min(describing.PROMPT_CHARS, self.settings.max_prompt_chars)
        )
        log.info("described an image: %d prompts, %d tokens", len(found), answer.usage.total_tokens)
        if not found:
            raise UserFacingError(wording.DESCRIBE_NOTHING, detail=said[:300])
        return found

    async def upscale_sizes(self, job: Job) -> list[str]:
        """Sizes larger than the job's that its model makes: what Upscale may offer."""
        model = self.catalog.find(job.options.model or "")
        if model is None or not job.options.size or job.state != "succeeded":
            return []
        names = model.size_names
        current = names.index(job.options.size) if job.options.size in names else 0
        return [size for size in names[current + 1 :] if size in ("2K", "4K")]

    async def _create(
        self,
        request: Request,
        prompt: str,
        resolved: ResolvedOptions,
        thread_key: str,
        parent: Turn | None,
        parts: list[StoredPart] | None,
        new_images: list[NewImage],
        announce: Announce | None,
    ) -> Submitted:
        new_job = NewJob(
            id=uuid.uuid4().hex,
            idempotency_key=request.idempotency_key,
            kind=request.kind,
            platform=request.platform,
            tenant=request.tenant,
            user_id=request.user_id,
            prompt=prompt,
            options=resolved.as_options(),
            target=dict(request.target),
        )
        variations = [uuid.uuid4().hex for _ in range(resolved.count - 1)]
        job, created = await self.store.create_job(
            new_job,
            thread_key=thread_key,
            parent_turn_id=parent.id if parent else None,
            user_parts=parts,
            user_images=new_images,
            owner=self.owner,
            lease_seconds=self.settings.lease_seconds,
            variations=variations,
        )
        if not created:
            return Submitted(job, created=False, position=0)
        # queued and ours, but not to be run until shown (and their leases kept meanwhile)
        shown = [job.id, *variations]
        self._announcing.update(shown)
        self._active.update(shown)
        try:
            return await self._show_and_queue(job, variations, parent, resolved, announce)
        finally:
            self._announcing.difference_update(shown)

    async def _show_and_queue(
        self,
        job: Job,
        variations: list[str],
        parent: Turn | None,
        resolved: ResolvedOptions,
        announce: Announce | None,
    ) -> Submitted:
        """Show the request (its first job stands for all its variations), then let its
        jobs run."""
        shown = [job.id, *variations]
        if parent is not None:  # what it continues stays until it has run
            with contextlib.suppress(StoreError):  # only retention's bookkeeping
                await self.store.touch_images(_image_hashes(await self.store.path_to(parent.id)))
        position = await self.store.queue_position(job)
        if announce is not None:
            try:
                more = await announce(job, position)
            except Exception as exc:
                # the request could not be shown, so neither could its result
                failure = (
                    exc
                    if isinstance(exc, UserFacingError)
                    else UserFacingError(
                        "I could not post in this conversation, so I did not start the image.",
                        detail=repr(exc)[:500],
                    )
                )
                try:
                    for job_id in shown:
                        await self.store.fail_open_job(
                            job_id,
                            failure.message,
                            failure.detail,
                            self.owner,
                            self._lease,
                            requester_gone=True,
                        )
                        self._active.discard(job_id)
                except StoreError:
                    # stored already: kept from running, and ended once writes work
                    for job_id in shown:
                        self._unfailed[job_id] = (failure.message, failure.detail)
                raise failure from exc
            if more:
                try:
                    target = {**job.target, **more}
                    job = await self.store.update_target(job.id, target)
                    for job_id in variations:
                        await self.store.update_target(job_id, target)
                except StoreError:
                    # stored and shown: it runs, and its result is posted as a new message
                    log.warning("could not store where the request was shown", exc_info=True)
        for job_id in shown:
            # before it is published: a worker here may claim it the moment it is, and
            # keeps its lease from then on
            self._active.discard(job_id)
            if job.platform in self._resumable and await self._publish(job_id):
                self._wake_soon()  # any process may run it now, this one included
            else:
                self._enqueue(job_id)
        log.info(
            "queued kind=%s platform=%s model=%s size=%s n=%d position=%d",
            job.kind,
            job.platform,
            resolved.model.id,
            resolved.size,
            resolved.count,
            position,
            extra={"job_id": job.id},
        )
        return Submitted(job, created=True, position=position)

    async def _place(self, request: Request) -> tuple[Turn | None, str, Options]:
        """Where the request goes: its parent turn, its conversation and inherited options.

        `continue_job` and `reply_to` name the turn to continue from; with a `thread_key` as
        well, the thread is a straight line and the request follows its latest turn.
        """
        parent: Turn | None = None
        if request.continue_job is not None:
            job = await self._job_or_fail(request.continue_job)
            self._same_tenant(job, request.platform, request.tenant)
            if job.model_turn_id is None:
                raise UserFacingError("That request has no image to continue from yet.")
            parent = await self.store.turn(job.model_turn_id)
        elif request.reply_to is not None:
            parent = await self.store.turn_for_message(
                request.platform, request.tenant, request.reply_to
            )
            if parent is not None and request.thread_key is not None:
                parent = await self.store.latest_turn(parent.conversation_id)
        if parent is None and request.thread_key is not None:
            conversation = await self.store.conversation(
                request.platform, request.tenant, request.thread_key
            )
            if conversation is not None:
                conversation_id, cleared_at = conversation
                if cleared_at is not None:
                    raise UserFacingError(
                        f"This conversation is older than {self.settings.keep_conversations_days} "
                        "days and was cleared; start a new one with /imagine."
                    )
                parent = await self.store.latest_turn(conversation_id)
        if parent is not None:
            key = await self.store.thread_key(parent.conversation_id)
            assert key is not None
            earlier = await self.store.job_for_turn(parent.id)
            inherited = (
                Options(
                    model=earlier.options.model,
                    aspect_ratio=earlier.options.aspect_ratio,
                    size=earlier.options.size,
                    # Vary makes as many as the request it picks from
                    n=earlier.options.n if request.kind == "vary" else None,
                )
                if earlier
                else Options()
            )
            return parent, key, inherited
        return None, request.thread_key or f"new:{request.idempotency_key}", Options()

    async def _blend_prompt(self, request: Request, prompt: str, parent: Turn | None) -> str:
        """What a blend asks for: the images attached to it or, with none attached, the last
        two images of the conversation it continues (its history carries them already)."""
        what = wording.BLEND_PROMPT
        if len(request.attachments) < 2:
            earlier = 0
            if parent is not None and not request.attachments:
                path = await self.store.path_to(parent.id)
                earlier = sum(1 for turn in path for part in turn.parts if part.image_sha256)
            if earlier < 2:
                raise UserFacingError(wording.BLEND_NEEDS_TWO)
            what = wording.BLEND_LAST_TWO
        return f"{what}: {prompt}" if prompt else f"{what}."

    async def _check_limits(self, request: Request, resolved: ResolvedOptions) -> None:
        now = datetime.now(UTC)
        counts = await self.store.quota_counts(
            request.platform,
            request.tenant,
            request.user_id,
            quotas.day_start(now).timestamp(),
            quotas.month_start(now).timestamp(),
        )
        scope = f"this {self._tenant_nouns.get(request.platform, 'workspace')}"
        price = resolved.model.price(resolved.size)
        quotas.check(self.limits, counts, price, now, scope, resolved.count)

    def _same_tenant(self, job: Job, platform: str, tenant: str) -> None:
        if job.platform != platform or job.tenant != tenant:
            raise UserFacingError(
                wording.other_tenant(self._tenant_nouns.get(platform, "workspace"))
            )

    async def _job_or_fail(self, job_id: str) -> Job:
        job = await self.store.job(job_id) if job_id else None
        if job is None:
            raise UserFacingError(wording.GONE, detail=f"no job {job_id!r}")
        return job

    async def job_for(self, platform: str, tenant: str, job_id: str) -> Job:
        """The job a button or form names, checked against where the click came from;
        raises UserFacingError when it is gone or belongs to another tenant."""
        job = await self._job_or_fail(job_id)
        self._same_tenant(job, platform, tenant)
        return job

    # running

    async def _publish(self, job_id: str) -> bool:
        """Hand a queued job to whichever process is free first (a shared queue only)."""
        try:
            return await self.store.publish(job_id, self.owner)
        except StoreError:
            return False  # it stays ours, and runs here

    async def _run(self, job: Job) -> None:
        try:
            if job.paid_runs >= MAX_PAID_RUNS or job.attempts > MAX_CLAIMS:
                failed = await self.store.fail_open_job(
                    job.id,
                    "I could not finish this request after several tries; please ask again.",
                    f"interrupted {job.attempts - 1} times, {job.paid_runs} of them after "
                    "calling the image API",
                    self.owner,
                    self._lease,
                )
                if failed:
                    self._deliver_later(failed)
                return
        except StoreError:
            self._requeue_later.add(job.id)
            return
        self._running.add(job.id)
        try:
            await self._generate_and_store(job)
        finally:
            self._running.discard(job.id)

    async def _generate_and_store(self, job: Job) -> None:
        started = time.monotonic()
        ticker = asyncio.create_task(self._tick(job, started))
        metrics.JOBS_IN_FLIGHT.inc()
        # the answer's bytes, from their arrival until they are delivered
        memory = self.gemini.throttle.memory.hold()
        try:
            result = await self._generate(job, memory)
        except StoreError:
            # the API call could not be counted, so it was not made: run it once writes work
            memory.release()
            self._requeue_later.add(job.id)
            return
        except UserFacingError as exc:
            result = JobResult(
                "failed", api_calls=0, error_message=exc.message, error_detail=exc.detail
            )
        except Exception as exc:
            log.exception("failed unexpectedly")
            result = JobResult(
                "failed", api_calls=0, error_message=INTERNAL, error_detail=repr(exc)[:500]
            )
        finally:
            ticker.cancel()
            metrics.JOBS_IN_FLIGHT.dec()
        metrics.JOBS.labels(job.platform, result.state).inc()
        if result.cost_usd:
            model = self.catalog.find(job.options.model or "")  # one label for old and new ids
            metrics.COST.labels(model.id if model else job.options.model or "?").inc(
                result.cost_usd
            )
        log.info(
            "%s in %.2fs api_calls=%d%s",
            result.state,
            time.monotonic() - started,
            result.api_calls,
            f" reason={result.error_detail!r}" if result.error_detail else "",
        )
        if await self._cancelled(job):
            # paid for, but its requester cancelled it meanwhile: whatever came back is not
            # shown, and not in the conversation (a reply continues from the image before)
            result = replace(
                result,
                state="failed",
                parts=(),
                images=(),
                error_message=wording.CANCELLED_RUNNING,
                error_detail=f"cancelled while generating ({result.error_detail or 'made'})",
            )
        try:
            finished = await self.store.finish(job.id, self.owner, result)
        except StoreError:
            # paid for already: kept here, and stored and delivered once writes work
            memory.release()
            self._unsaved[job.id] = (job, result)
            return
        if finished is not None:
            # shown from the bytes in hand: reading back what was just written is wasted
            self._deliver_later(finished, _shown(finished, result.images, result.parts), memory)
        else:
            memory.release()
            self._active.discard(job.id)

    async def _cancelled(self, job: Job) -> bool:
        try:
            return await self.store.was_cancelled(job.id)
        except StoreError:
            return False  # the result is shown: a Cancel that cannot be read cannot count

    async def cancel(self, platform: str, tenant: str, job_id: str, user_id: str) -> str:
        """The requester stops a job, with any variations asked for with it: a queued one
        is never sent, a running one is not shown (its API call still counts). Returns the
        sentence to tell them; a UserFacingError when it is not theirs or has ended."""
        job = await self.job_for(platform, tenant, job_id)
        if job.user_id != user_id:
            raise UserFacingError(wording.ONLY_REQUESTER_CANCELS)
        jobs = await self.store.variations(job.group_id) if job.group_id else [job]
        states = []
        for each in jobs:
            state, ended = await self.store.cancel_job(
                each.id, wording.CANCELLED_QUEUED, self.owner, self._lease
            )
            states.append(state)
            if ended is not None:
                log.info("cancelled by its requester while queued", extra={"job_id": each.id})
                self._deliver_later(ended)
        if "running" in states:
            log.info("cancelled by its requester while generating", extra={"job_id": job.id})
            # shown at once, wherever it runs: its "Generating…" stops there at the next tick
            adapter = self._adapters.get(job.platform)
            if adapter is not None:
                try:
                    await adapter.progress(jobs[0], Progress("cancelling"))
                except Exception:
                    log.warning("could not show the cancel", exc_info=True)
            return (
                "Cancelled: the image will not be shown. The model was already working on it, "
                "so it still counts toward usage."
            )
        if "queued" in states:
            return "Cancelled: it was never sent to the model."
        raise UserFacingError("This image has already finished, so there is nothing to cancel.")

    async def _tick(self, job: Job, started: float) -> None:
        adapter = self._adapters.get(job.platform)
        if adapter is None or not job.leads_group:
            return  # variations share their first job's message: it alone shows progress
        with contextlib.suppress(TimeoutError):  # an edit is worth less than a call started
            async with asyncio.timeout(self.settings.progress_interval_seconds):
                await self._started.wait()
        while True:
            if await self._cancelled(job):
                return  # "Cancelling…" is shown, until the result says cancelled
            update = Progress("generating", elapsed_seconds=time.monotonic() - started)
            try:
                await adapter.progress(job, update)
            except Exception:
                log.warning("progress update failed", exc_info=True)
            await asyncio.sleep(self.settings.progress_interval_seconds)

    async def _generate(self, job: Job, memory: MemoryHold) -> JobResult:
        model = self.catalog.find(job.options.model or "")
        if model is None:
            raise UserFacingError(
                f"The model {job.options.model!r} is no longer offered here: ask again with "
                f"one of {self.catalog.describe_choices()}."
            )
        path = await self.store.path_to(job.user_turn_id)
        stored = await self.store.images(_image_hashes(path))
        continued = path[-2] if len(path) > 1 else None
        if continued is not None and continued.role == "model":
            shown = [p.image_sha256 for p in continued.parts if p.image_sha256]
            if shown and not any(sha in stored for sha in shown):
                raise UserFacingError(
                    f"The image this continues from is older than "
                    f"{self.settings.keep_images_days} days and was deleted; start a new "
                    "one with /imagine."
                )
        provider = self.gemini.provider
        wire_id = model.wire_id(provider.name)
        history = build_history(
            path,
            {sha: image.data for sha, image in stored.items()},
            model=model,
            wire_id=wire_id,
            budget_bytes=self.settings.request_budget_bytes,
        )
        size = job.options.size or model.default_size
        request = ImageRequest(
            model_id=wire_id,
            contents=history.contents,
            aspect_ratio=job.options.aspect_ratio,
            # a single-size model has nothing to choose; leave the field to the API
            image_size=provider.wire_size(size) if len(model.sizes) > 1 else None,
            temperature=job.options.temperature,
            with_text=bool(job.options.text),
        )

        async def sending() -> None:
            self._now_started(job.id)  # under the model's limit now: counted there
            # counted before it is sent, so a crash mid-call still shows in api_calls
            await self.store.count_api_call(job.id)

        try:
            result = await self.gemini.generate(request, on_attempt=sending, memory=memory)
        except GeminiError as exc:
            return JobResult(
                "failed",
                api_calls=exc.attempts,
                error_message=exc.message,
                error_detail=exc.detail,
                notice=history.notice,
            )
        return await self._result(result, model, wire_id, size, history.notice)

    async def _result(
        self, result: ImageResult, model: Model, wire_id: str, size: str, notice: str | None
    ) -> JobResult:
        parts: list[StoredPart] = []
        new_images: list[NewImage] = []
        for part in result.parts:
            if part.image is not None:
                # off the loop: a 4K image takes milliseconds to measure and to hash
                image = await asyncio.to_thread(_new_image, part.image.data, part.image.mime_type)
                new_images.append(image)
                parts.append(
                    StoredPart(
                        image_sha256=image.sha256,
                        mime_type=part.image.mime_type,
                        thought_signature=part.thought_signature,
                    )
                )
            elif part.text:
                parts.append(StoredPart(text=part.text, thought_signature=part.thought_signature))
        usage = result.usage
        return JobResult(
            "succeeded" if new_images else "failed",
            api_calls=result.attempts,
            parts=parts,
            images=new_images,
            # the id that made it: its thought signatures are good for that id only
            model_id=wire_id,
            error_message=None if new_images else TEXT_ONLY,
            error_detail=None if new_images else f"finishReason={result.finish_reason}",
            notice=notice,
            prompt_tokens=usage.prompt_tokens,
            output_tokens=usage.output_tokens,
            total_tokens=usage.total_tokens,
            cost_usd=model.estimate_cost(size, len(new_images), usage.image_tokens),
        )

    # delivering

    def _resume_later(self, work: Awaitable[None], key: object) -> None:
        async def run() -> None:
            try:
                await work
            except ValueError as exc:
                # a payload this version cannot read: let it go, or every process takes it up
                log.error("dropped a held request this version cannot read: %s", exc)
                if isinstance(key, str):
                    await self.release(key)
            except Exception:
                log.exception("resuming an acknowledged request failed")

        task = asyncio.create_task(run(), name="imagebot-resume")
        self._deliveries.add(task)
        task.add_done_callback(self._deliveries.discard)

    def _deliver_later(
        self, job: Job, outcome: Outcome | None = None, memory: MemoryHold | None = None
    ) -> None:
        """Show a finished job: `outcome` when it is in hand, else read from the store;
        `memory` (the answer's bytes) is let go once it is shown or given up."""
        self._active.add(job.id)
        with logs.job_context(job.id):
            task = asyncio.create_task(
                self._deliver(job, outcome, memory), name=f"imagebot-deliver-{job.id}"
            )
        self._deliveries.add(task)
        task.add_done_callback(self._deliveries.discard)

    async def outcome(self, job: Job) -> Outcome:
        """What a finished job shows, read back from the store."""
        turn = await self.store.turn(job.model_turn_id) if job.model_turn_id else None
        parts = turn.parts if turn else ()
        stored = await self.store.images(p.image_sha256 for p in parts if p.image_sha256)
        found = [stored[p.image_sha256] for p in parts if p.image_sha256 in stored]
        return _shown(job, found, parts)

    async def _deliver(self, job: Job, outcome: Outcome | None, memory: MemoryHold | None) -> None:
        self._delivering.add(job.id)
        try:
            await self._deliver_once(job, outcome, memory)
        finally:
            if memory is not None:
                memory.release()
            self._delivering.discard(job.id)
            if job.id not in self._unrecorded:
                self._active.discard(job.id)

    async def _deliver_once(
        self, job: Job, outcome: Outcome | None, memory: MemoryHold | None = None
    ) -> None:
        adapter = self._adapters.get(job.platform)
        if adapter is None:
            log.error("no adapter for platform %s", job.platform)
            return
        if job.group_id is not None:
            # one look at a time: a look that found one still open must be over before the
            # one after the last has ended looks, or it could find it taken and give up
            async with self._group_turn(job.group_id):
                await self._deliver_variations(adapter, job.group_id, memory)
            return
        if outcome is None:
            outcome = await self.outcome(job)
        await self._show_result(adapter, job, outcome)

    async def _show_result(self, adapter: Adapter, job: Job, outcome: Outcome) -> None:
        for attempt in range(1, DELIVERY_ATTEMPTS + 1):
            try:
                keys = await adapter.deliver(job, outcome)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                # nowhere takes it: another try would fail the same way
                last = attempt == DELIVERY_ATTEMPTS or isinstance(exc, Undeliverable)
                metrics.DELIVERY_FAILURES.labels(job.platform).inc()
                log.warning(
                    "delivery attempt %d failed: %r",
                    attempt,
                    exc,
                    exc_info=last and not isinstance(exc, Undeliverable),
                )
                with contextlib.suppress(StoreError):  # the next attempt writes it again
                    await self.store.record_delivery(job, [], error=repr(exc)[:500], abandon=last)
                if last:
                    await self._say_undeliverable(adapter, job)
                    return
                delay = self._delivery_backoff * 2 ** (attempt - 1)
                await asyncio.sleep(delay * (0.5 + random.random() / 2))
                continue
            log.info("delivered (%d messages)", len(keys))
            try:
                await self.store.record_delivery(job, keys)
            except StoreError:
                # shown already: only the record waits, so it is never shown twice
                self._unrecorded[job.id] = (job, keys)
            return

    @contextlib.asynccontextmanager
    async def _group_turn(self, group_id: str) -> AsyncIterator[None]:
        lock, waiting = self._group_locks.get(group_id, (asyncio.Lock(), 0))
        self._group_locks[group_id] = (lock, waiting + 1)
        try:
            async with lock:
                yield
        finally:
            lock, waiting = self._group_locks[group_id]
            if waiting == 1:
                del self._group_locks[group_id]
            else:
                self._group_locks[group_id] = (lock, waiting - 1)

    async def _deliver_variations(
        self, adapter: Adapter, group_id: str, memory: MemoryHold | None
    ) -> None:
        """A request for several images, once all have ended and when this process is to
        deliver them: shown together, as its first job's result. `memory` is the last
        one's answer, which the images read back are held with."""
        if group_id in self._unrecorded:
            return  # shown already: only the record of it waits for the store
        jobs = await self.store.variations_to_deliver(group_id, self.owner)
        if jobs is None:
            return  # others are still running, or it was delivered (or is, elsewhere)
        first = jobs[0]
        hold = memory or self.gemini.throttle.memory.hold()
        self._active.add(first.id)  # its lease kept while it is delivered
        try:
            # the images come back from the store into memory: counted like answers, about
            # as large as the last one each, and exactly once read
            if hold.size:
                await hold.grow_to(hold.size * len(jobs))
            shown = [Variation(job, await self.outcome(job)) for job in jobs]
            held = sum(len(i.data) for v in shown for i in v.outcome.images)
            if held > hold.size:
                await hold.grow_to(held)
            else:
                hold.shrink_to(held)
            outcome = replace(shown[0].outcome, variations=tuple(shown))
            await self._show_result(adapter, first, outcome)
        finally:
            if memory is None:
                hold.release()
            if first.id not in self._unrecorded:
                self._active.discard(first.id)

    async def _say_undeliverable(self, adapter: Adapter, job: Job) -> None:
        """After the last failed delivery, one sentence in place of the result, which needs
        less of the platform (no upload), so nobody is left looking at "Generating…"."""
        try:
            await adapter.deliver(job, Outcome(images=(), text="", error=UNDELIVERABLE))
        except Exception:
            log.warning("could not say that the result could not be delivered", exc_info=True)

    # reading

    async def job(self, job_id: str) -> Job | None:
        return await self.store.job(job_id)

    async def job_for_message(self, platform: str, tenant: str, message_key: str) -> Job | None:
        return await self.store.job_for_message(platform, tenant, message_key)

    async def link_message(self, job: Job, message_key: str) -> None:
        """Make a platform message (a progress post) lead back to this job and its turn."""
        await self.store.link_message(job, message_key)

    async def history(self, platform: str, tenant: str, user_id: str, page: int = 1) -> HistoryPage:
        """A person's images in this workspace or server, newest first, HISTORY_PAGE a page,
        each with the messages that show it (for links)."""
        page = max(1, page)
        jobs = await self.store.recent_images(
            platform, tenant, user_id, limit=HISTORY_PAGE + 1, offset=(page - 1) * HISTORY_PAGE
        )
        items = []
        for job in jobs[:HISTORY_PAGE]:
            keys = await self.store.message_keys(job.id)
            if not keys and job.group_id:  # a variation: shown in its first job's message
                keys = await self.store.message_keys(job.group_id)
            items.append(HistoryItem(job, keys))
        return HistoryPage(items, page, more=len(jobs) > HISTORY_PAGE)

    async def message_keys(self, job: Job) -> list[str]:
        """The platform messages linked to a job (for Delete), and to the variations asked
        for with it when it is the first of them (its message shows them all)."""
        if job.group_id != job.id:
            return await self.store.message_keys(job.id)
        return [
            key
            for each in await self.store.variations(job.id)
            for key in await self.store.message_keys(each.id)
        ]

    async def defaults(
        self, platform: str, tenant: str, user_id: str, channel: str | None
    ) -> Defaults:
        """Every layer of saved defaults that applies to `user_id` in `channel`."""
        team, here = await self.store.shared_defaults(platform, tenant, channel)
        user = await self.store.user_defaults(platform, tenant, user_id)
        return Defaults(team=team, channel=here, user=user)

    async def set_shared_defaults(
        self, platform: str, tenant: str, channel: str | None, options: Options, set_by: str
    ) -> Options:
        """Check and save the defaults of a workspace or server (`channel` None) or of one
        channel; Options() clears them. Who may is the adapter's to decide (its roles)."""
        saved = self._checked_defaults(options)
        await self.store.set_shared_defaults(platform, tenant, channel, saved, set_by)
        log.info("%s defaults set by %s: %s", "channel" if channel else "shared", set_by, saved)
        return saved

    def _checked_defaults(self, options: Options) -> Options:
        """Defaults as saved: checked against the catalog, the model by its id."""
        resolved = resolve(options, self.catalog)
        return replace(options, model=resolved.model.id if options.model else None)

    async def user_defaults(self, platform: str, tenant: str, user_id: str) -> Options:
        return await self.store.user_defaults(platform, tenant, user_id)

    async def change_user_defaults(
        self, platform: str, tenant: str, user_id: str, changes: Options
    ) -> Options:
        """Save `changes` over a user's defaults; a new model keeps the saved ratio and size
        only where it makes them."""
        current = await self.store.user_defaults(platform, tenant, user_id)
        wanted = self._changed_defaults(current, changes)
        return await self.set_user_defaults(platform, tenant, user_id, wanted)

    async def change_shared_defaults(
        self, platform: str, tenant: str, channel: str | None, changes: Options, set_by: str
    ) -> Options:
        """change_user_defaults for a workspace or server (`channel` None) or a channel."""
        team, here = await self.store.shared_defaults(platform, tenant, channel)
        wanted = self._changed_defaults(here if channel else team, changes)
        return await self.set_shared_defaults(platform, tenant, channel, wanted, set_by)

    def _changed_defaults(self, current: Options, changes: Options) -> Options:
        kept = Options(
            aspect_ratio=current.aspect_ratio, size=current.size, model=current.model, n=current.n
        )
        if changes.model is not None:
            chosen = self.catalog.get(changes.model)
            kept = Options(
                aspect_ratio=kept.aspect_ratio
                if kept.aspect_ratio in chosen.aspect_ratios
                else None,
                size=kept.size if kept.size in chosen.sizes else None,
                n=kept.n,
            )
        return Options(
            model=changes.model, aspect_ratio=changes.aspect_ratio, size=changes.size, n=changes.n
        ).over(kept)

    async def set_user_defaults(
        self, platform: str, tenant: str, user_id: str, options: Options
    ) -> Options:
        """Check and save a user's defaults; explicit values must suit the chosen model."""
        saved = self._checked_defaults(options)
        await self.store.set_user_defaults(platform, tenant, user_id, saved)
        return saved

    async def usage(self, platform: str, tenant: str, user_id: str | None) -> UsageSummary:
        """Images and estimated cost since the start of this calendar month (UTC)."""
        month = quotas.month_start(datetime.now(UTC)).timestamp()
        return await self.store.usage(platform, tenant, user_id, month)

    async def usage_report(self, platform: str, tenant: str, user_id: str) -> UsageReport:
        """This month's usage for a user and their workspace, with today's counts and limits."""
        now = datetime.now(UTC)
        day, month = quotas.day_start(now).timestamp(), quotas.month_start(now).timestamp()
        counts = await self.store.quota_counts(platform, tenant, user_id, day, month)
        return UsageReport(
            user=await self.store.usage(platform, tenant, user_id, month),
            tenant=await self.store.usage(platform, tenant, None, month),
            user_today=counts.user_today,
            tenant_today=counts.tenant_today,
            limits=self.limits,
            tenant_noun=self._tenant_nouns.get(platform, "workspace"),
        )


def _image_hashes(path: list[Turn]) -> list[str]:
    return [part.image_sha256 for turn in path for part in turn.parts if part.image_sha256]


def _shown(
    job: Job, found: Iterable[StoredImage | NewImage], parts: Iterable[StoredPart]
) -> Outcome:
    """What a finished job shows: its images, its text, or the sentence saying why not."""
    return Outcome(
        images=tuple(ResultImage(i.data, i.mime_type, i.width, i.height, i.sha256) for i in found),
        text="\n".join(p.text for p in parts if p.text).strip(),
        error=job.error_message if job.state == "failed" else None,
        notice=job.notice,
    )


def _new_image(data: bytes, mime_type: str) -> NewImage:
    width, height = images.image_dimensions(data)
    return NewImage(data, mime_type, width, height, image_hash(data))
