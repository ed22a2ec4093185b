"""A ledger with history for the status page tests and bench: the previous service month
(missed: an 8-hour outage) and the current one so far — an outage with attempts whose
detail is hostile HTML, announced maintenance, a prober-down gap, scattered blips — and a
short outage in the last 24 hours, up to the minute before `now`. Deterministic for a given
`now`, written through the ledger's own import and write paths."""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

from prober.ledger.store import Ledger, MinuteRow
from prober.records import Attempt, ClosedMinute
from prober.sla import (
    Outcome,
    Reason,
    ServiceCalendar,
    State,
)

from .ledger_writer import decided

HOSTILE_DETAIL = "<script>alert(1)</script><img src=x onerror=alert(2)> & 'quoted'"
TIMEZONE = "Asia/Shanghai"


def anchor_for(now: float) -> date:
    """A purchase date a year back whose day makes the current service month about ten
    days old (a day of 28 or less, so every month starts on it)."""
    today = datetime.fromtimestamp(now, UTC).date()
    for back in range(9, 40):
        start = today - timedelta(days=back)
        if start.day <= 28:
            return start.replace(year=start.year - 1)
    raise AssertionError("no anchor")


@dataclass
class History:
    """What was written, so tests can say where things are without re-deriving them."""

    anchor: date
    first_minute: int
    end_minute: int  # exclusive: the minute the history stops before
    previous_outage: range
    current_outage: range
    maintenance: range
    gap: range
    recent_outage: range
    failed: set[int] = field(default_factory=set)


def _closed(target: str, probes: tuple[str, ...], minute: int, rng: random.Random) -> ClosedMinute:
    """A failed minute with its attempts: every probe fails, some with a hostile detail."""
    attempts = []
    for i, probe in enumerate(probes):
        started = minute * 60 + 5 + i * 11 + rng.random()
        attempts.append(
            Attempt(
                target,
                probe,
                started,
                2.0 + rng.random(),
                Outcome.FAILURE,
                "http_5xx" if i % 2 == 0 else "timeout",
                None,
                503 if i % 2 == 0 else None,
                HOSTILE_DETAIL if i == 0 else "HTTP 503 from /send",
            )
        )
    return decided(target, minute, tuple(probes), attempts)


def _successes(
    target: str, probes: tuple[str, ...], minute: int, rng: random.Random
) -> ClosedMinute:
    attempts = [
        Attempt(target, p, minute * 60 + 3 + i * 13, 0.04 + rng.random() * 0.12, Outcome.SUCCESS)
        for i, p in enumerate(probes)
    ]
    return decided(target, minute, tuple(probes), attempts)


def write_history(
    path: Path,
    target: str,
    probes: tuple[str, ...],
    now: float,
    *,
    anchor: date | None = None,
    attempts_hours: int = 6,
) -> History:
    """Write the history of `target` into the ledger at `path`, up to the minute before
    `now`. The last `attempts_hours` hours of available minutes get successful attempts (the
    latency chart's data)."""
    anchor = anchor or anchor_for(now)
    calendar = ServiceCalendar(anchor, TIMEZONE)
    instant = datetime.fromtimestamp(now, UTC)
    current = calendar.month_containing(instant)
    assert current is not None and current.index >= 1
    previous = calendar.month(current.index - 1)
    start, end = previous.start_minute, int(now // 60)
    day = 1440
    m0 = current.start_minute
    history = History(
        anchor=anchor,
        first_minute=start,
        end_minute=end,
        previous_outage=range(start + 6 * day + 14 * 60 + 7, start + 6 * day + 22 * 60 + 7),
        current_outage=range(m0 + 1 * day + 9 * 60 + 30, m0 + 1 * day + 11 * 60 + 5),
        maintenance=range(m0 + 2 * day + 2 * 60, m0 + 2 * day + 4 * 60),
        gap=range(m0 + 3 * day + 3 * 60 + 12, m0 + 3 * day + 6 * 60 + 32),
        recent_outage=range(end - 180, end - 168),
    )
    rng = random.Random(start)
    states: dict[int, tuple[State, Reason]] = {}
    for m in history.previous_outage:
        states[m] = (State.APPARENT_FAILURE, Reason.NONE)
    for _ in range(5):  # blips of one to four minutes
        first = rng.randrange(m0, end - 400)
        for m in range(first, first + rng.randint(1, 4)):
            states.setdefault(m, (State.APPARENT_FAILURE, Reason.NONE))
    for m in history.current_outage:
        states[m] = (State.APPARENT_FAILURE, Reason.NONE)
    for m in history.maintenance:
        states[m] = (State.MAINTENANCE, Reason.NONE)
    for m in history.gap:
        states[m] = (State.NO_DATA, Reason.PROBER_DOWN)
    for m in history.recent_outage:
        states[m] = (State.APPARENT_FAILURE, Reason.NONE)
    history.failed = {m for m, (s, _r) in states.items() if s is State.APPARENT_FAILURE}
    with_attempts = set(history.current_outage) | set(history.recent_outage)
    recent = set(range(end - attempts_hours * 60, end)) - history.failed
    closed = [_closed(target, probes, m, rng) for m in sorted(with_attempts)]
    closed += [_successes(target, probes, m, rng) for m in sorted(recent)]
    skip = with_attempts | recent

    def rows():
        line = 0
        for m in range(start, end):
            if m in skip:
                continue
            state, reason = states.get(m, (State.AVAILABLE, Reason.NONE))
            for probe in ("", *probes):
                line += 1
                yield line, MinuteRow(target, probe, m, state, reason)

    with Ledger(path) as ledger:
        ledger.import_rows(rows())
        closed.sort(key=lambda c: c.minute)
        for i in range(0, len(closed), 500):
            ledger.write_minutes(closed[i : i + 500])
    return history
