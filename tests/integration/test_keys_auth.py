"""Authenticating with keys: management keys on the keys API, GET /key, expiry, disabled and deleted
keys, the in-process cache and its invalidation, last_used_at, member exit, and (TESTPLAN D25) no
plaintext key in any table or log line."""

from __future__ import annotations

import asyncio
import logging
from datetime import UTC, date, datetime, timedelta

import pytest
from openrouter import operations, utils
from sqlalchemy import update
from tests.support.keys import (
    add_member,
    dump_all_tables,
    enter,
    key_audit,
    key_count,
    key_row,
    make_org,
    new_key,
    with_key,
)
from tests.support.orgs import sign_in_again

from teamrouter.clock import FrozenClock
from teamrouter.domain.keys import auth as key_auth
from teamrouter.domain.keys.cache import KeyAuth, KeyCache, key_cache
from teamrouter.domain.keys.models import ApiKey
from teamrouter.errors import Forbidden, Unauthorized

pytestmark = pytest.mark.usefixtures("database_url")

NOT_MANAGEMENT = "Only management keys can perform this operation"


async def org_with_admin_and_member(make_person, rt):
    admin = await make_person()
    member = await make_person()
    org = await make_org(rt, admin)
    await add_member(rt, org, member)
    await enter(admin, org)
    await enter(member, org)
    return admin, member, org


async def test_management_key_drives_the_keys_api(make_person, client, rt):
    admin, member, org = await org_with_admin_and_member(make_person, rt)
    mgmt, mgmt_plain = await new_key(admin, name="ops", management=True)
    inference, inference_plain = await new_key(member, name="member's")

    # No cookies: the key alone acts as its creator (an admin) in the org.
    r = await with_key(client, mgmt_plain, "GET", "/keys")
    assert r.status_code == 200, r.text
    assert {k["name"] for k in r.json()["data"]} == {"ops", "member's"}
    r = await with_key(client, mgmt_plain, "POST", "/keys", json={"name": "ci", "limit": 2})
    assert r.status_code == 201, r.text
    created = r.json()["data"]
    assert created["organization_id"] == org and created["creator_user_id"] == admin.id
    r = await with_key(client, mgmt_plain, "PATCH", f"/keys/{inference['hash']}", json={"limit": 1})
    assert r.status_code == 200 and r.json()["data"]["limit"] == 1
    r = await with_key(client, mgmt_plain, "DELETE", f"/keys/{created['hash']}")
    assert r.status_code == 200 and r.json() == {"deleted": True}
    events = await key_audit(rt)
    by_key = [e for e in events if e.actor_key_id == (await key_row(rt, mgmt["hash"])).id]
    assert [e.action for e in by_key] == ["api_key.create", "api_key.update", "api_key.delete"]
    assert all(e.actor_user_id == admin.id and e.organization_id == org for e in by_key)

    # An inference key on a management endpoint: 403 with OpenRouter's exact message; nothing changes.
    count = await key_count(rt)
    for method, path, body in (
        ("GET", "/keys", None),
        ("POST", "/keys", {"name": "nope"}),
        ("GET", f"/keys/{inference['hash']}", None),
        ("DELETE", f"/keys/{inference['hash']}", None),
    ):
        r = await with_key(client, inference_plain, method, path, json=body)
        assert r.status_code == 403, r.text
        assert r.json()["error"]["message"] == NOT_MANAGEMENT
    assert await key_count(rt) == count
    assert (await key_row(rt, inference["hash"])).deleted_at is None

    # Unknown, malformed, disabled, deleted keys: 401.
    r = await with_key(client, "sk-tr-v1-" + "0" * 64, "GET", "/keys")
    assert r.status_code == 401 and r.json()["error"]["metadata"]["code"] == "invalid_key"
    r = await client.get("/api/v1/keys", headers={"Authorization": f"Basic {mgmt_plain}"})
    assert r.status_code == 401
    assert mgmt_plain not in r.text
    await admin.call("PATCH", f"/keys/{mgmt['hash']}", json={"disabled": True})
    assert (await with_key(client, mgmt_plain, "GET", "/keys")).status_code == 401
    await admin.call("PATCH", f"/keys/{mgmt['hash']}", json={"disabled": False})
    assert (await with_key(client, mgmt_plain, "GET", "/keys")).status_code == 200
    await admin.call("DELETE", f"/keys/{mgmt['hash']}")
    r = await with_key(client, mgmt_plain, "GET", "/keys")
    assert r.status_code == 401 and r.json()["error"]["metadata"]["code"] == "invalid_key"


async def test_personal_management_key(make_person, client, rt):
    ada = await make_person()
    _, plain = await new_key(ada, name="mine", management=True)
    r = await with_key(client, plain, "POST", "/keys", json={"name": "made by key"})
    assert r.status_code == 201
    assert r.json()["data"]["organization_id"] is None and r.json()["data"]["creator_user_id"] == ada.id
    names = {k["name"] for k in (await with_key(client, plain, "GET", "/keys")).json()["data"]}
    assert names == {"mine", "made by key"}


async def test_management_key_stops_when_creator_is_no_longer_admin(make_person, client, rt):
    admin, _member, org = await org_with_admin_and_member(make_person, rt)
    other_admin = await make_person()
    await add_member(rt, org, other_admin, role="admin")
    mgmt, plain = await new_key(admin, name="ops", management=True)
    assert (await with_key(client, plain, "GET", "/keys")).status_code == 200

    # Demoted to member (orgs API): refused at once (no cache on the management path).
    path = f"/organizations/{org}/members/{admin.id}"
    assert (await other_admin.call("PATCH", path, json={"role": "member"})).status_code == 200
    r = await with_key(client, plain, "GET", "/keys")
    assert r.status_code == 401, r.text
    assert (await with_key(client, plain, "POST", "/keys", json={"name": "x"})).status_code == 401

    # The demotion disabled it: promoted again, it stays refused (tests/integration/test_demoted_admin_keys.py).
    assert (await key_row(rt, mgmt["hash"])).disabled is True
    assert (await other_admin.call("PATCH", path, json={"role": "admin"})).status_code == 200
    assert (await with_key(client, plain, "GET", "/keys")).status_code == 401
    # A management key made after the promotion works; removal from the org disables and refuses it.
    await sign_in_again(admin)
    await enter(admin, org)
    fresh, fresh_plain = await new_key(admin, name="ops again", management=True)
    assert (await with_key(client, fresh_plain, "GET", "/keys")).status_code == 200
    assert (await other_admin.call("DELETE", path)).status_code == 204
    assert (await with_key(client, fresh_plain, "GET", "/keys")).status_code == 401
    assert (await key_row(rt, fresh["hash"])).disabled is True


@pytest.mark.parametrize("exit_keys", ["disable", "keep"])
async def test_member_exit_disables_keys(make_person, client, rt, exit_keys):
    admin, member, org = await org_with_admin_and_member(make_person, rt)
    second_admin = await make_person()
    await add_member(rt, org, second_admin, role="admin")
    await enter(second_admin, org)
    r = await admin.call("PATCH", f"/organizations/{org}/settings", json={"member_exit_keys": exit_keys})
    assert r.status_code == 200, r.text
    member_key, member_plain = await new_key(member, name="member key")
    admin_key, admin_plain = await new_key(second_admin, name="second admin key")
    mgmt_key, mgmt_plain = await new_key(second_admin, name="second admin mgmt", management=True)
    # Cached before the exits: the exits must still take effect at once in this process.
    for plain in (member_plain, admin_plain):
        assert (await key_auth.inference_key(rt, plain)).organization_id == org

    assert (await member.call("POST", f"/organizations/{org}/leave")).status_code == 204
    assert (await admin.call("DELETE", f"/organizations/{org}/members/{second_admin.id}")).status_code == 204

    # Management keys of a leaver always stop.
    assert (await key_row(rt, mgmt_key["hash"])).disabled is True
    assert (await with_key(client, mgmt_plain, "GET", "/keys")).status_code == 401
    for key, plain in ((member_key, member_plain), (admin_key, admin_plain)):
        row = await key_row(rt, key["hash"])
        if exit_keys == "disable":
            assert row.disabled is True
            with pytest.raises(Unauthorized):
                await key_auth.inference_key(rt, plain)
            assert (await with_key(client, plain, "GET", "/key")).status_code == 401
        else:
            assert row.disabled is False
            assert (await key_auth.inference_key(rt, plain)).key_id == row.id
    # Either way the remaining admin still sees the keys (they bill the org) and can manage them.
    r = await admin.call("GET", "/keys", params={"include_disabled": "true"})
    assert {member_key["hash"], admin_key["hash"], mgmt_key["hash"]} <= {k["hash"] for k in r.json()["data"]}
    assert (await admin.call("DELETE", f"/keys/{member_key['hash']}")).status_code == 200


async def test_get_current_key_numbers(make_person, client, rt):
    ada = await make_person()
    key, plain = await new_key(ada, name="budgeted", limit=10, limit_reset="weekly")
    # Wednesday 2031-01-15 12:00 UTC: week from Monday 2031-01-13, month from 2031-01-01.
    rt.clock = FrozenClock(datetime(2031, 1, 15, 12, tzinfo=UTC))
    async with rt.db.uow() as uow:
        await uow.session.execute(
            update(ApiKey)
            .where(ApiKey.hash == key["hash"])
            .values(
                usage=7_500_000_000,
                usage_day=1_000_000_000,
                day_start=date(2031, 1, 15),
                usage_week=3_000_000_000,
                week_start=date(2031, 1, 13),
                usage_month=5_000_000_000,
                month_start=date(2030, 12, 1),  # stale window: counts as 0
                held=500_000_000,
            )
        )
    r = await with_key(client, plain, "GET", "/key")
    assert r.status_code == 200, r.text
    with pytest.warns(DeprecationWarning):  # the SDK marks rate_limit / is_provisioning_key deprecated
        utils.unmarshal_json(r.text, operations.GetCurrentKeyResponse)
    data = r.json()["data"]
    assert data["label"] == key["label"]
    assert data["limit"] == 10 and data["limit_reset"] == "weekly"
    assert data["usage"] == 7.5 and data["usage_daily"] == 1 and data["usage_weekly"] == 3
    assert data["usage_monthly"] == 0
    assert data["limit_remaining"] == 6.5  # 10 - 3 spent this week - 0.5 held
    assert data["is_management_key"] is False and data["is_free_tier"] is False
    assert data["creator_user_id"] == ada.id and data["organization_id"] is None
    assert data["expires_at"] is None

    # Next Monday the weekly window has rolled over.
    rt.clock.set(datetime(2031, 1, 20, 0, 0, tzinfo=UTC))
    data = (await with_key(client, plain, "GET", "/key")).json()["data"]
    assert data["usage_weekly"] == 0 and data["usage_daily"] == 0 and data["usage"] == 7.5
    assert data["limit_remaining"] == 9.5


async def test_get_current_key_auth(make_person, client, rt):
    admin, _member, org = await org_with_admin_and_member(make_person, rt)
    _, mgmt_plain = await new_key(admin, name="ops", management=True)
    data = (await with_key(client, mgmt_plain, "GET", "/key")).json()["data"]
    assert data["is_management_key"] is True and data["organization_id"] == org
    # A dashboard session alone does not name a key.
    r = await admin.call("GET", "/key")
    assert r.status_code == 401 and r.json()["error"]["code"] == 401
    r = await with_key(client, "sk-tr-v1-nope", "GET", "/key")
    assert r.status_code == 401 and r.json()["error"]["metadata"]["code"] == "invalid_key"


async def test_expiry(make_person, client, rt):
    ada = await make_person()
    start = rt.clock.now()
    key, plain = await new_key(ada, name="short", expires_at=(start + timedelta(hours=1)).isoformat())
    assert (await with_key(client, plain, "GET", "/key")).status_code == 200
    assert (await key_auth.inference_key(rt, plain)).expires_at is not None
    rt.clock = FrozenClock(start + timedelta(hours=2))
    r = await with_key(client, plain, "GET", "/key")
    assert r.status_code == 401 and "expired" in r.json()["error"]["message"]
    with pytest.raises(Unauthorized):
        await key_auth.inference_key(rt, plain)
    # Expired keys leave the list unless asked for.
    assert (await ada.call("GET", "/keys")).json()["data"] == []
    listed = (await ada.call("GET", "/keys", params={"include_expired": "true"})).json()["data"]
    assert [k["hash"] for k in listed] == [key["hash"]]
    # The two filters apply separately: expired and disabled takes both (README's API notes).
    assert (await ada.call("PATCH", f"/keys/{key['hash']}", json={"disabled": True})).status_code == 200
    for params in ({"include_expired": "true"}, {"include_disabled": "true"}):
        assert (await ada.call("GET", "/keys", params=params)).json()["data"] == []
    both = {"include_expired": "true", "include_disabled": "true"}
    assert [k["hash"] for k in (await ada.call("GET", "/keys", params=both)).json()["data"]] == [key["hash"]]


async def test_inference_key_resolution(make_person, rt):
    admin, member, org = await org_with_admin_and_member(make_person, rt)
    key, plain = await new_key(member, name="inference", limit=4, limit_reset="daily")
    _, mgmt_plain = await new_key(admin, name="ops", management=True)
    auth = await key_auth.inference_key(rt, plain)
    row = await key_row(rt, key["hash"])
    assert (auth.key_id, auth.hash, auth.account_id, auth.organization_id, auth.creator_user_id) == (
        row.id,
        row.hash,
        row.account_id,
        org,
        member.id,
    )
    assert (auth.spend_limit, auth.limit_reset, auth.disabled, auth.management) == (
        4_000_000_000,
        "daily",
        False,
        False,
    )
    with pytest.raises(Forbidden):
        await key_auth.inference_key(rt, mgmt_plain)
    for bad in (None, "", "sk-tr-v1-" + "f" * 64, plain + "x", plain.upper()):
        with pytest.raises(Unauthorized):
            await key_auth.inference_key(rt, bad)


async def test_last_used_at_is_written_at_most_once_a_minute(make_person, rt):
    ada = await make_person()
    key, plain = await new_key(ada)
    t0 = datetime(2031, 3, 3, 9, tzinfo=UTC)
    rt.clock = FrozenClock(t0)
    await key_auth.inference_key(rt, plain)
    assert (await key_row(rt, key["hash"])).last_used_at == t0
    rt.clock.advance(timedelta(seconds=30))
    await key_auth.inference_key(rt, plain)
    assert (await key_row(rt, key["hash"])).last_used_at == t0
    rt.clock.advance(timedelta(seconds=31))
    await key_auth.inference_key(rt, plain)
    assert (await key_row(rt, key["hash"])).last_used_at == t0 + timedelta(seconds=61)


async def test_cache_serves_hits_and_is_invalidated_on_change(make_person, rt):
    ada = await make_person()
    key, plain = await new_key(ada)
    now = [0.0]
    cache = KeyCache(ttl_seconds=5, monotonic=lambda: now[0])
    rt.extras["key_cache"] = cache
    assert key_cache(rt) is cache

    await key_auth.inference_key(rt, plain)
    assert len(cache) == 1
    # A change behind the service's back is not seen until the TTL passes: proof hits skip the DB.
    async with rt.db.uow() as uow:
        await uow.session.execute(update(ApiKey).where(ApiKey.hash == key["hash"]).values(disabled=True))
    await key_auth.inference_key(rt, plain)
    now[0] = 5.0
    with pytest.raises(Unauthorized):
        await key_auth.inference_key(rt, plain)

    # Changes through the service invalidate at once, without waiting for the TTL.
    async with rt.db.uow() as uow:
        await uow.session.execute(update(ApiKey).where(ApiKey.hash == key["hash"]).values(disabled=False))
    now[0] = 20.0
    await key_auth.inference_key(rt, plain)
    assert (await ada.call("PATCH", f"/keys/{key['hash']}", json={"disabled": True})).status_code == 200
    with pytest.raises(Unauthorized):
        await key_auth.inference_key(rt, plain)
    assert (await ada.call("PATCH", f"/keys/{key['hash']}", json={"disabled": False})).status_code == 200
    await key_auth.inference_key(rt, plain)
    assert (await ada.call("DELETE", f"/keys/{key['hash']}")).status_code == 200
    with pytest.raises(Unauthorized):
        await key_auth.inference_key(rt, plain)


async def test_no_plaintext_key_in_any_table_or_log(make_person, client, rt, caplog):
    caplog.set_level(logging.DEBUG)
    admin, member, _org = await org_with_admin_and_member(make_person, rt)
    plaintexts: list[str] = []
    mgmt, mgmt_plain = await new_key(admin, name="ops", management=True)
    plaintexts.append(mgmt_plain)
    for person in (admin, member):
        _, plain = await new_key(person, name="inference", limit=1)
        plaintexts.append(plain)
        await key_auth.inference_key(rt, plain)
        await with_key(client, plain, "GET", "/key")
        await with_key(client, plain, "GET", "/keys")  # refused: inference key on management API
    r = await with_key(client, mgmt_plain, "POST", "/keys", json={"name": "by key", "limit_reset": "daily"})
    created = r.json()
    plaintexts.append(created["key"])
    await with_key(client, mgmt_plain, "PATCH", f"/keys/{created['data']['hash']}", json={"disabled": True})
    await with_key(client, mgmt_plain, "DELETE", f"/keys/{created['data']['hash']}")
    await admin.call("PATCH", f"/keys/{mgmt['hash']}", json={"name": "ops2"})
    await with_key(client, plaintexts[-1], "GET", "/key")  # a deleted key presented again

    dump = await dump_all_tables(rt)
    assert "api_key" in dump and mgmt["hash"] in dump  # the dump really holds the keys' rows
    logs = caplog.text
    for plain in plaintexts:
        secret = plain.removeprefix("sk-tr-v1-")
        assert len(secret) == 64
        for haystack in (dump, logs):
            assert plain not in haystack
            assert secret not in haystack
            assert secret[8:40] not in haystack  # no long fragment either (labels show 3+3 chars)


def _auth(key_hash: str) -> KeyAuth:
    return KeyAuth(
        key_id="key_1",
        hash=key_hash,
        account_id="acct_1",
        organization_id=None,
        creator_user_id="user_1",
        management=False,
        disabled=False,
        deleted=False,
        spend_limit=None,
        limit_reset=None,
        expires_at=None,
        last_used_at=None,
    )


async def test_cache_coalesces_concurrent_misses_and_respects_invalidation():
    cache = KeyCache(ttl_seconds=60)
    loads = 0
    release = asyncio.Event()

    async def load() -> KeyAuth | None:
        nonlocal loads
        loads += 1
        await release.wait()
        return _auth("h1")

    waiters = [asyncio.create_task(cache.get_or_load("h1", load)) for _ in range(50)]
    await asyncio.sleep(0)
    release.set()
    results = await asyncio.gather(*waiters)
    assert loads == 1 and all(r == _auth("h1") for r in results)
    assert cache.get("h1") == _auth("h1")

    # An invalidation while a load is in flight: the (possibly stale) result is not cached.
    release.clear()
    task = asyncio.create_task(cache.get_or_load("h2", load))
    await asyncio.sleep(0)
    cache.invalidate("h2")
    release.set()
    assert (await task).hash == "h1"
    assert cache.get("h2") is None

    # A failing load reaches every waiter and is not cached; the next call loads again.
    async def broken() -> KeyAuth | None:
        await asyncio.sleep(0)
        raise RuntimeError("db down")

    results = await asyncio.gather(*(cache.get_or_load("h3", broken) for _ in range(3)), return_exceptions=True)
    assert all(isinstance(r, RuntimeError) for r in results)
    release.set()
    assert (await cache.get_or_load("h3", load)) is not None


async def test_get_current_key_reports_the_deployments_request_limit(make_person, client, rt):
    ada = await make_person()
    _, plain = await new_key(ada, name="ci")
    data = (await with_key(client, plain, "GET", "/key")).json()["data"]
    assert data["rate_limit"]["requests"] == -1  # none configured
    rt.settings = rt.settings.model_copy(update={"key_rate_limit_per_minute": 30})
    data = (await with_key(client, plain, "GET", "/key")).json()["data"]
    assert data["rate_limit"] == {
        "interval": "1m",
        "note": "requests per key per minute, on each gateway process",
        "requests": 30,
    }
