"""Shared fixtures: a clean environment, the fake image API and settings pointing at it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from core.config import Settings
from tests.fakes.gemini import FakeGemini
from tests.postgres import PostgresServer, open_server

API_KEY = "test-key"


@pytest.fixture(autouse=True)
def _no_outside_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests see only the settings they set, never a developer's environment."""
    for info in Settings.model_fields.values():
        if isinstance(info.validation_alias, str):
            monkeypatch.delenv(info.validation_alias, raising=False)


@pytest.fixture
async def fake_gemini() -> AsyncIterator[FakeGemini]:
    async with FakeGemini(api_key=API_KEY) as fake:
        yield fake


def make_settings(tmp_path: Path, gemini: FakeGemini, **values: Any) -> Settings:
    """Settings for a test: the fake API, a fresh SQLite file, short timings.

    `values` use the environment names (GEMINI_MODEL="pro", IMAGEBOT_MAX_CONCURRENCY=2, ...).
    """
    defaults: dict[str, Any] = {
        "GEMINI_API_KEY": API_KEY,
        "GEMINI_BASE_URL": gemini.base_url,
        "DATABASE_URL": f"sqlite:///{tmp_path / 'imagebot.sqlite3'}",
        "IMAGEBOT_OUTPUT_DIR": str(tmp_path / "out"),
        "IMAGEBOT_PROGRESS_INTERVAL_SECONDS": 0.5,
        "GEMINI_RETRY_BACKOFF_SECONDS": 0.05,
    }
    return Settings(_env_file=None, **{**defaults, **values})  # type: ignore[call-arg]


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """The session's PostgreSQL: IMAGEBOT_TEST_DATABASE_URL's server, or one started now
    (only when a test asks for it) and stopped at the end of the session."""
    with open_server() as server:
        yield server


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A new, empty database for this test, dropped after it: a postgresql:// URL that
    asyncpg.connect, asyncpg.create_pool and child processes (as DATABASE_URL) accept."""
    with postgres_server.database() as url:
        yield url


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """The store's database, once as a SQLite file and once as a PostgreSQL database: the
    tests that take it run against both."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'imagebot.sqlite3'}"
    return str(request.getfixturevalue("postgres_url"))
