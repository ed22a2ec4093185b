"""Minute verdict rules (DESIGN.md §3), exact cases and properties over any mix of outcomes."""

from hypothesis import given
from hypothesis import strategies as st

from prober.sla import (
    Outcome,
    OutcomeCounts,
    Policy,
    Reason,
    State,
    Verdict,
    apply_network_check,
    decide,
    decide_target,
)

S, F, C, T, P = (
    Outcome.SUCCESS,
    Outcome.FAILURE,
    Outcome.CLIENT_ERROR,
    Outcome.THROTTLED,
    Outcome.PROBER_FAULT,
)


def verdict(*outcomes: Outcome, **kw: bool) -> Verdict:
    return decide(OutcomeCounts.of(list(outcomes)), **kw)


def test_one_success_among_failures_makes_the_minute_available() -> None:
    assert verdict(F, F, F, S) == Verdict(State.AVAILABLE)


def test_all_failures_is_an_apparent_failure() -> None:
    assert verdict(F, F, F, F) == Verdict(State.APPARENT_FAILURE)


def test_failures_with_excluded_outcomes_still_fail() -> None:
    assert verdict(F, C, T) == Verdict(State.APPARENT_FAILURE)


def test_no_attempt_is_prober_down() -> None:
    assert verdict() == Verdict(State.NO_DATA, Reason.PROBER_DOWN)


def test_only_excluded_outcomes() -> None:
    assert verdict(C, T, C) == Verdict(State.NO_DATA, Reason.EXCLUDED_ONLY)


def test_network_check_failure_turns_failures_into_no_data() -> None:
    assert verdict(F, F, network_failed=True) == Verdict(State.NO_DATA, Reason.PROBER_NETWORK)
    assert verdict(P) == Verdict(State.NO_DATA, Reason.PROBER_NETWORK)


def test_a_success_wins_even_when_the_network_check_failed() -> None:
    assert verdict(F, S, network_failed=True) == Verdict(State.AVAILABLE)


def test_maintenance_wins_over_everything() -> None:
    for outcomes in [(), (F, F), (S,), (C,)]:
        assert verdict(*outcomes, maintenance=True) == Verdict(State.MAINTENANCE)


def test_apply_network_check_only_touches_failures() -> None:
    assert apply_network_check(F, True) is P
    assert apply_network_check(F, False) is F
    for outcome in (S, C, T, P):
        assert apply_network_check(outcome, True) is outcome


def test_sla_policy_login_works_send_fails_is_available() -> None:
    per_probe = {"login": OutcomeCounts.of([S]), "send_c2c": OutcomeCounts.of([F, F, F, F])}
    assert decide_target(per_probe) == Verdict(State.AVAILABLE)
    assert decide_target(per_probe, policy=Policy.STRICT) == Verdict(State.APPARENT_FAILURE)


def test_strict_policy_needs_every_probe_to_succeed() -> None:
    both = {"login": OutcomeCounts.of([S]), "send_c2c": OutcomeCounts.of([F, S])}
    assert decide_target(both, policy=Policy.STRICT) == Verdict(State.AVAILABLE)
    missing = {"login": OutcomeCounts.of([S]), "send_c2c": OutcomeCounts()}
    assert decide_target(missing, policy=Policy.STRICT) == Verdict(
        State.NO_DATA, Reason.PROBER_DOWN
    )
    excluded = {"login": OutcomeCounts.of([S]), "send_c2c": OutcomeCounts.of([C])}
    assert decide_target(excluded, policy=Policy.STRICT) == Verdict(
        State.NO_DATA, Reason.EXCLUDED_ONLY
    )


outcome_lists = st.lists(st.sampled_from(list(Outcome)), max_size=12)


@given(outcome_lists, st.booleans(), st.booleans())
def test_verdict_rules_hold_for_any_mix(outcomes, maintenance, network_failed) -> None:
    result = verdict(*outcomes, maintenance=maintenance, network_failed=network_failed)
    if maintenance:
        assert result.state is State.MAINTENANCE
    elif S in outcomes:
        assert result.state is State.AVAILABLE
    elif F in outcomes and not network_failed:
        assert result.state is State.APPARENT_FAILURE
    else:
        assert result.state is State.NO_DATA
        if network_failed or P in outcomes:
            assert result.reason is Reason.PROBER_NETWORK
        elif not outcomes:
            assert result.reason is Reason.PROBER_DOWN
        else:
            assert result.reason is Reason.EXCLUDED_ONLY
    assert (result.state is State.NO_DATA) == bool(result.reason)


@given(
    st.dictionaries(
        st.sampled_from(["login", "send_c2c", "send_group"]), outcome_lists, min_size=1
    ),
    st.booleans(),
)
def test_target_verdict_under_sla_equals_verdict_over_all_attempts(per_probe, network_failed):
    counts = {p: OutcomeCounts.of(o) for p, o in per_probe.items()}
    everything = [o for outcomes in per_probe.values() for o in outcomes]
    assert decide_target(counts, network_failed=network_failed) == verdict(
        *everything, network_failed=network_failed
    )
    strict = decide_target(counts, policy=Policy.STRICT, network_failed=network_failed)
    # strict never calls a minute available that the SLA calls failed, and vice versa
    sla = decide_target(counts, network_failed=network_failed)
    if strict.state is State.AVAILABLE:
        assert sla.state is State.AVAILABLE
    if sla.state is State.APPARENT_FAILURE:
        assert strict.state is State.APPARENT_FAILURE
