"""Credits over HTTP: GET /credits, the ledger, dev/manual checkout, staff transfers and grants, bad input."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from sqlalchemy import func, select
from tests.support.credits import account_of, balance, check_ledger, make_org, set_context, top_up

from teamrouter.config import PaymentsBackend
from teamrouter.domain.audit.models import AuditEvent
from teamrouter.domain.credits import service as credits
from teamrouter.domain.credits.models import LedgerEntry, Payment
from teamrouter.errors import Conflict, Forbidden
from teamrouter.money import usd_to_units

DOLLAR = usd_to_units(1)


def assert_envelope(response: httpx.Response, status: int, field: str | None = None) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"} and body["error"]["code"] == status
    if field is not None:
        assert body["error"]["metadata"].get("field") == field, body
        assert field in body["error"]["message"]
    return body["error"]


async def ledger_count(rt) -> int:
    async with rt.db.read() as s:
        return int(await s.scalar(select(func.count()).select_from(LedgerEntry)) or 0)


async def test_dev_checkout_credits_personal_account_at_once(rt, make_person):
    ada = await make_person()
    r = await ada.call("POST", "/credits/checkout", json={"amount": "12.50"})
    assert r.status_code == 200, r.text
    data = r.json()["data"]
    assert data["status"] == "completed" and data["amount"] == 12.5 and data["checkout_url"] is None
    r = await ada.call("POST", "/credits/checkout", json={"amount": 0.25})
    assert r.status_code == 200
    r = await ada.client.get("/api/v1/credits")
    assert r.json() == {"data": {"total_credits": 12.75, "total_usage": 0.0}}
    r = await ada.client.get("/api/v1/credits/ledger", params={"limit": 1})
    page = r.json()
    assert [e["amount"] for e in page["data"]] == [0.25] and page["next_cursor"]
    r = await ada.client.get("/api/v1/credits/ledger", params={"cursor": page["next_cursor"]})
    assert [e["amount"] for e in r.json()["data"]] == [12.5] and r.json()["next_cursor"] is None
    for path in ("/api/v1/credits/ledger", "/api/v1/credits/payments"):  # not an empty page
        r = await ada.client.get(path, params={"cursor": "bad"})
        assert r.status_code == 400 and "cursor" in r.json()["error"]["message"], r.text
    r = await ada.client.get("/api/v1/credits/payments")
    assert [p["status"] for p in r.json()["data"]] == ["completed", "completed"]
    async with rt.db.read() as s:
        actions = list(await s.scalars(select(AuditEvent.action).where(AuditEvent.actor_user_id == ada.id)))
    assert actions.count("credits.purchase") == 2
    await check_ledger(rt)


async def test_ledger_and_payments_refuse_a_parameter_given_twice(rt, make_person):
    # Kept to its last value, a repeated `limit` or `cursor` answered another page than the first one.
    ada = await make_person()
    assert (await ada.call("POST", "/credits/checkout", json={"amount": 1})).status_code == 200
    for path in ("/api/v1/credits/ledger", "/api/v1/credits/payments"):
        for params, name in (
            ([("limit", "1"), ("limit", "50")], "limit"),
            ([("cursor", "a"), ("cursor", "b")], "cursor"),
        ):
            error = assert_envelope(await ada.client.get(path, params=params), 400, name)
            assert error["metadata"] == {"code": "repeated_parameter", "field": name, "repeated": [name]}
        assert (await ada.client.get(path, params=[("limit", "1")])).status_code == 200


@pytest.mark.parametrize(
    "amount",
    [
        0,
        -5,
        "0",
        "-1",
        "abc",
        "",
        "NaN",
        "Infinity",
        "1e400",
        "0.0000000001",
        "0.001",  # no way to pay charges fractions of a cent (dev mode stood in for one that did)
        "10.505",
        "1000000.01",
        10**12,
        True,
        None,
        [1],
        {"a": 1},
        "1" * 50,
    ],
)
async def test_bad_amounts_are_400_naming_amount_and_change_nothing(rt, make_person, amount):
    ada = await make_person()
    before = await ledger_count(rt)
    r = await ada.call("POST", "/credits/checkout", json={"amount": amount})
    assert_envelope(r, 400, "amount")
    assert await ledger_count(rt) == before


async def test_checkout_body_rules(rt, make_person):
    ada = await make_person()
    for raw in (b'{"amount": 1e400}', b'{"amount": NaN}', b'{"amount": -Infinity}', b'{"amount": 1.0000000001}'):
        r = await ada.call("POST", "/credits/checkout", content=raw, headers={"content-type": "application/json"})
        assert_envelope(r, 400, "amount")
    assert_envelope(await ada.call("POST", "/credits/checkout", json={}), 400, "amount")
    assert_envelope(
        await ada.call("POST", "/credits/checkout", json={"amount": 5, "account_id": "x"}), 400, "account_id"
    )
    r = await ada.call("POST", "/credits/checkout", content=b"{not json", headers={"content-type": "application/json"})
    assert_envelope(r, 400)
    # No CSRF token → 403; no session → 401.
    assert_envelope(await ada.client.post("/api/v1/credits/checkout", json={"amount": 5}), 403)
    async with httpx.AsyncClient(transport=ada.client._transport, base_url="http://testserver") as anon:
        assert_envelope(await anon.get("/api/v1/credits"), 401)
    assert await ledger_count(rt) == 0


async def test_org_purchases_are_for_admins_only(rt, make_person):
    admin, member = await make_person(), await make_person()
    org = await make_org(rt, admins=(admin.id,), members=(member.id,))
    await set_context(admin, org)
    await set_context(member, org)
    r = await admin.call("POST", "/credits/checkout", json={"amount": 20})
    assert r.status_code == 200, r.text
    assert await balance(rt, await account_of(rt, organization_id=org)) == (20 * DOLLAR, 0)
    assert await balance(rt, await account_of(rt, user_id=admin.id)) == (0, 0)  # not the personal one
    assert_envelope(await member.call("POST", "/credits/checkout", json={"amount": 20}), 403)
    assert_envelope(await member.client.get("/api/v1/credits/ledger"), 403)
    assert_envelope(await member.client.get("/api/v1/credits"), 403)
    assert_envelope(await member.client.get("/api/v1/credits/payments"), 403)
    r = await admin.client.get("/api/v1/credits")
    assert r.json()["data"]["total_credits"] == 20.0
    # The member's personal context is their own.
    await set_context(member, None)
    assert (await member.client.get("/api/v1/credits")).json()["data"]["total_credits"] == 0.0
    assert await balance(rt, await account_of(rt, organization_id=org)) == (20 * DOLLAR, 0)
    await check_ledger(rt)


async def test_manual_backend_asks_for_an_invoice(rt, make_person):
    manual = rt.settings.model_copy(update={"payments": PaymentsBackend.MANUAL})
    rt.settings = manual
    ada = await make_person()
    err = assert_envelope(await ada.call("POST", "/credits/checkout", json={"amount": 10}), 409)
    assert err["metadata"]["code"] == "invoice_required" and "invoice" in err["message"]
    assert await ledger_count(rt) == 0


async def test_dev_backend_is_refused_outside_dev_mode(rt, make_person):
    from teamrouter.config import Env

    rt.settings = rt.settings.model_copy(update={"env": Env.PRODUCTION, "payments": PaymentsBackend.DEV})
    ada = await make_person()
    assert_envelope(await ada.call("POST", "/credits/checkout", json={"amount": 10}), 409)
    assert await ledger_count(rt) == 0


async def test_staff_transfer_moves_personal_credits_into_the_org(rt, make_person):
    staff, ada, bob = await make_person(staff=True), await make_person(), await make_person()
    org = await make_org(rt, admins=(ada.id,))
    personal = await account_of(rt, user_id=ada.id)
    await top_up(rt, personal, 10 * DOLLAR)

    body = {"user_id": ada.id, "organization_id": org, "amount": "4", "note": "move to team"}
    assert_envelope(await ada.call("POST", "/staff/credit-transfers", json=body), 403)
    r = await staff.call("POST", "/staff/credit-transfers", json=body)
    assert r.status_code == 201, r.text
    data = r.json()["data"]
    assert data["personal_balance"] == 6.0 and data["organization_balance"] == 4.0
    async with rt.db.read() as s:
        legs = list(await s.scalars(select(LedgerEntry).where(LedgerEntry.transaction_id == data["transaction_id"])))
        audit = await s.scalar(
            select(func.count()).select_from(AuditEvent).where(AuditEvent.action == "credits.transfer")
        )
    assert sorted((leg.kind, leg.amount) for leg in legs) == [
        ("transfer_in", 4 * DOLLAR),
        ("transfer_out", -4 * DOLLAR),
    ]
    assert audit == 1

    # Refusals: more than available (holds count), not a member, unknown org, bad amount — no change.
    before = await ledger_count(rt)
    from teamrouter.domain.credits import holds

    await holds.reserve(rt, account_id=personal, amount=5 * DOLLAR, idempotency_key="h")
    err = assert_envelope(await staff.call("POST", "/staff/credit-transfers", json={**body, "amount": 2}), 402)
    assert err["metadata"]["code"] == "insufficient_credits"
    assert err["message"] == "Insufficient credits: $1.00 available, $2.00 needed"
    # Amounts below a cent are said exactly: rounded to cents this read "$0.01 available, $0.01 needed".
    held = await holds.reserve(rt, account_id=personal, amount=DOLLAR - 5_780_000, idempotency_key="h2")
    err = assert_envelope(await staff.call("POST", "/staff/credit-transfers", json={**body, "amount": 0.006}), 402)
    assert err["message"] == "Insufficient credits: $0.00578 available, $0.006 needed"
    await holds.void(rt, hold_id=held.id)
    assert_envelope(
        await staff.call("POST", "/staff/credit-transfers", json={**body, "user_id": bob.id, "amount": 1}),
        400,
        "organization_id",
    )
    assert_envelope(
        await staff.call("POST", "/staff/credit-transfers", json={**body, "organization_id": "org_nope"}), 404
    )
    assert_envelope(await staff.call("POST", "/staff/credit-transfers", json={**body, "amount": "-1"}), 400, "amount")
    assert await ledger_count(rt) == before
    assert await balance(rt, personal) == (6 * DOLLAR, 5 * DOLLAR)
    await check_ledger(rt)


async def test_transfer_idempotency_key(rt, make_person):
    staff, ada = await make_person(staff=True), await make_person()
    org = await make_org(rt, members=(ada.id,))
    await top_up(rt, await account_of(rt, user_id=ada.id), 10 * DOLLAR)
    body = {"user_id": ada.id, "organization_id": org, "amount": 3}
    headers = {"Idempotency-Key": "move-1"}
    first = await staff.call("POST", "/staff/credit-transfers", json=body, headers=headers)
    again = await staff.call("POST", "/staff/credit-transfers", json=body, headers=headers)
    assert (first.status_code, again.status_code) == (201, 200)
    assert again.json()["data"]["transaction_id"] == first.json()["data"]["transaction_id"]
    assert_envelope(
        await staff.call("POST", "/staff/credit-transfers", json={**body, "amount": 4}, headers=headers), 409
    )
    assert await balance(rt, await account_of(rt, organization_id=org)) == (3 * DOLLAR, 0)
    await check_ledger(rt)


async def test_a7_staff_grant_is_idempotent_on_reference_even_concurrently(rt, make_person):
    staff, ada = await make_person(staff=True), await make_person()
    org = await make_org(rt, admins=(ada.id,))
    body = {"organization_id": org, "amount": "250.00", "reference": "INV-2025-001"}
    assert_envelope(await ada.call("POST", "/staff/credit-grants", json=body), 403)
    responses = await asyncio.gather(*(staff.call("POST", "/staff/credit-grants", json=body) for _ in range(5)))
    assert sorted(r.status_code for r in responses) == [200, 200, 200, 200, 201], [r.text for r in responses]
    assert len({r.json()["data"]["entry_id"] for r in responses}) == 1
    assert await balance(rt, await account_of(rt, organization_id=org)) == (250 * DOLLAR, 0)
    before = await ledger_count(rt)
    assert_envelope(await staff.call("POST", "/staff/credit-grants", json={**body, "amount": 300}), 409)
    assert_envelope(await staff.call("POST", "/staff/credit-grants", json={**body, "reference": ""}), 400, "reference")
    assert_envelope(await staff.call("POST", "/staff/credit-grants", json={**body, "amount": 0}), 400, "amount")
    assert_envelope(
        await staff.call("POST", "/staff/credit-grants", json={**body, "organization_id": "org_x", "reference": "R2"}),
        404,
    )
    assert await ledger_count(rt) == before
    await set_context(ada, org)
    payments = (await ada.client.get("/api/v1/credits/payments")).json()["data"]
    assert [(p["backend"], p["reference"], p["amount"]) for p in payments] == [("manual", "INV-2025-001", 250.0)]
    await check_ledger(rt)


async def test_cli_operator_can_grant_and_transfer_with_no_actor(rt, make_person):
    ada = await make_person()
    org = await make_org(rt, admins=(ada.id,))
    await top_up(rt, await account_of(rt, user_id=ada.id), DOLLAR)
    grant = await credits.grant_credits(rt, actor=None, organization_id=org, amount=2 * DOLLAR, reference="cli-1")
    assert grant.created
    moved = await credits.transfer_personal_to_org(
        rt, actor=None, user_id=ada.id, organization_id=org, amount=DOLLAR, note="cli"
    )
    assert moved.organization_balance == 3 * DOLLAR and moved.personal_balance == 0
    from teamrouter.domain.actor import Actor

    with pytest.raises(Forbidden):
        await credits.grant_credits(rt, actor=Actor(user_id=ada.id), organization_id=org, amount=1, reference="x")
    with pytest.raises(Conflict):
        await credits.grant_credits(rt, actor=None, organization_id=org, amount=DOLLAR, reference="cli-1")
    async with rt.db.read() as s:
        assert await s.scalar(select(func.count()).select_from(Payment)) == 1
    await check_ledger(rt)
