"""Admin-managed keys: once an org admin (not the key's creator) sets a key's status or limit, or the
key is disabled at its creator's exit, the creator may no longer undo that decision (re-enable the
key, remove or raise its limit, change limit_reset); they may still rename, disable, delete it and
lower its limit. Admins may change everything."""

from __future__ import annotations

import pytest
from openrouter import operations, utils
from tests.support.keys import add_member, enter, key_audit, key_row, make_org, new_key, with_key
from tests.support.orgs import assert_envelope, join, recording_mailer

from teamrouter.domain.keys import auth as key_auth
from teamrouter.errors import Unauthorized

pytestmark = pytest.mark.usefixtures("database_url")

TINY = 0.000001  # USD: 1,000 nano-USD


async def org_of(make_person, rt):
    admin = await make_person()
    member = await make_person()
    org = await make_org(rt, admin)
    await add_member(rt, org, member)
    await enter(admin, org)
    await enter(member, org)
    return admin, member, org


def assert_admin_managed_refusal(response, field: str) -> None:
    error = assert_envelope(response, 403, "admin manages this key's status and limit")
    assert error["metadata"]["code"] == "key_admin_managed"
    assert error["metadata"]["field"] == field
    assert error["message"].startswith(f"{field}:")


async def test_a_member_cannot_undo_an_admins_disable_and_limit(make_person, client, rt):
    admin, member, _ = await org_of(make_person, rt)
    key, plain = await new_key(member, name="member's", limit=5, limit_reset="daily")
    assert key["admin_managed"] is False
    await key_auth.inference_key(rt, plain)  # cached: the changes below must still reach the gateway

    r = await admin.call("PATCH", f"/keys/{key['hash']}", json={"limit": TINY, "disabled": True})
    assert r.status_code == 200, r.text
    assert r.json()["data"]["admin_managed"] is True
    utils.unmarshal_json(r.text, operations.UpdateKeysResponse)
    with pytest.raises(Unauthorized):
        await key_auth.inference_key(rt, plain)

    # The QA walk's request, and each part of it alone: 403, nothing changes.
    audit_before = len(await key_audit(rt))
    for body, field in (
        ({"limit": None, "disabled": False}, "disabled"),
        ({"disabled": False}, "disabled"),
        ({"limit": None}, "limit"),
        ({"limit": 1}, "limit"),
        ({"limit_reset": "monthly"}, "limit_reset"),
        ({"limit_reset": None}, "limit_reset"),
        ({"name": "sneaky", "disabled": False}, "disabled"),
    ):
        assert_admin_managed_refusal(await member.call("PATCH", f"/keys/{key['hash']}", json=body), field)
    row = await key_row(rt, key["hash"])
    assert (row.disabled, row.spend_limit, row.limit_reset, row.name, row.admin_managed) == (
        True,
        1_000,
        "daily",
        "member's",
        True,
    )
    assert len(await key_audit(rt)) == audit_before
    with pytest.raises(Unauthorized):
        await key_auth.inference_key(rt, plain)
    assert (await with_key(client, plain, "GET", "/key")).status_code == 401

    # What only makes the key stricter, or renames it, is still the creator's to do.
    for body in ({"name": "renamed"}, {"disabled": True}, {"limit": 0.0000005}, {"limit_reset": "daily"}):
        r = await member.call("PATCH", f"/keys/{key['hash']}", json=body)
        assert r.status_code == 200, (body, r.text)
    row = await key_row(rt, key["hash"])
    assert (row.name, row.disabled, row.spend_limit, row.admin_managed) == ("renamed", True, 500, True)
    r = await member.call("GET", f"/keys/{key['hash']}")
    assert r.json()["data"]["admin_managed"] is True

    # The admin can change everything; the key works again, and stays admin-managed.
    r = await admin.call("PATCH", f"/keys/{key['hash']}", json={"disabled": False, "limit": None, "limit_reset": None})
    assert r.status_code == 200, r.text
    assert r.json()["data"]["admin_managed"] is True
    assert (await key_auth.inference_key(rt, plain)).spend_limit is None
    # Disabling stays the creator's right (an admin then re-enables); re-enabling does not.
    assert (await member.call("PATCH", f"/keys/{key['hash']}", json={"disabled": True})).status_code == 200
    with pytest.raises(Unauthorized):
        await key_auth.inference_key(rt, plain)
    assert_admin_managed_refusal(
        await member.call("PATCH", f"/keys/{key['hash']}", json={"disabled": False}), "disabled"
    )
    # Deleting is still the creator's right too.
    assert (await member.call("DELETE", f"/keys/{key['hash']}")).status_code == 200


async def test_what_makes_a_key_admin_managed(make_person, client, rt):
    admin, member, _ = await org_of(make_person, rt)
    _, mgmt_plain = await new_key(admin, name="ops", management=True)
    own, _ = await new_key(member, name="own")
    renamed, _ = await new_key(member, name="renamed by admin")
    by_key, _ = await new_key(member, name="limited by a management key")
    admins, _ = await new_key(admin, name="admin's own")

    # A member's changes to their own key: no restriction.
    for body in ({"disabled": True}, {"disabled": False}, {"limit": 1}, {"limit": 3}, {"limit": None}):
        r = await member.call("PATCH", f"/keys/{own['hash']}", json=body)
        assert r.status_code == 200 and r.json()["data"]["admin_managed"] is False, r.text
    # An admin renaming someone's key, or changing their own: not a decision about status or limit.
    assert (await admin.call("PATCH", f"/keys/{renamed['hash']}", json={"name": "x"})).json()["data"][
        "admin_managed"
    ] is False
    r = await admin.call("PATCH", f"/keys/{admins['hash']}", json={"limit": 1, "disabled": True})
    assert r.json()["data"]["admin_managed"] is False
    assert (await member.call("PATCH", f"/keys/{renamed['hash']}", json={"limit": 9})).status_code == 200

    # An admin acting through a management key takes over as a session would.
    r = await with_key(client, mgmt_plain, "PATCH", f"/keys/{by_key['hash']}", json={"limit": 2})
    assert r.status_code == 200 and r.json()["data"]["admin_managed"] is True, r.text
    assert_admin_managed_refusal(await member.call("PATCH", f"/keys/{by_key['hash']}", json={"limit": 3}), "limit")
    event = (await key_audit(rt))[-1]
    assert event.action == "api_key.update" and event.actor_user_id == admin.id
    assert event.before["admin_managed"] is False and event.after["admin_managed"] is True
    listed = (await member.call("GET", "/keys")).json()["data"]
    assert {k["name"]: k["admin_managed"] for k in listed} == {
        "own": False,
        "x": False,
        "limited by a management key": True,
    }


@pytest.mark.parametrize("how", ["leaves", "removed"])
async def test_keys_disabled_at_exit_stay_disabled_when_the_member_returns(make_person, rt, how):
    recording_mailer(rt)
    admin = await make_person()
    member = await make_person()
    org = await make_org(rt, admin)
    await enter(admin, org)
    await join(rt, admin, member, org)
    await enter(member, org)
    key, plain = await new_key(member, name="before leaving")
    if how == "leaves":
        assert (await member.call("POST", f"/organizations/{org}/leave")).status_code == 204
    else:
        assert (await admin.call("DELETE", f"/organizations/{org}/members/{member.id}")).status_code == 204
    row = await key_row(rt, key["hash"])
    assert (row.disabled, row.admin_managed) == (True, True)

    await join(rt, admin, member, org)  # re-invited, as a member
    await enter(member, org)
    r = await member.call("GET", "/keys", params={"include_disabled": "true"})
    assert [(k["hash"], k["disabled"], k["admin_managed"]) for k in r.json()["data"]] == [(key["hash"], True, True)]
    assert_admin_managed_refusal(
        await member.call("PATCH", f"/keys/{key['hash']}", json={"limit": None, "disabled": False}), "disabled"
    )
    with pytest.raises(Unauthorized):
        await key_auth.inference_key(rt, plain)
    # The admin decides: re-enabled, it works again.
    assert (await admin.call("PATCH", f"/keys/{key['hash']}", json={"disabled": False})).status_code == 200
    assert (await key_auth.inference_key(rt, plain)).key_id == row.id


async def test_a_limit_an_admin_sets_when_creating_a_members_key_is_the_admins(make_person, client, rt):
    admin, member, _ = await org_of(make_person, rt)
    _, mgmt_plain = await new_key(admin, name="ops", management=True)
    limited, _ = await new_key(admin, name="for member", creator_user_id=member.id, limit=5, limit_reset="daily")
    assert limited["admin_managed"] is True
    r = await with_key(
        client, mgmt_plain, "POST", "/keys", json={"name": "by key", "creator_user_id": member.id, "limit": 1}
    )
    assert r.status_code == 201 and r.json()["data"]["admin_managed"] is True, r.text
    by_key = r.json()["data"]
    # The creator cannot lift what the admin set at creation, any more than a later change.
    assert_admin_managed_refusal(await member.call("PATCH", f"/keys/{limited['hash']}", json={"limit": None}), "limit")
    assert_admin_managed_refusal(
        await member.call("PATCH", f"/keys/{limited['hash']}", json={"limit_reset": "monthly"}), "limit_reset"
    )
    assert_admin_managed_refusal(await member.call("PATCH", f"/keys/{by_key['hash']}", json={"limit": 2}), "limit")
    assert (await key_row(rt, limited["hash"])).spend_limit == 5_000_000_000
    # No limit set: nothing of the admin's to keep; a member's own key or an admin's own neither.
    unlimited, _ = await new_key(admin, name="unlimited", creator_user_id=member.id)
    own, _ = await new_key(member, name="own", limit=5)
    admins, _ = await new_key(admin, name="admin's", limit=5)
    assert [unlimited["admin_managed"], own["admin_managed"], admins["admin_managed"]] == [False, False, False]
    assert (await member.call("PATCH", f"/keys/{own['hash']}", json={"limit": None})).status_code == 200


@pytest.mark.parametrize("how", ["leaves", "removed"])
async def test_keys_already_disabled_at_exit_stay_disabled_when_the_member_returns(make_person, rt, how):
    recording_mailer(rt)
    admin = await make_person()
    member = await make_person()
    org = await make_org(rt, admin)
    await enter(admin, org)
    await join(rt, admin, member, org)
    await enter(member, org)
    key, plain = await new_key(member, name="paused before leaving")
    assert (await member.call("PATCH", f"/keys/{key['hash']}", json={"disabled": True})).status_code == 200
    if how == "leaves":
        assert (await member.call("POST", f"/organizations/{org}/leave")).status_code == 204
    else:
        assert (await admin.call("DELETE", f"/organizations/{org}/members/{member.id}")).status_code == 204
    row = await key_row(rt, key["hash"])
    assert (row.disabled, row.admin_managed) == (True, True)
    (event,) = [e for e in await key_audit(rt) if e.target_id == row.id and e.action == "api_key.update"]
    assert event.actor_user_id == (member.id if how == "leaves" else admin.id)
    assert event.before == {"admin_managed": False}
    assert event.after == {"admin_managed": True, "reason": "creator left the organization"}

    await join(rt, admin, member, org)
    await enter(member, org)
    assert_admin_managed_refusal(
        await member.call("PATCH", f"/keys/{key['hash']}", json={"disabled": False}), "disabled"
    )
    with pytest.raises(Unauthorized):
        await key_auth.inference_key(rt, plain)

    # Where the org keeps a leaver's keys, it makes no decision on them, paused or not.
    r = await admin.call("PATCH", f"/organizations/{org}/settings", json={"member_exit_keys": "keep"})
    assert r.status_code == 200, r.text
    paused, _ = await new_key(member, name="paused, kept")
    assert (await member.call("PATCH", f"/keys/{paused['hash']}", json={"disabled": True})).status_code == 200
    if how == "leaves":
        assert (await member.call("POST", f"/organizations/{org}/leave")).status_code == 204
    else:
        assert (await admin.call("DELETE", f"/organizations/{org}/members/{member.id}")).status_code == 204
    assert (await key_row(rt, paused["hash"])).admin_managed is False
