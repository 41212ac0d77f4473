"""Buttons under results (Re-roll, Upscale, Edit, Delete) across restarts, exactly-once
handling of repeated dispatches, and delivery across a gateway reconnect."""

from __future__ import annotations

from pathlib import Path

from tests.bots.test_discord_harness import (
    OTHER,
    USER,
    answers,
    assert_every_interaction_answered_in_time,
    contents_of,
    custom_ids,
    discord_server,
    image_size,
    running_bot,
    texts,
)
from tests.fakes.discord import FLAG_EPHEMERAL
from tests.fakes.gemini import FakeGemini, inline_images, pixel_size

FLASH = "gemini-3.1-flash-image-preview"


def _button(ids: list[str], action: str) -> str:
    return next(custom_id for custom_id in ids if custom_id.startswith(f"imagebot:{action}:"))


async def test_buttons_work_after_a_restart_and_a_repeated_click_makes_one_image(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    async with discord_server() as fake:
        async with running_bot(tmp_path, fake_gemini, fake) as bot:
            imagine = await bot.slash({"prompt": "a windmill", "aspect_ratio": "3:2"})
            first = await bot.result_of(imagine)

        # a new process: new service over the same database, new client, nothing in memory
        async with running_bot(tmp_path, fake_gemini, fake) as bot:
            assert fake.identifies == 2
            click = await bot.click(first, _button(custom_ids(first), "reroll"), user=OTHER)
            await fake.dispatch("INTERACTION_CREATE", click)  # the same click, delivered twice
            # the /imagine from before the restart, delivered again, is not made twice either
            await fake.dispatch("INTERACTION_CREATE", imagine)
            reroll = await bot.result_of(click)
            counts = await bot.service.store.counts()

    assert len(fake_gemini.requests) == 2
    assert counts["jobs"] == 2
    assert texts(contents_of(fake_gemini, 1)) == ["a windmill"]  # a sibling of the first
    [attachment] = reroll.attachments
    assert image_size(attachment.data) == pixel_size(FLASH, "3:2", "1K")
    assert reroll.embeds[0]["title"] == "🎲 Re-roll"
    assert {f["value"] for f in reroll.embeds[0]["fields"]} >= {f"<@{OTHER}>"}
    answered = [c for c in fake.calls_to("POST", rf"/interactions/{click['id']}/.+/callback")]
    assert [c.status for c in answered] == [200]  # acknowledged once; the copy was dropped
    assert first.attachments  # the original image is left as it was


async def test_upscale_continues_from_the_image_at_the_larger_size(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    async with discord_server() as fake, running_bot(tmp_path, fake_gemini, fake) as bot:
        first = await bot.result_of(await bot.slash({"prompt": "a tiny robot"}))
        click = await bot.click(first, _button(custom_ids(first), "upscale:2K"))
        upscaled = await bot.result_of(click)

    request = fake_gemini.requests[1].json
    assert request["generationConfig"]["imageConfig"]["imageSize"] == "2K"
    contents = request["contents"]
    assert texts(contents)[-1] == (
        "Recreate this exact image at a higher resolution; change nothing else."
    )
    assert inline_images(contents, "model") == [fake_gemini.responses[0].image]
    assert image_size(upscaled.attachments[0].data) == pixel_size(FLASH, None, "2K")
    assert upscaled.embeds[0]["title"] == "🔍 Upscaled to 2K"
    # at 2K only 4K is left to offer
    assert [i for i in custom_ids(upscaled) if ":upscale:" in i] == [
        _button(custom_ids(upscaled), "upscale:4K")
    ]


async def test_edit_opens_a_form_whose_answer_continues_the_image_even_after_a_restart(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    async with discord_server() as fake:
        async with running_bot(tmp_path, fake_gemini, fake) as bot:
            first = await bot.result_of(await bot.slash({"prompt": "a green field"}))
            click = await bot.click(first, _button(custom_ids(first), "edit"))
            opened = await bot.callback(click)

        assert opened.json["type"] == 9
        form = opened.json["data"]
        async with running_bot(tmp_path, fake_gemini, fake) as bot:
            submit = fake.interaction_modal_submit(
                form["custom_id"],
                {"change": "add a hot air balloon --ar 16:9"},
                user_id=USER,
                message=first,
            )
            await fake.dispatch("INTERACTION_CREATE", submit)
            edited = await bot.result_of(submit)

    assert form["title"] == "Edit this image"
    contents = contents_of(fake_gemini, 1)
    assert texts(contents) == ["a green field", "add a hot air balloon"]
    assert inline_images(contents, "model") == [fake_gemini.responses[0].image]
    assert image_size(edited.attachments[0].data) == pixel_size(FLASH, "16:9", "1K")
    assert edited.embeds[0]["title"] == "✏️ Edit"
    assert_every_interaction_answered_in_time(fake)


async def test_only_the_requester_can_delete_an_image(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    async with discord_server() as fake, running_bot(tmp_path, fake_gemini, fake) as bot:
        result = await bot.result_of(await bot.slash({"prompt": "a secret garden"}))
        delete = _button(custom_ids(result), "delete")
        refused = await bot.callback(await bot.click(result, delete, user=OTHER))
        await bot.click(result, delete, user=USER)
        await fake.wait_until(lambda: result in fake.deleted_messages)

    assert refused.json["type"] == 4 and refused.json["data"]["flags"] & FLAG_EPHEMERAL
    assert refused.json["data"]["content"] == (
        "⚠️ Only the person who asked for this image can delete it."
    )
    assert result not in fake.channel_messages()
    assert_every_interaction_answered_in_time(fake)


async def test_a_gateway_reconnect_during_a_job_does_not_lose_its_delivery(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    fake_gemini.latency = 1.0
    async with discord_server() as fake, running_bot(tmp_path, fake_gemini, fake) as bot:
        payload = await bot.slash({"prompt": "a storm at sea"})
        await fake_gemini.wait_for_requests(1)
        await fake.send_reconnect()
        result = await bot.result_of(payload)
        await fake.wait_for_resume()

    assert result.attachments
    assert fake.resumes == 1 and fake.identifies == 1
    assert len(fake_gemini.requests) == 1


async def test_a_dropped_gateway_during_a_job_does_not_lose_its_delivery(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    fake_gemini.latency = 1.0
    async with discord_server() as fake, running_bot(tmp_path, fake_gemini, fake) as bot:
        said = await bot.say("a lighthouse in fog")
        await fake_gemini.wait_for_requests(1)
        await fake.drop_connection()
        result = await bot.reply_to(said)

    assert result.attachments and len(fake_gemini.requests) == 1


async def test_cancel_under_a_queued_job_stops_it_before_it_is_sent(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    fake_gemini.latency = 1.0
    async with (
        discord_server() as fake,
        running_bot(tmp_path, fake_gemini, fake, IMAGEBOT_MAX_CONCURRENCY="1") as bot,
    ):
        first = await bot.slash({"prompt": "a long voyage"})
        await fake_gemini.wait_for_requests(1)
        second = await bot.slash({"prompt": "a short trip"})
        queued = await fake.wait_for_message(
            lambda m: answers(m, second) and any("cancel" in c for c in custom_ids(m))
        )
        shown = queued.content  # the message is edited in place from here on
        cancel = _button(custom_ids(queued), "cancel")
        refused = await bot.callback(await bot.click(queued, cancel, user=OTHER))
        accepted = await bot.callback(await bot.click(queued, cancel, user=USER))
        cancelled = await bot.result_of(second)
        made = await bot.result_of(first)

    assert shown == "⏳ Queued (#1)…"
    assert refused.json["data"]["content"] == "⚠️ Only whoever asked for this image can cancel it."
    assert accepted.json["type"] == 4 and accepted.json["data"]["flags"] & FLAG_EPHEMERAL
    assert accepted.json["data"]["content"] == "Cancelled: it was never sent to the model."
    assert cancelled.content == "⚠️ Cancelled before it was sent to the model."
    assert not cancelled.attachments
    assert [_button(custom_ids(cancelled), "reroll")]  # Try again
    assert made.attachments
    assert len(fake_gemini.requests) == 1
    assert_every_interaction_answered_in_time(fake)
