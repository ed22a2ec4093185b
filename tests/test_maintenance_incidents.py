"""Maintenance windows (wholly covered minutes only) and incident runs."""

import itertools
from datetime import UTC, datetime, time, timedelta
from zoneinfo import ZoneInfo

from hypothesis import given
from hypothesis import strategies as st

from prober.sla import OneOffWindow, RecurringWindow, epoch_minute, find_incidents, in_maintenance

SHANGHAI = ZoneInfo("Asia/Shanghai")


def minute(text: str, tz: ZoneInfo = SHANGHAI) -> int:
    return epoch_minute(datetime.fromisoformat(text).replace(tzinfo=tz))


def test_one_off_window_covers_its_whole_minutes_only() -> None:
    window = OneOffWindow(
        datetime(2026, 12, 1, 2, 0, tzinfo=SHANGHAI), datetime(2026, 12, 1, 4, 0, tzinfo=SHANGHAI)
    )
    covered = [
        m for m in range(minute("2026-12-01T01:00"), minute("2026-12-01T05:00")) if window.covers(m)
    ]
    assert len(covered) == 120
    assert covered[0] == minute("2026-12-01T02:00")
    assert covered[-1] == minute("2026-12-01T03:59")
    ragged = OneOffWindow(
        datetime(2026, 12, 1, 2, 0, 30, tzinfo=SHANGHAI),
        datetime(2026, 12, 1, 2, 3, 30, tzinfo=SHANGHAI),
    )
    assert [
        m - minute("2026-12-01T02:00")
        for m in range(minute("2026-12-01T02:00"), minute("2026-12-01T02:05"))
        if ragged.covers(m)
    ] == [1, 2]


def test_recurring_weekly_window_in_local_time_and_across_midnight() -> None:
    window = RecurringWindow(frozenset({6}), time(23, 0), timedelta(hours=2), SHANGHAI)
    sunday_late = minute("2026-11-29T23:30")  # a Sunday
    monday_early = minute("2026-11-30T00:59")
    assert window.covers(sunday_late) and window.covers(monday_early)
    assert not window.covers(minute("2026-11-30T01:00"))
    assert not window.covers(minute("2026-11-28T23:30"))  # Saturday
    assert in_maintenance(sunday_late, [window])
    assert not in_maintenance(sunday_late, [])


def test_incidents_are_runs_of_consecutive_minutes() -> None:
    runs = find_incidents([5, 1, 2, 3, 10, 11])
    assert [(r.start_minute, r.end_minute, r.minutes) for r in runs] == [
        (1, 4, 3),
        (5, 6, 1),
        (10, 12, 2),
    ]
    assert find_incidents([]) == []


@given(st.sets(st.integers(0, 500)))
def test_incidents_partition_the_failed_minutes(failed: set[int]) -> None:
    runs = find_incidents(failed)
    covered = [m for r in runs for m in range(r.start_minute, r.end_minute)]
    assert sorted(covered) == sorted(failed)
    for a, b in itertools.pairwise(runs):
        assert b.start_minute > a.end_minute  # separated by at least one good minute


def test_epoch_minute_is_utc_floor() -> None:
    assert epoch_minute(datetime(1970, 1, 1, 0, 1, 59, tzinfo=UTC)) == 1
