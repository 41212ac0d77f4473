"""The physical floor of a 4K answer's path: decode, hash, store, upload, and nothing else.

Each step runs once per run with the fastest primitive the bot itself uses (pybase64 when
installed, hashlib, the project's SQLite settings and page size, an asyncio socket), on the
bytes the fake image API sends at 4K, in this one process. What the bot spends over their
sum is overhead: parsing, thread hops, queues, copies, waiting on locks.

`python -m bench.floor` prints the table; the bench calls `measure_floor`.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import hashlib
import socket
import statistics
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from core.store.database import SqliteDatabase
from core.store.images import TableImages
from core.store.records import NewImage
from core.store.schema import migrate
from tests.fakes.gemini import render_photo

try:
    from pybase64 import b64decode as _b64decode
except ImportError:
    from base64 import b64decode as _b64decode

FORMATS = {"jpeg": "image/jpeg", "png": "image/png"}
SIDE = 4096  # the fake's 4K square on Gemini 3
STEPS = ("decode", "sha256", "sqlite_write", "sqlite_checkpoint", "upload")
_SINK_CHUNK = 1 << 20


def photo(fmt: str) -> bytes:
    """The picture the fake image API answers with at 4K."""
    return render_photo(SIDE, SIDE, fmt)


class _Sink:
    """A TCP listener on 127.0.0.1 that reads and discards, in a thread of its own as a
    remote server would be; `received(total, done)` calls `done` once that many bytes came."""

    def __init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self._lock = threading.Lock()
        self._total = 0
        self._waiting: tuple[int, Callable[[], None]] | None = None
        self._thread = threading.Thread(target=self._serve, name="floor-sink", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        try:
            connection, _ = self._listener.accept()
        except OSError:
            return  # closed before anyone connected
        buffer = bytearray(_SINK_CHUNK)
        with connection:
            while count := connection.recv_into(buffer):
                with self._lock:
                    self._total += count
                    if self._waiting and self._total >= self._waiting[0]:
                        self._waiting[1]()
                        self._waiting = None

    def received(self, total: int, done: Callable[[], None]) -> None:
        with self._lock:
            if self._total >= total:
                done()
            else:
                self._waiting = (total, done)

    def close(self) -> None:
        self._listener.close()
        self._thread.join(timeout=5)


async def _upload(writer: asyncio.StreamWriter, sink: _Sink, sent: int, data: bytes) -> float:
    loop = asyncio.get_running_loop()
    arrived = loop.create_future()
    sink.received(sent + len(data), lambda: loop.call_soon_threadsafe(arrived.set_result, None))
    started = time.perf_counter()
    writer.write(data)
    await writer.drain()
    await arrived
    return time.perf_counter() - started


async def _store(folder: Path, run: int, image: NewImage) -> tuple[float, float]:
    """Seconds to write the image in one transaction, and to checkpoint it into the file
    (which SQLite does within a later commit), in a new database of the project's kind."""
    db = await SqliteDatabase.open(folder / f"floor-{run}.sqlite3", time.time)
    try:
        await migrate(db)
        images = TableImages(db, time.time)
        started = time.perf_counter()
        async with db.transaction() as tx:
            await images.put(tx, image)
        written = time.perf_counter()
        async with db.lock:
            await db.connection.execute("PRAGMA wal_checkpoint(PASSIVE)")
        return written - started, time.perf_counter() - written
    finally:
        await db.close()


async def floor(fmt: str = "jpeg", runs: int = 5, data: bytes | None = None) -> dict[str, float]:
    """Each step's median milliseconds over `runs`, their sum as `total_ms`, and the sizes."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}")
    raw = data if data is not None else await asyncio.to_thread(photo, fmt)
    encoded = base64.b64encode(raw).decode("ascii")  # as the answer's JSON holds it
    times: dict[str, list[float]] = {step: [] for step in STEPS}
    sink = _Sink()
    _, writer = await asyncio.open_connection("127.0.0.1", sink.port)
    sent = 0
    try:
        with tempfile.TemporaryDirectory(prefix="imagebot-floor-") as folder:
            for run in range(runs):
                started = time.perf_counter()
                decoded = _b64decode(encoded, validate=True)
                decoded_at = time.perf_counter()
                digest = hashlib.sha256(decoded).hexdigest()
                hashed_at = time.perf_counter()
                assert decoded == raw
                # a new image each run: the same bytes would only mark the row used
                image = NewImage(decoded, FORMATS[fmt], SIDE, SIDE, digest)
                write, checkpoint = await _store(Path(folder), run, image)
                upload = await _upload(writer, sink, sent, decoded)
                sent += len(decoded)
                times["decode"].append(decoded_at - started)
                times["sha256"].append(hashed_at - decoded_at)
                times["sqlite_write"].append(write)
                times["sqlite_checkpoint"].append(checkpoint)
                times["upload"].append(upload)
    finally:
        writer.close()
        await writer.wait_closed()
        sink.close()
    result = {f"{step}_ms": statistics.median(times[step]) * 1000 for step in STEPS}
    result["total_ms"] = sum(result.values())
    result["image_mb"] = len(raw) / 1e6
    result["base64_mb"] = len(encoded) / 1e6
    return result


def measure_floor(fmt: str = "jpeg", runs: int = 5) -> dict[str, float]:
    """`floor` from outside an event loop."""
    return asyncio.run(floor(fmt, runs))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.floor", description=__doc__)
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--format", choices=sorted(FORMATS), action="append")
    args = parser.parse_args(argv)
    formats = args.format or ["jpeg", "png"]
    results = {fmt: measure_floor(fmt, args.runs) for fmt in formats}
    print(f"floor of the 4K path, median of {args.runs} runs (ms)")
    print(f"{'step':<18}" + "".join(f"{fmt:>12}" for fmt in formats))
    for key in (*(f"{step}_ms" for step in STEPS), "total_ms"):
        print(
            f"{key.removesuffix('_ms'):<18}" + "".join(f"{results[f][key]:12.1f}" for f in formats)
        )
    for key in ("image_mb", "base64_mb"):
        print(f"{key:<18}" + "".join(f"{results[f][key]:12.1f}" for f in formats))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
