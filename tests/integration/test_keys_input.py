"""Bad input to the keys API: a 400 in the OpenRouter envelope naming the field, and nothing changed."""

from __future__ import annotations

from unittest.mock import ANY

import pytest
from tests.support.keys import key_audit, key_count, key_row, new_key

pytestmark = pytest.mark.usefixtures("database_url")


def assert_names_field(response, field: str, status: int = 400) -> None:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    error = body["error"]
    assert error["code"] == status
    assert error["metadata"]["field"] == field, error
    assert field in error["message"], error


BAD_CREATE = [
    ({}, "name"),
    ({"name": ""}, "name"),
    ({"name": "   "}, "name"),
    ({"name": None}, "name"),
    ({"name": "x" * 1_000_000}, "name"),
    ({"name": "x" * 201}, "name"),
    ({"name": "k", "limit": -1}, "limit"),
    ({"name": "k", "limit": -0.000000001}, "limit"),
    ({"name": "k", "limit": 1e12}, "limit"),
    ({"name": "k", "limit": 1e308}, "limit"),
    ({"name": "k", "limit": "1e999999"}, "limit"),
    ({"name": "k", "limit": 0.0000000001}, "limit"),
    ({"name": "k", "limit": "lots"}, "limit"),
    ({"name": "k", "limit": True}, "limit"),
    ({"name": "k", "limit_reset": "hourly"}, "limit_reset"),
    ({"name": "k", "limit_reset": "DAILY"}, "limit_reset"),
    ({"name": "k", "limit_reset": 7}, "limit_reset"),
    ({"name": "k", "expires_at": "2001-01-01T00:00:00Z"}, "expires_at"),
    ({"name": "k", "expires_at": "2099-01-01T00:00:00"}, "expires_at"),
    ({"name": "k", "expires_at": "2099-01-01"}, "expires_at"),
    ({"name": "k", "expires_at": "next tuesday"}, "expires_at"),
    ({"name": "k", "management": "perhaps"}, "management"),
    ({"name": "k", "usage": 0}, "usage"),
    ({"name": "k", "organization_id": "org_x"}, "organization_id"),
    ({"name": "k", "hash": "0" * 64}, "hash"),
    ({"name": "k", "disabled": True}, "disabled"),
    ({"name": "k", "account_id": "acct_x"}, "account_id"),
]


@pytest.mark.parametrize(("body", "field"), BAD_CREATE, ids=[f"{f}-{i}" for i, (_, f) in enumerate(BAD_CREATE)])
async def test_bad_create_is_400_naming_the_field(make_person, rt, body, field):
    ada = await make_person()
    r = await ada.call("POST", "/keys", json=body)
    assert_names_field(r, field)
    assert await key_count(rt) == 0
    assert await key_audit(rt) == []


async def test_malformed_and_non_object_bodies(make_person, rt):
    ada = await make_person()
    r = await ada.call("POST", "/keys", content=b'{"name": ', headers={"content-type": "application/json"})
    assert r.status_code == 400 and r.json()["error"]["metadata"]["code"] == "malformed_json"
    r = await ada.call("POST", "/keys", json=["name"])
    assert r.status_code == 400
    assert await key_count(rt) == 0


BAD_UPDATE = [
    ({"usage": 100}, "usage"),
    ({"organization_id": "org_x"}, "organization_id"),
    ({"creator_user_id": "user_x"}, "creator_user_id"),
    ({"hash": "0" * 64}, "hash"),
    ({"management": True}, "management"),
    ({"expires_at": "2099-01-01T00:00:00Z"}, "expires_at"),
    ({"name": ""}, "name"),
    ({"name": None}, "name"),
    ({"name": "y" * 100_000}, "name"),
    ({"disabled": None}, "disabled"),
    ({"disabled": "maybe"}, "disabled"),
    ({"limit": -5}, "limit"),
    ({"limit": 10_000_000}, "limit"),
    ({"limit_reset": "yearly"}, "limit_reset"),
    ({"name": "fine", "limit_reset": "yearly"}, "limit_reset"),
]


@pytest.mark.parametrize(("body", "field"), BAD_UPDATE, ids=[f"{f}-{i}" for i, (_, f) in enumerate(BAD_UPDATE)])
async def test_bad_update_is_400_naming_the_field(make_person, rt, body, field):
    ada = await make_person()
    key, _ = await new_key(ada, name="orig", limit=5, limit_reset="daily")
    before = await key_row(rt, key["hash"])
    r = await ada.call("PATCH", f"/keys/{key['hash']}", json=body)
    assert_names_field(r, field)
    after = await key_row(rt, key["hash"])
    assert (after.name, after.disabled, after.spend_limit, after.limit_reset, after.updated_at) == (
        before.name,
        before.disabled,
        before.spend_limit,
        before.limit_reset,
        before.updated_at,
    )
    assert [e.action for e in await key_audit(rt)] == ["api_key.create"]


async def test_empty_update_is_400(make_person, rt):
    ada = await make_person()
    key, _ = await new_key(ada)
    r = await ada.call("PATCH", f"/keys/{key['hash']}", json={})
    assert r.status_code == 400
    assert r.json()["error"]["message"] == "No update fields provided"
    assert [e.action for e in await key_audit(rt)] == ["api_key.create"]


async def test_unsafe_key_requests_need_csrf(make_person, rt):
    ada = await make_person()
    key, _ = await new_key(ada)
    r = await ada.client.post("/api/v1/keys", json={"name": "no csrf"})
    assert r.status_code == 403 and r.json()["error"]["metadata"]["code"] == "csrf"
    r = await ada.client.delete(f"/api/v1/keys/{key['hash']}")
    assert r.status_code == 403
    assert await key_count(rt) == 1 and (await key_row(rt, key["hash"])).deleted_at is None


async def test_unauthenticated_is_401(client, rt):
    for method, path in (("GET", "/keys"), ("POST", "/keys"), ("GET", "/keys/abc"), ("DELETE", "/keys/abc")):
        r = await client.request(method, f"/api/v1{path}", json={"name": "x"} if method == "POST" else None)
        assert r.status_code == 401, (method, path, r.text)
    assert await key_count(rt) == 0


# -- found by the contract review: loose types and the SDK's optional fields ---------------------------


@pytest.mark.parametrize(
    "body",
    [
        {"name": "k", "management": "yes"},
        {"name": "k", "management": 1},
        {"name": "k", "limit": "5"},
        {"name": "k", "limit": True},
        {"name": 5},
        {"name": "k", "workspace_id": "another"},
    ],
)
async def test_create_refuses_loose_types(make_person, body):
    person = await make_person()
    r = await person.call("POST", "/keys", json=body)
    assert r.status_code == 400, r.text
    assert (await person.call("GET", "/keys")).json()["data"] == []


@pytest.mark.parametrize("body", [{"disabled": "yes"}, {"disabled": 1}, {"disabled": "false"}, {"limit": "5"}])
async def test_update_refuses_loose_types(make_person, body):
    person = await make_person()
    created = (await person.call("POST", "/keys", json={"name": "k"})).json()["data"]
    r = await person.call("PATCH", f"/keys/{created['hash']}", json=body)
    assert r.status_code == 400, r.text
    after = (await person.call("GET", f"/keys/{created['hash']}")).json()["data"]
    assert after["disabled"] is False and after["limit"] is None


async def test_sdk_optional_fields_are_accepted_and_change_nothing(make_person):
    person = await make_person()
    r = await person.call(
        "POST", "/keys", json={"name": "k", "limit": 2.5, "include_byok_in_limit": False, "workspace_id": "default"}
    )
    assert r.status_code == 201, r.text
    key = r.json()["data"]
    assert key["limit"] == 2.5 and key["workspace_id"] == "default"
    r = await person.call("PATCH", f"/keys/{key['hash']}", json={"include_byok_in_limit": True, "name": "renamed"})
    assert r.status_code == 200 and r.json()["data"]["name"] == "renamed"
    # Sent alone (the SDK's `api_keys.update(hash, include_byok_in_limit=True)`): the key as it is,
    # not a 400 "No update fields provided"; another's key is still not found.
    r = await person.call("PATCH", f"/keys/{key['hash']}", json={"include_byok_in_limit": True})
    assert r.status_code == 200 and r.json()["data"] == {**key, "name": "renamed", "updated_at": ANY}
    stranger = await make_person()
    r = await stranger.call("PATCH", f"/keys/{key['hash']}", json={"workspace_id": "default"})
    assert r.status_code == 404
    assert (await person.call("PATCH", f"/keys/{key['hash']}", json={})).status_code == 400
