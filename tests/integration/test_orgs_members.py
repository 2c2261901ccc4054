"""Roles, the last admin (incl. races), removal and leaving: access ends at once, keys are disabled."""

from __future__ import annotations

import asyncio

import pytest
from sqlalchemy import select
from tests.support.orgs import (
    assert_envelope,
    create_org,
    join,
    member_count,
    recording_mailer,
    roles,
    sign_in_again,
)

from teamrouter.domain.audit.models import AuditEvent
from teamrouter.domain.credits.models import CreditAccount
from teamrouter.domain.keys.models import ApiKey
from teamrouter.domain.orgs.models import Membership
from teamrouter.ids import hash_token, new_api_key, new_id


def set_role(actor, org, target, role):
    return actor.call("PATCH", f"/organizations/{org}/members/{target.id}", json={"role": role})


@pytest.fixture(autouse=True)
def _quiet_mail(rt):
    recording_mailer(rt)


async def test_admins_change_roles(make_person, rt):
    admin = await make_person()
    bob = await make_person()
    org = await create_org(admin)
    await join(rt, admin, bob, org)

    r = await admin.call("PATCH", f"/organizations/{org}/members/{bob.id}", json={"role": "admin"})
    assert r.status_code == 200, r.text
    assert r.json()["data"] == {**r.json()["data"], "id": bob.id, "role": "admin", "email": bob.email}
    # Same role again: no change, no audit row.
    assert (
        await admin.call("PATCH", f"/organizations/{org}/members/{bob.id}", json={"role": "admin"})
    ).status_code == 200
    async with rt.db.read() as s:
        events = (await s.scalars(select(AuditEvent).where(AuditEvent.action == "membership.role_change"))).all()
    assert [(e.target_id, e.before, e.after, e.actor_user_id) for e in events] == [
        (bob.id, {"role": "member"}, {"role": "admin"}, admin.id)
    ]
    # Bob (now admin, signed in again: the change ended his session) demotes the creator.
    await sign_in_again(bob)
    assert (
        await bob.call("PATCH", f"/organizations/{org}/members/{admin.id}", json={"role": "member"})
    ).status_code == 200
    assert await roles(rt, org) == {admin.id: "member", bob.id: "admin"}
    # The demoted creator lost her session and, signed in again, her admin powers.
    assert_envelope(await admin.call("PATCH", f"/organizations/{org}/members/{bob.id}", json={"role": "member"}), 401)
    await sign_in_again(admin)
    assert_envelope(await admin.call("PATCH", f"/organizations/{org}/members/{bob.id}", json={"role": "member"}), 403)


@pytest.mark.parametrize(
    ("body", "words"),
    [
        ({"role": "owner"}, ["role"]),
        ({"role": "org:admin"}, ["role"]),
        ({"role": None}, ["role"]),
        ({}, ["role", "required"]),
        ({"role": "admin", "user_id": "x"}, ["user_id", "unknown field"]),
    ],
)
async def test_bad_role_changes_change_nothing(make_person, rt, body, words):
    admin = await make_person()
    bob = await make_person()
    org = await create_org(admin)
    await join(rt, admin, bob, org)
    assert_envelope(await admin.call("PATCH", f"/organizations/{org}/members/{bob.id}", json=body), 400, *words)
    assert await roles(rt, org) == {admin.id: "admin", bob.id: "member"}


async def test_acting_on_a_non_member_is_404(make_person, rt):
    admin = await make_person()
    outsider = await make_person()
    org = await create_org(admin)
    for method, body in (("PATCH", {"role": "admin"}), ("DELETE", None)):
        error = assert_envelope(
            await admin.call(method, f"/organizations/{org}/members/{outsider.id}", json=body), 404, "member"
        )
        assert error["metadata"]["code"] == "member_not_found"
    assert await roles(rt, org) == {admin.id: "admin"}


async def test_the_last_admin_cannot_leave_or_be_demoted(make_person, rt):
    admin = await make_person()
    bob = await make_person()
    org = await create_org(admin)
    await join(rt, admin, bob, org)
    for method, path, body in (
        ("PATCH", f"/organizations/{org}/members/{admin.id}", {"role": "member"}),
        ("DELETE", f"/organizations/{org}/members/{admin.id}", None),
        ("POST", f"/organizations/{org}/leave", None),
    ):
        error = assert_envelope(await admin.call(method, path, json=body), 409, "at least one admin")
        assert error["metadata"]["code"] == "last_admin"
    assert await roles(rt, org) == {admin.id: "admin", bob.id: "member"}
    assert await member_count(rt, org) == (2, 2)

    # With a second admin the first may leave.
    assert (
        await admin.call("PATCH", f"/organizations/{org}/members/{bob.id}", json={"role": "admin"})
    ).status_code == 200
    assert (await admin.call("POST", f"/organizations/{org}/leave")).status_code == 204
    assert await roles(rt, org) == {bob.id: "admin"}
    assert await member_count(rt, org) == (1, 1)
    assert_envelope(await admin.client.get(f"/api/v1/organizations/{org}"), 404)


@pytest.mark.parametrize("how", ["demote", "leave", "remove"])
async def test_two_admins_racing_leave_one_admin(make_person, rt, how):
    a = await make_person()
    b = await make_person()
    org = await create_org(a)
    await join(rt, a, b, org, role="admin")

    def request(actor, other):
        if how == "demote":
            return actor.call("PATCH", f"/organizations/{org}/members/{other.id}", json={"role": "member"})
        if how == "leave":
            return actor.call("POST", f"/organizations/{org}/leave")
        return actor.call("DELETE", f"/organizations/{org}/members/{other.id}")

    for _ in range(3):
        responses = await asyncio.gather(request(a, b), request(b, a))
        statuses = sorted(r.status_code for r in responses)
        # 401: the winner's change ended the loser's session before the loser's request read it.
        assert statuses[1] in (409, 403, 404, 401), [r.text for r in responses]
        assert statuses[0] in (200, 204), [r.text for r in responses]
        current = await roles(rt, org)
        assert list(current.values()).count("admin") == 1, current
        cached, real = await member_count(rt, org)
        assert cached == real
        if how == "demote":  # put the second admin back and race again
            survivor = a if current[a.id] == "admin" else b
            other = b if survivor is a else a
            await survivor.call("PATCH", f"/organizations/{org}/members/{other.id}", json={"role": "admin"})
            await sign_in_again(other)  # both role changes ended their sessions
        else:
            break


async def _key(rt, *, org: str, creator: str, management: bool = False) -> str:
    now = rt.clock.now()
    async with rt.db.uow() as uow:
        account = await uow.session.scalar(select(CreditAccount.id).where(CreditAccount.organization_id == org))
        key_id = new_id("key")
        uow.session.add(
            ApiKey(
                id=key_id,
                hash=hash_token(new_api_key()),
                label="sk-tr-v1-abc...xyz",
                name=f"{'mgmt' if management else 'inference'} key",
                organization_id=org,
                account_id=account,
                creator_user_id=creator,
                management=management,
                created_at=now,
                updated_at=now,
            )
        )
    return key_id


async def _disabled(rt) -> dict[str, bool]:
    async with rt.db.read() as s:
        return dict((await s.execute(select(ApiKey.id, ApiKey.disabled))).all())


@pytest.mark.parametrize("how", ["removed", "leaves"])
async def test_leaving_ends_access_at_once(make_person, rt, how):
    admin = await make_person()
    bob = await make_person()
    org = await create_org(admin)
    other_org = await create_org(bob, "Bob's own")
    await join(rt, admin, bob, org)
    assert (await bob.call("PUT", "/me/context", json={"organization_id": org})).status_code == 200
    bob_key = await _key(rt, org=org, creator=bob.id)
    bob_mgmt = await _key(rt, org=org, creator=bob.id, management=True)
    bob_elsewhere = await _key(rt, org=other_org, creator=bob.id)
    admin_key = await _key(rt, org=org, creator=admin.id)

    if how == "removed":
        assert (await admin.call("DELETE", f"/organizations/{org}/members/{bob.id}")).status_code == 204
    else:
        assert (await bob.call("POST", f"/organizations/{org}/leave")).status_code == 204

    me = (await bob.client.get("/api/v1/me")).json()["data"]
    assert me["context"] == {"organization_id": None}
    assert [m["organization_id"] for m in me["memberships"]] == [other_org]
    assert_envelope(await bob.client.get(f"/api/v1/organizations/{org}"), 404)
    assert_envelope(await bob.client.get("/api/v1/organization/members"), 404, "no organization")
    assert await _disabled(rt) == {bob_key: True, bob_mgmt: True, bob_elsewhere: False, admin_key: False}
    assert await member_count(rt, org) == (1, 1)
    async with rt.db.read() as s:
        events = (await s.execute(select(AuditEvent.action, AuditEvent.target_id))).all()
    expected = "membership.remove" if how == "removed" else "membership.leave"
    assert (expected, bob.id) in events
    assert {t for a, t in events if a == "api_key.disable"} == {bob_key, bob_mgmt}


async def test_member_exit_keys_keep_keeps_inference_keys_only(make_person, rt):
    admin = await make_person()
    bob = await make_person()
    org = await create_org(admin)
    await join(rt, admin, bob, org)
    r = await admin.call("PATCH", f"/organizations/{org}/settings", json={"member_exit_keys": "keep"})
    assert r.status_code == 200, r.text
    bob_key = await _key(rt, org=org, creator=bob.id)
    bob_mgmt = await _key(rt, org=org, creator=bob.id, management=True)
    assert (await admin.call("DELETE", f"/organizations/{org}/members/{bob.id}")).status_code == 204
    assert await _disabled(rt) == {bob_key: False, bob_mgmt: True}


async def test_an_admin_can_remove_another_admin_and_rejoin_works(make_person, rt):
    admin = await make_person()
    bob = await make_person()
    org = await create_org(admin)
    await join(rt, admin, bob, org, role="admin")
    assert (await admin.call("DELETE", f"/organizations/{org}/members/{bob.id}")).status_code == 204
    assert await roles(rt, org) == {admin.id: "admin"}
    await join(rt, admin, bob, org)
    assert await roles(rt, org) == {admin.id: "admin", bob.id: "member"}
    assert await member_count(rt, org) == (2, 2)
    async with rt.db.read() as s:
        assert len((await s.scalars(select(Membership))).all()) == 2
