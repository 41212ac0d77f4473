"""Requests acknowledged to a platform but not yet stored as jobs: held under a lease, so
one whose process dies is taken over by another."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Sequence
from typing import Any

from core.store.database import Database, Tx

_HoldRow = tuple[str, str, str, str, float]  # platform, key, payload, owner, lease seconds
_HOLD_CHUNK = 500  # rows per statement, well within SQLite's limit on parameters


def _firsts(batch: list[tuple[_HoldRow, Any]]) -> list[bool]:
    """Whether each request is the first of its key in the batch (a second is a duplicate,
    held already by the first)."""
    seen: set[str] = set()
    firsts = []
    for row, _ in batch:
        firsts.append(row[1] not in seen)
        seen.add(row[1])
    return firsts


class IntakeStore:
    _db: Database
    _clock: Callable[[], float]
    _holds: list[tuple[_HoldRow, asyncio.Future[bool]]]
    _hold_writer: asyncio.Task[None] | None

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
                async with self._db.transaction() as tx:
                    held = await self._hold_all(tx, [row for row, _ in batch])
            except Exception as exc:
                for _, answer in batch:
                    if not answer.done():
                        answer.set_exception(exc)
                continue
            for (row, answer), first in zip(batch, _firsts(batch), strict=True):
                if not answer.done():
                    answer.set_result(first and row[1] in held)

    async def _hold_all(self, tx: Tx, rows: list[_HoldRow]) -> set[str]:
        """Holds a batch in two statements whatever its size (a burst's acks wait for it):
        the keys a job has already are left out, the rest inserted, or taken back by the
        same owner; returns the keys held."""
        now = self._clock()
        unique = list({row[1]: row for row in reversed(rows)}.values())
        held: set[str] = set()
        for start in range(0, len(unique), _HOLD_CHUNK):
            chunk = unique[start : start + _HOLD_CHUNK]
            keys = [row[1] for row in chunk]
            stored = {
                r["idempotency_key"]
                for r in await tx.fetch(
                    "SELECT idempotency_key FROM jobs WHERE idempotency_key IN "
                    f"({','.join('?' * len(keys))})",
                    *keys,
                )
            }
            fresh = [row for row in chunk if row[1] not in stored]
            if not fresh:
                continue
            values = ",".join("(?, ?, ?, ?, ?, ?)" for _ in fresh)
            inserted = await tx.fetch(
                "INSERT INTO intake (key, platform, payload, owner, lease_expires_at, "
                f"created_at) VALUES {values} ON CONFLICT (key) DO UPDATE SET "
                "owner = excluded.owner, lease_expires_at = excluded.lease_expires_at "
                "WHERE intake.owner = excluded.owner RETURNING key",
                *(
                    value
                    for platform, key, payload, owner, lease in fresh
                    for value in (key, platform, payload, owner, now + lease, now)
                ),
            )
            held.update(r["key"] for r in inserted)
        return held

    async def release_hold(self, key: str) -> None:
        async with self._db.transaction() as tx:
            await tx.execute("DELETE FROM intake WHERE key = ?", key)

    async def take_over_held(
        self, platforms: Sequence[str], owner: str, lease_seconds: float
    ) -> list[dict[str, Any]]:
        """Held requests of `platforms` whose owner died before storing them: now ours."""
        if not platforms:
            return []
        now = self._clock()
        marks = ",".join("?" * len(platforms))
        skip = " FOR UPDATE SKIP LOCKED" if self._db.name == "postgresql" else ""
        async with self._db.transaction() as tx:
            rows = await tx.fetch(
                f"SELECT key, payload FROM intake WHERE platform IN ({marks}) "
                f"AND lease_expires_at < ? AND owner != ? ORDER BY created_at{skip}",
                *platforms,
                now,
                owner,
            )
            await tx.executemany(
                "UPDATE intake SET owner = ?, lease_expires_at = ? WHERE key = ?",
                [(owner, now + lease_seconds, row["key"]) for row in rows],
            )
        return [{**json.loads(row["payload"]), "key": row["key"]} for row in rows]
