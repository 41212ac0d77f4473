"""Runs one or more chat adapters over one service in one process until stopped."""

from __future__ import annotations

import asyncio
import importlib
import signal
import socket
import sys
from collections.abc import Sequence
from typing import Protocol

import aiohttp
import httpx

from bots.web import WebServer
from core import metrics
from core.config import ConfigError, Settings, load_settings
from core.runtime import configure_logging, open_service
from core.service import Service


class PlatformApp(Protocol):
    async def serve(self) -> None:
        """Connect to the platform and handle it until cancelled."""
        ...


def create_app(
    platform: str, settings: Settings, service: Service, web_server: WebServer | None = None
) -> PlatformApp:
    """bots.<platform>.create_app(settings, service); it registers itself with the service.
    Adapters given the same `web_server` share its port."""
    module = importlib.import_module(f"bots.{platform}")
    app: PlatformApp = module.create_app(settings, service, web_server=web_server)
    return app


async def run_platforms(settings: Settings, platforms: Sequence[str]) -> None:
    async with open_service(settings) as service:
        # one port for every adapter that serves HTTP (Slack's HTTP mode, Discord's
        # interactions over HTTP); an adapter that serves none leaves it unused
        shared = WebServer("0.0.0.0", settings.port, service.health)
        apps = [create_app(platform, settings, service, shared) for platform in platforms]
        await service.start()
        # Slack's HTTP mode serves /metrics on PORT already; other modes need their own port
        exporter = (
            await metrics.serve(settings.metrics_port, health=service.health)
            if settings.metrics_port is not None
            else None
        )
        serving = [asyncio.create_task(app.serve()) for app in apps]
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        # a platform's SIGTERM (a deploy, a restart) ends the process like Ctrl-C
        loop.add_signal_handler(signal.SIGTERM, stop.set)
        try:
            stopped = asyncio.create_task(stop.wait())
            done, _ = await asyncio.wait([*serving, stopped], return_when=asyncio.FIRST_COMPLETED)
            stopped.cancel()
            for task in done:
                if task is not stopped and not task.cancelled() and task.exception():
                    raise task.exception()  # type: ignore[misc]
        finally:
            loop.remove_signal_handler(signal.SIGTERM)
            # the service stops first, so deliveries under way still have their platforms
            await service.stop()
            for task in serving:
                task.cancel()
            await asyncio.gather(*serving, return_exceptions=True)
            if exporter is not None:
                await exporter.cleanup()


# what a platform's SDK raises when its servers cannot be reached at all
UNREACHABLE = (
    aiohttp.ClientConnectionError,
    httpx.TransportError,
    ConnectionError,
    socket.gaierror,
)


def unreachable(exc: BaseException) -> str:
    """One line for a start-up that could not reach a platform (no network, a wrong URL)."""
    said = " ".join(str(exc).split()) or type(exc).__name__
    return (
        f"imagebot: could not reach the platform ({said}); check the network, and "
        "SLACK_API_URL or DISCORD_API_URL if set"
    )


def main(platform: str) -> int:
    """`python -m bots.<platform>`: one adapter per process, as the Procfile runs them."""
    try:
        settings = load_settings()
        configure_logging(settings)
        asyncio.run(run_platforms(settings, [platform]))
    except ConfigError as exc:
        print(f"imagebot: {exc}", file=sys.stderr)
        return 1
    except UNREACHABLE as exc:
        print(unreachable(exc), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0
