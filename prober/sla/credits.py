"""Credit tiers and amounts (DESIGN.md §5), compared exactly."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from fractions import Fraction


@dataclass(frozen=True, slots=True)
class CreditTier:
    """A month whose availability is below `below` earns `credit` of the monthly fee."""

    below: Fraction
    credit: Fraction


DEFAULT_TIERS: tuple[CreditTier, ...] = (
    CreditTier(Fraction(99, 100), Fraction(10, 100)),
    CreditTier(Fraction(95, 100), Fraction(20, 100)),
    CreditTier(Fraction(90, 100), Fraction(30, 100)),
)


def credit_ratio(availability: Fraction, tiers: Sequence[CreditTier] = DEFAULT_TIERS) -> Fraction:
    """The share of the fee owed: the largest credit of every tier the availability is below,
    capped at the whole fee."""
    owed = max((t.credit for t in tiers if availability < t.below), default=Fraction(0))
    return min(owed, Fraction(1))


def credit_amount(fee: Decimal, ratio: Fraction) -> Decimal:
    """The fee times the ratio, rounded half-up to the fee's precision (cents at least),
    never above the fee."""
    if not fee.is_finite() or fee < 0:
        raise ValueError("the monthly fee must be a finite, non-negative amount")
    quantum = Decimal(1).scaleb(min(int(fee.as_tuple().exponent), -2))
    exact = Fraction(fee) * min(max(ratio, Fraction(0)), Fraction(1))
    amount = (Decimal(exact.numerator) / Decimal(exact.denominator)).quantize(
        quantum, rounding=ROUND_HALF_UP
    )
    return min(amount, fee.quantize(quantum))
