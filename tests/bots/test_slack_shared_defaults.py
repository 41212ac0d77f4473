"""Workspace and channel defaults on Slack: set by admins and owners through
`/imagine settings workspace|channel`, under each person's own."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from tests.bots.test_slack_app import FLASH, image_size, running
from tests.fakes.gemini import FakeGemini, pixel_size


def _picks(**chosen: str) -> dict[str, Any]:
    values = {"model": "default", "aspect_ratio": "default", "size": "default", "n": "default"}
    values.update(chosen)
    return {
        block: {"choice": {"type": "static_select", "selected_option": {"value": value}}}
        for block, value in values.items()
    }


async def test_admins_set_workspace_and_channel_defaults_that_others_start_from(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    async with running(tmp_path, fake_gemini) as slack:
        slack.fake.add_user("UADMIN", name="ada", is_admin=True)
        await slack.command("settings workspace", user="U1")
        [refused] = await slack.fake.wait_until(lambda: slack.fake.ephemerals)

        await slack.command("settings workspace", user="UADMIN")
        [opened] = await slack.fake.wait_for_call("views.open")
        assert opened.response["view"]["title"]["text"] == "Workspace defaults"
        saved = await slack.post(
            slack.fake.view_submission_body(
                opened.response["view"]["id"], user_id="UADMIN", values=_picks(size="2K")
            )
        )
        assert "Images in this workspace now start from" in saved[1].decode()

        await slack.command("settings channel", user="UADMIN", channel="C1")
        opened = (await slack.fake.wait_for_call("views.open", count=2))[1]
        assert opened.response["view"]["title"]["text"] == "Channel defaults"
        await slack.post(
            slack.fake.view_submission_body(
                opened.response["view"]["id"],
                user_id="UADMIN",
                values=_picks(aspect_ratio="16:9", n="2"),
            )
        )

        # someone's own settings form says what applies where they are
        await slack.command("settings", user="U1", channel="C1")
        mine = (await slack.fake.wait_for_call("views.open", count=3))[2].response["view"]
        # one image a request is a choice of one's own, over the channel's two
        [n_field] = [b for b in mine["blocks"] if b.get("block_id") == "n"]
        assert [o["value"] for o in n_field["element"]["options"]][:2] == ["default", "1"]
        await slack.post(
            slack.fake.view_submission_body(mine["id"], user_id="U1", values=_picks(n="1"))
        )
        await slack.command("a heron", user="U1", channel="C1")
        await slack.final(await slack.status_posted())
        await slack.command("a heron", user="U1", channel="C2")
        await slack.final(await slack.status_posted(2))

    assert refused["text"] == (
        "Only workspace admins and owners can change the defaults of the workspace or of a "
        "channel; `/imagine settings` sets your own."
    )
    assert "workspace: 2K; this channel: 16:9 · 2 images a request" in str(mine["blocks"])
    sizes = [image_size(upload.data) for upload in slack.fake.uploads]
    assert sizes == [pixel_size(FLASH, "16:9", "2K"), pixel_size(FLASH, None, "2K")]


async def test_without_users_read_an_admin_is_told_to_reinstall(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    async with running(tmp_path, fake_gemini) as slack:
        slack.fake.scopes = slack.fake.scopes.replace(",users:read", "")
        await slack.command("settings channel", user="U1")
        [told] = await slack.fake.wait_until(lambda: slack.fake.ephemerals)
    assert told["text"].startswith("I cannot tell who the workspace admins are without the")
    assert "users:read" in told["text"]
