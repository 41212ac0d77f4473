"""`n:` on Discord: the images of one request in one message, a row of buttons under each;
picking one continues from that image alone."""

from __future__ import annotations

from pathlib import Path

from tests.bots.test_discord_harness import (
    USER,
    assert_every_interaction_answered_in_time,
    contents_of,
    discord_server,
    image_size,
    running_bot,
    texts,
)
from tests.fakes.gemini import FakeGemini, inline_images, pixel_size

FLASH = "gemini-3.1-flash-image-preview"


async def test_n_4_shows_four_images_in_one_message_with_a_row_each_and_edits_the_third(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    fake_gemini.latency = 0.2
    async with discord_server() as fake, running_bot(tmp_path, fake_gemini, fake) as bot:
        imagine = await bot.slash({"prompt": "a fox", "n": 4, "aspect_ratio": "3:2"})
        await fake_gemini.wait_for_requests(4)
        assert all(r.status is None for r in fake_gemini.requests)  # sent side by side
        result = await bot.result_of(imagine)

        assert len(result.attachments) == 4
        for attachment in result.attachments:
            assert image_size(attachment.data) == pixel_size(FLASH, "3:2", "1K")
        assert sorted(a.data for a in result.attachments) == sorted(
            r.image for r in fake_gemini.responses
        )
        assert [e["title"].rsplit(" ", 3)[-3:] for e in result.embeds] == [
            ["1", "of", "4"],
            ["2", "of", "4"],
            ["3", "of", "4"],
            ["4", "of", "4"],
        ]
        # each card shows its own image (Discord gives attachment:// back as a CDN link)
        shown = [e["image"]["url"].split("?")[0].rsplit("/", 1)[1] for e in result.embeds]
        assert shown == [a.filename for a in result.attachments]
        rows = [[b["custom_id"] for b in row["components"]] for row in result.components]
        assert len(rows) == 5 and rows[-1][0].startswith("imagebot:delete:")
        labels = [[b["label"] for b in row["components"]] for row in result.components[:4]]
        assert labels[2] == ["Re-roll 3", "3: 2K", "3: 4K", "Edit 3", "Vary 3"]
        jobs = [row[0].rsplit(":", 1)[1] for row in rows[:4]]
        assert len(set(jobs)) == 4
        for row, job in zip(rows[:4], jobs, strict=True):
            assert all(custom_id.endswith(job) for custom_id in row)

        # Edit on image 3, "make it night": the model sees image 3 and no other
        edit = await bot.click(result, rows[2][3])
        opened = await bot.callback(edit)
        submit = fake.interaction_modal_submit(
            opened.json["data"]["custom_id"],
            {"change": "make it night"},
            user_id=USER,
            message=result,
        )
        await fake.dispatch("INTERACTION_CREATE", submit)
        await bot.result_of(submit)

        # Vary on image 1: four more images, each made from image 1
        vary = await bot.click(result, rows[0][4])
        varied = await bot.result_of(vary)

    third = result.attachments[2].data
    contents = contents_of(fake_gemini, 4)
    assert texts(contents) == ["a fox", "make it night"]
    assert inline_images(contents, "model") == [third]
    assert len(varied.attachments) == 4 and varied.embeds[0]["title"].startswith("🌀 Variations")
    for index in range(5, 9):
        assert inline_images(contents_of(fake_gemini, index), "model") == [
            result.attachments[0].data
        ]
    assert_every_interaction_answered_in_time(fake)


async def test_a_refused_n_is_a_private_sentence_and_no_call(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    async with discord_server() as fake, running_bot(tmp_path, fake_gemini, fake) as bot:
        answer = await bot.callback(await bot.slash({"prompt": "a fox --n 9"}))
    assert answer.json["data"]["content"] == (
        "⚠️ `--n` is how many images to make at once, a whole number from 1 to 4 (for example "
        "`--n 4`), not `9`."
    )
    assert not fake_gemini.requests
