"""Conversations on Discord: mentions, replies to the bot's images (forks), DMs and the bot's
threads, with history and attachments reaching the image API."""

from __future__ import annotations

import base64
import io
from pathlib import Path

from PIL import Image

from tests.bots.test_discord_harness import (
    USER,
    contents_of,
    custom_ids,
    discord_server,
    image_size,
    png,
    running_bot,
    texts,
)
from tests.fakes.discord import INTENT_MESSAGE_CONTENT
from tests.fakes.gemini import FakeGemini, inline_images, pixel_size


async def test_a_mention_is_answered_with_a_reply_that_becomes_the_image(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    async with discord_server() as fake, running_bot(tmp_path, fake_gemini, fake) as bot:
        said = await bot.say("a fox in the snow --ar 9:16")
        result = await bot.reply_to(said)

    assert result.content == ""
    [attachment] = result.attachments
    assert image_size(attachment.data) == pixel_size("gemini-3.1-flash-image-preview", "9:16", "1K")
    assert result.embeds[0]["description"] == "a fox in the snow"
    assert custom_ids(result)[0].startswith("imagebot:reroll:")
    # the reply said "Queued" first and was edited into the result: one bot message
    [posted] = fake.calls_to("POST", rf"/channels/{fake.channel_id}/messages")
    assert posted.json["content"] == "⏳ Queued (#1)…"
    assert str(posted.json["message_reference"]["message_id"]) == said["id"]
    assert [m.id for m in fake.channel_messages() if m.author_id == fake.bot_user_id] == [result.id]
    assert texts(contents_of(fake_gemini)) == ["a fox in the snow"]


async def test_a_reply_with_a_photo_sends_the_history_and_the_photo(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    photo = png(40, 30, "blue")
    async with discord_server() as fake, running_bot(tmp_path, fake_gemini, fake) as bot:
        first = await bot.reply_to(await bot.say("a quiet harbour"))
        upload = fake.add_attachment(photo, "boat.png")
        # a reply that does not ping the bot still reaches it as a reply to its message
        said = await bot.say("add this boat", attachments=[upload], reply_to=first, mention=True)
        second = await bot.reply_to(said)

    assert second.attachments
    contents = contents_of(fake_gemini, 1)
    assert [c["role"] for c in contents] == ["user", "model", "user"]
    assert texts(contents)[0] == "a quiet harbour" and texts(contents)[-1] == "add this boat"
    assert inline_images(contents, "model") == [fake_gemini.responses[0].image]
    assert inline_images(contents[2:], "user") == [photo]
    assert len(fake.cdn_downloads) == 1


async def test_replying_to_an_older_image_forks_from_it(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    async with discord_server() as fake, running_bot(tmp_path, fake_gemini, fake) as bot:
        first = await bot.reply_to(await bot.say("a red barn"))
        second = await bot.reply_to(await bot.say("now in winter", reply_to=first))
        await bot.reply_to(await bot.say("now at night", reply_to=second))
        await bot.reply_to(await bot.say("now in autumn", reply_to=first))

    assert texts(contents_of(fake_gemini, 2)) == ["a red barn", "now in winter", "now at night"]
    forked = contents_of(fake_gemini, 3)
    assert texts(forked) == ["a red barn", "now in autumn"]
    assert inline_images(forked, "model") == [fake_gemini.responses[0].image]


async def test_a_message_delivered_twice_makes_one_image(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    async with discord_server() as fake, running_bot(tmp_path, fake_gemini, fake) as bot:
        said = await bot.say("a single lamp")
        await fake.dispatch("MESSAGE_CREATE", said)
        await bot.reply_to(said)
        # a later message proves the second copy was handled (and ignored) by now
        await bot.reply_to(await bot.say("a second lamp"))

    assert len(fake_gemini.requests) == 2
    replies = [
        m
        for m in fake.channel_messages()
        if (m.message_reference or {}).get("message_id") == said["id"]
    ]
    assert len(replies) == 1


async def test_a_refused_request_is_answered_in_one_sentence(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    async with discord_server() as fake, running_bot(tmp_path, fake_gemini, fake) as bot:
        said = await bot.say("a dog --model 2.5-flash --size 4K")
        answer = await fake.wait_for_message(
            lambda m: (m.message_reference or {}).get("message_id") == said["id"]
        )

    assert answer.content.startswith("⚠️ 4K is not available on Gemini 2.5 Flash Image")
    assert fake_gemini.requests == []


async def test_direct_messages_continue_the_latest_image(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    async with discord_server() as fake, running_bot(tmp_path, fake_gemini, fake) as bot:
        dm = fake.add_dm_channel(USER)
        first = await bot.reply_to(await bot.say("a paper crane", mention=False, channel_id=dm))
        await bot.reply_to(await bot.say("make it gold", mention=False, channel_id=dm))

    assert first.channel_id == dm and first.attachments
    assert texts(contents_of(fake_gemini, 1)) == ["a paper crane", "make it gold"]


async def test_direct_messages_are_ignored_when_turned_off(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    async with (
        discord_server() as fake,
        running_bot(tmp_path, fake_gemini, fake, DISCORD_DMS="false") as bot,
    ):
        dm = fake.add_dm_channel(USER)
        await bot.say("a paper crane", mention=False, channel_id=dm)
        # a mention in the channel afterwards is answered, so the DM was seen and skipped
        await bot.reply_to(await bot.say("a heron"))

    assert texts(contents_of(fake_gemini)) == ["a heron"]
    assert fake.channel_messages(dm)[-1].author_id == USER


async def test_with_thread_messages_a_mention_opens_a_thread_that_continues_without_mentions(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    async with (
        discord_server() as fake,
        running_bot(tmp_path, fake_gemini, fake, DISCORD_THREAD_MESSAGES="true") as bot,
    ):
        said = await bot.say("a castle on a hill")
        thread_id = int(said["id"])
        first = await fake.wait_for_message(
            lambda m: bool(m.attachments), channel_id=thread_id, timeout=10
        )
        await bot.delivered(first)
        await bot.say("add a dragon", mention=False, channel_id=thread_id)
        second = await fake.wait_for_message(
            lambda m: bool(m.attachments) and m.id != first.id, channel_id=thread_id
        )
        await bot.delivered(second)

    assert fake.channels[thread_id]["name"] == "a castle on a hill"
    assert first.message_reference is None  # in its own thread, the result needs no reply arrow
    assert texts(contents_of(fake_gemini, 1)) == ["a castle on a hill", "add a dragon"]
    assert (fake.intents or 0) & INTENT_MESSAGE_CONTENT


async def test_without_thread_messages_plain_chatter_is_ignored(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    async with discord_server() as fake, running_bot(tmp_path, fake_gemini, fake) as bot:
        await bot.say("just chatting about lighthouses", mention=False)
        await bot.reply_to(await bot.say("a lighthouse"))

    assert len(fake_gemini.requests) == 1


async def test_an_iphone_heic_photo_reaches_the_image_api_as_a_jpeg(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    photo = io.BytesIO()
    Image.new("RGB", (48, 32), (20, 90, 200)).save(photo, format="HEIF", quality=90)
    async with discord_server() as fake, running_bot(tmp_path, fake_gemini, fake) as bot:
        upload = fake.add_attachment(photo.getvalue(), "IMG_0042.HEIC", "image/heic")
        result = await bot.reply_to(await bot.say("make it a postcard", attachments=[upload]))

    assert result.attachments
    [sent] = [
        part["inlineData"] for part in contents_of(fake_gemini)[-1]["parts"] if "inlineData" in part
    ]
    assert sent["mimeType"] == "image/jpeg"
    with Image.open(io.BytesIO(base64.b64decode(sent["data"]))) as seen:
        assert (seen.format, seen.size) == ("JPEG", (48, 32))
        red, _, blue = seen.getpixel((24, 16))
        assert blue > 150 and red < 80  # the photo's colour, not a grey placeholder


async def test_a_mention_of_the_bots_own_role_is_a_mention_of_the_bot(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    async with discord_server() as fake, running_bot(tmp_path, fake_gemini, fake) as bot:
        # whether Discord shows a role mention's text to a bot without the Message Content
        # intent is not documented; the text is shown here, as with that intent
        fake.enforce_message_content_intent = False
        # Discord's autocomplete offers the bot's managed role as readily as the bot
        said = fake.message_create(f"<@&{fake.bot_role_id}> a moth at noon", author_id=USER)
        said["mention_roles"] = [str(fake.bot_role_id)]
        await fake.dispatch("MESSAGE_CREATE", said)
        result = await bot.reply_to(said)

    assert result.embeds[0]["description"] == "a moth at noon"
    assert texts(contents_of(fake_gemini)) == ["a moth at noon"]


async def test_a_voice_message_to_the_bot_gets_a_sentence_not_a_request_for_words(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    async with discord_server() as fake, running_bot(tmp_path, fake_gemini, fake) as bot:
        dm = fake.add_dm_channel(USER)
        voice = fake.add_attachment(b"OggS" + bytes(60), "voice-message.ogg", "audio/ogg")
        said = fake.message_create("", author_id=USER, channel_id=dm, attachments=[voice])
        said["flags"] = 8192  # IS_VOICE_MESSAGE
        await fake.dispatch("MESSAGE_CREATE", said)
        answer = await fake.wait_for_message(
            lambda m: (m.message_reference or {}).get("message_id") == said["id"], channel_id=dm
        )

        counts = await bot.service.store.counts()

    assert "cannot listen to voice messages" in answer.content
    assert "Tell me what to do" not in answer.content
    assert fake_gemini.requests == []
    assert counts["jobs"] == 0


async def test_an_image_forwarded_into_a_dm_is_used_from_its_snapshot(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    async with discord_server() as fake, running_bot(tmp_path, fake_gemini, fake) as bot:
        dm = fake.add_dm_channel(USER)
        photo = fake.add_attachment(png(32, 24), "fwd.png", "image/png", channel_id=dm)
        forward = fake.message_create("", author_id=USER, channel_id=dm)
        # a forward has no text or files of its own: they come in its snapshot
        forward["message_reference"] = {
            "type": 1,
            "message_id": "1234567890123",
            "channel_id": "2345678901234",
            "guild_id": str(fake.guild_id),
        }
        forward["message_snapshots"] = [
            {
                "message": {
                    "type": 0,
                    "content": "a kite over the dunes",
                    "embeds": [],
                    "attachments": [photo],
                    "timestamp": "2026-11-29T12:00:00.000000+00:00",
                    "edited_timestamp": None,
                    "flags": 0,
                    "mentions": [],
                    "mention_roles": [],
                }
            }
        ]
        await fake.dispatch("MESSAGE_CREATE", forward)
        result = await bot.reply_to(forward)

    assert len(result.attachments) == 1
    user_turn = contents_of(fake_gemini)[-1]
    assert texts([user_turn]) == ["a kite over the dunes"]
    assert inline_images([user_turn]) == [png(32, 24)]


async def test_messages_for_the_bot_with_nothing_to_read_get_a_sentence_not_silence(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    async with discord_server() as fake, running_bot(tmp_path, fake_gemini, fake) as bot:
        # a role mention reaches a bot without the Message Content intent without its text
        by_role = fake.message_create(f"<@&{fake.bot_role_id}> a moth at noon", author_id=USER)
        by_role["mention_roles"] = [str(fake.bot_role_id)]
        await fake.dispatch("MESSAGE_CREATE", by_role)
        dm = fake.add_dm_channel(USER)
        sticker = fake.message_create("", author_id=USER, channel_id=dm)
        sticker["sticker_items"] = [
            {"id": "749053441527251087", "name": "Scared", "format_type": 3}
        ]
        await fake.dispatch("MESSAGE_CREATE", sticker)
        answers = [
            await fake.wait_for_message(
                lambda m, said=said: (m.message_reference or {}).get("message_id") == said["id"]
            )
            for said in (by_role, sticker)
        ]
        counts = await bot.service.store.counts()

    assert "mention me (the bot, not the role)" in answers[0].content
    assert "cannot draw from a sticker" in answers[1].content
    assert counts["jobs"] == 0
