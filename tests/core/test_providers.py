"""Google's Gemini API and Bearer-key proxies: what each is sent, and what each answer means."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path

import pytest

from core.config import load_settings
from core.errors import UserFacingError
from core.gemini import GeminiClient, ImageRequest
from core.gemini._types import Content, Part
from core.jobs import Outcome
from core.providers import PROVIDERS, choose_provider
from tests.conftest import API_KEY, make_settings
from tests.core.service_harness import RecordingAdapter, request, running
from tests.fakes.gemini import FakeGemini


@pytest.mark.parametrize(
    ("setting", "url", "chosen"),
    [
        ("auto", "https://generativelanguage.googleapis.com", "google"),
        ("auto", "https://GENERATIVELANGUAGE.googleapis.com:443/", "google"),
        ("auto", "https://googleapis.com", "google"),
        ("auto", "https://api.example.com", "proxy"),
        ("auto", "https://googleapis.com.evil.example", "proxy"),
        ("auto", "https://notgoogleapis.com", "proxy"),
        ("auto", "http://127.0.0.1:8765", "proxy"),
        ("google", "http://127.0.0.1:8765", "google"),
        ("proxy", "https://generativelanguage.googleapis.com", "proxy"),
    ],
)
def test_auto_picks_the_provider_by_host(setting: str, url: str, chosen: str) -> None:
    assert choose_provider(setting, url).name == chosen  # type: ignore[arg-type]


async def one_outcome(
    tmp_path: Path, text: str, *, dialect: str = "any", **settings: str
) -> tuple[Outcome, FakeGemini]:
    """One request through the service against a fake of `dialect`, and its outcome."""
    adapter = RecordingAdapter()
    async with FakeGemini(api_key=API_KEY, dialect=dialect) as fake:
        base_url = settings.pop("GEMINI_BASE_URL", "").replace("{fake}", fake.base_url)
        extra = {"GEMINI_BASE_URL": base_url} if base_url else {}
        async with running(make_settings(tmp_path, fake, **settings, **extra), adapter) as service:
            submitted = await service.submit(request(text, "k1"))
            outcome = await adapter.wait_for(submitted.job.id)
    return outcome, fake


@pytest.mark.parametrize(
    ("provider", "dialect", "wire_id", "half_k"),
    [
        ("google", "google", "gemini-3.1-flash-image", "512"),
        ("proxy", "proxy", "gemini-3.1-flash-image-preview", "0.5K"),
    ],
)
async def test_each_provider_gets_its_own_header_size_and_model_id(
    tmp_path: Path, provider: str, dialect: str, wire_id: str, half_k: str
) -> None:
    adapter = RecordingAdapter()
    async with FakeGemini(api_key=API_KEY, dialect=dialect) as fake:
        settings = make_settings(tmp_path, fake, GEMINI_PROVIDER=provider)
        async with running(settings, adapter) as service:
            small = await service.submit(request("a fox --size 0.5K --model flash", "k1"))
            # the preview id is a name for the same model, sent as the provider wants it
            named = await service.submit(
                request("a fox --model gemini-3.1-flash-image-preview", "k2")
            )
            small_outcome = await adapter.wait_for(small.job.id)
            named_outcome = await adapter.wait_for(named.job.id)

    assert small_outcome.error is None and named_outcome.error is None
    assert small_outcome.images[0].width == 512
    for sent in fake.requests:
        headers = {k.lower(): v for k, v in sent.headers.items()}
        if provider == "google":
            assert headers["x-goog-api-key"] == API_KEY and "authorization" not in headers
        else:
            assert headers["authorization"] == f"Bearer {API_KEY}"
            assert "x-goog-api-key" not in headers
        assert sent.path == f"/v1beta/models/{wire_id}:generateContent"
    assert fake.requests[0].json["generationConfig"]["imageConfig"]["imageSize"] == half_k


async def test_a_bearer_key_sent_to_google_says_to_set_the_provider(tmp_path: Path) -> None:
    outcome, fake = await one_outcome(
        tmp_path, "a fox --model flash", dialect="google", GEMINI_PROVIDER="proxy"
    )

    assert outcome.error is not None
    assert "GEMINI_PROVIDER=google" in outcome.error and "x-goog-api-key" in outcome.error
    assert len(fake.requests) == 1, "a wrong header is not retried"


async def test_the_google_header_refused_by_a_proxy_says_to_set_the_provider(
    tmp_path: Path,
) -> None:
    outcome, fake = await one_outcome(tmp_path, "a fox", dialect="proxy", GEMINI_PROVIDER="google")

    assert outcome.error is not None and "GEMINI_PROVIDER=proxy" in outcome.error
    assert len(fake.requests) == 1


@pytest.mark.parametrize("name", ["2.5-flash", "gemini-2.5-flash-image", "nano-banana"])
async def test_a_model_google_shut_down_is_refused_naming_its_successor(
    tmp_path: Path, name: str
) -> None:
    async with FakeGemini(api_key=API_KEY, dialect="google") as fake:
        settings = make_settings(tmp_path, fake, GEMINI_PROVIDER="google")
        async with running(settings, RecordingAdapter()) as service:
            with pytest.raises(UserFacingError) as caught:
                await service.submit(request(f"a fox --model {name}", "k1"))
            offered = service.catalog.describe_choices()

    assert caught.value.message == (
        "Gemini 2.5 Flash Image was shut down by Google's Gemini API on 2026-10-02: use "
        "`--model flash` instead."
    )
    assert fake.requests == [] and "2.5" not in offered


def test_a_default_model_google_shut_down_stops_start_up_with_the_fix(tmp_path: Path) -> None:
    from core.config import ConfigError
    from core.runtime import catalog_from

    settings = load_settings(
        _env_file=None, GEMINI_PROVIDER="google", GEMINI_MODEL="gemini-2.5-flash-image"
    )
    with pytest.raises(ConfigError, match=r"GEMINI_MODEL: Gemini 2\.5 Flash Image was shut down"):
        catalog_from(settings)


def test_the_404_for_a_retired_id_names_its_successor() -> None:
    from core.gemini import error_from_response

    body = (
        b'{"error":{"code":404,"status":"NOT_FOUND","message":"models/gemini-2.5-flash-image '
        b'is not found for API version v1beta, or is not supported for generateContent."}}'
    )
    error = error_from_response(
        404, body, {}, model_id="gemini-2.5-flash-image", provider=PROVIDERS["google"]
    )
    assert error.message.startswith(
        "Google's Gemini API shut the model `gemini-2.5-flash-image` down on 2026-10-02: use "
        "`--model gemini-3.1-flash-image` instead"
    )


async def test_a_proxy_still_serving_a_retired_model_keeps_it_usable(tmp_path: Path) -> None:
    outcome, fake = await one_outcome(
        tmp_path, "a fox --model 2.5-flash", dialect="proxy", GEMINI_PROVIDER="proxy"
    )

    assert outcome.error is None and len(outcome.images) == 1
    assert fake.requests[0].path == "/v1beta/models/gemini-2.5-flash-image:generateContent"


@pytest.mark.parametrize("suffix", ["/v1beta", "/v1beta/", "/v1beta/models", "/"])
async def test_a_base_url_pasted_with_its_version_still_works(tmp_path: Path, suffix: str) -> None:
    outcome, fake = await one_outcome(tmp_path, "a fox", GEMINI_BASE_URL="{fake}" + suffix)

    assert outcome.error is None
    assert fake.requests[0].path.startswith("/v1beta/models/")


async def test_a_wrong_root_gets_a_sentence_naming_the_setting(tmp_path: Path) -> None:
    outcome, _ = await one_outcome(tmp_path, "a fox", GEMINI_BASE_URL="{fake}/v1")

    assert outcome.error is not None and "GEMINI_BASE_URL" in outcome.error


async def test_a_hung_api_ends_at_the_deadline_and_says_how_long_was_waited() -> None:
    async with FakeGemini(api_key=API_KEY, latency=30.0) as fake:
        async with GeminiClient(
            fake.base_url, API_KEY, timeout_seconds=20.0, deadline_seconds=0.5
        ) as client:
            started = asyncio.get_running_loop().time()
            with pytest.raises(Exception) as caught:
                await client.generate(
                    ImageRequest("gemini-3.1-flash-image", (Content("user", (Part(text="a"),)),))
                )
            waited = asyncio.get_running_loop().time() - started

    assert waited < 5.0
    assert caught.value.message == (  # type: ignore[attr-defined]
        "The image service made no picture in 1 second (1 try), so I stopped waiting; try "
        "again later, perhaps at a smaller size."
    )
    assert caught.value.retryable is False  # type: ignore[attr-defined]


def test_the_default_deadline_says_so_within_five_minutes() -> None:
    settings = load_settings(_env_file=None)
    assert settings.gemini_retry_deadline_seconds <= 300
    assert settings.gemini_timeout_seconds >= 150, "a 4K image through a slow proxy takes ~130 s"


async def test_start_up_logs_provider_header_kind_and_model_but_never_the_key(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="core.runtime")
    async with FakeGemini(api_key=API_KEY) as fake:
        settings = make_settings(tmp_path, fake, GEMINI_PROVIDER="google", GEMINI_MODEL="pro")
        async with running(settings, RecordingAdapter()):
            pass

    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "provider google" in logged and "key sent in x-goog-api-key" in logged
    assert "default model gemini-3-pro-image" in logged
    assert API_KEY not in logged


def test_providers_are_data() -> None:
    google, proxy = PROVIDERS["google"], PROVIDERS["proxy"]
    assert google.auth_headers("k") == {"x-goog-api-key": "k"}
    assert proxy.auth_headers("k") == {"Authorization": "Bearer k"}
    assert (google.wire_size("0.5K"), proxy.wire_size("0.5K")) == ("512", "0.5K")
    assert json.dumps(google.wire_size("4K")) == '"4K"'


def test_a_proxy_404_for_a_wrong_root_names_the_base_url_setting() -> None:
    from core.gemini import error_from_response

    body = (
        b'{"error":{"message":"Invalid URL (POST /v1/v1beta/models/gemini-3-pro-image-preview'
        b':generateContent)","type":"invalid_request_error","code":""}}'
    )
    error = error_from_response(
        404, body, {}, model_id="gemini-3-pro-image-preview", provider=PROVIDERS["proxy"]
    )
    assert error.reason == "bad_url" and "GEMINI_BASE_URL" in error.message


def test_an_error_in_a_200_without_a_status_code_is_a_refusal_not_retried() -> None:
    from core.gemini import GeminiError, parse_response

    body = '{"error":{"message":"Your prompt was flagged","code":"content_policy_violation"}}'
    with pytest.raises(GeminiError) as caught:
        parse_response(body, model_id="m")

    assert caught.value.retryable is False
    assert caught.value.message == "The image service refused the request: Your prompt was flagged."
