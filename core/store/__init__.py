"""Persistence: conversations, turns, images, jobs, held requests, usage, defaults and
installations.

`Store.open(url)` picks the database: a `sqlite:///path` file (the default, one machine)
or `postgresql://…` (several processes on several machines). Each concern lives in its own
module; Store puts them together over one database.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable, Iterable
from pathlib import Path

from core import metrics
from core.config import ConfigError, is_postgres
from core.store.conversations import ConversationStore
from core.store.database import Database, PostgresDatabase, SqliteDatabase
from core.store.images import ImageBytes, TableImages
from core.store.installations import Installation, InstallationStore
from core.store.intake import IntakeStore
from core.store.jobs import JobStore
from core.store.records import JobResult, NewImage, NewJob, StoredImage, image_hash
from core.store.schema import MIGRATIONS, migrate
from core.store.usage import UsageStore

__all__ = [
    "MIGRATIONS",
    "Installation",
    "JobResult",
    "NewImage",
    "NewJob",
    "Store",
    "StoredImage",
    "image_hash",
    "is_postgres",
]


class Store(ConversationStore, JobStore, IntakeStore, UsageStore, InstallationStore):
    """The store over one database; `image_bytes` keeps the images' bytes."""

    def __init__(
        self,
        db: Database,
        clock: Callable[[], float] = time.time,
        image_bytes: ImageBytes | None = None,
    ) -> None:
        self._db = db
        # the time leases, retention and records are measured by; tests pass their own
        self._clock = clock
        self.image_bytes = image_bytes or TableImages(db, clock)
        self._holds = []
        self._hold_writer: asyncio.Task[None] | None = None
        self._size = 0

    @classmethod
    async def open(
        cls,
        location: Path | str,
        clock: Callable[[], float] = time.time,
        *,
        pool_min: int = 1,
        pool_max: int = 10,
    ) -> Store:
        """The store at `location`: a `postgresql://` URL, a `sqlite:///` URL or a path."""
        text = str(location)
        db: Database
        try:
            if is_postgres(text):
                db = await PostgresDatabase.open(text, clock, min_size=pool_min, max_size=pool_max)
            else:
                db = await SqliteDatabase.open(text.removeprefix("sqlite:///"), clock)
            try:
                await migrate(db)
            except BaseException:
                await db.close()
                raise
        except sqlite3.DatabaseError as exc:
            raise ConfigError(
                f"the database at {text.removeprefix('sqlite:///')} cannot be used ({exc}): "
                "point DATABASE_URL at "
                "another file, or move this one away"
            ) from None
        store = cls(db, clock)
        metrics.DATABASE_BYTES.set_function(store.size_bytes)
        return store

    @property
    def database(self) -> Database:
        return self._db

    @property
    def path(self) -> Path | None:
        return getattr(self._db, "path", None)

    @property
    def write_error(self) -> str | None:
        return self._db.write_error

    @property
    def write_error_since(self) -> float | None:
        return self._db.write_error_since

    def now(self) -> float:
        return self._clock()

    async def images(self, hashes: Iterable[str]) -> dict[str, StoredImage]:
        return await self.image_bytes.get(hashes)

    async def touch_images(self, hashes: Iterable[str]) -> None:
        """These images are in use (on the path of a new request): retention keeps them."""
        await self.image_bytes.touch(hashes)

    def size_bytes(self) -> int:
        """The database's size: a SQLite file's as it is now, a server's as last measured
        (a gauge reads it without waiting)."""
        if isinstance(self._db, SqliteDatabase):
            return self._db.file_size()
        return self._size

    async def measure(self) -> int:
        """Asks the database for its size (upkeep does, now and then)."""
        self._size = await self._db.size_bytes()
        return self._size

    async def close(self) -> None:
        await self._db.close()
