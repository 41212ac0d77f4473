"""The 4K path from answer to database: base64 decoding, reading the answer, the page size."""

from __future__ import annotations

import base64
import json
import sqlite3
import time
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest

from core.gemini import GeminiError, _responses, parse_response
from core.store import NewImage, Store, image_hash
from core.store.database import PAGE_SIZE, SqliteDatabase

RAW = bytes(range(256)) * 4096 + b"\xfb\xff\xbf"  # every byte, and '+/' or '-_' in the text
SLICE = _responses._BASE64_SLICE


@pytest.fixture(params=["pybase64", "stdlib"])
def decoder(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each test runs with pybase64 and as if it were not installed."""
    if request.param == "pybase64":
        pytest.importorskip("pybase64")
    else:
        monkeypatch.setattr(_responses, "_pybase64", None)
    return request.param


def _wrapped(text: str, width: int = 76, newline: str = "\n") -> str:
    return newline.join(text[at : at + width] for at in range(0, len(text), width))


ENCODINGS: dict[str, Callable[[bytes], str]] = {
    "standard": lambda raw: base64.b64encode(raw).decode(),
    "urlsafe": lambda raw: base64.urlsafe_b64encode(raw).decode(),
    "standard, MIME lines": lambda raw: base64.encodebytes(raw).decode(),
    "urlsafe, CRLF lines": lambda raw: _wrapped(base64.urlsafe_b64encode(raw).decode(), 64, "\r\n"),
    "standard, spaces and tabs": lambda raw: " \t".join(base64.b64encode(raw).decode()),
    "standard, Unicode line separators": lambda raw: _wrapped(
        base64.b64encode(raw).decode(), 100, "\u2028"
    ),
}


@pytest.mark.parametrize("encode", ENCODINGS.values(), ids=ENCODINGS.keys())
@pytest.mark.parametrize("size", [1, 2, 3, len(RAW)])
def test_both_decoders_give_the_standard_librarys_bytes(
    decoder: str, encode: Callable[[bytes], str], size: int
) -> None:
    raw = RAW[:size]
    assert _responses._decode_base64(encode(raw)) == raw


@pytest.mark.parametrize(
    "data",
    [
        "%%%%",
        "QUJDQQ",  # cut off in its last group
        "QUJD" * 10 + "Q@==",
        "QUJDQQ==QUJD",  # padding, then more data
        # padding at the end of a 1 MiB slice, then more data: refused, as it is when whole
        "QUJD" * (SLICE // 4 - 1) + "QQ==" + "QUJD",
        "QUJDé===",  # not ASCII
        "QUJD\u2603",
    ],
    ids=[
        "symbols",
        "truncated",
        "bad digit",
        "padding mid-way",
        "padding at a slice end",
        "latin-1",
        "snowman",
    ],
)
def test_both_decoders_refuse_invalid_data_with_the_same_sentence(decoder: str, data: str) -> None:
    with pytest.raises(GeminiError) as caught:
        _responses._decode_base64(data)
    assert caught.value.reason == "malformed"
    assert "not valid base64" in caught.value.detail


@pytest.mark.parametrize("data", ["", " ", "\n\r\n", "\u2028"])
def test_empty_or_blank_image_data_is_called_empty(decoder: str, data: str) -> None:
    with pytest.raises(GeminiError) as caught:
        _responses._decode_base64(data)
    assert "empty data" in caught.value.detail


def _answer(data: str, text: str = "Here it is.") -> dict[str, object]:
    return {
        "candidates": [
            {
                "content": {
                    "role": "model",
                    "parts": [
                        {"text": text},
                        {"inlineData": {"mimeType": "image/png", "data": data}},
                    ],
                },
                "finishReason": "STOP",
            }
        ],
        "modelVersion": "m",
        "responseId": "r",
    }


def test_an_answer_reads_the_same_as_bytes_or_str_and_with_a_trailing_newline() -> None:
    body = json.dumps(_answer(base64.b64encode(RAW).decode()))
    for sent in (body, body.encode(), body.encode() + b"\n"):
        result = parse_response(sent)
        [image] = result.images
        assert image.data == RAW and result.parts[0].text == "Here it is."
        assert result.response_id == "r"


def test_json_pydantic_refuses_but_python_reads_is_still_an_answer() -> None:
    # a lone surrogate escape: json.loads keeps it, the fast reader refuses it
    body = json.dumps(_answer(base64.b64encode(b"abc").decode(), text="\ud800")).encode()
    assert b"\\ud800" in body
    result = parse_response(body)
    assert result.images[0].data == b"abc" and result.parts[0].text == "\ud800"


@pytest.mark.parametrize(
    ("body", "said"),
    [
        (b" \n ", None),
        (b"<html>oops</html>", "not JSON"),
        (b"[1, 2]", "JSON is a list, not an object"),
        (b'{"candidates": "many"}', "unexpected shape at candidates"),
    ],
)
def test_unreadable_answers_are_worded_as_before(body: bytes, said: str | None) -> None:
    with pytest.raises(GeminiError) as caught:
        parse_response(body)
    assert caught.value.reason == "malformed"
    if said:
        assert said in caught.value.detail


def _page_size(path: Path) -> int:
    with sqlite3.connect(path) as raw:
        return raw.execute("PRAGMA page_size").fetchone()[0]


def _image(seed: int) -> NewImage:
    data = bytes([seed]) * 300_000 + RAW  # several pages, whatever their size
    return NewImage(data, "image/png", 4, 4, image_hash(data))


async def _put_and_get(store: Store, image: NewImage) -> bytes:
    async with store.database.transaction() as tx:
        await store.image_bytes.put(tx, image)
    return (await store.images([image.sha256]))[image.sha256].data


async def test_a_new_database_gets_large_pages_in_wal_mode(tmp_path: Path) -> None:
    path = tmp_path / "new.sqlite3"
    store = await Store.open(path)
    try:
        image = _image(1)
        assert await _put_and_get(store, image) == image.data
        assert (await store.database.fetchrow("PRAGMA journal_mode"))[0] == "wal"
    finally:
        await store.close()
    assert PAGE_SIZE == 16_384
    assert _page_size(path) == PAGE_SIZE


async def _made_before(path: Path) -> None:
    old = await SqliteDatabase.open(path, time.time, page_size=4096)
    await old.connection.execute("CREATE TABLE before_the_change (x)")
    await old.close()


async def _made_elsewhere(path: Path) -> None:
    # rollback journal, no auto-vacuum: opening it switches both, VACUUM included
    with sqlite3.connect(path) as raw:
        raw.execute("CREATE TABLE before_the_change (x)")
    raw.close()


@pytest.mark.parametrize("make", [_made_before, _made_elsewhere], ids=["by imagebot", "elsewhere"])
async def test_an_existing_database_keeps_its_4096_byte_pages_and_works(
    tmp_path: Path, make: Callable[[Path], Awaitable[None]]
) -> None:
    path = tmp_path / "old.sqlite3"
    await make(path)
    assert _page_size(path) == 4096

    for seed in (1, 2):  # opened twice: a reopen must not rewrite it either
        store = await Store.open(path)
        try:
            image = _image(seed)
            assert await _put_and_get(store, image) == image.data
            assert (await store.database.fetchrow("PRAGMA auto_vacuum"))[0] == 2
        finally:
            await store.close()
        assert _page_size(path) == 4096
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
        assert raw.execute("SELECT count(*) FROM images").fetchone()[0] == 2
