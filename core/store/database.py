"""The two databases the store runs on, behind one small interface.

SQL is written once, with `?` placeholders, in the subset SQLite and PostgreSQL share
(`ON CONFLICT`, `RETURNING`, `WITH RECURSIVE`); PostgreSQL's driver gets `$1, $2, …`. A
write is a transaction (`async with db.transaction() as tx`); a read outside one sees
committed data. A write the database refuses (disk full, read-only, connection lost)
raises StoreError, and `write_error` says why until a write works again.
"""

from __future__ import annotations

import asyncio
import logging
import re
import sqlite3
from collections.abc import AsyncIterator, Callable, Mapping, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, Protocol

import aiosqlite

from core import metrics
from core.errors import StoreError

log = logging.getLogger(__name__)

Row = Mapping[str, Any]  # aiosqlite.Row and asyncpg.Record both read by name and position

BUSY_TIMEOUT_MS = 10_000  # how long a SQLite write waits for another process's to end
# Pages of a new SQLite file. An image is a chain of overflow pages, each a WAL frame of
# its own: 16 KiB pages write a 6.5 MB JPEG in 17 ms, not 29 (64 KiB: 15), while a small
# transaction still writes a few small frames (64 KiB pages quadruple those bytes again and
# slow creating a job by 40%). A file keeps the page size it was made with.
PAGE_SIZE = 16_384
_PLACEHOLDER = re.compile(r"'[^']*'|\?")


class Tx(Protocol):
    """One transaction's statements."""

    async def fetch(self, sql: str, *args: Any) -> list[Any]: ...

    async def fetchrow(self, sql: str, *args: Any) -> Any | None: ...

    async def execute(self, sql: str, *args: Any) -> int:
        """Runs a statement; returns the rows it changed."""
        ...

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None: ...


class Database(Protocol):
    name: str  # "sqlite" or "postgresql"
    write_error: str | None
    write_error_since: float | None

    def transaction(self) -> Any:
        """`async with db.transaction() as tx:` one write transaction."""
        ...

    async def fetch(self, sql: str, *args: Any) -> list[Any]: ...

    async def fetchrow(self, sql: str, *args: Any) -> Any | None: ...

    async def schema_version(self) -> int: ...

    async def size_bytes(self) -> int: ...

    async def give_back_space(self, slice_bytes: int) -> None: ...

    async def listen(self, channel: str, wake: Callable[[], None]) -> None:
        """Calls `wake` whenever another process notifies `channel` (PostgreSQL only)."""
        ...

    async def close(self) -> None: ...


class _Refusals:
    """Why the last write failed, and since when; None while writes work."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock
        self.write_error: str | None = None
        self.write_error_since: float | None = None

    def refused(self, exc: BaseException) -> StoreError:
        metrics.STORE_ERRORS.inc()
        if self.write_error is None:
            self.write_error_since = self.clock()
            log.error("the database refused a write: %s", exc)
        self.write_error = str(exc)
        return StoreError(f"{type(exc).__name__}: {exc}")

    def worked(self) -> None:
        self.write_error = self.write_error_since = None


# SQLite


class _SqliteTx:
    def __init__(self, db: aiosqlite.Connection) -> None:
        self._db = db

    async def fetch(self, sql: str, *args: Any) -> list[Any]:
        return list(await (await self._db.execute(sql, args)).fetchall())

    async def fetchrow(self, sql: str, *args: Any) -> Any | None:
        return await (await self._db.execute(sql, args)).fetchone()

    async def execute(self, sql: str, *args: Any) -> int:
        return (await self._db.execute(sql, args)).rowcount

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        await self._db.executemany(sql, rows)


_SETUP_ATTEMPTS = 20


async def _set_up(db: aiosqlite.Connection, page_size: int) -> None:
    # only before the file has its first page: in WAL mode, not even VACUUM changes it
    # afterwards, and an existing file is never rewritten for it
    if (await (await db.execute("PRAGMA page_count")).fetchone())[0] == 0:  # type: ignore[index]
        await db.execute(f"PRAGMA page_size={int(page_size)}")
    for pragma in (
        "journal_mode=WAL",
        "synchronous=NORMAL",
        "foreign_keys=ON",
        # the write-ahead log is cut back to this once checkpointed
        "journal_size_limit=67108864",
    ):
        await db.execute(f"PRAGMA {pragma}")
    # freed pages go back to the file system after retention deletes rows; switching an
    # existing file over rewrites it once
    if (await (await db.execute("PRAGMA auto_vacuum")).fetchone())[0] != 2:  # type: ignore[index]
        await db.execute("PRAGMA auto_vacuum=INCREMENTAL")
        await db.execute("VACUUM")


class SqliteDatabase(_Refusals):
    """One connection; a lock keeps each transaction whole between coroutines."""

    name = "sqlite"

    def __init__(
        self, db: aiosqlite.Connection, path: Path | None, clock: Callable[[], float]
    ) -> None:
        super().__init__(clock)
        self.connection = db  # the one connection every statement goes through
        self.path = path
        self.lock = asyncio.Lock()

    @classmethod
    async def open(
        cls, path: Path | str, clock: Callable[[], float], *, page_size: int = PAGE_SIZE
    ) -> SqliteDatabase:
        """Opens or makes the database; `page_size` applies to a new file only."""
        if str(path) != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        db = await aiosqlite.connect(str(path), isolation_level=None)
        try:
            db.row_factory = aiosqlite.Row
            await db.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")
            for attempt in range(_SETUP_ATTEMPTS):
                try:
                    await _set_up(db, page_size)
                    break
                except sqlite3.OperationalError as exc:
                    # two processes making the same new file at once: switching it to WAL
                    # or vacuuming it can be refused at once, without the busy wait
                    if "locked" not in str(exc) or attempt == _SETUP_ATTEMPTS - 1:
                        raise
                    await asyncio.sleep(0.05 * (attempt + 1))
        except BaseException:
            await db.close()  # or its thread keeps the process alive
            raise
        return cls(db, None if str(path) == ":memory:" else Path(path), clock)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Tx]:
        async with self.lock:
            db = self.connection
            try:
                try:
                    # inside the try: a task cancelled while BEGIN is queued must still
                    # roll back, or the connection is left inside a transaction
                    await db.execute("BEGIN IMMEDIATE")
                    yield _SqliteTx(db)
                    await asyncio.shield(db.execute("COMMIT"))
                except BaseException:
                    await asyncio.shield(self._rollback())
                    raise
            except (sqlite3.OperationalError, sqlite3.DatabaseError) as exc:
                if isinstance(exc, sqlite3.IntegrityError):
                    raise
                raise self.refused(exc) from exc
        self.worked()

    async def _rollback(self) -> None:
        try:
            await self.connection.execute("ROLLBACK")
        except sqlite3.Error:
            pass  # BEGIN itself failed, or the fault ended the transaction already

    async def fetch(self, sql: str, *args: Any) -> list[Any]:
        async with self.lock:
            return list(await (await self.connection.execute(sql, args)).fetchall())

    async def fetchrow(self, sql: str, *args: Any) -> Any | None:
        async with self.lock:
            return await (await self.connection.execute(sql, args)).fetchone()

    async def schema_version(self) -> int:
        row = await self.fetchrow("PRAGMA user_version")
        return int(row[0]) if row else 0

    async def size_bytes(self) -> int:
        return self.file_size()

    def file_size(self) -> int:
        """The database on disk, its write-ahead log included."""
        if self.path is None:
            return 0
        return sum(
            p.stat().st_size
            for p in (self.path, self.path.with_name(self.path.name + "-wal"))
            if p.exists()
        )

    async def give_back_space(self, slice_bytes: int) -> None:
        """Free pages go back to the file system `slice_bytes` at a time; the checkpoint
        then shrinks the file and its log without waiting: if another process is reading,
        the log is cut back at a later checkpoint instead."""
        row = await self.fetchrow("PRAGMA page_size")  # a file keeps the size it was made with
        pages = max(1, slice_bytes // int(row[0])) if row else 2048
        free = None
        while True:
            async with self.lock:
                # executescript runs the pragma to the end (execute() frees a page a step)
                await self.connection.executescript(f"PRAGMA incremental_vacuum({pages});")
                row = await (await self.connection.execute("PRAGMA freelist_count")).fetchone()
            left = row[0] if row else 0
            if not left or left == free:  # all given back, or the file cannot give back more
                break
            free = left
        async with self.lock:
            await self.connection.execute("PRAGMA busy_timeout=0")
            try:
                await self.connection.execute("PRAGMA wal_checkpoint(TRUNCATE)")
            finally:
                await self.connection.execute(f"PRAGMA busy_timeout={BUSY_TIMEOUT_MS}")

    async def listen(self, channel: str, wake: Callable[[], None]) -> None:
        """SQLite has no notifications: each process runs the jobs it owns."""

    async def close(self) -> None:
        await self.connection.close()


# PostgreSQL


def to_postgres(sql: str) -> str:
    """`?` placeholders as `$1, $2, …` (question marks inside quotes are left alone)."""
    count = 0

    def number(match: re.Match[str]) -> str:
        nonlocal count
        if match.group(0) != "?":
            return match.group(0)
        count += 1
        return f"${count}"

    return _PLACEHOLDER.sub(number, sql)


def _status_rows(status: str) -> int:
    # asyncpg answers a statement with its command tag: "UPDATE 3", "INSERT 0 1"
    tail = status.rsplit(" ", 1)[-1]
    return int(tail) if tail.isdigit() else 0


# SQLSTATE classes of a server that will not take the write now, though the statement is
# fine: connection lost, out of disk or memory, shutting down or restarting, I/O errors;
# and a read-only database or standby (25006)
_REFUSAL_CLASSES = ("08", "53", "57", "58")


def _refusal(exc: Any) -> bool:
    state = str(getattr(exc, "sqlstate", "") or "")
    return state[:2] in _REFUSAL_CLASSES or state == "25006"


class _PostgresTx:
    def __init__(self, connection: Any) -> None:
        self._c = connection

    async def fetch(self, sql: str, *args: Any) -> list[Any]:
        return list(await self._c.fetch(to_postgres(sql), *args))

    async def fetchrow(self, sql: str, *args: Any) -> Any | None:
        return await self._c.fetchrow(to_postgres(sql), *args)

    async def execute(self, sql: str, *args: Any) -> int:
        return _status_rows(await self._c.execute(to_postgres(sql), *args))

    async def executemany(self, sql: str, rows: Sequence[Sequence[Any]]) -> None:
        if rows:
            await self._c.executemany(to_postgres(sql), rows)


class PostgresDatabase(_Refusals):
    """A pool of connections: transactions run side by side, rows are locked, not tables."""

    name = "postgresql"

    def __init__(self, pool: Any, clock: Callable[[], float], url: str = "") -> None:
        super().__init__(clock)
        self.pool = pool
        self._url = url
        self._listener: Any = None  # a connection of its own, outside the pool
        self._listening: tuple[str, Callable[[], None]] | None = None
        self._relisten: asyncio.Task[None] | None = None
        self._closing = False

    @classmethod
    async def open(
        cls, url: str, clock: Callable[[], float], *, min_size: int = 1, max_size: int = 10
    ) -> PostgresDatabase:
        import asyncpg

        url = url.replace("postgres://", "postgresql://", 1)
        pool = await asyncpg.create_pool(
            url,
            min_size=min_size,
            max_size=max_size,
            # the same statement text is prepared once per connection
            statement_cache_size=256,
        )
        return cls(pool, clock, url)

    @asynccontextmanager
    async def transaction(self) -> AsyncIterator[Tx]:
        import asyncpg

        try:
            async with (
                self.pool.acquire() as connection,
                # the claims rely on it, whatever the server's default
                connection.transaction(isolation="read_committed"),
            ):
                yield _PostgresTx(connection)
        except asyncpg.PostgresError as exc:
            if not _refusal(exc):
                raise
            raise self.refused(exc) from exc
        except (asyncpg.InterfaceError, OSError) as exc:  # the connection is gone
            raise self.refused(exc) from exc
        self.worked()

    async def fetch(self, sql: str, *args: Any) -> list[Any]:
        async with self._reading():
            return list(await self.pool.fetch(to_postgres(sql), *args))

    async def fetchrow(self, sql: str, *args: Any) -> Any | None:
        async with self._reading():
            return await self.pool.fetchrow(to_postgres(sql), *args)

    @asynccontextmanager
    async def _reading(self) -> AsyncIterator[None]:
        """A read the server cannot answer now (restarting, failing over) is a StoreError,
        so what needed it is tried again, not failed for good."""
        import asyncpg

        try:
            yield
        except asyncpg.PostgresError as exc:
            if not _refusal(exc):
                raise
            raise StoreError(f"{type(exc).__name__}: {exc}") from exc
        except (asyncpg.InterfaceError, OSError) as exc:
            raise StoreError(f"{type(exc).__name__}: {exc}") from exc

    async def schema_version(self) -> int:
        exists = await self.fetchrow("SELECT to_regclass('schema_version') IS NOT NULL AS found")
        if not exists or not exists["found"]:
            return 0
        row = await self.fetchrow("SELECT version FROM schema_version")
        return int(row["version"]) if row else 0

    async def size_bytes(self) -> int:
        row = await self.fetchrow("SELECT pg_database_size(current_database()) AS size")
        return int(row["size"]) if row else 0

    async def give_back_space(self, slice_bytes: int) -> None:
        """PostgreSQL's autovacuum reuses the space of deleted rows by itself."""

    async def listen(self, channel: str, wake: Callable[[], None]) -> None:
        """Listens on a connection of its own; when the server drops it (a restart, a
        failover), it connects again in the background and wakes once, since anything
        notified meanwhile was missed."""
        self._listening = (channel, wake)
        await self._connect_listener()

    async def _connect_listener(self) -> None:
        import asyncpg

        assert self._listening is not None
        channel, wake = self._listening
        connection = await asyncpg.connect(self._url)
        connection.add_termination_listener(self._listener_lost)
        await connection.add_listener(channel, lambda *_: wake())
        self._listener = connection

    def _listener_lost(self, connection: Any) -> None:
        if not self._closing and (self._relisten is None or self._relisten.done()):
            self._relisten = asyncio.create_task(self._listen_again(), name="imagebot-listen")

    async def _listen_again(self) -> None:
        import asyncpg

        delay = 0.5
        while not self._closing:
            try:
                await self._connect_listener()
            except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
                log.warning("cannot listen for new jobs yet (%s); trying again", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, 30.0)
                continue
            assert self._listening is not None
            self._listening[1]()
            return

    async def close(self) -> None:
        self._closing = True
        if self._relisten is not None:
            self._relisten.cancel()
            await asyncio.gather(self._relisten, return_exceptions=True)
        if self._listener is not None and not self._listener.is_closed():
            await self._listener.close()
        await self.pool.close()
