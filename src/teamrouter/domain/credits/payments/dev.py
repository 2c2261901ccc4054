"""Dev mode: a purchase is credited at once, for free. Refused unless the deployment runs in dev mode."""

from __future__ import annotations

from teamrouter.domain.credits.models import Payment
from teamrouter.domain.credits.payments.base import (
    CheckoutResult,
    CheckoutTarget,
    PaymentStatus,
    complete_payment,
)
from teamrouter.errors import Conflict
from teamrouter.ids import new_id
from teamrouter.runtime import Runtime


class DevBackend:
    name = "dev"

    async def checkout(self, rt: Runtime, *, target: CheckoutTarget, amount: int) -> CheckoutResult:
        if not rt.settings.is_dev:  # belt and braces: backend_for never picks dev outside dev mode
            raise Conflict("Free dev credits exist only in dev mode", code="payments_unavailable")
        now = rt.clock.now()
        payment = Payment(
            id=new_id("pay"),
            account_id=target.account_id,
            backend=self.name,
            external_id=None,
            amount=amount,
            status=PaymentStatus.PENDING,
            reference="dev",
            created_by_user_id=target.actor.user_id,
            created_at=now,
        )
        async with rt.db.uow() as uow:
            uow.session.add(payment)
            await uow.session.flush()
            await complete_payment(
                uow,
                rt,
                payment=payment,
                actor=target.actor,
                organization_id=target.organization_id,
                memo="dev-mode purchase",
                now=now,
            )
        return CheckoutResult(payment_id=payment.id, status=PaymentStatus.COMPLETED, amount=amount)
