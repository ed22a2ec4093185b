"""The compact minute ring (two bits a minute, full codes for the recent minutes) counts
every window and answers every recent minute exactly as the one-byte-a-minute ring it
replaced, kept here as the oracle."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from prober.ledger.codes import STATE_CODES
from prober.ledger.view import DAY, EMPTY, RECENT, RING, WINDOWS, MinuteRing
from prober.sla import State
from prober.status.model import STRIP_MINUTES

from .byte_ring import ByteRing

_A = STATE_CODES[State.AVAILABLE]
_F = STATE_CODES[State.APPARENT_FAILURE]


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
        for m in range(old.head - RECENT + 1, old.head + 3):
            assert new.code_at(m) == old.code_at(m), m
        # older than the recent minutes: no full code kept (the counts above still hold)
        for m in range(old.head - RECENT - 2, old.head - RECENT + 1):
            assert new.code_at(m) == EMPTY, m


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


# A run: `length` minutes in a row with one code, starting `gap` minutes after the head, so
# whole pages fill with one value (and are shared) and are later written into again.
RUNS = st.lists(
    st.tuples(st.integers(1, 3 * DAY), st.integers(1, 2 * DAY), st.sampled_from(CODES)),
    max_size=20,
)


@settings(max_examples=60, deadline=None)
@given(RUNS, st.integers(0, 90))
def test_runs_that_fill_and_share_whole_pages_count_as_the_byte_ring(runs, late) -> None:
    new, old = MinuteRing(), ByteRing()
    head = 7_000_000
    for gap, length, code in runs:
        for minute in range(head + gap, head + gap + length):
            new.put(minute, code)
            old.put(minute, code)
        head = minute
        for ring in (new, old):  # a late row into a page that may be shared
            ring.put(head - late * 37, _F)
        assert_same(new, old)


def owned_pages(ring: MinuteRing) -> int:
    """Pages the ring holds of its own (a shared page is an immutable bytes object)."""
    return sum(type(page) is bytearray for page in (*ring.days, *ring.recent))


def test_a_healthy_target_keeps_only_the_pages_its_newest_minutes_are_in() -> None:
    ring = MinuteRing()
    for minute in range(40 * DAY):
        ring.put(minute, _A)
    assert owned_pages(ring) <= 2  # the day and the recent page being written
    assert ring.available == WINDOWS
    # a failed minute makes its day's page the target's own until that day is written anew
    ring.put(40 * DAY, _F)
    assert ring.failed == dict.fromkeys(WINDOWS, 1)
    for minute in range(40 * DAY + 1, 72 * DAY):
        ring.put(minute, _A)
    assert owned_pages(ring) <= 2
    assert ring.failed == dict.fromkeys(WINDOWS, 0)


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
