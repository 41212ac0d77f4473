"""Proves the Slack fake against the real slack_sdk and slack_bolt clients."""

from __future__ import annotations

import io
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from PIL import Image
from slack_bolt.adapter.socket_mode.async_handler import AsyncSocketModeHandler
from slack_bolt.async_app import AsyncApp
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.builtin_async_handlers import AsyncRateLimitErrorRetryHandler
from slack_sdk.web.async_client import AsyncWebClient

from tests.fakes.slack import FakeSlack

SIGNING_SECRET = "signing-secret-for-tests"


@pytest.fixture
async def fake() -> AsyncIterator[FakeSlack]:
    async with FakeSlack() as running:
        yield running


def _client(fake: FakeSlack, **kwargs: Any) -> AsyncWebClient:
    return AsyncWebClient(token=fake.bot_token, base_url=fake.api_url, **kwargs)


def _png(width: int = 12, height: int = 8) -> bytes:
    out = io.BytesIO()
    Image.new("RGB", (width, height), (200, 40, 90)).save(out, format="PNG")
    return out.getvalue()


async def test_auth_test_names_the_bot_and_bad_tokens_are_refused(fake: FakeSlack) -> None:
    answer = await _client(fake).auth_test()

    assert answer["user_id"] == "U0BOT"
    assert answer["bot_id"] == "B0BOT"
    assert answer["team_id"] == "T0001"
    assert answer.headers["Content-Type"].startswith("application/json")
    for token, error in [("xoxb-wrong", "invalid_auth"), (None, "not_authed")]:
        with pytest.raises(SlackApiError) as caught:
            await AsyncWebClient(token=token, base_url=fake.api_url).auth_test()
        assert caught.value.response["error"] == error
    assert [c.token for c in fake.calls_to("auth.test")] == [fake.bot_token, "xoxb-wrong", None]


async def test_posted_updated_and_deleted_messages_are_what_the_channel_shows(
    fake: FakeSlack,
) -> None:
    client = _client(fake)
    parent = await client.chat_postMessage(channel="C1", text="working on it")
    reply = await client.chat_postMessage(channel="C1", text="step 1", thread_ts=parent["ts"])
    blocks = [{"type": "section", "text": {"type": "mrkdwn", "text": "done"}}]
    await client.chat_update(channel="C1", ts=parent["ts"], text="done", blocks=blocks)
    await client.chat_delete(channel="C1", ts=reply["ts"])

    assert float(reply["ts"]) > float(parent["ts"])
    shown = fake.messages[("C1", parent["ts"])]
    assert shown["text"] == "done"
    assert shown["blocks"] == blocks
    assert shown["bot_id"] == "B0BOT"
    assert ("C1", reply["ts"]) not in fake.messages
    assert fake.thread_messages("C1", parent["ts"]) == [shown]
    with pytest.raises(SlackApiError) as caught:
        await client.chat_update(channel="C1", ts=reply["ts"], text="too late")
    assert caught.value.response["error"] == "message_not_found"


async def test_files_upload_v2_goes_through_three_steps_into_the_thread(fake: FakeSlack) -> None:
    client = _client(fake)
    parent = await client.chat_postMessage(channel="C1", text="a lighthouse")
    png = _png(16, 9)

    answer = await client.files_upload_v2(
        channel="C1",
        thread_ts=parent["ts"],
        file=png,
        filename="lighthouse.png",
        initial_comment="here it is",
    )

    assert [c.method for c in fake.calls] == [
        "chat.postMessage",
        "files.getUploadURLExternal",
        "files.completeUploadExternal",
    ]
    [upload] = fake.uploads
    assert upload.data == png
    assert (upload.channel, upload.thread_ts) == ("C1", parent["ts"])
    assert (upload.filename, upload.title, upload.initial_comment) == (
        "lighthouse.png",
        "lighthouse.png",
        "here it is",
    )
    assert answer["file"]["id"] == upload.id
    assert (answer["file"]["original_w"], answer["file"]["original_h"]) == (16, 9)
    _, reply = fake.thread_messages("C1", parent["ts"])
    assert reply["text"] == "here it is"
    assert reply["files"][0]["id"] == upload.id


async def test_rate_limited_call_is_retried_with_the_rate_limit_handler(fake: FakeSlack) -> None:
    fake.fail_next("chat.postMessage", retry_after=0)
    client = _client(fake, retry_handlers=[AsyncRateLimitErrorRetryHandler(max_retry_count=1)])

    answer = await client.chat_postMessage(channel="C1", text="hello")

    assert answer["ok"] is True
    assert [c.status for c in fake.calls_to("chat.postMessage")] == [429, 200]


async def test_rate_limited_call_surfaces_as_slack_api_error_without_the_handler(
    fake: FakeSlack,
) -> None:
    fake.fail_next("chat.postMessage", retry_after=7)

    with pytest.raises(SlackApiError) as caught:
        await _client(fake).chat_postMessage(channel="C1", text="hello")

    assert caught.value.response.status_code == 429
    assert caught.value.response["error"] == "ratelimited"
    assert caught.value.response.headers["Retry-After"] == "7"
    assert fake.messages == {}


async def test_injected_errors_and_unknown_methods_answer_like_slack(fake: FakeSlack) -> None:
    client = _client(fake)
    fake.fail_next("files.completeUploadExternal", error="not_in_channel")
    fake.fail_next("chat.update", status=500)

    with pytest.raises(SlackApiError) as not_in_channel:
        await client.files_upload_v2(channel="C9", file=b"x", filename="x.txt")
    with pytest.raises(SlackApiError) as server_error:
        await client.chat_update(channel="C1", ts="1.0", text="x")
    with pytest.raises(SlackApiError) as unknown:
        await client.api_call("imagine.everything")

    assert not_in_channel.value.response["error"] == "not_in_channel"
    assert server_error.value.response.status_code == 500
    assert unknown.value.response["error"] == "unknown_method"
    assert fake.uploads == []


async def test_hosted_file_downloads_only_with_the_bot_token(fake: FakeSlack) -> None:
    png = _png()
    shared = fake.add_file(png, name="cat.png", mimetype="image/png")
    assert shared["url_private_download"].startswith(fake.file_host_url)
    assert (shared["original_w"], shared["original_h"], shared["size"]) == (12, 8, len(png))

    async with aiohttp.ClientSession() as http:
        auth = {"Authorization": f"Bearer {fake.bot_token}"}
        async with http.get(shared["url_private_download"], headers=auth) as resp:
            assert (resp.status, resp.content_type) == (200, "image/png")
            assert await resp.read() == png
        async with http.get(shared["url_private"]) as resp:
            assert (resp.status, resp.content_type) == (200, "text/html")

    assert [d.authorized for d in fake.downloads] == [True, False]


async def test_upload_url_refuses_bytes_that_do_not_match_the_announced_length(
    fake: FakeSlack,
) -> None:
    step1 = await _client(fake).files_getUploadURLExternal(filename="a.png", length=10)

    async with aiohttp.ClientSession() as http:
        async with http.post(step1["upload_url"], data=b"short") as resp:
            assert resp.status == 400
        async with http.post(step1["upload_url"], data=b"0123456789") as resp:
            assert (resp.status, await resp.text()) == (200, "OK - 10")


async def test_modals_reactions_ephemerals_and_users_answer_like_slack(fake: FakeSlack) -> None:
    client = _client(fake)
    command = fake.slash_command_payload("--help", user_id="U1", channel_id="C1")
    modal = {
        "type": "modal",
        "callback_id": "settings",
        "title": {"type": "plain_text", "text": "S"},
    }

    opened = await client.views_open(trigger_id=command["trigger_id"], view=modal)
    updated = await client.views_update(view_id=opened["view"]["id"], view={**modal, "blocks": []})
    with pytest.raises(SlackApiError) as reused:
        await client.views_open(trigger_id=command["trigger_id"], view=modal)
    posted = await client.chat_postMessage(channel="C1", text="image")
    await client.reactions_add(channel="C1", timestamp=posted["ts"], name="hourglass")
    await client.chat_postEphemeral(channel="C1", user="U1", text="only you")
    user = await client.users_info(user="U1")

    assert updated["view"]["id"] == opened["view"]["id"]
    assert fake.views[opened["view"]["id"]]["blocks"] == []
    assert reused.value.response["error"] == "exchanged_trigger_id"
    assert fake.messages[("C1", posted["ts"])]["reactions"][0]["name"] == "hourglass"
    assert fake.ephemerals[0]["user"] == "U1"
    assert {"id", "name", "real_name", "tz"} <= user["user"].keys()
    assert "display_name" in user["user"]["profile"]
    submission = fake.view_submission_payload(opened["view"]["id"], user_id="U1")
    assert submission["view"]["callback_id"] == "settings"


async def test_event_builders_make_realistic_events_and_record_the_message(
    fake: FakeSlack,
) -> None:
    photo = fake.add_file(_png(), name="ref.png", mimetype="image/png")
    parent = fake.app_mention_event("draw a cat", user="U1", channel="C1")
    reply = fake.message_event(
        "now at night", user="U1", channel="C1", thread_ts=parent["ts"], files=[photo]
    )

    assert parent["text"] == "<@U0BOT> draw a cat"
    assert (reply["subtype"], reply["thread_ts"], reply["parent_user_id"]) == (
        "file_share",
        parent["ts"],
        "U1",
    )
    assert reply["files"][0]["url_private_download"].startswith(fake.file_host_url)
    assert [m["ts"] for m in fake.thread_messages("C1", parent["ts"])] == [
        parent["ts"],
        reply["ts"],
    ]
    envelope = fake.event_payload(reply, event_id="Ev1")
    assert (envelope["type"], envelope["event_id"], envelope["team_id"]) == (
        "event_callback",
        "Ev1",
        "T0001",
    )


async def test_socket_mode_app_acks_envelopes_and_reconnects_after_disconnect(
    fake: FakeSlack,
) -> None:
    app = AsyncApp(client=_client(fake))
    commands: list[dict[str, Any]] = []

    @app.command("/imagine")
    async def imagine(ack: Any, command: dict[str, Any]) -> None:
        await ack(f"working on {command['text']}")
        commands.append(command)

    @app.event("app_mention")
    async def mention(event: dict[str, Any], say: Any) -> None:
        await say(text="on it", thread_ts=event["ts"])

    handler = AsyncSocketModeHandler(app, fake.app_token)
    await handler.connect_async()
    try:
        command = fake.slash_command_payload("a fox", user_id="U1", channel_id="C1")
        first = await fake.send_envelope("slash_commands", command, accepts_response_payload=True)
        ack = await fake.wait_for_ack(first)
        assert ack["payload"] == {"text": "working on a fox"}
        assert commands[0]["user_id"] == "U1"

        await fake.disconnect_socket()
        await fake.wait_for_socket_connections(2)

        mention_event = fake.app_mention_event("draw", user="U1", channel="C1")
        second = await fake.send_envelope("events_api", fake.event_payload(mention_event))
        await fake.wait_for_ack(second)
        [post] = await fake.wait_for_call("chat.postMessage")
        assert post.params["thread_ts"] == mention_event["ts"]
        assert len(fake.calls_to("apps.connections.open")) == 2
        assert all(c.token == fake.app_token for c in fake.calls_to("apps.connections.open"))
        # The SDK pings every new connection at once; the fake answers with pongs.
        await fake.wait_until(lambda: fake.socket_pings >= 2, what="a ping on each connection")
    finally:
        await handler.close_async()


@pytest.fixture
async def http_app_url(fake: FakeSlack) -> AsyncIterator[str]:
    app = AsyncApp(signing_secret=SIGNING_SECRET, client=_client(fake))

    @app.command("/imagine")
    async def imagine(ack: Any, respond: Any, command: dict[str, Any]) -> None:
        await ack()
        await respond(text=f"queued {command['text']}")

    runner = web.AppRunner(app.web_app(path="/slack/events"))
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    yield f"http://127.0.0.1:{runner.addresses[0][1]}/slack/events"
    await runner.cleanup()


async def test_signed_slash_command_is_accepted_and_a_bad_signature_gets_401(
    fake: FakeSlack, http_app_url: str
) -> None:
    body, content_type = fake.slash_command_body("a fox", user_id="U1", channel_id="C1")

    status, _, elapsed = await fake.post_to_app(
        http_app_url, body, content_type, signing_secret=SIGNING_SECRET
    )
    forged, _, _ = await fake.post_to_app(
        http_app_url, body, content_type, signing_secret=SIGNING_SECRET, bad_signature=True
    )
    stale, _, _ = await fake.post_to_app(
        http_app_url,
        body,
        content_type,
        signing_secret=SIGNING_SECRET,
        timestamp=int(time.time()) - 600,
    )

    assert (status, forged, stale) == (200, 401, 401)
    assert elapsed < 3
    await fake.wait_until(lambda: fake.response_url_posts, what="the reply via response_url")
    assert fake.response_url_posts[0]["body"]["text"] == "queued a fox"
    assert fake.ephemerals[0]["user"] == "U1"


async def test_oauth_v2_access_exchanges_a_code_and_rotates_tokens_like_slack(
    fake: FakeSlack,
) -> None:
    workspace = fake.add_workspace("T7", name="Acme", rotation=True, expires_in=3600)
    anonymous = AsyncWebClient(base_url=fake.api_url)
    creds = {"client_id": fake.client_id, "client_secret": fake.client_secret}
    code = fake.grant_code("T7", scopes="commands,chat:write")

    installed = await anonymous.oauth_v2_access(code=code, **creds)
    assert installed["token_type"] == "bot"
    assert installed["team"] == {"id": "T7", "name": "Acme"}
    assert installed["scope"] == "commands,chat:write"
    assert installed["bot_user_id"] == workspace.bot_user_id != fake.bot_user_id
    assert installed["expires_in"] == 3600
    first, refresh = installed["access_token"], installed["refresh_token"]
    # a workspace's token is answered as that workspace, with the scopes it was granted
    me = await AsyncWebClient(token=first, base_url=fake.api_url).auth_test()
    assert (me["team_id"], me["user_id"], me["bot_id"]) == ("T7", "U0BOT7", "B0BOT7")
    assert me.headers["X-OAuth-Scopes"] == "commands,chat:write"
    with pytest.raises(SlackApiError) as caught:  # a code is good once
        await anonymous.oauth_v2_access(code=code, **creds)
    assert caught.value.response["error"] == "invalid_code"
    with pytest.raises(SlackApiError) as caught:
        await anonymous.oauth_v2_access(code="x", client_id=fake.client_id, client_secret="no")
    assert caught.value.response["error"] == "bad_client_secret"

    renewed = await anonymous.oauth_v2_access(
        grant_type="refresh_token", refresh_token=refresh, **creds
    )
    assert renewed["expires_in"] == 43_200 and renewed["access_token"] != first
    with pytest.raises(SlackApiError) as caught:  # a refresh token is spent once used
        await anonymous.oauth_v2_access(grant_type="refresh_token", refresh_token=refresh, **creds)
    assert caught.value.response["error"] == "invalid_refresh_token"
    assert fake.workspace_of(renewed["access_token"]) == "T7"

    # an expired token is refused; so is every token once the app is uninstalled
    workspace.expires_at[first] = time.time() - 1
    with pytest.raises(SlackApiError) as caught:
        await AsyncWebClient(token=first, base_url=fake.api_url).auth_test()
    assert caught.value.response["error"] == "token_expired"
    fake.uninstall("T7")
    with pytest.raises(SlackApiError) as caught:
        await AsyncWebClient(token=renewed["access_token"], base_url=fake.api_url).auth_test()
    assert caught.value.response["error"] == "token_revoked"
