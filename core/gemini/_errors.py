"""Every way a generation can fail, each with its sentence for the user."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping
from email.utils import parsedate_to_datetime

import httpx
from pydantic import ValidationError

from core.errors import UserFacingError
from core.gemini._wire import WireError, WireErrorEnvelope
from core.providers import PROVIDERS, Provider


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
    "JAILBREAK": "The image service refused this prompt as an attempt to get around its rules; "
    "say plainly what you want to see.",
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
    "LANGUAGE": "The image service did not accept the language of this prompt; try again in "
    "English.",
    "MALFORMED_FUNCTION_CALL": "The image service tripped over its own answer and made no "
    "picture; try again.",
    "MISSING_THOUGHT_SIGNATURE": "The image service refused this thread's history (a thought "
    "signature was missing); start a new thread and try again.",
    "ESCALATION": "The image service held this request back under one of its review rules; "
    "rephrase it and try again.",
    "MODEL_ARMOR": "The image service's content filter blocked the answer; rephrase the prompt "
    "and try again.",
    "PUP_LIMITED_DISABLED": "The image service has limited this API key's account for policy "
    "violations; ask whoever runs this bot to check the account.",
}

NO_CANDIDATES_MESSAGE = (
    "The image service returned no result at all; try again or rephrase the prompt."
)
EMPTY_CONTENT_MESSAGE = (
    "The image service returned an empty answer; try again or rephrase the prompt."
)
MALFORMED_MESSAGE = "The image service sent an answer I could not read; try again in a moment."
EMPTY_BODY_MESSAGE = "The image service sent an empty answer; try again in a moment."
BAD_KEY_MESSAGE = (
    "The image service rejected the API key; ask whoever runs this bot to check GEMINI_API_KEY."
)
FORBIDDEN_MESSAGE = (
    "The image service refused access with this API key; ask whoever runs this bot to check "
    "that GEMINI_API_KEY may use this model."
)
NO_FREE_TIER_MESSAGE = (
    "This API key's free tier has no quota for this model (its limit is 0): ask whoever runs "
    "this bot to enable billing on the key's Google project."
)
LEAKED_KEY_MESSAGE = (
    "The image service blocked this API key because it was reported as leaked: ask whoever "
    "runs this bot for a new GEMINI_API_KEY."
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
UNAVAILABLE_MESSAGE = "The image service is unavailable right now; try again in a few minutes."
SERVER_MESSAGE = "The image service had an internal problem; try again in a few minutes."
GATEWAY_MESSAGE = (
    "The proxy in front of the image service could not get an answer from it; try again in a "
    "few minutes."
)
GATEWAY_TIMEOUT_MESSAGE = (
    "The image service (or a proxy in front of it) gave up waiting for the picture; try again "
    "in a minute, perhaps at a smaller size."
)
BEARER_TO_GOOGLE_MESSAGE = (
    "Google's Gemini API wants the key in an x-goog-api-key header, but this bot sent it as a "
    "Bearer token: ask whoever runs this bot to set GEMINI_PROVIDER=google."
)
GOOGLE_HEADER_REFUSED_MESSAGE = (
    "The image service did not accept the key sent the Google way (x-goog-api-key): if "
    "GEMINI_BASE_URL is a proxy that takes Bearer keys, ask whoever runs this bot to set "
    "GEMINI_PROVIDER=proxy; otherwise check GEMINI_API_KEY."
)
BAD_ROOT_MESSAGE = (
    "The image service has no generateContent at this address: ask whoever runs this bot to set "
    "GEMINI_BASE_URL to the API root (for Google, https://generativelanguage.googleapis.com)."
)
SIGNATURE_MESSAGE = (
    "The image service refused this thread's history (a thought signature was missing or "
    "not valid); start a new thread and try again."
)
TIMEOUT_MESSAGE_SHORT = "The image service took too long to answer; try again in a minute."
TOO_LARGE_MESSAGE = "The request was too large for the image service; use fewer or smaller images."

# reasons that mean the same to a user as another one
FINISH_ALIASES = {
    "CONTINUATION": "MAX_TOKENS",
    "UNEXPECTED_TOOL_CALL": "MALFORMED_FUNCTION_CALL",
    "TOO_MANY_TOOL_CALLS": "MALFORMED_FUNCTION_CALL",
    "MALFORMED_RESPONSE": "MALFORMED_FUNCTION_CALL",
    "FINISH_REASON_UNSPECIFIED": "OTHER",
}
FINISH_MESSAGES.update({alias: FINISH_MESSAGES[same] for alias, same in FINISH_ALIASES.items()})

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


def _text(body: bytes | bytearray | str) -> str:
    return body if isinstance(body, str) else body.decode("utf-8", "replace")


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


def _no_channel(model_id: str) -> str:
    return (
        f"The image service has no channel serving `{model_id}` (a setup problem at the proxy, "
        "not something a retry fixes): ask whoever runs this bot to enable that model on the "
        "proxy, or to give the proxy's own id for it in IMAGEBOT_MODELS_FILE."
    )


def _unknown_model(model_id: str, provider: Provider) -> str:
    retired = provider.retired.get(model_id)
    if retired is not None:
        return (
            f"{provider.title} shut the model `{model_id}` down on {retired.since}: use "
            f"`--model {retired.successor}` instead, or ask whoever runs this bot to change "
            "GEMINI_MODEL."
        )
    if provider.name == "proxy":
        return (
            f"The image service does not know the model `{model_id}`: ask whoever runs this "
            "bot to give the proxy's own id for it (provider_ids in IMAGEBOT_MODELS_FILE), or "
            "set GEMINI_PROVIDER=google if it is Google's API."
        )
    return (
        f"The image service does not know the model `{model_id}`; choose another with "
        "--model, or ask whoever runs this bot to update the model list."
    )


def _error_from_wire(
    status: int,
    error: WireError,
    headers: Mapping[str, str],
    *,
    model_id: str,
    provider: Provider = PROVIDERS["proxy"],
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

    lowered = (error.message or "").lower()  # all of it: quota details come late
    if "insufficient" in code and "quota" in code:
        return make(CREDIT_MESSAGE, "quota_exhausted")
    # New-API / One-API: no channel serves this model (a code, or only the message)
    no_channel = "无可用渠道" in api_message or "no available channel" in lowered
    if code == "model_not_found" or no_channel:
        return make(_no_channel(model_id), "unknown_model")
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
        if "expected oauth 2 access token" in lowered and provider.auth_prefix:
            return make(BEARER_TO_GOOGLE_MESSAGE, "wrong_provider")
        if provider.name == "google":
            return make(GOOGLE_HEADER_REFUSED_MESSAGE, "wrong_provider")
        return make(BAD_KEY_MESSAGE, "bad_key")
    if status == 403:
        if "leaked" in lowered:
            return make(LEAKED_KEY_MESSAGE, "bad_key")
        if _mentions_bad_key(error) or "key" in lowered:
            return make(BAD_KEY_MESSAGE, "bad_key")
        return make(FORBIDDEN_MESSAGE, "forbidden")
    if status == 404:
        # "The requested URL … was not found" (Google) or "Invalid URL (POST …)" (New-API)
        # mean a wrong root, not an unknown model
        wrong_root = "requested url" in lowered or "invalid url" in lowered
        if not wrong_root and ("model" in lowered or model_id in api_message):
            return make(_unknown_model(model_id, provider), "unknown_model")
        return make(BAD_ROOT_MESSAGE, "bad_url")
    if status == 408:
        return make(TIMEOUT_MESSAGE_SHORT, "timeout", retryable=True)
    if status == 413:
        return make(TOO_LARGE_MESSAGE, "bad_request")
    if status == 429:
        if "limit: 0" in lowered and "free_tier" in lowered:
            return make(NO_FREE_TIER_MESSAGE, "quota_exhausted")
        if _is_per_day(error):
            return make(QUOTA_MESSAGE, "quota_exhausted")
        return make(RATE_LIMITED_MESSAGE, "rate_limited", retryable=True)
    if status == 503:
        if "overload" in lowered:
            return make(OVERLOADED_MESSAGE, "server", retryable=True)
        return make(UNAVAILABLE_MESSAGE, "server", retryable=True)
    if status == 502:
        return make(GATEWAY_MESSAGE, "server", retryable=True)
    if status in (504, 524):  # 524: Cloudflare's "a timeout occurred"
        return make(GATEWAY_TIMEOUT_MESSAGE, "timeout", retryable=True)
    if status >= 500:
        return make(SERVER_MESSAGE, "server", retryable=status in _RETRYABLE_STATUS)
    return make(
        f"The image service refused the request (HTTP {status}); "
        "ask whoever runs this bot to check the log.",
        "bad_request",
    )


def error_from_response(
    status: int,
    body: bytes | str,
    headers: Mapping[str, str],
    *,
    model_id: str,
    provider: Provider = PROVIDERS["proxy"],
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
    return _error_from_wire(status, wire, lowered, model_id=model_id, provider=provider)


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
