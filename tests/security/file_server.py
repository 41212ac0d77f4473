"""A file server on one loopback address that serves, redirects or streams, and records who asked.

Used as the far end of attachment downloads: an allowed host that misbehaves, or a host the
bot must never reach (then `requests` stays empty).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from types import TracebackType

from aiohttp import web

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
CHUNK = 64 * 1024


@dataclass(frozen=True)
class Seen:
    path: str
    headers: dict[str, str]


@dataclass
class Stream:
    """A body written chunk by chunk until `total` bytes or until the client hangs up."""

    total: int
    sent: int = 0
    ended: asyncio.Event = field(default_factory=asyncio.Event)


class FileServer:
    def __init__(self, host: str = "127.0.0.1") -> None:
        self.host = host
        self.requests: list[Seen] = []
        self.streams: dict[str, Stream] = {}
        self._routes: dict[str, Handler] = {}
        self._runner: web.AppRunner | None = None
        self._base = ""

    async def __aenter__(self) -> FileServer:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, 0)
        await site.start()
        port = self._runner.addresses[0][1]
        self._base = f"http://{self.host}:{port}"
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    @property
    def port(self) -> int:
        return int(self._base.rsplit(":", 1)[1])

    def url(self, path: str) -> str:
        return f"{self._base}{path}"

    def paths(self) -> list[str]:
        return [seen.path for seen in self.requests]

    # what each path does

    def file(self, path: str, data: bytes, content_type: str = "image/png") -> str:
        async def serve(request: web.Request) -> web.StreamResponse:
            return web.Response(body=data, content_type=content_type)

        self._routes[path] = serve
        return self.url(path)

    def redirect(self, path: str, location: str, status: int = 302) -> str:
        async def serve(request: web.Request) -> web.StreamResponse:
            return web.Response(status=status, headers={"Location": location})

        self._routes[path] = serve
        return self.url(path)

    def stream(self, path: str, total: int, content_type: str = "image/png") -> str:
        """A body of `total` bytes with no Content-Length: only counting can stop it."""
        stream = self.streams[path] = Stream(total)
        chunk = b"\x89PNG\r\n\x1a\n" + bytes(CHUNK - 8)

        async def serve(request: web.Request) -> web.StreamResponse:
            response = web.StreamResponse(headers={"Content-Type": content_type})
            response.enable_chunked_encoding()
            try:
                await response.prepare(request)
                while stream.sent < stream.total:
                    await response.write(chunk)
                    stream.sent += len(chunk)
                await response.write_eof()
            except ConnectionError:
                pass  # the client hung up, which is what the size cap should make it do
            finally:
                stream.ended.set()
            return response

        self._routes[path] = serve
        return self.url(path)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        self.requests.append(Seen(request.path, dict(request.headers)))
        handler = self._routes.get(request.path)
        if handler is None:
            return web.Response(status=404, text="not here")
        return await handler(request)
