"""The fake image API checks requests the way the real one does and answers in its shape."""

from __future__ import annotations

import asyncio
import base64
import io
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from PIL import Image

from tests.fakes.gemini import SKIP_SIGNATURE, FakeGemini, Fault, pixel_size, serve

KEY = "test-key"
FLASH = "gemini-3.1-flash-image-preview"
PRO = "gemini-3-pro-image-preview"
FLASH_25 = "gemini-2.5-flash-image"


def encoded_png() -> str:
    out = io.BytesIO()
    Image.new("RGB", (4, 4), (1, 2, 3)).save(out, format="PNG")
    return base64.b64encode(out.getvalue()).decode()


def user(*parts: dict[str, Any]) -> dict[str, Any]:
    return {"role": "user", "parts": list(parts)}


def model(*parts: dict[str, Any]) -> dict[str, Any]:
    return {"role": "model", "parts": list(parts)}


def image_part(mime: str = "image/png", **extra: Any) -> dict[str, Any]:
    return {"inlineData": {"mimeType": mime, "data": encoded_png()}, **extra}


def body(*contents: dict[str, Any], **config: Any) -> dict[str, Any]:
    return {
        "contents": list(contents),
        "generationConfig": {"responseModalities": ["IMAGE"], **config},
    }


@pytest.fixture
async def fake() -> AsyncIterator[FakeGemini]:
    async with FakeGemini(api_key=KEY) as server:
        yield server


@pytest.fixture
async def http(fake: FakeGemini) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(
        base_url=fake.base_url, headers={"Authorization": f"Bearer {KEY}"}
    ) as client:
        yield client


async def generate(
    http: httpx.AsyncClient, payload: Any, model_id: str = FLASH, **kwargs: Any
) -> httpx.Response:
    return await http.post(f"/v1beta/models/{model_id}:generateContent", json=payload, **kwargs)


def error_of(response: httpx.Response) -> dict[str, Any]:
    return response.json()["error"]


async def test_a_model_image_part_without_signature_is_refused_with_its_position(
    http: httpx.AsyncClient,
) -> None:
    payload = body(
        user({"text": "a cat"}),
        model({"text": "Here.", "thoughtSignature": SKIP_SIGNATURE}, image_part()),
        user({"text": "at night"}),
    )

    response = await generate(http, payload, PRO)

    assert response.status_code == 400
    assert error_of(response)["status"] == "INVALID_ARGUMENT"
    assert error_of(response)["message"].startswith(
        "Image part is missing a thought_signature in content position 2, part position 2"
    )


async def test_a_model_first_text_part_without_signature_is_refused(
    http: httpx.AsyncClient,
) -> None:
    payload = body(
        user({"text": "a cat"}),
        model({"text": "Here."}, image_part(thoughtSignature=SKIP_SIGNATURE)),
        user({"text": "again"}),
    )

    response = await generate(http, payload)

    assert response.status_code == 400
    assert error_of(response)["message"].startswith(
        "Text part is missing a thought_signature in content position 2, part position 1"
    )


async def test_a_signature_the_fake_never_issued_is_not_valid(http: httpx.AsyncClient) -> None:
    payload = body(
        user({"text": "a cat"}),
        model(image_part(thoughtSignature="bm90LWlzc3VlZA==")),
        user({"text": "again"}),
    )

    response = await generate(http, payload)

    assert response.status_code == 400
    assert "Thought signature is not valid" in error_of(response)["message"]


async def test_signatures_it_issued_are_accepted_back_and_2_5_needs_none(
    fake: FakeGemini, http: httpx.AsyncClient
) -> None:
    first = await generate(http, body(user({"text": "a cat"})))
    answer = first.json()["candidates"][0]["content"]
    answer["parts"] = [p for p in answer["parts"] if not p.get("thought")]

    again = await generate(http, body(user({"text": "a cat"}), answer, user({"text": "night"})))
    unsigned = await generate(
        http, body(user({"text": "a cat"}), model(image_part()), user({"text": "x"})), FLASH_25
    )

    assert again.status_code == 200
    assert unsigned.status_code == 200
    assert [r.status for r in fake.requests] == [200, 200, 200]


async def test_image_bytes_that_do_not_match_their_mime_type_are_refused(
    http: httpx.AsyncClient,
) -> None:
    response = await generate(http, body(user({"text": "edit"}, image_part("image/jpeg"))))

    assert response.status_code == 400
    assert "not image/jpeg" in error_of(response)["message"]


@pytest.mark.parametrize(
    "part",
    [
        {"inlineData": {"mimeType": "image/gif", "data": "R0lGODlh"}},
        {"inlineData": {"mimeType": "image/png", "data": "not base64!"}},
        {"text": "a", "inlineData": {"mimeType": "image/png", "data": "AAAA"}},
        {},
    ],
)
async def test_malformed_parts_are_refused(http: httpx.AsyncClient, part: dict[str, Any]) -> None:
    response = await generate(http, body(user(part)))

    assert response.status_code == 400
    assert error_of(response)["status"] == "INVALID_ARGUMENT"


async def test_8_to_1_is_refused_on_pro_and_accepted_on_flash(http: httpx.AsyncClient) -> None:
    config = {"imageConfig": {"aspectRatio": "8:1"}}

    on_pro = await generate(http, body(user({"text": "a road"}), **config), PRO)
    on_flash = await generate(http, body(user({"text": "a road"}), **config), FLASH)

    assert on_pro.status_code == 400
    assert "8:1" in error_of(on_pro)["message"]
    assert on_flash.status_code == 200


async def test_sizes_a_model_lacks_are_refused(http: httpx.AsyncClient) -> None:
    response = await generate(
        http, body(user({"text": "a"}), imageConfig={"imageSize": "2K"}), FLASH_25
    )

    assert response.status_code == 400
    assert "2K" in error_of(response)["message"]


async def test_more_images_than_the_model_takes_are_refused(http: httpx.AsyncClient) -> None:
    four = [image_part() for _ in range(4)]

    on_25 = await generate(http, body(user({"text": "mix"}, *four)), FLASH_25)
    on_flash = await generate(http, body(user({"text": "mix"}, *four)), FLASH)

    assert on_25.status_code == 400
    assert "at most 3" in error_of(on_25)["message"]
    assert on_flash.status_code == 200


@pytest.mark.parametrize(
    "payload",
    [
        {"contents": [user({"text": "a"})], "generationConfig": {"temperature": 2.5}},
        {"contents": [user({"text": "a"})], "generationConfig": {"imageConfig": {"size": "1K"}}},
        {"contents": [user({"text": "a"})], "generationConfig": {"responseModalities": ["TEXT"]}},
        {"contents": [{"role": "system", "parts": [{"text": "a"}]}]},
        {"contents": [{"role": "user", "parts": []}]},
        {"contents": []},
    ],
)
async def test_bodies_outside_the_spec_are_refused(
    http: httpx.AsyncClient, payload: dict[str, Any]
) -> None:
    response = await generate(http, payload)

    assert response.status_code == 400


async def test_unknown_field_names_are_reported_like_the_real_api(
    http: httpx.AsyncClient,
) -> None:
    response = await generate(http, {"contents": [user({"text": "a"})], "prompt": "a"})

    assert error_of(response)["message"] == (
        'Invalid JSON payload received. Unknown name "prompt": Cannot find field.'
    )


async def test_the_png_has_the_pixel_size_of_16_9_2k_on_flash(
    fake: FakeGemini, http: httpx.AsyncClient
) -> None:
    payload = body(
        user({"text": "a harbour"}), imageConfig={"aspectRatio": "16:9", "imageSize": "2K"}
    )

    response = await generate(http, payload)

    part = response.json()["candidates"][0]["content"]["parts"][-1]
    assert part["inlineData"]["mimeType"] == "image/png"
    png = base64.b64decode(part["inlineData"]["data"])
    assert Image.open(io.BytesIO(png)).size == (2752, 1536)
    assert fake.responses[-1].size == (2752, 1536)


async def test_the_answer_has_thought_text_image_signatures_and_usage(
    fake: FakeGemini, http: httpx.AsyncClient
) -> None:
    payload = body(user({"text": "a harbour"}), responseModalities=["IMAGE", "TEXT"])

    answer = (await generate(http, payload)).json()

    parts = answer["candidates"][0]["content"]["parts"]
    assert parts[0]["thought"] is True and "thoughtSignature" not in parts[0]
    assert "harbour" in parts[1]["text"]
    assert [parts[1]["thoughtSignature"], parts[2]["thoughtSignature"]] == (
        fake.responses[-1].signatures
    )
    assert answer["candidates"][0]["finishReason"] == "STOP"
    usage = answer["usageMetadata"]
    assert {"modality": "IMAGE", "tokenCount": 1120} in usage["candidatesTokensDetails"]
    assert usage["totalTokenCount"] == (
        usage["promptTokenCount"] + usage["candidatesTokenCount"] + usage["thoughtsTokenCount"]
    )
    assert answer["modelVersion"] == FLASH and answer["responseId"]


async def test_missing_key_is_401_and_wrong_key_is_400_api_key_invalid(
    fake: FakeGemini,
) -> None:
    async with httpx.AsyncClient(base_url=fake.base_url) as anonymous:
        missing = await generate(anonymous, body(user({"text": "a"})))
        wrong = await generate(
            anonymous, body(user({"text": "a"})), headers={"Authorization": "Bearer nope"}
        )

    assert (missing.status_code, error_of(missing)["status"]) == (401, "UNAUTHENTICATED")
    assert wrong.status_code == 400
    assert error_of(wrong)["details"][0]["reason"] == "API_KEY_INVALID"


async def test_without_a_configured_key_any_bearer_key_is_accepted() -> None:
    async with (
        FakeGemini(api_key=None) as fake,
        httpx.AsyncClient(base_url=fake.base_url) as http,
    ):
        response = await generate(
            http, body(user({"text": "a"})), headers={"Authorization": "Bearer anything"}
        )

    assert response.status_code == 200


async def test_unknown_models_wrong_paths_and_methods_are_404(http: httpx.AsyncClient) -> None:
    unknown = await generate(http, body(user({"text": "a"})), "gemini-0-image")
    wrong_path = await http.post("/v1/models/gemini-3-pro-image-preview:predict", json={})
    wrong_method = await http.get(f"/v1beta/models/{FLASH}:generateContent")

    assert unknown.status_code == 404
    assert "models/gemini-0-image is not found" in error_of(unknown)["message"]
    assert wrong_path.status_code == 404
    assert wrong_method.status_code == 404


async def test_faults_are_consumed_in_order_one_per_request(
    fake: FakeGemini, http: httpx.AsyncClient
) -> None:
    fake.faults += [Fault("rate_limit", retry_delay=0.2), Fault("unavailable")]

    first = await generate(http, body(user({"text": "a"})))
    second = await generate(http, body(user({"text": "a"})))
    third = await generate(http, body(user({"text": "a"})))

    assert first.status_code == 429
    assert error_of(first)["details"][0]["retryDelay"] == "0.2s"
    assert second.status_code == 503
    assert "overloaded" in error_of(second)["message"]
    assert third.status_code == 200
    assert [r.status for r in fake.requests] == [429, 503, 200]


async def test_faults_and_latency_can_be_set_over_http(
    fake: FakeGemini, http: httpx.AsyncClient
) -> None:
    added = await http.post("/_fake/faults", json={"kind": "reseller_401"})
    latency = await http.post("/_fake/latency", json={"seconds": 0.01})
    refused = await http.post("/_fake/faults", json={"kind": "gremlins"})

    response = await generate(http, body(user({"text": "a"})))

    assert (added.status_code, latency.status_code, refused.status_code) == (200, 200, 400)
    assert fake.latency == 0.01
    assert response.status_code == 401
    assert set(error_of(response)) == {"message", "type", "code"}
    assert len(fake.requests) == 1


async def test_a_dropped_connection_reaches_the_client_as_a_protocol_error(
    fake: FakeGemini, http: httpx.AsyncClient
) -> None:
    fake.faults.append(Fault("drop"))

    with pytest.raises(httpx.RemoteProtocolError):
        await generate(http, body(user({"text": "a"})))

    requests = await fake.wait_for_requests(1)
    assert requests[0].status is None


async def test_wait_for_requests_reports_how_many_arrived_when_it_times_out(
    fake: FakeGemini,
) -> None:
    with pytest.raises(TimeoutError, match="got 0 requests, not 1"):
        await fake.wait_for_requests(1, timeout=0.05)


def test_pixel_sizes_follow_the_published_tables() -> None:
    assert pixel_size(FLASH, None, None) == (1024, 1024)
    assert pixel_size(FLASH, "21:9", "4K") == (6336, 2688)
    assert pixel_size(FLASH, "1:8", "0.5K") == (176, 1408)
    assert pixel_size(FLASH, "16:9", "512") == (688, 384)
    assert pixel_size(PRO, "2:3", "2K") == (1696, 2528)
    assert pixel_size(FLASH_25, "16:9", "1K") == (1344, 768)
    assert pixel_size(FLASH_25, "2:3", None) == (832, 1248)


async def test_serve_prints_its_url_and_answers_until_cancelled(
    capsys: pytest.CaptureFixture[str],
) -> None:
    task = asyncio.create_task(serve("127.0.0.1", 0, api_key=None))
    loop = asyncio.get_running_loop()
    deadline = loop.time() + 5
    printed = ""
    while "http://" not in printed and loop.time() < deadline:
        await asyncio.sleep(0.01)
        printed += capsys.readouterr().out
    url = printed.strip().split()[-1]

    async with httpx.AsyncClient(base_url=url, headers={"Authorization": "Bearer k"}) as http:
        response = await generate(http, body(user({"text": "a"})))
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task

    assert response.status_code == 200


# ---------------------------------------------------------------- the two dialects


@pytest.fixture
async def google() -> AsyncIterator[FakeGemini]:
    async with FakeGemini(api_key=KEY, dialect="google") as server:
        yield server


@pytest.fixture
async def proxy() -> AsyncIterator[FakeGemini]:
    async with FakeGemini(api_key=KEY, dialect="proxy") as server:
        yield server


async def post(
    server: FakeGemini,
    payload: Any,
    model_id: str,
    headers: dict[str, str],
    params: dict[str, str] | None = None,
) -> httpx.Response:
    async with httpx.AsyncClient(base_url=server.base_url) as client:
        return await client.post(
            f"/v1beta/models/{model_id}:generateContent",
            json=payload,
            headers=headers,
            params=params,
        )


GOOGLE_FLASH = "gemini-3.1-flash-image"


async def test_google_takes_the_key_in_its_header_or_the_query(google: FakeGemini) -> None:
    by_header = await post(google, body(user({"text": "a"})), GOOGLE_FLASH, {"x-goog-api-key": KEY})
    by_query = await post(google, body(user({"text": "a"})), GOOGLE_FLASH, {}, {"key": KEY})

    assert (by_header.status_code, by_query.status_code) == (200, 200)


async def test_google_refuses_a_bearer_api_key_as_it_really_does(google: FakeGemini) -> None:
    response = await post(
        google, body(user({"text": "a"})), GOOGLE_FLASH, {"Authorization": f"Bearer {KEY}"}
    )

    assert response.status_code == 401
    assert error_of(response)["status"] == "UNAUTHENTICATED"
    assert "Expected OAuth 2 access token" in error_of(response)["message"]


async def test_a_proxy_wants_bearer_and_answers_in_the_openai_shape(proxy: FakeGemini) -> None:
    refused = await post(proxy, body(user({"text": "a"})), FLASH, {"x-goog-api-key": KEY})
    served = await post(proxy, body(user({"text": "a"})), FLASH, {"Authorization": f"Bearer {KEY}"})

    assert refused.status_code == 401 and set(error_of(refused)) == {"message", "type", "code"}
    assert served.status_code == 200


@pytest.mark.parametrize(
    ("model_id", "status"),
    [
        ("gemini-3.1-flash-image", 200),
        ("gemini-3-pro-image", 200),
        ("gemini-3.1-flash-image-preview", 404),
        ("gemini-3-pro-image-preview", 404),
        ("gemini-2.5-flash-image", 404),
    ],
)
async def test_google_serves_the_current_ids_only(
    google: FakeGemini, model_id: str, status: int
) -> None:
    response = await post(google, body(user({"text": "a"})), model_id, {"x-goog-api-key": KEY})

    assert response.status_code == status


@pytest.mark.parametrize(
    ("dialect", "size", "status"),
    [
        ("google", "512", 200),
        ("google", "0.5K", 400),
        ("proxy", "0.5K", 200),
        ("proxy", "512", 400),
    ],
)
async def test_each_dialect_spells_the_half_k_size_its_own_way(
    dialect: str, size: str, status: int
) -> None:
    headers = {"x-goog-api-key": KEY} if dialect == "google" else {"Authorization": f"Bearer {KEY}"}
    model_id = GOOGLE_FLASH if dialect == "google" else FLASH
    async with FakeGemini(api_key=KEY, dialect=dialect) as server:
        response = await post(
            server, body(user({"text": "a"}), imageConfig={"imageSize": size}), model_id, headers
        )
        assert response.status_code == status
        if status == 200:
            assert server.responses[-1].size == (512, 512)


async def test_google_reads_snake_case_contents_without_role_and_extra_fields(
    google: FakeGemini,
) -> None:
    payload = {
        "contents": [{"parts": [{"text": "a kite"}]}],
        "system_instruction": {"parts": [{"text": "be brief"}]},
        "tools": [],
        "safety_settings": [],
        "generation_config": {
            "response_modalities": ["TEXT", "IMAGE"],
            "candidate_count": 1,
            "image_config": {"aspect_ratio": "16:9", "image_size": "2K"},
        },
    }

    response = await post(google, payload, GOOGLE_FLASH, {"x-goog-api-key": KEY})

    assert response.status_code == 200, response.text
    assert google.responses[-1].size == (2752, 1536)


async def test_thought_parts_sent_back_are_read_and_an_empty_signature_is_none(
    google: FakeGemini,
) -> None:
    first = await post(google, body(user({"text": "a cat"})), GOOGLE_FLASH, {"x-goog-api-key": KEY})
    answered = first.json()["candidates"][0]["content"]
    turn = [user({"text": "a cat"}), answered, user({"text": "now a dog"})]
    emptied = {
        "role": "model",
        "parts": [
            {**p, "thoughtSignature": ""} if "inlineData" in p else p for p in answered["parts"]
        ],
    }

    again = await post(google, body(*turn), GOOGLE_FLASH, {"x-goog-api-key": KEY})
    unsigned = await post(
        google, body(turn[0], emptied, turn[2]), GOOGLE_FLASH, {"x-goog-api-key": KEY}
    )

    assert any(p.get("thought") for p in answered["parts"])
    assert again.status_code == 200, again.text
    assert unsigned.status_code == 400
    assert "Image part is missing a thought_signature" in error_of(unsigned)["message"]


# GET /v1beta/models


async def list_models(
    server: FakeGemini, headers: dict[str, str], params: dict[str, str] | None = None
) -> httpx.Response:
    async with httpx.AsyncClient(base_url=server.base_url) as client:
        return await client.get("/v1beta/models", headers=headers, params=params)


async def test_google_lists_its_models_in_pages_with_their_methods(google: FakeGemini) -> None:
    first = await list_models(google, {"x-goog-api-key": KEY}, {"pageSize": "3"})
    rest = await list_models(
        google, {"x-goog-api-key": KEY}, {"pageToken": first.json()["nextPageToken"]}
    )

    assert first.status_code == rest.status_code == 200
    models = first.json()["models"] + rest.json()["models"]
    assert "nextPageToken" not in rest.json()
    methods = {m["name"]: m["supportedGenerationMethods"] for m in models}
    assert "generateContent" in methods["models/gemini-3.1-flash-image"]
    assert "models/gemini-3-pro-image" in methods
    assert "models/gemini-3-pro-image-preview" not in methods  # shut down at Google
    assert methods["models/imagen-4.0-generate-001"] == ["predict"]
    assert [(r.method, r.path) for r in google.requests] == [("GET", "/v1beta/models")] * 2


async def test_listing_checks_the_key_as_generating_does(google: FakeGemini) -> None:
    bearer = await list_models(google, {"Authorization": f"Bearer {KEY}"})
    wrong = await list_models(google, {"x-goog-api-key": "wrong"})

    assert bearer.status_code == 401
    assert "Expected OAuth 2 access token" in error_of(bearer)["message"]
    assert wrong.status_code == 400 and error_of(wrong)["status"] == "INVALID_ARGUMENT"


async def test_a_proxy_lists_in_new_api_shape_or_openai_shape(proxy: FakeGemini) -> None:
    refused = await list_models(proxy, {"x-goog-api-key": KEY})
    new_api = await list_models(proxy, {"Authorization": f"Bearer {KEY}"})
    proxy.model_list_shape = "openai"
    openai = await list_models(proxy, {"Authorization": f"Bearer {KEY}"})

    assert refused.status_code == 401
    assert new_api.json()["nextPageToken"] is None
    names = [m["name"] for m in new_api.json()["models"]]
    assert FLASH in names and PRO in names and FLASH_25 in names  # bare names, no methods
    assert [m["id"] for m in openai.json()["data"]] == names


async def test_posting_to_the_model_list_is_404(http: httpx.AsyncClient) -> None:
    response = await http.post("/v1beta/models", json={})

    assert response.status_code == 404
