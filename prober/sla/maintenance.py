"""Declared maintenance windows (SLA 4.9/4.10): one-off and recurring.

A minute is in maintenance only when it lies wholly inside a window: a minute that is partly
outside is measured, the side that keeps the customer's evidence.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from zoneinfo import ZoneInfo


@dataclass(frozen=True, slots=True)
class OneOffWindow:
    start: datetime  # aware
    end: datetime  # aware, exclusive
    reason: str = ""

    def covers(self, minute: int) -> bool:
        begin = minute * 60
        return self.start.timestamp() <= begin and begin + 60 <= self.end.timestamp()


@dataclass(frozen=True, slots=True)
class RecurringWindow:
    """Every listed weekday (0 = Monday) at a local time, for a duration."""

    weekdays: frozenset[int]
    at: time
    duration: timedelta
    tz: ZoneInfo
    reason: str = ""

    def occurrences_around(self, day: date) -> Iterable[tuple[datetime, datetime]]:
        reach = self.duration.days + 1
        for back in range(reach + 1):
            start_day = day - timedelta(days=back)
            if start_day.weekday() in self.weekdays:
                start = datetime.combine(start_day, self.at, tzinfo=self.tz).astimezone(UTC)
                yield start, start + self.duration

    def covers(self, minute: int) -> bool:
        begin = datetime.fromtimestamp(minute * 60, tz=UTC)
        end = begin + timedelta(minutes=1)
        local_day = begin.astimezone(self.tz).date()
        return any(s <= begin and end <= e for s, e in self.occurrences_around(local_day))


Window = OneOffWindow | RecurringWindow


def in_maintenance(minute: int, windows: Sequence[Window]) -> bool:
    return any(w.covers(minute) for w in windows)
