"""Log set-up: the job id on every line about a job, JSON when asked, secrets scrubbed."""

from __future__ import annotations

import contextvars
import json
import logging
import re
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

current_job: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "current_job", default=None
)
REDACTED = "[redacted]"
# Short-lived secrets that SDKs log at DEBUG inside URLs and payloads: Discord interaction
# and webhook tokens, and Slack response URLs (anyone holding one may post as the bot); and
# tokens no setting names, which SDKs log at DEBUG too: each Slack workspace's bot and
# refresh tokens (xoxb-, xoxe.xoxb-, xoxe-), fields such as "access_token" or "client_secret".
_INLINE_SECRETS = re.compile(
    r"(?P<url>/(?:webhooks|interactions)/\d+/|/(?:commands|actions)/[TE]\w+/\d+/)[\w.\-]{16,}"
    r"|(?P<field>[\"'](?:\w+_)?(?:token|secret)[\"']\s*:\s*[\"'])[\w.\-]{16,}"
    r"|(?P<slack>\bxox[a-z](?:\.xox[a-z])?-)[\w\-]{8,}"
)


@contextmanager
def job_context(job_id: str) -> Iterator[None]:
    """Lines logged inside (in this task and tasks it starts) carry `job_id`."""
    token = current_job.set(job_id)
    try:
        yield
    finally:
        current_job.reset(token)


class _JobAndSecrets(logging.Filter):
    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        # short values would blank out ordinary words; real secrets are long
        self.secrets = sorted({s for s in secrets if len(s) >= 8}, key=len, reverse=True)

    def filter(self, record: logging.LogRecord) -> bool:
        record.job_id = getattr(record, "job_id", None) or current_job.get()
        message = record.getMessage()
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        cleaned = self._scrub(message)
        if cleaned != message:
            record.msg, record.args = cleaned, None
        if record.exc_text:
            record.exc_text = self._scrub(record.exc_text)
        return True

    def _scrub(self, text: str) -> str:
        for secret in self.secrets:
            text = text.replace(secret, REDACTED)
        return _INLINE_SECRETS.sub(_keep_prefix, text)


def _keep_prefix(match: re.Match[str]) -> str:
    return (match["url"] or match["field"] or match["slack"]) + REDACTED


class _Text(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        job = getattr(record, "job_id", None)
        return line.replace(" | ", f" job={job} ", 1) if job else line.replace(" | ", " ", 1)


class _Json(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        job = getattr(record, "job_id", None)
        if job:
            entry["job_id"] = job
        if record.exc_info or record.exc_text:
            entry["error"] = record.exc_text or self.formatException(record.exc_info)  # type: ignore[arg-type]
        return json.dumps(entry, ensure_ascii=False)


def configure(level: str | None, fmt: str, secrets: Iterable[str]) -> None:
    """Route all logging to stderr in `fmt` ("text" or "json") with secrets removed;
    a `level` of None logs nothing at all."""
    handler = logging.StreamHandler()
    handler.addFilter(_JobAndSecrets(secrets))
    if fmt == "json":
        handler.setFormatter(_Json())
    else:
        handler.setFormatter(_Text("%(asctime)s %(levelname)s %(name)s | %(message)s"))
    root = logging.getLogger()
    for old in root.handlers[:]:
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level if level is not None else logging.CRITICAL + 1)
    # httpx logs every request URL at INFO; keep the log about our own work
    logging.getLogger("httpx").setLevel(logging.WARNING)
    # aiosqlite logs every statement with its parameters (image bytes included) at DEBUG
    logging.getLogger("aiosqlite").setLevel(logging.INFO)
