"""A real PostgreSQL for the tests, started by the suite itself.

With `IMAGEBOT_TEST_DATABASE_URL` set (a URL to a database on a server where the tests
may create databases; PostgreSQL 13 or newer, for DROP DATABASE ... WITH (FORCE)), that
server is used. Otherwise one PostgreSQL server is started per pytest session from the
binaries that the `pgserver` wheel ships, in a fresh temporary directory (in /dev/shm
when there is room), and stopped at the end of the session.

The server runs under a small supervisor process (this file, run as a script) that owns
the postmaster: it waits for EOF on its standard input, then stops the server and deletes
the directory. The test process holds the other end of that pipe, so the server goes
away when the session ends however it ends (normal exit, Ctrl-C, SIGKILL). If the
supervisor itself is killed, the kernel sends the postmaster SIGQUIT (parent-death
signal), and the next start removes the directory that was left behind.

Each test gets its own empty database (`CREATE DATABASE t_<hex> TEMPLATE template0`,
dropped `WITH (FORCE)` afterwards). URLs are plain TCP ones on 127.0.0.1
(`postgresql://postgres@127.0.0.1:PORT/t_...`), so child processes can use them as
DATABASE_URL as they are.

pgserver's own `get_server()` is not used: its URLs are unix-socket only, its cleanup is
an atexit hook (a killed session leaves the server running), it takes a machine-wide lock
file, and as root it adds a `pgserver` user and chmods every parent folder of the data
and of the virtualenv. Only its binaries are used here.

As root, PostgreSQL refuses to run, so initdb and the postmaster run as the
unprivileged `nobody` account (present on every Debian system); the data directory is
handed to it and nothing else on the machine changes.

Run by hand: `python -m tests.postgres` starts a server, prints its admin URL (JSON) and
serves until Ctrl-C, SIGTERM or the end of the process that started it (or until standard
input closes, with `--until-eof`).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import importlib.util
import json
import os
import selectors
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

ENV_VAR = "IMAGEBOT_TEST_DATABASE_URL"
# read once, at import: the suite's autouse fixture clears IMAGEBOT_* settings per test
EXTERNAL_URL = os.environ.get(ENV_VAR) or None

START_TIMEOUT = 60.0  # initdb + first start on a slow CI machine
STOP_TIMEOUT = 30.0
ADMIN_TIMEOUT = 30.0  # one CREATE/DROP DATABASE
DIR_PREFIX = "imagebot-pg-"
DB_PREFIX = "t_"
SUPERUSER = "postgres"
RUN_AS = "nobody"  # the account the server runs as when we are root

# Settings for a throwaway server: durability off (a crash loses nothing we need), which
# makes CREATE DATABASE and commits cheap; room for many pools at once.
SERVER_SETTINGS = {
    "listen_addresses": "127.0.0.1",
    "fsync": "off",
    "synchronous_commit": "off",
    "full_page_writes": "off",
    "max_connections": "300",
    "shared_buffers": "64MB",
    "max_wal_size": "1GB",
    "checkpoint_timeout": "1h",
    "log_min_messages": "warning",
    "log_min_error_statement": "panic",
}


# --- the server process (run inside the supervisor) ---------------------------------------


def bin_dir() -> Path:
    """Where the pgserver wheel keeps postgres, initdb, psql, ... (without importing it:
    importing pgserver has side effects we do not need)."""
    spec = importlib.util.find_spec("pgserver")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("pgserver is not installed: run `make install` (it is a dev dependency)")
    path = Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"
    if not (path / "postgres").exists():
        raise RuntimeError(f"pgserver ships no PostgreSQL binaries at {path}")
    return path


def _server_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "LC_", "LANG"))}
    env.update(LC_ALL="C", LANG="C", TZ="UTC")
    return env


def _account() -> tuple[int, int] | None:
    """(uid, gid) to run the server as, or None to run as ourselves (not root)."""
    if os.geteuid() != 0:
        return None
    import pwd

    try:
        entry = pwd.getpwnam(RUN_AS)
    except KeyError:
        raise RuntimeError(
            f"running as root, and there is no '{RUN_AS}' account to run PostgreSQL as"
        ) from None
    return entry.pw_uid, entry.pw_gid


def _parent_death_signal(sig: signal.Signals) -> Callable[[], None]:
    """A function that has the kernel send `sig` to the calling process when its parent
    ends (Linux's PR_SET_PDEATHSIG; does nothing elsewhere). Safe to call after fork."""
    import ctypes

    prctl = getattr(ctypes.CDLL(None, use_errno=True), "prctl", None)

    def set_it() -> None:
        if prctl is not None:
            prctl(1, int(sig))  # PR_SET_PDEATHSIG

    return set_it


def _child_options(account: tuple[int, int] | None) -> dict[str, Any]:
    """subprocess options: drop root (uid, gid and supplementary groups), and die with us."""

    # runs in the child, after the uid change: SIGQUIT is PostgreSQL's immediate shutdown
    die_with_parent = _parent_death_signal(signal.SIGQUIT)
    options: dict[str, Any] = {"env": _server_env(), "preexec_fn": die_with_parent}
    if account is not None:
        options.update(user=account[0], group=account[1], extra_groups=[])
    return options


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _cmdline(pid: int) -> bytes:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return b""


class Postmaster:
    """initdb + postgres in `root`, as a child of this process."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.data = root / "data"
        self.log = root / "postgres.log"
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self._account = _account()
        self._bin = bin_dir()

    @property
    def url(self) -> str:
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/postgres"

    def start(self, timeout: float = START_TIMEOUT) -> None:
        deadline = time.monotonic() + timeout
        self._bin = self._reachable_bin_dir()
        self._initdb(deadline)
        for _attempt in range(5):  # another process may take the free port before we bind it
            self.port = _free_port()
            if self._run(deadline):
                return
            if "could not bind" not in self._log_tail() and "in use" not in self._log_tail():
                break
        raise RuntimeError(f"PostgreSQL did not start; its log ({self.log}):\n{self._log_tail()}")

    def _reachable_bin_dir(self) -> Path:
        """The wheel's binaries, or a copy of them in our directory when the account we
        run them as cannot reach the wheel (a virtualenv under /root, say)."""
        if self._account is None:
            return self._bin
        try:
            subprocess.run(
                [str(self._bin / "postgres"), "--version"],
                check=True,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=30,
                **_child_options(self._account),
            )
            return self._bin
        except (OSError, subprocess.SubprocessError):
            pass
        # the same layout: the binaries find their libraries at $ORIGIN/../../../pgserver.libs
        install = self._bin.parent
        copy = self.root / "pg" / "pgserver" / "pginstall"
        shutil.copytree(install, copy, ignore=shutil.ignore_patterns("include"))
        libs = install.parent.parent / "pgserver.libs"
        if libs.is_dir():
            shutil.copytree(libs, self.root / "pg" / "pgserver.libs")
        return copy / "bin"

    def _initdb(self, deadline: float) -> None:
        self.data.mkdir(mode=0o700)
        if self._account is not None:
            for path in (self.root, self.data):
                os.chown(path, *self._account)
        # fmt: off
        command = [
            str(self._bin / "initdb"), "-D", str(self.data), "-U", SUPERUSER,
            "--auth=trust", "--encoding=UTF8", "--no-locale", "--no-sync", "--no-instructions",
        ]
        # fmt: on
        try:
            subprocess.run(
                command,
                check=True,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                timeout=max(1.0, deadline - time.monotonic()),
                **_child_options(self._account),
            )
        except subprocess.CalledProcessError as exc:
            output = exc.output.decode(errors="replace")
            raise RuntimeError(f"initdb failed ({exc.returncode}):\n{output}") from None
        except subprocess.TimeoutExpired:
            raise RuntimeError("initdb did not finish in time") from None

    def _run(self, deadline: float) -> bool:
        """Start the postmaster; True once it accepts connections, False if it exited."""
        command = [str(self._bin / "postgres"), "-D", str(self.data), "-p", str(self.port)]
        command += ["-k", str(self.root)]  # its unix socket, next to the data
        for name, value in SERVER_SETTINGS.items():
            command += ["-c", f"{name}={value}"]
        with self.log.open("ab") as log:
            if self._account is not None:
                os.chown(self.log, *self._account)
            self.process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=log,
                **_child_options(self._account),
            )
        pid_file = self.data / "postmaster.pid"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                self.process = None
                return False
            with contextlib.suppress(OSError):
                lines = pid_file.read_text().splitlines()
                # line 8 of postmaster.pid is the status; "ready" = accepting connections
                if len(lines) >= 8 and lines[7].strip() == "ready":
                    return True
            time.sleep(0.01)
        self.stop()
        raise RuntimeError(f"PostgreSQL did not start in time; its log:\n{self._log_tail()}")

    def stop(self) -> None:
        """Fast shutdown (SIGINT), then immediate (SIGQUIT), then SIGKILL; always reaps."""
        process, self.process = self.process, None
        if process is None:
            return
        for sig, wait in ((signal.SIGINT, 15.0), (signal.SIGQUIT, 5.0), (signal.SIGKILL, 5.0)):
            with contextlib.suppress(ProcessLookupError):
                process.send_signal(sig)
            try:
                process.wait(wait)
                return
            except subprocess.TimeoutExpired:
                continue

    def _log_tail(self, lines: int = 30) -> str:
        try:
            text = self.log.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])


def base_dirs() -> list[Path]:
    """Where server directories go: memory (/dev/shm) when there is room, which makes
    CREATE DATABASE several times faster on a busy disk; else the temporary folder."""
    dirs = []
    shm = Path("/dev/shm")
    with contextlib.suppress(OSError):
        stat = os.statvfs(shm)
        if os.access(shm, os.W_OK | os.X_OK) and stat.f_bavail * stat.f_frsize > 2 << 30:
            dirs.append(shm)
    dirs.append(Path(tempfile.gettempdir()))
    return dirs


def sweep_stale() -> list[Path]:
    """Remove server directories left by supervisors that were killed: stop a postmaster
    that still runs there, then delete the directory. Returns what was removed."""
    removed = []
    roots = [root for base in dict.fromkeys(base_dirs()) for root in base.glob(f"{DIR_PREFIX}*")]
    for root in roots:
        try:
            pid_text = (root / "supervisor.pid").read_text().strip()
        except OSError:
            pid_text = ""
        if pid_text.isdigit():
            pid = int(pid_text)
            if _pid_alive(pid):
                command = _cmdline(pid)
                if not command or b"postgres" in command:
                    continue  # a live session's server (or one we cannot tell)
        else:
            try:
                if time.time() - root.stat().st_mtime < 60:
                    continue  # a supervisor that is just starting
            except OSError:
                continue
        with contextlib.suppress(OSError, ValueError, IndexError):
            postmaster = int((root / "data" / "postmaster.pid").read_text().split()[0])
            if _pid_alive(postmaster) and str(root).encode() in _cmdline(postmaster):
                os.kill(postmaster, signal.SIGKILL)
        shutil.rmtree(root, ignore_errors=True)
        removed.append(root)
    return removed


def _stop_with_parent(parent: int) -> None:
    """SIGTERM to us when the process that started us ends (Linux), so a server started
    in the background by a script does not outlive it."""
    _parent_death_signal(signal.SIGTERM)()
    if os.getppid() != parent:  # it ended before that
        os.kill(os.getpid(), signal.SIGTERM)


def serve(until_eof: bool) -> int:
    """The supervisor: start a server, print one JSON line, serve, stop, clean up.

    The line is {"url": ..., "dir": ..., "log": ..., "pid": ...} or {"error": ...}.
    """
    stop_now = False
    parent = os.getppid()

    def on_signal(signum: int, frame: object) -> None:
        nonlocal stop_now
        stop_now = True
        raise SystemExit(0)

    for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
        signal.signal(sig, on_signal)
    root: Path | None = None
    server: Postmaster | None = None
    try:
        sweep_stale()
        root = Path(tempfile.mkdtemp(prefix=DIR_PREFIX, dir=base_dirs()[0]))
        root.chmod(0o755)
        (root / "supervisor.pid").write_text(str(os.getpid()))
        server = Postmaster(root)
        server.start()
        assert server.process is not None
        info = {"url": server.url, "dir": str(root), "log": str(server.log)}
        print(json.dumps({**info, "pid": server.process.pid}), flush=True)
        if until_eof:
            while sys.stdin.buffer.read(65536):
                pass
        else:
            _stop_with_parent(parent)
            while not stop_now:
                signal.pause()
    except SystemExit:
        pass
    except Exception as exc:
        print(json.dumps({"error": f"{type(exc).__name__}: {exc}"}), flush=True)
        return 1
    finally:
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, signal.SIG_IGN)
        if server is not None:
            server.stop()
        if root is not None:
            shutil.rmtree(root, ignore_errors=True)
    return 0


# --- the test side --------------------------------------------------------------------------


def database_url(url: str, name: str) -> str:
    """`url` with its database (the path) replaced by `name`; credentials, host and query
    (e.g. `?host=/run/postgresql`) are kept."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{name}"))


def _readline(stream: Any, timeout: float) -> bytes:
    """One line from a pipe, or what came before EOF or the timeout."""
    fd = stream.fileno()
    data = b""
    deadline = time.monotonic() + timeout
    with selectors.DefaultSelector() as selector:
        selector.register(fd, selectors.EVENT_READ)
        while b"\n" not in data:
            left = deadline - time.monotonic()
            if left <= 0 or not selector.select(left):
                break
            chunk = os.read(fd, 65536)
            if not chunk:
                break
            data += chunk
    return data


class ServerProcess:
    """A started server in a supervisor subprocess (`python tests/postgres.py serve`).

    The server lives until `stop()`, or until this process exits in any way (the
    supervisor sees EOF on its standard input). The URL works from any process.
    """

    def __init__(self, timeout: float = START_TIMEOUT) -> None:
        started = time.monotonic()
        self._errors = tempfile.TemporaryFile()
        self._process = subprocess.Popen(
            # -P: this file's folder (tests/) must not come first on the supervisor's path
            [sys.executable, "-P", str(Path(__file__).resolve()), "serve", "--until-eof"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self._errors,
            start_new_session=True,  # a Ctrl-C to our process group must not skip the cleanup
            close_fds=True,
        )
        assert self._process.stdout is not None
        line = _readline(self._process.stdout, timeout)
        try:
            info = json.loads(line)
        except ValueError:
            info = {"error": f"no answer in {timeout:.0f} s: {line.decode(errors='replace')}"}
        if "error" in info:
            self.stop(timeout=0.1 if not line else STOP_TIMEOUT)
            self._errors.seek(0)
            detail = self._errors.read().decode(errors="replace").strip()
            raise RuntimeError(f"the test PostgreSQL did not start: {info['error']}\n{detail}")
        self.admin_url: str = info["url"]
        self.directory = Path(info["dir"])
        self.log = Path(info["log"])
        self.pid: int = info["pid"]
        self.startup_seconds = time.monotonic() - started

    def stop(self, timeout: float = STOP_TIMEOUT) -> None:
        process = self._process
        if process.stdin is not None and not process.stdin.closed:
            with contextlib.suppress(OSError):
                process.stdin.close()
        try:
            process.wait(timeout)
        except subprocess.TimeoutExpired:
            process.terminate()  # the supervisor cleans up on SIGTERM too
            try:
                process.wait(10)
            except subprocess.TimeoutExpired:
                process.kill()  # the postmaster gets SIGQUIT from the kernel (parent death)
                process.wait()
        if process.stdout is not None:
            process.stdout.close()
        self._errors.close()

    def __enter__(self) -> ServerProcess:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class PostgresServer:
    """Creates and drops the tests' databases on a server, through one admin connection.

    Synchronous, so sync and async tests (and their fixtures) can both use it; the
    connection lives on a private event loop in a thread.
    """

    def __init__(self, admin_url: str, process: ServerProcess | None = None) -> None:
        self.admin_url = admin_url
        self.process = process  # None for an external server
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._loop.run_forever, name="test-postgres-admin", daemon=True
        )
        self._thread.start()
        self._connection: Any = None
        self._lock: asyncio.Lock | None = None  # one statement at a time on the connection

    def _call(self, coroutine: Coroutine[Any, Any, Any], timeout: float = ADMIN_TIMEOUT) -> Any:
        return asyncio.run_coroutine_threadsafe(coroutine, self._loop).result(timeout)

    async def _execute(self, sql: str) -> None:
        import asyncpg

        self._lock = self._lock or asyncio.Lock()
        async with self._lock:
            if self._connection is None or self._connection.is_closed():
                self._connection = await asyncpg.connect(self.admin_url, timeout=ADMIN_TIMEOUT)
            await self._connection.execute(sql)

    def create_database(self, template: str = "template0") -> str:
        """A new, empty database; returns its URL."""
        name = f"{DB_PREFIX}{uuid.uuid4().hex}"
        self._call(self._execute(f'CREATE DATABASE "{name}" TEMPLATE "{template}"'))
        return database_url(self.admin_url, name)

    def drop_database(self, url: str) -> None:
        """Drop a database made by create_database, ending any connection still open to it."""
        name = urlsplit(url).path.lstrip("/")
        if not name.startswith(DB_PREFIX) or not name[len(DB_PREFIX) :].isalnum():
            raise ValueError(f"not a test database: {url}")
        self._call(self._execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))

    @contextlib.contextmanager
    def database(self) -> Iterator[str]:
        url = self.create_database()
        try:
            yield url
        finally:
            self.drop_database(url)

    def close(self) -> None:
        async def disconnect() -> None:
            if self._connection is not None and not self._connection.is_closed():
                await self._connection.close(timeout=5)

        try:
            self._call(disconnect(), timeout=10)
        except Exception:
            if self._connection is not None:
                self._connection.terminate()
        finally:
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(10)
            if not self._thread.is_alive():
                self._loop.close()
            if self.process is not None:
                self.process.stop()


@contextlib.contextmanager
def open_server() -> Iterator[PostgresServer]:
    """The external server from IMAGEBOT_TEST_DATABASE_URL, or a new one for the session."""
    if EXTERNAL_URL:
        server = PostgresServer(EXTERNAL_URL)
    else:
        process = ServerProcess()
        try:
            server = PostgresServer(process.admin_url, process)
        except BaseException:
            process.stop()
            raise
    try:
        yield server
    finally:
        server.close()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.postgres",
        description="Start a throwaway PostgreSQL, print its URL as JSON, serve until stopped.",
    )
    parser.add_argument("command", nargs="?", default="serve", choices=["serve", "sweep"])
    parser.add_argument(
        "--until-eof", action="store_true", help="stop when standard input closes, not on Ctrl-C"
    )
    args = parser.parse_args(argv)
    if args.command == "sweep":
        for path in sweep_stale():
            print(f"removed {path}")
        return 0
    return serve(until_eof=args.until_eof)


if __name__ == "__main__":
    sys.exit(main())
