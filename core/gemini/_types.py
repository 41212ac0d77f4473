"""The request and result of one generation, as plain data."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

SKIP_SIGNATURE = "skip_thought_signature_validator"


@dataclass(frozen=True)
class InlineImage:
    mime_type: str
    data: bytes


@dataclass(frozen=True)
class Part:
    """One part of a turn: exactly one of `text` or `image`."""

    text: str | None = None
    image: InlineImage | None = None
    thought_signature: str | None = None


@dataclass(frozen=True)
class Content:
    role: Literal["user", "model"]
    parts: tuple[Part, ...]


@dataclass(frozen=True)
class ImageRequest:
    model_id: str
    contents: tuple[Content, ...]
    aspect_ratio: str | None = None
    image_size: str | None = None  # wire spelling; None leaves it out
    temperature: float | None = None
    with_text: bool = False
    # words only, as JSON of this schema (Google's OpenAPI subset): for a text model
    answer_schema: dict[str, Any] | None = None


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int = 0
    output_tokens: int = 0
    thoughts_tokens: int = 0
    total_tokens: int = 0
    image_tokens: int = 0


@dataclass(frozen=True)
class ImageResult:
    """A successful answer: the model turn to store (thought parts dropped)."""

    parts: tuple[Part, ...]
    finish_reason: str | None = None
    usage: Usage = field(default_factory=Usage)
    model_version: str | None = None
    response_id: str | None = None
    attempts: int = 1

    @property
    def images(self) -> list[InlineImage]:
        return [p.image for p in self.parts if p.image is not None]

    @property
    def text(self) -> str:
        return "\n".join(p.text for p in self.parts if p.text).strip()
