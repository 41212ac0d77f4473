"""Installations, OAuth states and the deletion of a tenant's data, on SQLite and PostgreSQL."""

from __future__ import annotations

from typing import Any

from core.conversations import StoredPart
from core.options import Options
from core.store import Installation, JobResult, NewJob, Store

DAY = 86400.0


class Clock:
    def __init__(self, now: float = 1_700_000_000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def _installation(team: str, token: str, **more: Any) -> Installation:
    return Installation(
        "slack", team, token, "commands,chat:write", team_id=team, bot_user_id="U0BOT", **more
    )


async def _job(store: Store, tenant: str, key: str, *, finish: bool = True) -> str:
    job, _ = await store.create_job(
        NewJob(
            id=f"job-{key}",
            idempotency_key=key,
            kind="generate",
            platform="slack",
            tenant=tenant,
            user_id="U1",
            prompt="a fox",
            options=Options(model="gemini-3.1-flash-image-preview"),
            target={"channel": "C1"},
        ),
        thread_key=f"C1:{key}",
        parent_turn_id=None,
        user_parts=[StoredPart(text="a fox")],
        user_images=[],
        owner="me",
        lease_seconds=60,
    )
    await store.link_message(job, f"C1:{key}.1")
    if finish:
        assert await store.claim(job.id, "me", 60)
        await store.finish(job.id, "me", JobResult(state="failed", api_calls=0))
    return job.id


async def test_an_installation_is_kept_found_and_replaced_by_a_reinstall(
    database_url: str,
) -> None:
    clock = Clock()
    store = await Store.open(database_url, clock)
    try:
        first = _installation(
            "T1",
            "xoxb-first",
            enterprise_id="E1",
            bot_refresh_token="xoxe-1-r",
            bot_token_expires_at=clock.now + 3600,
            details={"team_name": "Acme", "is_enterprise_install": False},
        )
        await store.save_installation(first)
        found = await store.installation("slack", enterprise_id="E1", team_id="T1")
        assert found == Installation(**{**first.__dict__, "installed_at": clock.now})
        assert await store.installation_for("slack", "T1") == found
        assert await store.installation("slack", enterprise_id=None, team_id="T1") is None
        assert await store.installation_for("discord", "T1") is None

        clock.now += DAY
        await store.save_installation(
            _installation("T1", "xoxb-second", enterprise_id="E1", details={"team_name": "Acme2"})
        )
        again = await store.installation_for("slack", "T1")
        assert again is not None
        assert (again.bot_token, again.bot_refresh_token, again.details) == (
            "xoxb-second",
            None,
            {"team_name": "Acme2"},
        )
        assert again.installed_at == clock.now - DAY  # first installed then
        assert "xoxb" not in repr(again)  # tokens stay out of reprs (and so out of logs)

        # an org-wide installation has no team: it is found by the org alone
        org = Installation("slack", "E9", "xoxb-org", enterprise_id="E9")
        await store.save_installation(org)
        assert await store.installation("slack", enterprise_id="E9", team_id=None) is not None
        assert await store.installation_for("slack", "E9") is not None
    finally:
        await store.close()


async def test_an_oauth_state_is_good_once_and_only_until_it_expires(database_url: str) -> None:
    clock = Clock()
    store = await Store.open(database_url, clock)
    try:
        await store.issue_oauth_state("s1", clock.now + 600)
        await store.issue_oauth_state("s2", clock.now + 600)
        assert await store.consume_oauth_state("s1") is True
        assert await store.consume_oauth_state("s1") is False
        assert await store.consume_oauth_state("never-issued") is False
        clock.now += 601
        assert await store.consume_oauth_state("s2") is False
        # issuing clears what expired
        await store.issue_oauth_state("s3", clock.now + 600)
        rows = await store.database.fetch("SELECT state FROM oauth_states ORDER BY state")
        assert [r["state"] for r in rows] == ["s3"]
    finally:
        await store.close()


async def test_a_removed_tenants_data_goes_when_due_and_only_its_own(database_url: str) -> None:
    clock = Clock()
    store = await Store.open(database_url, clock)
    try:
        for team in ("T1", "T2"):
            await store.save_installation(_installation(team, f"xoxb-{team}"))
            await _job(store, team, f"{team}-a")
            await store.set_user_defaults("slack", team, "U1", Options(size="2K"))
        await store.set_user_defaults("discord", "T1", "U1", Options(size="2K"))

        removed = await store.remove_installation(
            "slack", enterprise_id=None, team_id="T1", delete_data_at=clock.now + 30 * DAY
        )
        assert removed is True
        assert await store.installation_for("slack", "T1") is None
        # a second notice (tokens_revoked after app_uninstalled) keeps the first date
        assert not await store.remove_installation(
            "slack", enterprise_id=None, team_id="T1", delete_data_at=clock.now + 99 * DAY
        )
        assert await store.tenant_deletion("slack", "T1") == clock.now + 30 * DAY

        assert await store.forget_tenants(clock.now + 29 * DAY) == 0
        # a job still queued holds the deletion back until it has ended
        busy = await _job(store, "T1", "T1-b", finish=False)
        assert await store.forget_tenants(clock.now + 31 * DAY) == 0
        assert await store.claim(busy, "me", 60)
        await store.finish(busy, "me", JobResult(state="failed", api_calls=0))

        gone = await store.forget_tenants(clock.now + 31 * DAY)
        assert gone > 0
        assert await store.tenant_deletion("slack", "T1") is None
        for table in ("jobs", "conversations", "message_links", "user_defaults"):
            rows = await store.database.fetch(
                f"SELECT platform, tenant FROM {table} ORDER BY platform"
            )
            left = {(r["platform"], r["tenant"]) for r in rows}
            assert ("slack", "T1") not in left, table
            assert ("slack", "T2") in left, table
        assert await store.user_defaults("discord", "T1", "U1") == Options(size="2K")
        assert (await store.counts())["turns"] == 1  # T2's
    finally:
        await store.close()


async def test_installing_again_calls_off_the_deletion(database_url: str) -> None:
    clock = Clock()
    store = await Store.open(database_url, clock)
    try:
        await store.save_installation(_installation("T1", "xoxb-1"))
        await _job(store, "T1", "a")
        await store.remove_installation(
            "slack", enterprise_id=None, team_id="T1", delete_data_at=clock.now + DAY
        )
        await store.save_installation(_installation("T1", "xoxb-2"))
        assert await store.tenant_deletion("slack", "T1") is None
        assert await store.forget_tenants(clock.now + 2 * DAY) == 0
        assert (await store.counts())["jobs"] == 1
    finally:
        await store.close()
