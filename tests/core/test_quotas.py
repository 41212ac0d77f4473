from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest

from core.errors import UserFacingError
from core.quotas import Counts, Limits, check, next_month
from tests.conftest import make_settings
from tests.core.service_harness import RecordingAdapter, request, running
from tests.fakes.gemini import FakeGemini

NOW = datetime(2026, 11, 23, 21, 40, tzinfo=UTC)


def counts(**values: float) -> Counts:
    base = {
        "user_today": 0,
        "tenant_today": 0,
        "tenant_month_cost": 0.0,
        "user_in_flight": 0,
        "total_in_flight": 0,
    }
    return Counts(**{**base, **values})  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("limits", "used", "message"),
    [
        (
            Limits(daily_per_user=5),
            counts(user_today=5),
            "You have made 5 images today, your daily limit; it resets at 00:00 UTC, "
            "in 2 h 20 min.",
        ),
        (
            Limits(daily_per_tenant=100),
            counts(tenant_today=100),
            "This workspace has made 100 images today, its daily limit; it resets at 00:00 UTC, "
            "in 2 h 20 min.",
        ),
        (
            Limits(monthly_budget_usd=10),
            counts(tenant_month_cost=9.95),
            "This workspace has used $9.95 of its $10.00 monthly image budget, not enough for this "
            "$0.067 image; it resets on December 1 (UTC).",
        ),
        (
            Limits(in_flight_per_user=2),
            counts(user_in_flight=2),
            "You already have 2 images in progress (the limit is 2): wait for one to finish, then "
            "ask again.",
        ),
        (
            Limits(in_flight_total=50),
            counts(total_in_flight=50),
            "imagebot is busy with 50 images right now; try again in a minute.",
        ),
    ],
)
def test_each_limit_says_which_it_is_and_when_it_resets(
    limits: Limits, used: Counts, message: str
) -> None:
    with pytest.raises(UserFacingError) as caught:
        check(limits, used, 0.067, NOW, "this workspace")
    assert caught.value.message == message


def test_under_every_limit_passes_and_zero_means_unlimited() -> None:
    check(
        Limits(daily_per_user=5, monthly_budget_usd=10),
        counts(user_today=4, tenant_month_cost=9.0),
        0.5,
        NOW,
        "this workspace",
    )
    check(
        Limits(in_flight_per_user=0),
        counts(user_today=10**6, user_in_flight=99),
        99.0,
        NOW,
        "this workspace",
    )


def test_the_budget_resets_on_the_first_of_next_month_even_in_december() -> None:
    assert next_month(datetime(2026, 12, 31, 23, 59, tzinfo=UTC)) == datetime(
        2027, 1, 1, tzinfo=UTC
    )


async def test_daily_limits_and_budget_are_enforced_and_shown_in_usage(
    tmp_path: Path, fake_gemini: FakeGemini
) -> None:
    adapter = RecordingAdapter()
    settings = make_settings(
        tmp_path, fake_gemini, IMAGEBOT_DAILY_IMAGES_PER_USER=2, IMAGEBOT_MONTHLY_BUDGET_USD=0.21
    )
    async with running(settings, adapter) as service:
        for key in ("a", "b"):
            submitted = await service.submit(request("a fox", key))
            await adapter.wait_for(submitted.job.id)
        with pytest.raises(UserFacingError, match="You have made 2 images today, your daily"):
            await service.submit(request("a fox", "c"))
        # another user of the same workspace meets the budget: 2 x $0.067 spent, a $0.134
        # pro image would pass $0.21, a $0.067 flash image still fits
        with pytest.raises(UserFacingError, match=r"has used \$0.13 of its \$0.21 monthly"):
            await service.submit(request("a fox --model pro", "d", user_id="U2"))
        third = await service.submit(request("a fox", "e", user_id="U2"))
        await adapter.wait_for(third.job.id)
        report = await service.usage_report("test", "T1", "U1")
    assert (report.user_today, report.user.images, report.tenant_today) == (2, 2, 3)
    assert report.tenant.cost_usd == pytest.approx(0.201)
    lines = report.lines()
    assert lines[0] == "You: 2 of 2 images today, 2 images this month (about $0.13)."
    assert lines[1] == (
        "This workspace: 3 images today, 3 images this month (about $0.20 of the $0.21 "
        "monthly budget)."
    )
    assert len(fake_gemini.requests) == 3
