"""The suite's own PostgreSQL (tests/postgres.py): a working, empty, isolated database per
test, the features the store relies on (LISTEN/NOTIFY, FOR UPDATE SKIP LOCKED), URLs that
other processes can use, and a server that goes away however the session ends."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import pytest

from tests.postgres import PostgresServer, ServerProcess

REPO = Path(__file__).resolve().parents[1]
TIMEOUT = 10.0
seen_urls: list[str] = []


async def public_tables(conn: asyncpg.Connection) -> list[str]:
    rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
    return sorted(row["tablename"] for row in rows)


async def test_the_database_is_new_and_empty(postgres_url: str) -> None:
    parts = urlsplit(postgres_url)
    assert parts.scheme == "postgresql"
    assert parts.path.startswith("/t_")
    conn = await asyncpg.connect(postgres_url)
    try:
        assert await conn.fetchval("SELECT current_database()") == parts.path[1:]
        assert await public_tables(conn) == []
        await conn.execute("CREATE TABLE things (id int PRIMARY KEY, name text)")
        await conn.execute("INSERT INTO things VALUES (1, 'ünïcode ✓')")
        assert await conn.fetchval("SELECT name FROM things WHERE id = 1") == "ünïcode ✓"
    finally:
        await conn.close()


@pytest.mark.parametrize("run", ["first", "second"])
async def test_tests_writing_the_same_table_do_not_see_each_other(
    postgres_url: str, run: str
) -> None:
    assert postgres_url not in seen_urls
    seen_urls.append(postgres_url)
    conn = await asyncpg.connect(postgres_url)
    try:
        # no IF NOT EXISTS: this fails if the other run's table is visible here
        await conn.execute("CREATE TABLE shared_name (run text)")
        await conn.execute("INSERT INTO shared_name VALUES ($1)", run)
        assert [r["run"] for r in await conn.fetch("SELECT run FROM shared_name")] == [run]
    finally:
        await conn.close()


async def test_two_databases_in_one_test_are_isolated(postgres_server: PostgresServer) -> None:
    with postgres_server.database() as one, postgres_server.database() as two:
        assert one != two
        a, b = await asyncpg.connect(one), await asyncpg.connect(two)
        try:
            await a.execute("CREATE TABLE jobs (id int)")
            await a.execute("INSERT INTO jobs VALUES (1)")
            assert await public_tables(b) == []
            await b.execute("CREATE TABLE jobs (id int)")
            assert await b.fetchval("SELECT count(*) FROM jobs") == 0
        finally:
            await a.close()
            await b.close()


async def test_a_pool_works_on_the_url(postgres_url: str) -> None:
    async with asyncpg.create_pool(postgres_url, min_size=1, max_size=3) as pool:
        results = await asyncio.gather(*(pool.fetchval("SELECT $1::int * 2", i) for i in range(6)))
    assert results == [0, 2, 4, 6, 8, 10]


async def test_listen_notify_reaches_another_connection(postgres_url: str) -> None:
    listener = await asyncpg.connect(postgres_url)
    sender = await asyncpg.connect(postgres_url)
    received: asyncio.Queue[tuple[str, str]] = asyncio.Queue()

    def on_notify(_conn: object, _pid: int, channel: str, payload: str) -> None:
        received.put_nowait((channel, payload))

    try:
        await listener.add_listener("jobs_ready", on_notify)
        await sender.execute("SELECT pg_notify('jobs_ready', 'job-1')")
        assert await asyncio.wait_for(received.get(), TIMEOUT) == ("jobs_ready", "job-1")
        async with sender.transaction():  # delivered at commit, not before
            await sender.execute("NOTIFY jobs_ready, 'job-2'")
            await listener.fetchval("SELECT 1")  # a round trip on the listening connection
            assert received.empty()
        assert await asyncio.wait_for(received.get(), TIMEOUT) == ("jobs_ready", "job-2")
    finally:
        await listener.close()
        await sender.close()


async def test_skip_locked_gives_the_second_worker_the_next_row(postgres_url: str) -> None:
    first = await asyncpg.connect(postgres_url)
    second = await asyncpg.connect(postgres_url)
    claim = "SELECT id FROM jobs WHERE NOT done ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED"
    try:
        await first.execute("CREATE TABLE jobs (id int PRIMARY KEY, done bool NOT NULL)")
        await first.execute("INSERT INTO jobs VALUES (1, false), (2, false)")
        tx1 = first.transaction()
        await tx1.start()
        assert await first.fetchval(claim) == 1
        async with second.transaction():
            assert await second.fetchval(claim) == 2  # row 1 is locked: skipped, no wait
            with pytest.raises(asyncpg.LockNotAvailableError):  # and it really is locked
                await second.fetchval("SELECT id FROM jobs WHERE id = 1 FOR UPDATE NOWAIT")
        async with second.transaction():  # everything claimable: all but the locked row
            rows = await second.fetch(claim.replace(" LIMIT 1", ""))
            assert [row["id"] for row in rows] == [2]
        await tx1.rollback()
        async with second.transaction():
            assert await second.fetchval(claim) == 1  # released by the rollback
    finally:
        await first.close()
        await second.close()


async def test_a_child_process_can_use_the_url(postgres_url: str) -> None:
    conn = await asyncpg.connect(postgres_url)
    await conn.execute("CREATE TABLE hello (word text)")
    await conn.close()
    script = (
        "import asyncio, sys, asyncpg\n"
        "async def main():\n"
        "    conn = await asyncpg.connect(sys.argv[1])\n"
        "    await conn.execute(\"INSERT INTO hello VALUES ('from the child')\")\n"
        "    await conn.close()\n"
        "asyncio.run(main())\n"
    )
    child = await asyncio.create_subprocess_exec(
        sys.executable, "-c", script, postgres_url, stdin=asyncio.subprocess.DEVNULL
    )
    assert await asyncio.wait_for(child.wait(), TIMEOUT * 3) == 0
    conn = await asyncpg.connect(postgres_url)
    try:
        assert await conn.fetchval("SELECT word FROM hello") == "from the child"
    finally:
        await conn.close()


async def test_dropping_ends_connections_left_open(postgres_server: PostgresServer) -> None:
    url = postgres_server.create_database()
    conn = await asyncpg.connect(url)  # a test that forgot to close its pool
    postgres_server.drop_database(url)
    with pytest.raises((asyncpg.PostgresError, asyncpg.InterfaceError, OSError)):
        await conn.fetchval("SELECT 1")
    conn.terminate()
    with pytest.raises(asyncpg.InvalidCatalogNameError):
        await asyncpg.connect(url)


def test_drop_refuses_a_database_it_did_not_make(postgres_server: PostgresServer) -> None:
    with pytest.raises(ValueError, match="not a test database"):
        postgres_server.drop_database(postgres_server.admin_url)


# --- the server's life: a process of its own, which never outlives the session ---------------


def gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


async def test_stopping_the_server_leaves_no_process_and_no_files() -> None:
    server = ServerProcess()
    try:
        conn = await asyncpg.connect(server.admin_url)
        assert await conn.fetchval("SELECT 1") == 1
        await conn.close()
        assert server.directory.is_dir()
    finally:
        server.stop()
    assert gone(server.pid)
    assert not server.directory.exists()


# A drill run in a child process that is a subreaper, so every process of the drill ends up
# reaped by it (no zombie is left behind), and the drill reports once all of them are gone.
DRILL = r"""
import ctypes, json, os, signal, subprocess, sys
from pathlib import Path
from tests.postgres import ServerProcess, sweep_stale

ctypes.CDLL(None).prctl(36, 1)  # PR_SET_CHILD_SUBREAPER
report = {}
if sys.argv[1] == "owner-killed":
    # a test session that dies by SIGKILL while its server runs
    owner = subprocess.Popen(
        [sys.executable, "-c",
         "import json, sys; from tests.postgres import ServerProcess; s = ServerProcess(); "
         "print(json.dumps([s.pid, str(s.directory)]), flush=True); sys.stdin.read()"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE,
    )
    postmaster, directory = json.loads(owner.stdout.readline())
    owner.kill()
    owner.wait()
else:
    # the supervisor itself dies by SIGKILL: the postmaster must follow it
    server = ServerProcess()
    postmaster, directory = server.pid, str(server.directory)
    os.kill(server._process.pid, signal.SIGKILL)
    server.stop()
while True:  # the orphans come to us: wait for each of them to end
    try:
        os.wait()
    except ChildProcessError:
        break
report["postmaster_gone"] = not Path(f"/proc/{postmaster}").exists()
report["directory_left"] = Path(directory).exists()
report["swept"] = str(Path(directory)) in map(str, sweep_stale())
report["directory_gone"] = not Path(directory).exists()
print(json.dumps(report), flush=True)
"""


async def run_drill(kind: str) -> dict[str, bool]:
    child = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        DRILL,
        kind,
        cwd=REPO,
        env={**os.environ, "PYTHONPATH": str(REPO)},
        stdin=asyncio.subprocess.DEVNULL,
        stdout=asyncio.subprocess.PIPE,
    )
    out, _ = await asyncio.wait_for(child.communicate(), 90)
    assert child.returncode == 0, out
    return json.loads(out.decode().strip().splitlines()[-1])


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses Linux process control")
async def test_a_killed_session_does_not_leave_its_server_running() -> None:
    report = await run_drill("owner-killed")
    assert report == {
        "postmaster_gone": True,
        "directory_left": False,  # the supervisor saw EOF, stopped the server, cleaned up
        "swept": False,
        "directory_gone": True,
    }


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="uses Linux process control")
async def test_a_killed_supervisor_takes_the_server_down_and_the_next_start_sweeps() -> None:
    report = await run_drill("supervisor-killed")
    assert report == {
        "postmaster_gone": True,  # parent-death signal
        "directory_left": True,
        "swept": True,
        "directory_gone": True,
    }
