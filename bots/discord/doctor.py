"""`imagebot doctor` for Discord: the token, the application's privileged intents against what
the bot asks for, the registered slash commands, and the invite link."""

from __future__ import annotations

from typing import Any

import discord
import httpx

from bots.discord.app import ImageBotClient, intents_for
from bots.discord.commands import add_commands
from bots.discord.permissions import invite_url
from core.catalog import Catalog
from core.config import Settings
from core.doctor import TIMEOUT_SECONDS, Check, cannot_reach

# privileged intents: (what the developer portal calls it, the Intents attribute, the
# application flags that say it is switched on: full and "limited" for bots in < 100 servers)
PRIVILEGED = (
    ("Message Content Intent", "message_content", (1 << 18) | (1 << 19)),
    ("Server Members Intent", "members", (1 << 14) | (1 << 15)),
    ("Presence Intent", "presences", (1 << 12) | (1 << 13)),
)
# what turns each one on, in imagebot's settings
WANTED_BY = {"message_content": "DISCORD_THREAD_MESSAGES"}
GUILDS_CHECKED = 10  # servers whose own commands are looked at, when none are global
SYNC_FIX = (
    "run `imagebot discord-sync` (every server, may take up to an hour to show) or "
    "`imagebot discord-sync --guild SERVER_ID` (one server, at once)"
)


class _Refused(Exception):
    def __init__(self, response: httpx.Response) -> None:
        try:
            said = response.json().get("message")
        except (ValueError, AttributeError):
            said = None
        super().__init__(f"HTTP {response.status_code}: {said or response.text[:200]}")
        self.status = response.status_code


async def checks(settings: Settings, catalog: Catalog) -> list[Check]:
    if settings.discord_bot_token is None:
        return [Check.skip("Discord", "not configured: set DISCORD_BOT_TOKEN")]
    root = settings.discord_api_url.rstrip("/")
    headers = {
        "Authorization": f"Bot {settings.discord_bot_token.get_secret_value()}",
        "User-Agent": "DiscordBot (imagebot doctor, 0.1.0)",
    }
    async with httpx.AsyncClient(headers=headers, timeout=TIMEOUT_SECONDS) as http:

        async def get(path: str) -> Any:
            response = await http.get(root + path)
            if response.status_code != 200:
                raise _Refused(response)
            return response.json()

        try:
            me = await get("/users/@me")
            app = await get("/oauth2/applications/@me")
        except _Refused as exc:
            if exc.status == 401:
                fix = (
                    "DISCORD_BOT_TOKEN was refused by Discord: copy the token again from the "
                    "developer portal (Bot → Reset Token)"
                )
            else:
                fix = f"Discord answered {exc}; check DISCORD_BOT_TOKEN and DISCORD_API_URL"
            return [Check.fail("Discord bot token", fix)]
        except (httpx.TransportError, ValueError) as exc:
            return [Check.fail("Discord bot token", _unreachable(root + "/users/@me", exc))]
        app_id = str(app.get("id"))
        results = [
            Check.ok(
                f"Discord bot token: signed in as {me.get('username')} ({me.get('id')}), "
                f"application {app_id}"
            ),
            _intents(settings, int(app.get("flags") or 0)),
        ]
        if settings.discord_public_key is not None:
            results.append(_public_key(settings.discord_public_key, app))
        try:
            results.append(await _commands(get, app_id, settings, catalog))
        except _Refused as exc:
            results.append(Check.fail("Discord commands", f"Discord answered {exc}"))
        except (httpx.TransportError, ValueError) as exc:
            url = f"{root}/applications/{app_id}/commands"
            results.append(Check.fail("Discord commands", _unreachable(url, exc)))
    results.append(Check.ok(f"Discord invite link: {invite_url(app_id, settings)}"))
    return results


def _unreachable(url: str, exc: Exception) -> str:
    if isinstance(exc, httpx.TimeoutException):
        return cannot_reach(url, TimeoutError())
    if isinstance(exc, ValueError):
        return f"{url} did not answer with JSON: check DISCORD_API_URL"
    return cannot_reach(url, exc)


def _intents(settings: Settings, flags: int) -> Check:
    asked = intents_for(settings)
    wanted = [(label, attr) for label, attr, _ in PRIVILEGED if getattr(asked, attr)]
    off = [(label, attr) for label, attr, bits in PRIVILEGED if not flags & bits]
    lacking = [(label, attr) for label, attr in wanted if (label, attr) in off]
    if lacking:
        label, attr = lacking[0]
        setting = WANTED_BY.get(attr)
        because = f"{setting}=true needs it" if setting else "the bot asks for it"
        undo = f", or set {setting}=false" if setting else ""
        return Check.fail(
            f"Discord intents: {label} is off but {because}",
            "switch it on in the developer portal under Bot → Privileged Gateway Intents" + undo,
        )
    spare = [label for label, attr, bits in PRIVILEGED if flags & bits and not getattr(asked, attr)]
    note = f" ({', '.join(spare)} also on, not needed: switch off for least privilege)"
    note = note if spare else ""
    if not wanted:
        return Check.ok(f"Discord intents: no privileged intent needed{note}")
    on = ", ".join(f"{label} (for {WANTED_BY.get(attr, 'the bot')})" for label, attr in wanted)
    return Check.ok(f"Discord intents: {on} switched on{note}")


def _public_key(public_key: str, app: dict[str, Any]) -> Check:
    """DISCORD_PUBLIC_KEY against the application's own (its `verify_key`), and where Discord
    sends interactions (the portal's Interactions Endpoint URL)."""
    if str(app.get("verify_key") or "").lower() != public_key:
        return Check.fail(
            "Discord public key: DISCORD_PUBLIC_KEY is not this application's",
            "copy the Public Key from the developer portal (General Information) again: "
            "every interaction would be refused with 401",
        )
    endpoint = app.get("interactions_endpoint_url")
    if not endpoint:
        return Check.fail(
            "Discord public key matches, but no Interactions Endpoint URL is set",
            "set it to https://YOUR-HOST/discord/interactions in the developer portal "
            "(General Information); until then interactions come over the gateway",
        )
    return Check.ok(f"Discord public key matches; interactions are sent to {endpoint}")


def command_names(settings: Settings, catalog: Catalog) -> list[str]:
    """The names `imagebot discord-sync` registers (the same definitions, built offline)."""
    client = ImageBotClient(intents=discord.Intents.none())
    add_commands(client.tree, catalog, dms=settings.discord_dms)
    return sorted(command.name for command in client.tree.get_commands())


async def _commands(get: Any, app_id: str, settings: Settings, catalog: Catalog) -> Check:
    expected = command_names(settings, catalog)
    shown = ", ".join(f"/{name}" for name in expected)
    registered = {c.get("name") for c in await get(f"/applications/{app_id}/commands")}
    if set(expected) <= registered:
        return Check.ok(f"Discord commands: {shown} registered for every server")
    # registered one server at a time (discord-sync --guild)?
    servers = []
    for guild in (await get("/users/@me/guilds?limit=200"))[:GUILDS_CHECKED]:
        try:
            own = await get(f"/applications/{app_id}/guilds/{guild['id']}/commands")
        except _Refused:
            continue  # invited without applications.commands: nothing registered there
        if set(expected) <= registered | {c.get("name") for c in own}:
            servers.append(f"{guild.get('name')} ({guild['id']})")
    if servers:
        return Check.ok(
            f"Discord commands: {shown} registered in {', '.join(servers)} only "
            "(`imagebot discord-sync` offers them in every server)"
        )
    lacking = ", ".join(f"/{name}" for name in expected if name not in registered)
    return Check.fail(f"Discord commands: {lacking} not registered", SYNC_FIX)
