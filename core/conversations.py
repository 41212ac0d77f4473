"""Conversations as trees of turns, and turning a path of turns into API `contents`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal


@dataclass(frozen=True)
class StoredPart:
    """A part as stored: text, or an image kept once in the store by its content hash."""

    text: str | None = None
    image_sha256: str | None = None
    mime_type: str | None = None
    thought_signature: str | None = None


@dataclass(frozen=True)
class Turn:
    id: int
    conversation_id: int
    parent_id: int | None
    role: Literal["user", "model"]
    author_id: str | None
    parts: tuple[StoredPart, ...]
    model_id: str | None = None  # for model turns: the model that made it
    created_at: float = 0.0
