"""The HTTP server of a process: one port (PORT) for every adapter that serves HTTP.

Slack's HTTP mode (/slack/events, the OAuth routes) and Discord's interactions over HTTP
(/discord/interactions) can run in one process (`imagebot run`) behind one port, as a
host such as Heroku gives a process exactly one. Each adapter says at construction that it
will serve, adds its routes when it is ready to, and waits; the server starts once all of
them have, with /healthz and /metrics beside their routes.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from core import metrics
from core.metrics import Health

log = logging.getLogger(__name__)

# a burst of requests (200 interactions, Slack's retries) must not overflow the kernel's
# default accept queue of 128
BACKLOG = 1024


class WebServer:
    """Routes from several adapters on one aiohttp server, started when all have added theirs."""

    def __init__(self, host: str, port: int, health: Health) -> None:
        self.host = host
        self.port = port  # the bound port once started (PORT=0 binds a free one)
        self.app = web.Application()
        metrics.add_routes(self.app, health)
        self._expected = 0
        self._added = 0
        self._started = asyncio.Event()
        self._failure: BaseException | None = None
        self._runner: web.AppRunner | None = None

    def expect(self) -> None:
        """An adapter will serve here: the server waits for its routes before it starts."""
        self._expected += 1

    async def serve(self) -> int:
        """Call after adding routes to `app`; returns the bound port once the server listens."""
        self._added += 1
        if self._added == self._expected:
            try:
                self._runner = web.AppRunner(self.app, access_log=None)
                await self._runner.setup()
                site = web.TCPSite(self._runner, self.host, self.port, backlog=BACKLOG)
                await site.start()
                self.port = int(self._runner.addresses[0][1])
            except BaseException as exc:
                self._failure = exc
                raise
            finally:
                self._started.set()
        await self._started.wait()
        if self._failure is not None:
            raise RuntimeError(f"the HTTP server on port {self.port} did not start") from None
        return self.port

    async def close(self) -> None:
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
