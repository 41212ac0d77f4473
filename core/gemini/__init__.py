"""The image API (generateContent): the only part of imagebot that talks to it."""

from core.gemini._client import GeminiClient
from core.gemini._errors import (
    FINISH_ALIASES,
    FINISH_MESSAGES,
    PROMPT_BLOCK_MESSAGES,
    GeminiError,
    GenerationBlocked,
    error_from_response,
)
from core.gemini._models import ListedModel, parse_model_list
from core.gemini._responses import parse_response
from core.gemini._types import (
    SKIP_SIGNATURE,
    Content,
    ImageRequest,
    ImageResult,
    InlineImage,
    Part,
    Usage,
)
from core.gemini._wire import RequestJSON, build_body, encode_body

__all__ = [
    "FINISH_ALIASES",
    "FINISH_MESSAGES",
    "PROMPT_BLOCK_MESSAGES",
    "SKIP_SIGNATURE",
    "Content",
    "GeminiClient",
    "GeminiError",
    "GenerationBlocked",
    "ImageRequest",
    "ImageResult",
    "InlineImage",
    "ListedModel",
    "Part",
    "RequestJSON",
    "Usage",
    "build_body",
    "encode_body",
    "error_from_response",
    "parse_model_list",
    "parse_response",
]
