"""Where a job is shown on Discord: stored with the job, so delivery survives a restart."""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

# An interaction token lasts 15 minutes; stop using it a little before it dies.
TOKEN_LIFETIME_SECONDS = 15 * 60 - 30
DEFAULT_UPLOAD_LIMIT = 10 * 1024 * 1024


@dataclass(frozen=True)
class Target:
    """The message a job is shown in, and how to reach it.

    A job asked for with a slash command, button or form lives in the interaction's
    response (`app_id` + `token`, edited as a webhook while the token lasts). A job asked
    for with a message lives in the bot's reply (`message_id`), edited with the bot token.
    """

    channel_id: int
    guild_id: int | None
    requester_id: int
    upload_limit: int = DEFAULT_UPLOAD_LIMIT
    message_id: int | None = None  # the bot message that shows progress, then the result
    reply_to: int | None = None  # the user's message it answers
    app_id: int | None = None
    token: str | None = None
    token_expires_at: float | None = None
    # False where only the interaction reaches the channel: the app installed to a user's
    # account, used in a server or group DM the bot is not in
    bot_can_post: bool = True

    def token_usable(self, now: float) -> bool:
        return (
            self.app_id is not None
            and self.token is not None
            and self.token_expires_at is not None
            and now < self.token_expires_at
        )

    def with_message(self, message_id: int) -> Target:
        return replace(self, message_id=message_id)

    def to_dict(self) -> dict[str, Any]:
        # every field is a plain value: a shallow copy is enough (dataclasses.asdict copies
        # deeply, a tenth of a millisecond per interaction acknowledged)
        return dict(vars(self))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Target:
        known = {f.name for f in fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in known})
