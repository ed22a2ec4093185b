"""The minute book: attempts gathered per target and minute until the minute closes, then
decided (DESIGN.md §3) into what the ledger stores. No I/O here."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field, replace

from ..records import Attempt, ClosedMinute
from ..sla import (
    Outcome,
    OutcomeCounts,
    Policy,
    Window,
    apply_network_check,
    decide,
    decide_target,
    in_maintenance,
)


@dataclass(frozen=True, slots=True)
class TargetRules:
    """What the closer needs to know of a target to decide its minutes."""

    name: str
    probes: tuple[str, ...]
    policy: Policy
    windows: tuple[Window, ...]


@dataclass
class MinuteBook:
    attempts: dict[tuple[str, int], list[Attempt]] = field(
        default_factory=lambda: defaultdict(list)
    )
    in_flight: dict[int, int] = field(default_factory=lambda: defaultdict(int))
    # per minute: one entry per network-check round, True when every reference failed
    network_rounds: dict[int, list[bool]] = field(default_factory=lambda: defaultdict(list))
    closed_through: int | None = None  # every minute up to this one is closed

    def is_closed(self, minute: int) -> bool:
        return self.closed_through is not None and minute <= self.closed_through

    def started(self, minute: int) -> None:
        self.in_flight[minute] += 1

    def abandoned(self, planned_minute: int) -> None:
        """An attempt that was cancelled (shutdown) and records nothing."""
        left = self.in_flight.get(planned_minute, 0) - 1
        if left > 0:
            self.in_flight[planned_minute] = left
        else:
            self.in_flight.pop(planned_minute, None)

    def finished(self, attempt: Attempt, planned_minute: int) -> bool:
        """Record a finished attempt; False when its minute has already closed (a late
        attempt after a clock step or a stall), which the caller reports."""
        self.abandoned(planned_minute)
        if self.is_closed(attempt.minute):
            return False
        self.attempts[(attempt.target, attempt.minute)].append(attempt)
        return True

    def network_round(self, minute: int, all_failed: bool) -> None:
        if not self.is_closed(minute):
            self.network_rounds[minute].append(all_failed)

    def network_failed(self, minute: int) -> bool:
        """Failed when checks ran in the minute and every round found every reference down:
        one working round means the prober could reach the outside world."""
        rounds = self.network_rounds.get(minute)
        return bool(rounds) and all(rounds)

    def busy(self, minute: int) -> bool:
        """Attempts of `minute` or an earlier one are running."""
        return any(m <= minute for m in self.in_flight)

    def running(self, minute: int) -> bool:
        """Attempts of `minute` itself are running."""
        return minute in self.in_flight

    def close(self, minute: int, targets: Iterable[TargetRules]) -> list[ClosedMinute]:
        """Decide `minute` for every target and forget its attempts."""
        closed = self.decide(minute, targets)
        self.seal(minute)
        return closed

    def seal(self, minute: int) -> None:
        """Mark `minute` closed once every target has been decided: later attempts for it are
        refused, and what is left of it (targets removed meanwhile) is dropped."""
        self.network_rounds.pop(minute, None)
        self.closed_through = (
            minute if self.closed_through is None else max(self.closed_through, minute)
        )
        for key in [k for k in self.attempts if k[1] <= minute]:
            del self.attempts[key]

    def decide(self, minute: int, targets: Iterable[TargetRules]) -> list[ClosedMinute]:
        """Decide `minute` for these targets (the closer may go in chunks), taking their
        attempts out of the book."""
        network_failed = self.network_failed(minute)
        closed = []
        for rules in targets:
            attempts = [
                _with_outcome(a, apply_network_check(a.outcome, network_failed))
                for a in self.attempts.pop((rules.name, minute), [])
            ]
            maintenance = in_maintenance(minute, rules.windows)
            # each probe's outcomes counted in one pass over the minute's attempts; attempts
            # of a probe no longer configured (after a reload) still count
            tallies = {probe: dict.fromkeys(_OUTCOMES, 0) for probe in rules.probes}
            for a in attempts:
                tally = tallies.get(a.probe)
                if tally is None:
                    tally = tallies[a.probe] = dict.fromkeys(_OUTCOMES, 0)
                tally[a.outcome] += 1
            per_probe = {probe: OutcomeCounts(*t.values()) for probe, t in tallies.items()}
            verdict = decide_target(
                per_probe,
                policy=rules.policy,
                maintenance=maintenance,
                network_failed=network_failed,
            )
            probes = {
                p: (decide(c, maintenance=maintenance, network_failed=network_failed), c)
                for p, c in per_probe.items()
            }
            total = OutcomeCounts()
            for counts in per_probe.values():
                total = total + counts
            closed.append(
                ClosedMinute(rules.name, minute, verdict, total, probes, attempts, network_failed)
            )
        return closed

    def restore(self, attempts: Iterable[Attempt], rounds: Iterable[tuple[int, bool]]) -> None:
        """Take back what an earlier process of this vantage stored for minutes not closed
        yet, so they are decided over both processes' attempts."""
        for attempt in attempts:
            if not self.is_closed(attempt.minute):
                self.attempts[(attempt.target, attempt.minute)].append(attempt)
        for minute, all_failed in rounds:
            self.network_round(minute, all_failed)


_OUTCOMES = tuple(Outcome)  # OutcomeCounts' fields, in order


def _with_outcome(attempt: Attempt, outcome: Outcome) -> Attempt:
    return attempt if outcome is attempt.outcome else replace(attempt, outcome=outcome)
