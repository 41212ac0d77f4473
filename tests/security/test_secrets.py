"""Secrets (API key, bot and app tokens, signing secret) never reach a log line, a chat
message, the image API's request body, or the text of any error.

Each flow runs with logging set up as production does (`configure_logging`, DEBUG) and
includes failures: a refused key, server faults and retries, platform errors and exceptions
during delivery. Log records are checked twice: as loggers made them (caplog, ahead of the
scrubber) and as the configured handler wrote them.
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
import traceback
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiohttp import web

from bots.discord import create_app as create_discord_app
from bots.slack import create_app as create_slack_app
from core import logs
from core.config import ConfigError, Settings, load_settings
from core.downloads import download
from core.errors import UserFacingError
from core.gemini import Content, GeminiClient, GeminiError, ImageRequest, Part
from core.runtime import open_service
from tests.bots.test_discord_harness import (
    USER,
    Bot,
    bot_settings,
    discord_server,
    png,
    running_bot,
)
from tests.bots.test_slack_app import Running, png_bytes, running
from tests.conftest import make_settings
from tests.fakes.gemini import FakeGemini, Fault
from tests.fakes.slack import FakeSlack
from tests.security.conftest import (
    DISCORD_TOKEN,
    GEMINI_KEY,
    SECRETS,
    SLACK_APP_TOKEN,
    SLACK_BOT_TOKEN,
    SLACK_SIGNING_SECRET,
    CapturedLogs,
    assert_no_secret,
    leaked,
)

FLASH = "gemini-3.1-flash-image-preview"
Configure = Callable[[Settings], CapturedLogs]


def _env(fmt: str, **more: Any) -> dict[str, Any]:
    """Every secret set, logging at DEBUG in `fmt`."""
    return {
        **SECRETS,
        "IMAGEBOT_LOG_LEVEL": "DEBUG",
        "IMAGEBOT_LOG_FORMAT": fmt,
        "GEMINI_MAX_ATTEMPTS": 2,
        **more,
    }


def _assert_logs_clean(captured: CapturedLogs, fmt: str) -> None:
    assert_no_secret("a log record (before scrubbing)", [captured.raw])
    assert captured.unhandled() == []
    assert_no_secret("the log output", [captured.text])
    lines = [line for line in captured.text.splitlines() if line]
    assert lines, "nothing was logged"
    if fmt == "json":
        for line in lines:
            json.loads(line)  # one JSON object per line, tracebacks included


def _assert_gemini_clean(gemini: FakeGemini) -> None:
    """The image API gets its own key, in the header only, and no other secret at all."""
    assert gemini.requests
    assert_no_secret("an image API request body", [r.body.decode() for r in gemini.requests])
    for sent in gemini.requests:
        assert sent.headers.get("Authorization") == f"Bearer {GEMINI_KEY}"
        others = {k: v for k, v in sent.headers.items() if k != "Authorization"}
        assert_no_secret("an image API request header", [others])


# Slack


@asynccontextmanager
async def _slack(
    tmp_path: Path, configure: Configure, fmt: str, *, socket_mode: bool = False
) -> AsyncIterator[tuple[Running, CapturedLogs]]:
    async with (
        FakeGemini(api_key=GEMINI_KEY) as gemini,
        FakeSlack(bot_token=SLACK_BOT_TOKEN, app_token=SLACK_APP_TOKEN) as fake,
    ):
        env = _env(fmt)
        if not socket_mode:
            env.pop("SLACK_APP_TOKEN")
        captured = configure(make_settings(tmp_path, gemini, **env))
        async with running(tmp_path, gemini, fake=fake, socket_mode=socket_mode, **env) as slack:
            yield slack, captured


async def _post(slack: Running, body: tuple[bytes, str], **kwargs: Any) -> int:
    status, _, _ = await slack.fake.post_to_app(
        slack.url, body[0], body[1], signing_secret=SLACK_SIGNING_SECRET, **kwargs
    )
    return status


async def _command(slack: Running, text: str) -> int:
    return await _post(slack, slack.fake.slash_command_body(text, user_id="U1", channel_id="C1"))


async def _ended(slack: Running, count: int) -> dict[str, Any]:
    """The `count`-th status message, once it shows its final state."""
    return await slack.final(await slack.status_posted(count))


def _assert_slack_clean(fake: FakeSlack) -> None:
    """Slack gets its tokens in the header only: the app token for connections, else the bot's."""
    for call in fake.calls:
        wanted = SLACK_APP_TOKEN if call.method == "apps.connections.open" else SLACK_BOT_TOKEN
        assert call.token == wanted, call.method
        assert call.headers.get("Authorization") == f"Bearer {wanted}"
    assert_no_secret("a Slack Web API call", [c.params for c in fake.calls])
    assert_no_secret("a response_url post", fake.response_url_posts)
    assert_no_secret("an ephemeral message", fake.ephemerals)
    assert_no_secret("a Slack message", list(fake.messages.values()))
    assert_no_secret("an upload", [(u.title, u.initial_comment, u.alt_txt) for u in fake.uploads])


@pytest.mark.parametrize("fmt", ["text", "json"])
async def test_slack_http_flows_with_failures_leak_no_secret(
    tmp_path: Path, production_logging: Configure, fmt: str
) -> None:
    async with _slack(tmp_path, production_logging, fmt) as (slack, captured):
        fake, gemini = slack.fake, slack.gemini
        # an image, after one server error and a retry
        gemini.faults.append(Fault("server_error"))
        assert await _command(slack, "a lighthouse at dusk") == 200
        assert ":white_check_mark:" in (await _ended(slack, 1))["text"]

        # the key refused by the image API
        gemini.api_key = "some-other-key"
        await _command(slack, "a red kite")
        refused = await _ended(slack, 2)
        gemini.api_key = GEMINI_KEY
        assert ":warning:" in refused["text"]

        # a reseller's 401, then an upload that fails once while delivering
        gemini.faults.append(Fault("reseller_401"))
        await _command(slack, "a green door")
        await _ended(slack, 3)
        fake.fail_next("files.getUploadURLExternal", status=500)
        await _command(slack, "a blue moon")
        await _ended(slack, 4)

        # a photo downloaded with the bot token, in the thread of the first image
        first = await slack.status_posted(1)
        # someone else's Delete click is answered through the button's response URL
        delete = slack.button(first, "imagebot.delete")
        click = fake.block_action_body(
            "imagebot.delete",
            user_id="U2",
            channel_id=first[0],
            message_ts=first[1],
            value=delete["value"],
        )
        assert await _post(slack, click) == 200
        await fake.wait_until(lambda: fake.response_url_posts, what="the refusal to delete")
        photo = fake.add_file(png_bytes(), name="ref.png", mimetype="image/png")
        mention = fake.app_mention_event(
            "add this", channel="C1", thread_ts=first[1], files=[photo]
        )
        assert await _post(slack, fake.event_body(mention)) == 200
        await _ended(slack, 5)

        # the bot is not in the channel; a forged request; help and usage
        fake.fail_next("chat.postMessage", error="not_in_channel")
        await _command(slack, "a locked room")
        await fake.wait_until(lambda: len(fake.response_url_posts) >= 2, what="the refusal")
        assert await _command(slack, "help") == 200
        assert await _command(slack, "usage") == 200
        forged = fake.slash_command_body("a fox", user_id="U1", channel_id="C1")
        assert await _post(slack, forged, bad_signature=True) == 401
        await fake.wait_until(lambda: len(fake.response_url_posts) >= 4, what="help and usage")

    assert "attempt 1 of 2 failed" in captured.raw
    assert "delivery attempt 1 failed" in captured.raw
    _assert_logs_clean(captured, fmt)
    # a response URL lets anyone post as the bot for 30 minutes; Bolt logs them at DEBUG
    hooks = re.findall(r"/(commands|actions)/T\w+/\d+/(\w+)", captured.raw)
    assert {kind for kind, _ in hooks} == {"commands", "actions"}
    assert not any(secret in captured.text for _, secret in hooks)
    _assert_slack_clean(fake)
    _assert_gemini_clean(gemini)


async def test_slack_socket_mode_flows_leak_no_secret(
    tmp_path: Path, production_logging: Configure
) -> None:
    async with _slack(tmp_path, production_logging, "json", socket_mode=True) as (
        slack,
        captured,
    ):
        fake = slack.fake
        payload = fake.slash_command_payload("a paper boat", user_id="U1", channel_id="C1")
        await fake.wait_for_ack(await fake.send_envelope("slash_commands", payload))
        await _ended(slack, 1)
        slack.gemini.api_key = "some-other-key"
        mention = fake.app_mention_event("a stone bridge", user="U1", channel="C1")
        await fake.send_envelope("events_api", fake.event_payload(mention))
        await _ended(slack, 2)
        await fake.disconnect_socket()  # a reconnect opens a new socket with the app token
        await fake.wait_for_socket_connections(2)

    _assert_logs_clean(captured, "json")
    _assert_slack_clean(fake)
    _assert_gemini_clean(slack.gemini)


# Discord


def _assert_discord_clean(bot: Bot) -> None:
    fake = bot.fake
    assert_no_secret("a Discord REST body", [c.json for c in fake.calls if c.json is not None])
    assert_no_secret("a Discord upload", [f.filename for c in fake.calls for f in c.files])
    shown = [(m.content, m.embeds) for ms in fake.messages.values() for m in ms]
    assert_no_secret("a Discord message", shown)


@pytest.mark.parametrize("fmt", ["text", "json"])
async def test_discord_flows_with_failures_leak_no_secret(
    tmp_path: Path, production_logging: Configure, fmt: str
) -> None:
    async with (
        FakeGemini(api_key=GEMINI_KEY) as gemini,
        discord_server(token=DISCORD_TOKEN) as fake,
    ):
        env = _env(fmt)
        captured = production_logging(bot_settings(tmp_path, gemini, fake, **env))
        async with running_bot(tmp_path, gemini, fake, **env) as bot:
            gemini.faults.append(Fault("unavailable"))
            first = await bot.result_of(await bot.slash({"prompt": "a windmill"}))
            assert first.attachments

            gemini.api_key = "some-other-key"
            refused = await bot.result_of(await bot.slash({"prompt": "a harbour"}))
            gemini.api_key = GEMINI_KEY
            assert refused.content.startswith("⚠️")

            # the interaction's message refuses its edits: queued, generating, the result
            fake.fail_next("PATCH", r"/webhooks/\d+/[^/]+/messages/.+", status=400, times=3)
            await bot.result_of(await bot.slash({"prompt": "a lantern"}))

            photo = fake.add_attachment(png(), "ref.png")
            said = await bot.say("draw this", attachments=[photo])
            await bot.reply_to(said)

    assert "attempt 1 of 2 failed" in captured.raw
    assert "delivery attempt 1 failed" in captured.raw
    _assert_logs_clean(captured, fmt)
    # interaction tokens let anyone edit the bot's answers for 15 minutes: discord.py logs
    # them in webhook URLs at DEBUG, and the output must not show them
    tokens = [e.data["token"] for e in fake.events if e.type == "INTERACTION_CREATE"]
    assert len(tokens) == 3 and any(token in captured.raw for token in tokens)
    assert not any(token in captured.text for token in tokens)
    _assert_discord_clean(bot)
    _assert_gemini_clean(gemini)


# errors and objects that could be printed


def _shown(error: BaseException) -> str:
    """Everything an error can show: str, repr, its fields and the full traceback."""
    parts = [str(error), repr(error), *traceback.format_exception(error)]
    for name in ("message", "detail"):
        parts.append(str(getattr(error, name, "")))
    return "\n".join(parts)


def test_settings_show_no_secret_in_repr_str_or_dumps() -> None:
    settings = Settings(_env_file=None, **SECRETS)  # type: ignore[call-arg]
    shown = [repr(settings), str(settings), settings.model_dump_json(), repr(settings.model_dump())]
    assert_no_secret("Settings", shown)
    assert settings.slack_bot_token is not None
    assert settings.slack_bot_token.get_secret_value() == SLACK_BOT_TOKEN


def test_a_config_error_names_the_variable_without_the_secrets_beside_it(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in SECRETS.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("IMAGEBOT_MAX_CONCURRENCY", "lots")
    with pytest.raises(ConfigError, match="IMAGEBOT_MAX_CONCURRENCY") as bad:
        load_settings(_env_file=None)
    assert not leaked(_shown(bad.value))


async def test_an_image_api_error_shows_no_key_even_when_the_server_echoes_it() -> None:
    async def echo(request: web.Request) -> web.Response:
        said = request.headers.get("Authorization", "")
        error = {"code": 403, "message": f"Key {said} is suspended", "status": "PERMISSION_DENIED"}
        return web.json_response({"error": error}, status=403)

    app = web.Application()
    app.router.add_post("/{tail:.*}", echo)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    port = runner.addresses[0][1]
    request = ImageRequest(model_id=FLASH, contents=(Content("user", (Part(text="a fox"),)),))
    try:
        async with GeminiClient(f"http://127.0.0.1:{port}", GEMINI_KEY, max_attempts=1) as client:
            with pytest.raises(GeminiError) as refused:
                await client.generate(request)
            assert not leaked(repr(client))
    finally:
        await runner.cleanup()
    assert refused.value.reason == "bad_key"
    assert not leaked(_shown(refused.value))


async def test_image_api_errors_for_a_bad_key_and_a_dead_server_show_no_key(
    fake_gemini: FakeGemini,
) -> None:
    request = ImageRequest(model_id=FLASH, contents=(Content("user", (Part(text="a fox"),)),))
    errors: list[BaseException] = []
    async with GeminiClient(fake_gemini.base_url, GEMINI_KEY, max_attempts=1) as client:
        with pytest.raises(GeminiError) as bad_key:
            await client.generate(request)
        errors.append(bad_key.value)
    dead = f"http://127.0.0.1:{_closed_port()}"
    async with GeminiClient(dead, GEMINI_KEY, max_attempts=1) as client:
        with pytest.raises(GeminiError) as unreachable:
            await client.generate(request)
        errors.append(unreachable.value)
    assert [e.reason for e in errors] == ["bad_key", "connection"]  # type: ignore[attr-defined]
    for error in errors:
        assert not leaked(_shown(error))


def _closed_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_a_refused_download_shows_neither_the_token_nor_a_secret_in_the_url() -> None:
    async with httpx.AsyncClient(timeout=2) as http:
        with pytest.raises(UserFacingError) as refused:
            await download(
                http,
                f"https://evil.example/{SLACK_BOT_TOKEN}.png",
                name="photo.png",
                allowed_hosts=["files.slack.com"],
                max_bytes=1000,
                headers={"Authorization": f"Bearer {SLACK_BOT_TOKEN}"},
            )
    assert not leaked(_shown(refused.value))


def _slack_settings(
    tmp_path: Path, gemini: FakeGemini, fake: FakeSlack, *, socket_mode: bool
) -> Settings:
    env = {**SECRETS, "GEMINI_API_KEY": "test-key", "SLACK_API_URL": fake.api_url}
    if not socket_mode:
        env.pop("SLACK_APP_TOKEN")
    return make_settings(tmp_path, gemini, **env).model_copy(update={"port": 0})


async def test_a_refused_slack_bot_token_ends_in_a_config_error_without_the_token(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    async with FakeSlack(bot_token="xoxb-the-real-one") as fake:
        settings = _slack_settings(tmp_path, fake_gemini, fake, socket_mode=False)
        async with open_service(settings) as service:
            app = create_slack_app(settings, service, host="127.0.0.1")
            with pytest.raises(ConfigError, match="SLACK_BOT_TOKEN was refused") as refused:
                await app.serve()
    assert not leaked(_shown(refused.value))


async def test_a_refused_slack_app_token_ends_in_a_config_error_without_the_token(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    async with FakeSlack(bot_token=SLACK_BOT_TOKEN, app_token="xapp-the-real-one") as fake:
        settings = _slack_settings(tmp_path, fake_gemini, fake, socket_mode=True)
        async with open_service(settings) as service:
            app = create_slack_app(settings, service, host="127.0.0.1")
            with pytest.raises(ConfigError, match="SLACK_APP_TOKEN was refused") as refused:
                async with asyncio.timeout(2):
                    await app.serve()
    assert not leaked(_shown(refused.value))


async def test_a_refused_discord_token_ends_in_a_config_error_without_the_token(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    async with discord_server(token="the-real-one") as fake:
        settings = bot_settings(tmp_path, fake_gemini, fake, DISCORD_BOT_TOKEN=DISCORD_TOKEN)
        async with open_service(settings) as service:
            app = create_discord_app(settings, service)
            with pytest.raises(ConfigError, match="DISCORD_BOT_TOKEN was refused") as refused:
                await app.serve()
    assert not leaked(_shown(refused.value))


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_a_secret_inside_a_logged_traceback_is_scrubbed(
    production_logging: Configure, fmt: str
) -> None:
    settings = Settings(  # type: ignore[call-arg]
        _env_file=None, **SECRETS, IMAGEBOT_LOG_LEVEL="DEBUG", IMAGEBOT_LOG_FORMAT=fmt
    )
    captured = production_logging(settings)
    try:
        raise RuntimeError(f"connect failed for token {DISCORD_TOKEN}")
    except RuntimeError:
        logging.getLogger("imagebot.test").exception("lost %s", SLACK_APP_TOKEN)
    assert_no_secret("the log output", [captured.text])
    assert captured.text.count(logs.REDACTED) >= 2
    # the capture ahead of the scrubber did see them: the flows' clean raw logs mean something
    assert set(leaked(captured.raw)) == {"DISCORD_BOT_TOKEN", "SLACK_APP_TOKEN"}


async def test_the_slack_adapters_objects_show_no_token_in_their_repr(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    env = {**SECRETS, "GEMINI_API_KEY": "test-key"}
    env.pop("SLACK_APP_TOKEN")
    settings = make_settings(tmp_path, fake_gemini, **env)
    async with open_service(settings) as service:
        app = create_slack_app(settings, service, host="127.0.0.1")
        shown = [repr(app), repr(app.ctx), repr(app.ctx.delivery), repr(service.gemini)]
        await app.ctx.http.aclose()
    assert_no_secret("an object's repr", shown)


async def test_the_discord_token_goes_to_discord_only_and_only_in_its_auth_header(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    async with discord_server(token=DISCORD_TOKEN) as fake:
        async with running_bot(tmp_path, fake_gemini, fake) as bot:
            await bot.result_of(await bot.slash({"prompt": "a kite"}, user=USER))
    sent = [c.headers.get("Authorization") for c in fake.calls if c.headers.get("Authorization")]
    assert set(sent) == {f"Bot {DISCORD_TOKEN}"}
    assert_no_secret("a Discord REST body", [c.json for c in fake.calls if c.json is not None])
    assert all(DISCORD_TOKEN not in json.dumps(r.headers) for r in fake_gemini.requests)
