"""Attachment downloads: only the platforms' file hosts, never a redirect out, never a token out.

The bot fetches whatever URL an event names, with the Slack bot token attached. These tests
make sure such a URL can neither point the bot at an internal address (directly or through a
redirect) nor carry the token to a host that is not the platform's own.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.config import Settings
from core.downloads import MAX_REDIRECTS, download, host_allowed
from core.errors import UserFacingError
from tests.bots.test_discord_harness import USER, discord_server, png, replies_to, running_bot
from tests.bots.test_slack_app import Running, png_bytes, running
from tests.fakes.discord import StoredMessage
from tests.fakes.gemini import FakeGemini
from tests.security.file_server import FileServer

SLACK = ["files.slack.com"]
TOKEN_HEADER = {"Authorization": "Bearer xoxb-download-token"}
REFUSED = "own file servers"


# host_allowed: the one decision every download goes through


@pytest.mark.parametrize(
    "url",
    [
        "file:///etc/passwd",
        "ftp://files.slack.com/x.png",
        "gopher://files.slack.com/x.png",
        "data:image/png;base64,iVBORw0KGgo=",
        "javascript:alert(1)",
        "//files.slack.com/x.png",
        "https:///x.png",
        "http://files.slack.com.evil.com/x.png",
        "https://files.slack.com.evil.com/x.png",
        "https://evilfiles.slack.com/x.png",
        "https://files.slack.com@evil.com/",
        "https://files.slack.com:443@evil.com/x.png",
        "https://files.slack.com\\@evil.com/x.png",
        "https://files.slack.com\t.evil.com/x.png",
        "https://files.slack.com./x.png",
        "https://127.0.0.1/x.png",
        "https://[::1]/x.png",
        "https://2130706433/x.png",
        "https://0x7f000001/x.png",
        "https://169.254.169.254/latest/meta-data/",
        "https://files.sl\u0430ck.com/x.png",  # a Cyrillic "а"
        "https://\uff46\uff49\uff4c\uff45\uff53.slack.com/x.png",  # full-width letters
        "https://files.slack.com\u3002evil.com/x.png",  # an ideographic full stop
        "https://xn--files-slck-7ij.com/x.png",
    ],
)
def test_urls_off_the_file_hosts_or_with_scheme_tricks_are_refused(url: str) -> None:
    assert not host_allowed(url, SLACK)


@pytest.mark.parametrize(
    ("url", "hosts"),
    [
        ("https://files.slack.com/files-pri/T1-F1/a.png", SLACK),
        ("HTTPS://FILES.SLACK.COM/files-pri/T1-F1/a.png", SLACK),
        ("https://Files.Slack.Com:443/a.png", SLACK),
        ("https://files.slack.com/a.png", ["FILES.SLACK.COM"]),
        ("https://media.example-cdn.com/a.png", [".example-cdn.com"]),
        ("https://example-cdn.com/a.png", [".example-cdn.com"]),
        ("http://127.0.0.1:8080/a.png", ["127.0.0.1"]),
    ],
)
def test_the_file_hosts_themselves_are_allowed_in_any_letter_case(
    url: str, hosts: list[str]
) -> None:
    assert host_allowed(url, hosts)


@pytest.mark.parametrize(
    "url",
    [
        "https://evilexample-cdn.com/a.png",
        "http://media.example-cdn.com/a.png",
        "https://media.example-cdn.com.evil.com/a.png",
    ],
)
def test_a_suffix_entry_allows_only_https_subdomains_of_that_domain(url: str) -> None:
    assert not host_allowed(url, [".example-cdn.com"])


@pytest.mark.parametrize(
    "url",
    [
        "https://evil.com@files.slack.com/x.png",
        "https://evil.com\\@files.slack.com/x.png",
        "https://evil.com%40@files.slack.com/x.png",
        "https://evil.com;@files.slack.com/x.png",
        "https://evil.com:80@files.slack.com/x.png",
        "https://evil.com @files.slack.com/x.png",
        "https://evil.com#@files.slack.com/",
        "https://evil.com?@files.slack.com/",
        "https://evil.com/@files.slack.com",
        "https://files.slack.com#@evil.com",
        "https://files.slack.com?x=@evil.com",
    ],
)
def test_whenever_a_url_is_allowed_the_http_client_connects_to_that_same_host(url: str) -> None:
    # the check and the client must read the host alike, or a URL could pass as Slack's
    # and still send the token elsewhere
    if host_allowed(url, SLACK):
        assert httpx.URL(url).host == "files.slack.com"


@pytest.mark.parametrize(
    ("url", "allowed"),
    [
        ("https://files.slack.com/files-pri/T1-F1/a.png", True),
        ("https://files-edu.slack.com/files-pri/T1-F1/a.png", True),
        # where Enterprise Grid redirects downloads from files.slack.com
        ("https://files-origin.slack.com/files-pri/T1-F1/a.png", True),
        ("https://files.slack-gov.com/files-pri/T1-F1/a.png", True),
        ("https://acme.enterprise.slack.com/files-pri/E1-F1/a.png", True),
        ("https://slack.com.evil.com/files-pri/T1-F1/a.png", False),
        ("https://evil-enterprise.slack.com/a.png", False),
        ("https://files.slack-gov.com.evil.com/a.png", False),
    ],
)
def test_slacks_default_file_hosts_cover_education_gov_and_enterprise(
    url: str, allowed: bool
) -> None:
    default = str(Settings.model_fields["slack_file_hosts"].default)
    assert host_allowed(url, Settings.split(default)) is allowed


def test_plain_http_is_refused_for_the_production_file_hosts() -> None:
    assert not host_allowed("http://files.slack.com/files-pri/T1-F1/a.png", SLACK)
    assert not host_allowed(
        "http://cdn.discordapp.com/attachments/1/2/a.png",
        ["cdn.discordapp.com", "media.discordapp.net"],
    )


# download(): redirects are checked hop by hop


@pytest.fixture
async def origin() -> AsyncIterator[FileServer]:
    """The allowed host (127.0.0.1)."""
    async with FileServer("127.0.0.1") as server:
        yield server


@pytest.fixture
async def inside() -> AsyncIterator[FileServer]:
    """Another loopback address standing for an internal service the bot must never reach."""
    async with FileServer("127.0.0.2") as server:
        yield server


@pytest.fixture
async def http() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=2.0, follow_redirects=False) as client:
        yield client


async def _fetch(http: httpx.AsyncClient, url: str, max_bytes: int = 1_000_000) -> bytes:
    return await download(
        http,
        url,
        name="photo.png",
        allowed_hosts=["127.0.0.1"],
        max_bytes=max_bytes,
        headers=TOKEN_HEADER,
        source="Slack",
    )


async def test_a_redirect_to_another_loopback_address_is_refused_before_it_is_followed(
    origin: FileServer, inside: FileServer, http: httpx.AsyncClient
) -> None:
    inside.file("/admin", b"internal secrets")
    url = origin.redirect("/photo.png", inside.url("/admin"))

    with pytest.raises(UserFacingError, match=REFUSED) as refused:
        await _fetch(http, url)

    assert "photo.png" in refused.value.message
    assert inside.requests == []
    assert origin.paths() == ["/photo.png"]


async def test_a_redirect_to_the_same_server_under_a_name_not_allowed_is_refused(
    origin: FileServer, http: httpx.AsyncClient
) -> None:
    origin.file("/real.png", png())
    url = origin.redirect("/photo.png", f"http://localhost:{origin.port}/real.png")

    with pytest.raises(UserFacingError, match=REFUSED):
        await _fetch(http, url)

    assert origin.paths() == ["/photo.png"]  # the token went to no second request


@pytest.mark.parametrize(
    "location",
    [
        "http://169.254.169.254/latest/meta-data/iam/security-credentials/",
        "http://[::1]:80/",
        "file:///etc/passwd",
        "https://files.slack.com.evil.com/x.png",
        "//evil.com/x.png",
    ],
)
async def test_a_redirect_to_a_private_address_a_local_file_or_a_lookalike_host_is_refused(
    origin: FileServer, http: httpx.AsyncClient, location: str
) -> None:
    url = origin.redirect("/photo.png", location)

    with pytest.raises(UserFacingError, match=REFUSED):
        await _fetch(http, url)

    assert origin.paths() == ["/photo.png"]


async def test_a_redirect_within_the_allowed_host_is_followed_with_the_token(
    origin: FileServer, http: httpx.AsyncClient
) -> None:
    data = png()
    origin.file("/stored/photo.png", data)
    url = origin.redirect("/photo.png", "/stored/photo.png")

    assert await _fetch(http, url) == data
    assert origin.paths() == ["/photo.png", "/stored/photo.png"]
    assert all(
        seen.headers.get("Authorization") == TOKEN_HEADER["Authorization"]
        for seen in origin.requests
    )


async def test_a_redirect_loop_stops_after_a_few_hops_with_a_clear_message(
    origin: FileServer, http: httpx.AsyncClient
) -> None:
    url = origin.redirect("/photo.png", "/photo.png")

    with pytest.raises(UserFacingError, match="redirected too many times"):
        await _fetch(http, url)

    assert len(origin.requests) == MAX_REDIRECTS + 1


async def test_a_declared_length_over_the_cap_is_refused_from_the_header(
    origin: FileServer, http: httpx.AsyncClient
) -> None:
    url = origin.file("/photo.png", b"\x89PNG\r\n\x1a\n" + bytes(2_000_000))

    with pytest.raises(UserFacingError, match=r"is 2\.0 MB; the limit is 0\.5 MB"):
        await _fetch(http, url, max_bytes=500_000)


async def test_a_body_without_a_length_is_cut_off_at_the_cap_while_streaming(
    origin: FileServer, http: httpx.AsyncClient
) -> None:
    total = 64 * 1024 * 1024
    url = origin.stream("/photo.png", total)

    with pytest.raises(UserFacingError, match="too large"):
        await _fetch(http, url, max_bytes=500_000)

    stream = origin.streams["/photo.png"]
    async with asyncio.timeout(5):
        await stream.ended.wait()
    assert stream.sent < total // 2  # the client hung up long before the end


# the adapters: a file named in an event


async def _slack_reply(slack: Running, words: str) -> dict[str, Any]:
    [call] = await slack.fake.wait_for_call(
        "chat.postMessage", predicate=lambda c: words in str(c.params.get("text"))
    )
    return call.params


def _slack_file(slack: Running, url: str) -> dict[str, Any]:
    shared = slack.fake.add_file(png_bytes(), name="ref.png", mimetype="image/png")
    return {**shared, "url_private": url, "url_private_download": url}


async def test_a_slack_file_on_another_host_is_refused_and_gets_no_token(
    tmp_path: Path, fake_gemini: FakeGemini, inside: FileServer
) -> None:
    async with running(tmp_path, fake_gemini) as slack:
        elsewhere = _slack_file(slack, inside.file("/ref.png", png_bytes()))
        await slack.event(
            slack.fake.app_mention_event("like this", channel="C1", files=[elsewhere])
        )

        reply = await _slack_reply(slack, "ref.png")
        assert "Slack's own file servers" in reply["text"]
        assert inside.requests == []
        assert await slack.job_count() == 0
        assert not fake_gemini.requests


async def test_a_slack_file_redirecting_to_an_internal_address_is_refused(
    tmp_path: Path, fake_gemini: FakeGemini, origin: FileServer, inside: FileServer
) -> None:
    async with running(tmp_path, fake_gemini) as slack:
        inside.file("/admin", b"internal")
        bouncing = _slack_file(slack, origin.redirect("/ref.png", inside.url("/admin")))
        await slack.event(slack.fake.app_mention_event("like this", channel="C1", files=[bouncing]))

        reply = await _slack_reply(slack, "ref.png")
        assert "Slack's own file servers" in reply["text"]
        [asked] = origin.requests
        assert asked.headers["Authorization"] == f"Bearer {slack.fake.bot_token}"
        assert inside.requests == []
        assert await slack.job_count() == 0


async def _mention_with_file(fake: Any, url: str) -> dict[str, Any]:
    """Dispatch a mention whose attachment Discord says lives at `url`; returns its payload."""
    payload = fake.message_create(
        f"<@{fake.bot_user_id}> like this",
        author_id=USER,
        attachments=[fake.add_attachment(png(), "ref.png")],
        mentions=[fake.bot_user_id],
    )
    payload["attachments"][0]["url"] = url
    await fake.dispatch("MESSAGE_CREATE", payload)
    return payload


async def _discord_failure(fake: Any, payload: dict[str, Any]) -> StoredMessage:
    return await fake.wait_for_message(
        lambda m: replies_to(m, payload) and m.content.startswith("⚠️")
    )


async def test_a_discord_attachment_on_another_host_is_refused(
    tmp_path: Path, fake_gemini: FakeGemini, inside: FileServer
) -> None:
    async with discord_server() as fake, running_bot(tmp_path, fake_gemini, fake) as bot:
        payload = await _mention_with_file(fake, inside.file("/ref.png", png()))

        answer = await _discord_failure(fake, payload)
        assert "Discord's own file servers" in answer.content
        assert inside.requests == []
        assert (await bot.service.store.counts())["jobs"] == 0


async def test_a_discord_slash_attachment_redirecting_out_is_refused(
    tmp_path: Path, fake_gemini: FakeGemini, origin: FileServer, inside: FileServer
) -> None:
    async with discord_server() as fake, running_bot(tmp_path, fake_gemini, fake) as bot:
        attachment = fake.add_attachment(png(), "ref.png")
        attachment["url"] = origin.redirect("/ref.png", inside.url("/admin"))
        await bot.slash({"prompt": "like this"}, attachments={"image": attachment})

        await fake.wait_until(
            lambda: any("Discord's own file servers" in m.content for m in fake.channel_messages()),
            5.0,
            lambda: "no refusal",
        )
        assert inside.requests == []
        assert (await bot.service.store.counts())["jobs"] == 0


async def test_discord_attachments_are_fetched_without_the_bot_token(
    tmp_path: Path, fake_gemini: FakeGemini, origin: FileServer
) -> None:
    async with discord_server() as fake, running_bot(tmp_path, fake_gemini, fake) as bot:
        payload = await _mention_with_file(fake, origin.file("/ref.png", png()))

        await bot.reply_to(payload)
        [asked] = origin.requests
        assert "Authorization" not in asked.headers
        assert all(fake.token not in value for value in asked.headers.values())
