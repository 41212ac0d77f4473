"""An app installed in many workspaces: each one's bot token, the OAuth states that lead to
an installation, and deleting a tenant's data some time after it uninstalled the app.

The rows are plain: a platform adapter translates its SDK's objects to and from them.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from core.store.conversations import VACUUM_SLICE_BYTES, clear_conversation
from core.store.database import Database


@dataclass(frozen=True)
class Installation:
    """One workspace's (or, org-wide, one enterprise's) installation of the app.

    `tenant` is what the workspace's jobs, usage and settings are kept under: its team id,
    or the enterprise id of an org-wide installation. `details` holds whatever else the
    platform returned (names, URLs, the installer) for the adapter to read back.
    """

    platform: str
    tenant: str
    bot_token: str = field(repr=False)
    bot_scopes: str = ""
    enterprise_id: str | None = None
    team_id: str | None = None
    bot_refresh_token: str | None = field(default=None, repr=False)
    bot_token_expires_at: float | None = None
    bot_id: str | None = None
    bot_user_id: str | None = None
    details: dict[str, Any] = field(default_factory=dict)
    installed_at: float = 0.0


_COLUMNS = (
    "platform, enterprise_id, team_id, tenant, bot_token, bot_refresh_token, "
    "bot_token_expires_at, bot_scopes, bot_id, bot_user_id, details, installed_at"
)


def _installation_of(row: Any) -> Installation:
    return Installation(
        platform=row["platform"],
        tenant=row["tenant"],
        bot_token=row["bot_token"],
        bot_scopes=row["bot_scopes"],
        enterprise_id=row["enterprise_id"] or None,
        team_id=row["team_id"] or None,
        bot_refresh_token=row["bot_refresh_token"],
        bot_token_expires_at=row["bot_token_expires_at"],
        bot_id=row["bot_id"],
        bot_user_id=row["bot_user_id"],
        details=json.loads(row["details"]),
        installed_at=row["installed_at"],
    )


class InstallationStore:
    _db: Database
    _clock: Callable[[], float]

    async def save_installation(self, installation: Installation) -> None:
        """Keeps the installation (a reinstall replaces the row, keeping when it was first
        installed) and calls off a deletion of the tenant's data still waiting since an
        earlier uninstall."""
        i, now = installation, self._clock()
        async with self._db.transaction() as tx:
            await tx.execute(
                f"INSERT INTO installations ({_COLUMNS}, updated_at) "
                "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) "
                "ON CONFLICT (platform, enterprise_id, team_id) DO UPDATE SET "
                "tenant = excluded.tenant, bot_token = excluded.bot_token, "
                "bot_refresh_token = excluded.bot_refresh_token, "
                "bot_token_expires_at = excluded.bot_token_expires_at, "
                "bot_scopes = excluded.bot_scopes, bot_id = excluded.bot_id, "
                "bot_user_id = excluded.bot_user_id, details = excluded.details, "
                "updated_at = excluded.updated_at",
                i.platform,
                i.enterprise_id or "",
                i.team_id or "",
                i.tenant,
                i.bot_token,
                i.bot_refresh_token,
                i.bot_token_expires_at,
                i.bot_scopes,
                i.bot_id,
                i.bot_user_id,
                json.dumps(i.details, separators=(",", ":")),
                i.installed_at or now,
                now,
            )
            await tx.execute(
                "DELETE FROM tenant_deletions WHERE platform = ? AND tenant = ?",
                i.platform,
                i.tenant,
            )

    async def installation(
        self, platform: str, *, enterprise_id: str | None, team_id: str | None
    ) -> Installation | None:
        """The installation with exactly these ids (None for an absent one)."""
        row = await self._db.fetchrow(
            f"SELECT {_COLUMNS} FROM installations "
            "WHERE platform = ? AND enterprise_id = ? AND team_id = ?",
            platform,
            enterprise_id or "",
            team_id or "",
        )
        return _installation_of(row) if row else None

    async def installation_for(self, platform: str, tenant: str) -> Installation | None:
        """The installation whose jobs, usage and settings are kept under `tenant`."""
        row = await self._db.fetchrow(
            f"SELECT {_COLUMNS} FROM installations WHERE platform = ? AND tenant = ? "
            "ORDER BY updated_at DESC LIMIT 1",
            platform,
            tenant,
        )
        return _installation_of(row) if row else None

    async def remove_installation(
        self,
        platform: str,
        *,
        enterprise_id: str | None,
        team_id: str | None,
        delete_data_at: float | None,
    ) -> bool:
        """Forgets the installation (its token is dead); with `delete_data_at`, the tenant's
        data goes at that time (`forget_tenants`) unless the app is installed there again
        first. An earlier date already set stays. True when there was an installation."""
        tenant = team_id or enterprise_id or ""
        async with self._db.transaction() as tx:
            removed = await tx.execute(
                "DELETE FROM installations WHERE platform = ? AND enterprise_id = ? "
                "AND team_id = ?",
                platform,
                enterprise_id or "",
                team_id or "",
            )
            if delete_data_at is not None and tenant:
                await tx.execute(
                    "INSERT INTO tenant_deletions (platform, tenant, due_at) VALUES (?, ?, ?) "
                    "ON CONFLICT (platform, tenant) DO NOTHING",
                    platform,
                    tenant,
                    delete_data_at,
                )
        return removed > 0

    async def tenant_deletion(self, platform: str, tenant: str) -> float | None:
        """When the tenant's data is due to go, if it is."""
        row = await self._db.fetchrow(
            "SELECT due_at FROM tenant_deletions WHERE platform = ? AND tenant = ?",
            platform,
            tenant,
        )
        return float(row["due_at"]) if row else None

    async def forget_tenants(self, now: float) -> int:
        """Deletes the conversations, turns, jobs, message links and saved defaults of each
        tenant whose deletion is due; returns the rows removed. A tenant with jobs still
        queued or running waits for the next pass; images go by their own retention, since
        the same bytes may be used elsewhere. One conversation per transaction, so requests
        arriving meanwhile wait milliseconds, not the whole pass."""
        due = await self._db.fetch(
            "SELECT platform, tenant FROM tenant_deletions WHERE due_at <= ?", now
        )
        removed = 0
        for row in due:
            platform, tenant = row["platform"], row["tenant"]
            busy = await self._db.fetchrow(
                "SELECT 1 FROM jobs WHERE platform = ? AND tenant = ? "
                "AND state IN ('queued', 'running') LIMIT 1",
                platform,
                tenant,
            )
            if busy:
                continue
            conversations = await self._db.fetch(
                "SELECT id FROM conversations WHERE platform = ? AND tenant = ?", platform, tenant
            )
            for conversation in conversations:
                async with self._db.transaction() as tx:
                    removed += await clear_conversation(tx, conversation["id"], cleared_at=None)
            async with self._db.transaction() as tx:
                for table in ("message_links", "jobs", "user_defaults", "shared_defaults"):
                    removed += await tx.execute(
                        f"DELETE FROM {table} WHERE platform = ? AND tenant = ?", platform, tenant
                    )
                await tx.execute(
                    "DELETE FROM tenant_deletions WHERE platform = ? AND tenant = ?",
                    platform,
                    tenant,
                )
        if removed:
            await self._db.give_back_space(VACUUM_SLICE_BYTES)
        return removed

    # OAuth states: a browser's install is tied to the state it started with

    async def issue_oauth_state(self, state: str, expires_at: float) -> None:
        """Keeps a new state until `expires_at` (states left unused past theirs go now)."""
        async with self._db.transaction() as tx:
            await tx.execute("DELETE FROM oauth_states WHERE expires_at < ?", self._clock())
            await tx.execute(
                "INSERT INTO oauth_states (state, expires_at) VALUES (?, ?)", state, expires_at
            )

    async def consume_oauth_state(self, state: str) -> bool:
        """True once for a state issued and not expired; every later use is False."""
        async with self._db.transaction() as tx:
            row = await tx.fetchrow(
                "DELETE FROM oauth_states WHERE state = ? RETURNING expires_at", state
            )
        return row is not None and float(row["expires_at"]) >= self._clock()
