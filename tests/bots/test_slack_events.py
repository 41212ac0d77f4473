"""Routing Slack messages to conversations, cleaning their text, and idempotency keys."""

from __future__ import annotations

from typing import Any

import pytest

from bots.slack.events import (
    RecentKeys,
    clean_text,
    command_request,
    message_key,
    message_request,
    route_message,
    subcommand,
)
from bots.slack.payloads import EventCallback, MessageEvent, SlashCommand
from bots.slack.target import Target
from core.jobs import Attachment

BOT = "U0BOT"


def _event(**fields: Any) -> MessageEvent:
    base: dict[str, Any] = {
        "type": "message",
        "channel": "C1",
        "ts": "100.000200",
        "user": "U1",
        "text": "hello",
        "channel_type": "channel",
    }
    return MessageEvent.model_validate({**base, **fields})


def test_clean_text_drops_the_bots_mention_and_undoes_slack_markup() -> None:
    raw = (
        f"<@{BOT}> draw <@U2|ana> at <#C9|general>, see <https://x.test/a?b=1&amp;c=2|the ref> "
        "&lt;b&gt; &amp; <!here>   --ar 16:9"
    )
    assert clean_text(raw, BOT) == ("draw @ana at #general, see the ref <b> & @here --ar 16:9")
    assert clean_text(f"<@{BOT}>\n  line two  ", BOT) == "line two"
    assert clean_text("<https://x.test/p>", BOT) == "https://x.test/p"


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        # a DM is always for the bot; its main view is one conversation
        ({"channel": "D1", "channel_type": "im"}, ("D1", None, "D1:dm", None, False)),
        (
            {"channel": "D1", "channel_type": "im", "thread_ts": "50.0"},
            ("D1", "50.0", "D1:50.0", "D1:50.0", False),
        ),
        # a mention outside a thread starts a conversation in a thread under it
        (
            {"type": "app_mention", "text": f"<@{BOT}> a cat"},
            ("C1", "100.000200", "C1:100.000200", None, False),
        ),
        (
            {"text": f"<@{BOT}> a cat"},
            ("C1", "100.000200", "C1:100.000200", None, False),
        ),
        # in a thread, a mention continues it
        (
            {"type": "app_mention", "text": f"<@{BOT}> at night", "thread_ts": "50.0"},
            ("C1", "50.0", "C1:50.0", "C1:50.0", False),
        ),
    ],
)
def test_messages_for_the_bot_are_routed_to_their_conversation(
    fields: dict[str, Any], expected: tuple[Any, ...]
) -> None:
    route = route_message(_event(**fields), BOT, thread_replies=False)
    assert route is not None
    assert (
        route.channel,
        route.thread_ts,
        route.thread_key,
        route.reply_to,
        route.needs_bot_thread,
    ) == expected


def test_a_plain_thread_reply_counts_only_with_thread_replies_and_in_the_bots_thread() -> None:
    reply = _event(thread_ts="50.0", text="now at night")
    assert route_message(reply, BOT, thread_replies=False) is None
    route = route_message(reply, BOT, thread_replies=True)
    assert route is not None and route.needs_bot_thread and route.reply_to == "C1:50.0"


@pytest.mark.parametrize(
    "fields",
    [
        {"text": "just chatting"},  # no mention, no thread
        {"bot_id": "B9", "text": f"<@{BOT}> hi"},
        {"user": None, "subtype": "bot_message", "text": f"<@{BOT}> hi"},
        {"user": BOT, "channel_type": "im"},
        {"subtype": "message_changed", "channel_type": "im"},
        {"subtype": "message_deleted", "channel_type": "im"},
        {"subtype": "channel_join", "text": f"<@{BOT}> joined"},
    ],
)
def test_bot_posts_edits_deletions_and_chatter_are_not_requests(fields: dict[str, Any]) -> None:
    assert route_message(_event(**fields), BOT, thread_replies=True) is None


def test_file_shares_are_requests() -> None:
    assert (
        route_message(_event(subtype="file_share", channel_type="im"), BOT, thread_replies=False)
        is not None
    )


def test_a_mention_sent_also_to_the_channel_or_as_a_me_message_is_a_request() -> None:
    broadcast = _event(
        type="app_mention",
        subtype="thread_broadcast",
        text=f"<@{BOT}> at dusk",
        thread_ts="50.0",
    )
    route = route_message(broadcast, BOT, thread_replies=False)
    assert route is not None and route.thread_ts == "50.0" and route.reply_to == "C1:50.0"
    me = _event(subtype="me_message", text=f"<@{BOT}> a waving cat")
    assert route_message(me, BOT, thread_replies=False) is not None


def test_app_mention_and_message_for_one_message_share_an_idempotency_key() -> None:
    mention = _event(type="app_mention", text=f"<@{BOT}> a cat")
    message = _event(text=f"<@{BOT}> a cat")
    keys = set()
    for event in (mention, message):
        route = route_message(event, BOT, thread_replies=False)
        assert route is not None
        keys.add(message_request("T1", event, route, "a cat", ()).idempotency_key)
    assert keys == {message_key("T1", "C1", "100.000200")} == {"slack:T1:msg:C1:100.000200"}


def test_message_request_carries_thread_attachments_and_target() -> None:
    event = _event(type="app_mention", text=f"<@{BOT}> more", thread_ts="50.0")
    route = route_message(event, BOT, thread_replies=False)
    assert route is not None
    photo = Attachment("p.png", b"png")
    request = message_request("T1", event, route, "more", (photo,))
    assert (request.platform, request.tenant, request.user_id) == ("slack", "T1", "U1")
    assert (request.thread_key, request.reply_to) == ("C1:50.0", "C1:50.0")
    assert request.attachments == (photo,)
    assert request.target == {"channel": "C1", "user": "U1", "thread_ts": "50.0", "threaded": True}


def test_a_dms_main_view_keeps_results_out_of_threads() -> None:
    event = _event(channel="D1", channel_type="im")
    route = route_message(event, BOT, thread_replies=False)
    assert route is not None
    target = Target(**message_request("T1", event, route, "x", ()).target)
    assert (target.thread_ts, target.threaded) == (None, False)
    assert target.posted("7.0").results_thread is None


def test_command_request_keys_on_the_trigger_and_starts_a_threaded_conversation() -> None:
    command = SlashCommand.model_validate(
        {
            "team_id": "T1",
            "channel_id": "C1",
            "user_id": "U1",
            "text": "a &amp; b",
            "trigger_id": "1.2.abc",
            "response_url": "https://hooks.slack.test/x",
        }
    )
    request = command_request(command)
    assert request.idempotency_key == "slack:T1:cmd:1.2.abc"
    assert request.text == "a & b"
    assert request.thread_key is None
    target = Target(**request.target)
    assert target.posted("9.0").results_thread == "9.0"
    assert target.posted("9.0").follow_up("U2") == Target("C1", "U2", thread_ts="9.0")


@pytest.mark.parametrize(
    ("text", "word"),
    [
        ("", "help"),
        (" Help ", "help"),
        ("settings", "settings"),
        ("usage", "usage"),
        ("help me draw a cat", None),
        ("a cat", None),
    ],
)
def test_subcommands_are_whole_commands_only(text: str, word: str | None) -> None:
    assert subcommand(text) == word


def test_recent_keys_drop_repeats_and_forget_the_oldest() -> None:
    recent = RecentKeys(capacity=2)
    assert [recent.claim(k) for k in ("a", "a", "b", "c")] == [True, False, True, True]
    assert recent.claim("a") is True  # forgotten once capacity was passed


def test_an_event_in_a_slack_connect_channel_belongs_to_the_installing_workspace() -> None:
    # team_id can be the other organisation's; the authorization is the installation's own
    shared = EventCallback.model_validate(
        {
            "team_id": "T0PARTNER",
            "event": {},
            "authorizations": [{"team_id": "T0OURS", "is_bot": True}],
        }
    )
    assert shared.workspace == "T0OURS"
    assert EventCallback.model_validate({"team_id": "T1", "event": {}}).workspace == "T1"
