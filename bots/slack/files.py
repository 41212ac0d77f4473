"""Files in and out of Slack: attachments downloaded from Slack's hosts, images uploaded."""

from __future__ import annotations

from collections.abc import Collection, Sequence

import httpx
from slack_sdk.errors import SlackApiError
from slack_sdk.web.async_client import AsyncWebClient

from bots.slack import messages
from bots.slack.payloads import SlackFile
from core.downloads import download
from core.errors import UserFacingError
from core.images import extension_for, printable_name
from core.jobs import Attachment, ResultImage

ALT_TEXT_CHARS = 1000  # Slack's limit for alt_txt


async def complete_files(
    client: AsyncWebClient, files: Sequence[SlackFile]
) -> tuple[SlackFile, ...]:
    """The files as they can be used: stubs completed with files.info (Slack Connect), and
    a clear refusal for those Slack will not hand over."""
    completed = []
    for file in files:
        if file.file_access == "check_file_info":
            try:
                answer = await client.files_info(file=file.id)
            except SlackApiError as exc:
                error = str(exc.response.get("error", ""))
                raise UserFacingError(
                    _not_completed(printable_name(file.name), error),
                    detail=f"files.info for a Slack Connect file stub: {error}",
                ) from None
            file = SlackFile.model_validate(answer.get("file") or {"id": file.id})
        completed.append(file)
    return tuple(completed)


def _not_completed(name: str, error: str) -> str:
    if error in ("missing_scope", "not_allowed_token_type", "no_permission"):
        return messages.FILES_SCOPE_MISSING
    if error in ("file_not_found", "file_deleted", "access_denied", "not_visible"):
        return messages.file_not_shared(name)
    return messages.file_not_fetched(name)


def _check_available(file: SlackFile) -> None:
    name = printable_name(file.name)
    if file.mode == "hidden_by_limit":
        raise UserFacingError(messages.file_hidden_by_limit(name), detail="file hidden_by_limit")
    if file.mode == "tombstone":
        raise UserFacingError(messages.file_deleted(name), detail="file tombstone")
    if file.mode == "external":
        raise UserFacingError(
            messages.file_external(name, file.external_type), detail="external file"
        )


def check_images(files: Sequence[SlackFile]) -> None:
    """Refuse anything that is not an image before downloading a byte of it."""
    for file in files:
        _check_available(file)
        if not file.mimetype.startswith("image/"):
            raise UserFacingError(
                messages.not_an_image(printable_name(file.name), file.mimetype),
                detail=f"attachment mimetype {file.mimetype!r}",
            )


async def download_attachments(
    http: httpx.AsyncClient,
    files: Sequence[SlackFile],
    *,
    token: str,
    hosts: Collection[str],
    max_bytes: int,
) -> tuple[Attachment, ...]:
    """The files' bytes, fetched with the bot token from Slack's own file hosts only."""
    check_images(files)
    attachments = []
    for file in files:
        url = file.url_private_download or file.url_private
        name = printable_name(file.name)
        if not url:
            raise UserFacingError(
                f"Slack did not say where to find `{name}`; try attaching it again.",
                detail=f"file {file.id} has no url",
            )
        data = await download(
            http,
            url,
            name=name,
            allowed_hosts=hosts,
            max_bytes=max_bytes,
            headers={"Authorization": f"Bearer {token}"},
            source="Slack",
            hosts_setting="SLACK_FILE_HOSTS",
        )
        attachments.append(Attachment(name=file.name, data=data))
    return tuple(attachments)


async def upload_images(
    client: AsyncWebClient,
    images: Sequence[ResultImage],
    *,
    channel: str,
    thread_ts: str | None,
    comment: str | None,
    title: str,
    stem: str,
) -> list[str]:
    """Share the images as one message (three-step external upload); returns their file ids."""
    uploads = [
        {
            "file": image.data,
            "filename": f"{stem}-{number}{extension_for(image.mime_type)}"
            if len(images) > 1
            else f"{stem}{extension_for(image.mime_type)}",
            "title": title,
            "alt_txt": title[:ALT_TEXT_CHARS],
        }
        for number, image in enumerate(images, start=1)
    ]
    response = await client.files_upload_v2(
        file_uploads=uploads,
        channel=channel,
        thread_ts=thread_ts,
        initial_comment=comment or None,
    )
    return [str(f["id"]) for f in response.get("files") or []]
