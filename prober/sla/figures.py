"""Availability figures over a period, in exact arithmetic (docs/sla.md, "Figures")."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from fractions import Fraction

from .months import ServiceMonth
from .types import State


@dataclass(frozen=True, slots=True)
class Figures:
    """Minute counts of a period. `total` is the minutes of the period that have elapsed;
    `no_data` is everything not counted otherwise, rows or not."""

    total: int
    available: int = 0
    apparent_failure: int = 0
    maintenance: int = 0

    def __post_init__(self) -> None:
        counted = self.available + self.apparent_failure + self.maintenance
        if min(self.total, self.available, self.apparent_failure, self.maintenance) < 0:
            raise ValueError("minute counts cannot be negative")
        if counted > self.total:
            raise ValueError(f"{counted} counted minutes exceed the period's {self.total}")

    @property
    def no_data(self) -> int:
        return self.total - self.available - self.apparent_failure - self.maintenance

    @property
    def sla_availability(self) -> Fraction | None:
        """1 - F/T: the SLA's own formula, where unobserved minutes are not failures."""
        if self.total == 0:
            return None
        return 1 - Fraction(self.apparent_failure, self.total)

    @property
    def measured_availability(self) -> Fraction | None:
        """A / (A + F): availability over the minutes actually observed."""
        observed = self.available + self.apparent_failure
        return Fraction(self.available, observed) if observed else None

    @property
    def coverage(self) -> Fraction | None:
        """(A + F) / (T - M): how much of the period outside maintenance was observed."""
        outside = self.total - self.maintenance
        if outside == 0:
            return None
        return Fraction(self.available + self.apparent_failure, outside)

    @property
    def downtime_seconds(self) -> int:
        return self.apparent_failure * 60


def count_states(states: Iterable[State], total: int) -> Figures:
    """Figures from the verdicts of the minutes that have rows; `total` counts all elapsed."""
    counts = dict.fromkeys(State, 0)
    for state in states:
        counts[State(state)] += 1
    return Figures(
        total=total,
        available=counts[State.AVAILABLE],
        apparent_failure=counts[State.APPARENT_FAILURE],
        maintenance=counts[State.MAINTENANCE],
    )


def downtime_budget_seconds(objective: Fraction, month_minutes: int) -> int:
    """Whole failed minutes a month may have and still meet the objective, in seconds.

    1 - F/T >= objective  <=>  F <= T * (1 - objective); the floor keeps it exact.
    """
    allowed = (month_minutes * (1 - objective)).__floor__()
    return max(0, allowed) * 60


def month_so_far(month: ServiceMonth, end_minute: int, counts: Mapping[State, int]) -> Figures:
    """The one definition of a service month "so far", used by the report, the metrics and
    anything else that shows it: the month's minutes before `end_minute`, the minute in
    progress at the instant the figures describe. The report takes the minute of its
    `--now`; the daemon the one after its newest closed minute (the same instant, a few
    seconds after that minute ended). `counts` are the month's minutes by state before
    `end_minute`; every elapsed minute they do not name is unobserved. Once the month has
    ended, all of its minutes count."""
    elapsed = max(0, min(end_minute, month.end_minute) - month.start_minute)
    available = counts.get(State.AVAILABLE, 0)
    failed = counts.get(State.APPARENT_FAILURE, 0)
    maintenance = counts.get(State.MAINTENANCE, 0)
    # Rows are never ahead of the end the caller names; if a hand-edited ledger has some,
    # they still count rather than making the figures impossible.
    total = max(elapsed, available + failed + maintenance)
    return Figures(total, available, failed, maintenance)
