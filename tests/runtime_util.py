"""A wall clock the test moves, for the runtime's tests that drive a Prober in-process."""

from __future__ import annotations

BASE = 29_930_000 * 60  # a whole minute, as epoch seconds


class FakeClock:
    """The wall clock stands where the test puts it; the monotonic one creeps forward a
    millisecond a reading, so durations stay positive."""

    def __init__(self, wall: float) -> None:
        self.now = wall
        self._mono = 1000.0

    def wall(self) -> float:
        return self.now

    def monotonic(self) -> float:
        self._mono += 0.001
        return self._mono
