"""Slack in many workspaces: installs through OAuth v2, each workspace's own token for
everything done for it, uninstalls, token rotation.

The real flow runs: GET /slack/install redirects to the fake's consent page with a state
and sets the state cookie; the consent page sends the browser back to
/slack/oauth_redirect with a code, which Bolt exchanges through `oauth.v2.access`. Every
Web API call the fake records carries the token it came with, so each can be traced to
its workspace.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from http.cookies import SimpleCookie
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from bots.slack import SlackApp, create_app
from bots.slack.messages import NOT_INSTALLED
from bots.slack.scopes import needed
from core.config import ConfigError, Settings
from core.runtime import open_service
from core.service import Service
from core.store import Installation
from tests.conftest import make_settings
from tests.fakes.gemini import FakeGemini
from tests.fakes.slack import CLIENT_SECRET, FakeSlack, SlackCall

# the security tests' fixture: logging set up as in production, captured
from tests.security.conftest import CapturedLogs, production_logging

__all__ = ["production_logging"]

SECRET = "signing-secret-for-oauth-tests"
DAY = 86400.0
COOKIE = "slack-app-oauth-state"
# calls that act for a workspace in a channel: each must carry that workspace's token
CHANNEL_METHODS = ("chat.postMessage", "chat.update", "chat.postEphemeral", "chat.delete")


class Clock:
    """The store's time, moved by the test (OAuth states expire by it)."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


@dataclass
class Many:
    """One app serving many workspaces, with the fakes it talks to."""

    fake: FakeSlack
    gemini: FakeGemini
    service: Service
    app: SlackApp
    settings: Settings
    clock: Clock
    http: aiohttp.ClientSession

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.app.port}"

    async def post(self, body: tuple[bytes, str]) -> tuple[int, bytes]:
        status, answer, _ = await self.fake.post_to_app(
            f"{self.base}/slack/events", body[0], body[1], signing_secret=SECRET
        )
        return status, answer

    async def command(self, team: str, text: str, *, channel: str, user: str = "U1") -> int:
        body = self.fake.slash_command_body(text, user_id=user, channel_id=channel, team_id=team)
        status, _ = await self.post(body)
        return status

    async def mention(self, team: str, text: str, *, channel: str, user: str = "U1") -> int:
        event = self.fake.app_mention_event(text, user=user, channel=channel, team_id=team)
        status, _ = await self.post(self.fake.event_body(event, team_id=team))
        return status

    async def start_install(self, team: str) -> tuple[str, str]:
        """GET /slack/install: the consent page's URL, and the state set in the cookie."""
        async with self.http.get(
            f"{self.base}/slack/install", params={"team": team}, allow_redirects=False
        ) as answer:
            assert answer.status == 302, await answer.text()
            cookie = SimpleCookie(answer.headers["Set-Cookie"])
            return answer.headers["Location"], cookie[COOKIE].value

    async def consent(self, consent_url: str) -> str:
        """The installer clicks Allow: the redirect back to the app, with code and state."""
        async with self.http.get(consent_url, allow_redirects=False) as answer:
            assert answer.status == 302, await answer.text()
            return answer.headers["Location"]

    async def come_back(self, redirect: str, state: str | None) -> tuple[int, str]:
        """The browser arrives at /slack/oauth_redirect (with its state cookie, if any)."""
        headers = {"Cookie": f"{COOKIE}={state}"} if state else {}
        async with self.http.get(redirect, headers=headers, allow_redirects=False) as answer:
            return answer.status, await answer.text()

    async def install(self, team: str) -> str:
        """The whole flow, as a browser goes through it; returns the success page."""
        consent_url, state = await self.start_install(team)
        status, page = await self.come_back(await self.consent(consent_url), state)
        assert status == 200, page
        return page

    async def installation(self, team: str) -> Installation | None:
        return await self.service.store.installation_for("slack", team)

    async def status_posted(self, team: str, channel: str) -> tuple[str, str]:
        """(channel, ts) of the status card posted for a request in `channel`."""
        calls = await self.fake.wait_for_call(
            "chat.postMessage",
            predicate=lambda c: c.params.get("channel") == channel and _is_status(c),
        )
        return channel, str(calls[0].response["ts"])

    async def delivered(self, team: str, status: tuple[str, str]) -> None:
        """Waits until the job behind `status` is recorded delivered."""
        key = f"{status[0]}:{status[1]}"
        async with asyncio.timeout(15):
            while True:
                job = await self.service.job_for_message("slack", team, key)
                if job is not None and job.delivered_at is not None:
                    return
                await asyncio.sleep(0.01)


def _is_status(call: SlackCall) -> bool:
    return bool(call.response.get("ok")) and "asked" in str(call.params.get("blocks"))


@asynccontextmanager
async def many(tmp_path: Path, gemini: FakeGemini, **env: Any) -> AsyncIterator[Many]:
    """A started service and app with SLACK_CLIENT_ID set, over a fresh fake Slack."""
    clock = Clock()
    async with FakeSlack() as fake, aiohttp.ClientSession() as http:
        values: dict[str, Any] = {
            "SLACK_CLIENT_ID": fake.client_id,
            "SLACK_CLIENT_SECRET": fake.client_secret,
            "SLACK_SIGNING_SECRET": SECRET,
            "SLACK_API_URL": fake.api_url,
            "SLACK_FILE_HOSTS": "127.0.0.1",
            "IMAGEBOT_PROGRESS_INTERVAL_SECONDS": 0.2,
            **env,
        }
        settings = make_settings(tmp_path, gemini, **values).model_copy(update={"port": 0})
        async with open_service(settings, clock=clock) as service:
            app = create_app(settings, service, host="127.0.0.1")
            await service.start()
            serving = asyncio.create_task(app.serve())
            try:
                async with asyncio.timeout(10):
                    await app.wait_ready()
                # the Redirect URL the app's OAuth & Permissions page names
                fake.redirect_url = f"http://127.0.0.1:{app.port}/slack/oauth_redirect"
                yield Many(fake, gemini, service, app, settings, clock, http)
            finally:
                serving.cancel()
                await asyncio.gather(serving, return_exceptions=True)


def _team_calls(fake: FakeSlack, team: str, channel: str) -> list[SlackCall]:
    """The Web API calls made about `channel` (which belongs to `team`)."""
    return [
        c
        for c in fake.calls
        if (c.params.get("channel") or c.params.get("channel_id")) == channel
        and c.method in (*CHANNEL_METHODS, "files.completeUploadExternal")
    ]


# installing, and two workspaces at once


async def test_two_workspaces_installed_through_oauth_make_images_at_once_each_with_its_token(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    fake_gemini.latency = 0.3  # both generations under way together
    async with many(tmp_path, fake_gemini) as slack:
        fake = slack.fake
        one = fake.add_workspace("T1", name="Acme")
        two = fake.add_workspace("T2", name="Globex", enterprise_id="E2")
        page = await slack.install("T1")
        await slack.install("T2")

        assert "Thank you!" in page  # Bolt's own success page
        first, second = await slack.installation("T1"), await slack.installation("T2")
        assert first is not None and second is not None
        assert (first.bot_token, first.bot_user_id, first.bot_id) == (
            one.token,
            one.bot_user_id,
            one.bot_id,
        )
        assert (second.enterprise_id, second.team_id, second.tenant) == ("E2", "T2", "T2")
        assert second.details["team_name"] == "Globex"
        # the consent page was asked for the least the bot needs, and no user scope
        wanted = ",".join(s.name for s in needed(slack.settings))
        assert [c["scope"] for c in fake.consents] == [wanted, wanted]
        assert all(c.get("user_scope", "") == "" for c in fake.consents)
        assert first.bot_scopes == wanted

        # a command in one workspace and a mention in the other, at the same time
        statuses = await asyncio.gather(
            slack.command("T1", "a lighthouse at dusk", channel="C1ACME"),
            slack.mention("T2", "a harbour at dawn", channel="C2GLOBEX"),
        )
        assert statuses == [200, 200]
        status_one = await slack.status_posted("T1", "C1ACME")
        status_two = await slack.status_posted("T2", "C2GLOBEX")
        await slack.delivered("T1", status_one)
        await slack.delivered("T2", status_two)

        uploads = {u.channel: u for u in fake.uploads}
        assert set(uploads) == {"C1ACME", "C2GLOBEX"}
        for team, channel in (("T1", "C1ACME"), ("T2", "C2GLOBEX")):
            calls = _team_calls(fake, team, channel)
            methods = {c.method for c in calls}
            assert {"chat.postMessage", "chat.update", "files.completeUploadExternal"} <= methods
            assert {fake.workspace_of(c.token) for c in calls} == {team}, [
                (c.method, fake.workspace_of(c.token)) for c in calls
            ]
        # each workspace's bot posted as itself
        assert fake.messages[status_one]["bot_id"] == one.bot_id
        assert fake.messages[status_two]["bot_id"] == two.bot_id
        # no call went without a token, or with the token of no workspace
        acting = [c for c in fake.calls if c.method != "oauth.v2.access"]
        assert all(fake.workspace_of(c.token) in ("T1", "T2") for c in acting)
        # usage is each workspace's own
        for team in ("T1", "T2"):
            usage = await slack.service.usage("slack", team, None)
            assert usage.images == 1


async def test_the_daily_limit_of_one_workspace_does_not_stop_another(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    async with many(tmp_path, fake_gemini, IMAGEBOT_DAILY_IMAGES_PER_WORKSPACE=1) as slack:
        slack.fake.add_workspace("T1")
        slack.fake.add_workspace("T2")
        await slack.install("T1")
        await slack.install("T2")
        assert await slack.command("T1", "a fox", channel="C1") == 200
        await slack.delivered("T1", await slack.status_posted("T1", "C1"))

        assert await slack.command("T1", "a second fox", channel="C1", user="U2") == 200
        [told] = await slack.fake.wait_until(lambda: slack.fake.response_url_posts)
        assert "This workspace has made 1 image today" in told["body"]["text"]
        assert "/commands/T1/" in told["url"]
        assert await slack.command("T2", "a fox", channel="C2") == 200
        await slack.delivered("T2", await slack.status_posted("T2", "C2"))


async def test_an_attachment_is_downloaded_with_its_workspaces_token(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    from tests.bots.test_slack_app import png_bytes

    async with many(tmp_path, fake_gemini) as slack:
        fake = slack.fake
        fake.add_workspace("T1")
        two = fake.add_workspace("T2")
        await slack.install("T1")
        await slack.install("T2")
        photo = fake.add_file(png_bytes(), name="photo.png", mimetype="image/png")
        event = fake.app_mention_event("make it night", channel="C2", files=[photo], team_id="T2")
        status, _ = await slack.post(fake.event_body(event, team_id="T2"))
        assert status == 200
        await slack.delivered("T2", await slack.status_posted("T2", "C2"))
        [download] = fake.downloads
        assert download.authorized and download.token == two.token


# a bad state


async def test_an_install_with_a_bad_state_shows_an_error_page_and_stores_nothing(
    tmp_path: Path, fake_gemini: FakeGemini, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="bots.slack")
    async with many(tmp_path, fake_gemini) as slack:
        slack.fake.add_workspace("T1")
        consent_url, state = await slack.start_install("T1")
        redirect = await slack.consent(consent_url)

        # a state the app never issued, in both the link and the cookie
        forged = redirect.replace(f"state={state}", "state=forged")
        status, page = await slack.come_back(forged, "forged")
        assert status == 401 and "Oops, Something Went Wrong!" in page
        # the right state, but from another browser (no cookie)
        status, page = await slack.come_back(redirect, None)
        assert status == 400 and "Oops, Something Went Wrong!" in page
        assert await slack.installation("T1") is None
        assert not slack.fake.calls_to("oauth.v2.access")  # the code was never exchanged

        # the real thing works once, and only once
        status, _ = await slack.come_back(redirect, state)
        assert status == 200
        assert await slack.installation("T1") is not None
        again, page = await slack.come_back(redirect, state)
        assert again == 401 and "Oops" in page

        # a state older than ten minutes
        consent_url, state = await slack.start_install("T1")
        redirect = await slack.consent(consent_url)
        slack.clock.now += 601
        late, _ = await slack.come_back(redirect, state)
        assert late == 401
        reasons = [r.getMessage() for r in caplog.records if "did not complete" in r.getMessage()]
        assert reasons == [
            "Slack: an install did not complete: invalid_state",
            "Slack: an install did not complete: invalid_browser",
            "Slack: an install did not complete: invalid_state",
            "Slack: an install did not complete: invalid_state",
        ]


async def test_a_code_slack_refuses_shows_an_error_page(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    async with many(tmp_path, fake_gemini) as slack:
        slack.fake.add_workspace("T1")
        consent_url, state = await slack.start_install("T1")
        redirect = await slack.consent(consent_url)
        spent = redirect.split("code=")[1].split("&")[0]
        status, _ = await slack.come_back(redirect.replace(spent, "not-a-code"), state)
        assert status == 401
        assert await slack.installation("T1") is None
        [exchange] = slack.fake.calls_to("oauth.v2.access")
        assert exchange.response == {"ok": False, "error": "invalid_code"}


# uninstalling


async def test_after_app_uninstalled_the_workspace_is_refused_its_row_is_gone_and_its_data_goes(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    async with many(tmp_path, fake_gemini, SLACK_UNINSTALL_RETENTION_DAYS=30) as slack:
        fake = slack.fake
        fake.add_workspace("T1")
        fake.add_workspace("T2")
        await slack.install("T1")
        await slack.install("T2")
        for team, channel in (("T1", "C1"), ("T2", "C2")):
            assert await slack.command(team, "a quiet harbour", channel=channel) == 200
            await slack.delivered(team, await slack.status_posted(team, channel))

        # Slack revokes the workspace's tokens, then tells the app
        fake.uninstall("T1")
        status, _ = await slack.post(fake.app_uninstalled_body("T1"))
        assert status == 200
        assert await slack.installation("T1") is None
        assert await slack.installation("T2") is not None
        due = await slack.service.store.tenant_deletion("slack", "T1")
        assert due == pytest.approx(slack.clock.now + 30 * DAY)

        # a command from the uninstalled workspace: refused in a sentence, through the
        # response URL (no token can answer there), and nothing is made
        calls_before = len(fake.calls)
        jobs_before = (await slack.service.store.counts())["jobs"]
        assert await slack.command("T1", "another harbour", channel="C1") == 200
        [told] = await fake.wait_until(lambda: fake.response_url_posts)
        assert told["body"]["text"] == NOT_INSTALLED
        assert told["body"].get("response_type", "ephemeral") == "ephemeral"
        # a mention from it is dropped without a word (nothing could post it)
        mention = fake.app_mention_event("hello", channel="C1", team_id="T1")
        status, _ = await slack.post(fake.event_body(mention, team_id="T1"))
        assert status == 200
        await _settled(slack)
        assert (await slack.service.store.counts())["jobs"] == jobs_before
        assert (await slack.service.store.counts())["intake"] == 0
        assert fake.calls[calls_before:] == []  # no Web API call at all for it

        # the other workspace carries on
        assert await slack.command("T2", "a lighthouse", channel="C2") == 200
        await slack.delivered("T2", await slack.status_posted("T2", "C2"))
        # (the first status card in C2 was the earlier one: wait for the second job)
        await _jobs_delivered(slack, "T2", 2)

        # within the retention period nothing goes; after it, all of T1's data
        service = slack.service
        await service.apply_retention(now=slack.clock.now + 29 * DAY)
        assert (await service.usage("slack", "T1", None)).images == 1
        await service.apply_retention(now=slack.clock.now + 31 * DAY)
        assert (await service.usage("slack", "T1", None)).images == 0
        assert (await service.usage("slack", "T2", None)).images == 2
        assert await service.store.tenant_deletion("slack", "T1") is None


async def test_installing_again_before_the_retention_period_keeps_the_workspaces_data(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    async with many(tmp_path, fake_gemini) as slack:
        fake = slack.fake
        fake.add_workspace("T1")
        await slack.install("T1")
        assert await slack.command("T1", "a fox", channel="C1") == 200
        await slack.delivered("T1", await slack.status_posted("T1", "C1"))
        fake.uninstall("T1")
        assert (await slack.post(fake.app_uninstalled_body("T1")))[0] == 200
        assert await slack.service.store.tenant_deletion("slack", "T1") is not None

        await slack.install("T1")
        assert await slack.service.store.tenant_deletion("slack", "T1") is None
        await slack.service.apply_retention(now=slack.clock.now + 60 * DAY)
        assert (await slack.service.usage("slack", "T1", None)).images == 1
        # and it works again, with its new token
        assert await slack.command("T1", "a second fox", channel="C1") == 200
        await _jobs_delivered(slack, "T1", 2)
        new_token = fake.workspaces["T1"].token
        last = fake.calls_to("chat.update")[-1]
        assert last.token == new_token


@pytest.mark.parametrize("days", [7, 0])
async def test_a_revoked_bot_token_removes_the_installation(
    tmp_path: Path, fake_gemini: FakeGemini, days: int
) -> None:
    async with many(tmp_path, fake_gemini, SLACK_UNINSTALL_RETENTION_DAYS=days) as slack:
        slack.fake.add_workspace("T1")
        await slack.install("T1")
        slack.fake.uninstall("T1")
        status, _ = await slack.post(slack.fake.tokens_revoked_body("T1"))
        assert status == 200
        assert await slack.installation("T1") is None
        due = await slack.service.store.tenant_deletion("slack", "T1")
        # 0 keeps the workspace's data, as the other retention settings do
        assert due == (pytest.approx(slack.clock.now + days * DAY) if days else None)


# token rotation


async def test_an_expiring_token_is_refreshed_once_before_use_and_the_new_one_stored(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    async with many(tmp_path, fake_gemini) as slack:
        fake = slack.fake
        # the first token expires within the hour: inside the two hours before expiry in
        # which the app refreshes a token before using it
        rotating = fake.add_workspace("T1", rotation=True, expires_in=3600)
        await slack.install("T1")
        installed = await slack.installation("T1")
        assert installed is not None
        old_token, old_refresh = installed.bot_token, installed.bot_refresh_token
        assert old_token.startswith("xoxe.xoxb-") and old_refresh is not None
        assert installed.bot_token_expires_at == pytest.approx(slack.clock.now + 3600, abs=5)

        # two requests at once: one refresh between them
        statuses = await asyncio.gather(
            slack.command("T1", "a kite", channel="C1"),
            slack.command("T1", "a boat", channel="C1", user="U2"),
        )
        assert statuses == [200, 200]
        await _jobs_delivered(slack, "T1", 2)

        refreshes = [c for c in fake.calls_to("oauth.v2.access") if c.params.get("grant_type")]
        assert len(refreshes) == 1
        assert refreshes[0].params["refresh_token"] == old_refresh
        assert refreshes[0].response["ok"] is True
        new_token = rotating.token
        assert new_token != old_token
        stored = await slack.installation("T1")
        assert stored is not None
        assert (stored.bot_token, stored.bot_refresh_token) == (new_token, rotating.refresh_token)
        assert stored.bot_token_expires_at == pytest.approx(slack.clock.now + 43_200, abs=5)
        # everything after the refresh went with the new token, nothing with the old one
        after = fake.calls[fake.calls.index(refreshes[0]) + 1 :]
        acting = [
            c for c in after if c.method in (*CHANNEL_METHODS, "files.completeUploadExternal")
        ]
        assert acting and {c.token for c in acting} == {new_token}
        # the old token served only the install's own auth.test
        assert [c.method for c in fake.calls if c.token == old_token] == ["auth.test"]
        assert fake.calls.index(refreshes[0]) > fake.calls.index(
            next(c for c in fake.calls if c.token == old_token)
        )


# secrets


async def test_no_workspace_token_refresh_token_or_client_secret_reaches_the_log(
    tmp_path: Path,
    fake_gemini: FakeGemini,
    production_logging: Callable[[Settings], CapturedLogs],
) -> None:
    captured = production_logging(
        make_settings(
            tmp_path,
            fake_gemini,
            SLACK_CLIENT_SECRET=CLIENT_SECRET,
            SLACK_SIGNING_SECRET=SECRET,
            IMAGEBOT_LOG_LEVEL="DEBUG",
        )
    )
    async with many(tmp_path, fake_gemini) as slack:
        fake = slack.fake
        fake.add_workspace("T1", rotation=True, expires_in=3600)
        await slack.install("T1")
        assert await slack.command("T1", "a kite", channel="C1") == 200
        await _jobs_delivered(slack, "T1", 1)
        fake.uninstall("T1")
        assert (await slack.post(fake.app_uninstalled_body("T1")))[0] == 200
        issued = [
            str(c.response[name])
            for c in fake.calls_to("oauth.v2.access")
            for name in ("access_token", "refresh_token")
            if name in c.response
        ]
    assert len(issued) == 4  # the install's token and refresh token, then the refreshed pair
    logged = captured.text
    assert "oauth.v2.access" in logged  # the SDK did log the exchanges, at DEBUG
    for secret in (*issued, CLIENT_SECRET, SECRET):
        assert secret not in logged
    # what the SDK handed to logging did hold them: the scrubber took them out
    assert any(token in captured.raw for token in issued)


# settings


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"SLACK_CLIENT_SECRET": None}, "SLACK_CLIENT_SECRET is not set"),
        ({"SLACK_SIGNING_SECRET": None}, "SLACK_SIGNING_SECRET is not set"),
        ({"SLACK_APP_TOKEN": "xapp-1-app"}, "SLACK_APP_TOKEN cannot be used with SLACK_CLIENT_ID"),
    ],
)
async def test_many_workspaces_need_the_client_secret_and_http_mode(
    tmp_path: Path, fake_gemini: FakeGemini, env: dict[str, Any], named: str
) -> None:
    values: dict[str, Any] = {
        "SLACK_CLIENT_ID": "1111.2222",
        "SLACK_CLIENT_SECRET": "client-secret",
        "SLACK_SIGNING_SECRET": SECRET,
    }
    values.update({k: v for k, v in env.items() if v is not None})
    for name in [k for k, v in env.items() if v is None]:
        values.pop(name)
    settings = make_settings(tmp_path, fake_gemini, **values)
    async with open_service(settings) as service:
        with pytest.raises(ConfigError) as caught:
            create_app(settings, service)
    assert named in str(caught.value)
    assert "client-secret" not in str(caught.value)


async def test_the_bot_token_is_not_needed_and_not_used_with_a_client_id(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    async with many(tmp_path, fake_gemini, SLACK_BOT_TOKEN="xoxb-unused-token") as slack:
        slack.fake.add_workspace("T1")
        await slack.install("T1")
        assert await slack.command("T1", "a fox", channel="C1") == 200
        await slack.delivered("T1", await slack.status_posted("T1", "C1"))
        assert not [c for c in slack.fake.calls if c.token == "xoxb-unused-token"]


async def test_doctor_checks_the_client_id_and_secret_with_slack(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    from bots.slack import doctor

    async with FakeSlack() as fake:
        values = {
            "SLACK_CLIENT_ID": fake.client_id,
            "SLACK_CLIENT_SECRET": fake.client_secret,
            "SLACK_SIGNING_SECRET": SECRET,
            "SLACK_API_URL": fake.api_url,
        }
        [good] = await doctor.checks(make_settings(tmp_path, fake_gemini, **values))
        values["SLACK_CLIENT_SECRET"] = "not-the-secret"
        [bad] = await doctor.checks(make_settings(tmp_path, fake_gemini, **values))
    assert not good.failed and "/slack/install" in good.line()
    assert bad.failed and "bad_client_secret" in bad.line()
    assert "not-the-secret" not in bad.line()


# helpers


async def _settled(slack: Many) -> None:
    """Waits until the app has no request in hand (tasks done, nothing held)."""
    async with asyncio.timeout(5):
        while True:
            if not slack.app.ctx._tasks and not (await slack.service.store.counts())["intake"]:
                return
            await asyncio.sleep(0.01)


async def _jobs_delivered(slack: Many, team: str, count: int) -> None:
    async with asyncio.timeout(15):
        while True:
            rows = await slack.service.store.database.fetch(
                "SELECT COUNT(*) FROM jobs WHERE tenant = ? AND delivered_at IS NOT NULL", team
            )
            if int(rows[0][0]) >= count:
                return
            await asyncio.sleep(0.01)
