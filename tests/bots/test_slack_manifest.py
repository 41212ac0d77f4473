"""The Slack app manifest asks for the least the adapter needs (bots/slack/scopes.py), at the
path it serves; README.md documents each scope."""

from __future__ import annotations

import re
from pathlib import Path

from bots.slack.scopes import EVENTS_WITHOUT_SCOPE, SCOPES

REPO = Path(__file__).resolve().parents[2]
MANIFEST = REPO / "manifest.yml"
ALWAYS = [s for s in SCOPES if s.setting is None]
WITH_THREAD_REPLIES = [s for s in SCOPES if s.setting == "SLACK_THREAD_REPLIES"]


def _block(text: str, key: str) -> list[str]:
    """The `- item` lines right under `key:` (comments after an item allowed)."""
    match = re.search(rf"^(\s*){re.escape(key)}:\n((?:\1\s+(?:- .*|#.*)\n)+)", text, re.M)
    assert match, f"no {key} list in manifest.yml"
    return re.findall(r"^\s+- ([\w.:]+)\s*(?:#.*)?$", match.group(2), flags=re.M)


def test_manifest_asks_for_exactly_the_scopes_always_needed_each_with_its_reason() -> None:
    text = MANIFEST.read_text("utf-8")
    assert _block(text, "bot") == [s.name for s in ALWAYS]
    for scope in ALWAYS:
        assert re.search(rf"^\s+- {re.escape(scope.name)} # \S", text, re.M), scope.name
    # nothing the adapter never calls
    assert "reactions:write" not in text and "groups:read" not in text


def test_manifest_subscribes_to_the_events_of_those_scopes_only() -> None:
    text = MANIFEST.read_text("utf-8")
    expected = [s.event for s in ALWAYS if s.event] + list(EVENTS_WITHOUT_SCOPE)
    assert _block(text, "bot_events") == expected


def test_manifest_says_what_to_add_for_thread_replies() -> None:
    text = MANIFEST.read_text("utf-8")
    assert WITH_THREAD_REPLIES, "the *:history scopes are for SLACK_THREAD_REPLIES"
    assert "SLACK_THREAD_REPLIES=true" in text
    for scope in WITH_THREAD_REPLIES:
        assert scope.name in text and f"# - {scope.event}" in text


def test_readme_documents_every_scope_in_the_slack_section() -> None:
    readme = (REPO / "README.md").read_text("utf-8")
    slack = readme[readme.index("## Slack") : readme.index("## Discord")]
    for scope in SCOPES:
        row = next((line for line in slack.splitlines() if f"| `{scope.name}` |" in line), None)
        assert row is not None, f"README's Slack section has no row for {scope.name}"
        assert (scope.setting or "always") in row


def test_manifest_routes_commands_events_and_clicks_to_one_path() -> None:
    text = MANIFEST.read_text("utf-8")
    urls = re.findall(r"(?:url|request_url): (\S+)", text)
    assert urls == ["https://YOUR-HOST/slack/events"] * 3
    assert "command: /imagine" in text
    assert re.search(r"^\s+socket_mode_enabled: true$", text, flags=re.MULTILINE)
