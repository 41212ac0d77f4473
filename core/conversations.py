"""Conversations as trees of turns, and turning a path of turns into API `contents`."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from core.catalog import Model
from core.errors import UserFacingError
from core.gemini import SKIP_SIGNATURE, Content, InlineImage, Part
from core.images import format_megabytes, sniff_mime


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


# --- history into contents ----------------------------------------------------------------

DROPPED_IMAGE_TEXT = "[an earlier image was left out to keep the request small]"
MISSING_IMAGE_TEXT = "[an earlier image is no longer available]"

# JSON around each value as the client writes it (`{"text":}`, `{"inlineData":{"mimeType":,
# "data":}}`, `"thoughtSignature":`, `{"role":,"parts":[]}`), rounded up, plus room for
# generationConfig: the estimate must never come out below the real body.
_PART_OVERHEAD = 64
_SIGNATURE_OVERHEAD = 24
_CONTENT_OVERHEAD = 48
_REQUEST_OVERHEAD = 1024


@dataclass(frozen=True)
class History:
    contents: tuple[Content, ...]
    dropped_images: int
    notice: str | None  # one sentence for the user when images were left out


@dataclass(frozen=True)
class _Piece:
    """One part of the path before assembly, with what it needs to know about its turn."""

    role: Literal["user", "model"]
    turn: int  # index in the path
    text: str | None = None
    image: InlineImage | None = None
    signature: str | None = None  # stored by the target model: sent back unchanged
    foreign_signature: bool = False  # stored by another model: would not validate


def build_history(
    path: Sequence[Turn],
    images: Mapping[str, bytes],
    *,
    model: Model,
    budget_bytes: int,
    wire_id: str | None = None,
) -> History:
    """The `contents` for a request to `model`, from the path root-first to the new user turn.

    `wire_id` is the id the request goes out under (default `model.id`): a model turn keeps
    its thought signatures only when that same id made it.

    Adjacent turns of one role are merged, thought signatures are sent back or replaced as
    the target model needs, and the oldest images are left out (each replaced by a short
    note) until the image count and the estimated request size fit. Raises UserFacingError
    when the newest turn does not fit even with every older image left out.
    """
    if not path:
        raise ValueError("a history needs at least the new user turn")
    newest = len(path) - 1
    pieces = [
        piece
        for index, turn in enumerate(path)
        for piece in _pieces(turn, images, wire_id or model.id, newest=index == newest, index=index)
    ]
    signatures = model.thought_signatures
    images_at = [i for i, piece in enumerate(pieces) if piece.image is not None]
    protected = [i for i in images_at if pieces[i].turn == newest]
    droppable = [i for i in images_at if pieces[i].turn != newest]  # oldest first
    _check_newest_alone(pieces, protected, droppable, model, budget_bytes)

    for_count = max(0, len(images_at) - model.max_reference_images)
    dropped: set[int] = set()
    contents = _assemble(pieces, dropped, signatures)
    for index in droppable:
        within_count = len(images_at) - len(dropped) <= model.max_reference_images
        if within_count and encoded_size(contents) <= budget_bytes:
            break
        dropped.add(index)
        contents = _assemble(pieces, dropped, signatures)
    return History(contents, len(dropped), _notice(len(dropped), for_count, model))


def encoded_size(contents: Sequence[Content]) -> int:
    """A slightly high estimate of the request body's size in bytes for these contents."""
    total = _REQUEST_OVERHEAD
    for content in contents:
        total += _CONTENT_OVERHEAD
        for part in content.parts:
            total += _PART_OVERHEAD
            if part.text is not None:
                # ASCII-escaped JSON is never shorter than the UTF-8 the client sends
                total += len(json.dumps(part.text))
            if part.image is not None:
                total += len(part.image.mime_type) + 4 * math.ceil(len(part.image.data) / 3)
            if part.thought_signature:
                total += _SIGNATURE_OVERHEAD + len(json.dumps(part.thought_signature))
    return total


def _pieces(
    turn: Turn, images: Mapping[str, bytes], wire_id: str, *, newest: bool, index: int
) -> list[_Piece]:
    is_model = turn.role == "model"
    same_model = is_model and turn.model_id == wire_id
    pieces: list[_Piece] = []
    for stored in turn.parts:
        # an empty signature ("" from some proxies) is no signature
        kept = (stored.thought_signature or None) if same_model else None
        foreign = is_model and not same_model and bool(stored.thought_signature)
        if stored.image_sha256:
            data = images.get(stored.image_sha256)
            if data is not None:
                mime = stored.mime_type or sniff_mime(data) or "image/png"
                image = InlineImage(mime, data)
                pieces.append(_Piece(turn.role, index, None, image, kept, foreign))
            elif newest:
                raise UserFacingError(
                    "An image from your message could not be found any more: send it again.",
                    detail=f"turn {turn.id}: image {stored.image_sha256} missing from the store",
                )
            else:
                pieces.append(_Piece(turn.role, index, text=MISSING_IMAGE_TEXT))
            # a part holding both (never stored by imagebot) keeps its signature on the image
            kept, foreign = None, False
        if stored.text and stored.text.strip():
            pieces.append(_Piece(turn.role, index, stored.text, None, kept, foreign))
    return pieces


def _assemble(pieces: Sequence[_Piece], dropped: set[int], signatures: bool) -> tuple[Content, ...]:
    groups: list[tuple[Literal["user", "model"], list[_Piece]]] = []
    for index, piece in enumerate(pieces):
        if index in dropped:
            piece = _Piece(piece.role, piece.turn, text=DROPPED_IMAGE_TEXT)
        if groups and groups[-1][0] == piece.role:
            groups[-1][1].append(piece)
        else:
            groups.append((piece.role, [piece]))
    contents = []
    for role, members in groups:
        if role == "model" and signatures:
            parts = _signed(members)
        else:
            parts = [Part(text=p.text, image=p.image) for p in members]
        contents.append(Content(role, tuple(parts)))
    return tuple(contents)


def _signed(members: Sequence[_Piece]) -> list[Part]:
    """Model parts for a model that checks signatures: every image and the first text signed."""
    parts = []
    first_text_at = next((i for i, p in enumerate(members) if p.text is not None), None)
    for i, piece in enumerate(members):
        signature = piece.signature
        if piece.foreign_signature:
            signature = SKIP_SIGNATURE
        elif signature is None and (piece.image is not None or i == first_text_at):
            signature = SKIP_SIGNATURE
        parts.append(Part(text=piece.text, image=piece.image, thought_signature=signature))
    return parts


def _check_newest_alone(
    pieces: Sequence[_Piece],
    protected: Sequence[int],
    droppable: Sequence[int],
    model: Model,
    budget_bytes: int,
) -> None:
    count = len(protected)
    limit = model.max_reference_images
    if count > limit:
        message = (
            f"{model.name} does not take reference images: send the message without them."
            if limit == 0
            else f"{model.name} takes at most {limit} image{'s' * (limit != 1)} in one "
            f"request and this message has {count}: send fewer images."
        )
        raise UserFacingError(message, detail=f"{count} images > {limit} for {model.id}")
    smallest = encoded_size(_assemble(pieces, set(droppable), model.thought_signatures))
    if smallest <= budget_bytes:
        return
    detail = f"smallest request {smallest} bytes > budget {budget_bytes}"
    newest = [pieces[i] for i in protected]
    alone = encoded_size(_assemble(newest, set(), model.thought_signatures))
    if count == 0 or alone <= budget_bytes:
        # the images would fit on their own: it is the text of the thread that has grown
        raise UserFacingError(
            "This conversation has grown too long for one request: start a new thread.",
            detail=detail,
        )
    size = format_megabytes(alone, up=True)
    budget = format_megabytes(budget_bytes)
    these = "This image comes" if count == 1 else f"These {count} images come"
    advice = "a smaller image" if count == 1 else "fewer or smaller images"
    raise UserFacingError(
        f"{these} to {size} as sent, over the {budget} the image service takes in one "
        f"request: send {advice}.",
        detail=detail,
    )


def _notice(dropped: int, for_count: int, model: Model) -> str | None:
    if dropped == 0:
        return None
    what = "the oldest image" if dropped == 1 else f"the {dropped} oldest images"
    if for_count >= dropped:
        limit = model.max_reference_images
        return (
            f"{model.name} takes at most {limit} image{'s' * (limit != 1)} in one request, "
            f"so I left out {what} of this conversation."
        )
    return f"To stay within the request size limit, I left out {what} of this conversation."
