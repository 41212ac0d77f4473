"""The Slack payload shapes the adapter relies on, parsed once where they come in.

Slack sends far more fields than these; unknown ones are ignored, so a payload that gains
fields keeps parsing. Anything the adapter reads from Slack is read through these models.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, model_validator


class _Payload(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class SlashCommand(_Payload):
    """A slash command (form fields in HTTP mode, the envelope payload in Socket Mode)."""

    team_id: str
    channel_id: str
    user_id: str
    command: str = "/imagine"
    text: str = ""
    response_url: str | None = None
    trigger_id: str = ""


class SlackFile(_Payload):
    """A file shared with a message.

    Not every file arrives whole: in Slack Connect channels a file can be a stub
    (`file_access: check_file_info`) to complete with files.info; `mode` says when it is
    hidden by the free plan's limit (`hidden_by_limit`), deleted (`tombstone`) or a link to
    another service (`external`).
    """

    id: str
    name: str = "attachment"
    mimetype: str = ""
    size: int = 0
    mode: str | None = None
    file_access: str | None = None
    url_private: str | None = None
    url_private_download: str | None = None
    external_type: str = ""


class MessageEvent(_Payload):
    """An `app_mention` or `message` event; bot posts may lack `user`, edits carry a subtype."""

    type: str
    channel: str
    ts: str
    user: str | None = None
    text: str = ""
    thread_ts: str | None = None
    subtype: str | None = None
    bot_id: str | None = None
    channel_type: str | None = None
    team: str | None = None
    files: tuple[SlackFile, ...] = ()


class Authorization(_Payload):
    team_id: str | None = None


class EventCallback(_Payload):
    """The envelope around an event."""

    team_id: str
    event_id: str = ""
    event: dict[str, Any]
    authorizations: tuple[Authorization, ...] = ()

    @property
    def workspace(self) -> str:
        """The workspace that installed the bot: in a Slack Connect channel `team_id` can be
        another organisation's, the authorization is the installation's own."""
        first = self.authorizations[0].team_id if self.authorizations else None
        return first or self.team_id


class Team(_Payload):
    id: str


class UserRef(_Payload):
    id: str


class Action(_Payload):
    action_id: str
    value: str = ""
    action_ts: str = ""


class Container(_Payload):
    channel_id: str | None = None
    message_ts: str | None = None
    thread_ts: str | None = None


class Channel(_Payload):
    id: str


class BlockActions(_Payload):
    """A click on a button of one of the bot's messages."""

    team: Team
    user: UserRef
    trigger_id: str = ""
    response_url: str | None = None
    channel: Channel | None = None
    container: Container = Container()
    actions: tuple[Action, ...]


class ViewState(_Payload):
    # block_id -> action_id -> element state ({"value": ...} or {"selected_option": ...})
    values: dict[str, dict[str, dict[str, Any]]] = {}


class View(_Payload):
    id: str
    callback_id: str = ""
    app_installed_team_id: str | None = None
    private_metadata: str = ""
    state: ViewState = ViewState()

    def text(self, block_id: str) -> str:
        """What was typed into a plain text input."""
        element = next(iter(self.state.values.get(block_id, {}).values()), {})
        return str(element.get("value") or "")

    def choice(self, block_id: str) -> str | None:
        """The value of the option picked in a select."""
        element = next(iter(self.state.values.get(block_id, {}).values()), {})
        selected = element.get("selected_option") or {}
        value = selected.get("value")
        return str(value) if value else None


class ViewSubmission(_Payload):
    """A modal's Submit."""

    team: Team | None = None
    user: UserRef
    trigger_id: str = ""
    view: View

    @model_validator(mode="after")
    def _names_a_workspace(self) -> ViewSubmission:
        if not (self.view.app_installed_team_id or self.team):
            raise ValueError("a view submission names no workspace")
        return self

    @property
    def workspace(self) -> str:
        """The workspace that installed the bot and opened the form: `team` is the user's
        own, another organisation's for an external user in a Slack Connect channel."""
        installed = self.view.app_installed_team_id
        return installed or (self.team.id if self.team else "")


class AuthTest(_Payload):
    """Who the bot is, from auth.test at start."""

    user_id: str
    team_id: str
    user: str = "imagebot"
    bot_id: str | None = None
