"""Organizations over HTTP: creation, invitations over real SMTP, accept rules, bad input, the member
cap (incl. a 20-way accept race), staff cap override."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import pytest
from sqlalchemy import func, select, text, update
from tests.support.orgs import (
    assert_envelope,
    create_org,
    invite_token,
    join,
    member_count,
    org_row,
    recording_mailer,
)
from tests.support.smtp import delivered

from teamrouter.domain.actor import Actor
from teamrouter.domain.audit.models import AuditEvent
from teamrouter.domain.credits.models import CreditAccount
from teamrouter.domain.orgs import service as orgs
from teamrouter.domain.orgs.models import Invitation, Membership, Organization
from teamrouter.errors import BadRequest, Forbidden, NotFound


async def count(rt, model, *where) -> int:
    async with rt.db.read() as s:
        return int(await s.scalar(select(func.count()).select_from(model).where(*where)) or 0)


async def actions(rt) -> list[str]:
    async with rt.db.read() as s:
        return list((await s.scalars(select(AuditEvent.action).order_by(AuditEvent.id))).all())


async def test_creating_an_org_needs_a_verified_email(make_person, rt):
    unverified = await make_person(verified=False)
    error = assert_envelope(
        await unverified.call("POST", "/organizations", json={"name": "Acme"}), 403, "email", "verified"
    )
    assert error["metadata"]["code"] == "email_not_verified"
    assert await count(rt, Organization) == 0

    ada = await make_person()
    r = await ada.call("POST", "/organizations", json={"name": "  Acme  "})
    assert r.status_code == 201, r.text
    data = r.json()["data"]
    assert data["name"] == "Acme" and data["role"] == "admin"
    assert data["member_count"] == 1 and data["member_cap"] == rt.settings.max_org_members
    assert data["id"].startswith("org_")

    # One transaction made the org, the admin membership and the org's own credit pool.
    assert await member_count(rt, data["id"]) == (1, 1)
    async with rt.db.read() as s:
        pool = await s.scalar(select(CreditAccount).where(CreditAccount.organization_id == data["id"]))
    assert pool is not None and pool.user_id is None and pool.balance == 0
    assert {"organization.create", "membership.create"} <= set(await actions(rt))

    listed = (await ada.client.get("/api/v1/organizations")).json()["data"]
    assert [(o["id"], o["role"]) for o in listed] == [(data["id"], "admin")]
    me = (await ada.client.get("/api/v1/me")).json()["data"]
    assert me["memberships"] == [{"organization_id": data["id"], "name": "Acme", "role": "admin"}]
    assert me["context"] == {"organization_id": None}  # creating does not switch context
    got = await ada.client.get(f"/api/v1/organizations/{data['id']}")
    assert got.status_code == 200 and got.json()["data"] == data


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({}, ["name", "required"]),
        ({"name": ""}, ["name"]),
        ({"name": "   "}, ["name"]),
        ({"name": "x" * 201}, ["name"]),
        ({"name": 5}, ["name"]),
        ({"name": "Acme", "organization_id": "org_x"}, ["organization_id", "unknown field"]),
        ({"name": "Acme", "role": "member"}, ["role", "unknown field"]),
        ({"name": "Acme", "member_cap": 500}, ["member_cap", "unknown field"]),
    ],
)
async def test_bad_org_bodies_change_nothing(make_person, rt, body, words):
    ada = await make_person()
    assert_envelope(await ada.call("POST", "/organizations", json=body), 400, *words)
    assert await count(rt, Organization) == 0
    assert await count(rt, CreditAccount, CreditAccount.organization_id.is_not(None)) == 0


async def test_admins_rename_the_org_and_nobody_else_can(make_person, rt):
    ada, bob, eve = await make_person(), await make_person(), await make_person()
    org = await create_org(ada, "Acme")
    await join(rt, ada, bob, org)
    elsewhere = await create_org(eve, "Other")

    r = await ada.call("PATCH", f"/organizations/{org}", json={"name": "  Acme Research  "})
    assert r.status_code == 200, r.text
    assert r.json()["data"]["name"] == "Acme Research" and r.json()["data"]["role"] == "admin"
    me = (await bob.client.get("/api/v1/me")).json()["data"]
    assert me["memberships"] == [{"organization_id": org, "name": "Acme Research", "role": "member"}]
    async with rt.db.read() as s:
        event = await s.scalar(select(AuditEvent).where(AuditEvent.action == "organization.rename"))
    assert event is not None and (event.before, event.after) == ({"name": "Acme"}, {"name": "Acme Research"})

    # A member may not, an outsider learns nothing, and bad names change nothing.
    assert_envelope(await bob.call("PATCH", f"/organizations/{org}", json={"name": "Bob's"}), 403)
    assert_envelope(await eve.call("PATCH", f"/organizations/{org}", json={"name": "Mine"}), 404)
    assert_envelope(await ada.call("PATCH", f"/organizations/{elsewhere}", json={"name": "Mine"}), 404)
    for body, words in (
        ({"name": "Line\nBreak"}, ["name", "line breaks"]),
        ({"name": " "}, ["name"]),
        ({}, ["name", "required"]),
        ({"name": "X", "member_cap": 50}, ["member_cap", "unknown field"]),
    ):
        assert_envelope(await ada.call("PATCH", f"/organizations/{org}", json=body), 400, *words)
    assert (await org_row(rt, org)).name == "Acme Research"
    assert (await org_row(rt, elsewhere)).name == "Other"
    assert (await actions(rt)).count("organization.rename") == 1


async def test_invitation_flow_over_real_smtp(make_person, rt, smtp):
    admin = await make_person()
    bob = await make_person("bob.orgs@example.com", name="Bob Builder")
    org = await create_org(admin)
    before = len([m for m in smtp.sink.messages if m["To"] == bob.email])

    r = await admin.call("POST", f"/organizations/{org}/invitations", json={"email": "Bob.Orgs@Example.com"})
    assert r.status_code == 201, r.text
    invitation = r.json()["data"]
    assert invitation["email"] == bob.email and invitation["role"] == "member"
    assert invitation["status"] == "pending" and "token" not in str(invitation).lower()

    message = (await delivered(rt, smtp, bob.email, count=before + 1))[-1]
    assert "Acme" in message["Subject"]
    body = message.get_payload(decode=True).decode()
    assert "http://testserver/invitations/accept?token=" in body
    token = smtp.sink.token_in(message)
    assert len(token) >= 22

    # Stored only hashed.
    async with rt.db.read() as s:
        dump = " ".join(str(v) for row in (await s.execute(text("SELECT * FROM invitation"))).all() for v in row)
    assert token not in dump

    # Listing and previewing do not consume it.
    for _ in range(2):
        listed = (await admin.client.get(f"/api/v1/organizations/{org}/invitations")).json()["data"]
        assert [i["id"] for i in listed] == [invitation["id"]]
        preview = await bob.client.get("/api/v1/invitations/accept", params={"token": token})
        assert preview.status_code == 200, preview.text
        assert preview.json()["data"]["organization"] == {"id": org, "name": "Acme"}
        assert preview.json()["data"]["status"] == "pending"

    r = await bob.call("POST", "/invitations/accept", json={"token": token})
    assert r.status_code == 200, r.text
    assert r.json()["data"]["organization_id"] == org and r.json()["data"]["role"] == "member"
    assert await member_count(rt, org) == (2, 2)

    assert_envelope(await bob.call("POST", "/invitations/accept", json={"token": token}), 400, "already")
    assert (await admin.client.get(f"/api/v1/organizations/{org}/invitations")).json()["data"] == []

    members = (await bob.client.get(f"/api/v1/organizations/{org}/members")).json()
    assert members["total_count"] == 2
    assert {(m["email"], m["role"]) for m in members["data"]} == {(admin.email, "admin"), (bob.email, "member")}
    bob_row = next(m for m in members["data"] if m["id"] == bob.id)
    assert bob_row["name"] == "Bob Builder"

    # The switcher now offers the org.
    assert (await bob.call("PUT", "/me/context", json={"organization_id": org})).status_code == 200
    assert (await bob.client.get("/api/v1/me")).json()["data"]["context"] == {"organization_id": org}
    assert {"invitation.create", "invitation.accept"} <= set(await actions(rt))


async def test_accept_rules(make_person, rt):
    recording_mailer(rt)
    admin = await make_person()
    org = await create_org(admin)
    carol = await make_person("carol@example.com", verified=False)
    mallory = await make_person("mallory@example.com")

    token = await invite_token(rt, admin_id=admin.id, org_id=org, email=carol.email)
    error = assert_envelope(await carol.call("POST", "/invitations/accept", json={"token": token}), 403, "verify")
    assert error["metadata"]["code"] == "email_not_verified"
    error = assert_envelope(
        await mallory.call("POST", "/invitations/accept", json={"token": token}), 403, "different email"
    )
    assert error["metadata"]["code"] == "email_mismatch"
    assert_envelope(await mallory.call("POST", "/invitations/accept", json={"token": "x" * 32}), 400, "not valid")
    assert_envelope(await mallory.call("POST", "/invitations/accept", json={}), 400, "token")
    assert_envelope(
        await mallory.call("POST", "/invitations/accept", json={"token": token, "role": "admin"}),
        400,
        "role",
        "unknown field",
    )

    # Expired.
    dave = await make_person("dave@example.com")
    expired = await invite_token(rt, admin_id=admin.id, org_id=org, email=dave.email)
    async with rt.db.uow() as uow:
        await uow.session.execute(
            update(Invitation)
            .where(Invitation.email == dave.email)
            .values(expires_at=rt.clock.now() - timedelta(seconds=1))
        )
    error = assert_envelope(await dave.call("POST", "/invitations/accept", json={"token": expired}), 400, "expired")
    assert error["metadata"]["code"] == "token_expired"

    # Anonymous.
    assert_envelope(await dave.client.post("/api/v1/invitations/accept", json={"token": expired}), 403, "csrf")

    assert await member_count(rt, org) == (1, 1)
    async with rt.db.read() as s:
        assert (await s.scalar(select(func.count()).where(Invitation.accepted_at.is_not(None)))) == 0


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"email": "not-an-email"}, 400, ["email"]),
        ({"email": "x" * 400 + "@example.com"}, 400, ["email"]),
        ({"email": "new@example.com", "role": "owner"}, 400, ["role"]),
        ({"email": "new@example.com", "role": None}, 400, ["role"]),
        ({"email": "new@example.com", "organization_id": "org_x"}, 400, ["organization_id", "unknown field"]),
        ({}, 400, ["email", "required"]),
    ],
)
async def test_bad_invitations_change_nothing(make_person, rt, body, status, words):
    mailer = recording_mailer(rt)
    admin = await make_person()
    org = await create_org(admin)
    assert_envelope(await admin.call("POST", f"/organizations/{org}/invitations", json=body), status, *words)
    assert await count(rt, Invitation) == 0
    await rt.background.idle()
    assert mailer.sent == []


async def test_inviting_a_member_or_into_a_full_org_is_a_conflict(make_person, rt):
    mailer = recording_mailer(rt)
    admin = await make_person()
    org = await create_org(admin)
    error = assert_envelope(
        await admin.call("POST", f"/organizations/{org}/invitations", json={"email": admin.email.upper()}),
        409,
        "already a member",
    )
    assert error["metadata"]["code"] == "already_member"

    await orgs.set_member_cap(rt, actor=None, organization_id=org, cap=2)
    bob = await make_person()
    await join(rt, admin, bob, org)
    invitations_before = await count(rt, Invitation)
    error = assert_envelope(
        await admin.call("POST", f"/organizations/{org}/invitations", json={"email": "late@example.com"}),
        409,
        "full",
    )
    assert error["metadata"]["code"] == "organization_full" and error["metadata"]["member_cap"] == 2
    assert await count(rt, Invitation) == invitations_before
    await rt.background.idle()
    assert mailer.sent == []


async def test_reinviting_replaces_the_pending_invitation(make_person, rt):
    mailer = recording_mailer(rt)
    admin = await make_person()
    org = await create_org(admin)
    erin = await make_person("erin@example.com")
    for role in ("member", "admin"):
        r = await admin.call("POST", f"/organizations/{org}/invitations", json={"email": erin.email, "role": role})
        assert r.status_code == 201
    await rt.background.idle()  # mail leaves after the answer
    first, second = (m["body"] for m in mailer.sent)
    old = first.split("token=")[1].split()[0]
    new = second.split("token=")[1].split()[0]
    listed = (await admin.client.get(f"/api/v1/organizations/{org}/invitations")).json()["data"]
    assert [(i["email"], i["role"]) for i in listed] == [(erin.email, "admin")]
    assert_envelope(await erin.call("POST", "/invitations/accept", json={"token": old}), 400, "revoked")
    r = await erin.call("POST", "/invitations/accept", json={"token": new})
    assert r.status_code == 200 and r.json()["data"]["role"] == "admin"


async def test_revoking_invitations(make_person, rt):
    recording_mailer(rt)
    admin = await make_person()
    org = await create_org(admin)
    frank = await make_person("frank@example.com")
    token = await invite_token(rt, admin_id=admin.id, org_id=org, email=frank.email)
    [invitation] = (await admin.client.get(f"/api/v1/organizations/{org}/invitations")).json()["data"]

    assert (await admin.call("DELETE", f"/organizations/{org}/invitations/{invitation['id']}")).status_code == 204
    assert (await admin.client.get(f"/api/v1/organizations/{org}/invitations")).json()["data"] == []
    assert_envelope(await frank.call("POST", "/invitations/accept", json={"token": token}), 400, "revoked")
    # Idempotent; unknown ids are 404.
    assert (await admin.call("DELETE", f"/organizations/{org}/invitations/{invitation['id']}")).status_code == 204
    assert_envelope(await admin.call("DELETE", f"/organizations/{org}/invitations/inv_nope"), 404)
    assert (await actions(rt)).count("invitation.revoke") == 1

    # An accepted invitation cannot be revoked.
    token = await invite_token(rt, admin_id=admin.id, org_id=org, email=frank.email)
    assert (await frank.call("POST", "/invitations/accept", json={"token": token})).status_code == 200
    async with rt.db.read() as s:
        accepted = await s.scalar(select(Invitation.id).where(Invitation.accepted_at.is_not(None)))
    assert_envelope(await admin.call("DELETE", f"/organizations/{org}/invitations/{accepted}"), 409, "accepted")
    assert await member_count(rt, org) == (2, 2)


async def test_twenty_concurrent_accepts_with_three_free_seats(make_person, rt):
    admin = await make_person()
    org = await create_org(admin)
    await orgs.set_member_cap(rt, actor=None, organization_id=org, cap=4)  # the admin + 3 free seats
    people = [await make_person(f"racer{i}@example.com") for i in range(20)]
    tokens = [await invite_token(rt, admin_id=admin.id, org_id=org, email=p.email) for p in people]

    responses = await asyncio.gather(
        *(p.call("POST", "/invitations/accept", json={"token": t}) for p, t in zip(people, tokens, strict=True))
    )
    statuses = sorted(r.status_code for r in responses)
    assert statuses == [200] * 3 + [409] * 17, [r.text for r in responses if r.status_code not in (200, 409)]
    for r in responses:
        if r.status_code == 409:
            assert r.json()["error"]["metadata"]["code"] == "organization_full"
    assert await member_count(rt, org) == (4, 4)
    # The losers' invitations stay usable (nothing consumed by a refused accept).
    assert await count(rt, Invitation, Invitation.accepted_at.is_not(None)) == 3


async def test_staff_sets_the_member_cap(make_person, rt):
    admin = await make_person()
    org = await create_org(admin)
    plain = Actor(user_id=admin.id, email_verified=True)
    with pytest.raises(Forbidden):
        await orgs.set_member_cap(rt, actor=plain, organization_id=org, cap=50)
    staff = Actor(user_id=admin.id, is_staff=True, email_verified=True)
    for bad in (0, -1, 100_001):
        with pytest.raises(BadRequest):
            await orgs.set_member_cap(rt, actor=staff, organization_id=org, cap=bad)
    with pytest.raises(NotFound):
        await orgs.set_member_cap(rt, actor=staff, organization_id="org_nope", cap=5)
    assert (await count(rt, AuditEvent, AuditEvent.action == "organization.member_cap_set")) == 0

    updated = await orgs.set_member_cap(rt, actor=staff, organization_id=org, cap=50)
    assert updated.member_cap == 50
    got = (await admin.client.get(f"/api/v1/organizations/{org}")).json()["data"]
    assert got["member_cap"] == 50
    async with rt.db.read() as s:
        event = await s.scalar(select(AuditEvent).where(AuditEvent.action == "organization.member_cap_set"))
    assert event.before == {"member_cap": None} and event.after == {"member_cap": 50}
    assert event.actor_user_id == admin.id

    await orgs.set_member_cap(rt, actor=None, organization_id=org, cap=None)
    assert (await admin.client.get(f"/api/v1/organizations/{org}")).json()["data"]["member_cap"] == 10


async def test_the_deployment_default_cap_applies(make_person, rt):
    # No override: TEAMROUTER_MAX_ORG_MEMBERS (10). The invitation went out while a seat was free;
    # by the time it is accepted the org has filled up (the counter is set directly to get there).
    recording_mailer(rt)
    admin = await make_person()
    org = await create_org(admin)
    late = await make_person("late@example.com")
    token = await invite_token(rt, admin_id=admin.id, org_id=org, email=late.email)
    async with rt.db.uow() as uow:
        await uow.session.execute(update(Organization).where(Organization.id == org).values(member_count=10))
    error = assert_envelope(await late.call("POST", "/invitations/accept", json={"token": token}), 409, "full")
    assert error["metadata"]["member_cap"] == 10
    assert await count(rt, Membership, Membership.user_id == late.id) == 0
    assert await count(rt, Invitation, Invitation.accepted_at.is_not(None)) == 0
    async with rt.db.uow() as uow:
        await uow.session.execute(update(Organization).where(Organization.id == org).values(member_count=9))
    assert (await late.call("POST", "/invitations/accept", json={"token": token})).status_code == 200
    assert (await org_row(rt, org)).member_count == 10
