"""The Home tab: a person's recent images, their settings (changed from there) and usage."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.bots.test_slack_app import running
from tests.fakes.gemini import FakeGemini


def _text(view: dict[str, Any]) -> str:
    return "\n".join(
        str(block.get("text", {}).get("text", ""))
        for block in view["blocks"]
        if isinstance(block.get("text"), dict)
    )


async def test_the_home_tab_shows_recent_images_settings_and_usage_and_settings_change_there(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    async with running(tmp_path, fake_gemini) as slack:
        await slack.command("a heron", user="U1")
        status = await slack.status_posted()
        await slack.final(status)

        await slack.event(slack.fake.app_home_opened_event("U1", tab="messages"))
        await slack.event(slack.fake.app_home_opened_event("U1"))
        home = await slack.fake.wait_until(lambda: slack.fake.home_views.get("U1"))
        first = _text(home)
        [change] = [b["accessory"] for b in home["blocks"] if "accessory" in b]

        click = slack.fake.home_action_body(
            change["action_id"], user_id="U1", value=change["value"]
        )
        await slack.post(click)
        [opened] = await slack.fake.wait_for_call("views.open")
        picks = {
            block: {"choice": {"type": "static_select", "selected_option": {"value": value}}}
            for block, value in (("model", "default"), ("aspect_ratio", "16:9"), ("size", "2K"))
        }
        await slack.post(
            slack.fake.view_submission_body(
                opened.response["view"]["id"], user_id="U1", values=picks
            )
        )
        again = await slack.fake.wait_until(
            lambda: "16:9" in _text(slack.fake.home_views["U1"]) and slack.fake.home_views["U1"]
        )

    assert "*Your images, newest first* (page 1)" in first
    assert f"/archives/{status[0]}/p{status[1].replace('.', '')}|a heron>" in first
    assert "*Your settings:* Gemini 3.1 Flash Image · 1K" in first
    assert "*Images in" in first and "You: 1 image today" in first
    assert "*Your settings:* Gemini 3.1 Flash Image · 16:9 · 2K" in _text(again)
