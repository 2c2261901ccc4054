"""Stripe through the official SDK against a local fake (no network): checkout, signed webhooks, A7."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import pytest
from pydantic import SecretStr
from sqlalchemy import func, select
from tests.fakes.stripe import FakeStripe, sign
from tests.support.credits import account_of, balance, check_ledger, make_org, set_context

from teamrouter.config import PaymentsBackend
from teamrouter.domain.credits.models import LedgerEntry, Payment
from teamrouter.money import usd_to_units

DOLLAR = usd_to_units(1)
HOOK = "/api/v1/billing/stripe/webhook"


@pytest.fixture
async def fake_stripe() -> AsyncIterator[FakeStripe]:
    async with FakeStripe() as fake:
        yield fake


@pytest.fixture
def settings(settings, fake_stripe):
    return settings.model_copy(
        update={
            "payments": PaymentsBackend.STRIPE,
            "stripe_api_key": SecretStr("sk_test_fake"),
            "stripe_webhook_secret": SecretStr(fake_stripe.webhook_secret),
            "stripe_api_base": fake_stripe.url,
        }
    )


async def ledger_count(rt) -> int:
    async with rt.db.read() as s:
        return int(await s.scalar(select(func.count()).select_from(LedgerEntry)) or 0)


async def checkout(person, amount) -> dict:
    r = await person.call("POST", "/credits/checkout", json={"amount": amount})
    assert r.status_code == 200, r.text
    return r.json()["data"]


async def session_of(rt, payment_id: str) -> str:
    async with rt.db.read() as s:
        payment = await s.get_one(Payment, payment_id)
    assert payment.external_id
    return payment.external_id


async def test_checkout_creates_a_session_and_the_webhook_credits_once(rt, client, make_person, fake_stripe):
    ada = await make_person()
    data = await checkout(ada, "25.00")
    assert data["status"] == "pending" and data["checkout_url"].startswith("https://checkout.stripe.test/")
    call = fake_stripe.calls[-1]
    assert call["authorization"] == "Bearer sk_test_fake"
    assert call["form"]["line_items[0][price_data][unit_amount]"] == "2500"
    assert call["form"]["metadata[payment_id]"] == data["id"] and call["idempotency_key"]
    account = await account_of(rt, user_id=ada.id)
    assert await balance(rt, account) == (0, 0)  # nothing until Stripe says it is paid

    payload, headers = fake_stripe.event(await session_of(rt, data["id"]), event_id="evt_1")
    # A7: the same event delivered twice, concurrently, then a third time; and a second event
    # (async_payment_succeeded) for the same session: credited once.
    responses = await asyncio.gather(*(client.post(HOOK, content=payload, headers=headers) for _ in range(2)))
    assert [r.status_code for r in responses] == [200, 200], [r.text for r in responses]
    assert sorted(r.json()["credited"] for r in responses) == [False, True]
    assert (await client.post(HOOK, content=payload, headers=headers)).json()["credited"] is False
    other, other_headers = fake_stripe.event(
        await session_of(rt, data["id"]), event_type="checkout.session.async_payment_succeeded"
    )
    assert (await client.post(HOOK, content=other, headers=other_headers)).status_code == 200
    assert await balance(rt, account) == (25 * DOLLAR, 0)
    assert await ledger_count(rt) == 1
    payments = (await ada.client.get("/api/v1/credits/payments")).json()["data"]
    assert [(p["backend"], p["status"], p["amount"]) for p in payments] == [("stripe", "completed", 25.0)]
    await check_ledger(rt)


async def test_many_concurrent_deliveries_credit_once(rt, client, make_person, fake_stripe):
    ada = await make_person()
    data = await checkout(ada, 10)
    session = await session_of(rt, data["id"])
    deliveries = [fake_stripe.event(session, event_id=f"evt_{n % 3}") for n in range(8)]
    responses = await asyncio.gather(*(client.post(HOOK, content=p, headers=h) for p, h in deliveries))
    assert all(r.status_code == 200 for r in responses)
    assert sum(r.json()["credited"] for r in responses) == 1
    assert await balance(rt, await account_of(rt, user_id=ada.id)) == (10 * DOLLAR, 0)
    await check_ledger(rt)


async def test_bad_webhooks_are_400_unused_ones_200_and_none_changes_anything(
    rt, client, make_person, fake_stripe, caplog
):
    ada = await make_person()
    data = await checkout(ada, 10)
    session = await session_of(rt, data["id"])
    payload, headers = fake_stripe.event(session)
    bad = [
        (payload, {}),  # no signature
        (payload, {"Stripe-Signature": sign(payload, "whsec_wrong")}),
        (payload, {"Stripe-Signature": sign(payload, fake_stripe.webhook_secret, timestamp=1_000_000)}),  # stale
        (payload + b" ", headers),  # body altered after signing
        (b"not json", {"Stripe-Signature": sign(b"not json", fake_stripe.webhook_secret)}),
        fake_stripe.event(session, amount_total=1),  # amount differs from the purchase
        fake_stripe.event(session, metadata={"payment_id": "pay_unknown"}, client_reference_id=None),
        fake_stripe.event(session, id="cs_other"),  # a session we did not create for this payment
    ]
    for body, hdrs in bad:
        r = await client.post(HOOK, content=body, headers=hdrs)
        assert r.status_code == 400, r.text
        assert set(r.json()) == {"error"}
    # Signed events this deployment has no use for are acknowledged (Stripe retries anything else for
    # days, then disables the endpoint): another event type, another application's checkout session.
    for body, hdrs in (
        fake_stripe.event(session, event_type="customer.created"),
        fake_stripe.event(session, event_type="charge.succeeded"),
        fake_stripe.event(session, metadata={}, client_reference_id=None),
        fake_stripe.event(session, metadata={"order": "42"}, client_reference_id="order-42"),  # not ours
    ):
        with caplog.at_level(logging.WARNING, logger="teamrouter.domain.credits.payments.stripe"):
            r = await client.post(HOOK, content=body, headers=hdrs)
        assert r.status_code == 200 and r.json() == {"received": True, "ignored": True}, r.text
    # Each is logged (by type and id), so a subscription that never sends a payment event shows.
    assert caplog.text.count("stripe webhook: ignored") == 4
    unpaid, unpaid_headers = fake_stripe.event(session, payment_status="unpaid")
    assert (await client.post(HOOK, content=unpaid, headers=unpaid_headers)).json()["credited"] is False
    assert await ledger_count(rt) == 0
    # An expired session marks the payment failed; a later completed event cannot resurrect it.
    expired, expired_headers = fake_stripe.event(session, event_type="checkout.session.expired")
    assert (await client.post(HOOK, content=expired, headers=expired_headers)).status_code == 200
    assert (await client.post(HOOK, content=payload, headers=headers)).json()["credited"] is False
    assert await ledger_count(rt) == 0
    await check_ledger(rt)


async def test_org_checkout_rules_and_stripe_failures(rt, make_person, fake_stripe):
    admin, member = await make_person(), await make_person()
    org = await make_org(rt, admins=(admin.id,), members=(member.id,))
    await set_context(admin, org)
    await set_context(member, org)
    r = await member.call("POST", "/credits/checkout", json={"amount": 10})
    assert r.status_code == 403 and fake_stripe.calls == []
    for amount in ("0.30", "10.005"):  # below Stripe's minimum; sub-cent
        r = await admin.call("POST", "/credits/checkout", json={"amount": amount})
        assert r.status_code == 400 and r.json()["error"]["metadata"]["field"] == "amount", r.text
    fake_stripe.fail_next = True
    r = await admin.call("POST", "/credits/checkout", json={"amount": 10})
    assert r.status_code == 502, r.text
    async with rt.db.read() as s:
        assert list(await s.scalars(select(Payment.status))) == ["failed"]
    data = await checkout(admin, 10)
    async with rt.db.read() as s:
        payment = await s.get_one(Payment, data["id"])
    assert payment.account_id == await account_of(rt, organization_id=org)
    assert await ledger_count(rt) == 0
    await check_ledger(rt)
