"""`imagebot migrate-db --to URL`: the SQLite database copied into PostgreSQL, ids kept."""

from __future__ import annotations

import asyncio
import hashlib
import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from bots.cli import main
from core.conversations import StoredPart, Turn
from core.jobs import Job
from core.options import Options
from core.store import MIGRATIONS, Installation, JobResult, NewImage, NewJob, Store, image_hash
from core.store.copy import TABLES, copy_sqlite_to_postgres

OWNER = "bot-1"


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        self.now += 0.25  # every event a little later than the one before
        return self.now


def _job(key: str) -> NewJob:
    return NewJob(
        id=f"job-{key}",
        idempotency_key=key,
        kind="generate",
        platform="slack",
        tenant="T1",
        user_id="U1",
        prompt=f"prompt {key}",
        options=Options(
            model="gemini-3.1-flash-image-preview", size="1K", aspect_ratio="16:9", temperature=0.4
        ),
        target={"channel": "C1", "thread_ts": "1700000000.000100"},
    )


def _image(seed: int, size: int = 150_000) -> NewImage:
    # bytes that do not compress, as a real image's
    data = b"".join(hashlib.sha256(f"{seed}-{i}".encode()).digest() for i in range(size // 32))
    return NewImage(data, "image/png", 64 + seed, 48, image_hash(data))


async def _new(
    store: Store,
    key: str,
    thread: str,
    parent: int | None,
    images: Sequence[NewImage] = (),
    *,
    reroll: bool = False,
) -> Job:
    parts = [StoredPart(text=f"prompt {key}")] + [
        StoredPart(image_sha256=i.sha256, mime_type=i.mime_type) for i in images
    ]
    job, created = await store.create_job(
        _job(key),
        thread_key=thread,
        parent_turn_id=parent,
        user_parts=None if reroll else parts,
        user_images=images,
        owner=OWNER,
        lease_seconds=60,
    )
    assert created
    return job


async def _succeed(store: Store, job: Job, image: NewImage) -> Job:
    assert await store.claim(job.id, OWNER, 60)
    await store.count_api_call(job.id)
    done = await store.finish(
        job.id,
        OWNER,
        JobResult(
            state="succeeded",
            api_calls=1,
            parts=(
                StoredPart(text="here it is", thought_signature="c2lnbmF0dXJl"),
                StoredPart(image_sha256=image.sha256, mime_type=image.mime_type),
            ),
            images=(image,),
            model_id="gemini-3.1-flash-image-preview",
            prompt_tokens=12,
            output_tokens=1290,
            total_tokens=1302,
            cost_usd=0.039,
        ),
    )
    assert done is not None
    return done


@dataclass
class Content:
    """What the SQLite database holds, read back through the store before the copy."""

    jobs: dict[str, Job] = field(default_factory=dict)
    paths: dict[int, list[Turn]] = field(default_factory=dict)
    image_hashes: list[str] = field(default_factory=list)
    links: dict[str, list[str]] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    tables: dict[str, list[tuple[Any, ...]]] = field(default_factory=dict)
    jobs_high_water: int = 0


async def _fill(path: Path) -> Content:
    """A database with real history: a forked conversation, a re-roll, jobs queued, running,
    failed and delivered (with message links), a cleared conversation, saved defaults and a
    held request."""
    clock = Clock(1_700_000_000.0)
    store = await Store.open(path, clock)
    photo, lighthouse, night = _image(1), _image(2), _image(3, 400_000)

    first = await _new(store, "k1", "C1:1", None, [photo])
    first = await _succeed(store, first, lighthouse)
    await store.record_delivery(first, ["C1:1.1", "C1:1.2"])
    assert first.model_turn_id is not None
    # "now make it night-time", delivered too
    second = await _succeed(store, await _new(store, "k2", "C1:1", first.model_turn_id), night)
    await store.record_delivery(second, ["C1:1.3"])
    # a reply to the first image again: a fork beside k2, which failed
    fork = await _new(store, "k3", "C1:1", first.model_turn_id)
    assert await store.claim(fork.id, OWNER, 60)
    await store.finish(
        fork.id,
        OWNER,
        JobResult(state="failed", api_calls=1, error_message="The image API refused it."),
    )
    # a re-roll of the first request, running
    reroll = await _new(store, "k4", "C1:1", first.user_turn_id, reroll=True)
    assert await store.claim(reroll.id, OWNER, 60)
    # another thread: queued, with its progress message linked
    queued = await _new(store, "k5", "C2:9", None)
    await store.link_message(queued, "C2:9.1")
    # an old conversation retention cleared: its job goes, SQLite's seq high-water stays
    clock.now = 1_600_000_000.0
    old = await _succeed(store, await _new(store, "k6", "C3:1", None), _image(4, 1000))
    clock.now = 1_700_001_000.0
    assert await store.forget(conversations_before=1_650_000_000.0, images_before=None) > 0
    assert await store.job(old.id) is None

    await store.set_user_defaults(
        "slack", "T1", "U1", Options(aspect_ratio="3:2", size="2K", text=True)
    )
    await store.set_user_defaults("discord", "G1", "U2", Options(model="pro"))
    await store.set_shared_defaults("slack", "T1", None, Options(size="2K"), "U1")
    await store.set_shared_defaults("slack", "T1", "C3", Options(n=2), "U1")
    assert await store.hold("slack", "held-1", {"text": "a cat", "user": "U3"}, OWNER, 60)
    # a workspace that installed the app, and one that left it, its data due to go
    await store.save_installation(
        Installation("slack", "T1", "xoxb-t1", "commands", team_id="T1", details={"a": 1})
    )
    await store.remove_installation(
        "slack", enterprise_id=None, team_id="T9", delete_data_at=1_800_000_000.0
    )

    content = Content(jobs_high_water=old.seq)
    for job_id in ("job-k1", "job-k2", "job-k3", "job-k4", "job-k5"):
        job = await store.job(job_id)
        assert job is not None
        content.jobs[job_id] = job
        content.links[job_id] = await store.message_keys(job_id)
    assert {j.state for j in content.jobs.values()} == {"succeeded", "failed", "running", "queued"}
    assert content.links["job-k1"] == ["C1:1.1", "C1:1.2"]
    for job in content.jobs.values():
        for turn_id in (job.user_turn_id, job.model_turn_id):
            if turn_id is not None:
                content.paths[turn_id] = await store.path_to(turn_id)
    assert len(content.paths[second.model_turn_id or 0]) == 4  # photo, image, night, result
    content.image_hashes = [photo.sha256, lighthouse.sha256, night.sha256]
    content.tables = await _dump(store)
    content.counts = {table: len(rows) for table, rows in content.tables.items()}
    assert all(content.counts.values())
    await store.close()
    return content


async def _dump(store: Store) -> dict[str, list[tuple[Any, ...]]]:
    """Every row of every copied table, in an order both databases agree on."""
    return {
        table: sorted(
            (tuple(row) for row in await store.database.fetch(f"SELECT * FROM {table}")), key=repr
        )
        for table in TABLES
    }


def _digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


async def _migrate(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], database_url: str, to: str
) -> tuple[int, str, str]:
    monkeypatch.setenv("DATABASE_URL", database_url)
    code = await asyncio.to_thread(main, ["migrate-db", "--to", to])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.fixture(autouse=True)
def _away_from_env_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The command reads `.env` from where it runs: here, a folder without one."""
    monkeypatch.chdir(tmp_path)


async def test_migrate_db_copies_everything_with_its_ids_and_new_rows_do_not_collide(
    tmp_path: Path,
    postgres_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    source = tmp_path / "imagebot.sqlite3"
    content = await _fill(source)
    before = _digest(source)

    code, out, err = await _migrate(monkeypatch, capsys, f"sqlite:///{source}", postgres_url)

    assert code == 0, err
    assert err == ""
    lines = out.splitlines()
    for table in TABLES:
        assert any(
            line.strip().startswith(f"{table}: {content.counts[table]:,} rows") for line in lines
        )
    assert "heartbeats" not in out
    assert any(line.startswith("Verified: every table holds as many rows") for line in lines)
    assert lines[-1].startswith("Copied ")
    assert f"jobs {content.counts['jobs']}," in lines[-1]
    assert "postgres@" not in out  # the URL is shown without its user (or password)
    assert _digest(source) == before  # the source was only read

    store = await Store.open(postgres_url)
    try:
        assert await store.database.schema_version() == len(MIGRATIONS)
        assert await _dump(store) == content.tables
        for job_id, job in content.jobs.items():
            assert await store.job(job_id) == job
            assert await store.message_keys(job_id) == content.links[job_id]
        for turn_id, path in content.paths.items():
            assert await store.path_to(turn_id) == path
        images = await store.images(content.image_hashes)
        assert sorted(images) == sorted(content.image_hashes)
        for sha, image in images.items():
            assert image_hash(image.data) == sha
        assert len(images[content.image_hashes[2]].data) == 400_000 // 32 * 32
        first = content.jobs["job-k1"]
        linked = await store.job_for_message("slack", "T1", "C1:1.2")
        assert linked == first
        assert (await store.turn_for_message("slack", "T1", "C1:1.1")) == content.paths[
            first.model_turn_id or 0
        ][-1]
        assert await store.user_defaults("slack", "T1", "U1") == Options(
            aspect_ratio="3:2", size="2K", text=True
        )
        assert await store.user_defaults("discord", "G1", "U2") == Options(model="pro")
        conversation = await store.conversation("slack", "T1", "C3:1")
        assert conversation is not None and conversation[1] is not None  # still cleared
        # the held request is still there, taken over once its owner's lease runs out
        store._clock = lambda: 1_800_000_000.0
        [held] = await store.take_over_held(["slack"], "bot-2", 60)
        assert held == {"text": "a cat", "user": "U3", "key": "held-1"}

        # new rows get fresh ids: past every copied one, and past SQLite's seq high-water
        in_old_thread = await _new(store, "k7", "C1:1", content.jobs["job-k2"].model_turn_id)
        in_new_thread = await _new(store, "k8", "C9:1", None)
        highest_turn = max(content.paths)
        assert (
            in_old_thread.seq > content.jobs_high_water > max(j.seq for j in content.jobs.values())
        )
        assert in_new_thread.seq > in_old_thread.seq
        assert in_old_thread.user_turn_id > highest_turn
        assert in_old_thread.conversation_id == content.jobs["job-k1"].conversation_id
        assert in_new_thread.conversation_id > max(
            row[0] for row in content.tables["conversations"]
        )
        path = await store.path_to(in_old_thread.user_turn_id)
        assert path[:-1] == content.paths[content.jobs["job-k2"].model_turn_id or 0]
    finally:
        await store.close()


async def test_a_second_run_refuses_and_writes_nothing(
    tmp_path: Path,
    postgres_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    await _fill(tmp_path / "imagebot.sqlite3")
    relative = "sqlite:///imagebot.sqlite3"  # as the default is: from where the bot runs
    code, _, err = await _migrate(monkeypatch, capsys, relative, postgres_url)
    assert code == 0, err
    store = await Store.open(postgres_url)
    try:
        after_first = await _dump(store)
        sequences = await store.database.fetch(
            "SELECT sequencename, last_value FROM pg_sequences ORDER BY sequencename"
        )

        code, out, err = await _migrate(monkeypatch, capsys, relative, postgres_url)

        assert code == 1
        assert out == ""
        [line] = err.splitlines()
        assert "already holds imagebot data" in line and "nothing was copied" in line
        assert await _dump(store) == after_first
        assert (
            await store.database.fetch(
                "SELECT sequencename, last_value FROM pg_sequences ORDER BY sequencename"
            )
            == sequences
        )
    finally:
        await store.close()


async def test_a_failure_half_way_leaves_the_target_empty(
    tmp_path: Path,
    postgres_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    source = tmp_path / "imagebot.sqlite3"
    await _fill(source)
    with sqlite3.connect(source) as raw:  # SQLite keeps what PostgreSQL cannot take
        raw.execute("UPDATE jobs SET attempts = 'many' WHERE id = 'job-k5'")
    raw.close()

    code, _, err = await _migrate(monkeypatch, capsys, f"sqlite:///{source}", postgres_url)

    assert code == 1
    [line] = err.splitlines()
    assert "stopped at table jobs after 0 rows" in line and "nothing was kept" in line
    assert "the row with seq 5 holds 'many' in attempts, which is bigint here" in line
    store = await Store.open(postgres_url)
    try:
        assert set(map(len, (await _dump(store)).values())) == {0}
    finally:
        await store.close()
    # and once the row is fixed, the same target takes the copy
    with sqlite3.connect(source) as raw:
        raw.execute("UPDATE jobs SET attempts = 1 WHERE id = 'job-k5'")
    raw.close()
    code, _, err = await _migrate(monkeypatch, capsys, f"sqlite:///{source}", postgres_url)
    assert code == 0, err


async def test_copies_in_small_batches_keep_parents_before_children(
    tmp_path: Path, postgres_url: str
) -> None:
    source = tmp_path / "imagebot.sqlite3"
    content = await _fill(source)
    lines: list[str] = []

    # a batch of two rows at most, and about one image: many batches per table
    report = await copy_sqlite_to_postgres(
        source, postgres_url, report=lines.append, batch_rows=2, batch_bytes=100_000
    )

    assert {t.table: t.rows for t in report.tables} == content.counts
    images = next(t for t in report.tables if t.table == "images")
    assert images.bytes > 700_000
    store = await Store.open(postgres_url)
    try:
        assert await _dump(store) == content.tables
    finally:
        await store.close()


async def test_a_postgresql_database_url_is_refused(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = await _migrate(monkeypatch, capsys, postgres_url, postgres_url)

    assert code == 1 and out == ""
    [line] = err.splitlines()
    assert line.startswith("imagebot: migrate-db copies a SQLite database into PostgreSQL")
    assert "set DATABASE_URL to the sqlite:/// URL" in line
    connection = await asyncpg.connect(postgres_url)
    try:  # not even the schema was made
        assert await connection.fetchval("SELECT to_regclass('jobs')") is None
    finally:
        await connection.close()


async def test_sources_it_cannot_copy_are_refused_in_one_sentence(
    tmp_path: Path,
    postgres_url: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    missing = tmp_path / "nothing-here.sqlite3"
    code, _, err = await _migrate(monkeypatch, capsys, f"sqlite:///{missing}", postgres_url)
    assert code == 1
    assert err.splitlines() == [
        f"imagebot: There is no SQLite database at {missing}: set "
        "DATABASE_URL to the sqlite:/// URL of the file to copy."
    ]
    assert not missing.exists()

    old = tmp_path / "old.sqlite3"
    with sqlite3.connect(old) as raw:
        raw.executescript(MIGRATIONS[0] + MIGRATIONS[1] + "PRAGMA user_version=2;")
    raw.close()
    before = _digest(old)
    code, _, err = await _migrate(monkeypatch, capsys, f"sqlite:///{old}", postgres_url)
    assert code == 1
    [line] = err.splitlines()
    assert f"{old} is at schema version 2, older than this imagebot's" in line
    assert _digest(old) == before

    notes = tmp_path / "notes.sqlite3"
    notes.write_bytes(b"not a database\n" * 400)
    code, _, err = await _migrate(monkeypatch, capsys, f"sqlite:///{notes}", postgres_url)
    assert code == 1
    [line] = err.splitlines()
    assert line.startswith(f"imagebot: {notes} cannot be read as a SQLite database")

    code, _, err = await _migrate(monkeypatch, capsys, f"sqlite:///{old}", "mysql://x/y")
    assert code == 1
    assert "--to must be a postgresql://" in err

    connection = await asyncpg.connect(postgres_url)
    try:  # none of them wrote to the target
        assert await connection.fetchval("SELECT to_regclass('jobs')") is None
    finally:
        await connection.close()


def test_the_help_says_to_stop_the_bot_first(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["migrate-db", "--help"])
    assert exit_.value.code == 0
    out = capsys.readouterr().out
    assert "Stop the bot first" in out and "--to URL" in out
