"""Reading a 200 answer: images, text, signatures and usage, or why there is no image."""

from __future__ import annotations

import base64
import binascii
import json

from pydantic import ValidationError

from core.gemini._errors import (
    _NO_IMAGE_FINISH,
    EMPTY_BODY_MESSAGE,
    EMPTY_CONTENT_MESSAGE,
    FINISH_MESSAGES,
    NO_CANDIDATES_MESSAGE,
    PROMPT_BLOCK_MESSAGES,
    GeminiError,
    GenerationBlocked,
    _error_from_wire,
    _malformed,
    _one_line,
    _text,
)
from core.gemini._types import (
    ImageResult,
    InlineImage,
    Part,
    Usage,
)
from core.gemini._wire import WireContent, WireResponse, WireUsage
from core.images import sniff_mime
from core.providers import PROVIDERS, Provider

# Decoded a slice at a time: one b64decode call over a 4K image holds the GIL for ~20 ms,
# and this runs in a worker thread beside the event loop that answers chat platforms.
_BASE64_SLICE = 1 << 20  # characters; a multiple of 4, so slices decode on their own


def _decode_base64(data: str) -> bytes:
    compact = "".join(data.split())
    if not compact:
        raise _malformed("an image part had empty data")
    for altchars in (None, b"-_"):
        try:
            return b"".join(
                base64.b64decode(compact[at : at + _BASE64_SLICE], altchars, validate=True)
                for at in range(0, len(compact), _BASE64_SLICE)
            )
        except binascii.Error:
            continue
    raise _malformed("an image part's data is not valid base64")


def _parts(content: WireContent | None) -> tuple[Part, ...]:
    parts: list[Part] = []
    for wire in content.parts if content else []:
        if wire.thought:
            continue  # a draft: never shown, never sent back
        if wire.inline_data is not None:
            data = _decode_base64(wire.inline_data.data)
            mime = wire.inline_data.mime_type or sniff_mime(data) or "application/octet-stream"
            image = InlineImage(mime, data)
            parts.append(Part(image=image, thought_signature=wire.thought_signature))
        elif wire.text is not None:
            parts.append(Part(text=wire.text, thought_signature=wire.thought_signature))
    return tuple(parts)


def _usage(wire: WireUsage | None) -> Usage:
    if wire is None:
        return Usage()
    image_tokens = sum(
        d.token_count for d in wire.candidates_tokens_details if (d.modality or "") == "IMAGE"
    )
    return Usage(
        prompt_tokens=wire.prompt_token_count,
        output_tokens=wire.candidates_token_count,
        thoughts_tokens=wire.thoughts_token_count,
        total_tokens=wire.total_token_count,
        image_tokens=image_tokens,
    )


def parse_response(
    body: bytes | str, *, model_id: str = "", provider: Provider = PROVIDERS["proxy"]
) -> ImageResult:
    """An ImageResult from a 200 answer, or the GeminiError that answer amounts to.

    A text-only answer that finished normally is a result (its `images` is empty).
    """
    if not body.strip():
        raise GeminiError(
            EMPTY_BODY_MESSAGE, reason="malformed", status=200, detail="a 200 answer with no body"
        )
    try:
        payload = json.loads(body)
    except ValueError:
        raise _malformed(f"a 200 answer that is not JSON: {_one_line(_text(body), 120)}") from None
    if not isinstance(payload, dict):
        raise _malformed(f"a 200 answer whose JSON is a {type(payload).__name__}, not an object")
    try:
        wire = WireResponse.model_validate(payload)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise _malformed(f"a 200 answer of unexpected shape at {where}: {first['msg']}") from None
    if wire.error is not None and not wire.candidates:
        # an error sent with 200: its own code when it has one, else a refusal (not retried)
        code = wire.error.code if isinstance(wire.error.code, int) else 0
        return_status = code if 400 <= code <= 599 else 400
        raise _error_from_wire(return_status, wire.error, {}, model_id=model_id, provider=provider)
    ids = f"responseId={wire.response_id} modelVersion={wire.model_version}"
    feedback = wire.prompt_feedback
    if feedback is not None and feedback.block_reason:
        code = feedback.block_reason
        said = feedback.block_reason_message or ""
        raise GenerationBlocked(
            PROMPT_BLOCK_MESSAGES.get(code, PROMPT_BLOCK_MESSAGES["OTHER"]),
            block_reason=code,
            detail=_one_line(f"promptFeedback.blockReason={code} {said} {ids}"),
        )
    if not wire.candidates:
        raise GenerationBlocked(
            NO_CANDIDATES_MESSAGE, block_reason=None, detail=f"no candidates; {ids}"
        )
    candidate = wire.candidates[0]
    parts = _parts(candidate.content)
    finish = candidate.finish_reason
    if not any(p.image for p in parts):
        text = "\n".join(p.text for p in parts if p.text).strip()
        said = candidate.finish_message or ""
        detail = _one_line(f"finishReason={finish} {said} {ids}", 600)
        if finish in _NO_IMAGE_FINISH:
            raise GenerationBlocked(
                FINISH_MESSAGES[finish], block_reason=finish, text=text, detail=detail
            )
        if not text:  # no parts, or only empty text beside a signature
            raise GenerationBlocked(
                EMPTY_CONTENT_MESSAGE, block_reason=finish, detail=f"no content; {detail}"
            )
        if finish not in (None, "STOP"):  # a reason newer than this table
            raise GenerationBlocked(
                FINISH_MESSAGES["OTHER"], block_reason=finish, text=text, detail=detail
            )
    return ImageResult(
        parts=parts,
        finish_reason=finish,
        usage=_usage(wire.usage_metadata),
        model_version=wire.model_version,
        response_id=wire.response_id,
    )
