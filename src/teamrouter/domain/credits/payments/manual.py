"""Manual invoicing: nothing to check out online; staff record the paid invoice (`grant_credits`)."""

from __future__ import annotations

from teamrouter.domain.credits.payments.base import CheckoutResult, CheckoutTarget
from teamrouter.errors import Conflict
from teamrouter.runtime import Runtime


class ManualBackend:
    name = "manual"

    async def checkout(self, rt: Runtime, *, target: CheckoutTarget, amount: int) -> CheckoutResult:
        raise Conflict(
            "This deployment sells credits by invoice: ask the operators for an invoice; once it is "
            "paid, staff record the payment and the credits appear in your balance",
            code="invoice_required",
        )
