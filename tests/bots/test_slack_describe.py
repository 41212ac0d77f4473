"""Describe on Slack: a mention with `describe` and an image gets prompts, each with a
button that makes it; `/imagine describe` says how, since a command carries no files."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.bots.test_slack_app import png_bytes, running
from tests.fakes.gemini import FakeGemini


async def test_describe_answers_with_prompts_whose_button_makes_one(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    async with running(tmp_path, fake_gemini) as slack:
        photo = slack.fake.add_file(png_bytes(64, 48), name="sea.png", mimetype="image/png")
        mention = slack.fake.app_mention_event("describe", channel="C1", files=[photo])
        await slack.event(mention)

        def described() -> dict[str, Any] | None:
            return next(
                (m for m in slack.fake.messages.values() if "Prompts that would make" in m["text"]),
                None,
            )

        answer = await slack.fake.wait_until(described)
        assert answer["thread_ts"] == mention["ts"]  # in the thread of the mention
        [actions] = [b for b in answer["blocks"] if b["type"] == "actions"]
        buttons = actions["elements"]
        assert [b["text"]["text"] for b in buttons] == [f"Imagine {n}" for n in range(1, 5)]
        assert buttons[1]["value"] == "a wide picture, mostly red, as a watercolour"
        assert "*2.* a wide picture, mostly red, as a watercolour" in str(answer["blocks"])
        assert await slack.job_count() == 0

        status = (answer["channel"], answer["ts"])
        await slack.click("imagebot.imagine", status=status, block_id="imagebot.describe")
        made = await slack.status_posted()
        card = await slack.final(made)

    assert made[0] == "C1" and slack.fake.messages[made].get("thread_ts") is None
    assert "a wide picture, mostly red, as a photograph" in str(card["blocks"])
    [describe_call, generate_call] = fake_gemini.requests
    assert describe_call.path.endswith("/gemini-3.5-flash-lite:generateContent")
    assert generate_call.json["contents"][0]["parts"] == [
        {"text": "a wide picture, mostly red, as a photograph"}
    ]


async def test_imagine_describe_says_how_and_describe_without_an_image_is_a_prompt(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    async with running(tmp_path, fake_gemini) as slack:
        await slack.command("describe")
        told = await slack.fake.wait_until(lambda: slack.fake.ephemerals)
        await slack.event(slack.fake.app_mention_event("describe a storm", channel="C1"))
        await slack.final(await slack.status_posted())

    assert told[0]["text"].startswith(
        "A slash command cannot carry images: to have one described, mention me"
    )
    [call] = fake_gemini.requests  # an image of "describe a storm", not a description
    assert "image" in call.path
