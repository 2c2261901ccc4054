"""Integer money. One unit is 1e-9 USD (a nano-dollar); no float ever holds an amount.

The API shows USD as JSON numbers (OpenRouter does); `to_usd` makes that number for display only.
"""

from __future__ import annotations

from decimal import Decimal, InvalidOperation

UNITS_PER_USD = 1_000_000_000
UNITS_PER_CENT = UNITS_PER_USD // 100
# Largest amount one operation may move: far above any real purchase, far below int64 overflow.
MAX_AMOUNT_USD = Decimal(1_000_000)
MAX_AMOUNT_UNITS = int(MAX_AMOUNT_USD) * UNITS_PER_USD


class AmountError(ValueError):
    """An amount that is not an exact, finite, in-range USD value."""


def usd_to_units(value: Decimal | str | int) -> int:
    """Exact conversion; refuses anything finer than one unit or not finite."""
    try:
        amount = value if isinstance(value, Decimal) else Decimal(str(value))
    except InvalidOperation as exc:
        raise AmountError(f"not a number: {value!r}") from exc
    if not amount.is_finite():
        raise AmountError("must be a finite number")
    units = amount * UNITS_PER_USD
    if units != units.to_integral_value():
        raise AmountError("has more than 9 decimal places")
    return int(units)


def to_usd(units: int) -> float:
    """USD as a JSON number; display only (exact to the cent and well beyond for realistic sums)."""
    if type(units) is int:
        # int / int is correctly rounded, as float() of the exact Decimal quotient is (for fewer
        # than 28 digits), without the Decimal objects: this runs on every inference answer.
        return units / UNITS_PER_USD
    return float(Decimal(units) / UNITS_PER_USD)  # e.g. a Decimal SUM from PostgreSQL


def to_usd_str(units: int) -> str:
    """Exact decimal text, for CSV exports and audit rows."""
    text = format(Decimal(units) / UNITS_PER_USD, "f")
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    return text or "0"


def to_usd_text(units: int) -> str:
    """`$` and the exact amount with at least cents, for messages: $1.50, $0.00578. Rounding to
    cents made a refusal read "$0.01 available, $0.01 needed" for 0.00578 against 0.006."""
    text = to_usd_str(abs(units))
    whole, _, cents = text.partition(".")
    return f"{'-' if units < 0 else ''}${whole}.{cents.ljust(2, '0')}"
