"""The minute ring as it was before the compact one (one byte a minute for 30 days): the
oracle the compact ring is tested against, and the baseline bench/view_bench.py measures."""

from __future__ import annotations

from fractions import Fraction

from prober.ledger.codes import STATE_CODES
from prober.ledger.view import EMPTY, RING, WINDOWS
from prober.sla import State

_A = STATE_CODES[State.AVAILABLE]
_F = STATE_CODES[State.APPARENT_FAILURE]


class ByteRing:
    """The ring as it was before the compact one: one byte a minute for 30 days."""

    __slots__ = ("available", "failed", "head", "states")

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
