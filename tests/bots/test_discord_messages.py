"""The pure parts of the Discord adapter: texts, embeds, targets, routing, forms and buttons."""

from __future__ import annotations

import gc
import re
import sys
import tracemalloc

import aiohttp.payload

from bots.discord import components, messages
from bots.discord.conversations import MessageFacts, route, thread_name, without_mention
from bots.discord.delivery import Rendered
from bots.discord.forms import form_values, precheck
from bots.discord.target import Target
from core.catalog import load_catalog
from core.errors import UserFacingError
from core.jobs import Job, Outcome, UsageReport, UsageSummary
from core.options import Options
from core.quotas import Limits

CATALOG = load_catalog()
JOB_ID = "0123456789abcdef0123456789abcdef"


def _job(**changes: object) -> Job:
    values: dict[str, object] = {
        "id": JOB_ID,
        "idempotency_key": "discord:interaction:1",
        "kind": "generate",
        "platform": "discord",
        "tenant": "1",
        "user_id": "42",
        "conversation_id": 1,
        "user_turn_id": 1,
        "prompt": "a lighthouse at dusk",
        "options": Options(model="gemini-3-pro-image-preview", aspect_ratio="16:9", size="2K"),
        "target": {},
        "state": "succeeded",
        **changes,
    }
    return Job(**values)  # type: ignore[arg-type]


def test_mentions_in_user_text_are_broken_so_they_never_ping() -> None:
    text = "hi @everyone and @here, <@1>, <@!2> and <@&3>; mail me at a@b.c"
    assert messages.no_ping(text) == (
        "hi @\u200beveryone and @\u200bhere, <@\u200b1>, <@\u200b!2> and <@\u200b&3>; "
        "mail me at a@b.c"
    )


def test_progress_texts_name_the_place_in_line_and_the_time_spent() -> None:
    assert messages.queued(3) == "⏳ Queued (#3)…"
    assert messages.generating(0.2) == "🎨 Generating…"
    assert messages.generating(12.4) == "🎨 Generating… 12 s"


def test_the_result_embed_shows_prompt_options_requester_the_models_words_and_notes() -> None:
    job = _job(options=Options(model="gemini-3-pro-image-preview", size="2K", text=True))
    outcome = Outcome(text="A lighthouse, as asked.")
    embed = messages.result_embed(
        job, outcome, CATALOG, image_name="x.png", notes=["the image was made smaller"]
    ).to_dict()
    assert embed["description"] == "a lighthouse at dusk"
    assert [(f["name"], f["value"]) for f in embed["fields"]] == [
        ("Options", "Gemini 3 Pro Image · 2K · with text"),
        ("Requested by", "<@42>"),
        ("Model", "A lighthouse, as asked."),
    ]
    assert embed["image"]["url"] == "attachment://x.png"
    assert embed["footer"]["text"] == "The image was made smaller."


def test_an_upscale_is_titled_with_its_size_and_keeps_its_instruction_out_of_sight() -> None:
    embed = messages.result_embed(
        _job(kind="upscale"), Outcome(), CATALOG, image_name=None, notes=[]
    ).to_dict()
    assert embed["title"] == "🔍 Upscaled to 2K" and "description" not in embed


def test_upload_limits_are_named_in_whole_megabytes_and_files_fitted_under_them() -> None:
    assert messages.display_limit(10 * 1024 * 1024) == 10_000_000
    assert messages.display_limit(25 * 1024 * 1024) == 26_000_000
    assert messages.display_limit(250_000) == 200_000


def test_usage_counts_images_and_cost_for_the_user_and_the_server() -> None:
    from datetime import UTC, datetime

    report = UsageReport(
        user=UsageSummary(images=1, cost_usd=0.134, by_model={"gemini-3-pro-image-preview": 1}),
        tenant=UsageSummary(
            images=4,
            failed=1,
            cost_usd=0.402,
            # jobs from before the current ids, and after: one model
            by_model={"gemini-3-pro-image-preview": 3, "gemini-3-pro-image": 1},
        ),
        user_today=1,
        tenant_today=2,
        limits=Limits(daily_per_user=10),
        tenant_noun="server",
    )
    month = datetime(2025, 3, 1, tzinfo=UTC)
    text = messages.usage_text(report, CATALOG, month, in_server=True)
    assert "since 1 March" in text
    assert "You: 1 of 10 images today, 1 image this month (about $0.13)." in text
    assert "This server: 2 images today, 4 images this month (about $0.40)." in text
    assert "By model: Gemini 3 Pro Image 4" in text
    assert "Daily limits reset at 00:00 UTC" in text
    in_dm = messages.usage_text(report, CATALOG, month, in_server=False)
    assert "This server" not in in_dm and "By model: Gemini 3 Pro Image 1" in in_dm


def test_a_target_survives_the_round_trip_through_the_store() -> None:
    target = Target(channel_id=1, guild_id=None, requester_id=2, app_id=3, token="t")
    assert Target.from_dict(target.to_dict()) == target
    assert Target.from_dict({**target.to_dict(), "unknown": 1}) == target
    assert not target.token_usable(0.0)  # no expiry known: never trusted
    assert Target(1, 2, 3, app_id=4, token="t", token_expires_at=10.0).token_usable(9.0)


def _facts(**changes: bool) -> MessageFacts:
    values = {
        "in_dm": False,
        "mentions_bot": False,
        "replies_to_bot": False,
        "in_bot_thread": False,
        "readable": True,
        **changes,
    }
    return MessageFacts(**values)


def test_which_messages_are_requests_and_how_they_continue() -> None:
    def decide(**facts: bool) -> str | None:
        return route(_facts(**facts), dms=True, thread_messages=False)

    assert decide() is None
    assert decide(mentions_bot=True) == "mention"
    assert decide(mentions_bot=True, replies_to_bot=True) == "reply"
    assert decide(in_bot_thread=True) is None  # needs thread messages on
    assert decide(in_bot_thread=True, mentions_bot=True) == "thread"
    assert route(_facts(in_bot_thread=True), dms=True, thread_messages=True) == "thread"
    assert route(_facts(in_bot_thread=True, replies_to_bot=True), dms=True, thread_messages=True)
    assert decide(in_dm=True) == "dm"
    assert decide(in_dm=True, replies_to_bot=True) == "reply"
    assert route(_facts(in_dm=True), dms=False, thread_messages=False) is None
    assert decide(mentions_bot=True, readable=False) is None


def test_the_bots_mention_is_taken_out_of_the_prompt_and_threads_are_named_from_it() -> None:
    assert without_mention("<@7> a cat <@!7> --ar 1:1", 7) == "a cat   --ar 1:1"
    assert without_mention("<@8> hi", 7) == "<@8> hi"
    assert without_mention("<@&70> a cat <@&71>", 7, role_id=70) == "a cat <@&71>"
    assert thread_name("a castle @everyone\nsecond line") == "a castle @\u200beveryone"
    assert thread_name("x" * 200).endswith("…") and len(thread_name("x" * 200)) == 90


def test_the_precheck_refuses_what_the_service_would_refuse_before_any_io() -> None:
    precheck("a cat --ar 16:9", Options(), CATALOG, reference_images=0, max_prompt_chars=100)
    for text, typed, fragment in [
        ("a cat", Options(model="2.5-flash", size="4K"), "4K is not available"),
        ("a cat --size 9K", Options(), "`--size` must be one of"),
        ("", Options(), "Tell me what to draw"),
        ("a cat", Options(model="nope"), "There is no model called 'nope'"),
    ]:
        try:
            precheck(text, typed, CATALOG, reference_images=0, max_prompt_chars=100)
        except UserFacingError as exc:
            assert fragment in exc.message
        else:
            raise AssertionError(f"{text!r} {typed} passed")


def test_form_values_are_read_from_action_rows_and_labels() -> None:
    data = {
        "custom_id": "f",
        "components": [
            {"type": 1, "components": [{"type": 4, "custom_id": "change", "value": "night"}]},
            {"type": 18, "component": {"type": 4, "custom_id": "other", "value": "x"}},
        ],
    }
    assert form_values(data) == {"change": "night", "other": "x"}
    assert form_values(None) == {}


def test_button_ids_carry_the_job_fit_discords_limit_and_match_their_templates() -> None:
    view = components.result_view(JOB_ID, ["2K", "4K"])
    ids = [item.custom_id for item in view.children]  # type: ignore[attr-defined]
    assert ids == [
        f"imagebot:reroll:{JOB_ID}",
        f"imagebot:upscale:2K:{JOB_ID}",
        f"imagebot:upscale:4K:{JOB_ID}",
        f"imagebot:edit:{JOB_ID}",
        f"imagebot:vary:{JOB_ID}",
        f"imagebot:delete:{JOB_ID}",
    ]
    assert all(len(custom_id) <= 100 for custom_id in ids)
    templates = [item.__discord_ui_compiled_template__ for item in components.DYNAMIC_ITEMS]
    assert all(sum(bool(t.fullmatch(i)) for t in templates) == 1 for i in ids)
    form = components.edit_form(JOB_ID, 4000)
    assert components.EDIT_FORM.fullmatch(form.custom_id)
    assert re.fullmatch(r"imagebot:edit-form:[0-9a-f]{32}", form.custom_id)


def test_an_image_is_uploaded_without_a_copy_of_its_bytes() -> None:
    """aiohttp sizes an upload with getbuffer(), which copies a BytesIO's bytes: 6.5 MB per 4K
    upload held until it is sent, outside the memory budget."""
    image = bytes(20_000_000)
    rendered = Rendered(files=[("image.png", image)])
    tracemalloc.start()
    try:
        [file] = rendered.discord_files()
        upload = aiohttp.payload.get_payload(file.fp)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()

    assert upload.size == len(image)
    assert peak < 1_000_000
    assert file.fp.read() == image


def test_an_uploaded_image_is_let_go_after_the_attempt_without_the_garbage_collector() -> None:
    """discord.py's File leaves the file object it was handed in a reference cycle and never
    closes it: unreleased, each image stayed in memory until the collector's next full pass
    (~450 MB more at the peak of a burst of 200 4K images)."""
    image = bytes(20_000_000)
    held = sys.getrefcount(image)
    rendered = Rendered(files=[("image.png", image)])
    gc.disable()
    try:
        for _ in range(2):  # every attempt makes its own uploads
            [file] = rendered.discord_files()
            file.reset()
            assert file.fp.read() == image
            file.close()  # what discord.py does once the request is over
            del file
            rendered.release_files()
            assert sys.getrefcount(image) == held + 1  # the Rendered's own
    finally:
        gc.enable()
