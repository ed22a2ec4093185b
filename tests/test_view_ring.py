"""The compact minute ring (two bits a minute, full codes for the recent minutes) counts
every window and answers every recent minute exactly as the one-byte-a-minute ring it
replaced, kept here as the oracle."""

from __future__ import annotations

from fractions import Fraction

from hypothesis import given, settings
from hypothesis import strategies as st

from prober.ledger.codes import STATE_CODES
from prober.ledger.view import EMPTY, RECENT, RING, WINDOWS, MinuteRing
from prober.sla import State
from prober.status.model import STRIP_MINUTES

_A = STATE_CODES[State.AVAILABLE]
_F = STATE_CODES[State.APPARENT_FAILURE]


class ByteRing:
    """The ring as it was before the compact one: one byte a minute for 30 days."""

    def __init__(self) -> None:
        self.states = bytearray([EMPTY]) * RING
        self.head: int | None = None
        self.available = dict.fromkeys(WINDOWS, 0)
        self.failed = dict.fromkeys(WINDOWS, 0)

    def put(self, minute: int, code: int) -> None:
        if self.head is None or minute - self.head >= RING:
            self.states[:] = bytes([EMPTY]) * RING
            self.available = dict.fromkeys(WINDOWS, 0)
            self.failed = dict.fromkeys(WINDOWS, 0)
        elif minute <= self.head:
            if minute > self.head - RING and self.states[minute % RING] == EMPTY:
                self.states[minute % RING] = code
                self._count(minute, code)
            return
        else:
            for m in range(self.head + 1, minute + 1):
                for name, width in WINDOWS.items():
                    old = self.states[(m - width) % RING]
                    if old == _A:
                        self.available[name] -= 1
                    elif old == _F:
                        self.failed[name] -= 1
                self.states[m % RING] = EMPTY
        self.head = minute
        self.states[minute % RING] = code
        self._count(minute, code)

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

    def code_at(self, minute: int) -> int:
        """What the status page read of it: the byte of any minute of the last 30 days."""
        if self.head is None or not self.head - RING < minute <= self.head:
            return EMPTY
        return self.states[minute % RING]


# every state's code, and EMPTY itself (a put of it leaves the minute row-less in both)
CODES = [*STATE_CODES.values(), EMPTY]
# forward steps (one minute, a few, a whole ring and beyond), late rows at any depth
STEPS = st.one_of(
    st.tuples(st.just("forward"), st.integers(1, 3), st.sampled_from(CODES)),
    st.tuples(st.just("forward"), st.integers(1, RING + 5), st.sampled_from(CODES)),
    st.tuples(st.just("late"), st.integers(0, 90), st.sampled_from(CODES)),
    st.tuples(st.just("late"), st.integers(0, RING + 5), st.sampled_from(CODES)),
)


def assert_same(new: MinuteRing, old: ByteRing) -> None:
    assert new.head == old.head
    assert new.available == old.available and new.failed == old.failed
    for window in WINDOWS:
        assert new.availability(window) == old.availability(window)
    if old.head is not None:
        for m in range(old.head - RECENT - 2, old.head + 3):
            assert new.code_at(m) == old.code_at(m), m


@settings(max_examples=150, deadline=None)
@given(st.lists(STEPS, max_size=40), st.integers(0, 2**40))
def test_the_compact_ring_counts_and_answers_exactly_as_the_byte_ring(steps, start) -> None:
    new, old = MinuteRing(), ByteRing()
    head = start
    for kind, gap, code in steps:
        minute = head + gap if kind == "forward" else head - gap
        new.put(minute, code)
        old.put(minute, code)
        assert old.head is not None
        head = old.head
        assert_same(new, old)


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.integers(1, 3), st.sampled_from(CODES)), max_size=200))
def test_a_dense_run_of_recent_minutes_reads_back_code_by_code(steps) -> None:
    new, old = MinuteRing(), ByteRing()
    minute = 5_000_000
    for gap, code in steps:
        minute += gap
        new.put(minute, code)
        old.put(minute, code)
    # late rows filling the holes the gaps left, then the same rows again (kept once)
    for m in range(minute - 300, minute + 1):
        for ring in (new, old):
            ring.put(m, STATE_CODES[State.MAINTENANCE])
            ring.put(m, _F)
    assert_same(new, old)


def test_minutes_older_than_recent_read_as_empty_but_still_count() -> None:
    ring = MinuteRing()
    ring.put(0, STATE_CODES[State.MAINTENANCE])
    ring.put(1, _F)
    ring.put(RECENT + 1, _A)
    assert ring.code_at(RECENT + 1) == _A
    assert ring.code_at(1) == EMPTY and ring.code_at(0) == EMPTY  # older than RECENT
    assert ring.code_at(2) == EMPTY  # a minute with no row
    assert ring.failed["30d"] == 1 and ring.available["30d"] == 1
    assert ring.failed["24h"] == 0


def test_the_ring_keeps_full_codes_for_every_minute_of_the_overview_strip() -> None:
    assert STRIP_MINUTES <= RECENT
