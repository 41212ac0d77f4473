"""The HTTP client for the generateContent image API: requests, responses, errors, retries."""

from __future__ import annotations

import asyncio
import base64
import binascii
import json
import logging
import random
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Literal, NotRequired, TypedDict

import httpx
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from pydantic.alias_generators import to_camel

from core import metrics
from core.errors import UserFacingError

# Sent where a model part needs a thoughtSignature that we do not have (history made by
# another model or elsewhere); the API documents it as accepted.
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


log = logging.getLogger(__name__)

# --------------------------------------------------------------------------- errors


class GeminiError(UserFacingError):
    """The image API did not produce a result.

    `reason` is a short machine code ("rate_limited", "bad_key", "server", ...);
    `retryable` says whether the same request may succeed later; `retry_after` is the
    server's requested wait in seconds, when it named one.
    """

    def __init__(
        self,
        message: str,
        *,
        reason: str,
        detail: str = "",
        status: int | None = None,
        api_status: str | None = None,
        retryable: bool = False,
        retry_after: float | None = None,
    ) -> None:
        super().__init__(message, detail=detail)
        self.reason = reason
        self.status = status
        self.api_status = api_status
        self.retryable = retryable
        self.retry_after = retry_after
        self.attempts = 1

    def __repr__(self) -> str:
        return f"{type(self).__name__}(reason={self.reason!r}, status={self.status!r})"


class GenerationBlocked(GeminiError):
    """The API answered but made no image (blocked, refused or empty).

    `block_reason` is the API's own code (blockReason or finishReason); `text` is what the
    model said instead, if anything.
    """

    def __init__(
        self, message: str, *, block_reason: str | None, text: str = "", detail: str = ""
    ) -> None:
        super().__init__(message, reason="blocked", detail=detail, status=200)
        self.block_reason = block_reason
        self.text = text


PROMPT_BLOCK_MESSAGES = {
    "SAFETY": "The image service refused this prompt for safety reasons; "
    "rephrase it and try again.",
    "BLOCKLIST": "The image service refused this prompt because it contains blocked terms; "
    "rephrase it and try again.",
    "PROHIBITED_CONTENT": "The image service refused this prompt as prohibited content, "
    "which it will not make in any wording.",
    "IMAGE_SAFETY": "The image service refused an image in this request for safety reasons; "
    "try again with a different image.",
    "OTHER": "The image service refused this prompt without saying why; rephrase it and try again.",
}

FINISH_MESSAGES = {
    "SAFETY": "The image service stopped this generation for safety reasons; "
    "rephrase the prompt and try again.",
    "IMAGE_SAFETY": "The image service made a picture but withheld it for safety reasons; "
    "rephrase the prompt and try again.",
    "PROHIBITED_CONTENT": "The image service refused this request as prohibited content, "
    "which it will not make in any wording.",
    "IMAGE_PROHIBITED_CONTENT": "The image service withheld the picture as prohibited content, "
    "which it will not make in any wording.",
    "RECITATION": "The image service withheld the answer because it copied existing work too "
    "closely; make the prompt more original and try again.",
    "IMAGE_RECITATION": "The image service withheld the picture because it resembled existing "
    "protected work too closely; make the prompt more original and try again.",
    "BLOCKLIST": "The image service stopped because the request contained blocked terms; "
    "rephrase it and try again.",
    "SPII": "The image service stopped because the answer would contain sensitive personal "
    "information; leave personal details out and try again.",
    "NO_IMAGE": "The image service answered without making a picture; ask for the image more "
    "explicitly and try again.",
    "IMAGE_OTHER": "The image service could not make a picture this time and did not say why; "
    "try again or rephrase the prompt.",
    "OTHER": "The image service stopped without giving a reason; try again or rephrase the prompt.",
    "MAX_TOKENS": "The image service ran out of room before finishing the picture; shorten the "
    "prompt or start a new thread and try again.",
}

NO_CANDIDATES_MESSAGE = (
    "The image service returned no result at all; try again or rephrase the prompt."
)
EMPTY_CONTENT_MESSAGE = (
    "The image service returned an empty answer; try again or rephrase the prompt."
)
MALFORMED_MESSAGE = "The image service sent an answer I could not read; try again in a moment."
BAD_KEY_MESSAGE = (
    "The image service rejected the API key; ask whoever runs this bot to check GEMINI_API_KEY."
)
FORBIDDEN_MESSAGE = (
    "The image service refused access with this API key; ask whoever runs this bot to check "
    "that GEMINI_API_KEY may use this model."
)
QUOTA_MESSAGE = (
    "The image service's quota for this API key is used up for today; try again tomorrow or "
    "ask whoever runs this bot to raise it."
)
CREDIT_MESSAGE = (
    "The image service account has run out of credit; ask whoever runs this bot to top it up."
)
RATE_LIMITED_MESSAGE = (
    "The image service is getting too many requests right now; try again in a minute."
)
OVERLOADED_MESSAGE = "The image service is overloaded right now; try again in a few minutes."
SERVER_MESSAGE = "The image service had an internal problem; try again in a few minutes."
SIGNATURE_MESSAGE = (
    "The image service refused this thread's history (a thought signature was missing or "
    "not valid); start a new thread and try again."
)
TIMEOUT_MESSAGE_SHORT = "The image service took too long to answer; try again in a minute."
TOO_LARGE_MESSAGE = "The request was too large for the image service; use fewer or smaller images."

_NO_IMAGE_FINISH = frozenset(FINISH_MESSAGES)
_RETRYABLE_STATUS = frozenset({408, 429, 500, 502, 503, 504})
_API_MESSAGE_LIMIT = 300


def _connect_seconds(timeout_seconds: float) -> float:
    return min(10.0, timeout_seconds)


def _one_line(text: str, limit: int = _API_MESSAGE_LIMIT) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _malformed(why: str) -> GeminiError:
    return GeminiError(MALFORMED_MESSAGE, reason="malformed", status=200, detail=why)


# --------------------------------------------------------------------------- wire shapes


class PartJSON(TypedDict):
    text: NotRequired[str]
    inlineData: NotRequired[dict[str, str]]
    thoughtSignature: NotRequired[str]


class ContentJSON(TypedDict):
    role: str
    parts: list[PartJSON]


class ImageConfigJSON(TypedDict, total=False):
    aspectRatio: str
    imageSize: str


class GenerationConfigJSON(TypedDict):
    responseModalities: list[str]
    temperature: NotRequired[float]
    imageConfig: NotRequired[ImageConfigJSON]


class RequestJSON(TypedDict):
    contents: list[ContentJSON]
    generationConfig: GenerationConfigJSON


class _Wire(BaseModel):
    # Lenient: unknown fields ignored; camelCase as sent, snake_case as some proxies send.
    model_config = ConfigDict(extra="ignore", alias_generator=to_camel, populate_by_name=True)


class WireInlineData(_Wire):
    mime_type: str | None = None
    data: str


class WirePart(_Wire):
    text: str | None = None
    inline_data: WireInlineData | None = None
    thought: bool | None = None
    thought_signature: str | None = None


class WireContent(_Wire):
    role: str | None = None
    parts: list[WirePart] = []


class WireCandidate(_Wire):
    content: WireContent | None = None
    finish_reason: str | None = None
    finish_message: str | None = None


class WirePromptFeedback(_Wire):
    block_reason: str | None = None
    block_reason_message: str | None = None


class WireModalityCount(_Wire):
    modality: str | None = None
    token_count: int = 0


class WireUsage(_Wire):
    prompt_token_count: int = 0
    candidates_token_count: int = 0
    thoughts_token_count: int = 0
    total_token_count: int = 0
    candidates_tokens_details: list[WireModalityCount] = []


class WireQuotaViolation(_Wire):
    quota_id: str | None = None
    quota_metric: str | None = None


class WireErrorDetail(_Wire):
    type: str = Field("", alias="@type")
    retry_delay: str | None = None  # RetryInfo
    reason: str | None = None  # ErrorInfo
    violations: list[WireQuotaViolation] = []  # QuotaFailure


class WireError(_Wire):
    """Google's `{code, message, status, details}` or One-API's `{message, type, code}`."""

    code: int | str | None = None
    message: str | None = None
    status: str | None = None
    type: str | None = None
    details: list[WireErrorDetail] = []


class WireErrorEnvelope(_Wire):
    error: WireError


class WireResponse(_Wire):
    candidates: list[WireCandidate] = []
    prompt_feedback: WirePromptFeedback | None = None
    usage_metadata: WireUsage | None = None
    model_version: str | None = None
    response_id: str | None = None
    error: WireError | None = None


# --------------------------------------------------------------------------- requests


def _part_json(part: Part) -> PartJSON:
    if (part.text is None) == (part.image is None):
        raise ValueError("a part needs exactly one of text or image")
    out: PartJSON = {}
    if part.text is not None:
        out["text"] = part.text
    else:
        assert part.image is not None
        out["inlineData"] = {
            "mimeType": part.image.mime_type,
            "data": base64.b64encode(part.image.data).decode("ascii"),
        }
    if part.thought_signature:
        out["thoughtSignature"] = part.thought_signature
    return out


def build_body(request: ImageRequest) -> RequestJSON:
    """The JSON body for `request`, holding nothing the API does not know."""
    config: GenerationConfigJSON = {
        "responseModalities": ["TEXT", "IMAGE"] if request.with_text else ["IMAGE"]
    }
    if request.temperature is not None:
        config["temperature"] = request.temperature
    image_config: ImageConfigJSON = {}
    if request.aspect_ratio:
        image_config["aspectRatio"] = request.aspect_ratio
    if request.image_size:
        image_config["imageSize"] = request.image_size
    if image_config:
        config["imageConfig"] = image_config
    contents: list[ContentJSON] = [
        {"role": c.role, "parts": [_part_json(p) for p in c.parts]} for c in request.contents
    ]
    return {"contents": contents, "generationConfig": config}


def encode_body(request: ImageRequest) -> bytes:
    """The request body as sent, so callers can measure it against a size budget."""
    return json.dumps(build_body(request), separators=(",", ":"), ensure_ascii=False).encode()


# --------------------------------------------------------------------------- responses


_MAGIC = (
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF8", "image/gif"),
)


def _sniff_mime(data: bytes) -> str:
    for magic, mime in _MAGIC:
        if data.startswith(magic):
            return mime
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    return "application/octet-stream"


def _decode_base64(data: str) -> bytes:
    compact = "".join(data.split())
    if not compact:
        raise _malformed("an image part had empty data")
    try:
        return base64.b64decode(compact, validate=True)
    except binascii.Error:
        pass
    try:
        return base64.b64decode(compact, altchars=b"-_", validate=True)
    except binascii.Error:
        raise _malformed("an image part's data is not valid base64") from None


def _parts(content: WireContent | None) -> tuple[Part, ...]:
    parts: list[Part] = []
    for wire in content.parts if content else []:
        if wire.thought:
            continue  # a draft: never shown, never sent back
        if wire.inline_data is not None:
            data = _decode_base64(wire.inline_data.data)
            mime = wire.inline_data.mime_type or _sniff_mime(data)
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


def parse_response(body: bytes | str, *, model_id: str = "") -> ImageResult:
    """An ImageResult from a 200 answer, or the GeminiError that answer amounts to.

    A text-only answer that finished normally is a result (its `images` is empty).
    """
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
        code = wire.error.code if isinstance(wire.error.code, int) else 0
        return_status = code if 400 <= code <= 599 else 502
        raise _error_from_wire(return_status, wire.error, {}, model_id=model_id)
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
        if not parts:
            raise GenerationBlocked(
                EMPTY_CONTENT_MESSAGE, block_reason=finish, detail=f"no content; {detail}"
            )
    return ImageResult(
        parts=parts,
        finish_reason=finish,
        usage=_usage(wire.usage_metadata),
        model_version=wire.model_version,
        response_id=wire.response_id,
    )


# --------------------------------------------------------------------------- error answers


def _text(body: bytes | str) -> str:
    return body.decode("utf-8", "replace") if isinstance(body, bytes) else body


def _parse_duration(value: str | None) -> float | None:
    """Seconds from a protobuf Duration as JSON ("34s", "0.2s")."""
    if not value:
        return None
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)s\s*", value)
    return float(match.group(1)) if match else None


def _parse_retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - time.time())


def _is_per_day(error: WireError) -> bool:
    for detail in error.details:
        for violation in detail.violations:
            if "perday" in f"{violation.quota_id} {violation.quota_metric}".lower():
                return True
    return "perday" in (error.message or "").lower().replace(" ", "").replace("-", "")


def _mentions_bad_key(error: WireError) -> bool:
    if any(d.reason == "API_KEY_INVALID" for d in error.details):
        return True
    return (
        "API_KEY_INVALID" in (error.message or "")
        or "api key not valid" in (error.message or "").lower()
    )


def _error_from_wire(
    status: int, error: WireError, headers: Mapping[str, str], *, model_id: str
) -> GeminiError:
    api_status = error.status or error.type
    api_message = _one_line(error.message or "")
    code = str(error.code or "").lower()
    detail = f"HTTP {status} {api_status or '-'}: {api_message}"
    if error.code is not None and not isinstance(error.code, int):
        detail += f" (code {error.code})"
    retry_after = next(
        (d for d in (_parse_duration(x.retry_delay) for x in error.details) if d is not None),
        None,
    )
    if retry_after is None:
        retry_after = _parse_retry_after(headers.get("retry-after"))
    quota_ids = [v.quota_id for d in error.details for v in d.violations if v.quota_id]
    if quota_ids:
        detail += f" quotaId={','.join(quota_ids)}"

    def make(message: str, reason: str, *, retryable: bool = False) -> GeminiError:
        return GeminiError(
            message,
            reason=reason,
            detail=detail,
            status=status,
            api_status=api_status,
            retryable=retryable,
            retry_after=retry_after if retryable else None,
        )

    if "insufficient" in code and "quota" in code:
        return make(CREDIT_MESSAGE, "quota_exhausted")
    if status == 400:
        if _mentions_bad_key(error):
            return make(BAD_KEY_MESSAGE, "bad_key")
        if "thought_signature" in api_message.lower() or "thought signature" in api_message.lower():
            return make(SIGNATURE_MESSAGE, "bad_request")
        said = api_message.rstrip(".") or "no reason given"
        return make(
            f"The image service refused the request: {_one_line(said, 200)}.", "bad_request"
        )
    if status == 401:
        return make(BAD_KEY_MESSAGE, "bad_key")
    if status == 403:
        if _mentions_bad_key(error) or "key" in api_message.lower():
            return make(BAD_KEY_MESSAGE, "bad_key")
        return make(FORBIDDEN_MESSAGE, "forbidden")
    if status == 404:
        return make(
            f"The image service does not know the model `{model_id}`; choose another with "
            "--model, or ask whoever runs this bot to update the model list.",
            "unknown_model",
        )
    if status == 408:
        return make(TIMEOUT_MESSAGE_SHORT, "timeout", retryable=True)
    if status == 413:
        return make(TOO_LARGE_MESSAGE, "bad_request")
    if status == 429:
        if _is_per_day(error):
            return make(QUOTA_MESSAGE, "quota_exhausted")
        return make(RATE_LIMITED_MESSAGE, "rate_limited", retryable=True)
    if status == 503:
        return make(OVERLOADED_MESSAGE, "server", retryable=True)
    if status >= 500:
        return make(SERVER_MESSAGE, "server", retryable=status in _RETRYABLE_STATUS)
    return make(
        f"The image service refused the request (HTTP {status}); "
        "ask whoever runs this bot to check the log.",
        "bad_request",
    )


def error_from_response(
    status: int, body: bytes | str, headers: Mapping[str, str], *, model_id: str
) -> GeminiError:
    """The GeminiError a non-200 answer amounts to (Google, One-API or non-JSON bodies)."""
    wire: WireError | None = None
    try:
        payload = json.loads(body)
    except ValueError:
        payload = None
    if isinstance(payload, list) and payload and isinstance(payload[0], dict):
        payload = payload[0]
    if isinstance(payload, dict):
        try:
            wire = WireErrorEnvelope.model_validate(payload).error
        except ValidationError:
            try:  # some proxies put the fields at the top level
                wire = WireError.model_validate(payload)
            except ValidationError:
                wire = None
    if wire is None:
        wire = WireError(message=f"(not JSON) {_one_line(_text(body), 200)}")
    elif wire.message is None and wire.status is None:
        wire = wire.model_copy(update={"message": _one_line(_text(body), 200)})
    lowered = {k.lower(): v for k, v in headers.items()}
    return _error_from_wire(status, wire, lowered, model_id=model_id)


def _transport_error(exc: httpx.TransportError, timeout_seconds: float) -> GeminiError:
    detail = f"{type(exc).__name__}: {_one_line(str(exc)) or 'no detail'}"
    if isinstance(exc, httpx.PoolTimeout):
        return GeminiError(
            "The bot is too busy to reach the image service right now; try again in a minute.",
            reason="timeout",
            detail=detail,
        )
    if isinstance(exc, httpx.ConnectTimeout):
        seconds = _connect_seconds(timeout_seconds)
        return GeminiError(
            f"I could not connect to the image service within {seconds:g} seconds; "
            "try again in a minute.",
            reason="timeout",
            detail=detail,
            retryable=True,
        )
    if isinstance(exc, httpx.TimeoutException):
        return GeminiError(
            f"The image service did not answer within {timeout_seconds:g} seconds; "
            "try again later, perhaps at a smaller size.",
            reason="timeout",
            detail=detail,
            retryable=True,
        )
    retryable = isinstance(exc, httpx.NetworkError | httpx.RemoteProtocolError)
    return GeminiError(
        "I could not reach the image service (the connection failed); try again in a minute.",
        reason="connection",
        detail=detail,
        retryable=retryable,
    )


def _scrub(error: GeminiError, secret: str) -> GeminiError:
    """Remove `secret` from everything an error can show, whatever the server echoed."""
    if secret:
        error.message = error.message.replace(secret, "[redacted]")
        error.detail = error.detail.replace(secret, "[redacted]")
        error.args = (error.message,)
    return error


# --------------------------------------------------------------------------- the client


class GeminiClient:
    """Calls generateContent over one shared connection pool, with bounded retries."""

    def __init__(
        self,
        base_url: str,
        api_key: str,
        *,
        timeout_seconds: float = 300.0,
        max_attempts: int = 4,
        deadline_seconds: float = 600.0,
        transport: httpx.AsyncBaseTransport | None = None,
        backoff_base_seconds: float = 1.0,
        backoff_cap_seconds: float = 30.0,
        max_connections: int = 32,
    ) -> None:
        if max_attempts < 1:
            raise ValueError("max_attempts must be at least 1")
        self.base_url = base_url.rstrip("/")
        self.timeout_seconds = timeout_seconds
        self.max_attempts = max_attempts
        self.deadline_seconds = deadline_seconds
        self.backoff_base_seconds = backoff_base_seconds
        self.backoff_cap_seconds = backoff_cap_seconds
        self._api_key = api_key
        self._headers = {
            "Authorization": f"Bearer {api_key}",
            "Content-Type": "application/json",
            "Accept": "application/json",
        }
        self._http = httpx.AsyncClient(
            transport=transport,
            timeout=httpx.Timeout(timeout_seconds, connect=_connect_seconds(timeout_seconds)),
            limits=httpx.Limits(
                max_connections=max_connections,
                max_keepalive_connections=max_connections,
                keepalive_expiry=30.0,
            ),
            follow_redirects=False,  # a redirect must not carry the key to another host
        )

    def __repr__(self) -> str:
        return f"GeminiClient(base_url={self.base_url!r}, max_attempts={self.max_attempts})"

    async def __aenter__(self) -> GeminiClient:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    def url_for(self, model_id: str) -> str:
        return f"{self.base_url}/v1beta/models/{model_id}:generateContent"

    async def generate(self, request: ImageRequest) -> ImageResult:
        """One generation; raises GeminiError (or GenerationBlocked) when there is no result."""
        body = await asyncio.to_thread(encode_body, request)
        url = self.url_for(request.model_id)
        started = time.monotonic()
        attempt = 0
        while True:
            attempt += 1
            try:
                result = await self._attempt(url, body, request.model_id)
            except GeminiError as exc:
                error = _scrub(exc, self._api_key)
                error.attempts = attempt
                if not error.retryable or attempt >= self.max_attempts:
                    if attempt > 1:
                        error.detail += f" (gave up after {attempt} attempts)"
                    raise
                delay = self._delay(error, attempt)
                if time.monotonic() - started + delay > self.deadline_seconds:
                    error.detail += (
                        f" (gave up after {attempt} attempts: the next wait of {delay:.1f} s "
                        f"would pass the {self.deadline_seconds:g} s deadline)"
                    )
                    raise
                log.warning(
                    "image API attempt %d of %d failed (%s: %s); retrying in %.2f s",
                    attempt,
                    self.max_attempts,
                    error.reason,
                    error.detail,
                    delay,
                )
                metrics.API_RETRIES.labels(error.reason).inc()
                await asyncio.sleep(delay)
            else:
                return replace(result, attempts=attempt)

    def _delay(self, error: GeminiError, attempt: int) -> float:
        if error.retry_after is not None:
            return error.retry_after
        ceiling = min(self.backoff_cap_seconds, self.backoff_base_seconds * 2 ** (attempt - 1))
        return random.uniform(0.0, ceiling)

    async def _attempt(self, url: str, body: bytes, model_id: str) -> ImageResult:
        sent = time.monotonic()
        try:
            response = await self._http.post(url, content=body, headers=self._headers)
        except httpx.TransportError as exc:
            metrics.API_LATENCY.labels("0").observe(time.monotonic() - sent)
            raise _transport_error(exc, self.timeout_seconds) from exc
        metrics.API_LATENCY.labels(str(response.status_code)).observe(time.monotonic() - sent)
        if response.status_code == 200:
            # A 200 that cannot be read is not retried: the generation may have been charged.
            if len(response.content) > 1_000_000:
                return await asyncio.to_thread(parse_response, response.content, model_id=model_id)
            return parse_response(response.content, model_id=model_id)
        raise error_from_response(
            response.status_code, response.content, response.headers, model_id=model_id
        )
