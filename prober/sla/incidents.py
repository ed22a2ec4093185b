"""Incidents: runs of consecutive failed minutes."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Incident:
    start_minute: int  # epoch minute of the first failed minute
    end_minute: int  # exclusive: the first minute after the run

    @property
    def minutes(self) -> int:
        return self.end_minute - self.start_minute


def find_incidents(failed_minutes: Iterable[int]) -> list[Incident]:
    """Group failed minutes (epoch minutes, any order, no duplicates) into runs."""
    runs: list[Incident] = []
    start = previous = None
    for minute in sorted(failed_minutes):
        if previous is not None and minute == previous + 1:
            previous = minute
            continue
        if start is not None and previous is not None:
            runs.append(Incident(start, previous + 1))
        start = previous = minute
    if start is not None and previous is not None:
        runs.append(Incident(start, previous + 1))
    return runs
