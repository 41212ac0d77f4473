"""/imagine end to end: acknowledged in time, progress shown, the image delivered, and every
failure told in one clear sentence."""

from __future__ import annotations

import json
from pathlib import Path

from tests.bots.test_discord_harness import (
    OTHER,
    USER,
    assert_every_interaction_answered_in_time,
    contents_of,
    custom_ids,
    discord_server,
    image_size,
    png,
    running_bot,
    texts,
)
from tests.fakes.discord import FLAG_EPHEMERAL
from tests.fakes.gemini import FakeGemini, Fault, inline_images, pixel_size
from tests.faults.checks import held_requests, poll_until

FLASH = "gemini-3.1-flash-image-preview"


async def test_imagine_is_deferred_within_3s_while_the_api_takes_4s_then_the_image_arrives(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    fake_gemini.latency = 4.0
    async with discord_server() as fake, running_bot(tmp_path, fake_gemini, fake) as bot:
        payload = await bot.slash({"prompt": "a lighthouse at dusk", "aspect_ratio": "16:9"})

        callback = await bot.callback(payload)
        assert callback.json["type"] == 5
        assert callback.since_dispatch is not None and callback.since_dispatch < 3.0

        result = await bot.result_of(payload, timeout=30)

    [attachment] = result.attachments
    assert attachment.content_type == "image/png"
    assert image_size(attachment.data) == pixel_size(FLASH, "16:9", "1K")
    [embed] = result.embeds
    assert embed["description"] == "a lighthouse at dusk"
    assert embed["image"]["url"] == attachment.url
    fields = {f["name"]: f["value"] for f in embed["fields"]}
    assert fields["Options"] == "Gemini 3.1 Flash Image · 16:9 · 1K"
    assert fields["Requested by"] == f"<@{USER}>"
    job = custom_ids(result)[0].rsplit(":", 1)[1]
    assert custom_ids(result) == [
        f"imagebot:reroll:{job}",
        f"imagebot:upscale:2K:{job}",
        f"imagebot:upscale:4K:{job}",
        f"imagebot:edit:{job}",
        f"imagebot:vary:{job}",
        f"imagebot:delete:{job}",
    ]
    # the response went queued -> generating (with the time) -> the result
    shown = [c.json.get("content") for c in fake.calls_to("PATCH", r"/webhooks/.*") if c.json]
    assert shown[0] == "⏳ Queued (#1)…"
    assert any(text and text.startswith("🎨 Generating… ") and " s" in text for text in shown)
    assert result.content == ""
    assert_every_interaction_answered_in_time(fake)


async def test_options_the_model_cannot_do_get_a_private_explanation_and_no_job(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    async with discord_server() as fake, running_bot(tmp_path, fake_gemini, fake) as bot:
        payload = await bot.slash({"prompt": "a cat", "model": "2.5-flash", "size": "4K"})
        callback = await bot.callback(payload)
        flagged = await bot.slash({"prompt": "a cat --bogus 3"})
        flagged_callback = await bot.callback(flagged)
        counts = await bot.service.store.counts()

    assert callback.json["type"] == 4
    assert callback.json["data"]["flags"] & FLAG_EPHEMERAL
    assert "4K is not available on Gemini 2.5 Flash Image" in callback.json["data"]["content"]
    assert "`--bogus` is not an option" in flagged_callback.json["data"]["content"]
    assert fake_gemini.requests == []
    assert counts == {
        "images": 0,
        "conversations": 0,
        "turns": 0,
        "jobs": 0,
        "message_links": 0,
        "intake": 0,
    }
    assert_every_interaction_answered_in_time(fake)


async def test_a_blocked_prompt_edits_the_response_to_the_safety_sentence(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    fake_gemini.faults.append(Fault("prompt_blocked"))
    async with discord_server() as fake, running_bot(tmp_path, fake_gemini, fake) as bot:
        payload = await bot.slash({"prompt": "something forbidden"})
        result = await bot.result_of(payload)

    assert result.content == (
        "⚠️ The image service refused this prompt for safety reasons; rephrase it and try again."
    )
    assert result.attachments == [] and result.embeds == []
    assert custom_ids(result)[0].startswith("imagebot:reroll:")
    assert_every_interaction_answered_in_time(fake)


async def test_a_failed_download_withdraws_the_response_and_says_why_privately(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    async with (
        discord_server() as fake,
        running_bot(tmp_path, fake_gemini, fake, DISCORD_FILE_HOSTS="cdn.discordapp.com") as bot,
    ):
        photo = fake.add_attachment(png(), "photo.png")
        payload = await bot.slash({"prompt": "make it blue"}, attachments={"image": photo})
        note = await fake.wait_for_message(
            lambda m: m.ephemeral and (m.interaction_metadata or {}).get("id") == payload["id"]
        )
        # held while it was being read, let go once answered: a restart will not answer again
        await poll_until(
            lambda: held_requests(bot.settings.sqlite_path) == 0, timeout=5, what="release"
        )

    assert "I only download attachments from Discord's own file servers" in note.content
    [deferred] = [m for m in fake.deleted_messages if (m.interaction_metadata or {}).get("id")]
    assert deferred.interaction_metadata["id"] == payload["id"]
    assert fake.cdn_downloads == [] and fake_gemini.requests == []
    assert_every_interaction_answered_in_time(fake)


async def test_a_4k_image_over_the_upload_limit_is_fitted_and_the_user_is_told(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    # The fake's 4K images are flat colour and compress to ~400 KB, so the upload limit is
    # lowered instead of making a 10 MiB image.
    async with (
        discord_server(upload_limit_bytes=200_000) as fake,
        running_bot(tmp_path, fake_gemini, fake) as bot,
    ):
        payload = await bot.slash({"prompt": "a harbour at night", "size": "4K"})
        result = await bot.result_of(payload, timeout=20)

    original = fake_gemini.responses[0].image
    assert original is not None and len(original) > 200_000
    [attachment] = result.attachments
    assert len(attachment.data) <= 200_000
    footer = result.embeds[0]["footer"]["text"]
    assert footer.startswith("The image was ") and "to fit the 0.2 MB upload limit." in footer
    assert not [c for c in fake.calls if c.status == 413]


async def test_mentions_in_the_prompt_never_ping(tmp_path: Path, fake_gemini: FakeGemini) -> None:
    async with discord_server() as fake, running_bot(tmp_path, fake_gemini, fake) as bot:
        payload = await bot.slash({"prompt": "@everyone look <@123> and <@&456>"})
        result = await bot.result_of(payload)

    assert result.embeds[0]["description"] == "@\u200beveryone look <@\u200b123> and <@\u200b&456>"
    sent = [c.json for c in fake.calls if c.json and isinstance(c.json, dict)]
    with_text = [body for body in sent if body.get("content") or body.get("embeds")]
    assert with_text and all(body.get("allowed_mentions") == {"parse": []} for body in with_text), (
        json.dumps(with_text)[:500]
    )


async def test_settings_are_saved_per_user_and_used_by_imagine_and_usage_counts_them(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    async with discord_server() as fake, running_bot(tmp_path, fake_gemini, fake) as bot:
        shown = await bot.slash({}, name="imagine-settings")
        await fake.wait_until(lambda: _private_text(fake, shown) is not None)
        saved = await bot.slash({"model": "pro", "size": "2K"}, name="imagine-settings")
        await fake.wait_until(lambda: _private_text(fake, saved) is not None)

        payload = await bot.slash({"prompt": "a red kite"})
        await bot.result_of(payload)
        usage = await bot.slash({}, name="imagine-usage")
        await fake.wait_until(lambda: _private_text(fake, usage) is not None)

    assert "Model: not set" in (_private_text(fake, shown) or "")
    assert "Model: **Gemini 3 Pro Image**" in (_private_text(fake, saved) or "")
    assert "Size: **2K**" in (_private_text(fake, saved) or "")
    request = fake_gemini.requests[0]
    assert request.path == "/v1beta/models/gemini-3-pro-image-preview:generateContent"
    assert request.json["generationConfig"]["imageConfig"]["imageSize"] == "2K"
    text = _private_text(fake, usage) or ""
    assert "You: 1 image today, 1 image this month (about $0.13)." in text
    assert "This server: 1 image today, 1 image this month (about $0.13)." in text
    assert_every_interaction_answered_in_time(fake)


def _private_text(fake: object, payload: dict[str, object]) -> str | None:
    from tests.fakes.discord import FakeDiscord

    assert isinstance(fake, FakeDiscord)
    for message in fake.channel_messages():
        meta = message.interaction_metadata or {}
        if meta.get("id") == payload["id"] and message.ephemeral and message.content:
            return message.content
    return None


async def test_a_job_cut_off_by_a_restart_is_finished_in_the_same_response_by_the_next_process(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    fake_gemini.latency = 30.0
    async with discord_server() as fake:
        # no grace: the stop cuts the generation off, as a platform's SIGKILL after it would
        async with running_bot(
            tmp_path, fake_gemini, fake, IMAGEBOT_SHUTDOWN_GRACE_SECONDS=0
        ) as bot:
            payload = await bot.slash({"prompt": "a paper boat"})
            await fake_gemini.wait_for_requests(1)
        fake_gemini.latency = 0.0
        async with running_bot(tmp_path, fake_gemini, fake) as bot:
            result = await bot.result_of(payload)

    assert result.attachments and result.embeds[0]["description"] == "a paper boat"
    assert len(fake_gemini.requests) == 2  # the first answer never arrived, so it ran again
    assert_every_interaction_answered_in_time(fake)


async def test_history_lists_the_requesters_images_newest_first_with_jump_links(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    async with discord_server() as fake, running_bot(tmp_path, fake_gemini, fake) as bot:
        heron = await bot.result_of(await bot.slash({"prompt": "a heron"}))
        await bot.result_of(await bot.slash({"prompt": "a crane"}, user=OTHER))
        kingfisher = await bot.result_of(
            await bot.slash({"prompt": "a kingfisher", "aspect_ratio": "16:9"})
        )
        asked = await bot.slash(name="imagine-history")
        deferred = await bot.callback(asked)
        shown = await fake.wait_for_message(
            lambda m: (
                (m.interaction_metadata or {}).get("id") == asked["id"]
                and m.content.startswith("**Your images")
            )
        )

    assert deferred.json["type"] == 5 and deferred.json["data"]["flags"] & FLAG_EPHEMERAL
    root = f"https://discord.com/channels/{fake.guild_id}/{fake.channel_id}"
    lines = shown.content.splitlines()
    assert lines[0] == "**Your images, newest first** (page 1)"
    assert lines[1].startswith(
        f"• [a kingfisher]({root}/{kingfisher.id}) — Gemini 3.1 Flash Image · 16:9 · 1K, <t:"
    )
    assert lines[2].startswith(f"• [a heron]({root}/{heron.id}) — ")
    assert len(lines) == 3 and "crane" not in shown.content


async def test_blend_makes_one_image_from_two_and_names_the_limit_past_it(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    async with discord_server() as fake, running_bot(tmp_path, fake_gemini, fake) as bot:
        colours = ["red", "blue", *(f"#{n:02x}{n:02x}80" for n in range(20, 20 + 13))]
        photos = [fake.add_attachment(png(colour=c), f"{n}.png") for n, c in enumerate(colours)]
        two = await bot.slash(
            {"prompt": "as a watercolour"},
            name="blend",
            attachments={"image1": photos[0], "image2": photos[1]},
        )
        blended = await bot.result_of(two)
        too_many = await bot.slash(
            {"model": "pro"},
            name="blend",
            attachments={f"image{n + 1}": photo for n, photo in enumerate(photos[:15])},
        )
        refused = await bot.callback(too_many)

    assert blended.attachments
    assert len(fake_gemini.requests) == 1  # the refused blends cost nothing
    assert texts(contents_of(fake_gemini)) == [
        "Blend these images into one image: as a watercolour"
    ]
    assert [image_size(i) for i in inline_images(contents_of(fake_gemini))] == [(64, 48)] * 2
    assert refused.json["type"] == 4 and refused.json["data"]["flags"] & FLAG_EPHEMERAL
    assert "takes at most 14 reference images" in refused.json["data"]["content"]
