"""`imagebot doctor`: the result of one check, the checks of core's own parts, and the report.

Each check says `✓ what`, `✗ what: the fix` or `– what: skipped (why)`. Checks never raise:
a refusal, a network error or a timeout becomes a ✗ line. The platform checks live with
their adapters (bots/slack/doctor.py, bots/discord/doctor.py).
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import sqlite3
from collections.abc import Awaitable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import aiosqlite

from core.catalog import Catalog
from core.config import ConfigError, Settings, server_of
from core.gemini import GeminiClient, GeminiError, ListedModel
from core.store import Store

log = logging.getLogger(__name__)

TIMEOUT_SECONDS = 10.0  # per network call
GROUP_TIMEOUT_SECONDS = 60.0  # per group of checks, whatever happens inside
MIN_FREE_BYTES = 500_000_000  # below this the disk line turns ✗ (a 4K image is ~10 MB)

Status = Literal["ok", "fail", "skip"]
_MARKS = {"ok": "✓", "fail": "✗", "skip": "–"}


@dataclass(frozen=True)
class Check:
    """One line of the report: `what` was checked; `fix` says what to do (✗) or why the check
    was skipped (–)."""

    status: Status
    what: str
    fix: str = ""

    @classmethod
    def ok(cls, what: str) -> Check:
        return cls("ok", what)

    @classmethod
    def fail(cls, what: str, fix: str) -> Check:
        return cls("fail", what, fix)

    @classmethod
    def skip(cls, what: str, why: str) -> Check:
        return cls("skip", what, why)

    @property
    def failed(self) -> bool:
        return self.status == "fail"

    def line(self, secrets: Iterable[str] = ()) -> str:
        if self.status == "ok":
            text = f"✓ {self.what}"
        elif self.status == "fail":
            text = f"✗ {self.what}: {self.fix}"
        else:
            text = f"– {self.what}: skipped ({self.fix})"
        # as in the log: short values would blank out ordinary words; real secrets are long
        for secret in sorted((s for s in secrets if len(s) >= 8), key=len, reverse=True):
            text = text.replace(secret, "[redacted]")
        return text


def summary(checks: Iterable[Check]) -> str:
    failed = sum(check.failed for check in checks)
    if not failed:
        return "Everything configured works."
    problems = "1 problem" if failed == 1 else f"{failed} problems"
    return f"{problems}: fix the ✗ lines above, then run `imagebot doctor` again."


def cannot_reach(url: str, exc: BaseException) -> str:
    """The ✗ text for a call that got no answer at all."""
    if isinstance(exc, TimeoutError):
        reason = f"no answer within {TIMEOUT_SECONDS:g} s"
    else:
        reason = str(exc).strip() or type(exc).__name__
    return f"cannot reach {url}: {reason}"


async def guarded(what: str, checks: Awaitable[list[Check]]) -> list[Check]:
    """A group of checks that cannot raise or hang: whatever escapes becomes one ✗ line."""
    try:
        async with asyncio.timeout(GROUP_TIMEOUT_SECONDS):
            return await checks
    except TimeoutError:
        return [Check.fail(what, f"no answer within {GROUP_TIMEOUT_SECONDS:g} s; try again")]
    except Exception as exc:
        log.debug("doctor: %s failed", what, exc_info=True)
        return [
            Check.fail(
                what,
                f"the check itself failed ({type(exc).__name__}: {exc}); run it again with "
                "IMAGEBOT_LOG_LEVEL=DEBUG to see why",
            )
        ]


def secrets_of(settings: Settings) -> list[str]:
    values = (
        settings.gemini_api_key,
        settings.slack_bot_token,
        settings.slack_app_token,
        settings.slack_signing_secret,
        settings.slack_client_secret,
        settings.discord_bot_token,
    )
    return [value.get_secret_value() for value in values if value is not None]


# the image API


async def image_api(settings: Settings, catalog: Catalog) -> list[Check]:
    """The key and provider work (a free model listing, never a generation), and the
    configured model is one the server offers."""
    what = f"image API at {settings.gemini_base_url}"
    try:
        settings.require("GEMINI_API_KEY")
    except ConfigError as exc:
        return [Check.fail("image API", str(exc))]
    assert settings.gemini_api_key is not None
    provider = settings.provider
    client = GeminiClient(
        settings.gemini_base_url,
        settings.gemini_api_key.get_secret_value(),
        provider=provider,
        timeout_seconds=TIMEOUT_SECONDS,
        max_attempts=1,
    )
    try:
        listed = await client.list_models(timeout_seconds=TIMEOUT_SECONDS)
    except GeminiError as exc:
        if exc.reason in ("connection", "timeout"):
            reason = exc.detail.partition(": ")[2] if exc.reason == "connection" else ""
            fix = (
                f"cannot reach {client.models_url}: "
                f"{reason or f'no answer within {TIMEOUT_SECONDS:g} s'}; "
                "check GEMINI_BASE_URL and this machine's network"
            )
        else:
            # the bot's own sentence, said to the person who runs it
            fix = exc.message.replace("ask whoever runs this bot to ", "")
        return [Check.fail(what, fix)]
    finally:
        await client.aclose()
    how = "chosen by host" if settings.gemini_provider == "auto" else "GEMINI_PROVIDER"
    return [
        Check.ok(
            f"{what} accepts the key (provider {provider.name}, {how}; key sent as "
            f"{provider.auth_kind}); {_models(len(listed))} listed"
        ),
        _model_offered(settings, catalog, listed),
        _describe_model_offered(settings, listed),
    ]


def _describe_model_offered(settings: Settings, listed: list[ListedModel]) -> Check:
    model_id = settings.gemini_describe_model
    what = f"describe model {model_id} (GEMINI_DESCRIBE_MODEL)"
    if any(entry.id == model_id for entry in listed):
        return Check.ok(f"{what} is offered")
    text_models = [
        e.id
        for e in listed
        if e.id.startswith("gemini")
        and "image" not in e.id
        and "embedding" not in e.id
        and (e.methods is None or "generateContent" in e.methods)
    ]
    offered = f": {', '.join(text_models[:5])}" if text_models else ""
    return Check.fail(
        what,
        "not offered by this server, so Describe would fail; set GEMINI_DESCRIBE_MODEL to a "
        f"Gemini text model it offers{offered}",
    )


def _model_offered(settings: Settings, catalog: Catalog, listed: list[ListedModel]) -> Check:
    provider = settings.provider
    model = catalog.default
    wire_id = model.wire_id(provider.name)
    what = f"image model {wire_id} (GEMINI_MODEL={settings.gemini_model})"
    ids = {entry.id for entry in listed}
    if wire_id in ids:
        return Check.ok(f"{what} is offered")
    # the same model, listed under another of its names: say which id to send
    other_name = next((n for n in model.names() if n in ids), None)
    if other_name is not None:
        google = "" if provider.name == "google" else ", or GEMINI_PROVIDER=google if it is Google"
        return Check.fail(
            what,
            f"the server lists this model as {other_name}: have it sent under that id with "
            f'provider_ids = {{ {provider.name} = "{other_name}" }} in an IMAGEBOT_MODELS_FILE '
            f"entry for {model.id}{google}",
        )
    offered = [e.id for e in listed if e.makes_images and e.id not in provider.retired]
    if not offered:
        return Check.fail(
            what,
            f"the server lists no image model at all ({_models(len(listed))}): use a key (or a "
            "proxy channel) that serves Gemini image models",
        )
    choices = []
    for model_id in offered:
        known = catalog.find(model_id)
        if known is None:
            choices.append(f"{model_id} (needs an entry in IMAGEBOT_MODELS_FILE)")
            continue
        name = known.aliases[0] if known.aliases else known.id
        sent = known.wire_id(provider.name)
        if sent == model_id:
            choices.append(f"{model_id} (GEMINI_MODEL={name})")
        elif sent not in ids:  # listed under another of its names than the one sent
            choices.append(
                f'{model_id} (GEMINI_MODEL={name} with provider_ids = {{ {provider.name} = "'
                f'{model_id}" }} in IMAGEBOT_MODELS_FILE)'
            )
    return Check.fail(
        what,
        f"not offered by this server; set GEMINI_MODEL to an image model it offers: "
        f"{', '.join(choices)}",
    )


def _models(count: int) -> str:
    return "1 model" if count == 1 else f"{count} models"


# the database


async def database(settings: Settings) -> list[Check]:
    """The database opens the way the service opens it, takes a write (rolled back), and its
    disk has room."""
    if settings.uses_postgres:
        return [await _postgres(settings)]
    path = settings.sqlite_path.absolute()
    existed = path.exists()
    try:
        store = await Store.open(path)
    except ConfigError as exc:  # a file that is not a database: the sentence has the fix
        return [Check.fail(f"database {path}", str(exc)), _disk(path)]
    except Exception as exc:
        return [
            Check.fail(
                f"database {path}",
                f"cannot open it ({_reason(exc)}): make {path.parent} a folder this user can "
                "write to, or set DATABASE_URL to a path in one",
            ),
            _disk(path),
        ]
    try:
        await store.close()
        await _probe_write(path)
    except (sqlite3.Error, OSError) as exc:
        return [
            Check.fail(
                f"database {path}",
                f"it opens but refuses a write ({_reason(exc)}): make the file and its folder "
                f"{path.parent} writable by this user, and check the disk is not full",
            ),
            _disk(path),
        ]
    made = "" if existed else " (created, empty)"
    return [Check.ok(f"database {path} is writable{made}"), _disk(path)]


async def _postgres(settings: Settings) -> Check:
    where = server_of(settings.database_url)
    try:
        async with asyncio.timeout(TIMEOUT_SECONDS):
            store = await Store.open(settings.database_url, pool_min=0, pool_max=1)
            try:
                async with store.database.transaction() as tx:
                    await tx.execute("CREATE TEMPORARY TABLE doctor_probe (x INTEGER)")
                    await tx.execute("INSERT INTO doctor_probe VALUES (1)")
                version = await store.database.schema_version()
            finally:
                await store.close()
    except Exception as exc:
        why = cannot_reach(where, exc) if isinstance(exc, OSError | TimeoutError) else _reason(exc)
        return Check.fail(
            f"database PostgreSQL at {where}",
            f"{why}: check DATABASE_URL (user, password, host, port and database name)",
        )
    return Check.ok(f"database PostgreSQL at {where} takes writes (schema version {version})")


async def _probe_write(path: Path) -> None:
    async with aiosqlite.connect(str(path), isolation_level=None) as db:
        await db.execute("PRAGMA busy_timeout=5000")
        await db.execute("BEGIN IMMEDIATE")
        try:
            await db.execute("CREATE TABLE doctor_probe (x INTEGER)")
            await db.execute("INSERT INTO doctor_probe VALUES (1)")
        finally:
            await db.execute("ROLLBACK")


def _reason(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


def _disk(path: Path) -> Check:
    folder = path.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    try:
        free = shutil.disk_usage(folder).free
    except OSError as exc:
        return Check.fail(f"disk space at {folder}", f"cannot read it ({_reason(exc)})")
    if free < MIN_FREE_BYTES:
        return Check.fail(
            f"disk space: only {_size(free)} free where the database lives ({folder})",
            f"free some space or set DATABASE_URL to a larger disk (an image takes 1.5 MB at 1K "
            f"and 10 MB at 4K; keep at least {_size(MIN_FREE_BYTES)} free)",
        )
    return Check.ok(f"disk space: {_size(free)} free where the database lives ({folder})")


def _size(count: int) -> str:
    if count >= 1_000_000_000:
        return f"{count / 1_000_000_000:.1f} GB"
    return f"{count / 1_000_000:.0f} MB"
