"""A lean HTTP/1.1 POST for bursts: request bytes built beforehand, one connection each.

A full client (aiohttp's) spends about half a millisecond of the bench's own CPU per request,
so with hundreds in flight its bookkeeping, not the bot, would set the measured latency.
"""

from __future__ import annotations

import asyncio
import time
from urllib.parse import urlsplit


def post_bytes(url: str, body: bytes, headers: dict[str, str]) -> bytes:
    """The whole request as written on the wire."""
    parts = urlsplit(url)
    lines = [
        f"POST {parts.path or '/'} HTTP/1.1",
        f"Host: {parts.netloc}",
        f"Content-Length: {len(body)}",
        "Connection: close",
        *(f"{name}: {value}" for name, value in headers.items()),
    ]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def exchange(host: str, port: int, request: bytes) -> tuple[int, float]:
    """Connects, writes `request`, reads the whole answer; returns its status and the
    seconds from connecting to the last byte."""
    status, seconds, _ = await exchange_for_body(host, port, request)
    return status, seconds


async def exchange_for_body(host: str, port: int, request: bytes) -> tuple[int, float, bytes]:
    """`exchange`, with the answer's body as well."""
    started = time.perf_counter()
    reader, writer = await asyncio.open_connection(host, port)
    try:
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        status = int(head.split(b" ", 2)[1])
        length = _content_length(head)
        if length is None:
            body = await reader.read()  # Connection: close ends the body
        else:
            body = await reader.readexactly(length)
        return status, time.perf_counter() - started, body
    finally:
        writer.close()


async def get_status(host: str, port: int, path: str) -> int:
    """The status of a GET, or 0 when nothing answers."""
    try:
        reader, writer = await asyncio.open_connection(host, port)
    except OSError:
        return 0
    try:
        writer.write(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\n\r\n".encode())
        head = await reader.readuntil(b"\r\n\r\n")
        return int(head.split(b" ", 2)[1])
    except (OSError, asyncio.IncompleteReadError, ValueError, IndexError):
        return 0
    finally:
        writer.close()


def _content_length(head: bytes) -> int | None:
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            return int(value.strip())
    return None
