"""`--n` on Slack: the images of one request in the card's thread, a row of buttons for
each on the card; picking one continues from that image alone."""

from __future__ import annotations

from pathlib import Path

from tests.bots.test_slack_app import FLASH, image_size, running
from tests.fakes.gemini import FakeGemini, inline_images, pixel_size


async def test_n_4_posts_four_images_in_the_thread_with_buttons_for_each_and_edit_of_the_third(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    fake_gemini.latency = 0.2
    async with running(tmp_path, fake_gemini) as slack:
        await slack.command("a lighthouse at dusk --n 4 --ar 16:9")
        status = await slack.status_posted()
        await fake_gemini.wait_for_requests(4)
        assert all(r.status is None for r in fake_gemini.requests)  # sent side by side
        card = await slack.final(status)

        assert len(slack.fake.uploads) == 4
        assert {u.thread_ts for u in slack.fake.uploads} == {status[1]}
        assert len({u.message_ts for u in slack.fake.uploads}) == 1  # one post of four
        for upload in slack.fake.uploads:
            assert image_size(upload.data) == pixel_size(FLASH, "16:9", "1K")
        assert "Done" in card["text"] or "Done" in str(card["blocks"])
        assert "4 of 4 images, below" in str(card["blocks"])
        rows = {
            b["block_id"]: b["elements"]
            for b in card["blocks"]
            if b["type"] == "actions" and b["block_id"].startswith("imagebot.result.")
        }
        assert sorted(rows) == [f"imagebot.result.{n}" for n in range(1, 5)]
        for number, elements in rows.items():
            tag = number.rsplit(".", 1)[1]
            assert [e["text"]["text"] for e in elements] == [
                f"Re-roll {tag}",
                f"Upscale {tag} to 2K",
                f"Upscale {tag} to 4K",
                f"Edit {tag}",
                f"Vary {tag}",
            ]
            assert len({e["value"] for e in elements}) == 1  # all for one image's job
        assert len({elements[0]["value"] for elements in rows.values()}) == 4
        [delete] = [
            e
            for b in card["blocks"]
            for e in b.get("elements", [])
            if e.get("action_id") == "imagebot.delete"
        ]
        assert delete["confirm"]["title"]["text"] == "Delete these images?"

        # image 3, "make it night": only image 3 goes to the model
        await slack.click("imagebot.edit", status=status, block_id="imagebot.result.3")
        [opened] = await slack.fake.wait_for_call("views.open")
        typed = {"instruction": {"text": {"type": "plain_text_input", "value": "make it night"}}}
        await slack.post(
            slack.fake.view_submission_body(
                opened.response["view"]["id"], user_id="U1", values=typed
            )
        )
        second = await slack.status_posted(2)
        await slack.final(second)
        third_image = slack.fake.uploads[2].data
        assert inline_images(fake_gemini.requests[4].json["contents"]) == [third_image]
        assert fake_gemini.requests[4].json["contents"][-1]["parts"][-1]["text"] == "make it night"

        # Vary on image 1: four new images, each made from image 1
        await slack.click("imagebot.vary", status=status, block_id="imagebot.result.1")
        third = await slack.status_posted(3)
        varied = await slack.final(third)
        assert "asked for variations of an image (4 images)" in str(varied["blocks"])
        assert len(fake_gemini.requests) == 9
        for request in fake_gemini.requests[5:]:
            assert inline_images(request.json["contents"]) == [slack.fake.uploads[0].data]


async def test_delete_of_several_removes_every_file_and_the_card(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    async with running(tmp_path, fake_gemini) as slack:
        await slack.command("a lighthouse --n 2")
        status = await slack.status_posted()
        await slack.final(status)
        uploaded = {u.id for u in slack.fake.uploads}
        assert len(uploaded) == 2
        await slack.click("imagebot.delete", status=status)
        await slack.fake.wait_until(lambda: status not in slack.fake.messages)
        deleted = await slack.fake.wait_for_call("files.delete", count=2)
        assert {call.params["file"] for call in deleted} == uploaded
