"""Minute verdicts (DESIGN.md §3): the outcomes of a minute's attempts in, one state out.

Pure functions: the caller says which attempts started in the minute, whether the minute lies
in a declared maintenance window and whether the network check failed in it.
"""

from __future__ import annotations

from collections.abc import Mapping

from .types import Outcome, OutcomeCounts, Policy, Reason, State, Verdict

MAINTENANCE = Verdict(State.MAINTENANCE)
AVAILABLE = Verdict(State.AVAILABLE)
APPARENT_FAILURE = Verdict(State.APPARENT_FAILURE)

# When a strict verdict has several no_data probes, the reason that explains most wins.
_REASON_PRIORITY = (Reason.PROBER_NETWORK, Reason.EXCLUDED_ONLY, Reason.PROBER_DOWN)


def apply_network_check(outcome: Outcome, network_failed: bool) -> Outcome:
    """SLA 4.11: when every reference endpoint failed in the minute, the prober's own network
    was broken, so a provider failure seen then is the prober's fault, not the provider's."""
    if network_failed and outcome is Outcome.FAILURE:
        return Outcome.PROBER_FAULT
    return outcome


def decide(
    counts: OutcomeCounts, *, maintenance: bool = False, network_failed: bool = False
) -> Verdict:
    """The SLA verdict of one minute over the given attempts (of one probe or of a target)."""
    if maintenance:
        return MAINTENANCE
    if counts.success:
        # "In full or in part": one success makes the minute available.
        return AVAILABLE
    if counts.failure and not network_failed:
        return APPARENT_FAILURE
    if network_failed or counts.prober_fault:
        return Verdict(State.NO_DATA, Reason.PROBER_NETWORK)
    if counts.total == 0:
        return Verdict(State.NO_DATA, Reason.PROBER_DOWN)
    return Verdict(State.NO_DATA, Reason.EXCLUDED_ONLY)


def decide_probes(
    per_probe: Mapping[str, OutcomeCounts],
    *,
    maintenance: bool = False,
    network_failed: bool = False,
) -> dict[str, Verdict]:
    """Per-probe verdicts: the same rules over each probe's own attempts."""
    return {
        probe: decide(counts, maintenance=maintenance, network_failed=network_failed)
        for probe, counts in per_probe.items()
    }


def decide_target(
    per_probe: Mapping[str, OutcomeCounts],
    *,
    policy: Policy = Policy.SLA,
    maintenance: bool = False,
    network_failed: bool = False,
) -> Verdict:
    """The target's verdict of one minute over all its configured probes.

    `per_probe` must name every configured probe (with zero counts when it made no attempt),
    so that `strict` can tell a probe that never ran from one that succeeded.
    """
    if policy is Policy.SLA:
        total = OutcomeCounts()
        for counts in per_probe.values():
            total = total + counts
        return decide(total, maintenance=maintenance, network_failed=network_failed)
    if maintenance:
        return MAINTENANCE
    verdicts = decide_probes(per_probe, network_failed=network_failed).values()
    states = {v.state for v in verdicts}
    if State.APPARENT_FAILURE in states:
        return APPARENT_FAILURE
    if states == {State.AVAILABLE}:
        return AVAILABLE
    reasons = {v.reason for v in verdicts if v.state is State.NO_DATA}
    for reason in _REASON_PRIORITY:
        if reason in reasons:
            return Verdict(State.NO_DATA, reason)
    return Verdict(State.NO_DATA, Reason.PROBER_DOWN)
