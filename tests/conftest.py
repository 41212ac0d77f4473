"""Shared fixtures: a clean environment, the fake image API and settings pointing at it."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from core.config import Settings
from tests.fakes.gemini import FakeGemini

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

    `values` use the environment names (GEMINI_MODEL="pro", IMAGEBOT_WORKERS=2, ...).
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
