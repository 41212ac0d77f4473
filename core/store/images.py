"""Image bytes, kept once per content hash. Behind their own small interface, so moving
them to object storage changes this module and nothing else."""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Protocol

from core.store.database import Database, Tx
from core.store.records import NewImage, StoredImage

FORGET_BATCH = 50  # rows deleted in one transaction by retention


class ImageBytes(Protocol):
    async def put(self, tx: Tx, image: NewImage) -> None:
        """Keep `image` with the transaction that refers to it (a second put of the same
        bytes only marks them used)."""
        ...

    async def get(self, hashes: Iterable[str]) -> dict[str, StoredImage]: ...

    async def touch(self, hashes: Iterable[str]) -> None:
        """These images are in use: retention keeps them."""
        ...

    async def forget(self, before: float) -> int:
        """Drops images not used since `before`; returns how many."""
        ...


class TableImages:
    """Image bytes in the database's `images` table."""

    def __init__(self, db: Database, clock: Callable[[], float]) -> None:
        self._db = db
        self._clock = clock

    async def put(self, tx: Tx, image: NewImage) -> None:
        now = self._clock()
        await tx.execute(
            "INSERT INTO images (sha256, mime_type, width, height, byte_size, data, "
            "created_at, last_used_at) VALUES (?, ?, ?, ?, ?, ?, ?, ?) "
            "ON CONFLICT (sha256) DO UPDATE SET last_used_at = excluded.last_used_at",
            image.sha256,
            image.mime_type,
            image.width,
            image.height,
            len(image.data),
            image.data,
            now,
            now,
        )

    async def get(self, hashes: Iterable[str]) -> dict[str, StoredImage]:
        wanted = sorted(set(hashes))
        if not wanted:
            return {}
        marks = ",".join("?" * len(wanted))
        rows = await self._db.fetch(
            f"SELECT sha256, mime_type, width, height, data FROM images WHERE sha256 IN ({marks})",
            *wanted,
        )
        return {row["sha256"]: StoredImage(**dict(row)) for row in rows}

    async def touch(self, hashes: Iterable[str]) -> None:
        wanted = sorted(set(hashes))
        if not wanted:
            return
        async with self._db.transaction() as tx:
            await tx.executemany(
                "UPDATE images SET last_used_at = ? WHERE sha256 = ?",
                [(self._clock(), sha) for sha in wanted],
            )

    async def forget(self, before: float) -> int:
        removed = 0
        while True:
            async with self._db.transaction() as tx:
                deleted = await tx.execute(
                    "DELETE FROM images WHERE sha256 IN (SELECT sha256 FROM images "
                    "WHERE last_used_at < ? LIMIT ?)",
                    before,
                    FORGET_BATCH,
                )
            removed += deleted
            if deleted < FORGET_BATCH:
                return removed
