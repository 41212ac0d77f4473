"""Describe: a text model reads one image and suggests prompts; nothing is made or stored."""

from __future__ import annotations

import base64
import io
from pathlib import Path

import pytest
from PIL import Image

from core import describe, wording
from core.errors import UserFacingError
from core.jobs import Attachment
from tests.conftest import make_settings
from tests.core.service_harness import RecordingAdapter, request, running
from tests.fakes.gemini import FakeGemini, Fault


def _png(width: int, height: int, colour: str) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), colour).save(out, "PNG")
    return out.getvalue()


async def test_describe_sends_the_image_to_the_text_model_and_returns_its_prompts(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    photo = _png(300, 200, "blue")
    async with running(make_settings(tmp_path, fake_gemini), RecordingAdapter()) as service:
        found = await service.describe(
            request("", "d1", kind="describe", attachments=(Attachment("sea.png", photo),))
        )
        counts = await service.store.counts()

    assert found == [
        "a wide picture, mostly blue, as a photograph",
        "a wide picture, mostly blue, as a watercolour",
        "a wide picture, mostly blue, as a pencil sketch",
        "a wide picture, mostly blue, in 3D",
    ]
    [call] = fake_gemini.requests
    assert call.path == "/v1beta/models/gemini-3.5-flash-lite:generateContent"
    assert call.json == {
        "contents": [
            {
                "role": "user",
                "parts": [
                    {
                        "inlineData": {
                            "mimeType": "image/png",
                            "data": base64.b64encode(photo).decode(),
                        }
                    },
                    {"text": describe.INSTRUCTION},
                ],
            }
        ],
        "generationConfig": {
            "responseMimeType": "application/json",
            "responseSchema": {"type": "ARRAY", "items": {"type": "STRING"}, "maxItems": 4},
            "maxOutputTokens": 2048,
        },
    }
    assert counts["jobs"] == 0  # words only: no job, no turn


@pytest.mark.parametrize("files", [0, 2])
async def test_describe_takes_exactly_one_image(
    tmp_path: Path, fake_gemini: FakeGemini, files: int
) -> None:
    attachments = tuple(Attachment(f"{n}.png", _png(20, 20, "red")) for n in range(files))
    async with running(make_settings(tmp_path, fake_gemini), RecordingAdapter()) as service:
        with pytest.raises(UserFacingError) as caught:
            await service.describe(request("", "d1", kind="describe", attachments=attachments))
    assert caught.value.message == wording.DESCRIBE_NEEDS_ONE
    assert not fake_gemini.requests


async def test_describe_retries_a_server_error_and_explains_a_refusal(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    photo = (Attachment("a.png", _png(20, 20, "red")),)
    fake_gemini.faults.extend([Fault("server_error"), Fault("reseller_401")])
    async with running(make_settings(tmp_path, fake_gemini), RecordingAdapter()) as service:
        with pytest.raises(UserFacingError) as caught:
            await service.describe(request("", "d1", kind="describe", attachments=photo))
        found = await service.describe(request("", "d2", kind="describe", attachments=photo))
    assert "API key" in caught.value.message
    assert len(found) == 4 and "mostly red" in found[0]


def test_suggestions_read_json_fenced_json_an_object_or_plain_lines() -> None:
    assert describe.suggestions('["a fox", "a fox", " ", "a hen"]', 100) == ["a fox", "a hen"]
    assert describe.suggestions('```json\n["a  fox\\nat dawn"]\n```', 100) == ["a fox at dawn"]
    assert describe.suggestions('{"prompts": ["one", "two"]}', 100) == ["one", "two"]
    assert describe.suggestions("1. a fox\n2) a hen\n- an owl\n\n", 100) == [
        "a fox",
        "a hen",
        "an owl",
    ]
    assert describe.suggestions('["abcdef"]', 3) == ["abc"]
    assert describe.suggestions(str([f"p{n}" for n in range(9)]).replace("'", '"'), 9) == [
        "p0",
        "p1",
        "p2",
        "p3",
    ]
    assert describe.suggestions("", 10) == []
    # an answer cut off mid-JSON (out of tokens): its whole lines, not the brackets
    assert describe.suggestions('[\n  "a fox \\"at\\" dawn",\n  "a hen', 100) == ['a fox "at" dawn']
    assert len(describe.suggestions(f'["{"x" * 5000}"]')[0]) == describe.PROMPT_CHARS
    # another bot's flags would be refused by /imagine: kept as words; ours stay flags
    assert describe.suggestions('["a fox --stylize 250 --ar 16:9"]', 100) == [
        "a fox stylize 250 --ar 16:9"
    ]
