"""Handing an admin-managed key back to its creator: `PATCH /keys/{hash}` with `"admin_managed": false`,
from an org admin other than the creator (a session, or a management key acting as one). Anyone else
is refused (403: the creator, a member, personal context); a key of another org or another member
reads as not found (404). The change is audited and published to the other instances like any other
key change."""

from __future__ import annotations

import pytest
from openrouter import operations, utils
from tests.support.keys import add_member, enter, key_audit, key_row, make_org, new_key, with_key
from tests.support.orgs import assert_envelope

from teamrouter.domain.keys import auth as key_auth
from teamrouter.errors import Unauthorized
from teamrouter.listeners import KEY_LISTENERS

pytestmark = pytest.mark.usefixtures("database_url")

HAND_BACK = {"admin_managed": False}


async def org_of(make_person, rt):
    admin = await make_person()
    member = await make_person()
    org = await make_org(rt, admin)
    await add_member(rt, org, member)
    await enter(admin, org)
    await enter(member, org)
    return admin, member, org


async def taken_over(admin, member, **body):
    """A key of the member's that the admin has then disabled and limited: admin-managed."""
    key, plain = await new_key(member, name="member's")
    r = await admin.call("PATCH", f"/keys/{key['hash']}", json={"disabled": True, "limit": 1, **body})
    assert r.status_code == 200 and r.json()["data"]["admin_managed"] is True, r.text
    return key, plain


def assert_hand_back_refused(response, *words: str) -> None:
    error = assert_envelope(response, 403, *words)
    assert error["metadata"]["code"] == "field_forbidden"
    assert error["metadata"]["field"] == "admin_managed"


async def test_an_admin_hands_a_key_back_to_its_member(make_person, client, rt):
    admin, member, org = await org_of(make_person, rt)
    key, plain = await taken_over(admin, member)
    heard: list[str] = []
    rt.extras.setdefault(KEY_LISTENERS, []).append(heard.append)  # where the Redis publisher listens too
    audit_before = len(await key_audit(rt))

    r = await admin.call("PATCH", f"/keys/{key['hash']}", json=HAND_BACK)
    assert r.status_code == 200, r.text
    utils.unmarshal_json(r.text, operations.UpdateKeysResponse)  # still OpenRouter's shape
    data = r.json()["data"]
    assert (data["admin_managed"], data["disabled"], data["limit"]) == (False, True, 1)  # nothing else moved
    row = await key_row(rt, key["hash"])
    assert (row.admin_managed, row.disabled, row.spend_limit) == (False, True, 1_000_000_000)
    assert heard == [key["hash"]]
    (event,) = (await key_audit(rt))[audit_before:]
    assert (event.action, event.actor_user_id, event.organization_id) == ("api_key.update", admin.id, org)
    assert (event.before, event.after) == ({"admin_managed": True}, {"admin_managed": False})
    assert (await member.call("GET", f"/keys/{key['hash']}")).json()["data"]["admin_managed"] is False

    # The member decides again: re-enable, lift the limit, change the reset; the key works.
    for body in ({"disabled": False}, {"limit": None}, {"limit": 3, "limit_reset": "weekly"}):
        r = await member.call("PATCH", f"/keys/{key['hash']}", json=body)
        assert r.status_code == 200 and r.json()["data"]["admin_managed"] is False, (body, r.text)
    assert (await key_auth.inference_key(rt, plain)).spend_limit == 3_000_000_000

    # Handing back an unmanaged key changes nothing and records nothing.
    audit_before = len(await key_audit(rt))
    r = await admin.call("PATCH", f"/keys/{key['hash']}", json=HAND_BACK)
    assert r.status_code == 200 and r.json()["data"]["admin_managed"] is False
    assert len(await key_audit(rt)) == audit_before


async def test_a_management_key_acting_as_an_admin_hands_back_and_wins_over_a_take_over(make_person, client, rt):
    admin, member, _ = await org_of(make_person, rt)
    _, mgmt_plain = await new_key(admin, name="ops", management=True)
    key, plain = await taken_over(admin, member)

    # A limit set in the same request is handed over with the key: the member may lift it.
    body = {"disabled": False, "limit": 2, **HAND_BACK}
    r = await with_key(client, mgmt_plain, "PATCH", f"/keys/{key['hash']}", json=body)
    assert r.status_code == 200, r.text
    assert (r.json()["data"]["admin_managed"], r.json()["data"]["limit"]) == (False, 2)
    event = (await key_audit(rt))[-1]
    assert event.actor_user_id == admin.id and event.actor_key_id is not None
    assert (event.before["admin_managed"], event.after["admin_managed"]) == (True, False)
    assert (await member.call("PATCH", f"/keys/{key['hash']}", json={"limit": None})).status_code == 200
    assert (await key_auth.inference_key(rt, plain)).spend_limit is None


async def test_a_member_cannot_hand_a_key_back(make_person, client, rt):
    admin, member, org = await org_of(make_person, rt)
    key, plain = await taken_over(admin, member)
    other, _ = await new_key(member, name="never managed")
    audit_before = len(await key_audit(rt))

    for body in (HAND_BACK, {"name": "sneaky", **HAND_BACK}, {"disabled": False, **HAND_BACK}):
        r = await member.call("PATCH", f"/keys/{key['hash']}", json=body)
        assert_hand_back_refused(r, "only an organization admin")
    # Refused on their unmanaged key too: the field is not theirs to send.
    assert_hand_back_refused(await member.call("PATCH", f"/keys/{other['hash']}", json=HAND_BACK))
    row = await key_row(rt, key["hash"])
    assert (row.admin_managed, row.disabled, row.spend_limit, row.name) == (True, True, 1_000_000_000, "member's")
    assert len(await key_audit(rt)) == audit_before
    with pytest.raises(Unauthorized):
        await key_auth.inference_key(rt, plain)
    assert_envelope(await member.call("PATCH", f"/keys/{key['hash']}", json={"disabled": False}), 403, "admin manages")

    # Another member's key: not found, as for any other change.
    peer = await make_person()
    await add_member(rt, org, peer)
    await enter(peer, org)
    assert_envelope(await peer.call("PATCH", f"/keys/{key['hash']}", json=HAND_BACK), 404, "Key not found")

    # Only false: a key becomes admin-managed by an admin's decision on its status or limit.
    for value in (True, None, "false", 0):
        r = await admin.call("PATCH", f"/keys/{other['hash']}", json={"admin_managed": value})
        assert r.status_code == 400, (value, r.text)
        assert r.json()["error"]["metadata"]["field"] == "admin_managed"
    assert (await key_row(rt, other["hash"])).admin_managed is False


async def test_an_admin_does_not_hand_their_own_key_back_to_themselves(make_person, client, rt):
    admin, _, org = await org_of(make_person, rt)
    grace = await make_person()
    await add_member(rt, org, grace, role="admin")
    await enter(grace, org)
    # Another admin's limit on Grace's key makes it admin-managed; Grace may not clear that herself
    # (through a session or her management key), but the other admin may.
    key, _ = await new_key(grace, name="grace's")
    _, grace_mgmt = await new_key(grace, name="grace ops", management=True)
    assert (await admin.call("PATCH", f"/keys/{key['hash']}", json={"limit": 1})).json()["data"]["admin_managed"]
    assert_hand_back_refused(await grace.call("PATCH", f"/keys/{key['hash']}", json=HAND_BACK), "another admin")
    r = await with_key(client, grace_mgmt, "PATCH", f"/keys/{key['hash']}", json=HAND_BACK)
    assert_hand_back_refused(r, "another admin")
    assert (await key_row(rt, key["hash"])).admin_managed is True
    assert (await admin.call("PATCH", f"/keys/{key['hash']}", json=HAND_BACK)).json()["data"]["admin_managed"] is False

    # In personal context nobody hands anything back: there is no admin there.
    await enter(grace, None)
    personal, _ = await new_key(grace, name="personal")
    assert_hand_back_refused(await grace.call("PATCH", f"/keys/{personal['hash']}", json=HAND_BACK), "organization")


async def test_an_admin_of_another_org_gets_not_found(make_person, client, rt):
    admin, member, _ = await org_of(make_person, rt)
    key, _ = await taken_over(admin, member)
    outsider = await make_person()
    other_org = await make_org(rt, outsider, name="Elsewhere")
    await enter(outsider, other_org)
    _, outsider_mgmt = await new_key(outsider, name="elsewhere ops", management=True)
    audit_before = len(await key_audit(rt))

    assert_envelope(await outsider.call("PATCH", f"/keys/{key['hash']}", json=HAND_BACK), 404, "Key not found")
    r = await with_key(client, outsider_mgmt, "PATCH", f"/keys/{key['hash']}", json=HAND_BACK)
    assert_envelope(r, 404, "Key not found")
    # Nor from the outsider's personal context.
    await enter(outsider, None)
    assert_envelope(await outsider.call("PATCH", f"/keys/{key['hash']}", json=HAND_BACK), 404, "Key not found")
    assert (await key_row(rt, key["hash"])).admin_managed is True
    assert len(await key_audit(rt)) == audit_before
