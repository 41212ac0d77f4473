"""The `imagebot` command: generate, chat, run the chat adapters, and the local fake API."""

from __future__ import annotations

import argparse
import asyncio
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import NoReturn

from bots.runner import UNREACHABLE, unreachable
from core import doctor as health
from core.config import ConfigError, Settings, load_settings, server_of
from core.doctor import Check
from core.errors import UserFacingError
from core.runtime import catalog_from, configure_logging, open_service

PLATFORMS = ("slack", "discord")

CHAT_DESCRIPTION = """\
A conversation with the image model in the terminal, like a thread in Slack or Discord:
each line you type is a turn, and later lines change the last image ("now make it
night-time"). Options such as --ar 16:9 --size 2K --model pro --text may stand anywhere in
a line. Images are written to IMAGEBOT_OUTPUT_DIR (default out/) and their paths printed.

  /attach PATH   add a reference image to your next message (a path in quotes works too)
  /new           start a fresh conversation
  /help          show these commands
  /exit, /quit   leave; Ctrl-D (end of input) works too
"""

DOCTOR_DESCRIPTION = """\
Checks, in order, that the settings load; that the image API accepts the key and provider
and offers the configured model (by listing models, which costs nothing); that the database
takes a write and its disk has room; and, for each platform whose token is set, that Slack or
Discord accepts the credentials and the app is set up as the bot needs (scopes, intents,
commands). One line per check: "✓ what", or "✗ what: the fix". Exits 0 when everything
configured works, 1 otherwise.
"""


MIGRATE_DB_DESCRIPTION = """\
Copies the SQLite database that DATABASE_URL names into the empty PostgreSQL database at
--to: conversations, turns, images, message links, jobs, saved defaults and held requests,
every id kept as it is (heartbeats, which describe running processes, are not copied).

Stop the bot first: requests it takes while the copy runs stay behind in SQLite. The
SQLite file is only read. The copy runs in one PostgreSQL transaction and refuses a target
that already holds data, so a failed or repeated run leaves PostgreSQL as it was. Row
counts are compared table by table before the copy is committed. Afterwards set
DATABASE_URL to the --to URL and start the bot.
"""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:
        # one line, like every other failure of this command
        self.exit(2, f"imagebot: {message} (see {self.prog} --help)\n")


def _parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="imagebot", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    generate = commands.add_parser("generate", help="make one image from the terminal")
    generate.add_argument("prompt", nargs="+", help="what to draw")
    generate.add_argument("--ar", "--aspect", dest="ar", help="aspect ratio, e.g. 16:9")
    generate.add_argument("--size", help="0.5K, 1K, 2K or 4K")
    generate.add_argument("--model", help="model alias or id, e.g. flash, pro, 2.5-flash")
    generate.add_argument("--temp", help="temperature from 0 to 1")
    generate.add_argument("--text", action="store_true", help="ask for text beside the image")
    generate.add_argument(
        "--image",
        action="append",
        default=[],
        metavar="FILE",
        help="a reference image (repeat for more)",
    )
    generate.add_argument("--out", type=Path, help="folder for the image files")

    commands.add_parser(
        "chat",
        help="a conversation in the terminal",
        description=CHAT_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )

    run = commands.add_parser("run", help="run the chat adapters whose credentials are set")
    run.add_argument(
        "platforms",
        nargs="*",
        metavar="PLATFORM",
        help="slack and/or discord (default: every configured one)",
    )

    commands.add_parser(
        "doctor",
        help="check the settings, the image API, the database and each configured platform",
        description=DOCTOR_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )

    sync = commands.add_parser("discord-sync", help="register the Discord slash commands")
    sync.add_argument(
        "--guild",
        type=int,
        metavar="ID",
        help="one server, at once (default: every server, within the hour)",
    )

    migrate = commands.add_parser(
        "migrate-db",
        help="copy the SQLite database into PostgreSQL (stop the bot first)",
        description=MIGRATE_DB_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    migrate.add_argument(
        "--to",
        required=True,
        metavar="URL",
        help="the empty PostgreSQL database: postgresql://user:password@host:port/name",
    )

    fake = commands.add_parser("fake-gemini", help="serve the fake image API for development")
    fake.add_argument("--port", type=int, default=8765)
    fake.add_argument("--host", default="127.0.0.1")
    fake.add_argument("--latency", type=float, default=0.0, help="seconds per answer")
    fake.add_argument(
        "--dialect",
        choices=("any", "google", "proxy"),
        default="any",
        help="answer as Google's API, as a Bearer-key proxy, or as either (default)",
    )
    return parser


def _flags(args: argparse.Namespace) -> str:
    """The options as chat flags, so one grammar checks the terminal and the chats alike."""
    pairs = [
        ("--ar", args.ar),
        ("--size", args.size),
        ("--model", args.model),
        ("--temp", args.temp),
    ]
    flags = [f"{flag} {value}" for flag, value in pairs if value is not None]
    if args.text:
        flags.append("--text")
    return " ".join(flags)


async def _generate(settings: Settings, args: argparse.Namespace) -> int:
    from bots.shell.terminal import TerminalAdapter, read_attachment

    attachments = [read_attachment(path) for path in args.image]
    text = " ".join(args.prompt) + " " + _flags(args)
    async with open_service(settings) as service:
        # progress chatter stays out of a script's way
        adapter = TerminalAdapter(
            service, args.out or settings.output_dir, lambda _line: None, platform="cli"
        )
        await service.start()
        outcome, paths = await adapter.ask(
            adapter.request(text, thread_key=None, attachments=attachments)
        )
    if outcome.notice:
        _stderr(f"note: {outcome.notice}")
    if outcome.text:
        _stderr(f"model: {outcome.text}")
    if outcome.error or not paths:
        raise UserFacingError(outcome.error or "The image service returned no image.")
    for path in paths:
        print(path)
    return 0


async def _chat(settings: Settings) -> int:
    from bots.shell.terminal import TerminalAdapter, run_chat, stdin_lines

    async with open_service(settings) as service:
        adapter = TerminalAdapter(service, settings.output_dir, print)
        await service.start()
        interactive = sys.stdin.isatty()
        await run_chat(
            adapter,
            stdin_lines(interactive=interactive),
            prompt=(lambda: print("you> ", end="", flush=True)) if interactive else lambda: None,
        )
    return 0


async def _run(settings: Settings, wanted: Sequence[str]) -> int:
    configured = {
        "slack": settings.slack_bot_token is not None or settings.slack_client_id is not None,
        "discord": settings.discord_bot_token is not None,
    }
    platforms = list(wanted) or [name for name in PLATFORMS if configured[name]]
    if not platforms:
        print("No Slack or Discord credentials are set; starting the terminal chat instead.")
        return await _chat(settings)
    from bots.runner import run_platforms

    await run_platforms(settings, platforms)
    return 0


async def _discord_sync(settings: Settings, guild: int | None) -> int:
    from bots.discord import sync_commands

    names = await sync_commands(settings, guild)
    where = f"in server {guild}" if guild else "in every server"
    print(f"Registered {', '.join('/' + name for name in names)} {where}.")
    return 0


async def _migrate_db(settings: Settings, target: str) -> int:
    from core.store.copy import copy_sqlite_to_postgres

    if settings.uses_postgres:
        raise UserFacingError(
            "migrate-db copies a SQLite database into PostgreSQL, but DATABASE_URL already "
            f"names PostgreSQL ({server_of(settings.database_url)}): set DATABASE_URL to the "
            "sqlite:/// URL of the file to copy."
        )
    report = await copy_sqlite_to_postgres(
        settings.sqlite_path, target, report=lambda line: print(line, flush=True)
    )
    print(report.summary())
    return 0


async def doctor(
    load: Callable[[], Settings] = load_settings, write: Callable[[str], None] | None = None
) -> int:
    """`imagebot doctor`: one line per check as it completes; 0 when nothing failed."""
    write = write or (lambda text: print(text, flush=True))
    results: list[Check] = []
    secrets: list[str] = []

    def emit(checks: Iterable[Check]) -> None:
        for check in checks:
            results.append(check)
            write(check.line(secrets))

    try:
        settings = load()
        catalog = catalog_from(settings)
    except ConfigError as exc:
        emit(
            [
                Check.fail("settings", str(exc)),
                Check.skip("image API, database, Slack and Discord", "the settings did not load"),
            ]
        )
    else:
        secrets.extend(health.secrets_of(settings))
        emit([Check.ok(f"settings: {_settings_source()}")])
        emit(await health.guarded("image API", health.image_api(settings, catalog)))
        emit(await health.guarded("database", health.database(settings)))
        from bots.discord import doctor as discord_doctor
        from bots.slack import doctor as slack_doctor

        emit(await health.guarded("Slack", slack_doctor.checks(settings)))
        emit(await health.guarded("Discord", discord_doctor.checks(settings, catalog)))
    write(health.summary(results))
    return 1 if any(check.failed for check in results) else 0


def _settings_source() -> str:
    env_file = Path(str(Settings.model_config.get("env_file") or ".env"))
    if env_file.is_file():
        return f"read from the environment and {env_file.absolute()}"
    return f"read from the environment (no {env_file} in {Path.cwd()})"


def _load_quietly() -> Settings:
    settings = load_settings()
    # the SDKs' own warnings would come between the lines of the report
    configure_logging(settings, quiet=True)
    return settings


def _fake_gemini(args: argparse.Namespace) -> int:
    # the fake lives with the tests, so it runs from a source checkout only
    checkout = Path(__file__).resolve().parents[1]
    if (checkout / "tests" / "fakes").is_dir() and str(checkout) not in sys.path:
        sys.path.insert(0, str(checkout))
    try:
        from tests.fakes.gemini import serve
    except ImportError:
        raise UserFacingError(
            "fake-gemini runs from a source checkout (it lives in tests/fakes)."
        ) from None
    asyncio.run(
        serve(args.host, args.port, api_key=None, latency=args.latency, dialect=args.dialect)
    )
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_args(argv)
    unknown = [p for p in getattr(args, "platforms", []) if p not in PLATFORMS]
    if unknown:
        parser.error(f"unknown platform {unknown[0]!r}: choose slack and/or discord")
    try:
        if args.command == "fake-gemini":
            return _fake_gemini(args)
        if args.command == "doctor":
            return asyncio.run(doctor(_load_quietly))
        settings = load_settings()
        # the terminal commands keep their output to themselves unless a log level is set
        configure_logging(settings, quiet=args.command in ("generate", "chat", "migrate-db"))
        if args.command == "generate":
            return asyncio.run(_generate(settings, args))
        if args.command == "chat":
            return asyncio.run(_chat(settings))
        if args.command == "migrate-db":
            return asyncio.run(_migrate_db(settings, args.to))
        if args.command == "discord-sync":
            return asyncio.run(_discord_sync(settings, args.guild))
        return asyncio.run(_run(settings, args.platforms))
    except ConfigError as exc:
        _stderr(f"imagebot: {exc}")
        _stderr("Run `.venv/bin/imagebot doctor` to check every setting, each with its fix.")
        return 1
    except UserFacingError as exc:
        _stderr(f"imagebot: {exc}")
        return 1
    except UNREACHABLE as exc:
        _stderr(unreachable(exc))
        return 1
    except KeyboardInterrupt:
        print(file=sys.stderr)  # past the ^C the terminal shows, for the shell's prompt
        return 130


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
