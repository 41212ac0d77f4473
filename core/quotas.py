"""Daily image limits, the monthly budget and concurrency caps, decided as pure functions."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from core.errors import UserFacingError


@dataclass(frozen=True)
class Limits:
    daily_per_user: int = 0  # 0: no limit
    daily_per_tenant: int = 0
    monthly_budget_usd: float = 0.0
    in_flight_per_user: int = 3
    in_flight_total: int = 0


@dataclass(frozen=True)
class Counts:
    """What has been used, read from the store at one moment."""

    user_today: int
    tenant_today: int
    tenant_month_cost: float
    user_in_flight: int
    total_in_flight: int


def day_start(now: datetime) -> datetime:
    return now.astimezone(UTC).replace(hour=0, minute=0, second=0, microsecond=0)


def month_start(now: datetime) -> datetime:
    return day_start(now).replace(day=1)


def next_month(now: datetime) -> datetime:
    start = month_start(now)
    return (start + timedelta(days=32)).replace(day=1)


def _in(delta: timedelta) -> str:
    minutes = max(1, int(delta.total_seconds() // 60))
    hours, minutes = divmod(minutes, 60)
    return f"{hours} h {minutes} min" if hours else f"{minutes} min"


def check(
    limits: Limits, counts: Counts, next_cost: float, now: datetime, scope: str, count: int = 1
) -> None:
    """Raise the sentence for the first limit this request would cross.

    `scope` names the tenant for people ("this workspace", "this server"); `count` is how
    many images the request makes, each priced `next_cost`.
    """
    fewer = " (ask for fewer with `--n`)" if count > 1 else ""
    if limits.in_flight_total and counts.total_in_flight + count > limits.in_flight_total:
        raise UserFacingError(
            f"imagebot is busy with {_images(counts.total_in_flight)} right now; "
            f"try again in a minute{fewer}."
        )
    if limits.in_flight_per_user and counts.user_in_flight + count > limits.in_flight_per_user:
        if count > 1 and count > limits.in_flight_per_user - counts.user_in_flight:
            raise UserFacingError(
                f"{_images(count).capitalize()} would put you over the "
                f"{limits.in_flight_per_user} you may have in progress at once (you have "
                f"{counts.user_in_flight}): ask for fewer with `--n`, or wait for one to finish."
            )
        raise UserFacingError(
            f"You already have {_images(counts.user_in_flight)} in progress (the limit is "
            f"{limits.in_flight_per_user}): wait for one to finish, then ask again."
        )
    tomorrow = day_start(now) + timedelta(days=1)
    if limits.daily_per_user and counts.user_today + count > limits.daily_per_user:
        if counts.user_today < limits.daily_per_user:
            left = limits.daily_per_user - counts.user_today
            raise UserFacingError(
                f"You have {_images(left)} left today, not enough for {count}: ask for fewer "
                f"with `--n`; the limit resets at 00:00 UTC, in {_in(tomorrow - now)}."
            )
        raise UserFacingError(
            f"You have made {_images(counts.user_today)} today, your daily limit; it resets at "
            f"00:00 UTC, in {_in(tomorrow - now)}."
        )
    if limits.daily_per_tenant and counts.tenant_today + count > limits.daily_per_tenant:
        if counts.tenant_today < limits.daily_per_tenant:
            left = limits.daily_per_tenant - counts.tenant_today
            raise UserFacingError(
                f"{scope.capitalize()} has {_images(left)} left today, not enough for {count}: "
                f"ask for fewer with `--n`; the limit resets at 00:00 UTC, in "
                f"{_in(tomorrow - now)}."
            )
        raise UserFacingError(
            f"{scope.capitalize()} has made {_images(counts.tenant_today)} today, its daily "
            f"limit; it resets at 00:00 UTC, in {_in(tomorrow - now)}."
        )
    budget = limits.monthly_budget_usd
    if budget and counts.tenant_month_cost + next_cost * count > budget:
        resets = next_month(now)
        what = f"${next_cost:.3f} image" if count == 1 else f"{count} images at ${next_cost:.3f}"
        raise UserFacingError(
            f"{scope.capitalize()} has used ${counts.tenant_month_cost:.2f} of its "
            f"${budget:.2f} monthly image budget, not enough for this "
            f"{what}; it resets on {resets:%B} 1 (UTC){fewer}."
        )


def _images(count: int) -> str:
    return f"{count} image" if count == 1 else f"{count} images"
