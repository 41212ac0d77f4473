"""A fake generateContent image API on 127.0.0.1: checks requests and answers like the real one."""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import io
import json
import os
import random
import re
import textwrap
import time
import uuid
import zlib
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from aiohttp import web
from PIL import Image, ImageChops, ImageDraw, ImageFont

from core.catalog import Catalog, Model, load_catalog

SKIP_SIGNATURE = "skip_thought_signature_validator"
FAULT_KINDS = frozenset(
    {
        "rate_limit",
        "quota_per_day",
        "server_error",
        "unavailable",
        "slow",
        "drop",
        "malformed",
        "prompt_blocked",
        "image_blocked",
        "text_only",
        "reseller_401",
        "empty_signatures",
    }
)
DIALECTS = ("any", "google", "proxy")
_PATH = re.compile(r"^/v1beta/models/([^/:]+):generateContent$")
# The ids each dialect serves, written down from Google's model and deprecation pages rather
# than read from imagebot's catalog (which the fake uses for limits only), so the two can
# disagree: Google serves the current ids; the preview ids shut down on 2026-06-25 and
# gemini-2.5-flash-image on 2026-10-02, while resellers go on serving them.
_GOOGLE_IDS = frozenset({"gemini-3.1-flash-image", "gemini-3-pro-image"})
_SERVED_IDS = {
    "google": _GOOGLE_IDS,
    "proxy": _GOOGLE_IDS
    | {"gemini-3.1-flash-image-preview", "gemini-3-pro-image-preview", "gemini-2.5-flash-image"},
}
_SERVED_IDS["any"] = _SERVED_IDS["proxy"]
# GET /v1beta/models: Google lists its text, embedding and Imagen models beside the image ones
_LIST_PATH = "/v1beta/models"
_IMAGE_METHODS = ("generateContent", "countTokens", "batchGenerateContent")
# Text models read images and answer in words (Google's image understanding), both dialects
TEXT_MODEL_IDS = frozenset({"gemini-3.5-flash-lite", "gemini-2.5-flash"})
_OTHER_MODELS = {
    "gemini-3.5-flash-lite": ("generateContent", "countTokens", "createCachedContent"),
    "gemini-2.5-flash": ("generateContent", "countTokens", "createCachedContent"),
    "gemini-embedding-001": ("embedContent", "countTextTokens", "countTokens"),
    "imagen-4.0-generate-001": ("predict",),
}
# How each dialect spells the list: Google's own shape; New-API's (Google's envelope, bare
# names, no methods, all on one page); or OpenAI's, which some proxies send on every path.
MODEL_LIST_SHAPES = ("google", "new-api", "openai")
_DEFAULT_LIST_SHAPE = {"google": "google", "any": "google", "proxy": "new-api"}
_SIZES_COMMON = {"1K": "1K", "2K": "2K", "4K": "4K"}
_DIALECT_SIZES = {
    "google": {**_SIZES_COMMON, "512": "0.5K"},
    "proxy": {**_SIZES_COMMON, "0.5K": "0.5K"},
    "any": {**_SIZES_COMMON, "512": "0.5K", "0.5K": "0.5K"},
}
# what GenerateContentRequest and GenerationConfig hold (camelCase; snake_case is converted)
_REQUEST_FIELDS = {
    "contents",
    "generationConfig",
    "systemInstruction",
    "tools",
    "toolConfig",
    "safetySettings",
    "cachedContent",
}
_GENERATION_CONFIG_FIELDS = {
    "responseModalities",
    "temperature",
    "imageConfig",
    "topP",
    "topK",
    "candidateCount",
    "maxOutputTokens",
    "stopSequences",
    "seed",
    "presencePenalty",
    "frequencyPenalty",
    "responseMimeType",
    "responseSchema",
    "responseJsonSchema",
    "thinkingConfig",
}
# the OpenAPI subset Google's responseSchema takes (types spelled in capitals or not)
_SCHEMA_TYPES = {"STRING", "NUMBER", "INTEGER", "BOOLEAN", "ARRAY", "OBJECT"}
_SCHEMA_FIELDS = {
    "type",
    "format",
    "description",
    "nullable",
    "enum",
    "maxItems",
    "minItems",
    "properties",
    "required",
    "items",
    "propertyOrdering",
}
_MIME_MAGIC = {"image/png": b"\x89PNG\r\n\x1a\n", "image/jpeg": b"\xff\xd8\xff"}
_TYPE = "type.googleapis.com/google.rpc."

# Output pixel sizes at 1K; other sizes scale each side.
_PIXELS_GEMINI_3 = {
    "1:1": (1024, 1024),
    "2:3": (848, 1264),
    "3:2": (1264, 848),
    "3:4": (896, 1200),
    "4:3": (1200, 896),
    "4:5": (928, 1152),
    "5:4": (1152, 928),
    "9:16": (768, 1376),
    "16:9": (1376, 768),
    "21:9": (1584, 672),
    "1:4": (512, 2048),
    "4:1": (2048, 512),
    "1:8": (352, 2816),
    "8:1": (2816, 352),
}
_PIXELS_GEMINI_25 = {
    "1:1": (1024, 1024),
    "2:3": (832, 1248),
    "3:2": (1248, 832),
    "3:4": (864, 1184),
    "4:3": (1184, 864),
    "4:5": (896, 1152),
    "5:4": (1152, 896),
    "9:16": (768, 1344),
    "16:9": (1344, 768),
    "21:9": (1536, 672),
}
_SCALE = {"0.5K": 0.5, "512": 0.5, "1K": 1.0, "2K": 2.0, "4K": 4.0}


def pixel_size(model_id: str, aspect_ratio: str | None, image_size: str | None) -> tuple[int, int]:
    """Width and height the real API returns; `image_size` in product or wire spelling."""
    table = _PIXELS_GEMINI_25 if "2.5" in model_id else _PIXELS_GEMINI_3
    ratio = aspect_ratio or "1:1"
    if ratio not in table:
        raise ValueError(f"no pixel size for aspect ratio {ratio!r} on {model_id}")
    scale = _SCALE.get((image_size or "1K").upper())
    if scale is None:
        raise ValueError(f"unknown image size {image_size!r}")
    width, height = table[ratio]
    return int(width * scale), int(height * scale)


def render_png(prompt: str, width: int, height: int) -> bytes:
    """A PNG of the given size: a colour taken from the prompt, with the prompt written on it."""
    digest = hashlib.sha256(prompt.encode()).digest()
    background = (digest[0], digest[1], digest[2])
    ink = (0, 0, 0) if sum(background) > 380 else (255, 255, 255)
    image = Image.new("RGB", (width, height), background)
    font_size = max(12, min(width, height) // 14)
    font = ImageFont.load_default(size=font_size)
    columns = max(8, int(width / (font_size * 0.6)) - 2)
    lines = textwrap.wrap(prompt or "(no prompt)", columns)[: max(1, height // font_size - 1)]
    ImageDraw.Draw(image).multiline_text(
        (font_size // 2, font_size // 2), "\n".join(lines), fill=ink, font=font
    )
    out = io.BytesIO()
    image.save(out, format="PNG", compress_level=1)
    return out.getvalue()


PHOTO_FORMATS = {"jpeg": "image/jpeg", "png": "image/png"}


def render_photo(width: int, height: int, fmt: str = "jpeg", seed: int = 0) -> bytes:
    """A photo-like picture: smooth colour fields under fine grain, which compresses about as
    badly as a real photograph (a 4K JPEG of several MB), unlike the flat `render_png`."""
    rng = random.Random(seed)
    cells = (max(2, width // 48), max(2, height // 48))
    coarse = Image.frombytes("RGB", cells, rng.randbytes(cells[0] * cells[1] * 3))
    fields = coarse.resize((width, height), Image.Resampling.BICUBIC)
    grain = Image.effect_noise((width, height), 12)
    grain_rgb = Image.merge(
        "RGB",
        (
            grain,
            grain.transpose(Image.Transpose.FLIP_LEFT_RIGHT),
            grain.transpose(Image.Transpose.FLIP_TOP_BOTTOM),
        ),
    )
    image = ImageChops.add(fields, grain_rgb, scale=1.0, offset=-128)
    out = io.BytesIO()
    if fmt == "png":
        image.save(out, format="PNG", compress_level=1)
    else:
        image.save(out, format="JPEG", quality=90)
    return out.getvalue()


def stamp(data: bytes, note: str) -> bytes:
    """The same picture with `note` written into its metadata, so every answer's bytes (and
    hash) are its own without rendering again."""
    text = note.encode("latin-1", "replace")[:60000]
    if data.startswith(_MIME_MAGIC["image/png"]):
        body = b"tEXt" + b"imagebot\0" + text
        chunk = len(body) - 4
        crc = zlib.crc32(body) & 0xFFFFFFFF
        # after the signature (8 bytes) and IHDR (25 bytes)
        return data[:33] + chunk.to_bytes(4, "big") + body + crc.to_bytes(4, "big") + data[33:]
    if data.startswith(_MIME_MAGIC["image/jpeg"]):
        segment = b"\xff\xfe" + (len(text) + 2).to_bytes(2, "big") + text
        return data[:2] + segment + data[2:]
    raise ValueError("stamp() takes PNG or JPEG data")


@dataclass
class Fault:
    """A misbehaviour applied to the next request.

    `retry_delay` (seconds) adds a RetryInfo to "rate_limit"; without it the 429 names no
    delay. `seconds` is how long "slow" waits before answering.
    """

    kind: str
    retry_delay: float | None = None
    seconds: float = 0.0

    def __post_init__(self) -> None:
        if self.kind not in FAULT_KINDS:
            raise ValueError(
                f"unknown fault {self.kind!r}; known: {', '.join(sorted(FAULT_KINDS))}"
            )


@dataclass
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    json: Any | None
    status: int | None = None  # None while in progress, and for a dropped connection
    received_at: float = 0.0  # time.monotonic() on arrival
    answered_at: float = 0.0  # time.monotonic() once the whole answer was written; 0.0 if none


@dataclass
class RecordedResponse:
    """A 200 answer with content (an image, or text only)."""

    model_id: str
    response_id: str
    mime_type: str | None
    image: bytes | None
    size: tuple[int, int] | None
    text: str | None
    signatures: list[str] = field(default_factory=list)


class _Rejected(Exception):
    """An error answer: Google's shape, or a proxy's OpenAI shape when `openai_type` is set."""

    def __init__(
        self,
        status: int,
        api_status: str,
        message: str,
        details: list[Any] | None = None,
        openai_type: str | None = None,
    ):
        super().__init__(message)
        self.status = status
        self.api_status = api_status
        self.message = message
        self.details = details or []
        self.openai_type = openai_type


def _invalid(message: str) -> _Rejected:
    return _Rejected(400, "INVALID_ARGUMENT", message)


def _unknown_name(name: str, where: str) -> _Rejected:
    at = f" at '{where}'" if where else ""
    return _invalid(f'Invalid JSON payload received. Unknown name "{name}"{at}: Cannot find field.')


def _check_keys(obj: dict[str, Any], allowed: set[str], where: str) -> None:
    for key in obj:
        if key not in allowed:
            raise _unknown_name(key, where)


def inline_images(contents: list[dict[str, Any]], role: str | None = None) -> list[bytes]:
    """The images a request's `contents` carry (those of `role` only, when given), decoded."""
    return [
        base64.b64decode(p["inlineData"]["data"])
        for c in contents
        if role is None or c["role"] == role
        for p in c["parts"]
        if "inlineData" in p
    ]


def _check_schema(schema: Any, where: str) -> None:
    if not isinstance(schema, dict):
        raise _invalid(f"Invalid value at '{where}': expected an object.")
    _check_keys(schema, _SCHEMA_FIELDS, where)
    if str(schema.get("type", "")).upper() not in _SCHEMA_TYPES:
        raise _invalid(f"Invalid value at '{where}.type' (type.googleapis.com/google.ai.Type).")
    if "items" in schema:
        _check_schema(schema["items"], f"{where}.items")
    for name, inner in (schema.get("properties") or {}).items():
        _check_schema(inner, f"{where}.properties[{name}]")


def _looks(data: bytes) -> str:
    """What a picture shows, as the fake sees it: its shape and its average colour."""
    with Image.open(io.BytesIO(data)) as image:
        red, green, blue = image.convert("RGB").resize((1, 1)).getpixel((0, 0))  # type: ignore[misc]
        width, height = image.size
    shade = max(("red", red), ("green", green), ("blue", blue), key=lambda c: c[1])[0]
    shape = "square" if width == height else "wide" if width > height else "tall"
    return f"a {shape} picture, mostly {shade}"


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(word[:1].upper() + word[1:] for word in rest)


def camel_keys(value: Any) -> Any:
    """Google accepts snake_case field names beside camelCase: read both as camelCase."""
    if isinstance(value, dict):
        return {_camel(k): camel_keys(v) for k, v in value.items()}
    if isinstance(value, list):
        return [camel_keys(v) for v in value]
    return value


def _decode_base64(data: str) -> bytes | None:
    for altchars in (None, b"-_"):
        try:
            return base64.b64decode(data, altchars=altchars, validate=True)
        except binascii.Error:
            continue
    return None


def _google_error(
    status: int, api_status: str, message: str, details: list[Any] | None = None
) -> web.Response:
    error: dict[str, Any] = {"code": status, "message": message, "status": api_status}
    if details:
        error["details"] = details
    return web.json_response({"error": error}, status=status)


@dataclass
class _Checked:
    model: Model
    model_id: str  # as requested
    contents: list[dict[str, Any]]
    modalities: list[str]
    aspect_ratio: str | None
    size: str  # product spelling


class FakeGemini:
    """The fake server. `faults` are consumed one per API request, in order.

    `dialect` is "google" (Google's Gemini API: the key in x-goog-api-key or ?key=, a Bearer
    API key refused as Google refuses it, current model ids, "512"), "proxy" (a reseller:
    Bearer keys, the preview ids as well, "0.5K") or "any" (both at once, the default).

    With `photo` set to "jpeg" or "png", images are photo-like pictures of realistic byte size
    (rendered once per pixel size, then made unique per answer) instead of a flat colour with
    the prompt written on it.

    `GET /v1beta/models` lists the models the dialect serves (plus a few that make no images),
    after the same key checks, in the shape `model_list_shape` names (by default Google's for
    "google" and "any", New-API's for "proxy"). Faults are consumed by it too; the no-image
    ones have no effect there.

    With `capacity` set, at most that many generations run at once: one more is answered
    429 RESOURCE_EXHAUSTED at once, with a RetryInfo of `capacity_retry_delay` seconds, as
    a reseller's concurrency limit or a per-key quota answers. `peak_in_flight` and
    `refused` tell what the client did.
    """

    def __init__(
        self,
        *,
        api_key: str | None = "test-key",
        latency: float = 0.0,
        catalog: Catalog | None = None,
        photo: str | None = None,
        dialect: str = "any",
    ) -> None:
        if dialect not in DIALECTS:
            raise ValueError(f"dialect must be one of {', '.join(DIALECTS)}, not {dialect!r}")
        if photo is not None and photo not in PHOTO_FORMATS:
            raise ValueError(f"photo must be one of {', '.join(PHOTO_FORMATS)}, not {photo!r}")
        self.api_key = api_key
        self.dialect = dialect
        self.model_list_shape = _DEFAULT_LIST_SHAPE[dialect]
        self.latency = latency
        self.capacity: int | None = None
        self.capacity_retry_delay = 1.0
        self.in_flight = 0  # generations being answered
        self.peak_in_flight = 0
        self.refused = 0  # answered 429 for want of capacity
        self.catalog = catalog or load_catalog()
        self.photo = photo
        self._photos: dict[tuple[int, int, str], bytes] = {}
        self._photo_lock = asyncio.Lock()
        self.base_url = ""
        self.requests: list[RecordedRequest] = []
        self.text_requests: list[dict[str, Any]] = []  # bodies sent to text models
        self.responses: list[RecordedResponse] = []
        self.faults: list[Fault] = []
        # signatures are bytes to Google: any base64 spelling of issued bytes is the same one
        self.issued_signatures: set[bytes] = set()
        self._changed = asyncio.Condition()
        self._closing = asyncio.Event()
        self._runner: web.AppRunner | None = None

    async def __aenter__(self) -> FakeGemini:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.stop()

    async def start(self, host: str = "127.0.0.1", port: int = 0) -> str:
        app = web.Application(client_max_size=256 * 1024 * 1024)
        app.router.add_post("/_fake/faults", self._add_fault)
        app.router.add_post("/_fake/latency", self._set_latency)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        self._closing.clear()
        self._runner = web.AppRunner(app, shutdown_timeout=2.0, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        bound_host, bound_port = self._runner.addresses[0][:2]
        self.base_url = f"http://{bound_host}:{bound_port}"
        return self.base_url

    async def stop(self) -> None:
        self._closing.set()  # ends "slow" waits and latency at once
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    # A test helper that keeps its own deadline, so tests need not wrap every call.
    async def wait_for_requests(
        self,
        n: int,
        timeout: float = 5.0,
    ) -> list[RecordedRequest]:
        """Waits until at least `n` API requests have arrived."""
        try:
            async with asyncio.timeout(timeout), self._changed:
                await self._changed.wait_for(lambda: len(self.requests) >= n)
        except TimeoutError:
            raise TimeoutError(
                f"the fake image API got {len(self.requests)} requests, not {n}, "
                f"within {timeout:g} s"
            ) from None
        return self.requests

    async def _notify(self) -> None:
        async with self._changed:
            self._changed.notify_all()

    async def _pause(self, seconds: float) -> None:
        if seconds <= 0:
            return
        try:
            async with asyncio.timeout(seconds):
                await self._closing.wait()
        except TimeoutError:
            pass

    # ---------------------------------------------------------------- control routes

    async def _add_fault(self, request: web.Request) -> web.Response:
        try:
            data = await request.json()
            fault = Fault(
                kind=data["kind"],
                retry_delay=data.get("retry_delay"),
                seconds=float(data.get("seconds") or 0.0),
            )
        except (ValueError, KeyError, TypeError) as exc:
            return web.json_response({"ok": False, "error": str(exc)}, status=400)
        self.faults.append(fault)
        return web.json_response({"ok": True, "pending": len(self.faults)})

    async def _set_latency(self, request: web.Request) -> web.Response:
        try:
            self.latency = float((await request.json())["seconds"])
        except (ValueError, KeyError, TypeError) as exc:
            return web.json_response({"ok": False, "error": str(exc)}, status=400)
        return web.json_response({"ok": True, "latency": self.latency})

    # ---------------------------------------------------------------- the API

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        try:
            parsed = json.loads(body) if body else None
        except ValueError:
            parsed = None
        record = RecordedRequest(
            request.method,
            request.path,
            dict(request.headers),
            body,
            parsed,
            received_at=time.monotonic(),
        )
        self.requests.append(record)
        await self._notify()
        try:
            response = await self._answer(request, record)
            if response is None:
                # Close without a word: the client sees a dropped connection.
                assert request.transport is not None
                request.transport.close()
                return web.Response(status=204)
            record.status = response.status
            try:
                # written here rather than after returning, to know when the answer left
                await response.prepare(request)
                await response.write_eof()
            except ConnectionError:
                pass
            else:
                record.answered_at = time.monotonic()
            return response
        finally:
            await self._notify()

    async def _answer(self, request: web.Request, record: RecordedRequest) -> web.Response | None:
        if request.method != "POST":
            return await self._answer_now(request, record)
        if self.capacity is not None and self.in_flight >= self.capacity:
            self.refused += 1
            delay = {"@type": _TYPE + "RetryInfo", "retryDelay": f"{self.capacity_retry_delay}s"}
            return _google_error(
                429,
                "RESOURCE_EXHAUSTED",
                "Resource has been exhausted (e.g. check quota).",
                [delay],
            )
        self.in_flight += 1
        self.peak_in_flight = max(self.peak_in_flight, self.in_flight)
        try:
            return await self._answer_now(request, record)
        finally:
            self.in_flight -= 1

    async def _answer_now(
        self, request: web.Request, record: RecordedRequest
    ) -> web.Response | None:
        await self._pause(self.latency)
        fault = self.faults.pop(0) if self.faults else None
        if fault is not None:
            if fault.kind == "drop":
                return None
            if fault.kind == "slow":
                await self._pause(fault.seconds)
            else:
                early = self._fault_response(fault)
                if early is not None:
                    return early
        try:
            self._check_auth(request)
            if request.path.rstrip("/") == _LIST_PATH and request.method == "GET":
                return self._model_list(request)
            text_model = self._text_model(request.method, request.path)
            if text_model is not None:
                return self._text_answer(text_model, record.body)
            model, model_id = self._check_route(request.method, request.path)
            checked = self._check_body(model, model_id, record.body)
        except _Rejected as rejected:
            if rejected.openai_type is not None:
                error = {"message": rejected.message, "type": rejected.openai_type, "code": None}
                return web.json_response({"error": error}, status=rejected.status)
            return _google_error(
                rejected.status, rejected.api_status, rejected.message, rejected.details
            )
        if fault is not None and fault.kind in {"prompt_blocked", "image_blocked", "text_only"}:
            return self._no_image_answer(fault.kind, checked)
        # a proxy seen sending `"thoughtSignature": ""` where Google sends a signature
        empty = fault is not None and fault.kind == "empty_signatures"
        return await self._image_answer(checked, empty_signatures=empty)

    def _fault_response(self, fault: Fault) -> web.Response | None:
        if fault.kind == "rate_limit":
            details = []
            if fault.retry_delay is not None:
                details.append(
                    {"@type": _TYPE + "RetryInfo", "retryDelay": f"{fault.retry_delay}s"}
                )
            return _google_error(
                429,
                "RESOURCE_EXHAUSTED",
                "Resource has been exhausted (e.g. check quota).",
                details,
            )
        if fault.kind == "quota_per_day":
            details = [
                {
                    "@type": _TYPE + "QuotaFailure",
                    "violations": [
                        {
                            "quotaMetric": "generativelanguage.googleapis.com/"
                            "generate_content_free_tier_requests",
                            "quotaId": "GenerateRequestsPerDayPerProjectPerModel-FreeTier",
                        }
                    ],
                },
                {"@type": _TYPE + "RetryInfo", "retryDelay": "0.1s"},
            ]
            return _google_error(
                429,
                "RESOURCE_EXHAUSTED",
                "You exceeded your current quota, please check your plan and billing details.",
                details,
            )
        if fault.kind == "server_error":
            return _google_error(
                500, "INTERNAL", "An internal error has occurred. Please retry or report it."
            )
        if fault.kind == "unavailable":
            return _google_error(
                503, "UNAVAILABLE", "The model is overloaded. Please try again later."
            )
        if fault.kind == "malformed":
            return web.Response(
                status=200,
                body=b'{"candidates": [{"content": {"role": "model", "parts": [{"inlineDa',
                content_type="application/json",
            )
        if fault.kind == "reseller_401":
            error = {
                "message": "Invalid token (request id: 20250101000000000000000)",
                "type": "new_api_error",
                "code": "invalid_token",
            }
            return web.json_response({"error": error}, status=401)
        return None  # answered after the request is checked

    def _check_auth(self, request: web.Request) -> None:
        google_key = request.headers.get("x-goog-api-key") or request.query.get("key")
        bearer = request.headers.get("Authorization", "")
        bearer_key = bearer[7:].strip() if bearer.startswith("Bearer ") else ""
        if self.dialect == "proxy":
            key = bearer_key
            if not key:
                raise _Rejected(401, "", "No token provided", openai_type="invalid_request_error")
        elif google_key or self.dialect == "any":
            key = google_key or bearer_key
        else:
            key = ""
        if not key:
            raise _Rejected(
                401,
                "UNAUTHENTICATED",
                "Request had invalid authentication credentials. Expected OAuth 2 access token, "
                "login cookie or other valid authentication credential. See "
                "https://developers.google.com/identity/sign-in/web/devconsole-project.",
            )
        if self.api_key is not None and key != self.api_key:
            if self.dialect == "proxy":
                raise _Rejected(401, "", "Invalid token", openai_type="invalid_request_error")
            raise _Rejected(
                400,
                "INVALID_ARGUMENT",
                "API key not valid. Please pass a valid API key.",
                [
                    {
                        "@type": _TYPE + "ErrorInfo",
                        "reason": "API_KEY_INVALID",
                        "domain": "googleapis.com",
                    }
                ],
            )

    @staticmethod
    def _text_model(method: str, path: str) -> str | None:
        match = _PATH.match(path)
        if match is None or method != "POST" or match.group(1) not in TEXT_MODEL_IDS:
            return None
        return match.group(1)

    def _text_answer(self, model_id: str, body: bytes) -> web.Response:
        """A text model reading images: what each shows (its size and colour), as JSON
        when a schema or JSON is asked for, as words otherwise."""
        try:
            payload = camel_keys(json.loads(body))
        except ValueError:
            raise _invalid("Invalid JSON payload received. Unexpected token.") from None
        if not isinstance(payload, dict):
            raise _invalid("Invalid JSON payload received. Expected an object.")
        _check_keys(payload, _REQUEST_FIELDS, "")
        contents = payload.get("contents")
        if not isinstance(contents, list) or not contents:
            raise _invalid("* GenerateContentRequest.contents: contents is not specified")
        seen: list[bytes] = []
        for c_index, content in enumerate(contents):
            for p_index, part in enumerate(content.get("parts") or []):
                if self._check_part(part, f"contents[{c_index}].parts[{p_index}]"):
                    seen.append(_decode_base64(part["inlineData"]["data"]) or b"")
        config = payload.get("generationConfig", {})
        _check_keys(config, _GENERATION_CONFIG_FIELDS, "generation_config")
        if "IMAGE" in config.get("responseModalities", []):
            raise _invalid("Multi-modal output is not supported.")
        if "imageConfig" in config:
            raise _invalid("Image config is not supported for this model.")
        schema = config.get("responseSchema")
        if schema is not None:
            if "responseJsonSchema" in config:
                raise _invalid("responseSchema and responseJsonSchema cannot both be set.")
            if config.get("responseMimeType") != "application/json":
                raise _invalid("responseSchema needs responseMimeType application/json.")
            _check_schema(schema, "generation_config.response_schema")
        self.text_requests.append(payload)
        looks = [_looks(data) for data in seen] or ["nothing to see"]
        ideas = [
            f"{looks[0]}, {style}"
            for style in ("as a photograph", "as a watercolour", "as a pencil sketch", "in 3D")
        ]
        limit = (schema or {}).get("maxItems", 4)
        as_json = config.get("responseMimeType") == "application/json"
        text = json.dumps(ideas[:limit]) if as_json else "\n".join(ideas)
        answer = {
            "candidates": [
                {
                    "content": {"role": "model", "parts": [{"text": text}]},
                    "finishReason": "STOP",
                    "index": 0,
                }
            ],
            "usageMetadata": {
                "promptTokenCount": 258 * len(seen) + 40,
                "candidatesTokenCount": len(text.split()),
                "totalTokenCount": 258 * len(seen) + 40 + len(text.split()),
            },
            "modelVersion": model_id,
            "responseId": uuid.uuid4().hex[:22],
        }
        return web.json_response(answer)

    def _check_route(self, method: str, path: str) -> tuple[Model, str]:
        match = _PATH.match(path)
        if match is None or method != "POST":
            raise _Rejected(
                404,
                "NOT_FOUND",
                f"The requested URL {path} ({method}) was not found on this server.",
            )
        model_id = match.group(1)
        model = self.catalog.find(model_id) if model_id in _SERVED_IDS[self.dialect] else None
        if model is None:
            raise _Rejected(
                404,
                "NOT_FOUND",
                f"models/{model_id} is not found for API version v1beta, or is not supported "
                "for generateContent. Call ListModels to see the list of available models "
                "and their supported methods.",
            )
        return model, model_id

    def _model_list(self, request: web.Request) -> web.Response:
        listed = {name: _IMAGE_METHODS for name in _SERVED_IDS[self.dialect]} | _OTHER_MODELS
        names = sorted(listed)
        if self.model_list_shape == "openai":
            data = [{"id": n, "object": "model", "created": 0, "owned_by": "google"} for n in names]
            return web.json_response({"object": "list", "data": data, "success": True})
        if self.model_list_shape == "new-api":
            models = [{"name": n, "displayName": n} for n in names]
            return web.json_response({"models": models, "nextPageToken": None})
        try:
            size = int(request.query.get("pageSize", "50"))
            start = int(request.query.get("pageToken") or 0)
        except ValueError:
            raise _invalid("Invalid value for pageSize or pageToken.") from None
        if size < 1 or start < 0:
            raise _invalid("pageSize must be positive and pageToken one this server sent.")
        page = names[start : start + min(size, 1000)]
        body: dict[str, Any] = {
            "models": [
                {
                    "name": f"models/{n}",
                    "version": "001",
                    "displayName": n.replace("-", " ").title(),
                    "inputTokenLimit": 32768,
                    "outputTokenLimit": 32768,
                    "supportedGenerationMethods": list(listed[n]),
                }
                for n in page
            ]
        }
        if start + len(page) < len(names):
            body["nextPageToken"] = str(start + len(page))
        return web.json_response(body)

    def _check_body(self, model: Model, model_id: str, body: bytes) -> _Checked:
        try:
            payload = json.loads(body)
        except ValueError:
            raise _invalid("Invalid JSON payload received. Unexpected token.") from None
        if not isinstance(payload, dict):
            raise _invalid("Invalid JSON payload received. Expected an object.")
        payload = camel_keys(payload)
        _check_keys(payload, _REQUEST_FIELDS, "")
        contents = payload.get("contents")
        if not isinstance(contents, list) or not contents:
            raise _invalid("* GenerateContentRequest.contents: contents is not specified")
        images = 0
        for c_index, content in enumerate(contents):
            where = f"contents[{c_index}]"
            if not isinstance(content, dict):
                raise _invalid(f"Invalid value at '{where}': expected an object.")
            _check_keys(content, {"role", "parts"}, where)
            # Google reads a content without a role as the user's
            content.setdefault("role", "user")
            if content["role"] not in ("user", "model"):
                raise _invalid(
                    f"Please use a valid role: user, model. Got {content.get('role')!r} at {where}."
                )
            parts = content.get("parts")
            if not isinstance(parts, list) or not parts:
                raise _invalid(
                    f"* GenerateContentRequest.{where}.parts: contents.parts must not be empty."
                )
            for p_index, part in enumerate(parts):
                images += self._check_part(part, f"{where}.parts[{p_index}]")
        config = payload.get("generationConfig", {})
        if not isinstance(config, dict):
            raise _invalid("Invalid value at 'generation_config': expected an object.")
        _check_keys(config, _GENERATION_CONFIG_FIELDS, "generation_config")
        modalities = config.get("responseModalities", ["TEXT", "IMAGE"])
        if not isinstance(modalities, list) or any(m not in ("TEXT", "IMAGE") for m in modalities):
            raise _invalid(
                f"Invalid value at 'generation_config.response_modalities': {modalities!r}"
            )
        if sorted(modalities) not in (["IMAGE"], ["IMAGE", "TEXT"]):
            raise _invalid(
                "Model does not support the requested response modalities: " + ",".join(modalities)
            )
        temperature = config.get("temperature")
        if temperature is not None:
            if isinstance(temperature, bool) or not isinstance(temperature, int | float):
                raise _invalid(
                    "Invalid value at 'generation_config.temperature' (TYPE_FLOAT), "
                    f"{temperature!r}"
                )
            if not 0.0 <= temperature <= 2.0:
                raise _invalid(f"temperature must be between 0 and 2, got {temperature}")
        image_config = config.get("imageConfig", {})
        if not isinstance(image_config, dict):
            raise _invalid("Invalid value at 'generation_config.image_config': expected an object.")
        _check_keys(image_config, {"aspectRatio", "imageSize"}, "generation_config.image_config")
        ratio = image_config.get("aspectRatio")
        if ratio is not None and ratio not in model.aspect_ratios:
            raise _invalid(f"Aspect ratio {ratio} is not supported by {model_id}.")
        wire_size = image_config.get("imageSize")
        size = _DIALECT_SIZES[self.dialect].get(wire_size) if wire_size is not None else None
        if wire_size is not None and size not in model.sizes:
            raise _invalid(f"Image size {wire_size} is not supported by {model_id}.")
        if images > model.max_reference_images:
            raise _invalid(
                f"Too many images: the request holds {images}, and {model_id} accepts at most "
                f"{model.max_reference_images}."
            )
        if model.thought_signatures:
            self._check_signatures(contents)
        return _Checked(model, model_id, contents, modalities, ratio, size or model.default_size)

    def _check_part(self, part: Any, where: str) -> int:
        """Checks one part; returns how many images it holds."""
        if not isinstance(part, dict):
            raise _invalid(f"Invalid value at '{where}': expected an object.")
        _check_keys(part, {"text", "inlineData", "fileData", "thoughtSignature", "thought"}, where)
        kinds = [k for k in ("text", "inlineData", "fileData") if k in part]
        if len(kinds) != 1:
            raise _invalid(f"A part needs exactly one of text, inlineData or fileData at {where}.")
        signature = part.get("thoughtSignature")
        if signature is not None and not isinstance(signature, str):
            raise _invalid(f"Invalid value at '{where}.thought_signature' (TYPE_BYTES).")
        if kinds[0] == "text":
            if not isinstance(part["text"], str):
                raise _invalid(f"Invalid value at '{where}.text' (TYPE_STRING).")
            return 0
        if kinds[0] == "fileData":
            data = part["fileData"]
            if not isinstance(data, dict):
                raise _invalid(f"Invalid value at '{where}.file_data': expected an object.")
            _check_keys(data, {"mimeType", "fileUri"}, f"{where}.file_data")
            if not isinstance(data.get("fileUri"), str):
                raise _invalid(f"* {where}.file_data.file_uri: a file URI is required.")
            return 1
        data = part["inlineData"]
        if not isinstance(data, dict):
            raise _invalid(f"Invalid value at '{where}.inline_data': expected an object.")
        _check_keys(data, {"mimeType", "data"}, f"{where}.inline_data")
        mime = data.get("mimeType")
        if mime not in _MIME_MAGIC:
            raise _invalid(f"Unsupported MIME type: {mime}")
        raw = _decode_base64(data["data"]) if isinstance(data.get("data"), str) else None
        if not raw:
            raise _invalid(
                f"Invalid value at '{where}.inline_data.data' (TYPE_BYTES), Base64 decoding failed."
            )
        if not raw.startswith(_MIME_MAGIC[mime]):
            raise _invalid(f"Unable to process input image: the data at {where} is not {mime}.")
        return 1

    def _check_signatures(self, contents: list[dict[str, Any]]) -> None:
        for c_index, content in enumerate(contents, start=1):
            first_text_seen = False
            for p_index, part in enumerate(content["parts"], start=1):
                # an empty signature is no signature
                signature = part.get("thoughtSignature") or None
                if signature is not None and signature != SKIP_SIGNATURE:
                    if _decode_base64(signature) not in self.issued_signatures:
                        raise _invalid("Thought signature is not valid.")
                if content["role"] != "model" or part.get("thought"):
                    continue  # drafts sent back are read as drafts
                needs = None
                if "inlineData" in part:
                    needs = "Image"
                elif "text" in part and not first_text_seen:
                    first_text_seen = True
                    needs = "Text"
                if needs and signature is None:
                    raise _invalid(
                        f"{needs} part is missing a thought_signature in content position "
                        f"{c_index}, part position {p_index}."
                    )

    def _new_signature(self) -> str:
        raw = os.urandom(24)
        self.issued_signatures.add(raw)
        return base64.b64encode(raw).decode()

    @staticmethod
    def _prompt(contents: list[dict[str, Any]]) -> str:
        for content in reversed(contents):
            if content["role"] == "user":
                texts = [
                    p["text"] for p in content["parts"] if "text" in p and not p.get("thought")
                ]
                return " ".join(texts).strip()
        return ""

    def _usage(self, checked: _Checked, image_tokens: int, text_tokens: int) -> dict[str, Any]:
        prompt_tokens = 0
        for content in checked.contents:
            for part in content["parts"]:
                prompt_tokens += len(part["text"].split()) if "text" in part else 258
        thoughts = 160 if checked.model.thought_signatures else 0
        details = []
        if text_tokens:
            details.append({"modality": "TEXT", "tokenCount": text_tokens})
        if image_tokens:
            details.append({"modality": "IMAGE", "tokenCount": image_tokens})
        usage: dict[str, Any] = {
            "promptTokenCount": prompt_tokens,
            "candidatesTokenCount": image_tokens + text_tokens,
            "totalTokenCount": prompt_tokens + image_tokens + text_tokens + thoughts,
            "promptTokensDetails": [{"modality": "TEXT", "tokenCount": prompt_tokens}],
        }
        if details:
            usage["candidatesTokensDetails"] = details
        if thoughts:
            usage["thoughtsTokenCount"] = thoughts
        return usage

    def _no_image_answer(self, kind: str, checked: _Checked) -> web.Response:
        response_id = uuid.uuid4().hex[:22]
        common = {"modelVersion": checked.model_id, "responseId": response_id}
        if kind == "prompt_blocked":
            return web.json_response(
                {
                    "promptFeedback": {"blockReason": "SAFETY"},
                    "usageMetadata": self._usage(checked, 0, 0),
                    **common,
                }
            )
        if kind == "image_blocked":
            candidate = {
                "finishReason": "IMAGE_SAFETY",
                "finishMessage": "Unable to show the generated image.",
                "index": 0,
            }
            return web.json_response(
                {"candidates": [candidate], "usageMetadata": self._usage(checked, 0, 0), **common}
            )
        text = "I can describe it, but I will not draw it this time."
        part: dict[str, Any] = {"text": text}
        signatures = []
        if checked.model.thought_signatures:
            part["thoughtSignature"] = self._new_signature()
            signatures.append(part["thoughtSignature"])
        self.responses.append(
            RecordedResponse(checked.model_id, response_id, None, None, None, text, signatures)
        )
        candidate = {
            "content": {"role": "model", "parts": [part]},
            "finishReason": "STOP",
            "index": 0,
        }
        usage = self._usage(checked, 0, len(text.split()))
        return web.json_response({"candidates": [candidate], "usageMetadata": usage, **common})

    async def _image_answer(
        self, checked: _Checked, *, empty_signatures: bool = False
    ) -> web.Response:
        model = checked.model
        prompt = self._prompt(checked.contents)
        width, height = pixel_size(model.id, checked.aspect_ratio, checked.size)
        if self.photo is not None:
            mime_type = PHOTO_FORMATS[self.photo]
            png = stamp(await self._photo((width, height)), f"{uuid.uuid4().hex} {prompt}")
        else:
            mime_type = "image/png"
            # every answer is its own picture, as a real model's is, even for one prompt
            png = stamp(
                await asyncio.to_thread(render_png, prompt, width, height), uuid.uuid4().hex
            )
        signing = model.thought_signatures
        signatures: list[str] = []
        parts: list[dict[str, Any]] = []
        if signing:
            parts.append({"text": f"Planning a picture of: {prompt[:80]}", "thought": True})
        text = None
        if "TEXT" in checked.modalities:
            text = f"Here is {prompt[:200] or 'your picture'}."
            parts.append({"text": text})
        parts.append(
            {"inlineData": {"mimeType": mime_type, "data": base64.b64encode(png).decode()}}
        )
        if signing:
            for part in parts:
                if "thought" not in part:
                    part["thoughtSignature"] = "" if empty_signatures else self._new_signature()
                    signatures.append(part["thoughtSignature"])
        image_tokens = model.output_tokens.get(checked.size, 1290)
        text_tokens = len(text.split()) if text else 0
        response_id = uuid.uuid4().hex[:22]
        self.responses.append(
            RecordedResponse(
                checked.model_id, response_id, mime_type, png, (width, height), text, signatures
            )
        )
        return web.json_response(
            {
                "candidates": [
                    {
                        "content": {"role": "model", "parts": parts},
                        "finishReason": "STOP",
                        "index": 0,
                    }
                ],
                "usageMetadata": self._usage(checked, image_tokens, text_tokens),
                "modelVersion": checked.model_id,
                "responseId": response_id,
            }
        )

    async def prepare_photo(self, width: int, height: int) -> None:
        """Render the photo for this size and format now, so that no timed answer waits for
        it (a 4K PNG takes seconds)."""
        await self._photo((width, height))

    async def _photo(self, size: tuple[int, int]) -> bytes:
        assert self.photo is not None
        key = (*size, self.photo)  # `photo` may change between requests
        async with self._photo_lock:
            if key not in self._photos:
                self._photos[key] = await asyncio.to_thread(render_photo, *size, self.photo)
            return self._photos[key]


async def serve(
    host: str,
    port: int,
    *,
    api_key: str | None = None,
    latency: float = 0.0,
    dialect: str = "any",
) -> None:
    """Runs the fake until cancelled, printing its URL once it listens."""
    fake = FakeGemini(api_key=api_key, latency=latency, dialect=dialect)
    url = await fake.start(host, port)
    print(f"fake image API listening on {url}", flush=True)
    try:
        await asyncio.Event().wait()
    finally:
        await fake.stop()
