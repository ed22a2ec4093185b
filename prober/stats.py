"""Live counters of this process, not from the ledger: what the runtime counts as it goes
and the exposition renders. Both import this module and neither imports the other; the
daemon makes one `RuntimeStats` and hands it to both."""

from __future__ import annotations

import bisect
from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from typing import Protocol

DURATION_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)
LAG_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)


class Histogram:
    """Counts per bucket (the last one unbounded) and the sum."""

    __slots__ = ("buckets", "counts", "sum")

    def __init__(self, buckets: Sequence[float]) -> None:
        self.buckets = tuple(buckets)
        self.counts = [0] * (len(self.buckets) + 1)
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect.bisect_left(self.buckets, value)] += 1
        self.sum += value


class FinishedAttempt(Protocol):
    """What the streaks need of a finished attempt (records.Attempt has it; this module
    imports nothing of the package)."""

    @property
    def target(self) -> str: ...
    @property
    def probe(self) -> str: ...
    @property
    def outcome(self) -> str: ...
    @property
    def started_at(self) -> float: ...
    @property
    def duration(self) -> float: ...


@dataclass(slots=True)
class Streak:
    """One probe's run of failed attempts, for paging before the minute closes."""

    failures: int = 0  # failed attempts in a row since the last success
    last_success: float = 0.0  # when the latest successful attempt ended; 0: none yet


@dataclass
class RuntimeStats:
    """Live state of this process (not from the ledger)."""

    ledger_write_errors: int = 0
    misfires: int = 0
    discarded_attempts: int = 0
    dropped_attempts: int = 0  # finished, never stored: the ledger refused writes too long
    # A fleet (PostgreSQL ledger): 1 while this prober closes the fleet's minutes, else 0;
    # None for a single prober. Its own vantage's verdicts per (target, state).
    fleet_closer: int | None = None
    vantage: str = ""
    vantage_verdicts: Counter[tuple[str, str]] = field(default_factory=Counter)
    vantage_moves: int = 0  # one more each time vantage_verdicts changes (the exposition's key)
    clock_steps: int = 0
    network_up: int | None = None
    reload_successful: int = 1
    reload_timestamp: float = 0.0
    lag: Histogram = field(default_factory=lambda: Histogram(LAG_BUCKETS))
    durations: dict[tuple[str, str], Histogram] = field(default_factory=dict)
    # the latest certificate notAfter each (target, probe) saw: the latest, not the least,
    # so a renewed certificate replaces the old one
    tls_not_after: dict[tuple[str, str], float] = field(default_factory=dict)
    streaks: dict[tuple[str, str], Streak] = field(default_factory=dict)
    # (target, probe)s whose duration histogram or streak moved since the exposition last
    # took this set: it renders only those again (bounded by the probes `durations` holds)
    moved: set[tuple[str, str]] = field(default_factory=set)

    def observe_duration(self, target: str, probe: str, seconds: float) -> None:
        key = (target, probe)
        histogram = self.durations.get(key)
        if histogram is None:
            histogram = self.durations[key] = Histogram(DURATION_BUCKETS)
        histogram.observe(seconds)
        self.moved.add(key)

    def saw_certificate(self, target: str, probe: str, not_after: float | None) -> None:
        """An attempt without TLS (or that failed before it) keeps the probe's last value."""
        if not_after is not None:
            self.tls_not_after[(target, probe)] = not_after

    def earliest_certificate_expiry(self, target: str, probes: Sequence[str]) -> float | None:
        """The earliest notAfter the target's probes last saw; None when none saw TLS."""
        seen = [v for p in probes if (v := self.tls_not_after.get((target, p))) is not None]
        return min(seen) if seen else None

    def saw_attempt(self, attempt: FinishedAttempt) -> None:
        """A finished attempt moves its probe's streak, in the order attempts end: `failure`
        adds one, `success` resets it to 0 and stamps the attempt's end (its start plus its
        duration); client_error, throttled and prober_fault are excluded as in the SLA, so
        they neither add nor reset, and so is a failure while the network check says the
        prober's own network is down."""
        outcome = attempt.outcome
        if outcome != "failure" and outcome != "success":
            return
        if outcome == "failure" and self.network_up == 0:
            # the latest network check found every reference down: the minute will count
            # this failure as the prober's own (SLA 4.11), so it must not page either
            return
        key = (attempt.target, attempt.probe)
        streak = self.streaks.get(key)
        if streak is None:
            streak = self.streaks[key] = Streak()
        if outcome == "failure":
            streak.failures += 1
        else:
            streak.failures = 0
            # attempts may end out of order: the stamp never goes back
            streak.last_success = max(streak.last_success, attempt.started_at + attempt.duration)
        self.moved.add(key)

    def keep_streaks(self, probes: Collection[tuple[str, str]]) -> None:
        """Forget the streaks of probes no longer configured, so a target removed and added
        again later starts afresh; the others keep theirs across a reload."""
        for key in [k for k in self.streaks if k not in probes]:
            del self.streaks[key]
