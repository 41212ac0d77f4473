"""Installing the app in many workspaces: Bolt's OAuth v2 flow (`/slack/install`,
`/slack/oauth_redirect`) over our database's installation and state stores.

Bolt does the flow itself: the state (kept in the database, good once, for ten minutes, and
tied to the installer's browser by a cookie), the `oauth.v2.access` exchange, the success
and failure pages. What is ours: where installations and states are kept, the scopes (the
same list as the manifest's), and one log line for each install.
"""

from __future__ import annotations

import logging
from urllib.parse import urljoin

from aiohttp import web
from slack_bolt.adapter.aiohttp import to_aiohttp_response
from slack_bolt.oauth.async_callback_options import (
    AsyncCallbackOptions,
    AsyncFailureArgs,
    AsyncSuccessArgs,
)
from slack_bolt.oauth.async_oauth_flow import AsyncOAuthFlow
from slack_bolt.oauth.async_oauth_settings import AsyncOAuthSettings
from slack_bolt.request.async_request import AsyncBoltRequest
from slack_bolt.response import BoltResponse
from slack_sdk.http_retry.async_handler import AsyncRetryHandler
from slack_sdk.oauth.token_rotation.async_rotator import AsyncTokenRotator
from slack_sdk.web.async_client import AsyncWebClient

from bots.slack import scopes
from bots.slack.installations import StoreInstallations, StoreOAuthStates, tenant_of
from bots.slack.workspaces import ManyWorkspaces
from core.config import ConfigError, Settings
from core.store import Store

log = logging.getLogger(__name__)

INSTALL_PATH = "/slack/install"
REDIRECT_PATH = "/slack/oauth_redirect"
STATE_SECONDS = 600  # Slack's default: an install left open longer starts again
# a token that expires within this is refreshed before it is used (Slack's last 12 hours)
ROTATE_MINUTES_BEFORE = 120


def check_settings(settings: Settings) -> None:
    """What installing in many workspaces needs, one line for the first thing missing."""
    settings.require("SLACK_CLIENT_SECRET")
    if settings.slack_app_token is not None:
        raise ConfigError(
            "SLACK_APP_TOKEN cannot be used with SLACK_CLIENT_ID: installing in many "
            "workspaces needs HTTP mode (Slack sends the installs and every workspace's "
            "requests to your public URL); unset SLACK_APP_TOKEN and set SLACK_SIGNING_SECRET"
        )
    try:
        settings.require("SLACK_SIGNING_SECRET")
    except ConfigError as exc:
        raise ConfigError(f"{exc}; installing in many workspaces needs it") from None
    if settings.slack_bot_token is not None:
        log.warning(
            "SLACK_BOT_TOKEN is not used when SLACK_CLIENT_ID is set: each workspace's token "
            "comes from installing the app through %s",
            INSTALL_PATH,
        )


def authorization_url(api_url: str) -> str:
    """Slack's consent page, beside its Web API (slack.com, slack-gov.com, or a fake)."""
    return urljoin(api_url, "../oauth/v2/authorize")


def many_workspaces(
    settings: Settings,
    store: Store,
    client: AsyncWebClient,
    retry_handlers: list[AsyncRetryHandler],
) -> tuple[AsyncOAuthSettings, ManyWorkspaces]:
    """Bolt's OAuth settings over our stores, and the workspaces they install."""
    assert settings.slack_client_id is not None and settings.slack_client_secret is not None
    client_id = settings.slack_client_id
    client_secret = settings.slack_client_secret.get_secret_value()
    installations = StoreInstallations(
        store, retention_days=settings.slack_uninstall_retention_days
    )
    workspaces = ManyWorkspaces(
        installations,
        api_url=settings.slack_api_url,
        retry_handlers=retry_handlers,
        rotator=AsyncTokenRotator(client_id=client_id, client_secret=client_secret, client=client),
        rotate_minutes_before=ROTATE_MINUTES_BEFORE,
    )
    installations.on_removed = workspaces.forget
    oauth = AsyncOAuthSettings(
        client_id=client_id,
        client_secret=client_secret,
        scopes=[s.name for s in scopes.needed(settings)],
        user_scopes=[],
        install_path=INSTALL_PATH,
        redirect_uri_path=REDIRECT_PATH,
        # the install link goes straight to Slack's consent page
        install_page_rendering_enabled=False,
        authorization_url=authorization_url(settings.slack_api_url),
        callback_options=AsyncCallbackOptions(success=_installed, failure=_not_installed),
        installation_store=installations,
        token_rotation_expiration_minutes=ROTATE_MINUTES_BEFORE,
        state_store=StoreOAuthStates(store, expiration_seconds=STATE_SECONDS),
        state_expiration_seconds=STATE_SECONDS,
        logger=log,
    )
    return oauth, workspaces


async def _installed(args: AsyncSuccessArgs) -> BoltResponse:
    i = args.installation
    log.info(
        "Slack: installed in workspace %s (%s)%s",
        i.team_name or i.enterprise_name,
        tenant_of(i.enterprise_id, i.team_id, bool(i.is_enterprise_install)),
        "; its token rotates" if i.bot_refresh_token else "",
    )
    return await args.default.success(args)


async def _not_installed(args: AsyncFailureArgs) -> BoltResponse:
    # invalid_browser (no state cookie), invalid_state (unknown, used or expired),
    # invalid_code, access_denied (the installer cancelled), storage_error
    log.warning("Slack: an install did not complete: %s", args.reason)
    return await args.default.failure(args)


def add_routes(web_app: web.Application, flow: AsyncOAuthFlow) -> None:
    """GET /slack/install and GET /slack/oauth_redirect, beside /slack/events."""

    async def install(request: web.Request) -> web.Response:
        return await to_aiohttp_response(await flow.handle_installation(_bolt_request(request)))

    async def redirect(request: web.Request) -> web.Response:
        return await to_aiohttp_response(await flow.handle_callback(_bolt_request(request)))

    web_app.router.add_get(flow.install_path, install)
    web_app.router.add_get(flow.redirect_uri_path, redirect)


def _bolt_request(request: web.Request) -> AsyncBoltRequest:
    return AsyncBoltRequest(body="", query=request.query_string, headers=dict(request.headers))
