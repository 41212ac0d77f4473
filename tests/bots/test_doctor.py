"""`imagebot doctor` against the fakes: every configured part ✓, each misconfiguration one ✗
line with its fix and a non-zero exit, unconfigured platforms skipped."""

from __future__ import annotations

import asyncio
import os
import re
import socket
import sys
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from bots.cli import doctor
from bots.discord import permissions, sync_commands
from core import doctor as health
from core.catalog import load_catalog
from core.config import Settings, load_settings
from core.gemini import ListedModel
from core.providers import PROVIDERS
from tests.bots.test_discord_harness import discord_server
from tests.conftest import API_KEY, make_settings
from tests.fakes.discord import FakeDiscord
from tests.fakes.gemini import FakeGemini, Fault
from tests.fakes.slack import FakeSlack

REPO = Path(__file__).resolve().parents[2]
LEAST_SCOPES = "commands,chat:write,files:write,files:read,app_mentions:read,users:read,im:history"


@dataclass
class Stack:
    gemini: FakeGemini
    slack: FakeSlack
    discord: FakeDiscord
    tmp_path: Path

    def settings(self, **values: Any) -> Settings:
        platforms = {
            "SLACK_BOT_TOKEN": self.slack.bot_token,
            "SLACK_APP_TOKEN": self.slack.app_token,
            "SLACK_API_URL": self.slack.api_url,
            "DISCORD_BOT_TOKEN": self.discord.token,
            "DISCORD_API_URL": self.discord.api_url,
        }
        return make_settings(self.tmp_path, self.gemini, **{**platforms, **values})


@pytest.fixture
async def stack(tmp_path: Path, fake_gemini: FakeGemini) -> AsyncIterator[Stack]:
    async with FakeSlack() as slack, discord_server() as fake_discord:
        slack.scopes = LEAST_SCOPES
        stack = Stack(fake_gemini, slack, fake_discord, tmp_path)
        await sync_commands(stack.settings(), None)  # as `imagebot discord-sync` does
        yield stack


async def run(settings: Settings) -> tuple[int, list[str]]:
    lines: list[str] = []
    code = await doctor(lambda: settings, lines.append)
    return code, lines


def line(lines: list[str], start: str) -> str:
    found = [text for text in lines if text.startswith(start)]
    assert len(found) == 1, f"no single line starting {start!r} in:\n" + "\n".join(lines)
    return found[0]


def closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# everything works


async def test_everything_configured_passes_against_the_fakes_without_a_paid_call(
    stack: Stack,
) -> None:
    code, lines = await run(stack.settings())

    assert code == 0, "\n".join(lines)
    assert all(text.startswith("✓") for text in lines[:-1]), "\n".join(lines)
    assert lines[-1] == "Everything configured works."
    base = stack.gemini.base_url
    assert line(lines, f"✓ image API at {base} accepts the key").endswith(
        "(provider proxy, chosen by host; key sent as Authorization: Bearer); 9 models listed"
    )
    assert line(lines, "✓ image model") == (
        "✓ image model gemini-3.1-flash-image-preview (GEMINI_MODEL=flash) is offered"
    )
    assert line(lines, "✓ describe model") == (
        "✓ describe model gemini-3.5-flash-lite (GEMINI_DESCRIBE_MODEL) is offered"
    )
    # listing is free: nothing was generated
    assert [(r.method, r.path) for r in stack.gemini.requests] == [("GET", "/v1beta/models")]
    assert stack.gemini.requests[0].headers["Authorization"] == f"Bearer {API_KEY}"
    assert line(lines, "✓ database").endswith("imagebot.sqlite3 is writable (created, empty)")
    assert re.fullmatch(
        r"✓ disk space: [\d.]+ [MG]B free where the database lives \(.+\)",
        line(lines, "✓ disk space"),
    )
    assert line(lines, "✓ Slack bot token") == (
        "✓ Slack bot token: signed in as @imagebot (U0BOT) in Fake Team (T0001)"
    )
    assert (
        line(lines, "✓ Slack scopes")
        == f"✓ Slack scopes: {LEAST_SCOPES.replace(',', ', ')} granted"
    )
    assert line(lines, "✓ Slack Socket Mode")
    assert line(lines, "✓ Discord bot token") == (
        "✓ Discord bot token: signed in as imagebot (2000), application 1000"
    )
    assert line(lines, "✓ Discord intents").startswith(
        "✓ Discord intents: no privileged intent needed"
    )
    assert line(lines, "✓ Discord commands") == (
        "✓ Discord commands: /blend, /describe, /imagine, /imagine-history, /imagine-settings, "
        "/imagine-usage "
        "registered for every server"
    )
    assert line(lines, "✓ Discord invite link") == (
        "✓ Discord invite link: https://discord.com/oauth2/authorize?client_id=1000"
        "&scope=bot+applications.commands&permissions=274878024704"
    )
    # the app token went to apps.connections.open; no line shows a secret
    assert [c.token for c in stack.slack.calls_to("apps.connections.open")] == ["xapp-test-token"]
    for secret in (API_KEY, stack.slack.bot_token, stack.slack.app_token, stack.discord.token):
        assert all(secret not in text for text in lines)


async def test_unconfigured_platforms_are_skipped_and_do_not_fail(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    code, lines = await run(make_settings(tmp_path, fake_gemini))

    assert code == 0, "\n".join(lines)
    assert "– Slack: skipped (not configured: set SLACK_BOT_TOKEN)" in lines
    assert "– Discord: skipped (not configured: set DISCORD_BOT_TOKEN)" in lines


async def test_unneeded_scopes_and_intents_are_named_for_least_privilege(stack: Stack) -> None:
    stack.slack.scopes = LEAST_SCOPES + ",reactions:write,groups:read"

    code, lines = await run(stack.settings())

    assert code == 0
    assert line(lines, "✓ Slack scopes").endswith(
        "granted (also granted, not needed: reactions:write, groups:read)"
    )
    # the fake switches every privileged intent on
    assert "Message Content Intent, Server Members Intent, Presence Intent also on, not needed" in (
        line(lines, "✓ Discord intents")
    )


# settings


async def test_settings_that_do_not_load_fail_and_skip_the_rest(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("IMAGEBOT_LOG_LEVEL", "LOUD")
    lines: list[str] = []

    code = await doctor(lambda: load_settings(_env_file=None), lines.append)

    assert code == 1
    assert lines == [
        "✗ settings: IMAGEBOT_LOG_LEVEL must be DEBUG, INFO, WARNING or ERROR (got 'LOUD')",
        "– image API, database, Slack and Discord: skipped (the settings did not load)",
        "1 problem: fix the ✗ lines above, then run `imagebot doctor` again.",
    ]


async def test_a_missing_api_key_says_which_setting_to_fill(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    code, lines = await run(make_settings(tmp_path, fake_gemini, GEMINI_API_KEY=None))

    assert code == 1
    assert line(lines, "✗ image API").startswith("✗ image API: GEMINI_API_KEY is not set: set it")
    assert fake_gemini.requests == []


# the image API


async def test_a_wrong_key_gets_the_sentence_the_bot_would_say(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    code, lines = await run(make_settings(tmp_path, fake_gemini, GEMINI_API_KEY="sk-wrong"))

    assert code == 1
    assert line(lines, "✗ image API") == (
        f"✗ image API at {fake_gemini.base_url}: The image service rejected the API key; "
        "check GEMINI_API_KEY."
    )
    assert not any(text.startswith(("✓ image model", "✗ image model")) for text in lines)
    assert line(lines, "✓ database")  # the other checks still run


@pytest.mark.parametrize(
    ("dialect", "provider", "fix"),
    [
        ("google", "proxy", "set GEMINI_PROVIDER=google."),
        ("proxy", "google", "set GEMINI_PROVIDER=proxy; otherwise check GEMINI_API_KEY."),
    ],
)
async def test_a_wrong_provider_names_the_right_one(
    tmp_path: Path, dialect: str, provider: str, fix: str
) -> None:
    async with FakeGemini(api_key=API_KEY, dialect=dialect) as fake:
        code, lines = await run(make_settings(tmp_path, fake, GEMINI_PROVIDER=provider))

    assert code == 1
    assert line(lines, "✗ image API").endswith(fix)


async def test_the_right_provider_lists_in_each_shape(tmp_path: Path) -> None:
    async with FakeGemini(api_key=API_KEY, dialect="google") as google:
        code, lines = await run(make_settings(tmp_path, google, GEMINI_PROVIDER="google"))
        assert code == 0, "\n".join(lines)
        assert google.requests[0].headers["x-goog-api-key"] == API_KEY
        assert line(lines, "✓ image model") == (
            "✓ image model gemini-3.1-flash-image (GEMINI_MODEL=flash) is offered"
        )
    for shape in ("new-api", "openai"):
        async with FakeGemini(api_key=API_KEY, dialect="proxy") as proxy:
            proxy.model_list_shape = shape
            code, lines = await run(make_settings(tmp_path, proxy, GEMINI_MODEL="pro"))
            assert code == 0, "\n".join(lines)
            assert line(lines, "✓ image model") == (
                "✓ image model gemini-3-pro-image-preview (GEMINI_MODEL=pro) is offered"
            )


async def test_a_describe_model_the_server_lacks_names_its_text_models(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    code, lines = await run(
        make_settings(tmp_path, fake_gemini, GEMINI_DESCRIBE_MODEL="gemini-9-flash")
    )
    assert code == 1
    assert line(lines, "✗ describe model") == (
        "✗ describe model gemini-9-flash (GEMINI_DESCRIBE_MODEL): not offered by this server, "
        "so Describe would fail; set GEMINI_DESCRIBE_MODEL to a Gemini text model it offers: "
        "gemini-2.5-flash, gemini-3.5-flash-lite"
    )


async def test_an_unknown_model_gets_the_image_models_on_offer(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    models = tmp_path / "models.toml"
    models.write_text(
        '[[models]]\nid = "gemini-9-image"\nname = "Gemini 9 Image"\naliases = ["nine"]\n'
        'sizes = ["1K"]\naspect_ratios = ["1:1"]\nmax_reference_images = 1\n'
    )
    settings = make_settings(
        tmp_path, fake_gemini, GEMINI_MODEL="nine", IMAGEBOT_MODELS_FILE=str(models)
    )

    code, lines = await run(settings)

    assert code == 1
    assert line(lines, "✗ image model") == (
        "✗ image model gemini-9-image (GEMINI_MODEL=nine): not offered by this server; set "
        "GEMINI_MODEL to an image model it offers: gemini-2.5-flash-image "
        "(GEMINI_MODEL=2.5-flash), gemini-3-pro-image-preview (GEMINI_MODEL=pro), "
        "gemini-3.1-flash-image-preview (GEMINI_MODEL=flash)"
    )
    assert line(lines, "✓ image API")  # the key works; only the model is wrong


def test_a_model_listed_under_another_of_its_ids_gets_the_mapping_to_write(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    settings = make_settings(tmp_path, fake_gemini)  # proxy: flash is sent as the preview id
    catalog = load_catalog(None, "flash", PROVIDERS["proxy"])
    listed = [ListedModel("gemini-3.1-flash-image"), ListedModel("imagen-4.0-generate-001")]

    check = health._model_offered(settings, catalog, listed)

    assert check.line() == (
        "✗ image model gemini-3.1-flash-image-preview (GEMINI_MODEL=flash): the server lists "
        "this model as gemini-3.1-flash-image: have it sent under that id with provider_ids = "
        '{ proxy = "gemini-3.1-flash-image" } in an IMAGEBOT_MODELS_FILE entry for '
        "gemini-3.1-flash-image, or GEMINI_PROVIDER=google if it is Google"
    )
    none = health._model_offered(settings, catalog, [ListedModel("gemini-2.5-flash")])
    assert none.failed and "lists no image model at all (1 model)" in none.fix


async def test_an_unreachable_image_api_says_so_with_the_url(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    url = f"http://127.0.0.1:{closed_port()}"

    code, lines = await run(make_settings(tmp_path, fake_gemini, GEMINI_BASE_URL=url))

    assert code == 1
    assert line(lines, "✗ image API") == (
        f"✗ image API at {url}: cannot reach {url}/v1beta/models: All connection attempts "
        "failed; check GEMINI_BASE_URL and this machine's network"
    )


async def test_a_silent_image_api_times_out_with_one_line(
    tmp_path: Path, fake_gemini: FakeGemini, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(health, "TIMEOUT_SECONDS", 0.2)
    fake_gemini.faults.append(Fault("slow", seconds=30))

    code, lines = await run(make_settings(tmp_path, fake_gemini))

    assert code == 1
    assert line(lines, "✗ image API").endswith(
        f"cannot reach {fake_gemini.base_url}/v1beta/models: no answer within 0.2 s; check "
        "GEMINI_BASE_URL and this machine's network"
    )


async def test_a_base_url_that_is_not_the_api_root_is_named(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    url = fake_gemini.base_url + "/api"

    code, lines = await run(make_settings(tmp_path, fake_gemini, GEMINI_BASE_URL=url))

    assert code == 1
    assert "set GEMINI_BASE_URL to the API root" in line(lines, "✗ image API")


# the database


async def test_an_unwritable_database_folder_fails_with_the_folder_to_fix(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    (tmp_path / "blocker").write_text("a file where the folder should be")
    path = tmp_path / "blocker" / "data" / "imagebot.sqlite3"

    code, lines = await run(make_settings(tmp_path, fake_gemini, DATABASE_URL=f"sqlite:///{path}"))

    assert code == 1
    failed = line(lines, "✗ database")
    assert failed.startswith(f"✗ database {path}: cannot open it (NotADirectoryError")
    assert failed.endswith(
        f"make {path.parent} a folder this user can write to, or set DATABASE_URL to a path in one"
    )
    assert line(lines, "✓ disk space")


async def test_a_database_path_holding_another_file_is_a_failure_with_the_fix(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    settings = make_settings(tmp_path, fake_gemini)
    settings.sqlite_path.parent.mkdir(parents=True, exist_ok=True)
    settings.sqlite_path.write_bytes(b"these are notes, not a database\n" * 200)

    code, lines = await run(settings)

    assert code == 1
    assert line(lines, "✗ database") == (
        f"✗ database {settings.sqlite_path}: the database at {settings.sqlite_path} cannot be "
        "used (file is not a database): point DATABASE_URL at another file, or move this one away"
    )
    assert settings.sqlite_path.read_bytes().startswith(b"these are notes")  # left as it was


async def test_a_nearly_full_disk_is_a_failure_with_the_fix(
    tmp_path: Path, fake_gemini: FakeGemini, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(health, "MIN_FREE_BYTES", 10**18)

    code, lines = await run(make_settings(tmp_path, fake_gemini))

    assert code == 1
    failed = line(lines, "✗ disk space: only ")
    assert f"free where the database lives ({tmp_path}): free some space or set DATABASE_URL" in (
        failed
    )


# Slack


async def test_a_refused_slack_token_says_which_token_to_use(stack: Stack) -> None:
    code, lines = await run(stack.settings(SLACK_BOT_TOKEN="xoxb-wrong"))

    assert code == 1
    assert line(lines, "✗ Slack bot token") == (
        "✗ Slack bot token: SLACK_BOT_TOKEN was refused by Slack (invalid_auth): use the Bot "
        "User OAuth Token (xoxb-...) from the app's OAuth & Permissions page"
    )
    assert line(lines, "✓ Slack Socket Mode")  # the app token is checked on its own
    assert not any("Slack scopes" in text for text in lines)


async def test_missing_scopes_are_named_with_why_and_where_to_add_them(stack: Stack) -> None:
    stack.slack.scopes = "commands,chat:write,files:write,app_mentions:read,users:read"

    code, lines = await run(stack.settings())

    assert code == 1
    assert line(lines, "✗ Slack scopes") == (
        "✗ Slack scopes: missing files:read (download the images people attach (url_private) "
        "and complete Slack Connect file stubs (files.info)), im:history (direct messages to "
        "the bot): add them under OAuth & Permissions → Scopes → Bot Token Scopes (or the "
        "scopes in manifest.yml) and reinstall the app to the workspace"
    )


async def test_thread_replies_need_the_history_scopes(stack: Stack) -> None:
    code, lines = await run(stack.settings(SLACK_THREAD_REPLIES="true"))

    assert code == 1
    failed = line(lines, "✗ Slack scopes")
    assert failed.startswith("✗ Slack scopes: missing channels:history (")
    for scope in ("channels:history", "groups:history", "mpim:history"):
        assert scope in failed
    assert "SLACK_THREAD_REPLIES is on" in failed


async def test_a_bad_app_token_fails_socket_mode(stack: Stack) -> None:
    code, lines = await run(stack.settings(SLACK_APP_TOKEN="xapp-wrong"))

    assert code == 1
    assert line(lines, "✗ Slack Socket Mode") == (
        "✗ Slack Socket Mode: SLACK_APP_TOKEN was refused by Slack (invalid_auth): use an "
        "app-level token (xapp-...) with the connections:write scope"
    )
    assert line(lines, "✓ Slack bot token")


async def test_http_mode_checks_the_signing_secret_is_set(stack: Stack) -> None:
    code, lines = await run(stack.settings(SLACK_APP_TOKEN=None, SLACK_SIGNING_SECRET="s3cret"))
    assert code == 0, "\n".join(lines)
    assert line(lines, "✓ Slack HTTP mode: SLACK_SIGNING_SECRET is set")
    assert stack.slack.calls_to("apps.connections.open") == []

    code, lines = await run(stack.settings(SLACK_APP_TOKEN=None))
    assert code == 1
    assert "set SLACK_APP_TOKEN" in line(lines, "✗ Slack connection")


async def test_unreachable_platforms_fail_with_the_url_not_a_traceback(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    port = closed_port()
    settings = make_settings(
        tmp_path,
        fake_gemini,
        SLACK_BOT_TOKEN="xoxb-x",
        SLACK_SIGNING_SECRET="s",
        SLACK_API_URL=f"http://127.0.0.1:{port}/api/",
        DISCORD_BOT_TOKEN="x",
        DISCORD_API_URL=f"http://127.0.0.1:{port}/api/v10",
    )

    code, lines = await run(settings)

    assert code == 1
    assert line(lines, "✗ Slack bot token").startswith(
        f"✗ Slack bot token: cannot reach http://127.0.0.1:{port}/api/auth.test: "
    )
    assert line(lines, "✗ Discord bot token").startswith(
        f"✗ Discord bot token: cannot reach http://127.0.0.1:{port}/api/v10/users/@me: "
    )


# Discord


async def test_a_refused_discord_token_says_where_to_get_one(stack: Stack) -> None:
    code, lines = await run(stack.settings(DISCORD_BOT_TOKEN="wrong"))

    assert code == 1
    assert line(lines, "✗ Discord bot token") == (
        "✗ Discord bot token: DISCORD_BOT_TOKEN was refused by Discord: copy the token again "
        "from the developer portal (Bot → Reset Token)"
    )
    assert not any(text.startswith(("✓ Discord", "✗ Discord intents")) for text in lines)


async def test_thread_messages_without_the_message_content_intent_fail(stack: Stack) -> None:
    stack.discord.allowed_privileged_intents = 0

    code, lines = await run(stack.settings(DISCORD_THREAD_MESSAGES="true"))

    assert code == 1
    assert line(lines, "✗ Discord intents") == (
        "✗ Discord intents: Message Content Intent is off but DISCORD_THREAD_MESSAGES=true "
        "needs it: switch it on in the developer portal under Bot → Privileged Gateway "
        "Intents, or set DISCORD_THREAD_MESSAGES=false"
    )
    # threads need one more permission in the invite
    assert line(lines, "✓ Discord invite link").endswith("&permissions=309237763072")


async def test_the_discord_public_key_is_checked_against_the_application(stack: Stack) -> None:
    other_key = FakeDiscord().public_key
    _, wrong = await run(stack.settings(DISCORD_PUBLIC_KEY=other_key))
    _, no_url = await run(stack.settings(DISCORD_PUBLIC_KEY=stack.discord.public_key))
    stack.discord.interactions_url = "https://imagebot.example.com/discord/interactions"
    code, right = await run(stack.settings(DISCORD_PUBLIC_KEY=stack.discord.public_key))

    assert line(wrong, "✗ Discord public key") == (
        "✗ Discord public key: DISCORD_PUBLIC_KEY is not this application's: copy the Public "
        "Key from the developer portal (General Information) again: every interaction would "
        "be refused with 401"
    )
    assert line(no_url, "✗ Discord public key matches").endswith(
        "set it to https://YOUR-HOST/discord/interactions in the developer portal (General "
        "Information); until then interactions come over the gateway"
    )
    assert code == 0
    assert line(right, "✓ Discord public key") == (
        "✓ Discord public key matches; interactions are sent to "
        "https://imagebot.example.com/discord/interactions"
    )


async def test_unregistered_commands_point_to_discord_sync(stack: Stack) -> None:
    stack.discord.commands.clear()

    code, lines = await run(stack.settings())

    assert code == 1
    assert line(lines, "✗ Discord commands") == (
        "✗ Discord commands: /blend, /describe, /imagine, /imagine-history, /imagine-settings, "
        "/imagine-usage "
        "not registered: run `imagebot discord-sync` (every server, may take up to an hour to "
        "show) or `imagebot discord-sync --guild SERVER_ID` (one server, at once)"
    )


async def test_commands_registered_in_one_server_pass_and_say_so(stack: Stack) -> None:
    stack.discord.commands.clear()
    await sync_commands(stack.settings(), stack.discord.guild_id)

    code, lines = await run(stack.settings())

    assert code == 0, "\n".join(lines)
    assert line(lines, "✓ Discord commands") == (
        "✓ Discord commands: /blend, /describe, /imagine, /imagine-history, /imagine-settings, "
        "/imagine-usage "
        "registered in Test Guild (3000) only (`imagebot discord-sync` offers them in every server)"
    )


def test_the_readme_invite_asks_for_the_permissions_in_code() -> None:
    readme = (REPO / "README.md").read_text("utf-8")
    with_threads = permissions.needed(thread_messages=True)
    without = permissions.needed(thread_messages=False)
    assert f"permissions={with_threads}" in readme and f"permissions={without}" in readme
    assert f"`{with_threads}` is the sum of exactly these permissions" in readme
    for permission in permissions.PERMISSIONS:
        assert f"| {permission.name} | {permission.value} |" in readme


# the command itself


async def _cli(*args: str, cwd: Path, env: dict[str, str]) -> tuple[int, str, str]:
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bots.cli",
        *args,
        cwd=cwd,
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


async def test_imagebot_doctor_runs_from_the_command_line(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GEMINI_", "IMAGEBOT_"))}
    env.update(
        PYTHONPATH=str(REPO),
        GEMINI_API_KEY=API_KEY,
        GEMINI_BASE_URL=fake_gemini.base_url,
        DATABASE_URL=f"sqlite:///{tmp_path / 'db' / 'imagebot.sqlite3'}",
    )
    (tmp_path / ".env").write_text("GEMINI_MODEL=pro\n")

    code, out, err = await _cli("doctor", cwd=tmp_path, env=env)

    assert code == 0, out + err
    assert err == ""
    assert out.splitlines()[0] == f"✓ settings: read from the environment and {tmp_path}/.env"
    assert "✓ image model gemini-3-pro-image-preview (GEMINI_MODEL=pro) is offered" in out

    code, out, _ = await _cli("doctor", cwd=tmp_path, env={**env, "GEMINI_API_KEY": "sk-no"})
    assert code == 1
    assert out.splitlines()[-1].startswith("1 problem: fix the ✗ lines above")


async def test_chat_and_doctor_explain_themselves_in_help(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO)}

    code, out, _ = await _cli("chat", "--help", cwd=tmp_path, env=env)
    assert code == 0
    for needed in ("/attach PATH", "/new", "/help", "/exit", "Ctrl-D"):
        assert needed in out

    code, out, _ = await _cli("doctor", "--help", cwd=tmp_path, env=env)
    assert code == 0
    assert "✗ what: the fix" in out


def test_a_line_never_shows_a_secret_even_when_a_server_echoes_it() -> None:
    check = health.Check.fail("Slack bot token", "Slack said xoxb-123456789 is bad; ok")

    assert check.line(["xoxb-123456789", "ok"]) == (
        "✗ Slack bot token: Slack said [redacted] is bad; ok"
    )


async def test_a_postgresql_database_is_checked_with_a_write_and_a_wrong_one_named(
    tmp_path: Path, fake_gemini: FakeGemini, postgres_url: str
) -> None:
    code, lines = await run(make_settings(tmp_path, fake_gemini, DATABASE_URL=postgres_url))
    assert code == 0, "\n".join(lines)
    server = postgres_url.split("@", 1)[1]
    assert line(lines, "✓ database PostgreSQL at").startswith(
        f"✓ database PostgreSQL at {server} takes writes (schema version "
    )
    assert not any("disk space" in text for text in lines)  # the server's own business

    wrong = postgres_url.rsplit("/", 1)[0] + "/no_such_database"
    code, lines = await run(make_settings(tmp_path, fake_gemini, DATABASE_URL=wrong))
    assert code == 1
    failed = line(lines, "✗ database PostgreSQL at")
    assert "no_such_database" in failed and failed.endswith(
        "check DATABASE_URL (user, password, host, port and database name)"
    )
    assert "postgres@" not in failed  # never the user (or a password) in the line
