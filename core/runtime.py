"""Wiring: settings in, a ready Service out, and everything closed again on the way out."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from core import logs
from core.catalog import Catalog, load_catalog
from core.config import ConfigError, Settings
from core.gemini import GeminiClient
from core.service import Service
from core.store import Store


def configure_logging(settings: Settings) -> None:
    secrets = [
        value.get_secret_value()
        for value in (
            settings.gemini_api_key,
            settings.slack_bot_token,
            settings.slack_app_token,
            settings.slack_signing_secret,
            settings.discord_bot_token,
        )
        if value is not None
    ]
    logs.configure(settings.log_level, settings.log_format, secrets)


def catalog_from(settings: Settings) -> Catalog:
    try:
        return load_catalog(settings.models_file, settings.gemini_model)
    except ValueError as exc:
        name = "IMAGEBOT_MODELS_FILE" if settings.models_file else "GEMINI_MODEL"
        raise ConfigError(f"{name}: {exc}") from None


@asynccontextmanager
async def open_service(settings: Settings) -> AsyncIterator[Service]:
    """A Service over the configured store and API; register adapters, then start() it."""
    settings.require("GEMINI_API_KEY")
    assert settings.gemini_api_key is not None
    catalog = catalog_from(settings)
    store = await Store.open(settings.sqlite_path)
    gemini = GeminiClient(
        settings.gemini_base_url,
        settings.gemini_api_key.get_secret_value(),
        timeout_seconds=settings.gemini_timeout_seconds,
        max_attempts=settings.gemini_max_attempts,
        deadline_seconds=settings.gemini_retry_deadline_seconds,
        backoff_base_seconds=settings.gemini_retry_backoff_seconds,
    )
    service = Service(settings, catalog, store, gemini)
    try:
        yield service
    finally:
        await service.stop()
        await gemini.aclose()
        await store.close()
