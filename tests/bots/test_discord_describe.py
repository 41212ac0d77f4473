"""/describe on Discord: prompts that would make the image, each with a button that makes it."""

from __future__ import annotations

from pathlib import Path

from tests.bots.test_discord_harness import (
    answers,
    assert_every_interaction_answered_in_time,
    contents_of,
    custom_ids,
    discord_server,
    png,
    running_bot,
    texts,
)
from tests.fakes.gemini import FakeGemini


async def test_describe_shows_prompts_and_a_button_makes_one(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    async with discord_server() as fake, running_bot(tmp_path, fake_gemini, fake) as bot:
        photo = fake.add_attachment(png(80, 40, "green"), "field.png")
        asked = await bot.slash(name="describe", attachments={"image": photo})
        card = await fake.wait_for_message(lambda m: answers(m, asked) and bool(m.embeds))
        counts = await bot.service.store.counts()

        made = await bot.click(card, "imagebot:suggestion:3")
        result = await bot.result_of(made)

    [embed] = card.embeds
    assert embed["title"] == "🔎 Prompts for this image"
    prompts = [f["value"] for f in embed["fields"] if f["name"].isdigit()]
    assert prompts == [
        f"a wide picture, mostly green, {style}"
        for style in ("as a photograph", "as a watercolour", "as a pencil sketch", "in 3D")
    ]
    assert custom_ids(card) == [f"imagebot:suggestion:{n}" for n in range(1, 5)]
    assert counts["jobs"] == 0  # a description is words: no job
    assert fake_gemini.requests[0].path.endswith("/gemini-3.5-flash-lite:generateContent")
    assert texts(contents_of(fake_gemini, 1)) == [
        "a wide picture, mostly green, as a pencil sketch"
    ]
    assert result.attachments and result.embeds[0]["description"] == prompts[2]
    assert_every_interaction_answered_in_time(fake)


async def test_describe_of_a_file_that_is_not_an_image_is_one_sentence(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    async with discord_server() as fake, running_bot(tmp_path, fake_gemini, fake) as bot:
        notes = fake.add_attachment(b"just some words", "notes.txt", "text/plain")
        asked = await bot.slash(name="describe", attachments={"image": notes})
        # told privately, as every refusal after the deferral is
        shown = await fake.wait_for_message(
            lambda m: (m.interaction_metadata or {}).get("id") == asked["id"] and m.ephemeral
        )
    assert shown.content.startswith("⚠️ `notes.txt` is a text file, not an image")
    assert not fake_gemini.requests
