"""The fleet verdict: a minute decided over several vantages' verdicts, exact cases and
properties (one success anywhere wins; failures count only from vantages whose network check
passed, and only when at least `quorum` vantages saw them)."""

import pytest
from hypothesis import given
from hypothesis import strategies as st

from prober.sla import Outcome, OutcomeCounts, Reason, State, Verdict, decide, decide_fleet

OK = Verdict(State.AVAILABLE)
FAIL = Verdict(State.APPARENT_FAILURE)
DOWN = Verdict(State.NO_DATA, Reason.PROBER_DOWN)
NETWORK = Verdict(State.NO_DATA, Reason.PROBER_NETWORK)
EXCLUDED = Verdict(State.NO_DATA, Reason.EXCLUDED_ONLY)
BELOW = Verdict(State.NO_DATA, Reason.BELOW_QUORUM)


def test_one_vantages_success_makes_the_minute_available_whatever_the_others_saw() -> None:
    assert decide_fleet([FAIL, FAIL, OK], quorum=2) == OK
    assert decide_fleet([NETWORK, OK]) == OK


def test_one_vantages_failure_fails_the_minute_at_the_default_quorum() -> None:
    assert decide_fleet([FAIL, DOWN]) == FAIL


def test_failures_below_the_quorum_are_no_data_below_quorum() -> None:
    assert decide_fleet([FAIL, NETWORK], quorum=2) == BELOW
    assert decide_fleet([FAIL], quorum=2) == BELOW
    assert decide_fleet([FAIL, FAIL], quorum=2) == FAIL
    assert decide_fleet([FAIL, FAIL, FAIL], quorum=3) == FAIL


def test_a_vantage_whose_network_failed_adds_no_failure() -> None:
    assert decide_fleet([NETWORK, NETWORK]) == NETWORK
    assert decide_fleet([NETWORK, FAIL], quorum=2) == BELOW


def test_nobody_observing_is_prober_down_and_the_reason_that_explains_most_wins() -> None:
    assert decide_fleet([]) == DOWN
    assert decide_fleet([DOWN, DOWN]) == DOWN
    assert decide_fleet([DOWN, EXCLUDED]) == EXCLUDED
    assert decide_fleet([EXCLUDED, NETWORK, DOWN]) == NETWORK


def test_maintenance_wins_over_everything() -> None:
    assert decide_fleet([FAIL, FAIL], maintenance=True) == Verdict(State.MAINTENANCE)


def test_a_quorum_below_one_is_refused() -> None:
    with pytest.raises(ValueError):
        decide_fleet([FAIL], quorum=0)


outcomes = st.lists(st.sampled_from(list(Outcome)), max_size=6)


@given(st.lists(outcomes, min_size=1, max_size=5))
def test_at_quorum_one_the_fleet_decides_as_one_prober_over_every_attempt(
    per_vantage: list[list[Outcome]],
) -> None:
    # without network failures, the union over vantages is the verdict over all attempts
    merged = [o for attempts in per_vantage for o in attempts if o is not Outcome.PROBER_FAULT]
    cleaned = [[o for o in a if o is not Outcome.PROBER_FAULT] for a in per_vantage]
    fleet = decide_fleet(decide(OutcomeCounts.of(a)) for a in cleaned)
    alone = decide(OutcomeCounts.of(merged))
    assert fleet.state == alone.state


@given(
    st.lists(st.sampled_from([OK, FAIL, DOWN, NETWORK, EXCLUDED]), max_size=6), st.integers(1, 6)
)
def test_a_higher_quorum_never_fails_a_minute_a_lower_one_did_not(
    verdicts: list[Verdict], quorum: int
) -> None:
    lower = decide_fleet(verdicts, quorum=quorum)
    higher = decide_fleet(verdicts, quorum=quorum + 1)
    if lower.state is not State.APPARENT_FAILURE:
        assert higher.state is not State.APPARENT_FAILURE
    assert (lower.state is State.AVAILABLE) == (higher.state is State.AVAILABLE)
