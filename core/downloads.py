"""Fetching attachments from a chat platform's own file hosts, with a hard size cap."""

from __future__ import annotations

import ipaddress
import logging
from collections.abc import Collection, Mapping
from urllib.parse import urljoin, urlsplit

import httpx

from core.errors import UserFacingError
from core.images import printable_name

log = logging.getLogger(__name__)

MAX_REDIRECTS = 3


def host_allowed(url: str, allowed_hosts: Collection[str]) -> bool:
    """True when `url` is http(s) on an allowed host; ".example.com" allows its subdomains."""
    parts = urlsplit(url)
    host = (parts.hostname or "").lower()
    if parts.scheme not in ("https", "http") or not host:
        return False
    for allowed in allowed_hosts:
        allowed = allowed.lower()
        if host == allowed.lstrip(".") or (allowed.startswith(".") and host.endswith(allowed)):
            # a bot token must never travel unencrypted: plain http only on this machine
            return parts.scheme == "https" or _loopback(host)
    return False


def _loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


async def download(
    client: httpx.AsyncClient,
    url: str,
    *,
    name: str,
    allowed_hosts: Collection[str],
    max_bytes: int,
    headers: Mapping[str, str] | None = None,
    source: str = "the chat service",
    hosts_setting: str | None = None,
) -> bytes:
    """The body at `url`, refused before it is complete when it grows past `max_bytes`.

    Redirects are followed only to allowed hosts, so a file link can never make the bot
    fetch an internal address; credentials in `headers` go only to allowed hosts too.
    """
    limit_text = f"{max_bytes / 1_000_000:g} MB"
    for _hop in range(MAX_REDIRECTS + 1):
        if not host_allowed(url, allowed_hosts):
            host = urlsplit(url).hostname or "an unknown host"
            log.warning("refused a download outside the file hosts: %s", host)
            # the host may be the platform's own and merely missing from the setting
            fix = f"; if that is {source}'s, an admin can add it to {hosts_setting}" * bool(
                hosts_setting
            )
            raise UserFacingError(
                f"I only download attachments from {source}'s own file servers, so I skipped "
                f"`{name}`, which is on `{printable_name(host)}`{fix}."
            )
        try:
            async with client.stream("GET", url, headers=dict(headers or {})) as response:
                if response.is_redirect and "location" in response.headers:
                    url = urljoin(url, response.headers["location"])
                    continue
                if response.status_code != 200:
                    raise UserFacingError(
                        f"I could not download `{name}` from {source} "
                        f"(it answered {response.status_code}); try attaching it again.",
                        detail=f"download status {response.status_code}",
                    )
                kind = response.headers.get("content-type", "")
                if kind.startswith("text/html"):
                    raise UserFacingError(
                        f"{source} sent a web page instead of `{name}`: the bot is probably "
                        "missing permission to read files; ask an admin to reinstall it.",
                        detail="download returned text/html",
                    )
                declared = response.headers.get("content-length", "")
                if declared.isdigit() and int(declared) > max_bytes:
                    raise _too_big(name, int(declared), limit_text)
                body = bytearray()
                async for chunk in response.aiter_bytes():
                    body.extend(chunk)
                    if len(body) > max_bytes:
                        raise _too_big(name, None, limit_text)
                return bytes(body)
        except httpx.HTTPError as exc:
            raise UserFacingError(
                f"I could not download `{name}` from {source}; try attaching it again.",
                detail=f"download failed: {type(exc).__name__}",
            ) from None
    raise UserFacingError(
        f"I could not download `{name}`: {source} redirected too many times.",
        detail="too many redirects",
    )


def _too_big(name: str, size: int | None, limit_text: str) -> UserFacingError:
    told = f" is {size / 1_000_000:.1f} MB;" if size else " is too large;"
    return UserFacingError(f"`{name}`{told} the limit is {limit_text}: send a smaller image.")
