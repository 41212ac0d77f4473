"""`imagebot doctor` for Slack: the bot token, its scopes, and the connection mode's credentials
(with the app installed in many workspaces: the client id and secret)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import aiohttp
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bots.slack import oauth, scopes
from bots.slack.workspaces import REFUSED_TOKEN
from core.config import ConfigError, Settings
from core.doctor import TIMEOUT_SECONDS, Check, cannot_reach

_UNREACHABLE = (aiohttp.ClientError, TimeoutError, OSError)
SCOPES_PAGE = "OAuth & Permissions → Scopes → Bot Token Scopes (or the scopes in manifest.yml)"


async def checks(settings: Settings) -> list[Check]:
    if settings.slack_client_id is not None:
        return await _many_workspaces(settings)
    if settings.slack_bot_token is None:
        return [Check.skip("Slack", "not configured: set SLACK_BOT_TOKEN")]
    results = await _bot_token(settings)
    if settings.slack_app_token is not None:
        results.append(await _socket_mode(settings))
    elif settings.slack_signing_secret is not None:
        results.append(
            Check.ok(
                "Slack HTTP mode: SLACK_SIGNING_SECRET is set (Slack alone can tell whether it "
                "is the right one: a wrong secret makes POST /slack/events answer 401)"
            )
        )
    else:
        results.append(
            Check.fail(
                "Slack connection",
                "neither SLACK_APP_TOKEN nor SLACK_SIGNING_SECRET is set: set SLACK_APP_TOKEN "
                "(xapp-…, Basic Information → App-Level Tokens) for Socket Mode, or "
                "SLACK_SIGNING_SECRET (Basic Information → App Credentials) for HTTP mode",
            )
        )
    return results


def _client(settings: Settings, token: str) -> AsyncWebClient:
    # one try with a short timeout; a session per call, closed by the SDK
    return AsyncWebClient(
        token=token,
        base_url=settings.slack_api_url,
        timeout=int(TIMEOUT_SECONDS),
        retry_handlers=[],
    )


async def _bot_token(settings: Settings) -> list[Check]:
    assert settings.slack_bot_token is not None
    client = _client(settings, settings.slack_bot_token.get_secret_value())
    try:
        answer = await client.auth_test()
    except SlackApiError as exc:
        error = exc.response.get("error")
        if error in REFUSED_TOKEN:
            fix = (
                f"SLACK_BOT_TOKEN was refused by Slack ({error}): use the Bot User OAuth Token "
                "(xoxb-...) from the app's OAuth & Permissions page"
            )
        else:
            fix = f"Slack answered auth.test with {error}: check SLACK_BOT_TOKEN and SLACK_API_URL"
        return [Check.fail("Slack bot token", fix)]
    except _UNREACHABLE as exc:
        return [Check.fail("Slack bot token", cannot_reach(f"{client.base_url}auth.test", exc))]
    data: Mapping[str, Any] = answer.data if isinstance(answer.data, dict) else {}
    bot = (
        f"Slack bot token: signed in as @{data.get('user')} ({data.get('user_id')}) in "
        f"{data.get('team')} ({data.get('team_id')})"
    )
    return [Check.ok(bot), _scopes(settings, answer.headers)]


def _header(headers: Mapping[str, Any], name: str) -> str | None:
    for key, value in headers.items():
        if key.lower() == name:
            return str(value)
    return None


def _scopes(settings: Settings, headers: Mapping[str, Any]) -> Check:
    raw = _header(headers, "x-oauth-scopes")
    if raw is None:
        return Check.fail(
            "Slack scopes",
            "Slack did not say which scopes the token has (no x-oauth-scopes header): check "
            f"under {SCOPES_PAGE} that it has "
            + ", ".join(s.name for s in scopes.needed(settings)),
        )
    granted = [name.strip() for name in raw.split(",") if name.strip()]
    lacking = scopes.missing(settings, granted)
    if lacking:
        named = ", ".join(
            f"{s.name} ({s.why}{f'; {s.setting} is on' if s.setting else ''})" for s in lacking
        )
        return Check.fail(
            "Slack scopes",
            f"missing {named}: add them under {SCOPES_PAGE} and reinstall the app to the workspace",
        )
    needed = ", ".join(s.name for s in scopes.needed(settings))
    extra = scopes.unneeded(settings, granted)
    spare = f" (also granted, not needed: {', '.join(extra)})" if extra else ""
    return Check.ok(f"Slack scopes: {needed} granted{spare}")


async def _many_workspaces(settings: Settings) -> list[Check]:
    """The settings many workspaces need, and whether Slack takes the client id and secret
    (an exchange of a code that cannot be good: Slack names bad credentials before it)."""
    try:
        oauth.check_settings(settings)
    except ConfigError as exc:
        return [Check.fail("Slack many workspaces", str(exc))]
    assert settings.slack_client_secret is not None
    client = _client(settings, "")
    try:
        await client.oauth_v2_access(
            client_id=settings.slack_client_id,
            client_secret=settings.slack_client_secret.get_secret_value(),
            code="imagebot-doctor",
        )
    except SlackApiError as exc:
        error = exc.response.get("error")
        if error in ("invalid_client_id", "bad_client_secret", "invalid_client"):
            return [
                Check.fail(
                    "Slack many workspaces",
                    f"Slack refused SLACK_CLIENT_ID or SLACK_CLIENT_SECRET ({error}): copy both "
                    "from the app's Basic Information → App Credentials",
                )
            ]
        if error != "invalid_code":
            return [
                Check.fail(
                    "Slack many workspaces",
                    f"Slack answered oauth.v2.access with {error}: check SLACK_API_URL",
                )
            ]
    except _UNREACHABLE as exc:
        return [
            Check.fail(
                "Slack many workspaces", cannot_reach(f"{client.base_url}oauth.v2.access", exc)
            )
        ]
    return [
        Check.ok(
            "Slack many workspaces: SLACK_CLIENT_ID and SLACK_CLIENT_SECRET accepted; installs "
            f"start at https://<your host>{oauth.INSTALL_PATH} and come back to "
            f"{oauth.REDIRECT_PATH} (add it under OAuth & Permissions → Redirect URLs)"
        )
    ]


async def _socket_mode(settings: Settings) -> Check:
    assert settings.slack_app_token is not None
    token = settings.slack_app_token.get_secret_value()
    client = _client(settings, token)
    try:
        await client.apps_connections_open(app_token=token)
    except SlackApiError as exc:
        error = exc.response.get("error")
        if error in REFUSED_TOKEN:
            fix = (
                f"SLACK_APP_TOKEN was refused by Slack ({error}): use an app-level token "
                "(xapp-...) with the connections:write scope"
            )
        else:
            fix = (
                f"Slack answered apps.connections.open with {error}: turn Socket Mode on under "
                "the app's Socket Mode page, or unset SLACK_APP_TOKEN to use HTTP mode"
            )
        return Check.fail("Slack Socket Mode", fix)
    except _UNREACHABLE as exc:
        return Check.fail(
            "Slack Socket Mode", cannot_reach(f"{client.base_url}apps.connections.open", exc)
        )
    return Check.ok("Slack Socket Mode: SLACK_APP_TOKEN may open a connection")
