"""Turning a path of turns into `contents`: merging, signatures, budgets."""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Sequence
from itertools import count
from typing import Literal

import pytest

from core.catalog import Model, load_catalog
from core.conversations import (
    DROPPED_IMAGE_TEXT,
    MISSING_IMAGE_TEXT,
    History,
    StoredPart,
    Turn,
    build_history,
    encoded_size,
)
from core.errors import UserFacingError
from core.gemini import SKIP_SIGNATURE, Content, InlineImage, Part
from core.images import MB

CATALOG = load_catalog()
PRO = CATALOG.get("pro")
FLASH = CATALOG.get("flash")
FLASH_25 = CATALOG.get("2.5-flash")
BIG_BUDGET = 100 * MB


class Thread:
    """Builds a straight path of turns, each the parent of the next, and keeps the images."""

    def __init__(self) -> None:
        self.turns: list[Turn] = []
        self.images: dict[str, bytes] = {}
        self._ids = count(1)

    def add(
        self,
        role: Literal["user", "model"],
        *parts: StoredPart,
        model_id: str | None = None,
    ) -> Thread:
        turn_id = next(self._ids)
        parent = self.turns[-1].id if self.turns else None
        self.turns.append(Turn(turn_id, 1, parent, role, "U1", tuple(parts), model_id))
        return self

    def image(
        self, size: int = 64, signature: str | None = None, mime: str = "image/png"
    ) -> StoredPart:
        data = os.urandom(size)
        sha = f"sha-{len(self.images)}"
        self.images[sha] = data
        return StoredPart(image_sha256=sha, mime_type=mime, thought_signature=signature)

    def build(self, model: Model = PRO, budget: int = BIG_BUDGET) -> History:
        return build_history(self.turns, self.images, model=model, budget_bytes=budget)


def text(value: str, signature: str | None = None) -> StoredPart:
    return StoredPart(text=value, thought_signature=signature)


def shape(contents: Sequence[Content]) -> list[tuple[str, list[str]]]:
    """Roles and part kinds, e.g. ("model", ["image", "text"])."""
    return [
        (c.role, ["image" if p.image is not None else f"text:{p.text}" for p in c.parts])
        for c in contents
    ]


def signatures(content: Content) -> list[str | None]:
    return [p.thought_signature for p in content.parts]


def wire_size(contents: Sequence[Content]) -> int:
    """The body as PROTOCOLS.md describes it, serialised compactly."""

    def part(p: Part) -> dict[str, object]:
        out: dict[str, object] = {}
        if p.text is not None:
            out["text"] = p.text
        if p.image is not None:
            out["inlineData"] = {
                "mimeType": p.image.mime_type,
                "data": base64.b64encode(p.image.data).decode(),
            }
        if p.thought_signature:
            out["thoughtSignature"] = p.thought_signature
        return out

    body = {
        "contents": [{"role": c.role, "parts": [part(p) for p in c.parts]} for c in contents],
        "generationConfig": {
            "responseModalities": ["TEXT", "IMAGE"],
            "temperature": 0.4,
            "imageConfig": {"aspectRatio": "16:9", "imageSize": "4K"},
        },
    }
    return len(json.dumps(body, separators=(",", ":"), ensure_ascii=False).encode())


# --- merging and skipping -----------------------------------------------------------------


def test_adjacent_user_turns_are_merged_into_one_content_in_order() -> None:
    # the first request failed, so no model turn came between the two user messages
    thread = Thread().add("user", text("a cat")).add("user", text("make it orange"))
    history = thread.build()
    assert shape(history.contents) == [("user", ["text:a cat", "text:make it orange"])]


def test_a_conversation_alternates_roles_with_images_as_inline_data() -> None:
    thread = Thread()
    picture = thread.image(signature="sig-image")
    thread.add("user", text("a lighthouse"))
    thread.add("model", text("Here it is", "sig-text"), picture, model_id=PRO.id)
    thread.add("user", text("now at night"))
    history = thread.build(PRO)
    assert shape(history.contents) == [
        ("user", ["text:a lighthouse"]),
        ("model", ["text:Here it is", "image"]),
        ("user", ["text:now at night"]),
    ]
    image = history.contents[1].parts[1].image
    assert image == InlineImage("image/png", thread.images[picture.image_sha256 or ""])
    assert (history.dropped_images, history.notice) == (0, None)


def test_empty_text_parts_and_empty_turns_leave_no_empty_content() -> None:
    thread = Thread()
    thread.add("user", text("a boat"), text(""), text("  \n"))
    thread.add("model", text(""), model_id=PRO.id)  # nothing left: skipped
    thread.add("user", text("bigger"))
    thread.add("model", model_id=PRO.id)  # no parts at all
    thread.add("user", text(""), text("with sails"))
    history = thread.build()
    assert shape(history.contents) == [
        ("user", ["text:a boat", "text:bigger", "text:with sails"]),
    ]
    assert all(content.parts for content in history.contents)


def test_an_image_without_a_stored_mime_type_is_sniffed() -> None:
    thread = Thread()
    png = b"\x89PNG\r\n\x1a\n" + bytes(32)
    thread.images["sha-png"] = png
    thread.add("user", StoredPart(text="like this"), StoredPart(image_sha256="sha-png"))
    part = thread.build().contents[0].parts[1]
    assert part.image == InlineImage("image/png", png)


def test_an_older_image_missing_from_the_store_becomes_a_note() -> None:
    thread = Thread()
    thread.add("user", text("a kite"), StoredPart(image_sha256="gone", mime_type="image/png"))
    thread.add("user", text("again"))
    assert shape(thread.build().contents) == [
        ("user", ["text:a kite", f"text:{MISSING_IMAGE_TEXT}", "text:again"])
    ]


def test_an_image_of_the_new_message_missing_from_the_store_is_an_error() -> None:
    thread = Thread().add("user", text("a kite"), StoredPart(image_sha256="gone"))
    with pytest.raises(UserFacingError, match="could not be found any more: send it again"):
        thread.build()


def test_an_empty_path_is_a_programming_error() -> None:
    with pytest.raises(ValueError):
        build_history([], {}, model=PRO, budget_bytes=BIG_BUDGET)


# --- thought signatures -------------------------------------------------------------------


def test_signatures_from_the_same_model_go_back_unchanged() -> None:
    thread = Thread()
    image = thread.image(signature="sig-image")
    thread.add("user", text("a fox"))
    thread.add(
        "model", text("Here", "sig-text"), image, text("Enjoy", "sig-later"), model_id=PRO.id
    )
    thread.add("user", text("in snow"))
    contents = thread.build(PRO).contents
    assert signatures(contents[1]) == ["sig-text", "sig-image", "sig-later"]
    assert signatures(contents[0]) == signatures(contents[2]) == [None]


def test_missing_signatures_on_images_and_the_first_text_are_filled_with_skip() -> None:
    thread = Thread()
    first, second = thread.image(), thread.image(signature="sig-2")
    thread.add("user", text("two foxes"))
    thread.add("model", first, text("Here"), text("and"), second, model_id=PRO.id)
    thread.add("user", text("again"))
    model_content = thread.build(PRO).contents[1]
    assert signatures(model_content) == [SKIP_SIGNATURE, SKIP_SIGNATURE, None, "sig-2"]


def test_another_models_signatures_are_replaced_by_skip() -> None:
    thread = Thread()
    image = thread.image(signature="flash-image-sig")
    thread.add("user", text("a fox"))
    thread.add(
        "model",
        text("Here", "flash-text-sig"),
        image,
        text("more", "flash-other-sig"),
        text("plain"),
        model_id=FLASH.id,
    )
    thread.add("user", text("now with pro"))
    model_content = thread.build(PRO).contents[1]
    assert signatures(model_content) == [SKIP_SIGNATURE, SKIP_SIGNATURE, SKIP_SIGNATURE, None]


def test_a_model_turn_of_unknown_origin_gets_skip_signatures() -> None:
    thread = Thread()
    image = thread.image()
    thread.add("user", text("a fox")).add("model", image, text("done")).add("user", text("more"))
    assert signatures(thread.build(FLASH).contents[1]) == [SKIP_SIGNATURE, SKIP_SIGNATURE]


def test_merged_model_turns_sign_only_the_first_text_of_the_content() -> None:
    thread = Thread()
    thread.add("user", text("hello"))
    thread.add("model", text("first"), model_id=PRO.id)
    thread.add("model", text("second"), model_id=PRO.id)
    thread.add("user", text("go on"))
    model_content = thread.build(PRO).contents[1]
    assert shape([model_content]) == [("model", ["text:first", "text:second"])]
    assert signatures(model_content) == [SKIP_SIGNATURE, None]


def test_no_signatures_are_sent_to_a_model_that_does_not_use_them() -> None:
    thread = Thread()
    image = thread.image(signature="sig-image")
    thread.add("user", text("a fox"))
    thread.add("model", text("Here", "sig-text"), image, model_id=FLASH_25.id)
    thread.add("user", text("again"))
    thread.add("model", text("Again", "pro-sig"), thread.image(), model_id=PRO.id)
    thread.add("user", text("once more"))
    contents = thread.build(FLASH_25).contents
    assert all(p.thought_signature is None for c in contents for p in c.parts)


def test_user_turns_never_carry_signatures() -> None:
    thread = Thread()
    thread.add("user", text("a fox", "odd-sig"), thread.image(signature="odd-image-sig"))
    assert signatures(thread.build(PRO).contents[0]) == [None, None]


# --- budgets ------------------------------------------------------------------------------


def test_the_reference_image_cap_drops_the_oldest_images_first_and_says_so() -> None:
    thread = Thread()
    old = [thread.image() for _ in range(4)]
    thread.add("user", text("a dog"), old[0])
    thread.add("model", old[1], model_id=FLASH_25.id)
    thread.add("user", text("and a cat"), old[2])
    thread.add("model", old[3], model_id=FLASH_25.id)
    newest = thread.image()
    thread.add("user", text("together"), newest)
    history = thread.build(FLASH_25)  # at most 3 images per request

    assert history.dropped_images == 2
    assert history.notice == (
        "Gemini 2.5 Flash Image takes at most 3 images in one request, "
        "so I left out the 2 oldest images of this conversation."
    )
    assert shape(history.contents) == [
        ("user", ["text:a dog", f"text:{DROPPED_IMAGE_TEXT}"]),
        ("model", [f"text:{DROPPED_IMAGE_TEXT}"]),
        ("user", ["text:and a cat", "image"]),
        ("model", ["image"]),
        ("user", ["text:together", "image"]),
    ]
    kept = [p.image.data for c in history.contents for p in c.parts if p.image is not None]
    assert kept == [thread.images[p.image_sha256 or ""] for p in (old[2], old[3], newest)]


def test_the_byte_budget_drops_the_oldest_images_first_and_says_so() -> None:
    thread = Thread()
    old = [thread.image(300_000) for _ in range(3)]
    thread.add("user", text("a tree"), old[0])
    thread.add("model", old[1], model_id=PRO.id)
    thread.add("user", text("in autumn"))
    thread.add("model", old[2], model_id=PRO.id)
    thread.add("user", text("in winter"), thread.image(300_000))
    # each image is 400 KB as base64: three fit in 1.3 MB, four do not
    history = thread.build(PRO, budget=1_300_000)

    assert history.dropped_images == 1
    assert history.notice == (
        "To stay within the request size limit, I left out the oldest image of this conversation."
    )
    assert shape(history.contents)[0] == ("user", ["text:a tree", f"text:{DROPPED_IMAGE_TEXT}"])
    assert encoded_size(history.contents) <= 1_300_000


def test_a_dropped_model_image_becomes_a_signed_note_in_a_model_content() -> None:
    thread = Thread()
    thread.add("user", text("a tree"))
    thread.add("model", thread.image(300_000, signature="sig-old"), model_id=PRO.id)
    thread.add("user", text("in winter"), thread.image(300_000))
    history = thread.build(PRO, budget=600_000)
    model_content = history.contents[1]
    assert shape([model_content]) == [("model", [f"text:{DROPPED_IMAGE_TEXT}"])]
    assert signatures(model_content) == [SKIP_SIGNATURE]


def test_the_estimate_is_never_below_the_real_body_and_not_far_above() -> None:
    thread = Thread()
    thread.add("user", text('a "quoted" prompt with ünïcödé and 🐙 and \\ backslashes'))
    thread.add(
        "model",
        text("Here", "s" * 700),
        thread.image(123_457, signature="t" * 900),
        model_id=PRO.id,
    )
    thread.add("user", text("again\n" * 200), thread.image(99_999, mime="image/jpeg"))
    contents = thread.build(PRO).contents
    real = wire_size(contents)
    assert real <= encoded_size(contents) <= real * 1.01 + 2048


def test_the_newest_turn_over_the_byte_budget_is_refused_with_its_size() -> None:
    thread = Thread()
    thread.add("user", text("old"), thread.image(10_000))
    thread.add("user", text("four photos"), *(thread.image(1_000_000) for _ in range(4)))
    with pytest.raises(UserFacingError) as caught:
        thread.build(PRO, budget=3 * MB)
    assert caught.value.message == (
        "These 4 images come to 5.4 MB as sent, over the 3 MB the image service takes "
        "in one request: send fewer or smaller images."
    )


def test_a_single_image_over_the_byte_budget_is_refused() -> None:
    thread = Thread()
    thread.add("user", text("one photo"), thread.image(2_000_000))
    with pytest.raises(UserFacingError) as caught:
        thread.build(PRO, budget=2 * MB)
    assert caught.value.message == (
        "This image comes to 2.7 MB as sent, over the 2 MB the image service takes "
        "in one request: send a smaller image."
    )


def test_the_newest_turn_over_the_image_cap_is_refused() -> None:
    thread = Thread()
    thread.add("user", text("four"), *(thread.image() for _ in range(4)))
    with pytest.raises(UserFacingError) as caught:
        thread.build(FLASH_25)
    assert caught.value.message == (
        "Gemini 2.5 Flash Image takes at most 3 images in one request and this message "
        "has 4: send fewer images."
    )


def test_a_thread_whose_text_alone_is_over_budget_asks_for_a_new_thread() -> None:
    thread = Thread()
    for _ in range(20):
        thread.add("user", text("x" * 5_000)).add("model", text("y" * 5_000), model_id=PRO.id)
    thread.add("user", text("one more"), thread.image(1_000))
    with pytest.raises(UserFacingError, match="grown too long for one request: start a new"):
        thread.build(PRO, budget=100_000)


def test_within_budget_nothing_is_dropped() -> None:
    thread = Thread()
    thread.add("user", text("a"), thread.image(1_000))
    thread.add("model", thread.image(1_000), model_id=PRO.id)
    thread.add("user", text("b"), thread.image(1_000))
    history = thread.build(PRO, budget=1 * MB)
    assert (history.dropped_images, history.notice) == (0, None)
    assert sum(p.image is not None for c in history.contents for p in c.parts) == 3
