"""Copying a SQLite database into an empty PostgreSQL one (`imagebot migrate-db --to URL`).

The SQLite file is opened read-only and read inside one read transaction, so a bot still
writing to it cannot tear the copy (it should be stopped all the same: what it writes
after the copy starts stays behind). Rows are streamed in batches, a batch never more than
`batch_rows` rows or about `batch_bytes` bytes, and written with COPY inside one
PostgreSQL transaction: a failure anywhere leaves the target as empty as it was. Ids are
kept as they are, and each identity sequence is moved past the highest id copied.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import AsyncIterator, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiosqlite
import asyncpg

from core.config import is_postgres, server_of
from core.errors import StoreError, UserFacingError
from core.store.database import PostgresDatabase
from core.store.schema import MIGRATIONS, migrate

# in an order that satisfies the foreign keys; heartbeats (one row per live process) and
# OAuth states (ten minutes of life) are not copied: they belong to the old database's day
TABLES = (
    "conversations",
    "turns",
    "images",
    "message_links",
    "jobs",
    "user_defaults",
    "shared_defaults",
    "intake",
    "installations",
    "tenant_deletions",
)
# turns refer to turns: parents have smaller ids, so reading by id inserts parents first;
# every table is read in the order it is stored (id and seq are the rowid), with no sort
_ORDER = {"turns": "id", "conversations": "id", "jobs": "seq"}

BATCH_ROWS = 200
BATCH_BYTES = 16 * 1024 * 1024  # images can be large: a batch holds about this much at most
PROGRESS_SECONDS = 2.0  # a table that takes longer reports how far it got this often
OPEN_TIMEOUT_SECONDS = 30.0


class CopyRefused(UserFacingError):
    """The copy did not start, or was rolled back; the message says why and what to do."""


@dataclass
class TableCopy:
    table: str
    rows: int = 0
    bytes: int = 0
    seconds: float = 0.0


@dataclass
class CopyReport:
    source: Path
    target: str  # host:port/database, without user or password
    tables: list[TableCopy] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def rows(self) -> int:
        return sum(t.rows for t in self.tables)

    def summary(self) -> str:
        counts = ", ".join(f"{t.table} {t.rows:,}" for t in self.tables)
        return (
            f"Copied {self.rows:,} rows into PostgreSQL at {self.target} in "
            f"{self.seconds:.1f} s: {counts}."
        )


async def copy_sqlite_to_postgres(
    source: Path | str,
    target_url: str,
    *,
    report: Callable[[str], None] = print,
    batch_rows: int = BATCH_ROWS,
    batch_bytes: int = BATCH_BYTES,
) -> CopyReport:
    """Copies the imagebot database in the SQLite file `source` into the empty PostgreSQL
    database at `target_url`; `report` gets a line per table as it goes. Raises CopyRefused
    (nothing written) when the source or the target cannot be used."""
    if not is_postgres(target_url):
        raise CopyRefused(
            "--to must be a postgresql:// (or postgres://) URL of the database to copy into."
        )
    started = time.monotonic()
    path, exists = await asyncio.to_thread(_where_file, Path(source))
    reader = await _open_source(path, exists)
    try:
        target = await _open_target(target_url)
        result = CopyReport(path, server_of(target_url))
        try:
            # checked before migrating, so a refused run writes nothing at all
            await _refuse_data(target, result.target)
            await migrate(target)
            report(f"Copying {result.source} into PostgreSQL at {result.target}")
            await _copy(reader, target, result, report, batch_rows, batch_bytes)
        except CopyRefused:
            raise
        except (
            StoreError,
            asyncpg.PostgresError,
            asyncpg.InterfaceError,
            OSError,
            sqlite3.Error,
        ) as exc:
            said = exc.detail if isinstance(exc, StoreError) else f"{type(exc).__name__}: {exc}"
            raise CopyRefused(
                f"The copy into PostgreSQL at {result.target} failed ({said}), so it was not "
                "committed: run migrate-db again (it refuses if the copy was kept after all)."
            ) from None
        finally:
            await target.close()
    finally:
        await reader.close()
    result.seconds = time.monotonic() - started
    return result


# the source


def _where_file(path: Path) -> tuple[Path, bool]:
    return path.absolute(), path.is_file()


async def _open_source(path: Path, exists: bool) -> aiosqlite.Connection:
    if not exists:
        raise CopyRefused(
            f"There is no SQLite database at {path}: set DATABASE_URL to the "
            "sqlite:/// URL of the file to copy."
        )
    # read-only: the file is never written, whatever happens here
    reader = await aiosqlite.connect(f"{path.as_uri()}?mode=ro", uri=True, isolation_level=None)
    try:
        await reader.execute("PRAGMA query_only=ON")
        await reader.execute("PRAGMA busy_timeout=10000")
        row = await (await reader.execute("PRAGMA user_version")).fetchone()
        version = int(row[0]) if row else 0
        found = {
            r[0]
            for r in await (
                await reader.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
            ).fetchall()
        }
    except sqlite3.DatabaseError as exc:
        await reader.close()
        raise CopyRefused(
            f"{path} cannot be read as a SQLite database ({exc}): set "
            "DATABASE_URL to the sqlite:/// URL of the bot's database file."
        ) from None
    except BaseException:
        await reader.close()
        raise
    if version != len(MIGRATIONS) or not set(TABLES) <= found:
        await reader.close()
        if version > len(MIGRATIONS):
            why = "newer than this imagebot's: run migrate-db from the imagebot that wrote it"
        elif version == 0 and not found:
            why = "an empty file, not an imagebot database: there is nothing to copy"
        else:
            why = (
                f"older than this imagebot's ({len(MIGRATIONS)}): start this imagebot on it "
                "once (which upgrades it), stop it, then run migrate-db again"
            )
        raise CopyRefused(f"{path} is at schema version {version}, {why}.")
    return reader


async def _source_high_water(reader: aiosqlite.Connection) -> dict[str, int]:
    """The highest ids SQLite ever handed out (AUTOINCREMENT remembers deleted ones)."""
    exists = await (
        await reader.execute("SELECT 1 FROM sqlite_master WHERE name = 'sqlite_sequence'")
    ).fetchone()
    if not exists:
        return {}
    rows = await (await reader.execute("SELECT name, seq FROM sqlite_sequence")).fetchall()
    return {name: int(seq) for name, seq in rows if seq is not None}


async def _batches(
    cursor: aiosqlite.Cursor, batch_rows: int, batch_bytes: int
) -> AsyncIterator[tuple[list[Sequence[Any]], int]]:
    """The cursor's rows in batches of at most `batch_rows` rows and about `batch_bytes`
    bytes. Rows are fetched a few at a time, as many as the rows read so far say fit, so
    a table of large images is never read into memory whole."""
    batch: list[Sequence[Any]] = []
    size = seen_rows = seen_bytes = 0
    step = 1  # the first row tells how large rows are
    while rows := await cursor.fetchmany(step):
        for row in rows:
            row_bytes = _row_bytes(row)
            batch.append(row)
            size += row_bytes
            seen_rows += 1
            seen_bytes += row_bytes
            if len(batch) >= batch_rows or size >= batch_bytes:
                yield batch, size
                batch, size = [], 0
        average = max(1, seen_bytes // seen_rows)
        step = max(1, min(batch_rows - len(batch), (batch_bytes - size) // average))
    if batch:
        yield batch, size


def _row_bytes(row: Sequence[Any]) -> int:
    return sum(len(v) if isinstance(v, bytes | str) else 8 for v in row)


# the target


async def _open_target(url: str) -> PostgresDatabase:
    try:
        async with asyncio.timeout(OPEN_TIMEOUT_SECONDS):
            return await PostgresDatabase.open(url, time.time, min_size=1, max_size=1)
    except Exception as exc:
        reason = "no answer" if isinstance(exc, TimeoutError) else f"{type(exc).__name__}: {exc}"
        raise CopyRefused(
            f"Cannot open the PostgreSQL database at {server_of(url)} ({reason}): check the --to "
            "URL (user, password, host, port and database name) and that the database exists."
        ) from None


async def _tables_with_rows(connection: Any) -> list[str]:
    found = []
    for table in TABLES:
        if await connection.fetchval("SELECT to_regclass($1) IS NOT NULL", table) and (
            await connection.fetchval(f"SELECT EXISTS (SELECT 1 FROM {table})")
        ):
            found.append(table)
    return found


def _refusal(place: str, tables: list[str]) -> CopyRefused:
    return CopyRefused(
        f"The PostgreSQL database at {place} already holds imagebot data ({', '.join(tables)} "
        "have rows), so nothing was copied: migrate-db only copies into an empty database; "
        "point --to at a new one."
    )


async def _refuse_data(target: PostgresDatabase, place: str) -> None:
    version = await target.schema_version()
    if version > len(MIGRATIONS):
        raise CopyRefused(
            f"The PostgreSQL database at {place} is at schema version {version}, newer than "
            f"this imagebot's ({len(MIGRATIONS)}), so nothing was copied: run migrate-db from "
            "the newer imagebot, or point --to at a new database."
        )
    async with target.pool.acquire() as connection:
        tables = await _tables_with_rows(connection)
    if tables:
        raise _refusal(place, tables)


async def _copy(
    reader: aiosqlite.Connection,
    target: PostgresDatabase,
    result: CopyReport,
    report: Callable[[str], None],
    batch_rows: int,
    batch_bytes: int,
) -> None:
    async with target.pool.acquire() as connection, connection.transaction():
        # a bot started on the target meanwhile waits until the copy commits
        await connection.execute(f"LOCK TABLE {', '.join(TABLES)} IN EXCLUSIVE MODE")
        tables = await _tables_with_rows(connection)
        if tables:
            raise _refusal(result.target, tables)
        await reader.execute("BEGIN")  # one snapshot of the source for every table
        try:
            expected = {}
            for table in TABLES:
                row = await (await reader.execute(f"SELECT COUNT(*) FROM {table}")).fetchone()
                expected[table] = int(row[0]) if row else 0
            for table in TABLES:
                copied = TableCopy(table)
                result.tables.append(copied)
                try:
                    await _copy_table(
                        reader, connection, copied, expected[table], report, batch_rows, batch_bytes
                    )
                except (
                    _Misfit,
                    asyncpg.DataError,
                    asyncpg.IntegrityConstraintViolationError,
                ) as exc:
                    said = str(exc) if isinstance(exc, _Misfit) else _said(exc)
                    raise CopyRefused(
                        f"The copy stopped at table {table} after {copied.rows:,} rows ({said}), "
                        f"so nothing was kept in PostgreSQL at {result.target}: fix that row in "
                        "the SQLite file and run migrate-db again."
                    ) from None
            high_water = await _source_high_water(reader)
        finally:
            await reader.execute("ROLLBACK")  # a read: nothing to undo, the snapshot ends
        await _move_sequences(connection, high_water)
        mismatched = []
        for table in TABLES:
            count = await connection.fetchval(f"SELECT COUNT(*) FROM {table}")
            if count != expected[table]:
                mismatched.append(f"{table} {count:,} of {expected[table]:,}")
        if mismatched:
            raise CopyRefused(
                f"After the copy PostgreSQL at {result.target} held other row counts than "
                f"SQLite ({', '.join(mismatched)}), so the copy was rolled back and nothing "
                "was kept."
            )
    report(
        "Verified: every table holds as many rows in PostgreSQL as in SQLite "
        f"({', '.join(f'{t} {n:,}' for t, n in expected.items())})."
    )


async def _copy_table(
    reader: aiosqlite.Connection,
    connection: Any,
    copied: TableCopy,
    total: int,
    report: Callable[[str], None],
    batch_rows: int,
    batch_bytes: int,
) -> None:
    started = last = time.monotonic()
    # read now: once a COPY fails, the transaction answers nothing more
    types = {
        row["column_name"]: row["data_type"]
        for row in await connection.fetch(
            "SELECT column_name, data_type FROM information_schema.columns "
            "WHERE table_schema = current_schema() AND table_name = $1",
            copied.table,
        )
    }
    cursor = await reader.execute(
        f"SELECT * FROM {copied.table} ORDER BY {_ORDER.get(copied.table, 'rowid')}"
    )
    try:
        columns = [d[0] for d in cursor.description]
        async for batch, size in _batches(cursor, batch_rows, batch_bytes):
            try:
                await connection.copy_records_to_table(copied.table, records=batch, columns=columns)
            except (ValueError, TypeError) as exc:  # a value the driver cannot send as its type
                found = await _misfit(reader, copied.table, types, columns, batch)
                raise _Misfit(found or f"{type(exc).__name__}: {exc}") from exc
            copied.rows += len(batch)
            copied.bytes += size
            now = time.monotonic()
            if now - last >= PROGRESS_SECONDS and copied.rows < total:
                last = now
                report(
                    f"  {copied.table}: {copied.rows:,} of {total:,} rows "
                    f"({_megabytes(copied.bytes)})…"
                )
    finally:
        await cursor.close()
    copied.seconds = time.monotonic() - started
    report(
        f"  {copied.table}: {copied.rows:,} rows, {_megabytes(copied.bytes)} "
        f"in {copied.seconds:.1f} s"
    )


class _Misfit(Exception):
    """A value in SQLite that PostgreSQL's column type cannot hold; says which and where."""


# what each PostgreSQL column type takes from SQLite
_TAKES: dict[str, tuple[type, ...]] = {
    "bigint": (int,),
    "double precision": (float, int),
    "text": (str,),
    "bytea": (bytes,),
}


async def _misfit(
    reader: aiosqlite.Connection,
    table: str,
    types: dict[str, str],
    columns: Sequence[str],
    batch: Sequence[Sequence[Any]],
) -> str | None:
    """Names the first value in `batch` whose type its PostgreSQL column cannot take."""
    info = await (await reader.execute(f"PRAGMA table_info({table})")).fetchall()
    keys = [r[1] for r in sorted(info, key=lambda r: r[5]) if r[5]] or columns[:1]
    for row in batch:
        for name, value in zip(columns, row, strict=True):
            takes = _TAKES.get(types.get(name, ""))
            if value is None or takes is None or isinstance(value, takes):
                continue
            key = " and ".join(f"{k} {row[columns.index(k)]!r}" for k in keys)
            shown = repr(value)
            shown = shown if len(shown) <= 60 else shown[:57] + "..."
            return f"the row with {key} holds {shown} in {name}, which is {types[name]} here"
    return None


def _said(exc: BaseException) -> str:
    detail = getattr(exc, "detail", None)
    return f"{type(exc).__name__}: {exc}" + (f"; {detail}" if detail else "")


async def _move_sequences(connection: Any, high_water: dict[str, int]) -> None:
    """Each identity column's next value is past the highest id copied (or, for jobs, the
    highest SQLite ever gave), so rows made in PostgreSQL never take a copied id."""
    identities = await connection.fetch(
        "SELECT table_name, column_name FROM information_schema.columns "
        "WHERE table_schema = current_schema() AND is_identity = 'YES' "
        "AND table_name = ANY($1::text[])",
        list(TABLES),
    )
    for row in identities:
        table, column = row["table_name"], row["column_name"]
        highest = await connection.fetchval(f"SELECT MAX({column}) FROM {table}")
        highest = max(highest or 0, high_water.get(table, 0))
        if highest > 0:
            await connection.execute(
                "SELECT setval(pg_get_serial_sequence($1, $2), $3)", table, column, highest
            )


def _megabytes(count: int) -> str:
    return f"{count / 1_000_000:.1f} MB"
