"""The in-memory rolling windows and month tallies agree with a brute-force recount."""

from __future__ import annotations

from datetime import UTC, date, datetime

from hypothesis import given, settings
from hypothesis import strategies as st

from prober.ledger.codes import STATE_CODES
from prober.ledger.store import MinuteRow
from prober.ledger.view import RING, WINDOWS, LedgerView, MinuteRing, TargetView
from prober.records import ClosedMinute
from prober.sla import OutcomeCounts, ServiceCalendar, State, Verdict

from .ledger_backends import Backend

CODES = [STATE_CODES[s] for s in State]


def recount(rows: dict[int, int], head: int, width: int) -> tuple[int, int]:
    inside = [c for m, c in rows.items() if head - width < m <= head]
    return (
        sum(c == STATE_CODES[State.AVAILABLE] for c in inside),
        sum(c == STATE_CODES[State.APPARENT_FAILURE] for c in inside),
    )


@settings(max_examples=60, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 3000), st.sampled_from(CODES)), max_size=60))
def test_ring_windows_match_a_recount(steps) -> None:
    ring = MinuteRing()
    rows: dict[int, int] = {}
    minute = 10_000_000
    for gap, code in steps:
        minute += gap
        ring.put(minute, code)
        rows[minute] = code
        for name, width in WINDOWS.items():
            assert (ring.available[name], ring.failed[name]) == recount(rows, minute, width), name


def test_ring_survives_a_gap_longer_than_the_ring() -> None:
    ring = MinuteRing()
    for m in range(100):
        ring.put(m, STATE_CODES[State.APPARENT_FAILURE])
    ring.put(100 + 2 * RING, STATE_CODES[State.AVAILABLE])
    assert ring.failed == dict.fromkeys(WINDOWS, 0)
    assert ring.available == dict.fromkeys(WINDOWS, 1)


def test_late_rows_inside_the_windows_are_counted_once() -> None:
    ring = MinuteRing()
    ring.put(1000, STATE_CODES[State.AVAILABLE])
    ring.put(990, STATE_CODES[State.APPARENT_FAILURE])
    ring.put(990, STATE_CODES[State.APPARENT_FAILURE])
    assert ring.failed["1h"] == 1 and ring.available["1h"] == 1
    assert ring.availability("1h") == 0.5


def test_month_tally_rolls_over() -> None:
    view = TargetView(ServiceCalendar(date(2026, 3, 17), "UTC"))
    first = view.calendar.month(0)
    view.add(first.end_minute - 1, State.APPARENT_FAILURE)
    assert view.month is not None and view.month.counts[State.APPARENT_FAILURE] == 1
    view.add(first.end_minute, State.AVAILABLE)
    assert view.month.month.index == 1
    assert view.month.counts == {State.AVAILABLE: 1}
    view.add(first.end_minute - 5, State.APPARENT_FAILURE)  # an old row does not roll back
    assert view.month.month.index == 1
    assert view.current_month(first.end_minute * 60 + 30).counts == {State.AVAILABLE: 1}
    assert view.current_month(view.calendar.month(1).end_minute * 60).month.index == 2


def test_restore_ignores_rows_that_have_not_ended_and_counts_the_month_like_report(
    backend: Backend,
) -> None:
    calendar = ServiceCalendar(date(2026, 3, 17), "UTC")
    month = calendar.month(2)  # [2026-05-17, 2026-06-17)
    now = (month.start_minute + 100) * 60 + 30  # 100 minutes into the month
    ledger = backend.open()
    ledger.write_minutes(
        [
            ClosedMinute("t", month.start_minute + i, Verdict(state), OutcomeCounts())
            for i, state in enumerate([State.APPARENT_FAILURE] * 2 + [State.AVAILABLE] * 98)
        ]
    )
    # rows an import let in: the current minute, one tomorrow, one in a later month
    future = [int(now // 60), int(now // 60) + 1440, month.end_minute + 5]
    ledger.import_rows(
        [(n, MinuteRow("t", "", m, State.APPARENT_FAILURE)) for n, m in enumerate(future)]
    )
    view = LedgerView()
    view.restore(ledger, {"t": calendar}, now)
    target = view.targets["t"]
    assert target.last_closed == month.start_minute + 99
    tally = target.current_month(now)
    assert tally is not None and tally.month == month
    assert tally.counts == {State.APPARENT_FAILURE: 2, State.AVAILABLE: 98}
    assert target.ring.failed["24h"] == 2
    # a reload that moves the month's start recounts the month from the ledger
    moved = ServiceCalendar(date(2026, 3, 17), "Asia/Shanghai")  # starts 8 h earlier
    view.track("t", moved)
    tally = target.current_month(now)
    assert tally is not None and tally.month == moved.month_containing(
        datetime.fromtimestamp(now, UTC)
    )
    assert tally.counts == {State.APPARENT_FAILURE: 2, State.AVAILABLE: 98}
    # a reload that changes only the kind of month (calendar months from the 1st) too
    calendar_months = ServiceCalendar(date(2026, 3, 17), "Asia/Shanghai", "calendar")
    view.track("t", calendar_months)
    tally = target.current_month(now)
    assert tally is not None and tally.month == calendar_months.month_containing(
        datetime.fromtimestamp(now, UTC)
    )
    assert tally.month.start.day == 1
    assert tally.counts == {State.APPARENT_FAILURE: 2, State.AVAILABLE: 98}
    ledger.close()
