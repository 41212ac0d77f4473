"""Which token, Web API client and bot identity serve a workspace: the one SLACK_BOT_TOKEN,
or, with the app installed in many workspaces, each workspace's own installation (its
token refreshed first when token rotation is on and it is about to expire)."""

from __future__ import annotations

import asyncio
import logging
import time
from collections import OrderedDict
from typing import Any, Protocol

from slack_bolt.authorization import AuthorizeResult
from slack_bolt.authorization.async_authorize import AsyncAuthorize
from slack_bolt.context.async_context import AsyncBoltContext
from slack_sdk.errors import SlackApiError, SlackTokenRotationError
from slack_sdk.http_retry.async_handler import AsyncRetryHandler
from slack_sdk.oauth.installation_store import Installation
from slack_sdk.oauth.token_rotation.async_rotator import AsyncTokenRotator
from slack_sdk.web.async_client import AsyncWebClient

from bots.slack.installations import StoreInstallations
from bots.slack.payloads import AuthTest
from core.config import ConfigError
from core.errors import Undeliverable

log = logging.getLogger(__name__)

REFUSED_TOKEN = frozenset(
    {"invalid_auth", "not_authed", "account_inactive", "token_revoked", "not_allowed_token_type"}
)
REMEMBERED_WORKSPACES = 10_000


class NotInstalled(Undeliverable):
    """The workspace has no installation: it uninstalled the app or revoked its token (or
    its token could not be refreshed). Nothing can be posted there until it installs again."""

    def __init__(self, team: str) -> None:
        super().__init__(f"the app is not installed in Slack workspace {team}")
        self.team = team


class Workspaces(Protocol):
    """What serves each workspace; `team` is the tenant its jobs are kept under."""

    async def client(self, team: str) -> AsyncWebClient: ...

    async def token(self, team: str) -> str: ...

    async def bot(self, team: str) -> AuthTest:
        """Who the bot is in that workspace (auth.test with its own token)."""
        ...


class OneWorkspace:
    """SLACK_BOT_TOKEN: one workspace, one client, identified once at start."""

    def __init__(self, client: AsyncWebClient, token: str) -> None:
        self._client = client
        self._token = token
        self.identity: AuthTest | None = None

    def __repr__(self) -> str:
        return f"OneWorkspace(identity={self.identity!r})"

    async def identify(self) -> AuthTest:
        try:
            answer = await self._client.auth_test()
        except SlackApiError as exc:
            error = exc.response.get("error")
            if error in REFUSED_TOKEN:
                raise ConfigError(
                    f"SLACK_BOT_TOKEN was refused by Slack ({error}): use the Bot User OAuth "
                    "Token (xoxb-...) from the app's OAuth & Permissions page"
                ) from None
            raise
        self.identity = AuthTest.model_validate(answer.data)
        return self.identity

    async def client(self, team: str) -> AsyncWebClient:
        return self._client

    async def token(self, team: str) -> str:
        return self._token

    async def bot(self, team: str) -> AuthTest:
        assert self.identity is not None, "serve() has not identified the bot yet"
        return self.identity


class ManyWorkspaces:
    """Each workspace's installation, read from the store for every use (another process
    may have refreshed or removed it), with a Web API client kept per token."""

    def __init__(
        self,
        installations: StoreInstallations,
        *,
        api_url: str,
        retry_handlers: list[AsyncRetryHandler],
        rotator: AsyncTokenRotator,
        rotate_minutes_before: int,
    ) -> None:
        self.installations = installations
        self._api_url = api_url
        self._retry_handlers = retry_handlers
        self._rotator = rotator
        self._rotate_minutes = rotate_minutes_before
        self._clients: OrderedDict[str, tuple[str, AsyncWebClient]] = OrderedDict()
        self._bots: OrderedDict[str, AuthTest] = OrderedDict()
        # one refresh per workspace at a time: Slack takes each refresh token once
        self._refreshing: dict[str, asyncio.Lock] = {}

    def __repr__(self) -> str:
        return f"ManyWorkspaces({len(self._clients)} clients)"

    async def installation(
        self,
        *,
        enterprise_id: str | None,
        team_id: str | None,
        is_enterprise_install: bool | None = False,
    ) -> Installation | None:
        """The installation for these ids, its bot token refreshed first if it is due."""
        ids = {
            "enterprise_id": enterprise_id,
            "team_id": team_id,
            "is_enterprise_install": is_enterprise_install,
        }
        found = await self.installations.async_find_installation(**ids)
        if found is None or not self._due(found):
            return found
        return await self._refresh(found, ids)

    async def client(self, team: str) -> AsyncWebClient:
        """A client with the workspace's current token (NotInstalled when it has none)."""
        token = await self.token(team)
        kept = self._clients.get(team)
        if kept is None or kept[0] != token:
            client = AsyncWebClient(
                token=token, base_url=self._api_url, retry_handlers=self._retry_handlers
            )
            kept = (token, client)
            self._clients[team] = kept
            if len(self._clients) > REMEMBERED_WORKSPACES:
                self._clients.popitem(last=False)
        self._clients.move_to_end(team)
        return kept[1]

    async def token(self, team: str) -> str:
        """The workspace's bot token, refreshed first if it is due."""
        found = await self.installations.find_for_tenant(team)
        if found is not None and self._due(found):
            ids = {
                "enterprise_id": found.enterprise_id,
                "team_id": found.team_id,
                "is_enterprise_install": found.is_enterprise_install,
            }
            found = await self._refresh(found, ids)
        if found is None or not found.bot_token:
            raise NotInstalled(team)
        return found.bot_token

    async def bot(self, team: str) -> AuthTest:
        known = self._bots.get(team)
        if known is not None:
            return known
        client = await self.client(team)
        try:
            answer = await client.auth_test()
        except SlackApiError as exc:
            if exc.response.get("error") in REFUSED_TOKEN:
                raise NotInstalled(team) from None
            raise
        bot = AuthTest.model_validate(answer.data)
        self._bots[team] = bot
        if len(self._bots) > REMEMBERED_WORKSPACES:
            self._bots.popitem(last=False)
        return bot

    def forget(self, team: str) -> None:
        """The workspace's installation is gone: so are its client and identity here."""
        self._clients.pop(team, None)
        self._bots.pop(team, None)

    def _due(self, installation: Installation) -> bool:
        """Token rotation is on, and the token expires within the refresh margin."""
        expires = installation.bot_token_expires_at
        if not installation.bot_refresh_token or expires is None:
            return False
        return expires <= time.time() + self._rotate_minutes * 60

    async def _refresh(
        self, installation: Installation, ids: dict[str, Any]
    ) -> Installation | None:
        key = f"{ids['enterprise_id']}:{ids['team_id']}"
        async with self._refreshing.setdefault(key, asyncio.Lock()):
            # another task (or process) may have refreshed it while this one waited
            current = await self.installations.async_find_installation(**ids) or installation
            try:
                refreshed = await self._rotator.perform_token_rotation(
                    installation=current, minutes_before_expiration=self._rotate_minutes
                )
            except SlackTokenRotationError as exc:
                again = await self.installations.async_find_installation(**ids)
                if again is not None and again.bot_refresh_token != current.bot_refresh_token:
                    return again  # another process refreshed it first
                error = exc.api_error.response.get("error")
                log.error(
                    "Slack: the token of workspace %s could not be refreshed: %s",
                    current.team_id or current.enterprise_id,
                    error,
                )
                return None
            if refreshed is None:
                return current  # not yet due
            await self.installations.async_save(refreshed)
            log.info(
                "Slack: refreshed the bot token of workspace %s",
                refreshed.team_id or refreshed.enterprise_id,
            )
            return refreshed


class WorkspaceAuthorize(AsyncAuthorize):
    """Bolt's authorization of each request, from the workspace's installation as stored
    (no auth.test per request: the installation names the bot already)."""

    def __init__(self, workspaces: ManyWorkspaces) -> None:
        self.workspaces = workspaces

    async def __call__(
        self,
        *,
        context: AsyncBoltContext,
        enterprise_id: str | None,
        team_id: str | None,
        user_id: str | None,
        **_: Any,
    ) -> AuthorizeResult | None:
        found = await self.workspaces.installation(
            enterprise_id=enterprise_id,
            team_id=team_id,
            is_enterprise_install=context.is_enterprise_install,
        )
        if found is None or not found.bot_token:
            log.warning(
                "Slack: a request from workspace %s, where the app is not installed",
                team_id or enterprise_id,
            )
            return None
        return AuthorizeResult(
            enterprise_id=found.enterprise_id,
            team_id=found.team_id,
            bot_user_id=found.bot_user_id,
            bot_id=found.bot_id,
            bot_token=found.bot_token,
            bot_scopes=found.bot_scopes,
            user_id=user_id,
        )
