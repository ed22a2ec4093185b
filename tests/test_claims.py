"""The claim window: 5th business day of the following month, 60 days after the last day."""

from datetime import date, timedelta

from prober.sla import ServiceCalendar, claim_window, working_days_of
from prober.sla.claims import nth_working_day

CN = working_days_of("CN")


def weekdays_only(day: date) -> bool:
    return day.weekday() < 5


def test_the_design_example() -> None:
    month = ServiceCalendar(date(2026, 3, 17), "Asia/Shanghai").month(1)  # [Apr 17, May 17)
    assert month.last_day == date(2026, 5, 16)
    window = claim_window(month.last_day, CN)
    assert (window.opens, window.closes) == (date(2026, 6, 6), date(2026, 7, 15))


def test_across_labour_day_with_a_substituted_saturday() -> None:
    # May 1-5 2026 are holidays; Saturday May 9 is a working day in China.
    assert CN(date(2026, 5, 9)) and not CN(date(2026, 5, 4))
    window = claim_window(date(2026, 4, 30), CN)
    # business days: May 6, 7, 8, 9 (Sat), 11 -> opens the day after the 11th
    assert window.opens == date(2026, 5, 12)
    assert window.closes == date(2026, 6, 29)
    # without the holiday library's calendar the answer would differ
    assert claim_window(date(2026, 4, 30), weekdays_only).opens == date(2026, 5, 8)


def test_across_national_day() -> None:
    window = claim_window(date(2026, 9, 30), CN)
    # Oct 1-7 off; Oct 8, 9, 10 (Sat, worked), 12, 13 -> opens Oct 14
    assert window.opens == date(2026, 10, 14)
    assert window.closes == date(2026, 11, 29)


def test_december_rolls_into_next_year() -> None:
    window = claim_window(date(2026, 12, 16), weekdays_only)
    assert window.opens == date(2027, 1, 8)  # Jan 1 (Fri), 4, 5, 6, 7 -> the 8th
    assert window.closes == date(2026, 12, 16) + timedelta(days=60)


def test_nth_working_day_counts_from_the_first() -> None:
    assert nth_working_day(2026, 6, 1, weekdays_only) == date(2026, 6, 1)
    assert nth_working_day(2026, 6, 5, weekdays_only) == date(2026, 6, 5)
