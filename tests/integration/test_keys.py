"""The keys API from a dashboard session: lifecycle, visibility for admins and members, admins
creating keys for members, management-key creation rules, audit rows, SDK response shapes."""

from __future__ import annotations

import re

import pytest
from openrouter import operations, utils
from sqlalchemy import select
from tests.support.keys import (
    KEY_FIELDS,
    add_member,
    enter,
    key_audit,
    key_count,
    key_row,
    make_org,
    new_key,
    sha256,
)

from teamrouter.domain.credits.models import CreditAccount
from teamrouter.domain.orgs.models import Organization
from teamrouter.ids import new_id

pytestmark = pytest.mark.usefixtures("database_url")

KEY_RE = re.compile(r"^sk-tr-v1-[0-9a-f]{64}$")


def sdk_validate(text: str, model: type) -> object:
    return utils.unmarshal_json(text, model)


async def account_of(rt, *, user_id=None, organization_id=None) -> str:
    async with rt.db.read() as s:
        owner = CreditAccount.user_id == user_id if user_id else CreditAccount.organization_id == organization_id
        found = await s.scalar(select(CreditAccount.id).where(owner))
    assert found
    return found


async def test_personal_key_lifecycle(make_person, rt):
    ada = await make_person()
    r = await ada.call(
        "POST",
        "/keys",
        json={"name": "  laptop  ", "limit": 12.5, "limit_reset": "weekly", "expires_at": "2099-01-01T00:00:00Z"},
    )
    assert r.status_code == 201, r.text
    sdk_validate(r.text, operations.CreateKeysResponse)
    body = r.json()
    plaintext, key = body["key"], body["data"]
    assert KEY_RE.match(plaintext)
    assert KEY_FIELDS <= set(key)
    assert key["hash"] == sha256(plaintext)
    assert key["label"] == f"{plaintext[:12]}...{plaintext[-3:]}"
    assert key["name"] == "laptop"
    assert key["limit"] == 12.5 and key["limit_remaining"] == 12.5 and key["limit_reset"] == "weekly"
    assert key["usage"] == key["usage_daily"] == key["usage_weekly"] == key["usage_monthly"] == 0
    assert key["disabled"] is False and key["management"] is False
    assert key["creator_user_id"] == ada.id and key["organization_id"] is None
    assert key["expires_at"] == "2099-01-01T00:00:00Z" and key["last_used_at"] is None
    assert key["workspace_id"] == "default"

    row = await key_row(rt, key["hash"])
    assert row.account_id == await account_of(rt, user_id=ada.id)
    assert row.spend_limit == 12_500_000_000

    r = await ada.call("GET", "/keys")
    assert r.status_code == 200
    sdk_validate(r.text, operations.ListResponse)
    assert [k["hash"] for k in r.json()["data"]] == [key["hash"]]
    assert "key" not in r.json()["data"][0]  # the plaintext is never shown again

    r = await ada.call("GET", f"/keys/{key['hash']}")
    assert r.status_code == 200
    sdk_validate(r.text, operations.GetKeyResponse)
    assert r.json()["data"] == key

    r = await ada.call("PATCH", f"/keys/{key['hash']}", json={"name": "desk", "limit": None, "limit_reset": None})
    assert r.status_code == 200, r.text
    sdk_validate(r.text, operations.UpdateKeysResponse)
    updated = r.json()["data"]
    assert updated["name"] == "desk" and updated["limit"] is None and updated["limit_remaining"] is None
    assert updated["limit_reset"] is None

    r = await ada.call("PATCH", f"/keys/{key['hash']}", json={"disabled": True})
    assert r.status_code == 200 and r.json()["data"]["disabled"] is True
    assert (await ada.call("GET", "/keys")).json()["data"] == []
    listed = (await ada.call("GET", "/keys", params={"include_disabled": "true"})).json()["data"]
    assert [k["hash"] for k in listed] == [key["hash"]]

    r = await ada.call("DELETE", f"/keys/{key['hash']}")
    assert r.status_code == 200 and r.json() == {"deleted": True}
    sdk_validate(r.text, operations.DeleteKeysResponse)
    assert (await ada.call("GET", "/keys", params={"include_disabled": "true"})).json()["data"] == []
    assert (await ada.call("GET", f"/keys/{key['hash']}")).status_code == 404
    assert (await ada.call("PATCH", f"/keys/{key['hash']}", json={"name": "x"})).status_code == 404
    assert (await ada.call("DELETE", f"/keys/{key['hash']}")).status_code == 404
    row = await key_row(rt, key["hash"])
    assert row.deleted_at is not None and row.disabled is True

    actions = [(e.action, e.target_id, e.actor_user_id) for e in await key_audit(rt)]
    assert actions == [
        ("api_key.create", row.id, ada.id),
        ("api_key.update", row.id, ada.id),
        ("api_key.disable", row.id, ada.id),
        ("api_key.delete", row.id, ada.id),
    ]
    events = await key_audit(rt)
    assert events[1].before == {"limit": "12.5", "limit_reset": "weekly", "name": "laptop"}
    assert events[1].after == {"limit": None, "limit_reset": None, "name": "desk"}


async def test_org_visibility_matrix(make_person, rt):
    admin, m1, m2, outsider = [await make_person() for _ in range(4)]
    org = await make_org(rt, admin)
    other_org = await make_org(rt, outsider, name="Other")
    await add_member(rt, org, m1)
    await add_member(rt, org, m2)
    for person, org_id in ((admin, org), (m1, org), (m2, org), (outsider, other_org)):
        await enter(person, org_id)

    k_admin, _ = await new_key(admin, name="admin's")
    k_m1, _ = await new_key(m1, name="m1's")
    k_m2, _ = await new_key(m2, name="m2's")
    k_out, _ = await new_key(outsider, name="outsider's")
    org_account = await account_of(rt, organization_id=org)
    for k in (k_admin, k_m1, k_m2):
        assert k["organization_id"] == org
        assert (await key_row(rt, k["hash"])).account_id == org_account

    async def visible(person) -> set[str]:
        r = await person.call("GET", "/keys")
        assert r.status_code == 200, r.text
        return {k["name"] for k in r.json()["data"]}

    assert await visible(admin) == {"admin's", "m1's", "m2's"}
    assert await visible(m1) == {"m1's"}
    assert await visible(m2) == {"m2's"}
    assert await visible(outsider) == {"outsider's"}

    # A member touching another member's (or the admin's) key, an outsider touching any org key: 404.
    for person, k in ((m1, k_m2), (m1, k_admin), (outsider, k_m1), (outsider, k_admin), (admin, k_out)):
        before = await key_row(rt, k["hash"])
        for method, kwargs in (("GET", {}), ("PATCH", {"json": {"name": "hijacked"}}), ("DELETE", {})):
            r = await person.call(method, f"/keys/{k['hash']}", **kwargs)
            assert r.status_code == 404, (method, r.text)
            assert r.json()["error"]["code"] == 404
        after = await key_row(rt, k["hash"])
        assert (after.name, after.disabled, after.deleted_at) == (before.name, before.disabled, None)

    # The admin manages every org key; a member manages their own.
    r = await admin.call("PATCH", f"/keys/{k_m1['hash']}", json={"limit": 3})
    assert r.status_code == 200 and r.json()["data"]["limit"] == 3
    r = await m2.call("PATCH", f"/keys/{k_m2['hash']}", json={"name": "mine"})
    assert r.status_code == 200 and r.json()["data"]["name"] == "mine"
    assert (await admin.call("DELETE", f"/keys/{k_m2['hash']}")).json() == {"deleted": True}
    assert await visible(m2) == set()
    assert await visible(admin) == {"admin's", "m1's"}

    # Contexts do not mix: m1's personal keys are not in the org, and org keys not in personal context.
    await enter(m1, None)
    k_personal, _ = await new_key(m1, name="m1 personal")
    assert await visible(m1) == {"m1 personal"}
    assert (await m1.call("GET", f"/keys/{k_m1['hash']}")).status_code == 404
    assert (await key_row(rt, k_personal["hash"])).account_id == await account_of(rt, user_id=m1.id)
    await enter(m1, org)
    assert await visible(m1) == {"m1's"}
    assert (await m1.call("GET", f"/keys/{k_personal['hash']}")).status_code == 404
    # Even the org's admin cannot see a member's personal keys.
    assert (await admin.call("GET", f"/keys/{k_personal['hash']}")).status_code == 404


async def test_admin_creates_key_for_member(make_person, rt):
    admin = await make_person()
    member = await make_person()
    stranger = await make_person()
    org = await make_org(rt, admin)
    await add_member(rt, org, member)
    await enter(admin, org)
    await enter(member, org)

    key, _ = await new_key(admin, name="for member", creator_user_id=member.id)
    assert key["creator_user_id"] == member.id
    r = await member.call("GET", "/keys")
    assert [k["hash"] for k in r.json()["data"]] == [key["hash"]]
    assert (await member.call("PATCH", f"/keys/{key['hash']}", json={"disabled": True})).status_code == 200
    (event,) = [e for e in await key_audit(rt) if e.action == "api_key.create"]
    assert event.actor_user_id == admin.id and event.after["creator_user_id"] == member.id

    count = await key_count(rt)
    # Not a member of the org: 400 naming the field.
    r = await admin.call("POST", "/keys", json={"name": "x", "creator_user_id": stranger.id})
    assert r.status_code == 400 and r.json()["error"]["metadata"]["field"] == "creator_user_id"
    assert "creator_user_id" in r.json()["error"]["message"]
    # A management key acts as its creator, who must be an admin.
    r = await admin.call("POST", "/keys", json={"name": "x", "creator_user_id": member.id, "management": True})
    assert r.status_code == 400 and r.json()["error"]["metadata"]["field"] == "creator_user_id"
    # A member may not create keys for someone else.
    r = await member.call("POST", "/keys", json={"name": "x", "creator_user_id": admin.id})
    assert r.status_code == 403 and r.json()["error"]["metadata"]["field"] == "creator_user_id"
    # Nor management keys.
    r = await member.call("POST", "/keys", json={"name": "x", "management": True})
    assert r.status_code == 403 and "management" in r.json()["error"]["message"]
    # Personal keys are always one's own.
    await enter(member, None)
    r = await member.call("POST", "/keys", json={"name": "x", "creator_user_id": admin.id})
    assert r.status_code == 400 and r.json()["error"]["metadata"]["field"] == "creator_user_id"
    assert await key_count(rt) == count

    # Naming oneself is harmless; admins and people in personal context may create management keys.
    own, _ = await new_key(member, name="own", creator_user_id=member.id)
    assert own["creator_user_id"] == member.id
    personal_mgmt, _ = await new_key(member, name="personal mgmt", management=True)
    assert personal_mgmt["management"] is True
    org_mgmt, _ = await new_key(admin, name="org mgmt", management=True)
    assert org_mgmt["management"] is True and org_mgmt["organization_id"] == org


async def test_list_pagination_and_expired(make_person, rt):
    ada = await make_person()
    for i in range(3):
        await new_key(ada, name=f"k{i}")
    names = [k["name"] for k in (await ada.call("GET", "/keys")).json()["data"]]
    assert sorted(names) == ["k0", "k1", "k2"]
    page = (await ada.call("GET", "/keys", params={"offset": 1})).json()["data"]
    assert [k["name"] for k in page] == names[1:]
    assert (await ada.call("GET", "/keys", params={"offset": 3})).json()["data"] == []
    r = await ada.call("GET", "/keys", params={"offset": -1})
    assert r.status_code == 400 and r.json()["error"]["metadata"]["field"] == "offset"


async def test_list_refuses_a_parameter_given_twice(make_person, rt):
    # Kept to its last value, `include_disabled=true&include_disabled=false` quietly hid disabled keys.
    ada = await make_person()
    await new_key(ada, name="k0")
    for params, name in (
        ([("include_disabled", "true"), ("include_disabled", "false")], "include_disabled"),
        ([("offset", "0"), ("offset", "1")], "offset"),
    ):
        r = await ada.call("GET", "/keys", params=params)
        assert r.status_code == 400 and repr(name) in r.json()["error"]["message"], r.text
        assert r.json()["error"]["metadata"] == {"code": "repeated_parameter", "field": name, "repeated": [name]}
    r = await ada.call("GET", "/keys", params=[("include_disabled", "true"), ("offset", "0")])
    assert [k["name"] for k in r.json()["data"]] == ["k0"]


async def test_org_without_credit_account_gets_one_on_first_key(make_person, rt):
    """Accounts are made with the org; a key never fails for lack of one (created once, race-free)."""
    ada = await make_person()
    now = rt.clock.now()
    org = new_id("org")
    async with rt.db.uow() as uow:
        uow.session.add(
            Organization(id=org, name="Bare", member_count=0, settings={}, billing={}, created_at=now, updated_at=now)
        )
    await add_member(rt, org, ada, role="admin")
    await enter(ada, org)
    first, _ = await new_key(ada, name="first")
    second, _ = await new_key(ada, name="second")
    account = await account_of(rt, organization_id=org)
    assert (await key_row(rt, first["hash"])).account_id == account
    assert (await key_row(rt, second["hash"])).account_id == account
