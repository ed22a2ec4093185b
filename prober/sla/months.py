"""Service months in the contract's timezone (DESIGN.md §5), of three kinds.

Providers define the month differently (Tencent Cloud's own products use all three):

- `anchored` (IM's rule): month k starts at local midnight on the purchase day of the k-th
  calendar month after the purchase; a day the month lacks (29-31) becomes that month's last
  day.
- `calendar`: month k is the k-th calendar month after the purchase's, from local midnight of
  its 1st to that of the next 1st; the first is the whole month the purchase falls in.
- `calendar_from_purchase`: calendar months, except that the first starts at the purchase date
  and so is short; nothing before the purchase belongs to any month.

Each month ends where the next one starts, so the months tile time with no gap or overlap,
whatever the DST rules.
"""

from __future__ import annotations

import calendar
import functools
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from zoneinfo import ZoneInfo


def epoch_minute(instant: datetime) -> int:
    """The UTC minute an aware instant falls in, as whole minutes since the epoch."""
    return int(instant.timestamp() // 60)


def minute_start(minute: int) -> datetime:
    return datetime.fromtimestamp(minute * 60, tz=UTC)


@functools.lru_cache(maxsize=8192)  # pages and reports name the same hours again and again
def minute_iso(minute: int) -> str:
    """An epoch minute as ISO-8601 UTC, e.g. 2026-03-17T00:05:00Z (the ledger's CSV form),
    always with a 4-digit year (strftime's %Y drops the zeros of year 1 on Linux, which the
    parser then refuses)."""
    t = minute_start(minute)
    return f"{t.year:04d}-{t.month:02d}-{t.day:02d}T{t.hour:02d}:{t.minute:02d}:00Z"


def local_midnight(day: date, tz: ZoneInfo) -> datetime:
    """The first instant of a local calendar day.

    Where midnight does not exist (a DST gap at 00:00), zoneinfo's fold=0 reading lands on the
    instant the day really begins; where it exists twice, fold=0 is the first, again the
    beginning of the day.
    """
    return datetime.combine(day, time(0), tzinfo=tz).astimezone(UTC).astimezone(tz)


@dataclass(frozen=True, slots=True)
class ServiceMonth:
    index: int  # 0 = the first month, the one that holds the anchor date
    start: datetime  # aware, in the contract's timezone
    end: datetime  # exclusive

    @property
    def start_minute(self) -> int:
        return epoch_minute(self.start)

    @property
    def end_minute(self) -> int:
        return epoch_minute(self.end)

    @property
    def minutes(self) -> int:
        return self.end_minute - self.start_minute

    @property
    def last_day(self) -> date:
        """The last local calendar day of the month (the end is midnight of the next day)."""
        return self.end.date() - timedelta(days=1)

    def elapsed_minutes(self, now: datetime) -> int:
        """Minutes of the month that have fully passed at `now` (all of them once it ended)."""
        return max(0, min(epoch_minute(now), self.end_minute) - self.start_minute)

    def contains_minute(self, minute: int) -> bool:
        return self.start_minute <= minute < self.end_minute


def _add_months(year: int, month: int, k: int) -> tuple[int, int]:
    serial = year * 12 + (month - 1) + k
    return serial // 12, serial % 12 + 1


class MonthKind(StrEnum):
    """How a contract cuts time into service months (`sla.service_month`)."""

    ANCHORED = "anchored"
    CALENDAR = "calendar"
    CALENDAR_FROM_PURCHASE = "calendar_from_purchase"


@dataclass(frozen=True, slots=True, init=False, eq=False)
class ServiceCalendar:
    """The service months of one contract.

    Two calendars are equal when they cut time the same way (same anchor, timezone and kind),
    so a reload that changes any of the three is noticed by comparing them."""

    anchor: date  # the purchase date
    tz: ZoneInfo
    kind: MonthKind = MonthKind.ANCHORED

    def __init__(
        self, anchor: date, tz: ZoneInfo | str, kind: MonthKind | str = MonthKind.ANCHORED
    ) -> None:
        object.__setattr__(self, "anchor", anchor)
        object.__setattr__(self, "tz", tz if isinstance(tz, ZoneInfo) else ZoneInfo(tz))
        object.__setattr__(self, "kind", MonthKind(kind))

    @property
    def key(self) -> tuple[date, str, MonthKind]:
        # by zone name: ZoneInfo compares by identity, and a no_cache() copy is the same zone
        return (self.anchor, str(self.tz), self.kind)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ServiceCalendar):
            return NotImplemented
        return self.key == other.key

    def __hash__(self) -> int:
        return hash(self.key)

    @property
    def first_day(self) -> date:
        """The local day the first service month starts on."""
        return self.start_day(0)

    def start_day(self, index: int) -> date:
        year, month = _add_months(self.anchor.year, self.anchor.month, index)
        if self.kind is MonthKind.ANCHORED:
            last = calendar.monthrange(year, month)[1]
            return date(year, month, min(self.anchor.day, last))
        if self.kind is MonthKind.CALENDAR_FROM_PURCHASE and index == 0:
            return self.anchor
        return date(year, month, 1)

    def month(self, index: int) -> ServiceMonth:
        if index < 0:
            raise ValueError("service months start at the anchor date")
        return ServiceMonth(
            index=index,
            start=local_midnight(self.start_day(index), self.tz),
            end=local_midnight(self.start_day(index + 1), self.tz),
        )

    def month_containing(self, instant: datetime) -> ServiceMonth | None:
        """The service month an aware instant falls in; None before the first month."""
        if instant.tzinfo is None:
            raise ValueError("instant must be timezone-aware")
        local = instant.astimezone(self.tz)
        index = (local.year - self.anchor.year) * 12 + (local.month - self.anchor.month)
        # Compare as timestamps: aware datetimes sharing a tzinfo compare by wall clock.
        moment = instant.timestamp()
        for candidate in (index, index - 1, index + 1):
            if candidate < 0:
                continue
            month = self.month(candidate)
            if month.start.timestamp() <= moment < month.end.timestamp():
                return month
        return None

    def month_starting_in(self, year: int, month: int) -> ServiceMonth:
        """The service month that starts in a calendar month (each has exactly one, from the
        anchor's month on, whatever the kind)."""
        index = (year - self.anchor.year) * 12 + (month - self.anchor.month)
        if index < 0:
            raise ValueError(
                f"{year:04d}-{month:02d} is before the service month anchor {self.anchor}"
            )
        return self.month(index)
