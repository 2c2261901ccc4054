"""Request and response shapes for credits. Amounts arrive as USD (JSON number or string) and are
parsed exactly with Decimal into integer nano-USD; zero, negative, non-numeric, non-finite, more than
9 decimals or above MAX_AMOUNT_USD are refused with a 400 naming `amount`."""

from __future__ import annotations

from decimal import Decimal, InvalidOperation
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, BeforeValidator, ConfigDict, Field, WithJsonSchema

from teamrouter.clock import iso_utc as _iso
from teamrouter.domain.credits.models import LedgerEntry, Payment
from teamrouter.money import MAX_AMOUNT_UNITS, MAX_AMOUNT_USD, UNITS_PER_CENT, AmountError, to_usd, usd_to_units

MAX_AMOUNT_TEXT = 40


def parse_usd_amount(value: Any) -> int:
    """A positive USD amount as integer nano-USD, exactly; ValueError (→ 400 naming the field) else."""
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        raise ValueError('must be a number of US dollars, e.g. 10 or "10.50"')
    # A JSON number arrives as a float; its shortest repr is the text the client sent (up to ~15
    # significant digits), so Decimal(repr) is exact where Decimal(float) would not be.
    text = repr(value) if isinstance(value, float) else str(value).strip()
    if len(text) > MAX_AMOUNT_TEXT:
        raise ValueError("is too long to be an amount")
    try:
        decimal = Decimal(text)
    except InvalidOperation as exc:
        raise ValueError('must be a number of US dollars, e.g. 10 or "10.50"') from exc
    if not decimal.is_finite():
        raise ValueError("must be a finite number")
    if decimal <= 0:
        raise ValueError("must be greater than zero")
    if decimal > MAX_AMOUNT_USD:  # checked before scaling, so 1e999999 costs nothing
        raise ValueError(f"must be at most {MAX_AMOUNT_USD}")
    try:
        units = usd_to_units(decimal)
    except AmountError as exc:
        raise ValueError(str(exc)) from exc
    if units <= 0 or units > MAX_AMOUNT_UNITS:
        raise ValueError("is out of range")
    return units


UsdAmount = Annotated[
    int,
    BeforeValidator(parse_usd_amount),
    WithJsonSchema(
        {
            "anyOf": [{"type": "number"}, {"type": "string"}],
            "description": "US dollars, > 0, at most 9 decimals",
        }
    ),
]


def whole_cents(units: int) -> int:
    # Every way to pay (a card, an invoice) charges whole cents, and dev mode stands in for them:
    # a purchase of $0.001 that dev mode credited would be refused in production.
    if units % UNITS_PER_CENT:
        raise ValueError('purchases are in whole cents, e.g. 10 or "10.50"')
    return units


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CheckoutCreate(Strict):
    amount: Annotated[UsdAmount, AfterValidator(whole_cents)]


class TransferCreate(Strict):
    user_id: str = Field(min_length=1, max_length=40)
    organization_id: str = Field(min_length=1, max_length=40)
    amount: UsdAmount
    note: str = Field(default="", max_length=500)


class GrantCreate(Strict):
    organization_id: str = Field(min_length=1, max_length=40)
    amount: UsdAmount
    reference: str = Field(min_length=1, max_length=180)


def entry_public(entry: LedgerEntry) -> dict[str, Any]:
    return {
        "id": entry.id,
        "kind": entry.kind,
        "amount": to_usd(entry.amount),
        "balance_after": to_usd(entry.balance_after),
        "transaction_id": entry.transaction_id,
        "generation_id": entry.generation_id,
        "reference": entry.reference,
        "memo": entry.memo,
        "created_by_user_id": entry.created_by_user_id,
        "created_at": _iso(entry.created_at),
    }


def payment_public(payment: Payment) -> dict[str, Any]:
    return {
        "id": payment.id,
        "backend": payment.backend,
        "amount": to_usd(payment.amount),
        "status": payment.status,
        "reference": payment.reference,
        "external_id": payment.external_id,
        "created_by_user_id": payment.created_by_user_id,
        "created_at": _iso(payment.created_at),
        "completed_at": _iso(payment.completed_at),
    }
