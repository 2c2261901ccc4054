"""Stripe: a Checkout Session per purchase; the signed `checkout.session.completed` webhook credits it.

The official SDK is used through a per-call `StripeClient` (its own aiohttp session and, in tests,
`settings.stripe_api_base` as the API address): no module-level `stripe.api_key` or globals.

Webhook rules: a missing or bad signature, or a session that names one of our payments but does not
match it, is a 400 with no ledger change. A signed event we have no use for (another type, or another
application's checkout, with no payment id of ours) is acknowledged with a 200 and logged: Stripe
retries anything else for days and then disables the endpoint, stopping real payments with it; the
log line shows a misconfigured subscription (subscribe to the events below). A completed
session is credited once however often and however concurrently it is delivered: the payment row
moves pending -> completed with a guarded UPDATE and the ledger key is `payment:<id>`.
"""

from __future__ import annotations

import logging
from typing import Any

import aiohttp
import stripe
from sqlalchemy import select, update

from teamrouter.domain.credits.models import CreditAccount, Payment
from teamrouter.domain.credits.payments.base import (
    CheckoutResult,
    CheckoutTarget,
    PaymentStatus,
    complete_payment,
)
from teamrouter.errors import BadRequest, ConfigError, UpstreamFailed, bad_field
from teamrouter.ids import new_id
from teamrouter.money import UNITS_PER_CENT
from teamrouter.runtime import Runtime

MIN_CENTS = 50  # Stripe's smallest USD charge
# Our payments' ids (teamrouter.ids.new_id("pay")): what a checkout session of ours names.
PAYMENT_ID_PREFIX = "pay_"
log = logging.getLogger(__name__)
COMPLETED_EVENTS = frozenset({"checkout.session.completed", "checkout.session.async_payment_succeeded"})
FAILED_EVENTS = frozenset({"checkout.session.expired", "checkout.session.async_payment_failed"})
STRIPE_TIMEOUT_SECONDS = 30


class StripeBackend:
    name = "stripe"

    async def checkout(self, rt: Runtime, *, target: CheckoutTarget, amount: int) -> CheckoutResult:
        if amount % UNITS_PER_CENT:
            raise bad_field("amount", "card payments are in whole cents")
        cents = amount // UNITS_PER_CENT
        if cents < MIN_CENTS:
            raise bad_field("amount", "the smallest card payment is $0.50")
        api_key = rt.settings.stripe_api_key
        if api_key is None:
            raise ConfigError("Stripe payments are not configured (TEAMROUTER_STRIPE_API_KEY)")
        now = rt.clock.now()
        payment = Payment(
            id=new_id("pay"),
            account_id=target.account_id,
            backend=self.name,
            amount=amount,
            status=PaymentStatus.PENDING,
            created_by_user_id=target.actor.user_id,
            created_at=now,
        )
        async with rt.db.uow() as uow:
            uow.session.add(payment)
        # No transaction is open while we talk to Stripe.
        try:
            session = await _create_session(rt, api_key.get_secret_value(), payment, cents)
        except stripe.StripeError as exc:
            async with rt.db.uow() as uow:
                await uow.session.execute(
                    update(Payment)
                    .where(Payment.id == payment.id, Payment.status == PaymentStatus.PENDING)
                    .values(status=PaymentStatus.FAILED)
                )
            raise UpstreamFailed("Stripe refused to start the checkout", code="stripe_failed") from exc
        async with rt.db.uow() as uow:
            await uow.session.execute(
                update(Payment)
                .where(Payment.id == payment.id, Payment.external_id.is_(None))
                .values(external_id=session["id"])
            )
        return CheckoutResult(
            payment_id=payment.id, status=PaymentStatus.PENDING, amount=amount, checkout_url=session.get("url")
        )


async def _create_session(rt: Runtime, api_key: str, payment: Payment, cents: int) -> dict[str, Any]:
    base = rt.settings.stripe_api_base
    async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=STRIPE_TIMEOUT_SECONDS)) as http:
        client = stripe.StripeClient(
            api_key,
            base_addresses={"api": base} if base else None,
            http_client=stripe.AIOHTTPClient(session=http),
            max_network_retries=2,
        )
        public = rt.settings.public_url
        created = await client.v1.checkout.sessions.create_async(
            params={
                "mode": "payment",
                "client_reference_id": payment.id,
                "metadata": {"payment_id": payment.id, "account_id": payment.account_id},
                "line_items": [
                    {
                        "quantity": 1,
                        "price_data": {
                            "currency": "usd",
                            "unit_amount": cents,
                            "product_data": {"name": "teamrouter credits"},
                        },
                    }
                ],
                "success_url": f"{public}/billing?checkout=success",
                "cancel_url": f"{public}/billing?checkout=cancelled",
            },
            # Stripe deduplicates retried creates of the same payment.
            options={"idempotency_key": f"checkout-{payment.id}"},
        )
        session: dict[str, Any] = created.to_dict()
        return session


def _verified_event(rt: Runtime, payload: bytes, signature: str | None) -> dict[str, Any]:
    secret = rt.settings.stripe_webhook_secret
    if secret is None:
        raise BadRequest("Stripe webhooks are not configured here", code="webhook_not_configured")
    if not signature:
        raise BadRequest("Missing Stripe-Signature header", code="bad_signature")
    try:
        event = stripe.Webhook.construct_event(payload, signature, secret.get_secret_value())
    except (stripe.SignatureVerificationError, ValueError, KeyError, IndexError) as exc:
        raise BadRequest("Invalid Stripe signature or payload", code="bad_signature") from exc
    data: dict[str, Any] = event.to_dict()
    return data


async def handle_webhook(rt: Runtime, *, payload: bytes, signature: str | None) -> dict[str, Any]:
    """Apply one signed Stripe event. Returns what happened (for the 200 body)."""
    event = _verified_event(rt, payload, signature)
    event_type = str(event.get("type", ""))
    # Stripe counts any answer but a 2xx as a failed delivery, retries it for days and disables an
    # endpoint that keeps failing: an event this deployment has no use for (the endpoint subscribed
    # to more types, or a checkout another application of the same account made) is acknowledged.
    if event_type not in COMPLETED_EVENTS | FAILED_EVENTS:
        return _ignored(event, "an event type teamrouter does not use")
    session = (event.get("data") or {}).get("object") or {}
    metadata = session.get("metadata") or {}
    payment_id = metadata.get("payment_id") or session.get("client_reference_id")
    if not isinstance(payment_id, str) or not payment_id.startswith(PAYMENT_ID_PREFIX):
        return _ignored(event, "a checkout session teamrouter did not create")
    async with rt.db.uow() as uow:
        payment = await uow.session.scalar(
            select(Payment).where(Payment.id == str(payment_id or ""), Payment.backend == "stripe")
        )
        if payment is None or payment.external_id not in (None, session.get("id")):
            raise BadRequest("Unknown checkout session", code="unknown_checkout_session")
        if event_type in FAILED_EVENTS:
            await uow.session.execute(
                update(Payment)
                .where(Payment.id == payment.id, Payment.status == PaymentStatus.PENDING)
                .values(status=PaymentStatus.FAILED)
            )
            return {"received": True, "credited": False}
        if session.get("payment_status") != "paid":
            return {"received": True, "credited": False}  # delayed methods: wait for async success
        if session.get("currency") != "usd" or session.get("amount_total") != payment.amount // UNITS_PER_CENT:
            raise BadRequest("Checkout amount does not match the purchase", code="amount_mismatch")
        if payment.external_id is None:
            payment.external_id = str(session.get("id"))
        organization_id = await uow.session.scalar(
            select(CreditAccount.organization_id).where(CreditAccount.id == payment.account_id)
        )
        posted = await complete_payment(
            uow,
            rt,
            payment=payment,
            actor=None,
            organization_id=organization_id,
            memo=f"stripe event {event.get('id')}",
        )
    return {"received": True, "credited": posted is not None}


def _ignored(event: dict[str, Any], why: str) -> dict[str, Any]:
    # Logged, so a subscription that sends only events of no use here (no purchase is ever
    # credited) shows in the log; ids and the type only.
    log.warning("stripe webhook: ignored %s (%s, %s)", why, event.get("type"), event.get("id"))
    return {"received": True, "ignored": True}
