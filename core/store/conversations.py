"""Conversations, their turns, the platform messages that lead to them, and retention."""

from __future__ import annotations

from collections.abc import Callable

from core.conversations import Turn
from core.jobs import Job
from core.store.database import Database, Tx
from core.store.images import ImageBytes
from core.store.records import JOB_COLUMNS, job_of, turn_of

VACUUM_SLICE_BYTES = 8 * 1024 * 1024  # space given back to the file system per step


class ConversationStore:
    _db: Database
    _clock: Callable[[], float]
    image_bytes: ImageBytes

    async def thread_key(self, conversation_id: int) -> str | None:
        row = await self._db.fetchrow(
            "SELECT thread_key FROM conversations WHERE id = ?", conversation_id
        )
        return row["thread_key"] if row else None

    async def conversation(
        self, platform: str, tenant: str, thread_key: str
    ) -> tuple[int, float | None] | None:
        """The conversation's id, and when retention cleared it (None while it is kept)."""
        row = await self._db.fetchrow(
            "SELECT id, cleared_at FROM conversations WHERE platform = ? AND tenant = ? "
            "AND thread_key = ?",
            platform,
            tenant,
            thread_key,
        )
        return (row["id"], row["cleared_at"]) if row else None

    async def turn(self, turn_id: int) -> Turn | None:
        row = await self._db.fetchrow("SELECT * FROM turns WHERE id = ?", turn_id)
        return turn_of(row) if row else None

    async def latest_turn(self, conversation_id: int) -> Turn | None:
        row = await self._db.fetchrow(
            "SELECT * FROM turns WHERE conversation_id = ? ORDER BY id DESC LIMIT 1",
            conversation_id,
        )
        return turn_of(row) if row else None

    async def path_to(self, turn_id: int) -> list[Turn]:
        """The turns from the root of the tree down to `turn_id`, root first."""
        rows = await self._db.fetch(
            """
            WITH RECURSIVE path(id, depth) AS (
                SELECT id, 0 FROM turns WHERE id = ?
                UNION ALL
                SELECT turns.parent_id, path.depth + 1 FROM turns JOIN path ON turns.id = path.id
                WHERE turns.parent_id IS NOT NULL
            )
            SELECT turns.* FROM path JOIN turns ON turns.id = path.id ORDER BY path.depth DESC
            """,
            turn_id,
        )
        return [turn_of(row) for row in rows]

    async def turn_for_message(self, platform: str, tenant: str, message_key: str) -> Turn | None:
        row = await self._db.fetchrow(
            "SELECT turns.* FROM message_links JOIN turns ON turns.id = message_links.turn_id "
            "WHERE platform = ? AND tenant = ? AND message_key = ?",
            platform,
            tenant,
            message_key,
        )
        return turn_of(row) if row else None

    async def job_for_message(self, platform: str, tenant: str, message_key: str) -> Job | None:
        row = await self._db.fetchrow(
            f"SELECT {JOB_COLUMNS} FROM jobs WHERE id = (SELECT job_id FROM message_links "
            "WHERE platform = ? AND tenant = ? AND message_key = ?)",
            platform,
            tenant,
            message_key,
        )
        return job_of(row) if row else None

    async def link_message(self, job: Job, message_key: str) -> None:
        """Tie a platform message (a progress post, say) to the job's latest turn."""
        async with self._db.transaction() as tx:
            await tx.execute(LINK, *_link_row(job, message_key, self._clock()))

    async def message_keys(self, job_id: str) -> list[str]:
        rows = await self._db.fetch(
            "SELECT message_key FROM message_links WHERE job_id = ? "
            "ORDER BY linked_at, message_key",
            job_id,
        )
        return [row["message_key"] for row in rows]

    # retention

    async def forget(self, conversations_before: float | None, images_before: float | None) -> int:
        """Retention: clear conversations with no turn since `conversations_before` (their
        turns, jobs and message links; the conversation row stays, marked, so a reply is told
        why), and drop images not used since `images_before`. Returns the rows removed.

        Done in small transactions, so requests arriving meanwhile wait milliseconds, not
        the whole pass."""
        removed = 0
        if conversations_before is not None:
            rows = await self._db.fetch(
                "SELECT conversation_id FROM turns GROUP BY conversation_id "
                "HAVING MAX(created_at) < ? AND conversation_id NOT IN (SELECT "
                "conversation_id FROM jobs WHERE state IN ('queued', 'running'))",
                conversations_before,
            )
            for row in rows:
                removed += await self._clear_conversation(row["conversation_id"])
        if images_before is not None:
            removed += await self.image_bytes.forget(images_before)
        if removed:
            await self._db.give_back_space(VACUUM_SLICE_BYTES)
        return removed

    async def _clear_conversation(self, conversation_id: int) -> int:
        async with self._db.transaction() as tx:
            return await clear_conversation(tx, conversation_id, cleared_at=self._clock())


async def clear_conversation(tx: Tx, conversation_id: int, *, cleared_at: float | None) -> int:
    """A conversation's turns, jobs and message links, in `tx`; returns the rows removed. The
    conversation stays, marked cleared at `cleared_at` (a reply to it gets a sentence), or
    goes as well when `cleared_at` is None (a workspace's data forgotten)."""
    removed = 0
    for sql in (
        "DELETE FROM message_links WHERE turn_id IN "
        "(SELECT id FROM turns WHERE conversation_id = ?)",
        "DELETE FROM jobs WHERE conversation_id = ?",
        "DELETE FROM turns WHERE conversation_id = ?",
    ):
        removed += await tx.execute(sql, conversation_id)
    if cleared_at is None:
        removed += await tx.execute("DELETE FROM conversations WHERE id = ?", conversation_id)
    else:
        await tx.execute(
            "UPDATE conversations SET cleared_at = ? WHERE id = ?", cleared_at, conversation_id
        )
    return removed


# a message shows a job: the newest link for a message wins
LINK = (
    "INSERT INTO message_links (platform, tenant, message_key, turn_id, job_id, linked_at) "
    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (platform, tenant, message_key) DO UPDATE SET "
    "turn_id = excluded.turn_id, job_id = excluded.job_id, linked_at = excluded.linked_at"
)


def _link_row(job: Job, message_key: str, at: float) -> tuple[object, ...]:
    turn_id = job.model_turn_id or job.user_turn_id
    return (job.platform, job.tenant, message_key, turn_id, job.id, at)
