"""What every Slack handler works with, and the few ways it answers a person directly."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass, field
from functools import partial
from typing import Any, Protocol

import httpx
from slack_sdk.errors import SlackApiError
from slack_sdk.http_retry.async_handler import AsyncRetryHandler
from slack_sdk.web.async_client import AsyncWebClient
from slack_sdk.webhook.async_client import AsyncWebhookClient

from bots.slack import messages
from bots.slack.delivery import SlackDelivery
from bots.slack.workspaces import Workspaces
from core.config import Settings
from core.errors import UserFacingError
from core.intake import Intake
from core.service import Service

log = logging.getLogger(__name__)

Ack = Callable[..., Awaitable[Any]]


class Handler(Protocol):
    """One kind of request (a command, a message, a click, a form), as core's Intake takes
    it in: `accept` names a request that is for the bot (None: acknowledged and dropped),
    `run` does its work after the ack, `tell` answers the person when that fails."""

    kind: str

    async def accept(self, body: dict[str, Any]) -> str | None: ...

    async def run(self, body: dict[str, Any]) -> None: ...

    async def tell(self, body: dict[str, Any], message: str) -> None: ...


@dataclass
class SlackContext:
    settings: Settings
    service: Service
    # the token, client and bot of each workspace (one, or each installation's own)
    workspaces: Workspaces
    delivery: SlackDelivery
    http: httpx.AsyncClient
    retry_handlers: list[AsyncRetryHandler]
    intake: Intake
    # keys of slash commands held before their 200 (the fast path): not held again
    pre_held: set[str] = field(default_factory=set)
    _tasks: set[asyncio.Task[None]] = field(default_factory=set)

    async def client(self, team: str) -> AsyncWebClient:
        """The Web API client with the workspace's own token."""
        return await self.workspaces.client(team)

    async def bot_user_id(self, team: str) -> str:
        return (await self.workspaces.bot(team)).user_id

    async def is_admin(self, team: str, user: str) -> bool:
        """Whether `user` is an admin or owner of the workspace (users.info, which needs the
        users:read scope: without it, a UserFacingError says how to grant it)."""
        client = await self.client(team)
        try:
            answer = await client.users_info(user=user)
        except SlackApiError as exc:
            if exc.response.get("error") == "missing_scope":
                raise UserFacingError(messages.NEEDS_USERS_READ) from None
            raise
        found = answer.get("user") or {}
        return any(bool(found.get(k)) for k in ("is_admin", "is_owner", "is_primary_owner"))

    async def take(self, handler: Handler, body: dict[str, Any], ack: Ack) -> None:
        """A request from Slack: held in the store before `ack` answers Slack, then its work
        in a task of its own (a crash after the ack leaves it held for the next process)."""
        key = await handler.accept(body)
        if key is None:
            await ack()
            return
        tell = partial(handler.tell, body)
        payload = {"kind": handler.kind, "key": key, "body": body}
        if key in self.pre_held:
            self.pre_held.discard(key)
            await ack()
        elif not await self.intake.receive(key, payload, acknowledge=ack, tell=tell):
            return
        self.spawn(self.intake.finish(key, partial(handler.run, body), tell), handler.kind)

    def spawn(self, work: Coroutine[Any, Any, None], name: str) -> None:
        """Run `work` after the ack, keeping hold of it so shutdown can cancel it."""
        task = asyncio.create_task(work, name=f"imagebot-slack-{name}")
        self._tasks.add(task)
        task.add_done_callback(self._done)

    def _done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("a Slack handler failed", exc_info=task.exception())

    async def drain(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    # answering a person: best effort, since there is nobody else to tell when these fail

    async def respond(
        self,
        response_url: str | None,
        text: str,
        *,
        team: str = "",
        channel: str = "",
        user: str = "",
        thread_ts: str | None = None,
    ) -> None:
        """An ephemeral answer: through the response URL when there is one (it works even
        where the bot is not a member; it expires after 30 minutes and a few posts), else
        with chat.postEphemeral."""
        if response_url:
            try:
                hook = AsyncWebhookClient(response_url, retry_handlers=self.retry_handlers)
                answer = await hook.send(
                    text=text, response_type="ephemeral", replace_original=False
                )
                if answer.status_code == 200:
                    return
                log.info("the response URL answered %d; answering directly", answer.status_code)
            except Exception:
                log.warning("the response URL failed; answering directly", exc_info=True)
        if not (team and channel and user):
            return
        try:
            client = await self.client(team)
            await client.chat_postEphemeral(
                channel=channel, user=user, text=text, thread_ts=thread_ts
            )
        except Exception:
            log.warning("could not answer %s in %s", user, channel, exc_info=True)

    async def reply(
        self,
        team: str,
        channel: str,
        thread_ts: str | None,
        text: str,
        blocks: list[dict[str, Any]] | None = None,
    ) -> None:
        """A message in the thread (or, without one, the channel) for everyone there."""
        try:
            client = await self.client(team)
            await client.chat_postMessage(
                channel=channel, thread_ts=thread_ts, text=text, blocks=blocks, unfurl_links=False
            )
        except Exception:
            log.warning("could not reply in %s", channel, exc_info=True)
