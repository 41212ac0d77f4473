"""The model list (`GET /v1beta/models`): what a server offers, read from any shape it sends.

Google answers `{"models": [{"name": "models/gemini-…", "supportedGenerationMethods": […]}],
"nextPageToken": …}`; New-API/One-API proxies answer the same path in Google's shape with bare
names and no methods; some proxies answer OpenAI's `{"data": [{"id": …}]}`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from core.gemini._errors import GeminiError, _error_from_wire, _one_line, _text
from core.gemini._wire import WireError
from core.providers import Provider

NOT_A_MODEL_LIST_MESSAGE = (
    "The image service answered the model list with something that is not one: check that "
    "GEMINI_BASE_URL is the API root (for Google, https://generativelanguage.googleapis.com)."
)


@dataclass(frozen=True)
class ListedModel:
    """One model a server lists. `methods` is None when the server does not say them."""

    id: str
    methods: tuple[str, ...] | None = None

    @property
    def makes_images(self) -> bool:
        """Whether this looks like a generateContent image model (Imagen models are not)."""
        name = self.id.lower()
        if self.methods is not None and "generateContent" not in self.methods:
            return False
        return "image" in name and not name.startswith("imagen")


def _not_a_list(why: str) -> GeminiError:
    return GeminiError(NOT_A_MODEL_LIST_MESSAGE, reason="malformed", status=200, detail=why)


def _entry(item: Any) -> ListedModel | None:
    if not isinstance(item, dict):
        return None
    name = item.get("name") or item.get("id")
    if not isinstance(name, str) or not name:
        return None
    methods = item.get("supportedGenerationMethods", item.get("supported_generation_methods"))
    listed = tuple(str(m) for m in methods) if isinstance(methods, list) else None
    return ListedModel(name.removeprefix("models/"), listed)


def parse_model_list(
    body: bytes | str, *, provider: Provider
) -> tuple[list[ListedModel], str | None]:
    """The models on one page and the next page's token (None on the last page)."""
    try:
        payload = json.loads(body)
    except ValueError:
        raise _not_a_list(f"a 200 answer that is not JSON: {_one_line(_text(body), 120)}") from None
    if not isinstance(payload, dict):
        raise _not_a_list(f"a 200 answer whose JSON is a {type(payload).__name__}")
    if payload.get("error") and not payload.get("models") and not payload.get("data"):
        # an error sent with 200: its own code when it has one, else a refusal
        error = WireError.model_validate(payload["error"])
        code = error.code if isinstance(error.code, int) else 0
        status = code if 400 <= code <= 599 else 400
        raise _error_from_wire(status, error, {}, model_id="", provider=provider)
    items = payload.get("models")
    if items is None:
        items = payload.get("data")
    if not isinstance(items, list):
        raise _not_a_list(f"a 200 answer without a models or data list: {sorted(payload)}")
    models = [model for model in map(_entry, items) if model is not None]
    token = payload.get("nextPageToken")
    return models, token if isinstance(token, str) and token else None
