"""Slack's installation and OAuth state stores, over our database: slack_sdk's objects in,
core's plain rows kept (core knows nothing of slack_sdk).

Only the bot's installation is kept, one per workspace (or org, for an org-wide install):
the app asks for no user scopes, so there are no user tokens to keep.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable
from typing import Any

from slack_sdk.oauth.installation_store import Bot, Installation
from slack_sdk.oauth.installation_store.async_installation_store import AsyncInstallationStore
from slack_sdk.oauth.state_store.async_state_store import AsyncOAuthStateStore

from bots.slack.events import PLATFORM
from core.store import Installation as Row
from core.store import Store

log = logging.getLogger(__name__)

DAY = 86400.0
# what an installation carries besides the bot's token, kept as it came for reading back
_DETAILS = (
    "app_id",
    "enterprise_name",
    "enterprise_url",
    "team_name",
    "user_id",
    "incoming_webhook_url",
    "incoming_webhook_channel",
    "incoming_webhook_channel_id",
    "incoming_webhook_configuration_url",
    "is_enterprise_install",
    "token_type",
    "custom_values",
)


def tenant_of(enterprise_id: str | None, team_id: str | None, org_wide: bool = False) -> str:
    """What a workspace's jobs, usage and settings are kept under: its team id (the org's
    id for an org-wide install)."""
    return (enterprise_id if org_wide else team_id) or enterprise_id or ""


def _row(installation: Installation) -> Row:
    i = installation
    org_wide = bool(i.is_enterprise_install)
    return Row(
        platform=PLATFORM,
        tenant=tenant_of(i.enterprise_id, i.team_id, org_wide),
        bot_token=i.bot_token or "",
        bot_scopes=",".join(i.bot_scopes or []),
        enterprise_id=i.enterprise_id,
        # an org-wide installation serves every workspace of the org: it is found by the
        # org's id alone
        team_id=None if org_wide else i.team_id,
        bot_refresh_token=i.bot_refresh_token,
        bot_token_expires_at=float(i.bot_token_expires_at) if i.bot_token_expires_at else None,
        bot_id=i.bot_id,
        bot_user_id=i.bot_user_id,
        details={name: getattr(i, name) for name in _DETAILS},
        installed_at=float(i.installed_at),
    )


def _installation(row: Row) -> Installation:
    details: dict[str, Any] = dict(row.details)
    installer = details.pop("user_id", None) or ""
    return Installation(
        user_id=installer,
        enterprise_id=row.enterprise_id,
        team_id=row.team_id,
        bot_token=row.bot_token,
        bot_id=row.bot_id,
        bot_user_id=row.bot_user_id,
        bot_scopes=row.bot_scopes,
        bot_refresh_token=row.bot_refresh_token,
        bot_token_expires_at=int(row.bot_token_expires_at) if row.bot_token_expires_at else None,
        installed_at=row.installed_at,
        **{k: details[k] for k in _DETAILS if k in details and details[k] is not None},
    )


class StoreInstallations(AsyncInstallationStore):
    """Bolt's installation store: one row per workspace in the `installations` table.

    Removing an installation (an uninstall, the bot token revoked) also sets the date its
    workspace's data goes, `retention_days` later (0: never); installing again calls that
    off.
    """

    def __init__(
        self,
        store: Store,
        *,
        retention_days: int,
        on_removed: Callable[[str], None] = lambda tenant: None,
    ) -> None:
        self.store = store
        self.retention_days = retention_days
        self.on_removed = on_removed  # told the tenant, so caches of its token can go

    @property
    def logger(self) -> logging.Logger:
        return log

    async def async_save(self, installation: Installation) -> None:
        row = _row(installation)
        if not row.bot_token:
            log.warning("Slack: an installation in %s came without a bot token", row.tenant)
            return
        await self.store.save_installation(row)

    async def async_save_bot(self, bot: Bot) -> None:
        # a refreshed token: the rest of the installation stays as it was
        current = await self.async_find_installation(
            enterprise_id=bot.enterprise_id,
            team_id=bot.team_id,
            is_enterprise_install=bot.is_enterprise_install,
        )
        if current is None:
            return
        current.bot_token = bot.bot_token
        current.bot_refresh_token = bot.bot_refresh_token
        current.bot_token_expires_at = bot.bot_token_expires_at
        await self.async_save(current)

    async def async_find_installation(
        self,
        *,
        enterprise_id: str | None,
        team_id: str | None,
        user_id: str | None = None,
        is_enterprise_install: bool | None = False,
    ) -> Installation | None:
        if user_id is not None:
            return None  # no user tokens are kept
        row = await self.store.installation(
            PLATFORM,
            enterprise_id=enterprise_id,
            team_id=None if is_enterprise_install else team_id,
        )
        return _installation(row) if row else None

    async def async_find_bot(
        self,
        *,
        enterprise_id: str | None,
        team_id: str | None,
        is_enterprise_install: bool | None = False,
    ) -> Bot | None:
        found = await self.async_find_installation(
            enterprise_id=enterprise_id,
            team_id=team_id,
            is_enterprise_install=is_enterprise_install,
        )
        return found.to_bot() if found else None

    async def find_for_tenant(self, tenant: str) -> Installation | None:
        """The installation serving the workspace a job is kept under."""
        row = await self.store.installation_for(PLATFORM, tenant)
        return _installation(row) if row else None

    async def async_delete_bot(self, *, enterprise_id: str | None, team_id: str | None) -> None:
        tenant = tenant_of(enterprise_id, team_id)
        removed = await self.store.remove_installation(
            PLATFORM,
            enterprise_id=enterprise_id,
            team_id=team_id,
            # 0 keeps the data, as the other retention settings do
            delete_data_at=self.store.now() + self.retention_days * DAY
            if self.retention_days
            else None,
        )
        self.on_removed(tenant)
        if removed and self.retention_days:
            log.info(
                "Slack: the app was removed from workspace %s; its data is deleted in %d days "
                "unless it is installed again",
                tenant,
                self.retention_days,
            )
        elif removed:
            log.info("Slack: the app was removed from workspace %s; its data is kept", tenant)

    async def async_delete_installation(
        self,
        *,
        enterprise_id: str | None,
        team_id: str | None,
        user_id: str | None = None,
    ) -> None:
        if user_id is not None:
            return  # a user's token: none is kept
        await self.async_delete_bot(enterprise_id=enterprise_id, team_id=team_id)

    async def async_delete_all(self, *, enterprise_id: str | None, team_id: str | None) -> None:
        await self.async_delete_bot(enterprise_id=enterprise_id, team_id=team_id)


class StoreOAuthStates(AsyncOAuthStateStore):
    """The states of installs under way: each good once, for `expiration_seconds`."""

    def __init__(self, store: Store, *, expiration_seconds: int) -> None:
        self.store = store
        self.expiration_seconds = expiration_seconds

    @property
    def logger(self) -> logging.Logger:
        return log

    async def async_issue(self, *args: Any, **kwargs: Any) -> str:
        state = secrets.token_urlsafe(24)
        await self.store.issue_oauth_state(state, self.store.now() + self.expiration_seconds)
        return state

    async def async_consume(self, state: str) -> bool:
        if not state:
            return False
        used = await self.store.consume_oauth_state(state)
        if not used:
            log.warning("Slack: an install came back with an unknown, used or expired state")
        return used
