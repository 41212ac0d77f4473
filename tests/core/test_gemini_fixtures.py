"""Real answers of Google's API and of reseller proxies, replayed through the client: each ends
in the sentence and the retry decision a user would want (tests/fixtures/gemini/README.md)."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
from typing import Any, NamedTuple

import httpx
import pytest
from PIL import Image

from core.gemini import GeminiClient, GeminiError, ImageRequest
from core.gemini._types import Content, Part
from core.providers import PROVIDERS

FIXTURES = Path(__file__).resolve().parents[1] / "fixtures" / "gemini"
ENUM_FILES = {"finish_reasons.json", "block_reasons.json"}
MODEL = "gemini-3-pro-image"


class Expected(NamedTuple):
    provider: str  # which provider sent the request that got this answer
    reason: str  # "image" for a result, else GeminiError.reason
    retryable: bool
    says: str  # the start of the user's sentence ("" for a result)


OVERLOADED = "The image service is overloaded right now"
BAD_KEY = "The image service rejected the API key"
NO_CHANNEL = f"The image service has no channel serving `{MODEL}`"
UNREADABLE = "The image service sent an answer I could not read"
NO_RESULT = "The image service returned no result at all"

EXPECTED: dict[str, Expected] = {
    # 200 answers with an image
    "google_200_image_gemini3_pro_image_with_signatures": Expected("google", "image", False, ""),
    "adapted_200_image_snake_case": Expected("proxy", "image", False, ""),
    "adapted_200_image_empty_thought_signature": Expected("proxy", "image", False, ""),
    "adapted_200_thought_image_before_final": Expected("google", "image", False, ""),
    # 200 answers without one
    "google_200_prompt_blocked_prohibited_content": Expected(
        "google", "blocked", False, "The image service refused this prompt as prohibited content"
    ),
    "google_200_image_prompt_blocked_prohibited_content": Expected(
        "google", "blocked", False, "The image service refused this prompt as prohibited content"
    ),
    "adapted_200_candidates_null_prohibited_content": Expected(
        "proxy", "blocked", False, "The image service refused this prompt as prohibited content"
    ),
    "google_200_prompt_blocked_safety": Expected(
        "google", "blocked", False, "The image service refused this prompt for safety reasons"
    ),
    "google_200_vertex_prompt_blocked_model_armor": Expected(
        "google", "blocked", False, "The image service refused this prompt without saying why"
    ),
    "google_200_finish_other_no_content": Expected(
        "google", "blocked", False, "The image service stopped without giving a reason"
    ),
    "google_200_finish_safety_empty_content": Expected(
        "google", "blocked", False, "The image service stopped this generation for safety"
    ),
    "google_200_image_prohibited_content_vertex": Expected(
        "google", "blocked", False, "The image service withheld the picture as prohibited"
    ),
    "google_200_image_no_image": Expected(
        "google", "blocked", False, "The image service answered without making a picture"
    ),
    "google_200_image_other_finish_message": Expected(
        "google", "blocked", False, "The image service could not make a picture this time"
    ),
    "proxy_apiyi_200_image_safety_parts_null": Expected(
        "proxy", "blocked", False, "The image service made a picture but withheld it"
    ),
    "google_200_recitation_no_content": Expected(
        "google", "blocked", False, "The image service withheld the answer because it copied"
    ),
    "google_200_max_tokens_thinking_no_parts": Expected(
        "google", "blocked", False, "The image service ran out of room"
    ),
    "google_200_max_tokens_partial_text": Expected(
        "google", "blocked", False, "The image service ran out of room"
    ),
    "google_200_vertex_unexpected_tool_call": Expected(
        "google", "blocked", False, "The image service tripped over its own answer"
    ),
    # a text-only STOP is a result: the service tells the user that no image came
    "google_200_thought_part_and_long_signature": Expected("google", "text", False, ""),
    "google_200_stream_chunk_empty_text_with_signature": Expected(
        "google", "blocked", False, "The image service returned an empty answer"
    ),
    "google_200_empty_body": Expected(
        "proxy", "malformed", False, "The image service sent an empty answer"
    ),
    "google_sse_200_midstream_error": Expected("proxy", "malformed", False, UNREADABLE),
    "adapted_200_error_envelope_503": Expected("proxy", "server", True, OVERLOADED),
    # chat-completions answers from a proxy pointed at the wrong endpoint: no candidates
    "google_openai_compat_200_thought_signature_snake_case": Expected(
        "proxy", "blocked", False, NO_RESULT
    ),
    "proxy_openai_200_malformed_function_call_image": Expected(
        "proxy", "blocked", False, NO_RESULT
    ),
    # Google's errors
    "google_400_api_key_invalid": Expected("google", "bad_key", False, BAD_KEY),
    "google_400_image_part_missing_thought_signature": Expected(
        "google", "bad_request", False, "The image service refused this thread's history"
    ),
    "google_400_function_call_missing_thought_signature": Expected(
        "google", "bad_request", False, "The image service refused this thread's history"
    ),
    "google_400_thinking_level_unsupported": Expected(
        "google", "bad_request", False, "The image service refused the request: Thinking level"
    ),
    # what Google answers a key sent as Bearer: the sentence names GEMINI_PROVIDER
    "google_401_expected_oauth2": Expected(
        "proxy", "wrong_provider", False, "Google's Gemini API wants the key in an x-goog-api-key"
    ),
    "google_401_access_token_type_unsupported": Expected(
        "proxy", "wrong_provider", False, "Google's Gemini API wants the key in an x-goog-api-key"
    ),
    "google_403_unregistered_callers": Expected("google", "bad_key", False, BAD_KEY),
    "google_403_key_leaked": Expected(
        "google", "bad_key", False, "The image service blocked this API key because it was"
    ),
    "google_403_api_key_service_blocked": Expected(
        "google", "forbidden", False, "The image service refused access with this API key"
    ),
    "google_404_model_not_found_v1beta": Expected(
        "google", "unknown_model", False, f"The image service does not know the model `{MODEL}`"
    ),
    "google_404_model_not_found_recorded": Expected(
        "google", "unknown_model", False, f"The image service does not know the model `{MODEL}`"
    ),
    "google_429_retryinfo_per_minute": Expected(
        "google", "rate_limited", True, "The image service is getting too many requests"
    ),
    "google_429_no_details": Expected(
        "google", "rate_limited", True, "The image service is getting too many requests"
    ),
    "google_429_per_day": Expected(
        "google", "quota_exhausted", False, "The image service's quota for this API key is used"
    ),
    "google_429_day_and_minute_limit0": Expected(
        "google", "quota_exhausted", False, "This API key's free tier has no quota for this model"
    ),
    "google_500_internal": Expected(
        "google", "server", True, "The image service had an internal problem"
    ),
    "google_503_overloaded": Expected("google", "server", True, OVERLOADED),
    "google_503_high_demand": Expected(
        "google", "server", True, "The image service is unavailable right now"
    ),
    "adapted_504_deadline_exceeded": Expected(
        "google", "timeout", True, "The image service (or a proxy in front of it) gave up"
    ),
    # proxies and the pages in front of them
    "proxy_new_api_401_invalid_token": Expected("proxy", "bad_key", False, BAD_KEY),
    "proxy_new_api_403_insufficient_user_quota_image": Expected(
        "proxy", "quota_exhausted", False, "The image service account has run out of credit"
    ),
    # no channel for the model: a setup error, never retried, never "overloaded"
    "proxy_new_api_503_model_not_found": Expected("proxy", "unknown_model", False, NO_CHANNEL),
    "proxy_new_api_503_no_available_channels_en": Expected(
        "proxy", "unknown_model", False, NO_CHANNEL
    ),
    "proxy_one_api_503_no_available_channel": Expected("proxy", "unknown_model", False, NO_CHANNEL),
    "proxy_rix_api_429_upstream_saturated": Expected(
        "proxy", "rate_limited", True, "The image service is getting too many requests"
    ),
    "proxy_new_api_524_bad_response_status_code": Expected(
        "proxy", "timeout", True, "The image service (or a proxy in front of it) gave up"
    ),
    "proxy_gemini_balance_500_http_error": Expected(
        "proxy", "server", True, "The image service had an internal problem"
    ),
    "nginx_502_bad_gateway": Expected(
        "proxy", "server", True, "The proxy in front of the image service could not get"
    ),
    "nginx_504_gateway_timeout": Expected(
        "proxy", "timeout", True, "The image service (or a proxy in front of it) gave up"
    ),
    "cloudflare_524_timeout": Expected(
        "proxy", "timeout", True, "The image service (or a proxy in front of it) gave up"
    ),
}


def small_png() -> str:
    out = io.BytesIO()
    Image.new("RGB", (8, 8), (10, 120, 200)).save(out, format="PNG")
    return base64.b64encode(out.getvalue()).decode()


def fixture_files() -> list[Path]:
    return sorted(p for p in FIXTURES.glob("*.json") if p.name not in ENUM_FILES)


def load(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / f"{name}.json").read_text("utf-8"))


def wire_body(fixture: dict[str, Any]) -> bytes:
    body = fixture["body"]
    text = body if isinstance(body, str) else json.dumps(body)
    return text.replace("<IMAGE_BASE64>", small_png()).replace("<DRAFT_BASE64>", small_png())


def test_every_fixture_names_its_public_source_and_has_an_expectation() -> None:
    names = {p.stem for p in fixture_files()}
    for path in fixture_files():
        fixture = json.loads(path.read_text("utf-8"))
        assert fixture["source"].startswith("https://"), path.name
        assert fixture["note"] and isinstance(fixture["status"], int), path.name
    assert names == set(EXPECTED), "each fixture needs a row in EXPECTED, and each row a file"


@pytest.mark.parametrize("name", sorted(EXPECTED))
async def test_a_real_answer_ends_in_the_right_sentence_and_retry_decision(name: str) -> None:
    fixture, expected = load(name), EXPECTED[name]
    sent: list[httpx.Request] = []

    def answer(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        return httpx.Response(
            fixture["status"], headers=fixture.get("headers", {}), content=wire_body(fixture)
        )

    client = GeminiClient(
        "https://api.example.com",
        "key-123",
        provider=PROVIDERS[expected.provider],  # type: ignore[index]
        max_attempts=1,
        transport=httpx.MockTransport(answer),
    )
    request = ImageRequest(MODEL, (Content("user", (Part(text="a fox"),)),))
    async with client:
        if expected.reason in ("image", "text"):
            result = await client.generate(request)
            assert bool(result.images) == (expected.reason == "image")
            assert all(p.image is None or p.image.data.startswith(b"\x89PNG") for p in result.parts)
            return
        with pytest.raises(GeminiError) as caught:
            await client.generate(request)

    error = caught.value
    assert (error.reason, error.retryable) == (expected.reason, expected.retryable)
    assert error.message.startswith(expected.says), error.message
    assert error.message.endswith(".") and "\n" not in error.message
    assert "key-123" not in error.message + error.detail
    assert len(sent) == 1


async def test_a_retry_info_delay_is_honoured_and_a_per_day_quota_is_final() -> None:
    per_minute = load("google_429_retryinfo_per_minute")
    per_day = load("google_429_per_day")

    async def replay(fixture: dict[str, Any]) -> GeminiError:
        transport = httpx.MockTransport(
            lambda _r: httpx.Response(fixture["status"], content=wire_body(fixture))
        )
        async with GeminiClient(
            "https://api.example.com", "k", max_attempts=1, transport=transport
        ) as client:
            with pytest.raises(GeminiError) as caught:
                await client.generate(ImageRequest(MODEL, (Content("user", (Part(text="a"),)),)))
        return caught.value

    assert (await replay(per_minute)).retry_after == 26.0
    assert (await replay(per_day)).retryable is False


def test_thought_parts_are_dropped_and_signatures_kept_as_received() -> None:
    from core.gemini import parse_response

    fixture = load("adapted_200_thought_image_before_final")
    result = parse_response(wire_body(fixture))
    original = load("google_200_image_gemini3_pro_image_with_signatures")
    kept = [p["thoughtSignature"] for p in original["body"]["candidates"][0]["content"]["parts"]]

    assert len(result.images) == 1
    assert [p.thought_signature for p in result.parts] == kept
