"""What a held Discord request keeps: enough to download its files again and submit it."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest

from bots.discord.intake import FileRef, Held
from core.jobs import Request
from core.options import Options


def _request() -> Request:
    return Request(
        platform="discord",
        tenant="4000",
        user_id="42",
        text="make it blue --ar 16:9",
        idempotency_key="discord:interaction:7",
        thread_key="t1",
        options=Options(model="pro", size="2K", temperature=0.5),
        target={"channel_id": 4000, "guild_id": 3000, "requester_id": 42, "reply_to": 9},
    )


def test_a_held_request_survives_the_store_as_json() -> None:
    files = [FileRef("https://cdn.discordapp.com/a/b/boat.png?ex=1", "boat.png", 1234)]
    held = Held.of("interaction", _request(), files)

    again = Held.from_dict(json.loads(json.dumps(held.to_dict())))

    assert again == held
    assert again.request == _request()
    assert again.key == "discord:interaction:7"
    assert again.files == tuple(files)


def test_a_held_request_keeps_no_file_bytes() -> None:
    held = Held.of("message", _request(), [], new_thread=True)
    assert held.to_dict()["request"].keys() >= {"text", "options", "target"}
    assert "attachments" not in held.to_dict()["request"]
    assert Held.from_dict(held.to_dict()).new_thread


@pytest.mark.parametrize(
    "junk",
    [
        {},
        {"source": "email", "request": {}, "files": []},
        {"source": "message", "request": {"surprise": 1}, "files": []},
        # a message that does not say which message to answer
        {**Held.of("message", replace(_request(), target={}), []).to_dict()},
        {
            "source": "message",
            "request": Held.of("message", _request(), []).to_dict()["request"],
            "files": [{"url": "x"}],
        },
    ],
)
def test_a_payload_this_code_did_not_write_is_refused(junk: dict[str, object]) -> None:
    with pytest.raises((KeyError, TypeError, ValueError)):
        Held.from_dict(junk)
