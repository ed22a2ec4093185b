"""The credit claim window (DESIGN.md §5).

A claim may be filed after the 5th business day of the calendar month that follows the service
month's last day, and no later than 60 calendar days after that last day.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import date, timedelta
from functools import lru_cache

import holidays

WorkingDay = Callable[[date], bool]


@dataclass(frozen=True, slots=True)
class ClaimWindow:
    opens: date  # first day a claim may be filed
    closes: date  # last day a claim may be filed


def nth_working_day(year: int, month: int, n: int, is_working_day: WorkingDay) -> date:
    day = date(year, month, 1)
    seen = 0
    while True:
        if is_working_day(day):
            seen += 1
            if seen == n:
                return day
        day += timedelta(days=1)
        if day.month != month:
            raise ValueError(f"{year:04d}-{month:02d} has fewer than {n} business days")


def claim_window(
    last_day: date,
    is_working_day: WorkingDay,
    *,
    business_days: int = 5,
    close_after_days: int = 60,
) -> ClaimWindow:
    following = (last_day.replace(day=28) + timedelta(days=4)).replace(day=1)
    nth = nth_working_day(following.year, following.month, business_days, is_working_day)
    return ClaimWindow(
        opens=nth + timedelta(days=1), closes=last_day + timedelta(days=close_after_days)
    )


@lru_cache(maxsize=16)
def working_days_of(country: str) -> WorkingDay:
    """Business days of a country as the `holidays` library keeps them, including substituted
    weekend workdays (China moves weekends around its Golden Weeks)."""
    calendar = holidays.country_holidays(country)
    return calendar.is_working_day


def supported_countries() -> set[str]:
    return set(holidays.list_supported_countries())
