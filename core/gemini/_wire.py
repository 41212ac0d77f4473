"""The API's JSON shapes, written down once, and building a request body."""

from __future__ import annotations

import base64
import json
from typing import Annotated, Any, NotRequired, TypedDict, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, model_validator
from pydantic.alias_generators import to_camel

from core.gemini._types import (
    ImageRequest,
    Part,
)


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
    responseModalities: NotRequired[list[str]]
    temperature: NotRequired[float]
    imageConfig: NotRequired[ImageConfigJSON]
    responseMimeType: NotRequired[str]
    responseSchema: NotRequired[dict[str, Any]]
    maxOutputTokens: NotRequired[int]


class RequestJSON(TypedDict):
    contents: list[ContentJSON]
    generationConfig: GenerationConfigJSON


_Item = TypeVar("_Item")
TEXT_ANSWER_TOKENS = 2048  # four prompts, and a thinking model's thoughts before them


def _none_as_empty(value: Any) -> Any:
    return [] if value is None else value


# Proxies send `"parts": null`, `"candidates": null` or `"details": null` for "none".
NullableList = Annotated[list[_Item], BeforeValidator(_none_as_empty)]


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
    parts: NullableList[WirePart] = []


class WireCandidate(_Wire):
    content: WireContent | None = None
    finish_reason: str | None = None
    finish_message: str | None = None


class WirePromptFeedback(_Wire):
    block_reason: str | None = None
    block_reason_message: str | None = None


def _none_as_zero(value: Any) -> Any:
    return 0 if value is None else value


Count = Annotated[int, BeforeValidator(_none_as_zero)]


class WireModalityCount(_Wire):
    modality: str | None = None
    token_count: Count = 0


class WireUsage(_Wire):
    prompt_token_count: Count = 0
    candidates_token_count: Count = 0
    thoughts_token_count: Count = 0
    total_token_count: Count = 0
    candidates_tokens_details: NullableList[WireModalityCount] = []


class WireQuotaViolation(_Wire):
    quota_id: str | None = None
    quota_metric: str | None = None


class WireErrorDetail(_Wire):
    type: str = Field("", alias="@type")
    retry_delay: str | None = None  # RetryInfo
    reason: str | None = None  # ErrorInfo
    violations: NullableList[WireQuotaViolation] = []  # QuotaFailure


class WireError(_Wire):
    """Google's `{code, message, status, details}` or One-API's `{message, type, code}`."""

    @model_validator(mode="before")
    @classmethod
    def _bare_message(cls, value: Any) -> Any:
        # some proxies answer {"error": "Unauthorized"}
        return {"message": value} if isinstance(value, str) else value

    code: int | str | None = None
    message: str | None = None
    status: str | None = None
    type: str | None = None
    details: NullableList[WireErrorDetail] = []


class WireErrorEnvelope(_Wire):
    error: WireError


class WireResponse(_Wire):
    candidates: NullableList[WireCandidate] = []
    prompt_feedback: WirePromptFeedback | None = None
    usage_metadata: WireUsage | None = None
    model_version: str | None = None
    response_id: str | None = None
    error: WireError | None = None


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
    config: GenerationConfigJSON
    if request.answer_schema is not None:
        # a text model's words: its default modality, as JSON (responseSchema rather than
        # responseJsonSchema, which relays that re-encode requests have been seen to drop)
        config = {
            "responseMimeType": "application/json",
            "responseSchema": request.answer_schema,
            "maxOutputTokens": TEXT_ANSWER_TOKENS,
        }
    else:
        config = {"responseModalities": ["TEXT", "IMAGE"] if request.with_text else ["IMAGE"]}
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
