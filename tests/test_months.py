"""Service months: anchors, short months, DST, and tiling for any anchor and timezone."""

import itertools
from datetime import UTC, date, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prober.sla import ServiceCalendar

SHANGHAI = ZoneInfo("Asia/Shanghai")


def local(text: str, tz: ZoneInfo) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=tz)


def test_the_sla_example_purchase_on_march_17() -> None:
    cal = ServiceCalendar(date(2026, 3, 17), SHANGHAI)
    first, second, third = cal.month(0), cal.month(1), cal.month(2)
    assert (first.start, first.end) == (
        local("2026-03-17", SHANGHAI),
        local("2026-04-17", SHANGHAI),
    )
    assert first.last_day == date(2026, 4, 16)
    assert second.last_day == date(2026, 5, 16)
    assert third.last_day == date(2026, 6, 16)
    assert first.minutes == 31 * 1440
    assert second.minutes == 30 * 1440
    assert first.start.utcoffset() == timedelta(hours=8)


def test_anchor_31_clamps_to_the_last_day_and_returns() -> None:
    cal = ServiceCalendar(date(2027, 1, 31), "UTC")
    starts = [cal.month(k).start.date() for k in range(5)]
    assert starts == [
        date(2027, 1, 31),
        date(2027, 2, 28),
        date(2027, 3, 31),
        date(2027, 4, 30),
        date(2027, 5, 31),
    ]
    assert cal.month(0).minutes == 28 * 1440  # Jan 31 -> Feb 28
    assert cal.month(1).minutes == 31 * 1440  # Feb 28 -> Mar 31


def test_february_of_a_leap_year_and_anchor_29() -> None:
    cal = ServiceCalendar(date(2027, 11, 29), "UTC")
    assert cal.month(3).start.date() == date(2028, 2, 29)
    assert cal.month(2).minutes == 31 * 1440  # Jan 29 -> Feb 29
    cal = ServiceCalendar(date(2026, 11, 29), "UTC")
    assert cal.month(3).start.date() == date(2027, 2, 28)
    assert cal.month(3).end.date() == date(2027, 3, 29)


def test_dst_months_gain_and_lose_an_hour() -> None:
    cal = ServiceCalendar(date(2026, 3, 1), "America/New_York")
    march = cal.month(0)  # clocks spring forward on 2026-03-08
    assert march.minutes == 31 * 1440 - 60
    november = cal.month(8)  # clocks fall back on 2026-11-01
    assert november.start.date() == date(2026, 11, 1)
    assert november.minutes == 30 * 1440 + 60


def test_month_starting_in_and_containing() -> None:
    cal = ServiceCalendar(date(2026, 3, 17), SHANGHAI)
    may = cal.month_starting_in(2026, 5)
    assert may.start == local("2026-05-17", SHANGHAI)
    # 2026-05-16 23:59 Shanghai is still in the April month; 16:00Z May 16 is local midnight
    assert cal.month_containing(datetime(2026, 5, 16, 15, 59, tzinfo=UTC)).index == 1
    assert cal.month_containing(datetime(2026, 5, 16, 16, 0, tzinfo=UTC)).index == 2
    assert cal.month_containing(datetime(2026, 3, 16, 15, 59, tzinfo=UTC)) is None
    with pytest.raises(ValueError):
        cal.month_starting_in(2026, 2)


def test_elapsed_minutes() -> None:
    month = ServiceCalendar(date(2026, 3, 17), "UTC").month(0)
    assert month.elapsed_minutes(local("2026-03-17T00:10:30", ZoneInfo("UTC"))) == 10
    assert month.elapsed_minutes(local("2026-03-16T00:00", ZoneInfo("UTC"))) == 0
    assert month.elapsed_minutes(local("2027-01-01T00:00", ZoneInfo("UTC"))) == month.minutes


ZONES = [
    "UTC",
    "Asia/Shanghai",
    "America/New_York",
    "Europe/Berlin",
    "Australia/Lord_Howe",  # a 30-minute DST shift
    "America/Havana",  # DST starts at midnight: some local midnights do not exist
    "America/Santiago",
    "Asia/Kolkata",
    "Pacific/Chatham",
]


@settings(max_examples=150, deadline=None)
@given(
    anchor=st.dates(min_value=date(2000, 1, 1), max_value=date(2035, 12, 31)),
    zone=st.sampled_from(ZONES),
    months=st.integers(1, 30),
    offset=st.floats(0, 1),
)
def test_service_months_tile_time(anchor: date, zone: str, months: int, offset: float) -> None:
    cal = ServiceCalendar(anchor, zone)
    series = [cal.month(k) for k in range(months + 1)]
    for before, after in itertools.pairwise(series):
        assert before.end == after.start  # no gap, no overlap
        assert before.end_minute == after.start_minute
        assert 28 * 1440 - 60 <= before.minutes <= 31 * 1440 + 60
        assert before.start.astimezone(cal.tz).date().day in {anchor.day, before.start.day}
    # every instant in the span belongs to exactly the month whose bounds hold it
    # (aware datetimes sharing a tzinfo subtract by wall clock, so work in timestamps)
    span_start, span_end = series[0].start.timestamp(), series[-1].end.timestamp()
    moment = span_start + (span_end - span_start) * offset
    instant = datetime.fromtimestamp(moment, tz=UTC)
    found = cal.month_containing(instant)
    if moment < span_end:
        assert found is not None
        assert found.start.timestamp() <= moment < found.end.timestamp()
        assert found == series[found.index]
    total = sum(m.minutes for m in series)
    assert total == int(span_end - span_start) // 60


def test_every_minute_is_written_with_a_four_digit_year() -> None:
    from datetime import UTC, datetime

    from prober.sla import epoch_minute, minute_iso

    first = epoch_minute(datetime(1, 1, 1, tzinfo=UTC))
    assert minute_iso(first) == "0001-01-01T00:00:00Z"
    assert minute_iso(first + 61) == "0001-01-01T01:01:00Z"
    assert minute_iso(epoch_minute(datetime(2026, 3, 17, 0, 5, tzinfo=UTC))) == (
        "2026-03-17T00:05:00Z"
    )
