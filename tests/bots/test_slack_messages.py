"""What the bot says in Slack: status messages, buttons, help, usage and modals."""

from __future__ import annotations

import json
from dataclasses import replace
from typing import Any

from bots.slack import messages
from core import wording
from core.catalog import load_catalog
from core.jobs import Job, UsageReport, UsageSummary
from core.options import Options
from core.quotas import Limits

CATALOG = load_catalog()


def _job(**changes: Any) -> Job:
    job = Job(
        id="job1",
        idempotency_key="k",
        kind="generate",
        platform="slack",
        tenant="T1",
        user_id="U1",
        conversation_id=1,
        user_turn_id=1,
        prompt="a lighthouse at dusk",
        options=Options(
            model="gemini-3-pro-image-preview", aspect_ratio="16:9", size="2K", text=False
        ),
        target={"channel": "C1", "user": "U1"},
        state="queued",
    )
    return replace(job, **changes)


def _buttons(message: messages.Message) -> list[dict[str, Any]]:
    return [e for b in message["blocks"] if b["type"] == "actions" for e in b["elements"]]


def test_escape_makes_mentions_and_links_inert() -> None:
    assert messages.escape("<!channel> & <@U2> <https://x>") == (
        "&lt;!channel&gt; &amp; &lt;@U2&gt; &lt;https://x&gt;"
    )


def test_options_are_described_as_people_read_them() -> None:
    assert messages.describe(_job().options, CATALOG) == "Gemini 3 Pro Image · 16:9 · 2K"
    flash = Options(model="flash", temperature=0.4, text=True)
    assert messages.describe(flash, CATALOG) == (
        "Gemini 3.1 Flash Image · 1K · temp 0.4 · with text"
    )
    assert messages.describe(Options(model="retired-model", size="1K"), CATALOG) == (
        "retired-model · 1K"
    )


def test_elapsed_times_read_naturally() -> None:
    assert [messages.elapsed(s) for s in (0.2, 14.4, 60, 125)] == [
        "under a second",
        "14 s",
        "1 min",
        "2 min 5 s",
    ]


def test_status_message_shows_who_asked_the_prompt_the_options_and_the_state() -> None:
    queued = messages.queued(_job(prompt="a <!channel> sign\nsecond line"), CATALOG, 3)
    section = queued["blocks"][0]["text"]["text"]
    assert section == "<@U1> asked for:\n>a &lt;!channel&gt; sign\n>second line"
    assert queued["blocks"][1]["elements"][0]["text"] == "Gemini 3 Pro Image · 16:9 · 2K"
    assert queued["blocks"][2]["text"]["text"] == ":hourglass_flowing_sand: Queued (#3)"
    assert queued["text"].startswith("<@U1>: a &lt;!channel&gt; sign")
    # only Cancel while it waits, carrying only the job id
    assert [(b["action_id"], b["value"]) for b in _buttons(queued)] == [("imagebot.cancel", "job1")]

    assert messages.generating(_job(), CATALOG, 0.3)["blocks"][2]["text"]["text"] == (
        ":art: Generating…"
    )
    assert messages.generating(_job(), CATALOG, 12.2)["text"].endswith(":art: Generating… 12 s")


def test_a_long_prompt_is_clipped_to_fit_a_section() -> None:
    shown = messages.queued(_job(prompt="word " * 1000), CATALOG, 1)["blocks"][0]["text"]["text"]
    assert len(shown) < 3000 and shown.endswith("…")


def test_done_carries_the_notice_and_buttons_with_only_the_job_id() -> None:
    done = messages.done(
        _job(state="succeeded"),
        CATALOG,
        seconds=14.2,
        notice="Two older images were left out.",
        upscale_sizes=["4K"],
        images_below=False,
    )
    text = json.dumps(done["blocks"])
    assert ":white_check_mark: Done in 14 s: the image is in the thread." in text
    assert "Two older images were left out." in text
    assert [(b["action_id"], b["value"]) for b in _buttons(done)] == [
        ("imagebot.reroll", "job1"),
        ("imagebot.upscale.4K", "job1"),
        ("imagebot.edit", "job1"),
        ("imagebot.vary", "job1"),
        ("imagebot.delete", "job1"),
    ]
    assert _buttons(done)[-1]["confirm"]["confirm"]["text"] == "Delete"
    below = messages.done(
        _job(), CATALOG, seconds=None, notice=None, upscale_sizes=[], images_below=True
    )
    assert ":white_check_mark: Done: the image is below." in below["text"]


def test_a_failure_shows_the_reason_and_what_the_model_said_without_buttons() -> None:
    failed = messages.failed(_job(), CATALOG, "The model answered in words.", "I won't <draw>")
    assert failed["blocks"][2]["text"]["text"] == ":warning: The model answered in words."
    assert "The model said: I won't &lt;draw&gt;" in json.dumps(failed["blocks"])
    assert not _buttons(failed)


def test_upscale_and_reroll_say_what_was_asked() -> None:
    upscale = messages.queued(_job(kind="upscale", prompt=wording.UPSCALE_PROMPT), CATALOG, 1)
    assert upscale["blocks"][0]["text"]["text"] == "<@U1> asked for a 2K version of the image."
    reroll = messages.queued(_job(kind="reroll", user_id="U2"), CATALOG, 1)
    assert reroll["blocks"][0]["text"]["text"].startswith("<@U2> asked for another take on:")


def test_help_names_every_option_and_model() -> None:
    text = messages.help_text(CATALOG, command="/imagine", bot_user_id="U0BOT")
    for needle in (
        "--ar 16:9",
        "--size 2K",
        "--model pro",
        "--temp 0.4",
        "--text",
        "/imagine settings",
        "/imagine usage",
        "<@U0BOT>",
        "21:9",
    ):
        assert needle in text
    for model in CATALOG.models:
        assert model.name in text
    assert "Gemini 3.1 Flash Image* (default)" in text


def test_usage_counts_images_cost_and_limits() -> None:
    report = UsageReport(
        user=UsageSummary(images=1, cost_usd=0.067),
        tenant=UsageSummary(images=12, failed=2, cost_usd=1.2345),
        user_today=1,
        tenant_today=5,
        limits=Limits(daily_per_user=20, monthly_budget_usd=50),
    )
    assert messages.usage_text(report, "March") == (
        "*Images in March so far* (estimated cost):\n"
        "• You: 1 of 20 images today, 1 image this month (about $0.07).\n"
        "• This workspace: 5 images today, 12 images this month (about $1.23 of the $50.00 "
        "monthly budget).\n"
        "• Daily limits reset at 00:00 UTC, the budget on the 1st of the month."
    )


def test_settings_modal_starts_from_the_saved_defaults() -> None:
    view = messages.settings_view(
        CATALOG, Options(model="gemini-3-pro-image-preview", aspect_ratio="4:3")
    )
    selects = {b["block_id"]: b["element"] for b in view["blocks"] if b["type"] == "input"}
    assert selects["model"]["initial_option"]["value"] == "gemini-3-pro-image"
    assert selects["aspect_ratio"]["initial_option"]["value"] == "4:3"
    assert selects["size"]["initial_option"]["value"] == messages.DEFAULT_CHOICE
    ratios = [o["value"] for o in selects["aspect_ratio"]["options"]][1:]
    assert ratios[0] == "1:8" and ratios[-1] == "8:1"
    every_option = [o for s in selects.values() for o in s["options"]]
    assert all(len(o["text"]["text"]) <= messages.OPTION_TEXT_CHARS for o in every_option)


def test_edit_modal_carries_the_job_id() -> None:
    view = messages.edit_view(_job())
    assert (view["callback_id"], view["private_metadata"]) == (messages.EDIT_CALLBACK, "job1")
    assert view["blocks"][1]["block_id"] == messages.EDIT_BLOCK
