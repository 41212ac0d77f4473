"""The buttons under a result: Re-roll, Upscale, Edit and Delete, also after a restart."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.bots.test_slack_app import FLASH, Running, image_size, running
from tests.fakes.gemini import FakeGemini, pixel_size
from tests.fakes.slack import FakeSlack


async def _first_image(slack: Running, prompt: str = "a lighthouse at dusk") -> tuple[str, str]:
    await slack.command(prompt)
    status = await slack.status_posted()
    await slack.final(status)
    return status


def _user_texts(gemini: FakeGemini, index: int) -> list[list[str]]:
    body = gemini.requests[index].json
    assert isinstance(body, dict)
    return [
        [part["text"] for part in content["parts"] if "text" in part]
        for content in body["contents"]
        if content["role"] == "user"
    ]


def _image_config(gemini: FakeGemini, index: int) -> dict[str, Any]:
    body = gemini.requests[index].json
    assert isinstance(body, dict)
    return dict(body["generationConfig"].get("imageConfig", {}))


async def test_every_result_has_reroll_upscale_edit_vary_and_delete_buttons(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    async with running(tmp_path, fake_gemini) as slack:
        status = await _first_image(slack)
        [actions] = [b for b in slack.fake.messages[status]["blocks"] if b["type"] == "actions"]
        assert [e["action_id"] for e in actions["elements"]] == [
            "imagebot.reroll",
            "imagebot.upscale.2K",
            "imagebot.upscale.4K",
            "imagebot.edit",
            "imagebot.vary",
            "imagebot.delete",
        ]
        job = await slack.service.job_for_message("slack", "T0001", f"{status[0]}:{status[1]}")
        assert job is not None
        assert {e["value"] for e in actions["elements"]} == {job.id}


async def test_reroll_makes_a_new_image_with_its_own_status_in_the_same_thread(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    async with running(tmp_path, fake_gemini) as slack:
        status = await _first_image(slack)
        answer, _, _ = await slack.click("imagebot.reroll", status=status, user="U2")

        assert answer == 200
        second = await slack.status_posted(2)
        assert slack.fake.messages[second]["thread_ts"] == status[1]
        assert "<@U2> asked for another take on" in str(slack.fake.messages[second]["blocks"])
        await slack.final(second)
        assert _user_texts(fake_gemini, 1) == [["a lighthouse at dusk"]]
        assert [u.thread_ts for u in slack.fake.uploads] == [status[1], status[1]]


async def test_upscale_remakes_the_image_at_the_larger_size_from_the_image_itself(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    async with running(tmp_path, fake_gemini) as slack:
        status = await _first_image(slack, "a lighthouse at dusk --ar 16:9")
        await slack.click("imagebot.upscale.2K", status=status)

        second = await slack.status_posted(2)
        await slack.final(second)
        assert _image_config(fake_gemini, 1) == {"aspectRatio": "16:9", "imageSize": "2K"}
        assert _user_texts(fake_gemini, 1)[-1] == [
            "Recreate this exact image at a higher resolution; change nothing else."
        ]
        assert image_size(slack.fake.uploads[1].data) == pixel_size(FLASH, "16:9", "2K")
        upscaled = slack.fake.messages[second]
        # 4K is still bigger, so it is offered again; 2K no longer is
        buttons = [
            e["action_id"]
            for b in upscaled["blocks"]
            if b["type"] == "actions"
            for e in b["elements"]
        ]
        assert "imagebot.upscale.4K" in buttons and "imagebot.upscale.2K" not in buttons


async def test_edit_opens_a_modal_and_its_submission_continues_from_the_image(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    async with running(tmp_path, fake_gemini) as slack:
        status = await _first_image(slack)
        await slack.click("imagebot.edit", status=status)
        [opened] = await slack.fake.wait_for_call("views.open")
        view_id = opened.response["view"]["id"]

        empty = {"instruction": {"text": {"type": "plain_text_input", "value": "--size"}}}
        refused, body, _ = await slack.post(
            slack.fake.view_submission_body(view_id, user_id="U1", values=empty)
        )
        assert refused == 200
        answer = json.loads(body)
        assert answer["response_action"] == "errors"
        assert "needs a value" in answer["errors"]["instruction"]

        typed = {"instruction": {"text": {"type": "plain_text_input", "value": "make it snowy"}}}
        accepted, body, _ = await slack.post(
            slack.fake.view_submission_body(view_id, user_id="U1", values=typed)
        )
        assert (accepted, body) == (200, b"")
        second = await slack.status_posted(2)
        assert slack.fake.messages[second]["thread_ts"] == status[1]
        await slack.final(second)
        assert _user_texts(fake_gemini, 1) == [["a lighthouse at dusk"], ["make it snowy"]]
        body_sent = fake_gemini.requests[1].json
        assert isinstance(body_sent, dict)
        assert any("inlineData" in p for p in body_sent["contents"][1]["parts"])


async def test_an_external_slack_connect_users_edit_form_finds_the_image(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    async with running(tmp_path, fake_gemini) as slack:
        status = await _first_image(slack)
        await slack.click("imagebot.edit", status=status, user="U7")
        [opened] = await slack.fake.wait_for_call("views.open")
        typed = {"instruction": {"text": {"type": "plain_text_input", "value": "add fog"}}}
        # `team` is the user's own organisation; the installation is the view's
        form = slack.fake.view_submission_payload(
            opened.response["view"]["id"], user_id="U7", values=typed, user_team="T0PARTNER"
        )
        assert form["team"]["id"] != form["view"]["app_installed_team_id"]
        accepted, body, _ = await slack.post(
            slack.fake.view_submission_body(
                opened.response["view"]["id"], user_id="U7", values=typed, user_team="T0PARTNER"
            )
        )
        assert (accepted, body) == (200, b"")
        await slack.final(await slack.status_posted(2))
        assert _user_texts(fake_gemini, 1) == [["a lighthouse at dusk"], ["add fog"]]


async def test_only_the_requester_can_delete_and_delete_removes_message_and_files(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    async with running(tmp_path, fake_gemini) as slack:
        status = await _first_image(slack)
        [upload] = slack.fake.uploads

        await slack.click("imagebot.delete", status=status, user="U2")
        told = await slack.fake.wait_until(lambda: slack.fake.ephemerals)
        assert told[0]["user"] == "U2"
        assert told[0]["text"] == "Only <@U1> can delete this image."
        assert status in slack.fake.messages

        await slack.click("imagebot.delete", status=status, user="U1")
        await slack.fake.wait_until(lambda: status not in slack.fake.messages)
        [deleted] = await slack.fake.wait_for_call("files.delete")
        assert deleted.params["file"] == upload.id


async def test_a_redelivered_click_makes_one_job(tmp_path: Path, fake_gemini: FakeGemini) -> None:
    async with running(tmp_path, fake_gemini) as slack:
        status = await _first_image(slack)
        job = await slack.service.job_for_message("slack", "T0001", f"{status[0]}:{status[1]}")
        assert job is not None
        click = slack.fake.block_action_body(
            "imagebot.reroll",
            user_id="U1",
            channel_id=status[0],
            message_ts=status[1],
            value=job.id,
        )
        assert [(await slack.post(click))[0] for _ in range(3)] == [200, 200, 200]

        await slack.final(await slack.status_posted(2))
        assert await slack.job_count() == 2
        assert len(fake_gemini.requests) == 2


async def test_buttons_from_before_a_restart_still_work(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    async with FakeSlack() as fake:
        async with running(tmp_path, fake_gemini, fake=fake) as before:
            status = await _first_image(before)
        async with running(tmp_path, fake_gemini, fake=fake) as after:
            await after.click("imagebot.upscale.2K", status=status)
            second = await after.status_posted(2)
            assert fake.messages[second]["thread_ts"] == status[1]
            await after.final(second)
            assert _image_config(fake_gemini, 1)["imageSize"] == "2K"

            await after.click("imagebot.delete", status=status, user="U1")
            await fake.wait_until(lambda: status not in fake.messages)
            [deleted] = await fake.wait_for_call("files.delete")
            assert deleted.params["file"] == fake.uploads[0].id


async def test_cancel_on_a_generating_job_shows_no_image_and_only_the_requester_may(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    fake_gemini.latency = 1.0
    async with running(tmp_path, fake_gemini) as slack:
        await slack.command("a slow sunrise")
        status = await slack.status_posted()
        await fake_gemini.wait_for_requests(1)

        await slack.click("imagebot.cancel", status=status, user="U2")
        refused = await slack.fake.wait_until(lambda: slack.fake.ephemerals)
        await slack.click("imagebot.cancel", status=status, user="U1")
        told = await slack.fake.wait_until(lambda: slack.fake.ephemerals[1:])
        final = await slack.final(status)

    assert refused[0]["user"] == "U2"
    assert refused[0]["text"] == "Only whoever asked for this image can cancel it."
    assert told[0]["user"] == "U1"
    assert told[0]["text"].startswith("Cancelled: the image will not be shown.")
    assert ":warning: Cancelled while it was being made; the image is not shown." in str(
        final["blocks"]
    )
    assert slack.fake.uploads == []
    assert len(fake_gemini.requests) == 1
    # at once, before the API call came back: "Cancelling", and no Cancel button any more
    edits = [c.params for c in slack.fake.calls if c.method == "chat.update"]
    [cancelling] = [e for e in edits if "Cancelling" in str(e.get("text"))]
    assert "imagebot.cancel" not in str(cancelling.get("blocks"))
