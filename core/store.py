"""Persistence: conversations, turns, images, jobs and user defaults in SQLite."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Iterable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiosqlite

from core import metrics
from core.config import ConfigError
from core.conversations import StoredPart, Turn
from core.errors import StoreError
from core.jobs import Job, UsageSummary
from core.options import Options
from core.quotas import Counts

log = logging.getLogger(__name__)

_BUSY_TIMEOUT_MS = 10_000  # how long a write waits for another process's
_FORGET_BATCH = 50  # rows deleted in one transaction by retention
_VACUUM_PAGES = 2048  # pages given back per slice (8 MB of 4 KiB pages)

# Each entry moves the schema one version up; never edit one that has shipped.
MIGRATIONS: tuple[str, ...] = (
    """
    CREATE TABLE images (
        sha256 TEXT PRIMARY KEY,
        mime_type TEXT NOT NULL,
        width INTEGER NOT NULL,
        height INTEGER NOT NULL,
        byte_size INTEGER NOT NULL,
        data BLOB NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE TABLE conversations (
        id INTEGER PRIMARY KEY,
        platform TEXT NOT NULL,
        tenant TEXT NOT NULL,
        thread_key TEXT NOT NULL,
        created_at REAL NOT NULL,
        UNIQUE (platform, tenant, thread_key)
    );
    CREATE TABLE turns (
        id INTEGER PRIMARY KEY,
        conversation_id INTEGER NOT NULL REFERENCES conversations(id),
        parent_id INTEGER REFERENCES turns(id),
        role TEXT NOT NULL CHECK (role IN ('user', 'model')),
        author_id TEXT,
        model_id TEXT,
        parts TEXT NOT NULL,
        created_at REAL NOT NULL
    );
    CREATE INDEX turns_by_conversation ON turns (conversation_id, id);
    CREATE TABLE message_links (
        platform TEXT NOT NULL,
        tenant TEXT NOT NULL,
        message_key TEXT NOT NULL,
        turn_id INTEGER NOT NULL REFERENCES turns(id),
        job_id TEXT,
        PRIMARY KEY (platform, tenant, message_key)
    );
    CREATE TABLE jobs (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        id TEXT NOT NULL UNIQUE,
        idempotency_key TEXT NOT NULL UNIQUE,
        kind TEXT NOT NULL,
        platform TEXT NOT NULL,
        tenant TEXT NOT NULL,
        user_id TEXT NOT NULL,
        conversation_id INTEGER NOT NULL REFERENCES conversations(id),
        user_turn_id INTEGER NOT NULL REFERENCES turns(id),
        model_turn_id INTEGER REFERENCES turns(id),
        prompt TEXT NOT NULL,
        options TEXT NOT NULL,
        target TEXT NOT NULL,
        state TEXT NOT NULL CHECK (state IN ('queued', 'running', 'succeeded', 'failed')),
        owner TEXT,
        lease_expires_at REAL,
        attempts INTEGER NOT NULL DEFAULT 0,
        api_calls INTEGER NOT NULL DEFAULT 0,
        error_message TEXT,
        error_detail TEXT,
        notice TEXT,
        prompt_tokens INTEGER NOT NULL DEFAULT 0,
        output_tokens INTEGER NOT NULL DEFAULT 0,
        total_tokens INTEGER NOT NULL DEFAULT 0,
        cost_usd REAL NOT NULL DEFAULT 0,
        created_at REAL NOT NULL,
        started_at REAL,
        finished_at REAL,
        delivered_at REAL,
        delivery_attempts INTEGER NOT NULL DEFAULT 0,
        delivery_error TEXT,
        delivery_abandoned_at REAL
    );
    CREATE INDEX jobs_by_user ON jobs (platform, tenant, user_id, state);
    CREATE INDEX jobs_by_state ON jobs (state, platform);
    CREATE TABLE user_defaults (
        platform TEXT NOT NULL,
        tenant TEXT NOT NULL,
        user_id TEXT NOT NULL,
        options TEXT NOT NULL,
        PRIMARY KEY (platform, tenant, user_id)
    );
    """,
    # requests acknowledged to a platform but not yet stored as jobs (downloads under way)
    """
    CREATE TABLE intake (
        key TEXT PRIMARY KEY,
        platform TEXT NOT NULL,
        payload TEXT NOT NULL,
        owner TEXT NOT NULL,
        lease_expires_at REAL NOT NULL,
        created_at REAL NOT NULL
    );
    """,
    # runs that reached the image API (the run limit counts these, not claims); a row per
    # process written on each upkeep, which proves the database still takes writes; when
    # an image was last used and when a conversation was cleared, for retention
    """
    ALTER TABLE jobs ADD COLUMN paid_runs INTEGER NOT NULL DEFAULT 0;
    ALTER TABLE jobs ADD COLUMN last_paid_run INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE heartbeats (
        owner TEXT PRIMARY KEY,
        seen_at REAL NOT NULL
    );
    ALTER TABLE images ADD COLUMN last_used_at REAL;
    UPDATE images SET last_used_at = created_at;
    CREATE INDEX images_by_use ON images (last_used_at);
    ALTER TABLE conversations ADD COLUMN cleared_at REAL;
    CREATE INDEX jobs_by_conversation ON jobs (conversation_id);
    """,
)

_JOB_COLUMNS = (
    "seq, id, idempotency_key, kind, platform, tenant, user_id, conversation_id, user_turn_id, "
    "model_turn_id, prompt, options, target, state, attempts, api_calls, paid_runs, "
    "error_message, notice, "
    "output_tokens, total_tokens, cost_usd, created_at, started_at, finished_at, delivered_at, "
    "delivery_attempts"
)


@dataclass(frozen=True)
class StoredImage:
    sha256: str
    mime_type: str
    width: int
    height: int
    data: bytes


@dataclass(frozen=True)
class NewImage:
    data: bytes
    mime_type: str
    width: int
    height: int
    sha256: str  # image_hash(data), worked out once by whoever made it


@dataclass(frozen=True)
class NewJob:
    id: str
    idempotency_key: str
    kind: str
    platform: str
    tenant: str
    user_id: str
    prompt: str
    options: Options
    target: dict[str, Any]


@dataclass(frozen=True)
class JobResult:
    """A finished generation, stored in one transaction with its model turn."""

    state: str  # succeeded | failed
    api_calls: int  # in this run, for the log; the job's total is counted as each call is sent
    parts: Sequence[StoredPart] = ()
    images: Sequence[NewImage] = ()
    model_id: str | None = None
    error_message: str | None = None
    error_detail: str | None = None
    notice: str | None = None
    prompt_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    cost_usd: float = 0.0


def image_hash(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _dump_parts(parts: Iterable[StoredPart]) -> str:
    return json.dumps(
        [{k: v for k, v in part.__dict__.items() if v is not None} for part in parts],
        separators=(",", ":"),
    )


def _load_parts(raw: str) -> tuple[StoredPart, ...]:
    return tuple(StoredPart(**item) for item in json.loads(raw))


def _dump_options(options: Options) -> str:
    return json.dumps({k: v for k, v in options.__dict__.items() if v is not None})


def _load_options(raw: str) -> Options:
    return Options(**json.loads(raw))


def _turn(row: aiosqlite.Row) -> Turn:
    return Turn(
        id=row["id"],
        conversation_id=row["conversation_id"],
        parent_id=row["parent_id"],
        role=row["role"],
        author_id=row["author_id"],
        parts=_load_parts(row["parts"]),
        model_id=row["model_id"],
        created_at=row["created_at"],
    )


def _job(row: aiosqlite.Row) -> Job:
    values = dict(row)
    values["options"] = _load_options(values["options"])
    values["target"] = json.loads(values["target"])
    return Job(**values)


class Store:
    """One SQLite connection; a lock keeps each transaction whole between coroutines."""

    def __init__(
        self,
        db: aiosqlite.Connection,
        path: Path | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._db = db
        self.path = path
        # the time leases, retention and records are measured by; tests pass their own
        self._clock = clock
        self._holds: list[tuple[tuple[str, str, str, str, float], asyncio.Future[bool]]] = []
        self._hold_writer: asyncio.Task[None] | None = None
        self._lock = asyncio.Lock()
        # why the last write failed, and since when; None while writes work
        self.write_error: str | None = None
        self.write_error_since: float | None = None

    @classmethod
    async def open(cls, path: Path | str, clock: Callable[[], float] = time.time) -> Store:
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        db = await aiosqlite.connect(str(path), isolation_level=None)
        try:
            return await cls._set_up(db, path, clock)
        except BaseException as exc:
            await db.close()  # or its thread keeps the process alive
            if isinstance(exc, sqlite3.DatabaseError):
                raise ConfigError(
                    f"the database at {path} cannot be used ({exc}): point DATABASE_URL at "
                    "another file, or move this one away"
                ) from None
            raise

    @classmethod
    async def _set_up(
        cls, db: aiosqlite.Connection, path: Path | str, clock: Callable[[], float]
    ) -> Store:
        db.row_factory = aiosqlite.Row
        await db.execute("PRAGMA journal_mode=WAL")
        await db.execute("PRAGMA synchronous=NORMAL")
        await db.execute("PRAGMA foreign_keys=ON")
        await db.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")
        # the write-ahead log is cut back to this once checkpointed, after big deletions
        await db.execute("PRAGMA journal_size_limit=67108864")
        # freed pages go back to the file system after retention deletes rows; switching an
        # existing file over rewrites it once
        if (await (await db.execute("PRAGMA auto_vacuum")).fetchone())[0] != 2:
            await db.execute("PRAGMA auto_vacuum=INCREMENTAL")
            await db.execute("VACUUM")
        store = cls(db, None if str(path) == ":memory:" else Path(path), clock)
        await store._migrate()
        metrics.DATABASE_BYTES.set_function(store.size_bytes)
        return store

    async def close(self) -> None:
        await self._db.close()

    async def _migrate(self) -> None:
        async with self._tx() as db:
            row = await (await db.execute("PRAGMA user_version")).fetchone()
            version = row[0] if row else 0
            for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
                for statement in filter(str.strip, script.split(";")):
                    await db.execute(statement)
                await db.execute(f"PRAGMA user_version={number}")

    @asynccontextmanager
    async def _tx(self) -> AsyncIterator[aiosqlite.Connection]:
        """A write transaction. A write the database refuses (disk full, read-only, I/O)
        raises StoreError, and `write_error` says why until a write works again."""
        async with self._lock:
            try:
                try:
                    # inside the try: a task cancelled while BEGIN is queued must still roll
                    # back, since aiosqlite runs the statement anyway
                    await self._db.execute("BEGIN IMMEDIATE")
                    yield self._db
                    await asyncio.shield(self._db.execute("COMMIT"))
                except BaseException:
                    await asyncio.shield(self._rollback())
                    raise
            except sqlite3.IntegrityError:
                raise
            except (sqlite3.OperationalError, sqlite3.DatabaseError) as exc:
                self._refused(exc)
                raise StoreError(f"{type(exc).__name__}: {exc}") from exc
            self.write_error = self.write_error_since = None

    def now(self) -> float:
        return self._clock()

    def _refused(self, exc: Exception) -> None:
        metrics.STORE_ERRORS.inc()
        if self.write_error is None:
            self.write_error_since = self._clock()
            log.error("the database refused a write: %s", exc)
        self.write_error = str(exc)

    async def _rollback(self) -> None:
        try:
            await self._db.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # BEGIN itself failed, or the fault ended the transaction already

    async def _one(
        self, sql: str, params: Sequence[Any] | dict[str, Any] = ()
    ) -> aiosqlite.Row | None:
        async with self._lock:
            return await (await self._db.execute(sql, params)).fetchone()

    async def _all(self, sql: str, params: Sequence[Any] = ()) -> list[aiosqlite.Row]:
        async with self._lock:
            return list(await (await self._db.execute(sql, params)).fetchall())

    # images

    async def _put_image(self, db: aiosqlite.Connection, image: NewImage) -> str:
        sha = image.sha256
        now = self._clock()
        await db.execute(
            "INSERT INTO images (sha256, mime_type, width, height, byte_size, data, "
            "created_at, last_used_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (sha256) DO UPDATE SET last_used_at = excluded.last_used_at",
            (
                sha,
                image.mime_type,
                image.width,
                image.height,
                len(image.data),
                image.data,
                now,
                now,
            ),
        )
        return sha

    async def images(self, hashes: Iterable[str]) -> dict[str, StoredImage]:
        wanted = sorted(set(hashes))
        if not wanted:
            return {}
        marks = ",".join("?" * len(wanted))
        rows = await self._all(
            f"SELECT sha256, mime_type, width, height, data FROM images WHERE sha256 IN ({marks})",
            wanted,
        )
        return {row["sha256"]: StoredImage(**dict(row)) for row in rows}

    # conversations and turns

    async def thread_key(self, conversation_id: int) -> str | None:
        row = await self._one(
            "SELECT thread_key FROM conversations WHERE id = ?", (conversation_id,)
        )
        return row["thread_key"] if row else None

    async def conversation(
        self, platform: str, tenant: str, thread_key: str
    ) -> tuple[int, float | None] | None:
        """The conversation's id, and when retention cleared it (None while it is kept)."""
        row = await self._one(
            "SELECT id, cleared_at FROM conversations WHERE platform = ? AND tenant = ? "
            "AND thread_key = ?",
            (platform, tenant, thread_key),
        )
        return (row["id"], row["cleared_at"]) if row else None

    async def forget(self, conversations_before: float | None, images_before: float | None) -> int:
        """Retention: clear conversations with no turn since `conversations_before` (their
        turns, jobs and message links; the conversation row stays, marked, so a reply is told
        why), and drop images not used since `images_before`. Returns the rows removed.

        Done in small transactions, so requests arriving meanwhile wait milliseconds, not
        the whole pass."""
        removed = 0
        if conversations_before is not None:
            rows = await self._all(
                "SELECT conversation_id FROM turns GROUP BY conversation_id "
                "HAVING MAX(created_at) < ? AND conversation_id NOT IN (SELECT "
                "conversation_id FROM jobs WHERE state IN ('queued', 'running'))",
                (conversations_before,),
            )
            for row in rows:
                removed += await self._clear_conversation(row["conversation_id"])
        while images_before is not None:
            async with self._tx() as db:
                cursor = await db.execute(
                    "DELETE FROM images WHERE sha256 IN (SELECT sha256 FROM images "
                    "WHERE last_used_at < ? LIMIT ?)",
                    (images_before, _FORGET_BATCH),
                )
            removed += cursor.rowcount
            if cursor.rowcount < _FORGET_BATCH:
                break
        if removed:
            await self._give_back_space()
        return removed

    async def _clear_conversation(self, conversation_id: int) -> int:
        removed = 0
        async with self._tx() as db:
            for sql in (
                "DELETE FROM message_links WHERE turn_id IN "
                "(SELECT id FROM turns WHERE conversation_id = ?)",
                "DELETE FROM jobs WHERE conversation_id = ?",
                "DELETE FROM turns WHERE conversation_id = ?",
            ):
                removed += (await db.execute(sql, (conversation_id,))).rowcount
            await db.execute(
                "UPDATE conversations SET cleared_at = ? WHERE id = ?",
                (self._clock(), conversation_id),
            )
        return removed

    async def _give_back_space(self) -> None:
        """Free pages go back to the file system a slice at a time; the checkpoint then
        shrinks the file and its log, without waiting: if another process is reading, the
        log is cut back at a later checkpoint instead."""
        free = None
        while True:
            async with self._lock:
                # executescript runs the pragma to the end (execute() frees one page a step)
                await self._db.executescript(f"PRAGMA incremental_vacuum({_VACUUM_PAGES});")
                row = await (await self._db.execute("PRAGMA freelist_count")).fetchone()
            left = row[0] if row else 0
            if not left or left == free:  # all given back, or the file cannot give back more
                break
            free = left
        async with self._lock:
            await self._db.execute("PRAGMA busy_timeout=0")
            try:
                await self._db.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                await self._db.execute(f"PRAGMA busy_timeout={_BUSY_TIMEOUT_MS}")

    async def touch_images(self, hashes: Iterable[str]) -> None:
        """These images are in use (on the path of a new request): retention keeps them."""
        wanted = sorted(set(hashes))
        if not wanted:
            return
        async with self._tx() as db:
            await db.executemany(
                "UPDATE images SET last_used_at = ? WHERE sha256 = ?",
                [(self._clock(), sha) for sha in wanted],
            )

    def size_bytes(self) -> int:
        """The database on disk, its write-ahead log included."""
        if self.path is None:
            return 0
        return sum(
            p.stat().st_size
            for p in (self.path, self.path.with_name(self.path.name + "-wal"))
            if p.exists()
        )

    async def turn(self, turn_id: int) -> Turn | None:
        row = await self._one("SELECT * FROM turns WHERE id = ?", (turn_id,))
        return _turn(row) if row else None

    async def latest_turn(self, conversation_id: int) -> Turn | None:
        row = await self._one(
            "SELECT * FROM turns WHERE conversation_id = ? ORDER BY id DESC LIMIT 1",
            (conversation_id,),
        )
        return _turn(row) if row else None

    async def path_to(self, turn_id: int) -> list[Turn]:
        """The turns from the root of the tree down to `turn_id`, root first."""
        rows = await self._all(
            """
            WITH RECURSIVE path(id, depth) AS (
                SELECT id, 0 FROM turns WHERE id = ?
                UNION ALL
                SELECT turns.parent_id, path.depth + 1 FROM turns JOIN path ON turns.id = path.id
                WHERE turns.parent_id IS NOT NULL
            )
            SELECT turns.* FROM path JOIN turns ON turns.id = path.id ORDER BY path.depth DESC
            """,
            (turn_id,),
        )
        return [_turn(row) for row in rows]

    async def turn_for_message(self, platform: str, tenant: str, message_key: str) -> Turn | None:
        row = await self._one(
            "SELECT turns.* FROM message_links JOIN turns ON turns.id = message_links.turn_id "
            "WHERE platform = ? AND tenant = ? AND message_key = ?",
            (platform, tenant, message_key),
        )
        return _turn(row) if row else None

    async def job_for_message(self, platform: str, tenant: str, message_key: str) -> Job | None:
        row = await self._one(
            f"SELECT {_JOB_COLUMNS} FROM jobs WHERE id = (SELECT job_id FROM message_links "
            "WHERE platform = ? AND tenant = ? AND message_key = ?)",
            (platform, tenant, message_key),
        )
        return _job(row) if row else None

    # jobs

    async def job(self, job_id: str) -> Job | None:
        row = await self._one(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE id = ?", (job_id,))
        return _job(row) if row else None

    async def job_for_turn(self, turn_id: int) -> Job | None:
        """The job whose user or model turn `turn_id` is, newest first."""
        row = await self._one(
            f"SELECT {_JOB_COLUMNS} FROM jobs WHERE model_turn_id = ? OR user_turn_id = ? "
            "ORDER BY seq DESC LIMIT 1",
            (turn_id, turn_id),
        )
        return _job(row) if row else None

    async def release(self, owner: str, job_ids: Iterable[str] | None = None) -> None:
        """Let the next process take our open jobs at once (`job_ids`: only those); with no
        ids, on a clean shutdown, our held requests and heartbeat too."""
        async with self._tx() as db:
            if job_ids is not None:
                await db.executemany(
                    "UPDATE jobs SET lease_expires_at = 0 WHERE id = ? AND owner = ?",
                    [(job_id, owner) for job_id in job_ids],
                )
                return
            await db.execute("UPDATE jobs SET lease_expires_at = 0 WHERE owner = ?", (owner,))
            await db.execute("UPDATE intake SET lease_expires_at = 0 WHERE owner = ?", (owner,))
            await db.execute("DELETE FROM heartbeats WHERE owner = ?", (owner,))

    async def job_by_key(self, idempotency_key: str) -> Job | None:
        row = await self._one(
            f"SELECT {_JOB_COLUMNS} FROM jobs WHERE idempotency_key = ?", (idempotency_key,)
        )
        return _job(row) if row else None

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
    ) -> tuple[Job, bool]:
        """Persist a job, its conversation and (unless `user_parts` is None) its user turn.

        With `user_parts` None the job reuses `parent_turn_id` as its user turn (a re-roll).
        Returns the existing job and False when the idempotency key was seen before.
        Images in `user_parts` are referenced by hash; their bytes come in `user_images`.
        """
        now = self._clock()
        async with self._tx() as db:
            existing = await (
                await db.execute(
                    f"SELECT {_JOB_COLUMNS} FROM jobs WHERE idempotency_key = ?",
                    (job.idempotency_key,),
                )
            ).fetchone()
            if existing:
                return _job(existing), False
            await db.execute(
                "INSERT OR IGNORE INTO conversations (platform, tenant, thread_key, created_at) "
                "VALUES (?, ?, ?, ?)",
                (job.platform, job.tenant, thread_key, now),
            )
            row = await (
                await db.execute(
                    "SELECT id FROM conversations WHERE platform = ? AND tenant = ? "
                    "AND thread_key = ?",
                    (job.platform, job.tenant, thread_key),
                )
            ).fetchone()
            assert row is not None
            conversation_id = row["id"]
            for image in user_images:
                await self._put_image(db, image)
            if user_parts is None:
                if parent_turn_id is None:
                    raise ValueError("a job without a new user turn needs an existing one")
                user_turn_id = parent_turn_id
            else:
                cursor = await db.execute(
                    "INSERT INTO turns (conversation_id, parent_id, role, author_id, parts, "
                    "created_at) VALUES (?, ?, 'user', ?, ?, ?)",
                    (conversation_id, parent_turn_id, job.user_id, _dump_parts(user_parts), now),
                )
                assert cursor.lastrowid is not None
                user_turn_id = cursor.lastrowid
            await db.execute("DELETE FROM intake WHERE key = ?", (job.idempotency_key,))
            await db.execute(
                "INSERT INTO jobs (id, idempotency_key, kind, platform, tenant, user_id, "
                "conversation_id, user_turn_id, prompt, options, target, state, owner, "
                "lease_expires_at, created_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'queued', ?, ?, ?)",
                (
                    job.id,
                    job.idempotency_key,
                    job.kind,
                    job.platform,
                    job.tenant,
                    job.user_id,
                    conversation_id,
                    user_turn_id,
                    job.prompt,
                    _dump_options(job.options),
                    json.dumps(job.target),
                    owner,
                    now + lease_seconds,
                    now,
                ),
            )
            created = await (
                await db.execute(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE id = ?", (job.id,))
            ).fetchone()
        assert created is not None
        return _job(created), True

    async def quota_counts(
        self, platform: str, tenant: str, user_id: str, day_start: float, month_start: float
    ) -> Counts:
        """Usage that limits apply to; images still being made count as made."""
        row = await self._one(
            """
            SELECT
              COALESCE(SUM(user_id = :user AND created_at >= :day AND state != 'failed'), 0),
              COALESCE(SUM(created_at >= :day AND state != 'failed'), 0),
              COALESCE(SUM(CASE WHEN created_at >= :month THEN cost_usd ELSE 0 END), 0),
              COALESCE(SUM(user_id = :user AND state IN ('queued', 'running')), 0)
            FROM jobs WHERE platform = :platform AND tenant = :tenant
            """,
            {
                "user": user_id,
                "day": day_start,
                "month": month_start,
                "platform": platform,
                "tenant": tenant,
            },
        )
        total = await self._one("SELECT COUNT(*) FROM jobs WHERE state IN ('queued', 'running')")
        assert row is not None and total is not None
        return Counts(
            user_today=row[0],
            tenant_today=row[1],
            tenant_month_cost=row[2],
            user_in_flight=row[3],
            total_in_flight=total[0],
        )

    async def queue_position(self, job: Job) -> int:
        """1 for the next job to run among the queued jobs of the same owner."""
        row = await self._one(
            "SELECT COUNT(*) FROM jobs WHERE state = 'queued' AND seq <= ? AND owner = "
            "(SELECT owner FROM jobs WHERE id = ?)",
            (job.seq, job.id),
        )
        return row[0] if row else 0

    async def claim(self, job_id: str, owner: str, lease_seconds: float) -> Job | None:
        """Move a queued job of `owner` to running; None if it is not ours or not queued."""
        now = self._clock()
        async with self._tx() as db:
            cursor = await db.execute(
                "UPDATE jobs SET state = 'running', started_at = ?, attempts = attempts + 1, "
                "lease_expires_at = ? WHERE id = ? AND owner = ? AND state = 'queued'",
                (now, now + lease_seconds, job_id, owner),
            )
            if cursor.rowcount != 1:
                return None
            row = await (
                await db.execute(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE id = ?", (job_id,))
            ).fetchone()
        return _job(row) if row else None

    async def count_api_call(self, job_id: str) -> None:
        """One more request to the image API is about to be sent for this job; the first of
        a run also counts the run as paid."""
        async with self._tx() as db:
            await db.execute(
                "UPDATE jobs SET api_calls = api_calls + 1, paid_runs = paid_runs + CASE "
                "WHEN last_paid_run = attempts THEN 0 ELSE 1 END, last_paid_run = attempts "
                "WHERE id = ?",
                (job_id,),
            )

    async def finish(self, job_id: str, owner: str, result: JobResult) -> Job | None:
        """Store the model turn, its images and the job's final state in one transaction."""
        now = self._clock()
        async with self._tx() as db:
            row = await (
                await db.execute(
                    "SELECT conversation_id, user_turn_id FROM jobs WHERE id = ? AND owner = ? "
                    "AND state = 'running'",
                    (job_id, owner),
                )
            ).fetchone()
            if row is None:
                return None  # taken over by another process after our lease ran out
            model_turn_id = None
            if result.parts:
                for image in result.images:
                    await self._put_image(db, image)
                cursor = await db.execute(
                    "INSERT INTO turns (conversation_id, parent_id, role, author_id, model_id, "
                    "parts, created_at) VALUES (?, ?, 'model', NULL, ?, ?, ?)",
                    (
                        row["conversation_id"],
                        row["user_turn_id"],
                        result.model_id,
                        _dump_parts(result.parts),
                        now,
                    ),
                )
                model_turn_id = cursor.lastrowid
            await db.execute(
                "UPDATE jobs SET state = ?, model_turn_id = ?, "
                "error_message = ?, error_detail = ?, notice = ?, prompt_tokens = ?, "
                "output_tokens = ?, total_tokens = ?, cost_usd = ?, finished_at = ? "
                "WHERE id = ?",
                (
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
                ),
            )
            updated = await (
                await db.execute(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE id = ?", (job_id,))
            ).fetchone()
        return _job(updated) if updated else None

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
        async with self._tx() as db:
            if error is None:
                await db.execute(
                    "UPDATE jobs SET delivered_at = ?, delivery_attempts = delivery_attempts + 1, "
                    "delivery_error = NULL WHERE id = ?",
                    (now, job.id),
                )
                turn_id = job.model_turn_id or job.user_turn_id
                for key in message_keys:
                    await db.execute(
                        "INSERT OR REPLACE INTO message_links (platform, tenant, message_key, "
                        "turn_id, job_id) VALUES (?, ?, ?, ?, ?)",
                        (job.platform, job.tenant, key, turn_id, job.id),
                    )
            else:
                await db.execute(
                    "UPDATE jobs SET delivery_attempts = delivery_attempts + 1, "
                    "delivery_error = ?, delivery_abandoned_at = ? WHERE id = ?",
                    (error, now if abandon else None, job.id),
                )

    async def link_message(self, job: Job, message_key: str) -> None:
        """Tie a platform message (a progress post, say) to the job's latest turn."""
        async with self._tx() as db:
            await db.execute(
                "INSERT OR REPLACE INTO message_links (platform, tenant, message_key, turn_id, "
                "job_id) VALUES (?, ?, ?, ?, ?)",
                (
                    job.platform,
                    job.tenant,
                    message_key,
                    job.model_turn_id or job.user_turn_id,
                    job.id,
                ),
            )

    async def update_target(self, job_id: str, target: dict[str, Any]) -> Job:
        async with self._tx() as db:
            await db.execute(
                "UPDATE jobs SET target = ? WHERE id = ?", (json.dumps(target), job_id)
            )
            row = await (
                await db.execute(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE id = ?", (job_id,))
            ).fetchone()
        assert row is not None
        return _job(row)

    async def message_keys(self, job_id: str) -> list[str]:
        rows = await self._all(
            "SELECT message_key FROM message_links WHERE job_id = ? ORDER BY rowid", (job_id,)
        )
        return [row["message_key"] for row in rows]

    async def hold(
        self, platform: str, key: str, payload: dict[str, Any], owner: str, lease_seconds: float
    ) -> bool:
        """Keep a request until its job exists; False when it is held or a job has the key.

        Every acknowledgement waits for its hold, so holds that arrive together are written
        in one transaction (one commit for a burst rather than one each)."""
        row = (platform, key, json.dumps(payload), owner, lease_seconds)
        answer: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        self._holds.append((row, answer))
        if self._hold_writer is None or self._hold_writer.done():
            self._hold_writer = asyncio.create_task(self._write_holds(), name="imagebot-holds")
        return await answer

    async def _write_holds(self) -> None:
        while self._holds:
            batch, self._holds = self._holds, []
            try:
                async with self._tx() as db:
                    held = [await self._hold_one(db, *row) for row, _ in batch]
            except Exception as exc:
                for _, answer in batch:
                    if not answer.done():
                        answer.set_exception(exc)
                continue
            for (_, answer), result in zip(batch, held, strict=True):
                if not answer.done():
                    answer.set_result(result)

    async def _hold_one(
        self,
        db: aiosqlite.Connection,
        platform: str,
        key: str,
        payload: str,
        owner: str,
        lease_seconds: float,
    ) -> bool:
        now = self._clock()
        job = await (
            await db.execute("SELECT 1 FROM jobs WHERE idempotency_key = ?", (key,))
        ).fetchone()
        if job is not None:
            return False
        cursor = await db.execute(
            "INSERT INTO intake (key, platform, payload, owner, lease_expires_at, created_at) "
            "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (key) DO UPDATE SET owner = excluded.owner, "
            "lease_expires_at = excluded.lease_expires_at WHERE intake.owner = excluded.owner",
            (key, platform, payload, owner, now + lease_seconds, now),
        )
        return cursor.rowcount == 1

    async def release_hold(self, key: str) -> None:
        async with self._tx() as db:
            await db.execute("DELETE FROM intake WHERE key = ?", (key,))

    async def take_over_held(
        self, platforms: Sequence[str], owner: str, lease_seconds: float
    ) -> list[dict[str, Any]]:
        """Held requests of `platforms` whose owner died before storing them: now ours."""
        if not platforms:
            return []
        now = self._clock()
        marks = ",".join("?" * len(platforms))
        async with self._tx() as db:
            rows = await (
                await db.execute(
                    f"SELECT key, payload FROM intake WHERE platform IN ({marks}) "
                    "AND lease_expires_at < ? AND owner != ? ORDER BY created_at",
                    (*platforms, now, owner),
                )
            ).fetchall()
            for row in rows:
                await db.execute(
                    "UPDATE intake SET owner = ?, lease_expires_at = ? WHERE key = ?",
                    (owner, now + lease_seconds, row["key"]),
                )
        return [{**json.loads(row["payload"]), "key": row["key"]} for row in rows]

    async def renew_leases(
        self, owner: str, lease_seconds: float, job_ids: Iterable[str], hold_keys: Iterable[str]
    ) -> None:
        """Keep the jobs and held requests this process is still advancing (`job_ids`,
        `hold_keys`): one it lost track of is left to lapse, so it is taken over."""
        expires = self._clock() + lease_seconds
        async with self._tx() as db:
            await db.executemany(
                "UPDATE intake SET lease_expires_at = ? WHERE key = ? AND owner = ?",
                [(expires, key, owner) for key in hold_keys],
            )
            await db.executemany(
                "UPDATE jobs SET lease_expires_at = ? WHERE id = ? AND owner = ?",
                [(expires, job_id, owner) for job_id in job_ids],
            )
            await db.execute(
                "INSERT OR REPLACE INTO heartbeats (owner, seen_at) VALUES (?, ?)",
                (owner, self._clock()),
            )

    async def requeue(self, job_id: str, owner: str) -> None:
        """A run this process claimed but could not carry on (the store failed under it):
        queued again, for this process to run once writes work."""
        async with self._tx() as db:
            await db.execute(
                "UPDATE jobs SET state = 'queued' WHERE id = ? AND owner = ? AND state = 'running'",
                (job_id, owner),
            )

    async def take_over_expired(
        self, platforms: Sequence[str], owner: str, lease_seconds: float
    ) -> list[Job]:
        """Jobs of `platforms` whose lease ran out (a dead process, or a job this process
        lost track of): now ours. Running jobs go back to queued: their result was never
        stored, so they run again.
        """
        if not platforms:
            return []
        now = self._clock()
        marks = ",".join("?" * len(platforms))
        async with self._tx() as db:
            rows = await (
                await db.execute(
                    f"SELECT id FROM jobs WHERE platform IN ({marks}) AND lease_expires_at < ? "
                    "AND (state IN ('queued', 'running') OR "
                    "(delivered_at IS NULL AND delivery_abandoned_at IS NULL))",
                    (*platforms, now),
                )
            ).fetchall()
            ids = [row["id"] for row in rows]
            for job_id in ids:
                await db.execute(
                    "UPDATE jobs SET owner = ?, lease_expires_at = ?, state = CASE state "
                    "WHEN 'running' THEN 'queued' ELSE state END WHERE id = ?",
                    (owner, now + lease_seconds, job_id),
                )
            taken = []
            for job_id in ids:
                row = await (
                    await db.execute(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE id = ?", (job_id,))
                ).fetchone()
                if row:
                    taken.append(_job(row))
        return sorted(taken, key=lambda job: job.seq)

    async def fail_open_job(
        self, job_id: str, message: str, detail: str, *, requester_gone: bool = False
    ) -> Job | None:
        """Give up on an open job: it ends failed with `message`.

        `requester_gone` also closes its delivery (a terminal session that has ended).
        """
        now = self._clock()
        async with self._tx() as db:
            await db.execute(
                "UPDATE jobs SET state = CASE WHEN state IN ('queued', 'running') THEN 'failed' "
                "ELSE state END, error_message = COALESCE(error_message, ?), "
                "error_detail = COALESCE(error_detail, ?), finished_at = COALESCE(finished_at, ?), "
                "delivery_abandoned_at = ? WHERE id = ?",
                (message, detail, now, now if requester_gone else None, job_id),
            )
            row = await (
                await db.execute(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE id = ?", (job_id,))
            ).fetchone()
        return _job(row) if row else None

    async def usage(
        self, platform: str, tenant: str, user_id: str | None, since: float
    ) -> UsageSummary:
        where = "platform = ? AND tenant = ? AND created_at >= ?"
        params: list[Any] = [platform, tenant, since]
        if user_id is not None:
            where += " AND user_id = ?"
            params.append(user_id)
        rows = await self._all(
            f"SELECT state, options, cost_usd FROM jobs WHERE {where} AND state IN "
            "('succeeded', 'failed')",
            params,
        )
        by_model: dict[str, int] = {}
        images = failed = 0
        cost = 0.0
        for row in rows:
            cost += row["cost_usd"]
            if row["state"] == "succeeded":
                images += 1
                model = _load_options(row["options"]).model or "?"
                by_model[model] = by_model.get(model, 0) + 1
            else:
                failed += 1
        return UsageSummary(images=images, failed=failed, cost_usd=cost, by_model=by_model)

    # per-user defaults

    async def user_defaults(self, platform: str, tenant: str, user_id: str) -> Options:
        row = await self._one(
            "SELECT options FROM user_defaults WHERE platform = ? AND tenant = ? AND user_id = ?",
            (platform, tenant, user_id),
        )
        return _load_options(row["options"]) if row else Options()

    async def set_user_defaults(
        self, platform: str, tenant: str, user_id: str, options: Options
    ) -> None:
        async with self._tx() as db:
            await db.execute(
                "INSERT OR REPLACE INTO user_defaults (platform, tenant, user_id, options) "
                "VALUES (?, ?, ?, ?)",
                (platform, tenant, user_id, _dump_options(options)),
            )

    async def counts(self) -> dict[str, int]:
        """Rows per table, for tests and health checks."""
        result = {}
        for table in ("images", "conversations", "turns", "jobs", "message_links", "intake"):
            row = await self._one(f"SELECT COUNT(*) FROM {table}")
            result[table] = row[0] if row else 0
        return result
