"""Google's own SDK (google-genai) as the oracle: it must work against `imagebot fake-gemini`,
and the bodies imagebot sends must be what the SDK itself sends for the same request."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import os
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from google import genai
from google.genai import types
from PIL import Image

from core import describe
from core.gemini import Content, GeminiClient, ImageRequest, InlineImage, Part
from core.providers import PROVIDERS
from tests.fakes.gemini import FakeGemini, camel_keys

REPO = Path(__file__).resolve().parents[2]
KEY = "sdk-test-key"
FLASH = "gemini-3.1-flash-image"


def png(width: int = 64, height: int = 48) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 30, 60)).save(out, format="PNG")
    return out.getvalue()


def image_config(**values: str) -> types.GenerateContentConfig:
    return types.GenerateContentConfig(
        response_modalities=["IMAGE"], image_config=types.ImageConfig(**values)
    )


def images_in(response: types.GenerateContentResponse) -> list[Image.Image]:
    parts = response.candidates[0].content.parts if response.candidates else []
    return [
        Image.open(io.BytesIO(p.inline_data.data))
        for p in parts or []
        if p.inline_data is not None and p.inline_data.data and not p.thought
    ]


@pytest.fixture
async def fake_gemini_command() -> AsyncIterator[str]:
    """`imagebot fake-gemini` in its own process, answering as Google does."""
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bots.cli",
        "fake-gemini",
        "--port",
        "0",
        "--dialect",
        "google",
        cwd=str(REPO),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert process.stdout is not None
        line = await asyncio.wait_for(process.stdout.readline(), timeout=30)
        match = re.search(r"(http://\S+)", line.decode())
        assert match, f"fake-gemini printed {line!r}"
        yield match.group(1)
    finally:
        process.terminate()
        await asyncio.wait_for(process.wait(), timeout=10)


async def test_the_sdk_makes_an_image_text_only_with_a_reference_and_in_a_chat(
    fake_gemini_command: str,
) -> None:
    # any key: the command's fake checks that one is sent, the Google way
    client = genai.Client(
        api_key=KEY,
        http_options=types.HttpOptions(base_url=fake_gemini_command, api_version="v1beta"),
    )
    models = client.aio.models

    plain = await models.generate_content(
        model=FLASH,
        contents="a lighthouse at dusk",
        config=image_config(aspect_ratio="16:9", image_size="512"),
    )
    edited = await models.generate_content(
        model="gemini-3-pro-image",
        contents=[types.Part.from_bytes(data=png(), mime_type="image/png"), "make it blue"],
        config=image_config(image_size="2K"),
    )
    chat = client.aio.chats.create(model=FLASH, config=image_config())
    first = await chat.send_message("a red kite")
    second = await chat.send_message("now make the sky stormy")

    assert [i.size for i in images_in(plain)] == [(688, 384)]
    assert [i.size for i in images_in(edited)] == [(2048, 2048)]
    assert [i.size for i in images_in(first)] == [(1024, 1024)]
    assert [i.size for i in images_in(second)] == [(1024, 1024)]
    # the second turn carried the first back, signatures and all, and the fake accepted it
    assert len(chat.get_history()) == 4
    await client.aio.aclose()


async def test_imagebot_sends_what_the_sdk_sends_for_the_same_request() -> None:
    reference = png()
    async with FakeGemini(api_key=None, dialect="google") as fake:
        async with GeminiClient(fake.base_url, KEY, provider=PROVIDERS["google"]) as ours:
            first = await ours.generate(
                ImageRequest(
                    FLASH,
                    (
                        Content(
                            "user",
                            (Part(text="a cat"), Part(image=InlineImage("image/png", reference))),
                        ),
                    ),
                    image_size="512",
                )
            )
            model_turn = Content("model", first.parts)
            await ours.generate(
                ImageRequest(
                    FLASH,
                    (
                        Content(
                            "user",
                            (Part(text="a cat"), Part(image=InlineImage("image/png", reference))),
                        ),
                        model_turn,
                        Content("user", (Part(text="now a dog"),)),
                    ),
                    aspect_ratio="16:9",
                    image_size="2K",
                    temperature=0.4,
                    with_text=True,
                )
            )
        sent = fake.requests[-1]
        body = json.loads(sent.body)
        # every field has a name and a type the SDK knows (its models forbid extra fields)
        contents = [types.Content.model_validate_json(json.dumps(c)) for c in body["contents"]]
        config = types.GenerateContentConfig.model_validate_json(
            json.dumps(body["generationConfig"])
        )
        client = genai.Client(
            api_key=KEY,
            http_options=types.HttpOptions(base_url=fake.base_url, api_version="v1beta"),
        )
        await client.aio.models.generate_content(model=FLASH, contents=contents, config=config)
        await client.aio.aclose()
        sdk = fake.requests[-1]

    assert sent.headers["x-goog-api-key"] == KEY and "Authorization" not in sent.headers
    assert sdk.headers["x-goog-api-key"] == KEY
    # the SDK spells inlineData's mime_type in snake_case, which Google reads as well
    assert same_bytes(body) == same_bytes(camel_keys(json.loads(sdk.body)))


def same_bytes(value: Any) -> Any:
    """The body with base64 fields as bytes: the SDK re-encodes them URL-safe, as Google allows."""
    if isinstance(value, dict):
        return {
            k: base64.urlsafe_b64decode(v) if k in {"data", "thoughtSignature"} else same_bytes(v)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [same_bytes(v) for v in value]
    return value


@pytest.mark.parametrize("name", [r.value for r in types.FinishReason if r.value != "STOP"])
def test_every_finish_reason_of_the_sdk_has_a_sentence(name: str) -> None:
    from core.gemini import FINISH_MESSAGES

    assert FINISH_MESSAGES[name].endswith(".")


@pytest.mark.parametrize("name", [r.value for r in types.BlockedReason])
def test_every_block_reason_of_the_sdk_is_answered(name: str) -> None:
    from core.gemini import GenerationBlocked, parse_response

    with pytest.raises(GenerationBlocked) as caught:
        parse_response(json.dumps({"promptFeedback": {"blockReason": name}}))

    assert caught.value.message.startswith("The image service refused")


async def test_describe_sends_what_the_sdk_sends_for_a_schema_of_prompts() -> None:
    """Describe's question to a text model, against the SDK's own spelling of the same one:
    an image and the instruction, JSON of an array of at most four strings."""
    photo = png()
    model = "gemini-3.5-flash-lite"
    async with FakeGemini(api_key=None, dialect="google") as fake:
        async with GeminiClient(fake.base_url, KEY, provider=PROVIDERS["google"]) as ours:
            answer = await ours.generate(
                ImageRequest(
                    model,
                    (
                        Content(
                            "user",
                            (
                                Part(image=InlineImage("image/png", photo)),
                                Part(text=describe.INSTRUCTION),
                            ),
                        ),
                    ),
                    answer_schema=describe.ANSWER_SCHEMA,
                )
            )
        sent = json.loads(fake.requests[-1].body)
        client = genai.Client(
            api_key=KEY,
            http_options=types.HttpOptions(base_url=fake.base_url, api_version="v1beta"),
        )
        reply = await client.aio.models.generate_content(
            model=model,
            contents=[
                types.Part.from_bytes(data=photo, mime_type="image/png"),
                describe.INSTRUCTION,
            ],
            config=types.GenerateContentConfig(
                response_mime_type="application/json",
                response_schema=types.Schema(
                    type=types.Type.ARRAY, items=types.Schema(type=types.Type.STRING), max_items=4
                ),
                max_output_tokens=2048,
            ),
        )
        await client.aio.aclose()
        sdk = json.loads(fake.requests[-1].body)

    assert same_bytes(sent) == same_bytes(camel_keys(sdk))
    # the fake's answer reads the same through the SDK and through imagebot
    assert json.loads(reply.text or "") == describe.suggestions(answer.parts[0].text or "")
