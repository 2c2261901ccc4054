"""Integer money: the display conversion to USD."""

from __future__ import annotations

from decimal import Decimal

from hypothesis import given
from hypothesis import strategies as st

from teamrouter.money import UNITS_PER_USD, to_usd


@given(st.integers(-(10**27), 10**27))
def test_to_usd_is_the_correctly_rounded_decimal_quotient(units: int) -> None:
    assert to_usd(units) == float(Decimal(units) / UNITS_PER_USD)


def test_to_usd_of_a_decimal_sum() -> None:
    assert to_usd(Decimal(1_500_000_000)) == 1.5  # type: ignore[arg-type]  # what PostgreSQL SUM gives
    assert to_usd(17_000) == 1.7e-05
