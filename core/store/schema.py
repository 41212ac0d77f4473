"""The schema's history, one list for SQLite and PostgreSQL, and moving a database to its end.

The migrations are written in SQLite's words, as they shipped; PostgreSQL gets the same
statements with its own type names (a 64-bit identity for `INTEGER PRIMARY KEY`, BYTEA for
BLOB, DOUBLE PRECISION for REAL), so both databases hold the same tables at each version.
"""

from __future__ import annotations

import re

from core.store.database import Database

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
    # the order messages were linked in, which SQLite kept in its rowid and PostgreSQL does
    # not keep; and the queue a claim reads, oldest first
    """
    ALTER TABLE message_links ADD COLUMN linked_at REAL NOT NULL DEFAULT 0;
    CREATE INDEX jobs_queued ON jobs (state, platform, seq);
    """,
    # an app installed in many workspaces: each one's bot token ('' for an absent
    # enterprise or team id, since a key column cannot be NULL); OAuth states waiting for
    # their redirect; and the tenants whose data goes once they have been gone long enough
    """
    CREATE TABLE installations (
        platform TEXT NOT NULL,
        enterprise_id TEXT NOT NULL,
        team_id TEXT NOT NULL,
        tenant TEXT NOT NULL,
        bot_token TEXT NOT NULL,
        bot_refresh_token TEXT,
        bot_token_expires_at REAL,
        bot_scopes TEXT NOT NULL,
        bot_id TEXT,
        bot_user_id TEXT,
        details TEXT NOT NULL,
        installed_at REAL NOT NULL,
        updated_at REAL NOT NULL,
        PRIMARY KEY (platform, enterprise_id, team_id)
    );
    CREATE INDEX installations_by_tenant ON installations (platform, tenant);
    CREATE TABLE oauth_states (
        state TEXT PRIMARY KEY,
        expires_at REAL NOT NULL
    );
    CREATE TABLE tenant_deletions (
        platform TEXT NOT NULL,
        tenant TEXT NOT NULL,
        due_at REAL NOT NULL,
        PRIMARY KEY (platform, tenant)
    );
    """,
    # the requester's Cancel: a running job marked so that its result is not shown
    """
    ALTER TABLE jobs ADD COLUMN cancelled_at REAL;
    """,
    # variations: the jobs of one request name the first, which counts those still open
    # and is delivered, with all of them, once none is
    """
    ALTER TABLE jobs ADD COLUMN group_id TEXT;
    ALTER TABLE jobs ADD COLUMN group_open INTEGER NOT NULL DEFAULT 0;
    CREATE INDEX jobs_by_group ON jobs (group_id);
    """,
    # defaults set for a whole workspace or server (channel '') or for one channel, under
    # each person's own
    """
    CREATE TABLE shared_defaults (
        platform TEXT NOT NULL,
        tenant TEXT NOT NULL,
        channel TEXT NOT NULL,
        options TEXT NOT NULL,
        set_by TEXT NOT NULL,
        set_at REAL NOT NULL,
        PRIMARY KEY (platform, tenant, channel)
    );
    """,
)

_POSTGRES_TYPES = (
    (
        re.compile(r"\bINTEGER PRIMARY KEY( AUTOINCREMENT)?\b"),
        "BIGINT GENERATED BY DEFAULT AS IDENTITY PRIMARY KEY",
    ),
    (re.compile(r"\bINTEGER\b"), "BIGINT"),
    (re.compile(r"\bREAL\b"), "DOUBLE PRECISION"),
    (re.compile(r"\bBLOB\b"), "BYTEA"),
)
# several processes may start at once: one migrates, the others wait for it
_MIGRATION_LOCK = 7_406_110_171


def statements(script: str, dialect: str) -> list[str]:
    """A migration's statements in the words of `dialect`."""
    found = [s.strip() for s in script.split(";") if s.strip()]
    if dialect == "sqlite":
        return found
    for pattern, words in _POSTGRES_TYPES:
        found = [pattern.sub(words, s) for s in found]
    return found


async def migrate(db: Database) -> int:
    """Runs the migrations the database has not seen; returns its version after."""
    async with db.transaction() as tx:
        if db.name == "postgresql":
            await tx.execute("SELECT pg_advisory_xact_lock(?)", _MIGRATION_LOCK)
            await tx.execute("CREATE TABLE IF NOT EXISTS schema_version (version BIGINT NOT NULL)")
            row = await tx.fetchrow("SELECT version FROM schema_version")
        else:
            row = await tx.fetchrow("PRAGMA user_version")
        version = int(row[0]) if row else 0
        for number, script in enumerate(MIGRATIONS[version:], start=version + 1):
            for statement in statements(script, db.name):
                await tx.execute(statement)
            version = number
        if db.name == "postgresql":
            await tx.execute("DELETE FROM schema_version")
            await tx.execute("INSERT INTO schema_version (version) VALUES (?)", version)
        else:
            await tx.execute(f"PRAGMA user_version={version}")
    return version
