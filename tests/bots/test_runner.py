from __future__ import annotations

import asyncio
import json
import signal
import socket
import sys
from pathlib import Path

import httpx

from bots.runner import run_platforms
from tests.bots.test_cli import REPO, _env
from tests.bots.test_discord_harness import bot_settings, discord_server
from tests.fakes.gemini import FakeGemini
from tests.fakes.slack import FakeSlack


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


async def test_the_procfile_process_serves_health_and_metrics_and_stops_cleanly_on_sigterm(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    port = _free_port()
    async with FakeSlack() as slack:
        env = _env(
            tmp_path,
            fake_gemini,
            SLACK_BOT_TOKEN=slack.bot_token,
            SLACK_SIGNING_SECRET="signing-secret-for-tests",
            SLACK_API_URL=slack.api_url,
            PORT=str(port),
        )
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bots.slack",
            cwd=str(REPO),
            env=env,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
                deadline = asyncio.get_running_loop().time() + 20
                while True:
                    try:
                        health = await client.get("/healthz")
                        break
                    except httpx.ConnectError:
                        assert asyncio.get_running_loop().time() < deadline, "never listened"
                        await asyncio.sleep(0.05)
                scraped = await client.get("/metrics")
            assert health.json() == {"ok": True}
            assert "imagebot_jobs_running" in scraped.text
            process.send_signal(signal.SIGTERM)
            code = await asyncio.wait_for(process.wait(), timeout=20)
        finally:
            if process.returncode is None:
                process.kill()
                await process.wait()
        assert process.stderr is not None
        log = (await process.stderr.read()).decode()
        assert code == 0, log
        assert "Traceback" not in log


async def test_a_platform_that_cannot_be_reached_at_start_up_is_one_line(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    with socket.socket() as spare:  # a port nothing listens on
        spare.bind(("127.0.0.1", 0))
        closed = spare.getsockname()[1]
    env = {
        **_env(tmp_path, fake_gemini),
        "SLACK_BOT_TOKEN": "xoxb-test",
        "SLACK_SIGNING_SECRET": "secret",
        "SLACK_API_URL": f"http://127.0.0.1:{closed}/api/",
        "PORT": "0",
    }
    process = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bots.slack",
        cwd=tmp_path,
        env=env,
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    _, err = await asyncio.wait_for(process.communicate(), timeout=60)

    lines = err.decode().strip().splitlines()
    assert process.returncode == 1
    assert "Traceback" not in err.decode()
    assert lines[-1].startswith("imagebot: could not reach the platform (")
    assert f"127.0.0.1:{closed}" in lines[-1]


async def test_slack_and_discord_over_http_in_one_process_share_one_port(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    port = _free_port()
    secret = "signing-secret-for-tests"
    async with FakeSlack() as slack, discord_server() as discord:
        settings = bot_settings(
            tmp_path,
            fake_gemini,
            discord,
            SLACK_BOT_TOKEN=slack.bot_token,
            SLACK_SIGNING_SECRET=secret,
            SLACK_API_URL=slack.api_url,
            DISCORD_PUBLIC_KEY=discord.public_key,
            PORT=str(port),
        )
        running = asyncio.create_task(run_platforms(settings, ["slack", "discord"]))
        root = f"http://127.0.0.1:{port}"
        try:
            async with httpx.AsyncClient(base_url=root) as client:
                deadline = asyncio.get_running_loop().time() + 20
                while (health := await _status(client, "/healthz")) != 200:
                    assert not running.done(), running
                    assert asyncio.get_running_loop().time() < deadline, "never listened"
                    await asyncio.sleep(0.05)
                pong = await discord.post_interaction(
                    discord.interaction_ping(), url=f"{root}/discord/interactions"
                )
                challenge = json.dumps(
                    {"type": "url_verification", "challenge": "c1", "token": "t"}
                ).encode()
                slack_status, slack_body, _ = await slack.post_to_app(
                    f"{root}/slack/events", challenge, "application/json", signing_secret=secret
                )
        finally:
            running.cancel()
            await asyncio.gather(running, return_exceptions=True)

    assert health == 200
    assert (pong.status, pong.body) == (200, {"type": 1})
    assert slack_status == 200 and b"c1" in slack_body


async def _status(client: httpx.AsyncClient, path: str) -> int:
    try:
        return (await client.get(path)).status_code
    except httpx.ConnectError:
        return 0
