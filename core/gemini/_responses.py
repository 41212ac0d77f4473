"""Reading a 200 answer: images, text, signatures and usage, or why there is no image."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable
from types import ModuleType

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

_pybase64: ModuleType | None
try:  # SIMD, and lets the GIL go while it decodes; the standard library gives the same bytes
    import pybase64 as _pybase64
except ImportError:
    _pybase64 = None

_ALTCHARS = (None, b"-_")  # the standard alphabet, then the URL-safe one
_ASCII_WHITESPACE = b" \t\n\r\x0b\x0c\x1c\x1d\x1e\x1f"  # what str.split() splits on

# The standard library decodes a slice at a time: one b64decode call over a 4K image holds
# the GIL for ~20 ms, and this runs in a worker thread beside the event loop that answers
# chat platforms.
_BASE64_SLICE = 1 << 20  # characters; a multiple of 4, so slices decode on their own


def _strict(data: str, altchars: bytes | None) -> bytes:
    if _pybase64 is not None:
        return _pybase64.b64decode(data, altchars, validate=True)  # an ASCII str is not copied
    # padding followed by data is refused whole, but would pass in a slice that ends there
    end = len(data)
    while end and data[end - 1] == "=":
        end -= 1
    if data.find("=", 0, end) != -1:
        raise ValueError("padding before the end")
    return b"".join(
        base64.b64decode(data[at : at + _BASE64_SLICE], altchars, validate=True)
        for at in range(0, len(data), _BASE64_SLICE)
    )


def _skipping_whitespace(data: str, altchars: bytes | None) -> bytes:
    if _pybase64 is None:
        raise ValueError("only pybase64 skips whitespace as it decodes")
    decoded = _pybase64.b64decode(data, altchars, validate=True, ignorechars=_ASCII_WHITESPACE)
    if not decoded:
        raise ValueError("nothing but whitespace")
    return decoded


def _either_alphabet(decode: Callable[[str, bytes | None], bytes], data: str) -> bytes | None:
    for altchars in _ALTCHARS:
        try:
            return decode(data, altchars)
        except ValueError:  # binascii.Error, or a str that is not ASCII
            continue
    return None


def _decode_base64(data: str) -> bytes:
    # strict first, as answers come; then lines wrapped with ASCII whitespace, decoded in
    # place; only then a copy without any whitespace at all
    decoded = None
    if data:
        decoded = _either_alphabet(_strict, data) or _either_alphabet(_skipping_whitespace, data)
    if decoded is None:
        compact = "".join(data.split())
        if not compact:
            raise _malformed("an image part had empty data")
        if len(compact) < len(data):
            decoded = _either_alphabet(_strict, compact)
    if decoded is None:
        raise _malformed("an image part's data is not valid base64")
    return decoded


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


def _wire_response(body: bytes | str) -> WireResponse:
    # pydantic reads the JSON straight into the models: ~1 ms for a 4K JPEG's 8.7 MB answer,
    # where json.loads alone takes ~15 ms. Anything it refuses is read again the old way,
    # which accepts what it accepted and words the refusal as before.
    try:
        return WireResponse.model_validate_json(body)
    except ValidationError:
        pass
    try:
        payload = json.loads(body)
    except ValueError:
        raise _malformed(f"a 200 answer that is not JSON: {_one_line(_text(body), 120)}") from None
    if not isinstance(payload, dict):
        raise _malformed(f"a 200 answer whose JSON is a {type(payload).__name__}, not an object")
    try:
        return WireResponse.model_validate(payload)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise _malformed(f"a 200 answer of unexpected shape at {where}: {first['msg']}") from None


def parse_response(
    body: bytes | str, *, model_id: str = "", provider: Provider = PROVIDERS["proxy"]
) -> ImageResult:
    """An ImageResult from a 200 answer, or the GeminiError that answer amounts to.

    A text-only answer that finished normally is a result (its `images` is empty).
    """
    if not body or body.isspace():  # isspace stops at the first other byte; strip copies
        raise GeminiError(
            EMPTY_BODY_MESSAGE, reason="malformed", status=200, detail="a 200 answer with no body"
        )
    wire = _wire_response(body)
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
