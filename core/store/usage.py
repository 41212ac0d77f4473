"""What limits and reports count, and the saved defaults: each person's, each channel's
and each workspace's or server's."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from core.jobs import UsageSummary
from core.options import Options
from core.quotas import Counts
from core.store.database import Database
from core.store.records import dump_options, load_options

_TABLES = ("images", "conversations", "turns", "jobs", "message_links", "intake")


class UsageStore:
    _db: Database
    _clock: Callable[[], float]

    async def quota_counts(
        self, platform: str, tenant: str, user_id: str, day_start: float, month_start: float
    ) -> Counts:
        """Usage that limits apply to; images still being made count as made."""
        row = await self._db.fetchrow(
            """
            SELECT
              COALESCE(SUM(CASE WHEN user_id = ? AND created_at >= ? AND state != 'failed'
                           THEN 1 ELSE 0 END), 0),
              COALESCE(SUM(CASE WHEN created_at >= ? AND state != 'failed' THEN 1 ELSE 0 END), 0),
              COALESCE(SUM(CASE WHEN created_at >= ? THEN cost_usd ELSE 0 END), 0),
              COALESCE(SUM(CASE WHEN user_id = ? AND state IN ('queued', 'running')
                           THEN 1 ELSE 0 END), 0)
            FROM jobs WHERE platform = ? AND tenant = ?
            """,
            user_id,
            day_start,
            day_start,
            month_start,
            user_id,
            platform,
            tenant,
        )
        total = await self._db.fetchrow(
            "SELECT COUNT(*) FROM jobs WHERE state IN ('queued', 'running')"
        )
        assert row is not None and total is not None
        return Counts(
            user_today=int(row[0]),
            tenant_today=int(row[1]),
            tenant_month_cost=float(row[2]),
            user_in_flight=int(row[3]),
            total_in_flight=int(total[0]),
        )

    async def usage(
        self, platform: str, tenant: str, user_id: str | None, since: float
    ) -> UsageSummary:
        where = "platform = ? AND tenant = ? AND created_at >= ?"
        params: list[Any] = [platform, tenant, since]
        if user_id is not None:
            where += " AND user_id = ?"
            params.append(user_id)
        rows = await self._db.fetch(
            f"SELECT state, options, cost_usd FROM jobs WHERE {where} AND state IN "
            "('succeeded', 'failed')",
            *params,
        )
        by_model: dict[str, int] = {}
        images = failed = 0
        cost = 0.0
        for row in rows:
            cost += row["cost_usd"]
            if row["state"] == "succeeded":
                images += 1
                model = load_options(row["options"]).model or "?"
                by_model[model] = by_model.get(model, 0) + 1
            else:
                failed += 1
        return UsageSummary(images=images, failed=failed, cost_usd=cost, by_model=by_model)

    async def user_defaults(self, platform: str, tenant: str, user_id: str) -> Options:
        row = await self._db.fetchrow(
            "SELECT options FROM user_defaults WHERE platform = ? AND tenant = ? AND user_id = ?",
            platform,
            tenant,
            user_id,
        )
        return load_options(row["options"]) if row else Options()

    async def set_user_defaults(
        self, platform: str, tenant: str, user_id: str, options: Options
    ) -> None:
        async with self._db.transaction() as tx:
            await tx.execute(
                "INSERT INTO user_defaults (platform, tenant, user_id, options) "
                "VALUES (?, ?, ?, ?) ON CONFLICT (platform, tenant, user_id) "
                "DO UPDATE SET options = excluded.options",
                platform,
                tenant,
                user_id,
                dump_options(options),
            )

    async def shared_defaults(
        self, platform: str, tenant: str, channel: str | None
    ) -> tuple[Options, Options]:
        """The defaults set for the whole workspace or server, and for `channel`."""
        rows = await self._db.fetch(
            "SELECT channel, options FROM shared_defaults WHERE platform = ? AND tenant = ? "
            "AND channel IN ('', ?)",
            platform,
            tenant,
            channel or "",
        )
        found = {row["channel"]: load_options(row["options"]) for row in rows}
        return found.get("", Options()), found.get(channel, Options()) if channel else Options()

    async def set_shared_defaults(
        self, platform: str, tenant: str, channel: str | None, options: Options, set_by: str
    ) -> None:
        """Save the defaults of a workspace or server (`channel` None) or of one channel;
        nothing set removes them."""
        async with self._db.transaction() as tx:
            if options == Options():
                await tx.execute(
                    "DELETE FROM shared_defaults WHERE platform = ? AND tenant = ? AND channel = ?",
                    platform,
                    tenant,
                    channel or "",
                )
                return
            await tx.execute(
                "INSERT INTO shared_defaults (platform, tenant, channel, options, set_by, set_at) "
                "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (platform, tenant, channel) DO UPDATE "
                "SET options = excluded.options, set_by = excluded.set_by, "
                "set_at = excluded.set_at",
                platform,
                tenant,
                channel or "",
                dump_options(options),
                set_by,
                self._clock(),
            )

    async def counts(self) -> dict[str, int]:
        """Rows per table, for tests and health checks."""
        result = {}
        for table in _TABLES:
            row = await self._db.fetchrow(f"SELECT COUNT(*) FROM {table}")
            result[table] = int(row[0]) if row else 0
        return result
