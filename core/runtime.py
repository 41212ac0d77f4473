"""Wiring: settings in, a ready Service out, and everything closed again on the way out."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from core.catalog import Catalog, load_catalog
from core.config import ConfigError, Settings
from core.gemini import GeminiClient
from core.service import Service
from core.store import Store


def configure_logging(settings: Settings) -> None:
    logging.basicConfig(
        level=settings.log_level,
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    # httpx logs every request URL at INFO; keep the log about our own work
    logging.getLogger("httpx").setLevel(logging.WARNING)


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
