from __future__ import annotations

import asyncio
import sqlite3
import time
from pathlib import Path

import asyncpg

from core.conversations import StoredPart
from core.options import Options
from core.store import MIGRATIONS, JobResult, NewImage, NewJob, Store, image_hash
from core.store.jobs import JOBS_CHANNEL


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
    database_url: str,
) -> None:
    store = await Store.open(database_url)
    first, created = await _create(store, "same")
    before = await store.counts()
    again, created_again = await _create(store, "same")
    assert created and not created_again and again.id == first.id
    assert await store.counts() == before
    await store.close()


async def test_images_are_stored_once_by_content_hash(database_url: str) -> None:
    store = await Store.open(database_url)
    data = b"\x89PNG fake bytes"
    image = NewImage(data, "image/png", 2, 3, image_hash(data))
    await _create(store, "a", images=[image])
    await _create(store, "b", images=[image], thread="t2")
    assert (await store.counts())["images"] == 1
    found = await store.images([image_hash(image.data)])
    assert found[image_hash(image.data)].data == image.data
    await store.close()


async def test_path_to_walks_from_the_root_and_forks_share_their_ancestors(
    database_url: str,
) -> None:
    store = await Store.open(database_url)
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


async def test_finish_only_counts_for_the_owner_of_a_running_job(database_url: str) -> None:
    store = await Store.open(database_url)
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


async def test_a_dead_owners_jobs_are_taken_over_once_its_lease_runs_out(database_url: str) -> None:
    store = await Store.open(database_url)
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


async def test_usage_counts_images_and_cost_per_user_and_tenant(database_url: str) -> None:
    store = await Store.open(database_url)
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


async def test_user_defaults_round_trip(database_url: str) -> None:
    store = await Store.open(database_url)
    assert await store.user_defaults("test", "T1", "U1") == Options()
    await store.set_user_defaults("test", "T1", "U1", Options(model="pro", size="2K"))
    assert await store.user_defaults("test", "T1", "U1") == Options(model="pro", size="2K")
    assert await store.user_defaults("test", "T2", "U1") == Options()
    await store.close()


async def test_only_runs_that_reached_the_api_count_as_paid(database_url: str) -> None:
    store = await Store.open(database_url)
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


async def test_postgresql_is_migrated_to_the_same_version_and_keeps_data(postgres_url: str) -> None:
    store = await Store.open(postgres_url)
    await _create(store, "k1")
    await store.close()
    store = await Store.open(postgres_url)  # a second start finds nothing left to do
    try:
        assert (await store.counts())["jobs"] == 1
        assert await store.database.schema_version() == len(MIGRATIONS)
    finally:
        await store.close()


async def test_a_published_job_is_claimed_by_exactly_one_of_the_processes(
    postgres_url: str,
) -> None:
    stores = [await Store.open(postgres_url) for _ in range(3)]
    try:
        heard: list[int] = []
        all_heard = asyncio.Event()

        def hear(number: int) -> None:
            heard.append(number)
            if len(heard) == 4 * len(stores):
                all_heard.set()

        for number, store in enumerate(stores):
            await store.database.listen(JOBS_CHANNEL, lambda number=number: hear(number))
        jobs = [(await _create(stores[0], f"k{n}", owner="a"))[0] for n in range(4)]
        for job in jobs:
            assert await stores[0].publish(job.id, "a")
        async with asyncio.timeout(5):
            await all_heard.wait()  # every process hears of every job
        # every process asks at once, twice as often as there are jobs
        claims = await asyncio.gather(
            *(store.claim_next(f"p{n % 3}", ["test"], 30.0) for n, store in enumerate(stores * 2))
        )
        claimed = [job.id for job in claims if job is not None]
        assert sorted(claimed) == sorted(job.id for job in jobs)
        assert await stores[1].claim_next("p1", ["test"], 30.0) is None
        # a published job belongs to nobody: a lapsed lease does not hand it to anyone
        assert await stores[2].take_over_expired(["test"], "p2", 30.0) == []
    finally:
        for store in stores:
            await store.close()


async def test_a_claim_skips_a_row_another_process_holds_instead_of_waiting(
    postgres_url: str,
) -> None:
    first, second = await Store.open(postgres_url), await Store.open(postgres_url)
    try:
        older, _ = await _create(first, "older", owner="a")
        newer, _ = await _create(first, "newer", owner="a")
        for job in (older, newer):
            await first.publish(job.id, "a")
        async with first.database.transaction() as tx:
            # another process is in the middle of claiming the oldest job
            await tx.fetchrow("SELECT id FROM jobs WHERE id = ? FOR UPDATE", older.id)
            async with asyncio.timeout(5):
                taken = await second.claim_next("b", ["test"], 30.0)
        assert taken is not None and taken.id == newer.id
    finally:
        await first.close()
        await second.close()


async def test_on_sqlite_a_process_claims_only_its_own_jobs(tmp_path: Path) -> None:
    store = await Store.open(tmp_path / "s.db")
    try:
        mine, _ = await _create(store, "mine", owner="a")
        await _create(store, "theirs", owner="b")
        assert not await store.publish(mine.id, "a")  # no shared queue on one file
        taken = await store.claim_next("a", ["test"], 30.0)
        assert taken is not None and taken.id == mine.id
        assert await store.claim_next("a", ["test"], 30.0) is None
    finally:
        await store.close()


async def test_a_listener_cut_off_by_the_server_listens_again_and_wakes_once(
    postgres_url: str,
) -> None:
    listening, publishing = await Store.open(postgres_url), await Store.open(postgres_url)
    try:
        woken = asyncio.Event()
        await listening.database.listen(JOBS_CHANNEL, woken.set)
        admin = await asyncpg.connect(postgres_url)
        try:
            # a failover or restart drops every connection, the listener's among them
            await admin.execute(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = "
                "current_database() AND pid <> pg_backend_pid() AND query LIKE 'LISTEN%'"
            )
        finally:
            await admin.close()
        async with asyncio.timeout(10):
            await woken.wait()  # listening again: woken once for what it may have missed
        woken.clear()
        job, _ = await _create(publishing, "after", owner="a")
        assert await publishing.publish(job.id, "a")
        async with asyncio.timeout(5):
            await woken.wait()  # and hears what comes next
    finally:
        await listening.close()
        await publishing.close()


async def test_a_process_stopping_hands_its_queued_jobs_to_the_shared_queue_at_once(
    postgres_url: str,
) -> None:
    stopping, other = await Store.open(postgres_url), await Store.open(postgres_url)
    try:
        woken = asyncio.Event()
        await other.database.listen(JOBS_CHANNEL, woken.set)
        job, _ = await _create(stopping, "queued-here", owner="a")
        await stopping.release("a", shared=["test"])
        async with asyncio.timeout(5):
            await woken.wait()
        taken = await other.claim_next("b", ["test"], 30.0)
        assert taken is not None and taken.id == job.id
    finally:
        await stopping.close()
        await other.close()


async def test_a_burst_of_holds_is_written_together_and_each_key_held_once(
    database_url: str,
) -> None:
    store = await Store.open(database_url)
    try:
        stored, _ = await _create(store, "has-a-job")
        await store.hold("test", "theirs", {"n": 0}, "other", 30.0)
        answers = await asyncio.gather(
            *(store.hold("test", f"k{n}", {"n": n}, "me", 30.0) for n in range(600)),
            store.hold("test", "k7", {"n": "again"}, "me", 30.0),  # the same request twice
            store.hold("test", stored.idempotency_key, {}, "me", 30.0),  # stored already
            store.hold("test", "theirs", {}, "me", 30.0),  # another process holds it
        )
        count = await store.database.fetchrow("SELECT count(*) FROM intake WHERE owner = ?", "me")
    finally:
        await store.close()

    assert answers[:600] == [True] * 600
    assert answers[600:] == [False, False, False]
    assert count is not None and int(count[0]) == 600
