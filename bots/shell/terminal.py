"""Terminal chat and one-shot generation over the service, with images written to a folder."""

from __future__ import annotations

import asyncio
import contextlib
import getpass
import os
import sys
import threading
import time
import uuid
from collections.abc import AsyncIterator, Callable
from pathlib import Path

from core.errors import UserFacingError
from core.images import extension_for
from core.jobs import Attachment, Job, Outcome, Progress, Request
from core.service import Service

PLATFORM = "shell"
TENANT = "local"
HELP = (
    "Type a prompt to make an image; later lines edit it (same conversation).\n"
    "Options: --ar 16:9  --size 2K  --model pro  --temp 0.4  --n 4  --text\n"
    "/attach PATH  add a reference image to your next message\n"
    "/new          start a fresh conversation\n"
    "/help         show this again\n"
    "/exit         leave (so do /quit, Ctrl-D and Ctrl-C)"
)


class TerminalAdapter:
    """Delivers results by writing image files and printing where they are."""

    def __init__(
        self,
        service: Service,
        out_dir: Path,
        write: Callable[[str], None],
        *,
        platform: str = PLATFORM,
    ) -> None:
        self.service = service
        self.platform = platform
        self.out_dir = out_dir
        self.write = write
        self.user_id = _user_name()
        self._waiting: dict[str, asyncio.Future[list[Path]]] = {}
        service.register(platform, self, resumable=False)

    async def progress(self, job: Job, update: Progress) -> None:
        if update.elapsed_seconds < 1:
            self.write("… generating")
        else:
            self.write(f"… still generating ({update.elapsed_seconds:.0f} s)")

    async def deliver(self, job: Job, outcome: Outcome) -> list[str]:
        future = self._future(job.id)
        try:
            paths = await asyncio.to_thread(self._save, job, outcome)
        except OSError as exc:
            # said to the person waiting, once: trying again would not make the folder writable
            why = (
                "it is not a folder"
                if isinstance(exc, FileExistsError | NotADirectoryError)
                else (exc.strerror or str(exc)).lower()
            )
            if not future.done():
                future.set_exception(
                    UserFacingError(
                        f"I could not write the image into {self.out_dir}: {why}.",
                        detail=repr(exc),
                    )
                )
            return []
        if not future.done():
            future.set_result(paths)
        return [str(path) for path in paths]

    def _future(self, job_id: str) -> asyncio.Future[list[Path]]:
        # whichever of ask() and deliver() comes first makes it
        if job_id not in self._waiting:
            self._waiting[job_id] = asyncio.get_running_loop().create_future()
        return self._waiting[job_id]

    def _save(self, job: Job, outcome: Outcome) -> list[Path]:
        self.out_dir.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%d-%H%M%S")
        paths = []
        for number, image in enumerate(outcome.every_image, start=1):
            path = self.out_dir / f"{stamp}-{job.id[:8]}-{number}{extension_for(image.mime_type)}"
            path.write_bytes(image.data)  # exactly the bytes the API returned
            paths.append(path)
        return paths

    async def ask(self, request: Request) -> tuple[Outcome, list[Path]]:
        """Submit and wait for the result; raises UserFacingError when it is refused."""
        submitted = await self.service.submit(request)
        try:
            paths = await self._future(submitted.job.id)
        finally:
            self._waiting.pop(submitted.job.id, None)
        job = await self.service.job(submitted.job.id)
        assert job is not None
        return await self.service.outcome(job), paths

    def request(
        self, text: str, *, thread_key: str | None, attachments: list[Attachment]
    ) -> Request:
        return Request(
            platform=self.platform,
            tenant=TENANT,
            user_id=self.user_id,
            text=text,
            idempotency_key=f"{self.platform}:{uuid.uuid4().hex}",
            thread_key=thread_key,
            attachments=tuple(attachments),
        )


async def stdin_lines(*, interactive: bool) -> AsyncIterator[str]:
    """Lines typed or piped in, read by a daemon thread: Ctrl-C at an idle prompt stops the
    chat at once (a blocked read in the event loop's executor would hold the exit until the
    next Enter). At Ctrl-D an interactive prompt is closed with a newline."""
    loop = asyncio.get_running_loop()
    lines: asyncio.Queue[str | BaseException] = asyncio.Queue()
    # the file descriptor itself, not sys.stdin: a thread blocked inside Python's buffered
    # reader holds its lock, and the interpreter aborts when it finds it held at exit
    fd = sys.stdin.fileno()

    def put(item: str | BaseException) -> None:
        loop.call_soon_threadsafe(lines.put_nowait, item)

    def read() -> None:
        pending = b""
        try:
            while chunk := os.read(fd, 65536):
                *complete, pending = (pending + chunk).split(b"\n")
                for line in complete:
                    # a stray byte that is not UTF-8 becomes U+FFFD, not a dead reader
                    put((line + b"\n").decode(errors="replace"))
            if pending:
                put(pending.decode(errors="replace"))
            put("")
        except RuntimeError:
            pass  # the loop closed: nobody is listening any more
        except BaseException as exc:  # a failed read ends the chat, with its reason
            with contextlib.suppress(RuntimeError):
                put(exc)

    threading.Thread(target=read, name="imagebot-stdin", daemon=True).start()
    while line := await lines.get():
        if isinstance(line, BaseException):
            raise line
        yield line
    if interactive:
        print()


def read_attachment(path_text: str) -> Attachment:
    path = Path(path_text).expanduser()
    try:
        return Attachment(name=path.name, data=path.read_bytes())
    except FileNotFoundError:
        raise UserFacingError(f"There is no file at {path_text}.") from None
    except IsADirectoryError:
        raise UserFacingError(f"{path_text} is a folder, not an image file.") from None
    except OSError as exc:
        raise UserFacingError(f"I cannot read {path_text}: {exc.strerror}.") from None


async def run_chat(
    adapter: TerminalAdapter,
    lines: AsyncIterator[str],
    *,
    prompt: Callable[[], None] = lambda: None,
) -> None:
    """The conversation loop: each line a turn; returns at end of input or /quit."""
    write = adapter.write
    thread = f"chat:{uuid.uuid4().hex}"
    pending: list[Attachment] = []
    write(HELP)
    prompt()
    async for raw in lines:
        line = raw.strip()
        if not line:
            prompt()
            continue
        command, _, argument = line.partition(" ")
        if command in ("/quit", "/exit"):
            break
        if command == "/help":
            write(HELP)
        elif command == "/new":
            thread, pending = f"chat:{uuid.uuid4().hex}", []
            write("Started a new conversation.")
        elif command == "/attach":
            path = argument.strip().strip("\"'")  # a path pasted in quotes
            if not path:
                write("error: Give the image's path: /attach PATH")
            else:
                try:
                    pending.append(read_attachment(path))
                    write(f"Attached {pending[-1].name}; it goes with your next message.")
                except UserFacingError as exc:
                    write(f"error: {exc.message}")
        else:
            attached, pending = pending, []  # sent once, refused or not: never again
            try:
                outcome, paths = await adapter.ask(
                    adapter.request(line, thread_key=thread, attachments=attached)
                )
            except UserFacingError as exc:
                write(f"error: {exc.message}")
            else:
                _show(write, outcome, paths)
        prompt()


def _show(write: Callable[[str], None], outcome: Outcome, paths: list[Path]) -> None:
    if outcome.notice:
        write(f"note: {outcome.notice}")
    for path in paths:
        write(f"image: {path}")
    if outcome.text:
        write(f"model: {outcome.text}")
    if outcome.error:
        write(f"error: {outcome.error}")


def _user_name() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return "local"
