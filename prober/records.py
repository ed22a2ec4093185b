"""The record of one attempt, shared by adapters (who make it), the ledger and reports."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

from .sla import Outcome, OutcomeCounts, Verdict


@dataclass(frozen=True, slots=True)
class Attempt:
    target: str
    probe: str
    started_at: float  # wall clock, seconds since the epoch (UTC): decides the minute
    duration: float  # monotonic clock, seconds
    outcome: Outcome
    error_kind: str = ""  # small fixed vocabulary per adapter, usable as a label
    error_code: int | None = None  # the provider's own error code, when it gave one
    http_status: int | None = None
    detail: str = ""  # short, already redacted
    # notAfter (epoch seconds) of the peer certificate the attempt saw; live only, the
    # ledger does not store it
    tls_not_after: float | None = None
    vantage: str = ""  # the prober instance (place) that made it

    @property
    def minute(self) -> int:
        return int(self.started_at // 60)


@dataclass(slots=True)
class ClosedMinute:
    """Everything decided about one target's minute, written in one transaction."""

    target: str
    minute: int
    verdict: Verdict
    counts: OutcomeCounts
    probes: dict[str, tuple[Verdict, OutcomeCounts]] = field(default_factory=dict)
    attempts: Sequence[Attempt] = ()  # what it was decided over (stored as they ended)
    # the network check failed in this minute: the stored failures become prober_fault
    network_failed: bool = False
