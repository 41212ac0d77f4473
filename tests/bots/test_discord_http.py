"""Discord interactions over HTTP (DISCORD_PUBLIC_KEY): signed requests only, the first answer
in the HTTP response, then the same delivery through the interaction's webhook."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import aiohttp

from tests.bots.test_discord_harness import (
    USER,
    callbacks,
    custom_ids,
    discord_server,
    image_size,
    running_bot,
)
from tests.fakes.discord import FLAG_EPHEMERAL, FakeDiscord
from tests.fakes.gemini import FakeGemini, pixel_size

FLASH = "gemini-3.1-flash-image-preview"


def http_settings(fake: FakeDiscord, **values: str) -> dict[str, str]:
    return {"DISCORD_PUBLIC_KEY": fake.public_key, "PORT": "0", **values}


async def test_a_signed_ping_gets_pong(tmp_path: Path, fake_gemini: FakeGemini) -> None:
    async with (
        discord_server() as fake,
        running_bot(tmp_path, fake_gemini, fake, **http_settings(fake)),
    ):
        answer = await fake.post_interaction(fake.interaction_ping())

    assert (answer.status, answer.body) == (200, {"type": 1})


async def test_unsigned_forged_and_stale_requests_get_401_and_start_nothing(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    async with (
        discord_server() as fake,
        running_bot(tmp_path, fake_gemini, fake, **http_settings(fake)) as bot,
    ):
        imagine = bot.slash_payload({"prompt": "a forged fox"})
        raw = json.dumps(imagine).encode()
        now = str(int(time.time()))
        other_key = FakeDiscord()  # another application's key signs just as well
        refused = [
            # signed by someone else
            await fake.post_interaction(imagine, signature=other_key.sign(now, raw), body=raw),
            # Discord's signature over a different body
            await fake.post_interaction(
                imagine, signature=fake.sign(now, raw), body=raw.replace(b"forged", b"tamper")
            ),
            # a captured request replayed ten minutes later
            await fake.post_interaction(imagine, timestamp=str(int(time.time()) - 600)),
            await fake.post_interaction(imagine, signature="", timestamp=""),
            await fake.post_interaction(imagine, signature="not hex"),
            await fake.post_interaction(fake.interaction_ping(), signature="00" * 64),
        ]
        counts = await bot.service.store.counts()

    assert [answer.status for answer in refused] == [401] * 6
    assert fake_gemini.requests == []
    assert counts["jobs"] == 0
    assert fake.calls_to("PATCH", r"/webhooks/.*") == []


async def test_imagine_over_http_is_deferred_in_the_response_and_delivered_by_webhook(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    fake_gemini.latency = 0.2
    async with (
        discord_server() as fake,
        running_bot(tmp_path, fake_gemini, fake, **http_settings(fake)) as bot,
    ):
        payload = bot.slash_payload({"prompt": "a lighthouse at dusk", "aspect_ratio": "16:9"})
        answer = await fake.post_interaction(payload)
        result = await bot.result_of(payload)
        again = await fake.post_interaction(payload)  # the same signed request, sent again

    assert (answer.status, answer.body) == (200, {"type": 5})
    assert answer.seconds < 3.0
    assert callbacks(fake) == []  # nothing went to the callback endpoint
    [attachment] = result.attachments
    assert image_size(attachment.data) == pixel_size(FLASH, "16:9", "1K")
    assert result.embeds[0]["description"] == "a lighthouse at dusk"
    assert fake.calls_to("PATCH", r"/webhooks/1000/[^/]+/messages/@original")
    assert again.status == 401
    assert len(fake_gemini.requests) == 1


async def test_a_refused_option_is_answered_privately_in_the_response(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    async with (
        discord_server() as fake,
        running_bot(tmp_path, fake_gemini, fake, **http_settings(fake)) as bot,
    ):
        answer = await fake.post_interaction(
            bot.slash_payload({"prompt": "a cat", "model": "2.5-flash", "size": "4K"})
        )

    assert answer.status == 200
    assert answer.body["type"] == 4
    assert answer.body["data"]["flags"] & FLAG_EPHEMERAL
    assert "4K is not available on Gemini 2.5 Flash Image" in answer.body["data"]["content"]
    assert fake_gemini.requests == []


async def test_buttons_the_edit_form_settings_and_usage_work_over_http(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    async with (
        discord_server() as fake,
        running_bot(tmp_path, fake_gemini, fake, **http_settings(fake)) as bot,
    ):
        first = bot.slash_payload({"prompt": "a red boat"})
        await fake.post_interaction(first)
        result = await bot.result_of(first)
        job = custom_ids(result)[0].rsplit(":", 1)[1]

        reroll = fake.interaction_component(f"imagebot:reroll:{job}", result, user_id=USER)
        reroll_answer = await fake.post_interaction(reroll)
        rerolled = await bot.result_of(reroll)

        edit = fake.interaction_component(f"imagebot:edit:{job}", result, user_id=USER)
        form = await fake.post_interaction(edit)
        submit = fake.interaction_modal_submit(
            f"imagebot:edit-form:{job}", {"change": "make it night"}, user_id=USER, message=result
        )
        submit_answer = await fake.post_interaction(submit)
        edited = await bot.result_of(submit)

        upscale = fake.interaction_component(f"imagebot:upscale:2K:{job}", result, user_id=USER)
        upscale_answer = await fake.post_interaction(upscale)
        upscaled = await bot.result_of(upscale)
        delete = fake.interaction_component(custom_ids(upscaled)[-1], upscaled, user_id=USER)
        delete_answer = await fake.post_interaction(delete)
        await fake.wait_until(
            lambda: any(m.id == upscaled.id for m in fake.deleted_messages),
            10.0,
            lambda: "the upscaled image deleted",
        )

        settings = await fake.post_interaction(
            bot.slash_payload({"size": "2K"}, name="imagine-settings")
        )
        history = await fake.post_interaction(bot.slash_payload(name="imagine-history"))
        usage_payload = bot.slash_payload(name="imagine-usage")
        usage = await fake.post_interaction(usage_payload)
        await fake.wait_until(
            lambda: _original_content(fake, usage_payload) is not None, 10.0, lambda: "usage"
        )
        usage_text = _original_content(fake, usage_payload) or ""

    assert reroll_answer.body == {"type": 5}
    assert rerolled.attachments
    assert form.body["type"] == 9
    assert form.body["data"]["custom_id"] == f"imagebot:edit-form:{job}"
    assert submit_answer.body == {"type": 5}
    assert upscale_answer.body == {"type": 5}
    assert image_size(upscaled.attachments[0].data) == pixel_size(FLASH, "1:1", "2K")
    assert delete_answer.body == {"type": 6}
    assert edited.attachments
    assert "make it night" in json.dumps(fake_gemini.requests[2].json)  # the edit
    for private in (settings, usage, history):
        assert private.body["type"] == 5
        assert private.body["data"]["flags"] & FLAG_EPHEMERAL
    assert "image" in usage_text.lower()
    assert callbacks(fake) == []


def _original_content(fake: FakeDiscord, payload: dict[str, Any]) -> str | None:
    for message in fake.channel_messages():
        meta = message.interaction_metadata or {}
        if meta.get("id") == payload["id"] and not message.loading and message.content:
            return message.content
    return None


async def test_http_workers_without_a_gateway_serve_commands_health_and_metrics(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    async with (
        discord_server() as fake,
        running_bot(
            tmp_path, fake_gemini, fake, **http_settings(fake, DISCORD_GATEWAY="false")
        ) as bot,
    ):
        payload = bot.slash_payload({"prompt": "a quiet harbour"})
        answer = await fake.post_interaction(payload)
        result = await bot.result_of(payload)
        root = f"http://127.0.0.1:{bot.app.port}"
        async with aiohttp.ClientSession() as session:
            async with session.get(f"{root}/healthz") as health:
                healthy = health.status
            async with session.get(f"{root}/metrics") as metrics:
                exported = await metrics.text()

    assert fake.connections == 0  # no gateway session at all
    assert answer.body == {"type": 5}
    assert result.attachments
    assert healthy == 200
    assert "imagebot_jobs_total" in exported


async def test_a_user_installed_command_in_a_group_dm_is_answered_through_the_interaction(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    async with (
        discord_server() as fake,
        running_bot(tmp_path, fake_gemini, fake, **http_settings(fake)) as bot,
    ):
        group_dm = fake.add_dm_channel(USER)
        payload = bot.slash_payload(
            {"prompt": "a paper crane"}, channel_id=group_dm, user_install=True
        )
        answer = await fake.post_interaction(payload)
        result = await bot.result_of(payload)

    assert answer.body == {"type": 5}
    assert result.attachments
    # only the interaction's webhook reached the channel: the bot posted nothing itself
    assert fake.calls_to("POST", r"/channels/\d+/messages") == []
