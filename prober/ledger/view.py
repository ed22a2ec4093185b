"""The ledger's running state held in memory for metrics: totals, rolling windows and the
current service month per target. Restored from the ledger at start, advanced by every
closed minute after it is written, so metrics never scan the ledger and never reset."""

from __future__ import annotations

import sqlite3
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from fractions import Fraction
from typing import Any

from ..errors import LedgerError
from ..records import ClosedMinute
from ..sla import Outcome, ServiceCalendar, ServiceMonth, State
from .codes import STATE_CODES, STATES_BY_CODE
from .store import TARGET_LEVEL, Ledger

WINDOWS = {"1h": 60, "24h": 1440, "7d": 10080, "30d": 43200}
RING = max(WINDOWS.values())
RECENT = 1440  # minutes whose full state code is kept: the overview's strip reads the last 90
EMPTY = 255  # what code_at answers for a minute with no row (or one older than RECENT)
_A = STATE_CODES[State.AVAILABLE]
_F = STATE_CODES[State.APPARENT_FAILURE]
# The windows only need to know of a minute whether it is available, failed, another state
# or empty, so the 30 days keep two bits a minute (four minutes a byte). Empty is 0, so a
# zeroed page is an empty day.
_C_EMPTY, _C_A, _C_F, _C_OTHER = 0, 1, 2, 3
_WIDTHS = tuple(WINDOWS.items())
_KEEP = tuple(~(3 << (2 * k)) & 0xFF for k in range(4))  # clears minute k of a byte
# a state code's two bits, looked up (EMPTY stays empty, as a row-less minute)
_CLASS = bytes(
    _C_A if c == _A else _C_F if c == _F else _C_EMPTY if c == EMPTY else _C_OTHER
    for c in range(256)
)
# Both rings are kept in pages. A page that holds one value throughout (a day with every
# minute available, or none written) is one object shared by every target, so a healthy
# target keeps only the page its newest minute is in: ~1 KB rather than 12 KB a target
# (bench/README.md, "Scale"). A page is copied when a minute in it is written.
DAY = 1440  # minutes in a page of the 30-day ring
_DAY_BYTES = DAY // 4
_DAYS = RING // DAY
_SHARED_DAYS = (bytes(_DAY_BYTES), bytes([_C_A * 0x55]) * _DAY_BYTES)  # empty, available
_EMPTY_DAY = _SHARED_DAYS[0]
RECENT_PAGE = 240  # minutes in a page of the recent codes
_RECENT_PAGES = RECENT // RECENT_PAGE
_SHARED_RECENT = (bytes([EMPTY]) * RECENT_PAGE, bytes([_A]) * RECENT_PAGE)
_EMPTY_RECENT = _SHARED_RECENT[0]


def _shared(page: bytes | bytearray, shared: tuple[bytes, ...]) -> bytes | bytearray:
    """The shared page equal to `page`, else `page` itself."""
    if type(page) is bytearray:
        for candidate in shared:
            if page == candidate:
                return candidate
    return page


class MinuteRing:
    """The last 30 days of a target's verdicts, two bits a minute, with the available and
    failed counts of each window ending at the newest closed minute kept up to date, and the
    full state codes of the last RECENT minutes (what the status page shows)."""

    __slots__ = ("available", "days", "failed", "head", "recent")

    def __init__(self) -> None:
        # minute m, i = m % RING: bits 2*(i%4) of byte (i//4) % _DAY_BYTES of days[i // DAY]
        self.days: list[bytes | bytearray] = [_EMPTY_DAY] * _DAYS
        # minute m, i = m % RECENT: byte i % RECENT_PAGE of recent[i // RECENT_PAGE]
        self.recent: list[bytes | bytearray] = [_EMPTY_RECENT] * _RECENT_PAGES
        self.head: int | None = None  # newest minute written
        self.available = dict.fromkeys(WINDOWS, 0)
        self.failed = dict.fromkeys(WINDOWS, 0)

    def code_at(self, minute: int) -> int:
        """The state code of `minute` if it is one of the last RECENT minutes, else EMPTY."""
        if self.head is None or not self.head - RECENT < minute <= self.head:
            return EMPTY
        i = minute % RECENT
        return self.recent[i // RECENT_PAGE][i % RECENT_PAGE]

    def class_at(self, minute: int) -> int:
        """The two bits kept for `minute` (0 empty, 1 available, 2 failed, 3 another state)."""
        i = minute % RING
        return (self.days[i // DAY][(i >> 2) % _DAY_BYTES] >> ((i & 3) << 1)) & 3

    def _set_class(self, minute: int, cls: int) -> None:
        """Adds `cls` to minute's two bits (its slot is empty)."""
        i = minute % RING
        days, p = self.days, i // DAY
        page = days[p]
        if type(page) is bytes:
            page = days[p] = bytearray(page)
        page[(i >> 2) % _DAY_BYTES] |= cls << ((i & 3) << 1)

    def _write_recent(self, minute: int, code: int) -> None:
        i = minute % RECENT
        recent, p = self.recent, i // RECENT_PAGE
        page = recent[p]
        if page[i % RECENT_PAGE] == code:
            return
        if type(page) is bytes:
            page = recent[p] = bytearray(page)
        page[i % RECENT_PAGE] = code

    def put(self, minute: int, code: int) -> None:
        head = self.head
        cls = _CLASS[code]
        if head is None or minute - head >= RING:
            self.days = [_EMPTY_DAY] * _DAYS
            self.recent = [_EMPTY_RECENT] * _RECENT_PAGES
            self.available = dict.fromkeys(WINDOWS, 0)
            self.failed = dict.fromkeys(WINDOWS, 0)
        elif minute <= head:
            # A row arriving late (an import): counted if it lies inside the windows.
            if minute > head - RING and cls and not self.class_at(minute):
                self._set_class(minute, cls)
                if minute > head - RECENT:
                    self._write_recent(minute, code)
                self._count(minute, code)
            return
        else:
            self._advance(head, minute)
        self.head = minute
        if cls:
            self._set_class(minute, cls)
        self._write_recent(minute, code)
        # the newest minute lies in every window
        if cls == _C_A:
            counts = self.available
        elif cls == _C_F:
            counts = self.failed
        else:
            return
        for name in WINDOWS:
            counts[name] += 1

    def _advance(self, head: int, minute: int) -> None:
        """Minutes head+1 .. minute enter the windows empty; those RING and window widths
        before them leave. A page left behind that holds one value is shared again."""
        days, recent = self.days, self.recent
        available, failed = self.available, self.failed
        for m in range(head + 1, minute + 1):
            for name, width in _WIDTHS:
                # minute m - width leaves the window; it was written at most RING ago
                i = (m - width) % RING
                old = (days[i // DAY][(i >> 2) % _DAY_BYTES] >> ((i & 3) << 1)) & 3
                if old == _C_A:
                    available[name] -= 1
                elif old == _C_F:
                    failed[name] -= 1
            i = m % RING
            p = i // DAY
            if i % DAY == 0:
                left = (p - 1) % _DAYS
                days[left] = _shared(days[left], _SHARED_DAYS)
            page = days[p]
            byte = (i >> 2) % _DAY_BYTES
            if (page[byte] >> ((i & 3) << 1)) & 3:
                if type(page) is bytes:
                    page = days[p] = bytearray(page)
                page[byte] &= _KEEP[i & 3]
            j = m % RECENT
            if j % RECENT_PAGE == 0:
                left = (j // RECENT_PAGE - 1) % _RECENT_PAGES
                recent[left] = _shared(recent[left], _SHARED_RECENT)
            self._write_recent(m, EMPTY)

    def _count(self, minute: int, code: int) -> None:
        assert self.head is not None
        for name, width in WINDOWS.items():
            if minute > self.head - width:
                if code == _A:
                    self.available[name] += 1
                elif code == _F:
                    self.failed[name] += 1

    def availability(self, window: str) -> Fraction | None:
        a, f = self.available[window], self.failed[window]
        return Fraction(a, a + f) if a + f else None


@dataclass
class MonthTally:
    month: ServiceMonth
    counts: Counter[State] = field(default_factory=Counter)
    # the month's bounds, worked out once: every closed minute is checked against them
    start: int = field(init=False)
    end: int = field(init=False)

    def __post_init__(self) -> None:
        self.start, self.end = self.month.start_minute, self.month.end_minute


@dataclass
class TargetView:
    calendar: ServiceCalendar
    ring: MinuteRing = field(default_factory=MinuteRing)
    month: MonthTally | None = None
    last_closed: int | None = None

    def add(self, minute: int, state: State) -> None:
        self.ring.put(minute, STATE_CODES[state])
        if self.last_closed is None or minute > self.last_closed:
            self.last_closed = minute
        tally = self.month
        if tally is None or not tally.start <= minute < tally.end:
            found = self.calendar.month_containing(datetime.fromtimestamp(minute * 60, UTC))
            if found is None:
                return
            if tally is not None and found.start_minute < tally.start:
                return  # an old minute (import): the current month is unchanged
            tally = self.month = MonthTally(found)
        tally.counts[state] += 1

    def current_month(self, now: float) -> MonthTally | None:
        tally = self.month
        if tally is not None and tally.start * 60 <= now < tally.end * 60:
            return tally
        found = self.calendar.month_containing(datetime.fromtimestamp(now, UTC))
        if found is None:
            return None
        self.month = MonthTally(found)
        return self.month


class LedgerView:
    def __init__(self) -> None:
        self.verdicts: dict[tuple[str, str], Counter[State]] = {}
        self.attempts: dict[tuple[str, str], Counter[Outcome]] = {}
        self.targets: dict[str, TargetView] = {}
        self.generation = 0  # bumped on every change, so renderings can be cached
        self._ledger: Ledger | None = None  # where a changed service month is recounted from

    def restore(self, ledger: Ledger, calendars: dict[str, ServiceCalendar], now: float) -> None:
        """Counters from the running totals; windows and months from the last ~31 days.

        Only minutes that have ended count: a row at or after the current minute (an import
        gone wrong) is neither the newest closed minute nor part of the month so far, so the
        month's figures are those `report` computes from the same ledger."""
        self._ledger = ledger
        self.verdicts = {k: Counter(v) for k, v in ledger.verdict_totals().items()}
        self.attempts = {k: Counter(v) for k, v in ledger.attempt_totals().items()}
        current_minute = int(now // 60)
        for name, calendar in calendars.items():
            self.track(name, calendar)
            view = self.targets[name]
            current = calendar.month_containing(datetime.fromtimestamp(now, UTC))
            since = current_minute - RING
            if current is not None:
                since = min(since, current.start_minute)
            for minute, code in ledger.state_codes(name, since, until=current_minute):
                view.add(minute, STATES_BY_CODE[code])
            view.last_closed = ledger.last_closed_minute(name, before=current_minute)
        self.generation += 1

    def track(self, target: str, calendar: ServiceCalendar) -> None:
        view = self.targets.get(target)
        if view is None:
            self.targets[target] = TargetView(calendar)
        elif view.calendar != calendar:  # anchor, timezone or kind of month changed
            view.calendar = calendar
            view.month = self._recount(target, view)
        self.generation += 1

    def _recount(self, target: str, view: TargetView) -> MonthTally | None:
        """The tally of the month (under a changed calendar) that holds the newest closed
        minute, counted from the ledger: one indexed query, only when a reload changes a
        target's anchor or timezone."""
        if self._ledger is None or view.last_closed is None:
            return None
        month = view.calendar.month_containing(datetime.fromtimestamp(view.last_closed * 60, UTC))
        if month is None:
            return None
        end = min(view.last_closed + 1, month.end_minute)
        try:
            counts = self._ledger.state_counts(target, month.start_minute, end)
        except (sqlite3.Error, LedgerError):  # a full disk, a lost PostgreSQL connection
            return None  # counted afresh from the next closed minute on
        return MonthTally(month, Counter({s: n for s, n in counts.items() if n}))

    def apply(self, closed: Iterable[ClosedMinute]) -> None:
        verdicts, attempts = self.verdicts, self.attempts
        for item in closed:
            _counter(verdicts, (item.target, TARGET_LEVEL))[item.verdict.state] += 1
            for probe, (verdict, counts) in item.probes.items():
                _counter(verdicts, (item.target, probe))[verdict.state] += 1
                if not item.attempts:
                    # A fleet's minute, decided over its vantages' verdicts: their summed
                    # per-probe counts are its attempts (the ledger's totals count the same).
                    tally = _counter(attempts, (item.target, probe))
                    for outcome in Outcome:
                        tally[outcome] += getattr(counts, outcome.value)
            for attempt in item.attempts:
                _counter(attempts, (item.target, attempt.probe))[attempt.outcome] += 1
            view = self.targets.get(item.target)
            if view is not None:
                view.add(item.minute, item.verdict.state)
        self.generation += 1


def _counter(counters: dict[tuple[str, str], Counter[Any]], key: tuple[str, str]) -> Counter[Any]:
    """The key's counter, made on first use (not a new Counter per call, as setdefault would
    make: a minute close applies tens of thousands)."""
    counter = counters.get(key)
    if counter is None:
        counter = counters[key] = Counter()
    return counter
