"""Attachments users send on Discord, fetched from Discord's own file hosts with a size cap."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import httpx

from bots.discord import messages
from bots.discord.intake import FileLike
from core.config import Settings
from core.downloads import download
from core.errors import UserFacingError
from core.images import printable_name
from core.jobs import Attachment

DOWNLOAD_TIMEOUT_SECONDS = 60.0


def http_client() -> httpx.AsyncClient:
    # redirects are followed by download() itself, which checks every hop's host
    return httpx.AsyncClient(timeout=DOWNLOAD_TIMEOUT_SECONDS, follow_redirects=False)


def check_sizes(attachments: Sequence[FileLike], max_bytes: int) -> None:
    """Refuse, before any download, a file Discord already says is too big."""
    for attachment in attachments:
        size = attachment.size
        # a size that is not a whole number is unknown: the download's own cap still holds
        if isinstance(size, int) and size > max_bytes:
            raise UserFacingError(
                messages.too_big(printable_name(attachment.filename), size, max_bytes)
            )


async def fetch(
    client: httpx.AsyncClient, attachments: Sequence[FileLike], settings: Settings
) -> tuple[Attachment, ...]:
    """The files' bytes, from the hosts in DISCORD_FILE_HOSTS only; the service checks them."""
    check_sizes(attachments, settings.max_attachment_bytes)
    hosts = settings.split(settings.discord_file_hosts)

    async def one(attachment: FileLike) -> Attachment:
        name = printable_name(attachment.filename)
        data = await download(
            client,
            attachment.url,
            name=name,
            allowed_hosts=hosts,
            max_bytes=settings.max_attachment_bytes,
            source="Discord",
            hosts_setting="DISCORD_FILE_HOSTS",
        )
        return Attachment(name=name, data=data)

    return tuple(await asyncio.gather(*(one(a) for a in attachments)))
