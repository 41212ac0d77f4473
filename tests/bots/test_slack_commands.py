"""`/imagine` in use: refusals with the fix, failures shown in place, help, settings, usage."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

from tests.bots.test_slack_app import FLASH, Running, image_size, running
from tests.fakes.gemini import FakeGemini, Fault, pixel_size


async def _ephemeral(slack: Running, count: int = 1) -> dict[str, Any]:
    found = await slack.fake.wait_until(
        lambda: slack.fake.ephemerals if len(slack.fake.ephemerals) >= count else None
    )
    return found[count - 1]


async def test_options_a_model_cannot_do_get_an_ephemeral_fix_and_no_job(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    async with running(tmp_path, fake_gemini) as slack:
        await slack.command("a fox --size 4K --model 2.5-flash", user="U7")
        told = await _ephemeral(slack)
        assert told["user"] == "U7"
        assert told["text"] == (
            "4K is not available on Gemini 2.5 Flash Image, which makes 1K only: "
            "try `--model flash` or `--model pro`."
        )
        await slack.command("--ar 16:9")
        assert (await _ephemeral(slack, 2))["text"].startswith("Tell me what to draw")

        assert await slack.job_count() == 0
        assert not slack.fake.calls_to("chat.postMessage")
        assert not fake_gemini.requests


async def test_a_blocked_prompt_turns_the_status_message_into_the_safety_sentence(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    fake_gemini.faults.append(Fault("prompt_blocked"))
    async with running(tmp_path, fake_gemini) as slack:
        await slack.command("something unsafe")
        status = await slack.status_posted()
        final = await slack.final(status)

        assert ":warning: The image service refused this prompt for safety reasons" in final["text"]
        assert "Generating" not in str(final["blocks"]) and "Queued" not in str(final["blocks"])
        assert not any(b["type"] == "actions" for b in final["blocks"])
        assert not slack.fake.uploads


async def test_an_api_outage_ends_in_a_clear_status_not_a_stuck_generating(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    fake_gemini.faults.append(Fault("reseller_401"))
    async with running(tmp_path, fake_gemini) as slack:
        await slack.command("a fox")
        final = await slack.final(await slack.status_posted())
        assert ":warning:" in final["text"]
        assert "Generating" not in final["text"]


async def test_progress_edits_show_the_seconds_spent_generating(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    fake_gemini.latency = 1.6
    async with running(tmp_path, fake_gemini, IMAGEBOT_PROGRESS_INTERVAL_SECONDS=0.25) as slack:
        await slack.command("a slow sunrise")
        status = await slack.status_posted()
        assert (
            ":hourglass_flowing_sand: Queued (#1)"
            in slack.fake.calls_to("chat.postMessage")[0].params["text"]
        )
        await slack.fake.wait_for_call(
            "chat.update", predicate=lambda c: ":art: Generating… 1 s" in str(c.params["text"])
        )
        final = await slack.final(status)
        assert ":white_check_mark: Done in 2 s" in final["text"]


async def test_prompt_markup_is_shown_as_text_and_pings_nobody(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    async with running(tmp_path, fake_gemini) as slack:
        # Slack sends a typed "<!channel> & <@U2>" escaped, and a typed @here as markup
        await slack.command("a sign reading &lt;!channel&gt; &amp; &lt;@U2&gt; <!here>")
        status = await slack.status_posted()
        shown = slack.fake.messages[status]
        everything = shown["text"] + json.dumps(shown["blocks"])

        assert "<!channel>" not in everything and "<@U2>" not in everything
        assert "<!here>" not in everything
        assert "&lt;!channel&gt; &amp; &lt;@U2&gt; @here" in shown["text"]
        await slack.final(status)
        body = fake_gemini.requests[0].json
        assert isinstance(body, dict)
        assert body["contents"][0]["parts"][0]["text"] == "a sign reading <!channel> & <@U2> @here"


async def test_a_channel_without_the_bot_gets_the_invite_fix_and_the_job_ends_failed(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    async with running(tmp_path, fake_gemini) as slack:
        slack.fake.fail_next("chat.postMessage", error="not_in_channel")
        command = slack.fake.slash_command_payload("a fox", user_id="U1", channel_id="C9")
        await slack.post((urlencode(command).encode(), "application/x-www-form-urlencoded"))

        told = await _ephemeral(slack)
        assert "`/invite @imagebot`" in told["text"]
        assert (told["channel"], told["user"]) == ("C9", "U1")
        job = await slack.service.store.job_by_key(f"slack:T0001:cmd:{command['trigger_id']}")
        assert job is not None and job.state == "failed"
        assert not fake_gemini.requests


async def test_imagine_in_a_dm_between_two_people_says_what_works_instead_of_invite(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    async with running(tmp_path, fake_gemini) as slack:
        # the bot is not in a DM between two people; Slack answers channel_not_found
        slack.fake.fail_next("chat.postMessage", error="channel_not_found")
        command = slack.fake.slash_command_payload(
            "a fox", user_id="U1", channel_id="D0TWOPEOPLE", channel_name="directmessage"
        )
        await slack.post((urlencode(command).encode(), "application/x-www-form-urlencoded"))

        told = await _ephemeral(slack)
        assert "/invite" not in told["text"]
        assert "send me a DM" in told["text"] and "mention @imagebot" in told["text"]
        assert not fake_gemini.requests


async def test_help_lists_the_options_and_every_model(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    async with running(tmp_path, fake_gemini) as slack:
        await slack.command("help")
        text = (await _ephemeral(slack))["text"]
        for flag in ("--ar 16:9", "--size 2K", "--model pro", "--temp 0.4", "--text"):
            assert flag in text
        for model in slack.service.catalog.models:
            assert model.name in text
        assert "/imagine settings" in text and "/imagine usage" in text
        assert await slack.job_count() == 0


async def test_settings_modal_saves_defaults_and_shows_a_wrong_pick_under_its_field(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    async with running(tmp_path, fake_gemini) as slack:
        await slack.command("settings", user="U3")
        [opened] = await slack.fake.wait_for_call("views.open")
        view = opened.response["view"]
        assert [b.get("block_id") for b in view["blocks"][:3]] == ["model", "aspect_ratio", "size"]

        def picks(model: str, ratio: str, size: str) -> dict[str, Any]:
            return {
                block: {"choice": {"type": "static_select", "selected_option": {"value": v}}}
                for block, v in (("model", model), ("aspect_ratio", ratio), ("size", size))
            }

        wrong = slack.fake.view_submission_body(
            view["id"], user_id="U3", values=picks("gemini-2.5-flash-image", "default", "4K")
        )
        status, body, _ = await slack.post(wrong)
        answer = json.loads(body)
        assert (status, answer["response_action"]) == (200, "errors")
        assert answer["errors"]["size"].startswith("4K is not available on Gemini 2.5 Flash")

        right = slack.fake.view_submission_body(
            view["id"], user_id="U3", values=picks("default", "16:9", "2K")
        )
        status, body, _ = await slack.post(right)
        assert json.loads(body)["response_action"] == "update"

        await slack.command("a heron", user="U3")
        await slack.final(await slack.status_posted())
        assert image_size(slack.fake.uploads[0].data) == pixel_size(FLASH, "16:9", "2K")


async def test_usage_reports_this_months_images_for_the_user_and_the_workspace(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    async with running(tmp_path, fake_gemini) as slack:
        await slack.command("a heron", user="U1")
        await slack.final(await slack.status_posted())
        await slack.command("a crane", user="U2")
        await slack.final(await slack.status_posted(2))

        await slack.command("usage", user="U1")
        text = (await _ephemeral(slack))["text"]
        assert "• You: 1 image today, 1 image this month (about $0.07)." in text
        assert "• This workspace: 2 images today, 2 images this month (about $0.13)." in text


async def test_an_expired_response_url_falls_back_to_an_ephemeral_message(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    async with running(tmp_path, fake_gemini) as slack:
        dead = f"{slack.fake.base_url}/commands/T0001/999/expired"
        command = slack.fake.slash_command_payload(
            "a fox --size 9K", user_id="U1", channel_id="C1", response_url=dead
        )
        await slack.post((urlencode(command).encode(), "application/x-www-form-urlencoded"))

        [call] = await slack.fake.wait_for_call("chat.postEphemeral")
        assert (call.params["channel"], call.params["user"]) == ("C1", "U1")
        assert call.params["text"].startswith("`--size` must be one of")


async def test_history_lists_the_requesters_images_newest_first_with_links(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    async with running(tmp_path, fake_gemini) as slack:
        await slack.command("a heron", user="U1")
        heron = await slack.status_posted()
        await slack.final(heron)
        await slack.command("a crane", user="U2")
        await slack.final(await slack.status_posted(2))
        await slack.command("a kingfisher --ar 16:9", user="U1")
        kingfisher = await slack.status_posted(3)
        await slack.final(kingfisher)

        await slack.command("history", user="U1")
        mine = (await _ephemeral(slack))["text"]
        await slack.command("history 2", user="U1")
        beyond = (await _ephemeral(slack, 2))["text"]

    lines = mine.splitlines()
    assert lines[0] == "*Your images, newest first* (page 1)"
    assert lines[1].startswith(
        f"• <https://fake-team.slack.com/archives/{kingfisher[0]}/"
        f"p{kingfisher[1].replace('.', '')}|a kingfisher> — Gemini 3.1 Flash Image · 16:9 · 1K, "
    )
    assert lines[2].startswith("• <https://") and "|a heron> — " in lines[2]
    assert "crane" not in mine  # someone else's
    assert len(lines) == 3  # no further page
    assert beyond == "There is no page 2: `/imagine history` shows your latest images."


async def test_imagine_blend_says_how_to_blend_since_a_command_carries_no_images(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    async with running(tmp_path, fake_gemini) as slack:
        await slack.command("blend")
        text = (await _ephemeral(slack))["text"]
        jobs = await slack.job_count()
        # a prompt that starts with the word is a prompt
        await slack.command("blend of sunset colours")
        await slack.final(await slack.status_posted())

    assert text.startswith("A slash command cannot carry images: to blend some, mention me")
    assert "blend as a watercolour" in text
    assert jobs == 0
    assert len(fake_gemini.requests) == 1
