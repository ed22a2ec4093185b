"""Time sources: the wall clock decides which minute an attempt belongs to, the monotonic
clock measures durations. Injected, so scheduling logic is testable without waiting."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def wall(self) -> float: ...

    def monotonic(self) -> float: ...


class SystemClock:
    def wall(self) -> float:
        return time.time()

    def monotonic(self) -> float:
        return time.monotonic()


class StepDetector:
    """Notices when the wall clock jumps (NTP step, manual change) relative to the monotonic
    clock, so the jump can be logged and the affected minutes accounted for."""

    def __init__(self, clock: Clock, tolerance: float = 1.0) -> None:
        self.clock = clock
        self.tolerance = tolerance
        self._offset = clock.wall() - clock.monotonic()

    def check(self) -> float:
        """The size of the step since the last check (0.0 when within tolerance)."""
        offset = self.clock.wall() - self.clock.monotonic()
        step = offset - self._offset
        self._offset = offset
        return step if abs(step) > self.tolerance else 0.0
