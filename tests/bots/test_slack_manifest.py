"""The Slack app manifest asks for what the adapter uses, at the path it serves."""

from __future__ import annotations

import re
from pathlib import Path

MANIFEST = Path(__file__).resolve().parents[2] / "manifest.yml"
SCOPES = (
    "commands chat:write files:write files:read app_mentions:read channels:history "
    "groups:history im:history mpim:history reactions:write users:read"
).split()
EVENTS = ("app_mention", "message.channels", "message.groups", "message.im", "message.mpim")


def _list_items(text: str) -> set[str]:
    return set(re.findall(r"^\s+- ([\w.:]+)\s*$", text, flags=re.MULTILINE))


def test_manifest_requests_every_scope_and_event_the_adapter_relies_on() -> None:
    text = MANIFEST.read_text("utf-8")
    items = _list_items(text)
    assert set(SCOPES) <= items
    assert set(EVENTS) <= items


def test_manifest_routes_commands_events_and_clicks_to_one_path() -> None:
    text = MANIFEST.read_text("utf-8")
    urls = re.findall(r"(?:url|request_url): (\S+)", text)
    assert urls == ["https://YOUR-HOST/slack/events"] * 3
    assert "command: /imagine" in text
    assert re.search(r"^\s+socket_mode_enabled: true$", text, flags=re.MULTILINE)
