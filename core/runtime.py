"""Wiring: settings in, a ready Service out, and everything closed again on the way out."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from typing import Any

from core import logs
from core.catalog import Catalog, load_catalog
from core.config import ConfigError, Settings
from core.gemini import GeminiClient
from core.service import Service
from core.store import Store
from core.throttle import Throttle

log = logging.getLogger("core.runtime")


def configure_logging(settings: Settings, *, quiet: bool = False) -> None:
    """Logging as configured; `quiet` (the terminal commands) logs nothing unless
    IMAGEBOT_LOG_LEVEL is set in the environment (not only in .env, which sets it for the
    bot), so a script sees only the command's own lines."""
    secrets = [
        value.get_secret_value()
        for value in (
            settings.gemini_api_key,
            settings.slack_bot_token,
            settings.slack_app_token,
            settings.slack_signing_secret,
            settings.slack_client_secret,
            settings.discord_bot_token,
        )
        if value is not None
    ]
    explicit = "IMAGEBOT_LOG_LEVEL" in os.environ
    level = settings.log_level if explicit or not quiet else None
    logs.configure(level, settings.log_format, secrets)


def catalog_from(settings: Settings) -> Catalog:
    try:
        return load_catalog(settings.models_file, settings.gemini_model, settings.provider)
    except ValueError as exc:
        name = "IMAGEBOT_MODELS_FILE" if settings.models_file else "GEMINI_MODEL"
        raise ConfigError(f"{name}: {exc}") from None


@asynccontextmanager
async def open_service(
    settings: Settings, *, clock: Callable[[], float] = time.time, **service_options: Any
) -> AsyncIterator[Service]:
    """A Service over the configured store and API; register adapters, then start() it.

    `clock` is the store's time (tests pass one they move); `service_options` go to
    Service (its owner name, its delivery backoff)."""
    settings.require("GEMINI_API_KEY")
    assert settings.gemini_api_key is not None
    catalog = catalog_from(settings)
    store = await Store.open(
        settings.database_url,
        clock,
        pool_min=settings.database_pool_min,
        pool_max=settings.database_pool_max,
    )
    provider = settings.provider
    gemini = GeminiClient(
        settings.gemini_base_url,
        settings.gemini_api_key.get_secret_value(),
        provider=provider,
        timeout_seconds=settings.gemini_timeout_seconds,
        max_attempts=settings.gemini_max_attempts,
        deadline_seconds=settings.gemini_retry_deadline_seconds,
        backoff_base_seconds=settings.gemini_retry_backoff_seconds,
        throttle=Throttle(settings.max_concurrency, int(settings.memory_budget_mb * 1024 * 1024)),
    )
    _log_image_api(settings, catalog)
    service = Service(settings, catalog, store, gemini, **service_options)
    try:
        yield service
    finally:
        await service.stop()
        await gemini.aclose()
        await store.close()


def _log_image_api(settings: Settings, catalog: Catalog) -> None:
    provider = settings.provider
    model_id = catalog.default.wire_id(provider.name)
    how = "chosen by host" if settings.gemini_provider == "auto" else "GEMINI_PROVIDER"
    log.info(
        "image API: %s at %s (provider %s, %s), key sent in %s, default model %s",
        provider.title,
        settings.gemini_base_url,
        provider.name,
        how,
        provider.auth_kind,
        model_id,
    )
    retired = provider.retired.get(model_id)
    if retired is not None:
        log.warning(
            "%s shut %s down on %s; set GEMINI_MODEL=%s",
            provider.title,
            model_id,
            retired.since,
            retired.successor,
        )
