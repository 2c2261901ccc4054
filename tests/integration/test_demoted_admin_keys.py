"""A demoted admin's management keys are disabled, as at removal, so promoting the person again does
not bring old keys back to life; their inference keys are untouched."""

from __future__ import annotations

import pytest
from sqlalchemy import select
from tests.support.keys import add_member, enter, key_audit, key_row, make_org, new_key, with_key
from tests.support.orgs import assert_envelope, sign_in_again

from teamrouter.domain.keys import auth as key_auth
from teamrouter.domain.keys.models import ApiKey
from teamrouter.listeners import MEMBERSHIP_LISTENERS

pytestmark = pytest.mark.usefixtures("database_url")


async def test_demotion_disables_management_keys_for_good(make_person, client, rt):
    admin = await make_person()
    grace = await make_person()
    org = await make_org(rt, admin)
    await add_member(rt, org, grace, role="admin")
    await enter(admin, org)
    await enter(grace, org)
    mgmt, mgmt_plain = await new_key(grace, name="grace ops", management=True)
    inference, inference_plain = await new_key(grace, name="grace inference")
    _, personal_mgmt_plain = await new_key(admin, name="admin ops", management=True)
    assert (await with_key(client, mgmt_plain, "GET", "/keys")).status_code == 200
    heard: list[tuple[str, str]] = []
    await key_auth.inference_key(rt, inference_plain)  # registers the key cache's listener
    rt.extras[MEMBERSHIP_LISTENERS].append(lambda org_id, user_id: heard.append((org_id, user_id)))

    path = f"/organizations/{org}/members/{grace.id}"
    assert (await admin.call("PATCH", path, json={"role": "member"})).status_code == 200

    row = await key_row(rt, mgmt["hash"])
    assert (row.disabled, row.admin_managed) == (True, True)
    assert_envelope(await with_key(client, mgmt_plain, "GET", "/keys"), 401, "disabled")
    # Her inference keys stay usable (a member may have those); the admin's own keys are untouched.
    assert (await key_row(rt, inference["hash"])).disabled is False
    assert (await key_auth.inference_key(rt, inference_plain)).key_id == (await key_row(rt, inference["hash"])).id
    assert (await with_key(client, personal_mgmt_plain, "GET", "/keys")).status_code == 200
    # Caches scoped to the membership hear of it after commit, as at removal.
    assert heard == [(org, grace.id)]
    events = [e for e in await key_audit(rt) if e.target_id == row.id and e.action == "api_key.disable"]
    assert len(events) == 1 and events[0].actor_user_id == admin.id
    assert events[0].after["reason"] == "creator is no longer an admin of the organization"

    # As a member she cannot re-enable it (it is admin-managed)...
    await sign_in_again(grace)
    await enter(grace, org)
    r = await grace.call("PATCH", f"/keys/{mgmt['hash']}", json={"disabled": False})
    assert_envelope(r, 403, "admin manages this key's status and limit")
    assert (await key_row(rt, mgmt["hash"])).disabled is True

    # ...and promoting her again does not revive it: it stays refused until an admin re-enables it.
    assert (await admin.call("PATCH", path, json={"role": "admin"})).status_code == 200
    assert_envelope(await with_key(client, mgmt_plain, "GET", "/keys"), 401, "disabled")
    await sign_in_again(grace)
    await enter(grace, org)
    assert (await grace.call("PATCH", f"/keys/{mgmt['hash']}", json={"disabled": False})).status_code == 200
    assert (await with_key(client, mgmt_plain, "GET", "/keys")).status_code == 200


async def test_promotion_and_unchanged_roles_disable_nothing(make_person, rt):
    admin = await make_person()
    grace = await make_person()
    org = await make_org(rt, admin)
    await add_member(rt, org, grace, role="admin")
    await enter(grace, org)
    await new_key(grace, name="grace ops", management=True)
    path = f"/organizations/{org}/members/{grace.id}"
    await enter(admin, org)
    assert (await admin.call("PATCH", path, json={"role": "admin"})).status_code == 200
    async with rt.db.read() as s:
        assert (await s.scalars(select(ApiKey.disabled))).all() == [False]


async def test_a_management_key_paused_before_demotion_stays_the_admins_to_revive(make_person, client, rt):
    admin = await make_person()
    grace = await make_person()
    org = await make_org(rt, admin)
    await add_member(rt, org, grace, role="admin")
    await enter(admin, org)
    await enter(grace, org)
    mgmt, mgmt_plain = await new_key(grace, name="grace ops", management=True)
    inference, _ = await new_key(grace, name="grace inference")
    for key in (mgmt, inference):
        assert (await grace.call("PATCH", f"/keys/{key['hash']}", json={"disabled": True})).status_code == 200

    path = f"/organizations/{org}/members/{grace.id}"
    assert (await admin.call("PATCH", path, json={"role": "member"})).status_code == 200
    row = await key_row(rt, mgmt["hash"])
    assert (row.disabled, row.admin_managed) == (True, True)
    (event,) = [e for e in await key_audit(rt) if e.target_id == row.id and e.action == "api_key.update"]
    assert event.actor_user_id == admin.id and event.before == {"admin_managed": False}
    # Her inference keys are not the demotion's business, paused or not.
    assert (await key_row(rt, inference["hash"])).admin_managed is False

    await sign_in_again(grace)
    await enter(grace, org)
    r = await grace.call("PATCH", f"/keys/{mgmt['hash']}", json={"disabled": False})
    assert_envelope(r, 403, "admin manages this key's status and limit")
    assert (await grace.call("PATCH", f"/keys/{inference['hash']}", json={"disabled": False})).status_code == 200
    assert (await admin.call("PATCH", path, json={"role": "admin"})).status_code == 200
    assert_envelope(await with_key(client, mgmt_plain, "GET", "/keys"), 401, "disabled")
