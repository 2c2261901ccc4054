"""The payment backend interface and the one way a completed payment becomes credits.

A backend starts a checkout for an amount on an account. However the money arrives (at once in dev,
a Stripe webhook later, staff recording an invoice), `complete_payment` credits it exactly once:
the payment row moves `pending -> completed` with a guarded UPDATE, and the ledger entry's
idempotency key is `payment:<id>`, so concurrent or repeated deliveries credit once.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any, Protocol

from sqlalchemy import update

from teamrouter.domain.actor import Actor
from teamrouter.domain.audit import service as audit
from teamrouter.domain.credits.ledger import EntryKind, Posted, fingerprint, post_entry
from teamrouter.domain.credits.models import Payment
from teamrouter.money import to_usd_str
from teamrouter.runtime import Runtime
from teamrouter.storage.db import UnitOfWork


class PaymentStatus:
    PENDING = "pending"
    COMPLETED = "completed"
    FAILED = "failed"


@dataclass(frozen=True, slots=True)
class CheckoutTarget:
    """Whose pool a purchase tops up, and who is buying."""

    account_id: str
    organization_id: str | None
    actor: Actor


@dataclass(frozen=True, slots=True)
class CheckoutResult:
    payment_id: str
    status: str
    amount: int
    checkout_url: str | None = None


class PaymentBackend(Protocol):
    name: str

    async def checkout(self, rt: Runtime, *, target: CheckoutTarget, amount: int) -> CheckoutResult: ...


def payment_entry_key(payment_id: str) -> str:
    return f"payment:{payment_id}"


async def complete_payment(
    uow: UnitOfWork,
    rt: Runtime,
    *,
    payment: Payment,
    actor: Actor | None,
    organization_id: str | None,
    kind: EntryKind = EntryKind.PURCHASE,
    memo: str | None = None,
    now: datetime | None = None,
) -> Posted | None:
    """Credit a pending payment once. None when it was already completed (or failed) by someone else."""
    now = now or rt.clock.now()
    result: Any = await uow.session.execute(
        update(Payment)
        .where(Payment.id == payment.id, Payment.status == PaymentStatus.PENDING)
        .values(status=PaymentStatus.COMPLETED, completed_at=now)
        .execution_options(synchronize_session=False)
    )
    if result.rowcount != 1:
        return None
    posted = await post_entry(
        uow,
        account_id=payment.account_id,
        amount=payment.amount,
        kind=kind,
        idempotency_key=payment_entry_key(payment.id),
        request_fingerprint=fingerprint(payment.account_id, payment.amount, kind.value),
        now=now,
        reference=payment.reference or payment.external_id,
        memo=memo,
        created_by_user_id=payment.created_by_user_id,
    )
    audit.record(
        uow,
        actor=actor,
        clock=rt.clock,
        action=f"credits.{kind.value}",
        target_type="credit_account",
        target_id=payment.account_id,
        organization_id=organization_id,
        after={
            "payment_id": payment.id,
            "backend": payment.backend,
            "amount": to_usd_str(payment.amount),
            "reference": payment.reference,
            "balance_after": to_usd_str(posted.entry.balance_after),
        },
    )
    return posted
