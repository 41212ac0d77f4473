"""The image API client: request bytes, response parsing, error mapping and retries."""

from __future__ import annotations

import base64
import io
import json
import logging
import socket
import time
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from PIL import Image

from core.gemini import (
    FINISH_ALIASES,
    FINISH_MESSAGES,
    PROMPT_BLOCK_MESSAGES,
    SKIP_SIGNATURE,
    Content,
    GeminiClient,
    GeminiError,
    GenerationBlocked,
    ImageRequest,
    InlineImage,
    Part,
    build_body,
    encode_body,
    error_from_response,
    parse_response,
)
from tests.fakes.gemini import FakeGemini, Fault

KEY = "sk-test-5ecret-Key-0123456789"
FLASH = "gemini-3.1-flash-image-preview"
PRO = "gemini-3-pro-image-preview"
FLASH_25 = "gemini-2.5-flash-image"


def png_bytes(size: tuple[int, int] = (4, 4)) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", size, (10, 20, 30)).save(out, format="PNG")
    return out.getvalue()


def jpeg_bytes() -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (4, 4), (200, 20, 30)).save(out, format="JPEG")
    return out.getvalue()


def prompt(text: str, model_id: str = FLASH, **kwargs: object) -> ImageRequest:
    return ImageRequest(model_id, (Content("user", (Part(text=text),)),), **kwargs)  # type: ignore[arg-type]


def client_for(fake: FakeGemini, key: str = KEY, **kwargs: object) -> GeminiClient:
    settings: dict[str, object] = {
        "backoff_base_seconds": 0.001,
        "backoff_cap_seconds": 0.01,
    }
    settings.update(kwargs)
    return GeminiClient(fake.base_url, key, **settings)  # type: ignore[arg-type]


@pytest.fixture
async def fake() -> AsyncIterator[FakeGemini]:
    async with FakeGemini(api_key=KEY) as server:
        yield server


@pytest.fixture
async def client(fake: FakeGemini) -> AsyncIterator[GeminiClient]:
    async with client_for(fake) as api:
        yield api


def assert_no_key(error: BaseException, key: str = KEY) -> None:
    assert isinstance(error, GeminiError)
    for shown in (str(error), repr(error), error.detail, error.message, repr(error.args)):
        assert key not in shown


# --------------------------------------------------------------------------- requests


async def test_request_body_is_sent_byte_for_byte_as_built(
    fake: FakeGemini, client: GeminiClient
) -> None:
    image = png_bytes()
    request = ImageRequest(
        FLASH,
        (
            Content(
                "user",
                (Part(text="a lighthouse at dusk"), Part(image=InlineImage("image/png", image))),
            ),
        ),
        aspect_ratio="16:9",
        image_size="1K",
        temperature=0.4,
        with_text=True,
    )
    data = base64.b64encode(image).decode()
    expected = (
        '{"contents":[{"role":"user","parts":[{"text":"a lighthouse at dusk"},'
        '{"inlineData":{"mimeType":"image/png","data":"' + data + '"}}]}],'
        '"generationConfig":{"responseModalities":["TEXT","IMAGE"],"temperature":0.4,'
        '"imageConfig":{"aspectRatio":"16:9","imageSize":"1K"}}}'
    ).encode()

    await client.generate(request)

    assert encode_body(request) == expected
    assert fake.requests[0].body == expected


async def test_request_carries_bearer_key_and_json_content_type_on_the_model_path(
    fake: FakeGemini, client: GeminiClient
) -> None:
    await client.generate(prompt("a cat"))

    sent = fake.requests[0]
    assert sent.method == "POST"
    assert sent.path == f"/v1beta/models/{FLASH}:generateContent"
    assert sent.headers["Authorization"] == f"Bearer {KEY}"
    assert sent.headers["Content-Type"] == "application/json"


def test_body_leaves_out_options_that_are_not_set() -> None:
    body = build_body(prompt("ein Hund im Schnee, 雪"))

    assert body == {
        "contents": [{"role": "user", "parts": [{"text": "ein Hund im Schnee, 雪"}]}],
        "generationConfig": {"responseModalities": ["IMAGE"]},
    }
    assert "雪".encode() in encode_body(prompt("雪"))


def test_body_carries_thought_signatures_of_model_parts() -> None:
    image = InlineImage("image/jpeg", jpeg_bytes())
    request = ImageRequest(
        PRO,
        (
            Content("user", (Part(text="a cat"),)),
            Content("model", (Part(text="Here", thought_signature="c2ln"), Part(image=image))),
            Content("user", (Part(text="at night"),)),
        ),
        image_size="2K",
    )

    model_parts = build_body(request)["contents"][1]["parts"]

    assert model_parts[0] == {"text": "Here", "thoughtSignature": "c2ln"}
    assert model_parts[1] == {
        "inlineData": {"mimeType": "image/jpeg", "data": base64.b64encode(image.data).decode()}
    }
    assert build_body(request)["generationConfig"] == {
        "responseModalities": ["IMAGE"],
        "imageConfig": {"imageSize": "2K"},
    }


# --------------------------------------------------------------------------- answers


async def test_thought_parts_are_dropped_and_signatures_kept_for_the_next_turn(
    fake: FakeGemini, client: GeminiClient
) -> None:
    first = prompt("a red fox", with_text=True)

    result = await client.generate(first)

    assert [p.text is not None for p in result.parts] == [True, False]
    assert not any("Planning" in (p.text or "") for p in result.parts)
    assert [p.thought_signature for p in result.parts] == fake.responses[-1].signatures
    assert result.images[0].mime_type == "image/png"
    assert result.images[0].data == fake.responses[-1].image
    assert result.usage.image_tokens == 1120
    assert result.usage.thoughts_tokens > 0
    assert result.finish_reason == "STOP"
    assert result.response_id == fake.responses[-1].response_id

    follow_up = ImageRequest(
        FLASH,
        (*first.contents, Content("model", result.parts), Content("user", (Part(text="snow"),))),
    )
    second = await client.generate(follow_up)
    assert len(second.images) == 1


async def test_text_only_answer_is_a_result_without_images(
    fake: FakeGemini, client: GeminiClient
) -> None:
    fake.faults.append(Fault("text_only"))

    result = await client.generate(prompt("a cat", with_text=True))

    assert result.images == []
    assert "will not draw" in result.text
    assert base64.b64decode(result.parts[0].thought_signature or "") in fake.issued_signatures


def test_parsing_reads_the_mime_type_and_ignores_unknown_fields() -> None:
    jpeg = jpeg_bytes()
    body = {
        "candidates": [
            {
                "content": {
                    "role": "model",
                    "parts": [
                        {"text": "drafting", "thought": True, "thoughtSignature": "dGg="},
                        {"text": "A barn.", "thoughtSignature": "c2lnMQ==", "newField": 1},
                        {
                            "inlineData": {
                                "mimeType": "image/jpeg",
                                "data": base64.b64encode(jpeg).decode(),
                                "displayName": "x",
                            },
                            "thoughtSignature": "c2lnMg==",
                        },
                    ],
                },
                "finishReason": "STOP",
                "safetyRatings": [],
                "avgLogprobs": -0.5,
            }
        ],
        "usageMetadata": {
            "promptTokenCount": 7,
            "candidatesTokenCount": 1293,
            "totalTokenCount": 1400,
            "thoughtsTokenCount": 100,
            "candidatesTokensDetails": [
                {"modality": "TEXT", "tokenCount": 3},
                {"modality": "IMAGE", "tokenCount": 1290},
            ],
            "trafficType": "ON_DEMAND",
        },
        "modelVersion": "gemini-2.5-flash-image",
        "responseId": "abc123",
        "createTime": "2025-01-01T00:00:00Z",
    }

    result = parse_response(json.dumps(body).encode())

    assert result.parts == (
        Part(text="A barn.", thought_signature="c2lnMQ=="),
        Part(image=InlineImage("image/jpeg", jpeg), thought_signature="c2lnMg=="),
    )
    assert result.text == "A barn."
    assert result.usage.prompt_tokens == 7
    assert result.usage.output_tokens == 1293
    assert result.usage.total_tokens == 1400
    assert result.usage.thoughts_tokens == 100
    assert result.usage.image_tokens == 1290
    assert (result.model_version, result.response_id) == ("gemini-2.5-flash-image", "abc123")


def _candidate_body(finish: str, parts: list[dict[str, object]] | None = None) -> bytes:
    candidate: dict[str, object] = {"finishReason": finish}
    if parts is not None:
        candidate["content"] = {"role": "model", "parts": parts}
    return json.dumps({"candidates": [candidate]}).encode()


@pytest.mark.parametrize("finish", sorted(FINISH_MESSAGES))
def test_each_no_image_finish_reason_has_its_own_message(finish: str) -> None:
    with pytest.raises(GenerationBlocked) as caught:
        parse_response(_candidate_body(finish, [{"text": "I cannot."}]))

    assert caught.value.block_reason == finish
    assert caught.value.message == FINISH_MESSAGES[finish]
    assert caught.value.text == "I cannot."
    assert caught.value.retryable is False


def test_block_messages_are_distinct_single_sentences() -> None:
    distinct_finishes = {k: v for k, v in FINISH_MESSAGES.items() if k not in FINISH_ALIASES}
    for table in (distinct_finishes, PROMPT_BLOCK_MESSAGES):
        messages = list(table.values())
        assert len(set(messages)) == len(messages)
        for message in messages:
            assert message.endswith(".") and "\n" not in message
            assert message.count(". ") == 0


@pytest.mark.parametrize("code", sorted(PROMPT_BLOCK_MESSAGES))
def test_blocked_prompt_names_the_block_reason(code: str) -> None:
    body = json.dumps({"promptFeedback": {"blockReason": code}}).encode()

    with pytest.raises(GenerationBlocked) as caught:
        parse_response(body)

    assert caught.value.message == PROMPT_BLOCK_MESSAGES[code]
    assert caught.value.block_reason == code


def test_empty_candidates_and_missing_content_are_blocked_with_their_own_messages() -> None:
    with pytest.raises(GenerationBlocked) as no_candidates:
        parse_response(b'{"candidates": []}')
    with pytest.raises(GenerationBlocked) as no_content:
        parse_response(_candidate_body("STOP"))

    assert "no result" in no_candidates.value.message
    assert "empty answer" in no_content.value.message


def _image_body(data: str) -> bytes:
    return _candidate_body("STOP", [{"inlineData": {"mimeType": "image/png", "data": data}}])


@pytest.mark.parametrize(
    "encode",
    [
        lambda raw: base64.b64encode(raw).decode(),
        lambda raw: base64.urlsafe_b64encode(raw).decode(),
        # wrapped at 76 characters, as MIME encoders do
        lambda raw: base64.encodebytes(raw).decode(),
    ],
    ids=["standard", "urlsafe", "wrapped"],
)
@pytest.mark.parametrize("size", [1, 2, 3, 3 * 2**20 // 4 - 1, 3 * 2**20 // 4, 2_500_001])
def test_image_data_of_any_length_and_alphabet_decodes_to_the_same_bytes(
    encode: Callable[[bytes], str], size: int
) -> None:
    # sizes around the 1 MiB slices the decoder works in, with every padding length
    raw = bytes(range(256)) * (size // 256) + bytes(range(size % 256))
    [part] = parse_response(_image_body(encode(raw))).parts
    assert part.image is not None and part.image.data == raw


@pytest.mark.parametrize(
    "body",
    [
        _image_body("QUJD" * 300_000 + "QQ"),  # over a megabyte, cut off in its last group
        _image_body("QUJD" * 300_000 + "Q@=="),
        b"<html>oops</html>",
        b"[1, 2]",
        b'{"candidates": "many"}',
        _candidate_body("STOP", [{"inlineData": {"mimeType": "image/png", "data": "%%%"}}]),
    ],
)
def test_unreadable_answers_are_malformed_and_not_retryable(body: bytes) -> None:
    with pytest.raises(GeminiError) as caught:
        parse_response(body)

    assert caught.value.reason == "malformed"
    assert caught.value.retryable is False
    assert "could not read" in caught.value.message


# --------------------------------------------------------------------------- error answers


def test_google_429_honours_retry_info_and_a_per_day_quota_is_final() -> None:
    rate = error_from_response(
        429,
        json.dumps(
            {
                "error": {
                    "code": 429,
                    "message": "Resource has been exhausted",
                    "status": "RESOURCE_EXHAUSTED",
                    "details": [
                        {"@type": "type.googleapis.com/google.rpc.RetryInfo", "retryDelay": "34s"}
                    ],
                }
            }
        ).encode(),
        {},
        model_id=FLASH,
    )
    per_day = error_from_response(
        429,
        b'{"error": {"code": 429, "status": "RESOURCE_EXHAUSTED",'
        b' "message": "Quota exceeded for requests per day per model."}}',
        {},
        model_id=FLASH,
    )

    assert (rate.reason, rate.retryable, rate.retry_after) == ("rate_limited", True, 34.0)
    assert (per_day.reason, per_day.retryable) == ("quota_exhausted", False)


def test_retry_after_header_is_used_when_the_body_names_no_delay() -> None:
    error = error_from_response(503, b"Service Unavailable", {"Retry-After": "7"}, model_id=FLASH)

    assert (error.reason, error.retryable, error.retry_after) == ("server", True, 7.0)
    assert "503" in error.detail and "Service Unavailable" in error.detail


@pytest.mark.parametrize(
    ("status", "body", "reason", "retryable"),
    [
        (502, b"<html><body><h1>502 Bad Gateway</h1></body></html>", "server", True),
        (504, b'{"error":{"code":504,"status":"DEADLINE_EXCEEDED"}}', "timeout", True),
        (500, b'{"error":{"code":500,"status":"INTERNAL","message":"x"}}', "server", True),
        (
            401,
            b'{"error":{"message":"bad token","type":"one_api_error","code":""}}',
            "bad_key",
            False,
        ),
        (
            403,
            b'{"error":{"message":"user quota is not enough","type":"new_api_error",'
            b'"code":"insufficient_user_quota"}}',
            "quota_exhausted",
            False,
        ),
        (
            400,
            b'{"error":{"code":400,"status":"INVALID_ARGUMENT","message":"API key not valid.",'
            b'"details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo",'
            b'"reason":"API_KEY_INVALID"}]}}',
            "bad_key",
            False,
        ),
        (
            403,
            b'{"error":{"code":403,"status":"PERMISSION_DENIED","message":"no"}}',
            "forbidden",
            False,
        ),
        (
            400,
            b'{"error":{"code":400,"status":"FAILED_PRECONDITION","message":"no"}}',
            "bad_request",
            False,
        ),
        (413, b"Request Entity Too Large", "bad_request", False),
    ],
)
def test_error_answers_map_to_a_reason(
    status: int, body: bytes, reason: str, retryable: bool
) -> None:
    error = error_from_response(status, body, {}, model_id=FLASH)

    assert (error.reason, error.retryable, error.status) == (reason, retryable, status)
    assert error.message.endswith(".")


def test_bad_key_message_tells_who_must_act() -> None:
    error = error_from_response(401, b"{}", {}, model_id=FLASH)

    assert error.message == (
        "The image service rejected the API key; ask whoever runs this bot to check GEMINI_API_KEY."
    )


# --------------------------------------------------------------------------- retries


@pytest.mark.parametrize("kind", ["rate_limit", "server_error", "unavailable", "drop"])
async def test_transient_failure_is_retried_then_succeeds(
    fake: FakeGemini, client: GeminiClient, kind: str
) -> None:
    fake.faults.append(Fault(kind))

    result = await client.generate(prompt("a cat"))

    assert result.attempts == 2
    assert len(result.images) == 1
    assert len(fake.requests) == 2


async def test_each_retry_is_logged_at_warning_with_its_attempt_number(
    fake: FakeGemini, client: GeminiClient, caplog: pytest.LogCaptureFixture
) -> None:
    fake.faults += [Fault("unavailable"), Fault("server_error")]

    with caplog.at_level(logging.WARNING, logger="core.gemini"):
        await client.generate(prompt("a cat"))

    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 2
    assert "attempt 1 of 4" in warnings[0] and "server" in warnings[0]
    assert "attempt 2 of 4" in warnings[1]
    assert all(KEY not in w for w in warnings)


@pytest.mark.parametrize(
    ("kind", "reason"),
    [
        ("quota_per_day", "quota_exhausted"),
        ("prompt_blocked", "blocked"),
        ("image_blocked", "blocked"),
        ("malformed", "malformed"),
        ("reseller_401", "bad_key"),
    ],
)
async def test_final_outcomes_are_not_retried(
    fake: FakeGemini, client: GeminiClient, kind: str, reason: str
) -> None:
    fake.faults.append(Fault(kind))

    with pytest.raises(GeminiError) as caught:
        await client.generate(prompt("a cat"))

    assert caught.value.reason == reason
    assert caught.value.attempts == 1
    assert len(fake.requests) == 1
    assert_no_key(caught.value)


async def test_blocked_image_is_a_generation_blocked_with_the_api_reason(
    fake: FakeGemini, client: GeminiClient
) -> None:
    fake.faults.append(Fault("image_blocked"))

    with pytest.raises(GenerationBlocked) as caught:
        await client.generate(prompt("a cat"))

    assert caught.value.block_reason == "IMAGE_SAFETY"
    assert caught.value.message == FINISH_MESSAGES["IMAGE_SAFETY"]


async def test_blocked_prompt_uses_the_safety_message(
    fake: FakeGemini, client: GeminiClient
) -> None:
    fake.faults.append(Fault("prompt_blocked"))

    with pytest.raises(GenerationBlocked) as caught:
        await client.generate(prompt("a cat"))

    assert caught.value.message == (
        "The image service refused this prompt for safety reasons; rephrase it and try again."
    )


async def test_wrong_key_is_a_final_bad_key_error_that_never_shows_the_key(
    fake: FakeGemini,
) -> None:
    wrong = "sk-wrong-9f8e7d6c5b4a"
    async with client_for(fake, key=wrong) as api:
        with pytest.raises(GeminiError) as caught:
            await api.generate(prompt("a cat"))

    assert caught.value.reason == "bad_key"
    assert caught.value.status == 400
    assert len(fake.requests) == 1
    assert_no_key(caught.value, wrong)
    assert "GEMINI_API_KEY" in caught.value.message


async def test_unknown_model_is_a_final_404_naming_the_model(
    fake: FakeGemini, client: GeminiClient
) -> None:
    with pytest.raises(GeminiError) as caught:
        await client.generate(prompt("a cat", model_id="gemini-9-ultra-image"))

    assert (caught.value.reason, caught.value.status) == ("unknown_model", 404)
    assert "gemini-9-ultra-image" in caught.value.message
    assert len(fake.requests) == 1


async def test_an_answer_slower_than_the_read_timeout_fails_after_the_allowed_attempts(
    fake: FakeGemini,
) -> None:
    fake.faults += [Fault("slow", seconds=2.0), Fault("slow", seconds=2.0)]
    started = time.monotonic()

    async with client_for(fake, timeout_seconds=0.2, max_attempts=2) as api:
        with pytest.raises(GeminiError) as caught:
            await api.generate(prompt("a cat"))

    assert caught.value.reason == "timeout"
    assert caught.value.attempts == 2
    assert "within 0.2 seconds" in caught.value.message
    assert "2 attempts" in caught.value.detail
    assert len(fake.requests) == 2
    assert time.monotonic() - started < 1.5


async def test_attempts_never_exceed_max_attempts(fake: FakeGemini) -> None:
    fake.faults += [Fault("server_error") for _ in range(5)]

    async with client_for(fake, max_attempts=3) as api:
        with pytest.raises(GeminiError) as caught:
            await api.generate(prompt("a cat"))

    assert caught.value.attempts == 3
    assert len(fake.requests) == 3
    assert len(fake.faults) == 2


async def test_retry_delay_from_the_server_is_honoured(
    fake: FakeGemini, client: GeminiClient
) -> None:
    fake.faults.append(Fault("rate_limit", retry_delay=0.3))

    result = await client.generate(prompt("a cat"))

    gap = fake.requests[1].received_at - fake.requests[0].received_at
    assert result.attempts == 2
    assert 0.3 <= gap < 1.0


async def test_a_wait_that_would_pass_the_deadline_fails_at_once(fake: FakeGemini) -> None:
    fake.faults.append(Fault("rate_limit", retry_delay=30))
    started = time.monotonic()

    async with client_for(fake, deadline_seconds=5.0) as api:
        with pytest.raises(GeminiError) as caught:
            await api.generate(prompt("a cat"))

    assert caught.value.reason == "rate_limited"
    assert caught.value.attempts == 1
    assert "deadline" in caught.value.detail
    assert time.monotonic() - started < 1.0


async def test_connection_refused_is_retried_then_reported_plainly() -> None:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    async with GeminiClient(
        f"http://127.0.0.1:{port}", KEY, max_attempts=2, backoff_base_seconds=0.001
    ) as api:
        with pytest.raises(GeminiError) as caught:
            await api.generate(prompt("a cat"))

    assert (caught.value.reason, caught.value.attempts) == ("connection", 2)
    assert "could not reach" in caught.value.message


async def test_a_key_echoed_by_the_server_is_scrubbed_from_errors_and_logs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def echo(request: httpx.Request) -> httpx.Response:
        said = f"token {request.headers['Authorization']} is over its limit"
        return httpx.Response(503, json={"error": {"message": said, "type": "x", "code": 503}})

    transport = httpx.MockTransport(echo)
    async with GeminiClient(
        "http://image.test", KEY, transport=transport, max_attempts=2, backoff_base_seconds=0.001
    ) as api:
        with caplog.at_level(logging.DEBUG), pytest.raises(GeminiError) as caught:
            await api.generate(prompt("a cat"))

    assert caught.value.attempts == 2
    assert "[redacted]" in caught.value.detail
    assert_no_key(caught.value)
    assert KEY not in caplog.text
    assert KEY not in repr(api)


async def test_history_made_elsewhere_is_accepted_with_the_skip_placeholder(
    fake: FakeGemini, client: GeminiClient
) -> None:
    image = InlineImage("image/png", png_bytes())
    request = ImageRequest(
        PRO,
        (
            Content("user", (Part(text="a cat"),)),
            Content(
                "model",
                (
                    Part(text="Here it is.", thought_signature=SKIP_SIGNATURE),
                    Part(image=image, thought_signature=SKIP_SIGNATURE),
                ),
            ),
            Content("user", (Part(text="make it night"),)),
        ),
    )

    result = await client.generate(request)

    assert len(result.images) == 1
    assert fake.requests[0].status == 200
