"""Integer money: the display conversion to USD."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from teamrouter.money import UNITS_PER_USD, to_usd, to_usd_text


@given(st.integers(-(10**27), 10**27))
def test_to_usd_is_the_correctly_rounded_decimal_quotient(units: int) -> None:
    assert to_usd(units) == float(Decimal(units) / UNITS_PER_USD)


def test_to_usd_of_a_decimal_sum() -> None:
    assert to_usd(Decimal(1_500_000_000)) == 1.5  # type: ignore[arg-type]  # what PostgreSQL SUM gives
    assert to_usd(17_000) == 1.7e-05


def test_amounts_in_messages_are_exact_with_at_least_cents() -> None:
    assert to_usd_text(5_780_000) == "$0.00578"  # rounded to cents this read "$0.01"
    assert to_usd_text(6_000_000) == "$0.006"
    assert to_usd_text(995_990_000) == "$0.99599"
    assert to_usd_text(1_500_000_000) == "$1.50"
    assert to_usd_text(0) == "$0.00"
    assert to_usd_text(1) == "$0.000000001"
    assert to_usd_text(-2 * UNITS_PER_USD) == "-$2.00"
