"""Reading the model list (GET /v1beta/models) in each shape servers send."""

from __future__ import annotations

import json

import pytest

from core.gemini import GeminiError, ListedModel, parse_model_list
from core.providers import PROVIDERS

PROXY = PROVIDERS["proxy"]


def test_google_shape_drops_the_models_prefix_and_keeps_methods_and_token() -> None:
    body = {
        "models": [
            {
                "name": "models/gemini-3-pro-image",
                "supportedGenerationMethods": ["generateContent", "countTokens"],
            },
            {"name": "models/imagen-4.0-generate-001", "supportedGenerationMethods": ["predict"]},
        ],
        "nextPageToken": "abc",
    }

    models, token = parse_model_list(json.dumps(body), provider=PROVIDERS["google"])

    assert models == [
        ListedModel("gemini-3-pro-image", ("generateContent", "countTokens")),
        ListedModel("imagen-4.0-generate-001", ("predict",)),
    ]
    assert token == "abc"
    assert [m.makes_images for m in models] == [True, False]


def test_new_api_and_openai_shapes_give_bare_ids() -> None:
    new_api = {"models": [{"name": "gemini-3-pro-image-preview"}], "nextPageToken": None}
    openai = {"object": "list", "data": [{"id": "gemini-2.5-flash-image"}, {"id": "gpt-4o"}]}

    assert parse_model_list(json.dumps(new_api), provider=PROXY) == (
        [ListedModel("gemini-3-pro-image-preview")],
        None,
    )
    models, _ = parse_model_list(json.dumps(openai), provider=PROXY)
    assert [(m.id, m.makes_images) for m in models] == [
        ("gemini-2.5-flash-image", True),
        ("gpt-4o", False),
    ]


def test_an_error_inside_a_200_is_the_error_it_says() -> None:
    body = {"error": {"message": "Invalid token", "type": "new_api_error", "code": 401}}

    with pytest.raises(GeminiError) as raised:
        parse_model_list(json.dumps(body), provider=PROXY)

    assert raised.value.reason == "bad_key"


@pytest.mark.parametrize("body", ["<html>login</html>", "[]", '{"object": "list"}'])
def test_anything_else_names_the_api_root(body: str) -> None:
    with pytest.raises(GeminiError) as raised:
        parse_model_list(body, provider=PROXY)

    assert raised.value.reason == "malformed"
    assert "GEMINI_BASE_URL is the API root" in raised.value.message
