"""Jobs: created with their conversation and user turn, claimed under a lease, finished
with their model turn, delivered; and taken over when the process running them died."""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace
from typing import Any

from core.conversations import StoredPart
from core.jobs import Job
from core.store.conversations import LINK, _link_row
from core.store.database import Database, Tx
from core.store.images import ImageBytes
from core.store.records import (
    JOB_COLUMNS,
    JobResult,
    NewImage,
    NewJob,
    dump_options,
    dump_parts,
    job_of,
)

_BY_ID = f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = ?"
# Every queued or running job's turn: when the image API is the bottleneck, jobs are run in
# turns across workspaces/servers (a tenant's n-th job after every other tenant's first
# n - 1), and within a tenant in turns across its users; a job already running holds its
# user's and its tenant's earliest turns. Ties go to the older job.
# Worked out once per statement (MATERIALIZED) and carrying what claims filter on, so that no
# join to jobs makes PostgreSQL work them out again for every row.
_TURNS = (
    "WITH active AS MATERIALIZED (SELECT id, seq, state, owner, platform, tenant, options, "
    "ROW_NUMBER() OVER (PARTITION BY platform, tenant, user_id ORDER BY CASE state WHEN "
    "'running' THEN 0 ELSE 1 END, seq) AS user_turn FROM jobs WHERE state IN ('queued', "
    "'running')), turns AS MATERIALIZED (SELECT id, seq, state, owner, platform, options, "
    "ROW_NUMBER() OVER (PARTITION BY platform, tenant ORDER BY user_turn, seq) AS turn "
    "FROM active)"
)
JOBS_CHANNEL = "imagebot_jobs"  # PostgreSQL's NOTIFY channel for published jobs


class _Duplicate(Exception):
    """Another transaction stored a job under the same key first."""


class JobStore:
    _db: Database
    _clock: Callable[[], float]
    image_bytes: ImageBytes

    async def job(self, job_id: str) -> Job | None:
        row = await self._db.fetchrow(_BY_ID, job_id)
        return job_of(row) if row else None

    async def job_by_key(self, idempotency_key: str) -> Job | None:
        row = await self._db.fetchrow(
            f"SELECT {JOB_COLUMNS} FROM jobs WHERE idempotency_key = ?", idempotency_key
        )
        return job_of(row) if row else None

    async def job_for_turn(self, turn_id: int) -> Job | None:
        """The job whose user or model turn `turn_id` is, newest first."""
        row = await self._db.fetchrow(
            f"SELECT {JOB_COLUMNS} FROM jobs WHERE model_turn_id = ? OR user_turn_id = ? "
            "ORDER BY seq DESC LIMIT 1",
            turn_id,
            turn_id,
        )
        return job_of(row) if row else None

    async def create_job(
        self,
        job: NewJob,
        *,
        thread_key: str,
        parent_turn_id: int | None,
        user_parts: Sequence[StoredPart] | None,
        user_images: Sequence[NewImage],
        owner: str,
        lease_seconds: float,
        variations: Sequence[str] = (),
    ) -> tuple[Job, bool]:
        """Persist a job, its conversation and (unless `user_parts` is None) its user turn.

        With `user_parts` None the job reuses `parent_turn_id` as its user turn (a re-roll).
        Returns the existing job and False when the idempotency key was seen before.
        Images in `user_parts` are referenced by hash; their bytes come in `user_images`.
        `variations` are the ids of more jobs for the same request, stored with it: each
        makes another image beside the first (a sibling model turn), and the first job is
        delivered, with all of them, once every one has ended.
        """
        now = self._clock()
        try:
            async with self._db.transaction() as tx:
                first, created = await self._insert_job(
                    tx,
                    job,
                    now,
                    thread_key,
                    parent_turn_id,
                    user_parts,
                    user_images,
                    owner,
                    lease_seconds,
                )
                if not created or not variations:
                    return first, created
                for index, variation_id in enumerate(variations, start=2):
                    await self._insert_job(
                        tx,
                        replace(
                            job,
                            id=variation_id,
                            idempotency_key=f"{job.idempotency_key}#{index}",
                        ),
                        now,
                        thread_key,
                        first.user_turn_id,
                        None,
                        (),
                        owner,
                        lease_seconds,
                    )
                await tx.execute(
                    f"UPDATE jobs SET group_id = ? WHERE id IN ({_marks([first.id, *variations])})",
                    first.id,
                    first.id,
                    *variations,
                )
                row = await tx.fetchrow(
                    f"UPDATE jobs SET group_open = ? WHERE id = ? RETURNING {JOB_COLUMNS}",
                    1 + len(variations),
                    first.id,
                )
                assert row is not None
                return job_of(row), True
        except _Duplicate:
            # the same request stored at the same moment by another transaction (PostgreSQL
            # runs them side by side): everything this one wrote is rolled back
            existing = await self.job_by_key(job.idempotency_key)
            assert existing is not None
            return existing, False

    async def _insert_job(
        self,
        tx: Tx,
        job: NewJob,
        now: float,
        thread_key: str,
        parent_turn_id: int | None,
        user_parts: Sequence[StoredPart] | None,
        user_images: Sequence[NewImage],
        owner: str,
        lease_seconds: float,
    ) -> tuple[Job, bool]:
        existing = await tx.fetchrow(
            f"SELECT {JOB_COLUMNS} FROM jobs WHERE idempotency_key = ?", job.idempotency_key
        )
        if existing:
            return job_of(existing), False
        await tx.execute(
            "INSERT INTO conversations (platform, tenant, thread_key, created_at) "
            "VALUES (?, ?, ?, ?) ON CONFLICT (platform, tenant, thread_key) DO NOTHING",
            job.platform,
            job.tenant,
            thread_key,
            now,
        )
        row = await tx.fetchrow(
            "SELECT id FROM conversations WHERE platform = ? AND tenant = ? AND thread_key = ?",
            job.platform,
            job.tenant,
            thread_key,
        )
        assert row is not None
        conversation_id = row["id"]
        for image in user_images:
            await self.image_bytes.put(tx, image)
        if user_parts is None:
            if parent_turn_id is None:
                raise ValueError("a job without a new user turn needs an existing one")
            user_turn_id = parent_turn_id
        else:
            turn = await tx.fetchrow(
                "INSERT INTO turns (conversation_id, parent_id, role, author_id, parts, "
                "created_at) VALUES (?, ?, 'user', ?, ?, ?) RETURNING id",
                conversation_id,
                parent_turn_id,
                job.user_id,
                dump_parts(user_parts),
                now,
            )
            assert turn is not None
            user_turn_id = turn["id"]
        await tx.execute("DELETE FROM intake WHERE key = ?", job.idempotency_key)
        created = await tx.fetchrow(
            "INSERT INTO jobs (id, idempotency_key, kind, platform, tenant, user_id, "
            "conversation_id, user_turn_id, prompt, options, target, state, owner, "
            "lease_expires_at, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'queued', ?, ?, ?) "
            f"ON CONFLICT (idempotency_key) DO NOTHING RETURNING {JOB_COLUMNS}",
            job.id,
            job.idempotency_key,
            job.kind,
            job.platform,
            job.tenant,
            job.user_id,
            conversation_id,
            user_turn_id,
            job.prompt,
            dump_options(job.options),
            json.dumps(job.target),
            owner,
            now + lease_seconds,
            now,
        )
        if created is None:
            raise _Duplicate
        return job_of(created), True

    @property
    def shared_queue(self) -> bool:
        """Whether a queued job may be run by any process (PostgreSQL), or only by the one
        that owns it (SQLite: processes there find each other's jobs only once a lease has
        run out)."""
        return self._db.name == "postgresql"

    async def queue_position(self, job: Job) -> int:
        """1 for the next job to run: its place among the jobs queued for its owner's
        workers, its owner's own and those published for any process, in the order claims
        take them (_TURNS)."""
        row = await self._db.fetchrow(
            f"{_TURNS} SELECT COUNT(*) FROM turns t JOIN turns me ON me.id = ? "
            "WHERE t.state = 'queued' AND (t.owner = me.owner OR t.owner IS NULL) "
            "AND (t.turn < me.turn OR (t.turn = me.turn AND t.seq <= me.seq))",
            job.id,
        )
        return int(row[0]) if row else 0

    async def claim(self, job_id: str, owner: str, lease_seconds: float) -> Job | None:
        """Move a queued job of `owner` to running; None if it is not ours or not queued."""
        now = self._clock()
        async with self._db.transaction() as tx:
            row = await tx.fetchrow(
                "UPDATE jobs SET state = 'running', started_at = ?, attempts = attempts + 1, "
                "lease_expires_at = ? WHERE id = ? AND owner = ? AND state = 'queued' "
                f"RETURNING {JOB_COLUMNS}",
                now,
                now + lease_seconds,
                job_id,
                owner,
            )
        return job_of(row) if row else None

    async def claim_next(
        self,
        owner: str,
        platforms: Sequence[str],
        lease_seconds: float,
        *,
        not_ready: Sequence[str] = (),
        skip_models: Sequence[str] = (),
    ) -> Job | None:
        """The next job claim_jobs() would take, or None."""
        jobs = await self.claim_jobs(
            owner, platforms, lease_seconds, 1, not_ready=not_ready, skip_models=skip_models
        )
        return jobs[0] if jobs else None

    async def claim_jobs(
        self,
        owner: str,
        platforms: Sequence[str],
        lease_seconds: float,
        count: int,
        *,
        not_ready: Sequence[str] = (),
        skip_models: Sequence[str] = (),
    ) -> list[Job]:
        """Up to `count` queued jobs this process may run, now running under its lease, in
        one statement: its own (except those `not_ready`), and those published for any
        process of `platforms`; none for the models named in `skip_models`. Jobs are taken
        in turns (_TURNS). On PostgreSQL a row another process
        is claiming at this moment is skipped, not waited for."""
        now = self._clock()
        shared = ""
        if platforms:
            shared = f" OR (j.owner IS NULL AND j.platform IN ({_marks(platforms)}))"
        held_back = f" AND j.id NOT IN ({_marks(not_ready)})" if not_ready else ""
        models = ""
        if skip_models:
            models = f" AND {_option(self._db, 'model')} NOT IN ({_marks(skip_models)})"
        # PostgreSQL: a few more than asked are picked, as another process may be taking
        # some of them this moment; the first `count` of them not locked by another are
        # locked (the rest are skipped, not waited for, and stay free)
        picked = count * 2 + 8 if self.shared_queue else count
        async with self._db.transaction() as tx:
            rows = await tx.fetch(
                f"{_TURNS}, picked AS (SELECT id, turn, seq FROM turns j WHERE "
                f"j.state = 'queued' AND ((j.owner = ?{held_back}){shared}){models} "
                "ORDER BY turn, seq LIMIT ?), locked AS (SELECT j.id FROM jobs j "
                "JOIN picked p ON p.id = j.id WHERE j.state = 'queued' ORDER BY p.turn, p.seq "
                f"LIMIT ?{_skip_locked(self._db, 'j')}) UPDATE jobs SET state = 'running', "
                "owner = ?, started_at = ?, attempts = attempts + 1, lease_expires_at = ? "
                f"WHERE id IN (SELECT id FROM locked) RETURNING {JOB_COLUMNS}",
                owner,
                *not_ready,
                *platforms,
                *skip_models,
                picked,
                count,
                owner,
                now,
                now + lease_seconds,
            )
        # all of them start now; by age, so that the order is the same on both databases
        return sorted((job_of(row) for row in rows), key=lambda job: job.seq)

    async def publish(self, job_id: str, owner: str) -> bool:
        """Let any process run this queued job of ours (PostgreSQL; SQLite keeps it here).
        True when it was published; every listening process is woken."""
        if not self.shared_queue:
            return False
        async with self._db.transaction() as tx:
            row = await tx.fetchrow(
                "UPDATE jobs SET owner = NULL WHERE id = ? AND owner = ? AND state = 'queued' "
                "RETURNING platform",
                job_id,
                owner,
            )
            if row is not None:
                # delivered when the transaction commits, to every process listening
                await tx.execute("SELECT pg_notify(?, ?)", JOBS_CHANNEL, row["platform"])
        return row is not None

    async def count_api_call(self, job_id: str) -> None:
        """One more request to the image API is about to be sent for this job; the first of
        a run also counts the run as paid."""
        async with self._db.transaction() as tx:
            await tx.execute(
                "UPDATE jobs SET api_calls = api_calls + 1, paid_runs = paid_runs + CASE "
                "WHEN last_paid_run = attempts THEN 0 ELSE 1 END, last_paid_run = attempts "
                "WHERE id = ?",
                job_id,
            )

    async def finish(self, job_id: str, owner: str, result: JobResult) -> Job | None:
        """Store the model turn, its images and the job's final state in one transaction."""
        now = self._clock()
        async with self._db.transaction() as tx:
            row = await tx.fetchrow(
                "SELECT conversation_id, user_turn_id, lease_expires_at FROM jobs WHERE id = ? "
                # held until the result is in: a takeover must not end the job meanwhile
                f"AND owner = ? AND state = 'running'{_for_update(self._db)}",
                job_id,
                owner,
            )
            if row is None:
                return None  # taken over by another process after our lease ran out
            model_turn_id = None
            if result.parts:
                for image in result.images:
                    await self.image_bytes.put(tx, image)
                turn = await tx.fetchrow(
                    "INSERT INTO turns (conversation_id, parent_id, role, author_id, model_id, "
                    "parts, created_at) VALUES (?, ?, 'model', NULL, ?, ?, ?) RETURNING id",
                    row["conversation_id"],
                    row["user_turn_id"],
                    result.model_id,
                    dump_parts(result.parts),
                    now,
                )
                assert turn is not None
                model_turn_id = turn["id"]
            updated = await tx.fetchrow(
                "UPDATE jobs SET state = ?, model_turn_id = ?, "
                "error_message = ?, error_detail = ?, notice = ?, prompt_tokens = ?, "
                "output_tokens = ?, total_tokens = ?, cost_usd = ?, finished_at = ? "
                f"WHERE id = ? RETURNING {JOB_COLUMNS}",
                result.state,
                model_turn_id,
                result.error_message,
                result.error_detail,
                result.notice,
                result.prompt_tokens,
                result.output_tokens,
                result.total_tokens,
                result.cost_usd,
                now,
                job_id,
            )
            if updated is not None:  # this run's lease, kept while it is delivered
                await _leave_group(tx, updated, owner, row["lease_expires_at"])
        return job_of(updated) if updated else None

    async def record_delivery(
        self,
        job: Job,
        message_keys: Sequence[str],
        *,
        error: str | None = None,
        abandon: bool = False,
    ) -> None:
        """A delivery attempt: links the messages that show the result when it worked."""
        now = self._clock()
        async with self._db.transaction() as tx:
            if error is None:
                await tx.execute(
                    "UPDATE jobs SET delivered_at = ?, delivery_attempts = delivery_attempts + 1, "
                    "delivery_error = NULL WHERE id = ?",
                    now,
                    job.id,
                )
                if job.group_id == job.id:  # the first of several shows them all
                    await tx.execute(
                        "UPDATE jobs SET delivered_at = ? WHERE group_id = ? AND id <> ? "
                        "AND delivered_at IS NULL",
                        now,
                        job.id,
                        job.id,
                    )
                for order, key in enumerate(message_keys):
                    # apart by a microsecond each, so they read back in the order given
                    await tx.execute(LINK, *_link_row(job, key, now + order * 1e-6))
            else:
                await tx.execute(
                    "UPDATE jobs SET delivery_attempts = delivery_attempts + 1, "
                    "delivery_error = ?, delivery_abandoned_at = ? WHERE id = ?",
                    error,
                    now if abandon else None,
                    job.id,
                )

    async def update_target(self, job_id: str, target: dict[str, Any]) -> Job:
        async with self._db.transaction() as tx:
            row = await tx.fetchrow(
                f"UPDATE jobs SET target = ? WHERE id = ? RETURNING {JOB_COLUMNS}",
                json.dumps(target),
                job_id,
            )
        assert row is not None
        return job_of(row)

    async def requeue(self, job_id: str, owner: str) -> None:
        """A run this process claimed but could not carry on (the store failed under it):
        queued again, for this process to run once writes work."""
        async with self._db.transaction() as tx:
            await tx.execute(
                "UPDATE jobs SET state = 'queued' WHERE id = ? AND owner = ? AND state = 'running'",
                job_id,
                owner,
            )

    async def fail_open_job(
        self,
        job_id: str,
        message: str,
        detail: str,
        owner: str,
        lease_seconds: float,
        *,
        requester_gone: bool = False,
    ) -> Job | None:
        """Give up on an open job: it ends failed with `message`.

        `requester_gone` also closes its delivery (a terminal session that has ended).
        `owner` is the process giving up, which delivers its variations if it ended the last.
        """
        now = self._clock()
        async with self._db.transaction() as tx:
            row = await tx.fetchrow(
                "UPDATE jobs SET state = 'failed', error_message = COALESCE(error_message, ?), "
                "error_detail = COALESCE(error_detail, ?), finished_at = COALESCE(finished_at, ?), "
                "delivery_abandoned_at = ? WHERE id = ? AND state IN ('queued', 'running') "
                f"RETURNING {JOB_COLUMNS}",
                message,
                detail,
                now,
                now if requester_gone else None,
                job_id,
            )
            if row is not None:
                await _leave_group(tx, row, owner, now + lease_seconds)
                return job_of(row)
            row = await tx.fetchrow(
                f"UPDATE jobs SET delivery_abandoned_at = ? WHERE id = ? RETURNING {JOB_COLUMNS}",
                now if requester_gone else None,
                job_id,
            )
        return job_of(row) if row else None

    async def cancel_job(
        self, job_id: str, message: str, owner: str, lease_seconds: float
    ) -> tuple[str, Job | None]:
        """The requester's Cancel. A queued job ends failed with `message` at once, so it
        is never sent; a running one is marked, and its result is not shown when it comes.
        Returns the state the job was in and, for a queued one, the job as it ended.
        `owner` is the process cancelling it, which delivers its variations if it ended
        the last."""
        now = self._clock()
        async with self._db.transaction() as tx:
            row = await tx.fetchrow(
                "UPDATE jobs SET state = 'failed', error_message = ?, "
                "error_detail = 'cancelled while queued', finished_at = ?, cancelled_at = ? "
                f"WHERE id = ? AND state = 'queued' RETURNING {JOB_COLUMNS}",
                message,
                now,
                now,
                job_id,
            )
            if row is not None:
                await _leave_group(tx, row, owner, now + lease_seconds)
                return "queued", job_of(row)
            marked = await tx.fetchrow(
                "UPDATE jobs SET cancelled_at = COALESCE(cancelled_at, ?) "
                "WHERE id = ? AND state = 'running' RETURNING id",
                now,
                job_id,
            )
        return ("running" if marked else "finished"), None

    async def variations(self, group_id: str) -> list[Job]:
        """The jobs of a request for several images, in order."""
        rows = await self._db.fetch(
            f"SELECT {JOB_COLUMNS} FROM jobs WHERE group_id = ? ORDER BY seq", group_id
        )
        return [job_of(row) for row in rows]

    async def variations_to_deliver(self, group_id: str, owner: str) -> list[Job] | None:
        """The jobs of a request for several images, in order, when they have all ended,
        are not delivered yet, and `owner` is the process to deliver them (the one that
        ended the last, or took them over); else None."""
        extra = ("group_open", "owner", "delivery_abandoned_at")
        rows = await self._db.fetch(
            f"SELECT {JOB_COLUMNS}, {', '.join(extra)} FROM jobs WHERE group_id = ? ORDER BY seq",
            group_id,
        )
        if not rows:
            return None
        first = rows[0]
        if first["group_open"] or first["owner"] != owner:
            return None
        if first["delivered_at"] is not None or first["delivery_abandoned_at"] is not None:
            return None
        return [job_of(_without(row, *extra)) for row in rows]

    async def recent_images(
        self, platform: str, tenant: str, user_id: str, *, limit: int, offset: int
    ) -> list[Job]:
        """A person's jobs that made an image and showed it, newest first."""
        rows = await self._db.fetch(
            f"SELECT {JOB_COLUMNS} FROM jobs WHERE platform = ? AND tenant = ? AND user_id = ? "
            "AND state = 'succeeded' AND delivered_at IS NOT NULL ORDER BY seq DESC "
            "LIMIT ? OFFSET ?",
            platform,
            tenant,
            user_id,
            limit,
            offset,
        )
        return [job_of(row) for row in rows]

    async def was_cancelled(self, job_id: str) -> bool:
        row = await self._db.fetchrow("SELECT cancelled_at FROM jobs WHERE id = ?", job_id)
        return row is not None and row["cancelled_at"] is not None

    # leases: which process advances which job

    async def release(
        self, owner: str, job_ids: Iterable[str] | None = None, shared: Sequence[str] = ()
    ) -> None:
        """Let the next process take our open jobs at once (`job_ids`: only those); with no
        ids, on a clean shutdown, our held requests and heartbeat too. On a shared queue,
        queued jobs of the `shared` platforms go straight back to it."""
        async with self._db.transaction() as tx:
            if self.shared_queue and shared:
                # the others hear of them at once, rather than at their next upkeep
                ids = list(job_ids) if job_ids is not None else None
                only = f" AND id IN ({','.join('?' * len(ids))})" if ids else ""
                if ids is None or ids:
                    published = await tx.fetch(
                        "UPDATE jobs SET owner = NULL WHERE owner = ? AND state = 'queued' "
                        f"AND platform IN ({','.join('?' * len(shared))}){only} "
                        "RETURNING platform",
                        owner,
                        *shared,
                        *(ids or ()),
                    )
                    for platform in {row["platform"] for row in published}:
                        await tx.execute("SELECT pg_notify(?, ?)", JOBS_CHANNEL, platform)
                job_ids = ids
            if job_ids is not None:
                await tx.executemany(
                    "UPDATE jobs SET lease_expires_at = 0 WHERE id = ? AND owner = ?",
                    [(job_id, owner) for job_id in job_ids],
                )
                return
            await tx.execute("UPDATE jobs SET lease_expires_at = 0 WHERE owner = ?", owner)
            await tx.execute("UPDATE intake SET lease_expires_at = 0 WHERE owner = ?", owner)
            await tx.execute("DELETE FROM heartbeats WHERE owner = ?", owner)

    async def renew_leases(
        self, owner: str, lease_seconds: float, job_ids: Iterable[str], hold_keys: Iterable[str]
    ) -> None:
        """Keep the jobs and held requests this process is still advancing (`job_ids`,
        `hold_keys`): one it lost track of is left to lapse, so it is taken over."""
        expires = self._clock() + lease_seconds
        async with self._db.transaction() as tx:
            await tx.executemany(
                "UPDATE intake SET lease_expires_at = ? WHERE key = ? AND owner = ?",
                [(expires, key, owner) for key in hold_keys],
            )
            await tx.executemany(
                "UPDATE jobs SET lease_expires_at = ? WHERE id = ? AND owner = ?",
                [(expires, job_id, owner) for job_id in job_ids],
            )
            await tx.execute(
                "INSERT INTO heartbeats (owner, seen_at) VALUES (?, ?) "
                "ON CONFLICT (owner) DO UPDATE SET seen_at = excluded.seen_at",
                owner,
                self._clock(),
            )

    async def take_over_expired(
        self, platforms: Sequence[str], owner: str, lease_seconds: float
    ) -> list[Job]:
        """Jobs of `platforms` whose lease ran out (a dead process, or a job this process
        lost track of): now ours. Running jobs go back to queued: their result was never
        stored, so they run again. Rows another process is taking over at this moment are
        skipped, not waited for."""
        if not platforms:
            return []
        now = self._clock()
        marks = ",".join("?" * len(platforms))
        async with self._db.transaction() as tx:
            rows = await tx.fetch(
                f"SELECT id FROM jobs WHERE platform IN ({marks}) AND lease_expires_at < ? "
                # a published job belongs to no process: any claims it, none takes it over
                "AND owner IS NOT NULL AND (state IN ('queued', 'running') OR "
                "(delivered_at IS NULL AND delivery_abandoned_at IS NULL "
                # variations are delivered together, by the first, once all have ended
                "AND (group_id IS NULL OR (group_id = id AND group_open = 0))))"
                f"{_skip_locked(self._db)}",
                *platforms,
                now,
            )
            taken = []
            for row in rows:
                job = await tx.fetchrow(
                    "UPDATE jobs SET owner = ?, lease_expires_at = ?, state = CASE state "
                    f"WHEN 'running' THEN 'queued' ELSE state END WHERE id = ? "
                    f"RETURNING {JOB_COLUMNS}",
                    owner,
                    now + lease_seconds,
                    row["id"],
                )
                if job:
                    taken.append(job_of(job))
        return sorted(taken, key=lambda job: job.seq)


async def _leave_group(tx: Tx, ended: Any, owner: str, lease_expires_at: float) -> None:
    """A job that just ended no longer keeps its request's variations open; the last to
    end makes `owner` their deliverer, in the same transaction, so that a crash before the
    delivery leaves them to be taken over like any finished job."""
    group_id = ended["group_id"]
    if group_id is None:
        return
    await tx.execute(
        "UPDATE jobs SET owner = CASE WHEN group_open = 1 THEN ? ELSE owner END, "
        "lease_expires_at = CASE WHEN group_open = 1 THEN ? ELSE lease_expires_at END, "
        "group_open = group_open - 1 WHERE id = ? AND group_open > 0",
        owner,
        lease_expires_at,
        group_id,
    )


def _without(row: Any, *names: str) -> dict[str, Any]:
    return {key: value for key, value in dict(row).items() if key not in names}


def _marks(values: Sequence[object]) -> str:
    return ",".join("?" * len(values))


def _skip_locked(db: Database, table: str | None = None) -> str:
    # SQLite takes the whole database for a write transaction: nothing to skip there
    if db.name != "postgresql":
        return ""
    return f" FOR UPDATE OF {table} SKIP LOCKED" if table else " FOR UPDATE SKIP LOCKED"


def _for_update(db: Database) -> str:
    return " FOR UPDATE" if db.name == "postgresql" else ""


def _option(db: Database, name: str) -> str:
    """SQL for one field of a job's options (JSON text), as text."""
    if db.name == "postgresql":
        return f"(j.options::json ->> '{name}')"
    return f"json_extract(j.options, '$.{name}')"
