"""The terminal chat at its idle prompt, as a person at a keyboard meets it: Ctrl-C leaves at
once, Ctrl-D leaves the shell's next prompt on a line of its own."""

from __future__ import annotations

import asyncio
import contextlib
import os
import pty
import signal
import subprocess
from collections.abc import Iterator
from pathlib import Path

from tests.bots.test_cli import IMAGEBOT, REPO, _env
from tests.fakes.gemini import FakeGemini

EXIT_SECONDS = 10.0


async def _read_until(fd: int, marker: bytes, seen: bytearray) -> None:
    """Reads the pty into `seen` until `marker` shows (the terminal is a byte stream)."""
    loop = asyncio.get_running_loop()
    async with asyncio.timeout(EXIT_SECONDS):
        while marker not in seen:
            chunk = await loop.run_in_executor(None, os.read, fd, 4096)
            if not chunk:
                raise AssertionError(f"output ended before {marker!r}: {bytes(seen)!r}")
            seen.extend(chunk)


@contextlib.contextmanager
def _chat_on_a_terminal(
    tmp_path: Path, gemini: FakeGemini
) -> Iterator[tuple[subprocess.Popen[bytes], int, bytearray]]:
    """`imagebot chat` with a pseudo-terminal as its keyboard and screen; what it printed is
    gathered in the bytearray, and the process never outlives the test."""
    main, child = pty.openpty()
    process = subprocess.Popen(
        [*IMAGEBOT, "chat"],
        cwd=REPO,
        env=_env(tmp_path, gemini),
        stdin=child,
        stdout=child,
        stderr=child,
        start_new_session=True,  # the pty becomes its terminal, as in a shell
    )
    os.close(child)
    seen = bytearray()
    try:
        yield process, main, seen
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        try:
            while chunk := os.read(main, 4096):
                seen.extend(chunk)
        except OSError:  # EIO: the other end closed
            pass
        os.close(main)


async def _exit_code(process: subprocess.Popen[bytes], fd: int, seen: bytearray) -> int:
    """The exit code, while the terminal is read as a terminal would be: a process that
    writes to a full terminal nobody reads waits forever."""

    def drain() -> None:
        with contextlib.suppress(OSError):  # EIO once the process is gone
            while chunk := os.read(fd, 4096):
                seen.extend(chunk)

    draining = asyncio.get_running_loop().run_in_executor(None, drain)
    try:
        code = await asyncio.wait_for(asyncio.to_thread(process.wait), EXIT_SECONDS)
    except TimeoutError:
        raise AssertionError(f"still running after {EXIT_SECONDS} s; it showed {seen!r}") from None
    await asyncio.wait_for(draining, EXIT_SECONDS)
    return code


async def test_ctrl_c_at_the_idle_prompt_leaves_at_once(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    with _chat_on_a_terminal(tmp_path, fake_gemini) as (process, main, seen):
        await _read_until(main, b"you> ", seen)
        process.send_signal(signal.SIGINT)
        code = await _exit_code(process, main, seen)

    assert code == 130
    assert b"Traceback" not in seen


async def test_ctrl_d_at_the_idle_prompt_ends_the_line(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    with _chat_on_a_terminal(tmp_path, fake_gemini) as (process, main, seen):
        await _read_until(main, b"you> ", seen)
        os.write(main, b"\x04")  # Ctrl-D: end of input on a terminal
        code = await _exit_code(process, main, seen)

    assert code == 0
    after_prompt = bytes(seen).rsplit(b"you> ", 1)[1]
    assert after_prompt.startswith((b"\r\n", b"\n")), after_prompt
