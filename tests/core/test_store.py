from __future__ import annotations

import sqlite3
import time
from pathlib import Path

from core.conversations import StoredPart
from core.options import Options
from core.store import MIGRATIONS, JobResult, NewImage, NewJob, Store, image_hash


def _job(key: str, *, user: str = "U1", tenant: str = "T1") -> NewJob:
    return NewJob(
        id=f"job-{key}",
        idempotency_key=key,
        kind="generate",
        platform="test",
        tenant=tenant,
        user_id=user,
        prompt="a fox",
        options=Options(model="gemini-3.1-flash-image-preview", size="1K"),
        target={"channel": "C1"},
    )


async def _create(
    store: Store,
    key: str,
    *,
    parent: int | None = None,
    thread: str = "t1",
    owner: str = "me",
    lease: float = 30.0,
    images: list[NewImage] | None = None,
):
    images = images or []
    parts = [StoredPart(text=f"prompt {key}")] + [
        StoredPart(image_sha256=image_hash(i.data), mime_type=i.mime_type) for i in images
    ]
    return await store.create_job(
        _job(key),
        thread_key=thread,
        parent_turn_id=parent,
        user_parts=parts,
        user_images=images,
        owner=owner,
        lease_seconds=lease,
    )


async def test_migrations_are_versioned_and_reopening_keeps_data(tmp_path: Path) -> None:
    path = tmp_path / "db" / "imagebot.sqlite3"
    store = await Store.open(path)
    await _create(store, "k1")
    await store.close()
    store = await Store.open(path)
    assert (await store.counts())["jobs"] == 1
    await store.close()
    with sqlite3.connect(path) as raw:
        assert raw.execute("PRAGMA user_version").fetchone()[0] == len(MIGRATIONS)


async def test_a_duplicate_idempotency_key_returns_the_first_job_and_writes_nothing(
    tmp_path: Path,
) -> None:
    store = await Store.open(tmp_path / "s.db")
    first, created = await _create(store, "same")
    before = await store.counts()
    again, created_again = await _create(store, "same")
    assert created and not created_again and again.id == first.id
    assert await store.counts() == before
    await store.close()


async def test_images_are_stored_once_by_content_hash(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "s.db")
    data = b"\x89PNG fake bytes"
    image = NewImage(data, "image/png", 2, 3, image_hash(data))
    await _create(store, "a", images=[image])
    await _create(store, "b", images=[image], thread="t2")
    assert (await store.counts())["images"] == 1
    found = await store.images([image_hash(image.data)])
    assert found[image_hash(image.data)].data == image.data
    await store.close()


async def test_path_to_walks_from_the_root_and_forks_share_their_ancestors(
    tmp_path: Path,
) -> None:
    store = await Store.open(tmp_path / "s.db")
    root, _ = await _create(store, "root")
    claimed = await store.claim(root.id, "me", 30)
    assert claimed is not None
    done = await store.finish(
        root.id,
        "me",
        JobResult("succeeded", api_calls=1, parts=[StoredPart(text="here")], model_id="m"),
    )
    assert done is not None and done.model_turn_id is not None
    left, _ = await _create(store, "left", parent=done.model_turn_id)
    right, _ = await _create(store, "right", parent=done.model_turn_id)
    left_path = [t.id for t in await store.path_to(left.user_turn_id)]
    right_path = [t.id for t in await store.path_to(right.user_turn_id)]
    assert left_path[:2] == right_path[:2] == [root.user_turn_id, done.model_turn_id]
    assert left_path[2] != right_path[2]
    await store.close()


async def test_finish_only_counts_for_the_owner_of_a_running_job(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "s.db")
    job, _ = await _create(store, "k")
    assert await store.claim(job.id, "someone-else", 30) is None
    assert await store.claim(job.id, "me", 30) is not None
    assert await store.claim(job.id, "me", 30) is None  # already running
    assert await store.finish(job.id, "thief", JobResult("failed", api_calls=1)) is None
    turns_before = (await store.counts())["turns"]
    for _ in range(2):  # counted as each call is sent, so a crash cannot lose one
        await store.count_api_call(job.id)
    finished = await store.finish(
        job.id, "me", JobResult("failed", api_calls=2, error_message="nope")
    )
    assert finished is not None and finished.state == "failed" and finished.api_calls == 2
    assert (await store.counts())["turns"] == turns_before  # no model turn for a failure
    await store.close()


async def test_a_dead_owners_jobs_are_taken_over_once_its_lease_runs_out(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "s.db")
    running, _ = await _create(store, "running", owner="dead", lease=0.0)
    await store.claim(running.id, "dead", 0.0)
    queued, _ = await _create(store, "queued", owner="dead", lease=0.0)
    alive, _ = await _create(store, "alive", owner="alive", lease=60.0)
    deadline = time.time() + 5
    taken = []
    while not taken and time.time() < deadline:
        taken = await store.take_over_expired(["test"], "me", 30)
    assert [(j.id, j.state) for j in taken] == [(running.id, "queued"), (queued.id, "queued")]
    assert (await store.job(alive.id)).state == "queued"  # type: ignore[union-attr]
    assert await store.take_over_expired(["test"], "me", 30) == []
    await store.close()


async def test_usage_counts_images_and_cost_per_user_and_tenant(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "s.db")
    for key, state in (("a", "succeeded"), ("b", "succeeded"), ("c", "failed")):
        job, _ = await _create(store, key)
        await store.claim(job.id, "me", 30)
        await store.finish(
            job.id,
            "me",
            JobResult(state, api_calls=1, cost_usd=0.067 if state == "succeeded" else 0.0),
        )
    summary = await store.usage("test", "T1", "U1", since=0)
    assert (summary.images, summary.failed) == (2, 1)
    assert round(summary.cost_usd, 3) == 0.134
    assert (await store.usage("test", "T2", None, since=0)).images == 0
    await store.close()


async def test_user_defaults_round_trip(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "s.db")
    assert await store.user_defaults("test", "T1", "U1") == Options()
    await store.set_user_defaults("test", "T1", "U1", Options(model="pro", size="2K"))
    assert await store.user_defaults("test", "T1", "U1") == Options(model="pro", size="2K")
    assert await store.user_defaults("test", "T2", "U1") == Options()
    await store.close()


async def test_only_runs_that_reached_the_api_count_as_paid(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "imagebot.sqlite3")
    try:
        job, _ = await _create(store, "k1", lease=0.0)
        # run 1: interrupted before any call; run 2: two calls (a retry); run 3: one call
        assert await store.claim(job.id, "me", 0.0)
        await store.take_over_expired(["test"], "other", 0.0)
        assert await store.claim(job.id, "other", 0.0)
        await store.count_api_call(job.id)
        await store.count_api_call(job.id)
        await store.take_over_expired(["test"], "third", 30.0)
        claimed = await store.claim(job.id, "third", 30.0)
        assert claimed is not None and claimed.paid_runs == 1
        await store.count_api_call(job.id)
        stored = await store.job(job.id)
    finally:
        await store.close()

    assert stored is not None
    assert (stored.attempts, stored.api_calls, stored.paid_runs) == (3, 3, 2)
