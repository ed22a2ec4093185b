"""Figures and credits at the exact boundaries (DESIGN.md §4-§5), and against a recount."""

from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from prober.sla import (
    DEFAULT_TIERS,
    Figures,
    State,
    count_states,
    credit_amount,
    credit_ratio,
    downtime_budget_seconds,
    month_so_far,
)

THIRTY_DAYS = 30 * 24 * 60  # 43,200 minutes


@pytest.mark.parametrize(
    ("failed", "percent"),
    [
        (0, 0),
        (431, 0),
        (432, 0),  # exactly 99.00%: the objective is met
        (433, 10),
        (2160, 10),  # exactly 95.00%
        (2161, 20),
        (4320, 20),  # exactly 90.00%
        (4321, 30),
        (THIRTY_DAYS, 30),
    ],
)
def test_credit_tier_boundaries_in_a_thirty_day_month(failed: int, percent: int) -> None:
    figures = Figures(total=THIRTY_DAYS, available=THIRTY_DAYS - failed, apparent_failure=failed)
    assert figures.sla_availability == 1 - Fraction(failed, THIRTY_DAYS)
    assert credit_ratio(figures.sla_availability) == Fraction(percent, 100)


def test_432_failed_minutes_is_exactly_the_objective() -> None:
    figures = Figures(total=THIRTY_DAYS, apparent_failure=432)
    assert figures.sla_availability == Fraction(99, 100)
    assert downtime_budget_seconds(Fraction(99, 100), THIRTY_DAYS) == 432 * 60
    # A float computation would land on the wrong side of this boundary for some months.
    assert downtime_budget_seconds(Fraction(99, 100), 44_640) == 446 * 60


def test_no_data_is_not_failure_but_lowers_coverage() -> None:
    figures = Figures(total=100, available=50, apparent_failure=0, maintenance=10)
    assert figures.no_data == 40
    assert figures.sla_availability == 1
    assert figures.measured_availability == 1
    assert figures.coverage == Fraction(50, 90)


def test_undefined_figures() -> None:
    empty = Figures(total=0)
    assert empty.sla_availability is None
    assert empty.measured_availability is None
    assert empty.coverage is None
    all_maintenance = Figures(total=5, maintenance=5)
    assert all_maintenance.coverage is None
    assert all_maintenance.sla_availability == 1


def test_counts_cannot_exceed_the_period() -> None:
    with pytest.raises(ValueError):
        Figures(total=10, available=6, apparent_failure=5)


def test_credit_amount_never_exceeds_the_fee_and_rounds_to_cents() -> None:
    assert credit_amount(Decimal("1200.00"), Fraction(1, 10)) == Decimal("120.00")
    assert credit_amount(Decimal("99.99"), Fraction(3, 10)) == Decimal("30.00")  # 29.997
    assert credit_amount(Decimal("10"), Fraction(3, 2)) == Decimal("10.00")
    assert credit_amount(Decimal("0.01"), Fraction(1, 10)) == Decimal("0.00")


@given(
    st.decimals(min_value=0, max_value=10**9, places=2, allow_nan=False, allow_infinity=False),
    st.fractions(min_value=0, max_value=3),
)
def test_credit_never_exceeds_the_fee(fee: Decimal, ratio: Fraction) -> None:
    amount = credit_amount(fee, ratio)
    assert Decimal(0) <= amount <= fee


@given(st.lists(st.sampled_from(list(State)), max_size=300), st.integers(0, 50))
def test_figures_match_a_brute_force_recount(states, unrowed) -> None:
    total = len(states) + unrowed
    figures = count_states(states, total)
    a = sum(s is State.AVAILABLE for s in states)
    f = sum(s is State.APPARENT_FAILURE for s in states)
    m = sum(s is State.MAINTENANCE for s in states)
    assert (figures.available, figures.apparent_failure, figures.maintenance) == (a, f, m)
    assert figures.no_data == total - a - f - m
    for value in (figures.sla_availability, figures.measured_availability, figures.coverage):
        assert value is None or 0 <= value <= 1
    if total:
        assert figures.sla_availability == Fraction(total - f, total)
    if a + f:
        assert figures.measured_availability == Fraction(a, a + f)
    ratio = credit_ratio(figures.sla_availability or Fraction(1))
    assert ratio in {t.credit for t in DEFAULT_TIERS} | {Fraction(0)}


# -- the month so far: one definition for the report, the metrics and the status page ----

_APRIL = (
    __import__("prober.sla", fromlist=["ServiceCalendar"])
    .ServiceCalendar(__import__("datetime").date(2026, 3, 17), "Asia/Shanghai")
    .month_starting_in(2026, 4)
)


@pytest.mark.parametrize(
    ("end", "total"),
    [
        (_APRIL.start_minute - 5, 0),  # before the month: nothing has elapsed
        (_APRIL.start_minute, 0),  # its first minute is in progress
        (_APRIL.start_minute + 1, 1),  # its first minute has ended
        (_APRIL.end_minute - 1, 43_199),
        (_APRIL.end_minute, 43_200),  # ended: every minute of the 30 days
        (_APRIL.end_minute + 10_000, 43_200),  # and no more, however late
    ],
)
def test_the_month_so_far_counts_the_minutes_before_the_end_minute(end: int, total: int) -> None:
    figures = month_so_far(_APRIL, end, {})
    assert figures.total == total
    assert figures.no_data == total  # minutes without a row are unobserved


@given(
    st.integers(0, 43_200),
    st.integers(0, 500),
    st.integers(0, 500),
    st.integers(0, 100),
)
def test_the_month_so_far_never_counts_more_than_it_was_given(
    elapsed: int, available: int, failed: int, maintenance: int
) -> None:
    counts = {
        State.AVAILABLE: available,
        State.APPARENT_FAILURE: failed,
        State.MAINTENANCE: maintenance,
    }
    figures = month_so_far(_APRIL, _APRIL.start_minute + elapsed, counts)
    assert figures.total == max(elapsed, available + failed + maintenance)
    assert (figures.available, figures.apparent_failure, figures.maintenance) == (
        available,
        failed,
        maintenance,
    )
