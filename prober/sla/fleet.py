"""The fleet verdict: several vantage points' verdicts of one minute in, one verdict out.

The SLA counts a minute available when the service worked "in full or in part", so one
vantage's success is enough. A failure counts when a vantage whose own network check passed
saw it (its verdict is then apparent_failure), and only when at least `quorum` vantages did:
fewer make the minute no_data/below_quorum, so one vantage's bad path cannot fail a minute
the operator asked several to agree on. Pure, like the rest of this package.
"""

from __future__ import annotations

from collections.abc import Iterable

from .types import Reason, State, Verdict
from .verdicts import APPARENT_FAILURE, AVAILABLE, MAINTENANCE

# With nobody failing or succeeding, the reason that explains most wins.
_REASON_PRIORITY = (Reason.PROBER_NETWORK, Reason.EXCLUDED_ONLY)


def decide_fleet(
    vantage_verdicts: Iterable[Verdict], *, maintenance: bool = False, quorum: int = 1
) -> Verdict:
    """The minute over every vantage that decided it (vantages that did not are absent)."""
    if quorum < 1:
        raise ValueError("a quorum is at least one vantage")
    if maintenance:
        return MAINTENANCE
    failing = 0
    reasons: set[Reason] = set()
    for verdict in vantage_verdicts:
        if verdict.state is State.AVAILABLE:
            return AVAILABLE
        if verdict.state is State.APPARENT_FAILURE:
            failing += 1
        elif verdict.state is State.NO_DATA:
            reasons.add(verdict.reason)
    if failing >= quorum:
        return APPARENT_FAILURE
    if failing:
        return Verdict(State.NO_DATA, Reason.BELOW_QUORUM)
    for reason in _REASON_PRIORITY:
        if reason in reasons:
            return Verdict(State.NO_DATA, reason)
    return Verdict(State.NO_DATA, Reason.PROBER_DOWN)
