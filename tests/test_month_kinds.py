"""The three kinds of service month (`sla.service_month`): anchored on the purchase day, the
calendar month, and the calendar month whose first starts at the purchase date — at month ends,
in leap years and across DST, with the claim window after each month's real end."""

from __future__ import annotations

import calendar
import itertools
import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from prober.config.models import ConfigError, load_config
from prober.ledger.store import Ledger
from prober.records import ClosedMinute
from prober.sla import OutcomeCounts, ServiceCalendar, State, Verdict, claim_window, epoch_minute
from prober.sla.months import MonthKind

from .cli_util import on_demo
from .conftest import BASE_TARGET

BERLIN = ZoneInfo("Europe/Berlin")
KINDS = list(MonthKind)


def local(text: str, tz: ZoneInfo | str) -> datetime:
    return datetime.fromisoformat(text).replace(
        tzinfo=tz if isinstance(tz, ZoneInfo) else ZoneInfo(tz)
    )


def bounds(cal: ServiceCalendar, index: int) -> tuple[str, str]:
    month = cal.month(index)
    return month.start.isoformat(), month.end.isoformat()


def weekdays(day: date) -> bool:
    return day.weekday() < 5


def test_calendar_months_run_from_the_first_to_the_next_first() -> None:
    cal = ServiceCalendar(date(2026, 1, 31), "UTC", "calendar")
    assert bounds(cal, 0) == ("2026-01-01T00:00:00+00:00", "2026-02-01T00:00:00+00:00")
    assert bounds(cal, 1) == ("2026-02-01T00:00:00+00:00", "2026-03-01T00:00:00+00:00")
    assert [cal.month(k).minutes for k in range(3)] == [31 * 1440, 28 * 1440, 31 * 1440]
    assert cal.month(0).last_day == date(2026, 1, 31)
    assert cal.month(1).last_day == date(2026, 2, 28)
    assert cal.first_day == date(2026, 1, 1)
    # the minutes of the purchase's month before the purchase day belong to its first month
    assert cal.month_containing(local("2026-01-01T00:00", "UTC")).index == 0
    assert cal.month_containing(local("2025-12-31T23:59:59", "UTC")) is None
    # a month's last minute is in it, the next minute is in the next month
    assert cal.month_containing(local("2026-01-31T23:59", "UTC")).index == 0
    assert cal.month_containing(local("2026-02-01T00:00", "UTC")).index == 1


def test_calendar_february_of_the_leap_year_2028_has_29_days() -> None:
    cal = ServiceCalendar(date(2027, 12, 15), "UTC", MonthKind.CALENDAR)
    february = cal.month_starting_in(2028, 2)
    assert (february.index, february.minutes) == (2, 29 * 1440)
    assert february.last_day == date(2028, 2, 29)
    assert february.end == local("2028-03-01", "UTC")
    assert cal.month_containing(local("2028-02-29T23:59", "UTC")) == february
    assert cal.month_containing(local("2028-03-01T00:00", "UTC")).index == 3
    assert cal.month_starting_in(2027, 2 + 12).minutes == 29 * 1440  # the same month by year


def test_calendar_from_purchase_starts_short_and_has_no_month_before_the_purchase() -> None:
    cal = ServiceCalendar(date(2026, 1, 31), "UTC", "calendar_from_purchase")
    assert bounds(cal, 0) == ("2026-01-31T00:00:00+00:00", "2026-02-01T00:00:00+00:00")
    assert cal.month(0).minutes == 1440  # one day: the purchase day to the end of January
    assert bounds(cal, 1) == ("2026-02-01T00:00:00+00:00", "2026-03-01T00:00:00+00:00")
    assert cal.month(1).minutes == 28 * 1440
    assert cal.first_day == date(2026, 1, 31)
    assert cal.month_containing(local("2026-01-30T23:59:59", "UTC")) is None
    assert cal.month_containing(local("2026-01-01T00:00", "UTC")) is None
    assert cal.month_containing(local("2026-01-31T00:00", "UTC")).index == 0
    assert cal.month_starting_in(2026, 1) == cal.month(0)
    with pytest.raises(ValueError, match="before the service month anchor 2026-01-31"):
        cal.month_starting_in(2025, 12)
    with pytest.raises(ValueError):
        cal.month(-1)


def test_calendar_from_purchase_on_the_leap_day_and_on_a_first() -> None:
    leap = ServiceCalendar(date(2028, 2, 29), "UTC", "calendar_from_purchase")
    assert bounds(leap, 0) == ("2028-02-29T00:00:00+00:00", "2028-03-01T00:00:00+00:00")
    assert leap.month(1).minutes == 31 * 1440
    # a purchase on the 1st makes the same months as `calendar`
    first = ServiceCalendar(date(2026, 5, 1), "UTC", "calendar_from_purchase")
    same = ServiceCalendar(date(2026, 5, 1), "UTC", "calendar")
    assert [first.month(k) for k in range(14)] == [same.month(k) for k in range(14)]


def test_anchored_is_the_default_and_a_purchase_on_the_31st_clamps_as_before() -> None:
    default = ServiceCalendar(date(2027, 1, 31), "UTC")
    assert default.kind is MonthKind.ANCHORED
    assert default == ServiceCalendar(date(2027, 1, 31), "UTC", "anchored")
    starts = [default.month(k).start.date() for k in range(14)]
    assert starts[:3] == [date(2027, 1, 31), date(2027, 2, 28), date(2027, 3, 31)]
    assert starts[13] == date(2028, 2, 29)  # the leap year's February keeps its 29th
    assert default.month(13).minutes == 31 * 1440  # Feb 29 -> Mar 31
    assert default.first_day == date(2027, 1, 31)


def test_a_calendar_month_across_dst_is_its_real_length() -> None:
    # Europe/Berlin: clocks go forward on 2026-03-29 and back on 2026-10-25
    cal = ServiceCalendar(date(2026, 1, 10), BERLIN, "calendar")
    march, october = cal.month_starting_in(2026, 3), cal.month_starting_in(2026, 10)
    assert march.minutes == 31 * 1440 - 60
    assert october.minutes == 31 * 1440 + 60
    assert cal.month_starting_in(2026, 4).minutes == 30 * 1440
    assert march.start.astimezone(UTC) == datetime(2026, 2, 28, 23, 0, tzinfo=UTC)
    assert march.end.astimezone(UTC) == datetime(2026, 3, 31, 22, 0, tzinfo=UTC)
    assert cal.month_containing(datetime(2026, 3, 31, 21, 59, tzinfo=UTC)) == march
    assert cal.month_containing(datetime(2026, 3, 31, 22, 0, tzinfo=UTC)).index == 3
    assert october.end.astimezone(UTC) == datetime(2026, 10, 31, 23, 0, tzinfo=UTC)
    assert march.last_day == date(2026, 3, 31)


def test_a_short_first_month_on_the_dst_day_loses_its_hour() -> None:
    cal = ServiceCalendar(date(2026, 3, 29), BERLIN, "calendar_from_purchase")
    first = cal.month(0)
    assert first.start.astimezone(UTC) == datetime(2026, 3, 28, 23, 0, tzinfo=UTC)
    assert first.end.astimezone(UTC) == datetime(2026, 3, 31, 22, 0, tzinfo=UTC)
    assert first.minutes == 3 * 1440 - 60
    autumn = ServiceCalendar(date(2026, 10, 25), BERLIN, "calendar_from_purchase").month(0)
    assert autumn.minutes == 7 * 1440 + 60


def test_the_claim_window_opens_after_the_months_real_end() -> None:
    purchase = date(2026, 1, 17)
    anchored = ServiceCalendar(purchase, "Asia/Shanghai", "anchored").month(0)
    calendar = ServiceCalendar(purchase, "Asia/Shanghai", "calendar").month(0)
    short = ServiceCalendar(purchase, "Asia/Shanghai", "calendar_from_purchase").month(0)
    # anchored: Jan 17 - Feb 16, so the claim waits for March's 5th business day
    assert anchored.last_day == date(2026, 2, 16)
    assert claim_window(anchored.last_day, weekdays).opens == date(2026, 3, 7)
    # both calendar kinds end with January: February's 5th business day is the 6th
    for month in (calendar, short):
        assert month.last_day == date(2026, 1, 31)
        window = claim_window(month.last_day, weekdays)
        assert (window.opens, window.closes) == (date(2026, 2, 7), date(2026, 4, 1))
        assert window.opens > month.end.date()
    assert short.minutes == 15 * 1440 and calendar.minutes == 31 * 1440


def test_calendars_compare_by_anchor_timezone_and_kind() -> None:
    one = ServiceCalendar(date(2026, 3, 17), "Europe/Berlin", "calendar")
    assert one == ServiceCalendar(date(2026, 3, 17), ZoneInfo.no_cache("Europe/Berlin"), "calendar")
    assert hash(one) == hash(ServiceCalendar(date(2026, 3, 17), BERLIN, MonthKind.CALENDAR))
    assert one != ServiceCalendar(date(2026, 3, 17), "Europe/Berlin", "calendar_from_purchase")
    assert one != ServiceCalendar(date(2026, 3, 17), "Europe/Paris", "calendar")
    assert one != ServiceCalendar(date(2026, 3, 18), "Europe/Berlin", "calendar")
    assert one.key == (date(2026, 3, 17), "Europe/Berlin", MonthKind.CALENDAR)
    with pytest.raises(ValueError):
        ServiceCalendar(date(2026, 3, 17), "UTC", "weekly")


def expected_start(kind: MonthKind, anchor: date, index: int) -> date:
    serial = anchor.year * 12 + anchor.month - 1 + index
    year, month = divmod(serial, 12)
    if kind is MonthKind.ANCHORED:
        return date(year, month + 1, min(anchor.day, calendar.monthrange(year, month + 1)[1]))
    if kind is MonthKind.CALENDAR_FROM_PURCHASE and index == 0:
        return anchor
    return date(year, month + 1, 1)


ZONES = [
    "UTC",
    "Asia/Shanghai",
    "America/New_York",
    "Europe/Berlin",
    "Australia/Lord_Howe",  # a 30-minute DST shift
    "America/Havana",  # DST starts at midnight: some local midnights do not exist
    "America/Santiago",
    "Pacific/Chatham",
]


@settings(max_examples=200, deadline=None)
@given(
    kind=st.sampled_from(KINDS),
    anchor=st.dates(min_value=date(2000, 1, 1), max_value=date(2035, 12, 31)),
    zone=st.sampled_from(ZONES),
    months=st.integers(1, 26),
    offset=st.floats(0, 1),
)
def test_consecutive_months_of_every_kind_tile_time(
    kind: MonthKind, anchor: date, zone: str, months: int, offset: float
) -> None:
    cal = ServiceCalendar(anchor, zone, kind)
    series = [cal.month(k) for k in range(months + 1)]
    for before, after in itertools.pairwise(series):
        assert before.end == after.start  # no gap, no overlap
        assert before.end_minute == after.start_minute
    for month in series:
        # local midnight of the expected day (01:00 where that midnight was skipped)
        assert month.start.astimezone(cal.tz).date() == expected_start(kind, anchor, month.index)
        assert month.start.astimezone(cal.tz).hour in {0, 1}
        if kind is MonthKind.CALENDAR_FROM_PURCHASE and month.index == 0:
            assert 1440 - 60 <= month.minutes <= 31 * 1440 + 60
        else:
            assert 28 * 1440 - 60 <= month.minutes <= 31 * 1440 + 60
        assert month.last_day == month.end.astimezone(cal.tz).date() - timedelta(days=1)
    span_start, span_end = series[0].start.timestamp(), series[-1].end.timestamp()
    moment = span_start + (span_end - span_start) * offset
    found = cal.month_containing(datetime.fromtimestamp(moment, tz=UTC))
    if moment < span_end:
        assert found is not None and found == series[found.index]
        assert found.start.timestamp() <= moment < found.end.timestamp()
    assert cal.month_containing(datetime.fromtimestamp(span_start - 1, tz=UTC)) is None
    assert sum(m.minutes for m in series) == int(span_end - span_start) // 60


def config_with(write_config, line: str, zone: str = "Asia/Shanghai") -> Path:
    target = BASE_TARGET.replace(
        "      service_month_anchor: 2026-03-17\n",
        "      service_month_anchor: 2026-03-17\n" + line,
    ).replace("Asia/Shanghai", zone)
    return write_config("ledger: {path: ledger.sqlite3}\ntargets:\n" + target)


def test_the_config_takes_each_kind_and_defaults_to_anchored(write_config, demo_config) -> None:
    sla = load_config(demo_config).config.targets[0].sla
    assert sla.service_month is MonthKind.ANCHORED
    assert sla.calendar() == ServiceCalendar(date(2026, 3, 17), "Asia/Shanghai")
    for kind in KINDS:
        path = config_with(write_config, f"      service_month: {kind}\n")
        calendar = load_config(path).config.targets[0].sla.calendar()
        assert calendar == ServiceCalendar(date(2026, 3, 17), "Asia/Shanghai", kind)


@pytest.mark.parametrize("value", ["weekly", "Calendar", "1", "true", "[calendar]"])
def test_an_unknown_kind_is_one_error_at_its_line(write_config, value: str) -> None:
    path = config_with(write_config, f"      service_month: {value}\n")
    with pytest.raises(ConfigError) as info:
        load_config(path)
    assert str(info.value) == (
        f"{path}:15: targets[0].sla.service_month: "
        "Input should be 'anchored', 'calendar' or 'calendar_from_purchase'"
    )


def berlin_minute(text: str) -> int:
    return epoch_minute(local(text, BERLIN))


# The claim opens the day after the 5th business day (CN) of the calendar month after the
# month's last day: April 2026 works on the 1st-3rd, 7th, 8th (Qingming off the 4th-6th); May
# 2026 on the 6th-9th (Saturday made a workday), 11th (Labour Day off the 1st-5th).
@pytest.mark.parametrize(
    ("kind", "start", "end", "total", "claim"),
    [
        (
            "calendar",
            "2026-03-01T00:00:00+01:00",
            "2026-04-01T00:00:00+02:00",
            31 * 1440 - 60,
            {"opens": "2026-04-09", "closes": "2026-05-30"},
        ),
        (
            "calendar_from_purchase",
            "2026-03-17T00:00:00+01:00",
            "2026-04-01T00:00:00+02:00",
            15 * 1440 - 60,
            {"opens": "2026-04-09", "closes": "2026-05-30"},
        ),
        (
            "anchored",
            "2026-03-17T00:00:00+01:00",
            "2026-04-17T00:00:00+02:00",
            31 * 1440 - 60,
            {"opens": "2026-05-12", "closes": "2026-06-15"},
        ),
    ],
)
def test_the_report_follows_the_configured_month(
    write_config, capsys, kind: str, start: str, end: str, total: int, claim: dict[str, str]
) -> None:
    """Through the CLI on a ledger in Europe/Berlin: March 17 to 00:30 on April 1 observed,
    with 30 failed minutes in March's last hour (after the clocks went forward)."""
    config = config_with(write_config, f"      service_month: {kind}\n", zone="Europe/Berlin")
    ledger = Ledger(config.parent / "ledger.sqlite3")
    first = berlin_minute("2026-03-17T00:00")
    failed = range(berlin_minute("2026-03-31T23:00"), berlin_minute("2026-03-31T23:00") + 30)
    ledger.write_minutes(
        ClosedMinute("demo", m, Verdict(State.APPARENT_FAILURE), OutcomeCounts(failure=1))
        if m in failed
        else ClosedMinute("demo", m, Verdict(State.AVAILABLE), OutcomeCounts(1))
        for m in range(first, failed.stop + 60)  # to 00:30 on April 1
    )
    ledger.close()
    code, out, err = on_demo(
        capsys,
        config,
        "report",
        "--format",
        "json",
        "--month",
        "2026-03",
        "--now",
        "2026-05-01T00:00:00+02:00",
    )
    assert (code, err) == (0, "")
    report = json.loads(out)
    assert report["service_month"] == {"start": start, "end": end}
    assert report["minutes"]["total"] == total
    assert report["minutes"]["apparent_failure"] == 30
    assert report["claim_window"] == claim
    observed_in_month = min(
        berlin_minute("2026-04-01T00:30"), epoch_minute(local(end[:19], BERLIN))
    )
    assert report["minutes"]["available"] == observed_in_month - first - 30
    assert report["minutes"]["no_data"] == total - (observed_in_month - first)
