"""Requests held in the store while their attachments download, so a crash cannot lose them.

Discord sends an interaction or a message once: after the bot has deferred (or seen) it, a
process that dies during the downloads would leave a request nobody answers. The request is
held with everything needed to finish it (the files by URL), and the process that takes it
over downloads them again and submits.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Literal, Protocol

from bots.discord.target import Target
from core.jobs import Attachment, Request
from core.options import Options

Source = Literal["interaction", "message"]


class FileLike(Protocol):
    """What a download needs of a file: discord.Attachment has it, and so has FileRef."""

    @property
    def url(self) -> str: ...

    @property
    def filename(self) -> str: ...

    @property
    def size(self) -> int: ...


@dataclass(frozen=True)
class FileRef:
    url: str
    filename: str
    size: int


@dataclass(frozen=True)
class Held:
    """A request whose job is not stored yet, and how its answer is shown."""

    source: Source
    request: Request  # without attachments: those are `files`, downloaded again on resume
    files: tuple[FileRef, ...]
    new_thread: bool = False  # a mention that opens a thread of its own for the answer

    @classmethod
    def of(
        cls,
        source: Source,
        request: Request,
        files: tuple[FileLike, ...] | list[FileLike],
        *,
        new_thread: bool = False,
    ) -> Held:
        refs = tuple(FileRef(f.url, f.filename, f.size) for f in files)
        return cls(source, replace(request, attachments=()), refs, new_thread)

    @property
    def key(self) -> str:
        return self.request.idempotency_key

    @property
    def target(self) -> Target:
        return Target.from_dict(self.request.target)

    def with_files(self, attachments: tuple[Attachment, ...]) -> Request:
        return replace(self.request, attachments=attachments)

    def to_dict(self) -> dict[str, Any]:
        request = {f.name: getattr(self.request, f.name) for f in fields(Request)}
        del request["attachments"]
        options = self.request.options
        request["options"] = asdict(options) if options is not None else None
        return {
            "source": self.source,
            "request": request,
            "files": [asdict(f) for f in self.files],
            "new_thread": self.new_thread,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Held:
        """Raises KeyError, TypeError or ValueError for a payload this code did not write."""
        request = dict(data["request"])
        options = request.pop("options", None)
        source = data["source"]
        if source not in ("interaction", "message"):
            raise ValueError(f"unknown source {source!r}")
        held = cls(
            source=source,
            request=Request(**request, options=Options(**options) if options else None),
            files=tuple(FileRef(**f) for f in data["files"]),
            new_thread=bool(data.get("new_thread", False)),
        )
        if source == "message" and held.target.reply_to is None:
            raise ValueError("a held message without the id of the message to answer")
        return held
