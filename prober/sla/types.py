"""The vocabulary of the SLA core: outcomes of attempts, states of minutes, reasons."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Outcome(StrEnum):
    """What one attempt of one probe showed (DESIGN.md §2)."""

    SUCCESS = "success"
    FAILURE = "failure"  # the service failed: counts against the provider
    CLIENT_ERROR = "client_error"  # the caller's own fault: excluded
    THROTTLED = "throttled"  # rate limited: excluded
    PROBER_FAULT = "prober_fault"  # the prober's own network or host was broken: excluded


class State(StrEnum):
    """The verdict of one minute."""

    AVAILABLE = "available"
    APPARENT_FAILURE = "apparent_failure"
    MAINTENANCE = "maintenance"
    NO_DATA = "no_data"


class Reason(StrEnum):
    """Why a minute is `no_data` (empty for every other state)."""

    NONE = ""
    PROBER_DOWN = "prober_down"
    PROBER_NETWORK = "prober_network"
    EXCLUDED_ONLY = "excluded_only"
    BELOW_QUORUM = "below_quorum"  # a fleet: fewer vantages saw failures than the quorum


class Policy(StrEnum):
    """`sla`: one success in the minute is enough (the SLA's rule, used by reports).
    `strict`: every configured probe needs a success (for internal objectives)."""

    SLA = "sla"
    STRICT = "strict"


@dataclass(frozen=True, slots=True)
class OutcomeCounts:
    """How many attempts of a minute ended in each outcome."""

    success: int = 0
    failure: int = 0
    client_error: int = 0
    throttled: int = 0
    prober_fault: int = 0

    @classmethod
    def of(cls, outcomes: list[Outcome] | tuple[Outcome, ...]) -> OutcomeCounts:
        counts = dict.fromkeys(Outcome, 0)
        for outcome in outcomes:
            counts[Outcome(outcome)] += 1
        return cls(*(counts[o] for o in Outcome))

    def __add__(self, other: OutcomeCounts) -> OutcomeCounts:
        return OutcomeCounts(
            self.success + other.success,
            self.failure + other.failure,
            self.client_error + other.client_error,
            self.throttled + other.throttled,
            self.prober_fault + other.prober_fault,
        )

    @property
    def total(self) -> int:
        return self.success + self.failure + self.client_error + self.throttled + self.prober_fault

    def as_tuple(self) -> tuple[int, int, int, int, int]:
        return (self.success, self.failure, self.client_error, self.throttled, self.prober_fault)


@dataclass(frozen=True, slots=True)
class Verdict:
    state: State
    reason: Reason = Reason.NONE

    def __str__(self) -> str:
        return f"{self.state}/{self.reason}" if self.reason else str(self.state)
