"""OpenRouter's GET /activity: the last 30 UTC days (today included) per date × model × endpoint, from the
rollups; its filters, its bad input, visibility, and the official SDK's response model."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

import pytest
from openrouter import components
from tests.support.activity import World, make_key, record, set_visibility
from tests.support.keys import add_member, enter, make_org
from tests.support.orgs import assert_envelope

from teamrouter.clock import FrozenClock
from teamrouter.domain.roles import Role

NOW = datetime.now(UTC).replace(hour=15, minute=30, second=0, microsecond=0)
TODAY = datetime.combine(NOW.date(), time(), UTC)


@pytest.fixture
async def world(rt, make_person) -> World:
    rt.clock = FrozenClock(NOW)
    admin, alice, bob = await make_person(), await make_person(), await make_person()
    org_id = await make_org(rt, admin)
    await add_member(rt, org_id, alice)
    await add_member(rt, org_id, bob)
    w = World(org_id=org_id, admin=admin, alice=alice, bob=bob)
    w.keys["admin"] = await make_key(rt, user_id=admin.id, organization_id=org_id, role=Role.ADMIN)
    w.keys["alice"] = await make_key(rt, user_id=alice.id, organization_id=org_id, role=Role.MEMBER)
    w.keys["bob"] = await make_key(rt, user_id=bob.id, organization_id=org_id, role=Role.MEMBER)
    for person in (admin, alice, bob):
        await enter(person, org_id)
    return w


async def activity(person, **params):
    r = await person.call("GET", "/activity", params=params)
    assert r.status_code == 200, r.text
    body = r.json()
    components.ActivityResponse.model_validate(body)  # what the official SDK requires
    return body["data"]


async def test_window_is_the_last_thirty_utc_days_today_included(rt, world):
    k = world.keys["alice"]
    await record(rt, k, at=NOW - timedelta(minutes=5), cost=1)  # today, as it happens
    await record(rt, k, at=TODAY - timedelta(seconds=1), cost=10, prompt=3, completion=4, reasoning=1, cached=2)
    await record(rt, k, at=TODAY - timedelta(hours=5), cost=20, prompt=5, completion=6)
    await record(rt, k, at=TODAY - timedelta(days=29), cost=100)  # first day of the window
    await record(rt, k, at=TODAY - timedelta(days=29, seconds=1), cost=1000)  # one day too old
    rows = await activity(world.admin)
    today = TODAY.date().isoformat()
    yesterday = (TODAY - timedelta(days=1)).date().isoformat()
    first = (TODAY - timedelta(days=29)).date().isoformat()
    assert [(r["date"], r["requests"]) for r in rows] == [(today, 1), (yesterday, 2), (first, 1)]
    top = rows[1]
    assert top == {
        "date": yesterday,
        "model": "test/chat",
        "model_permaslug": "test/chat",
        "endpoint_id": "test/chat@fake",
        "provider_name": "fake",
        "usage": 30e-9,
        "usage_usd": "0.00000003",
        "byok_usage_inference": 0,
        "requests": 2,
        "prompt_tokens": 8,
        "completion_tokens": 10,
        "reasoning_tokens": 1,
        "cached_tokens": 2,
        "workspace_id": None,
    }
    assert [r["requests"] for r in await activity(world.admin, date=first)] == [1]
    assert [r["usage_usd"] for r in await activity(world.admin, date=today)] == ["0.000000001"]
    assert await activity(world.admin, date=(TODAY - timedelta(days=2)).date().isoformat()) == []


async def test_rows_split_by_model_and_endpoint_and_filter_by_key_and_member(rt, world):
    day = TODAY - timedelta(days=3, hours=-2)
    await record(rt, world.keys["alice"], at=day, model="test/chat", provider="fake", cost=5)
    await record(rt, world.keys["alice"], at=day, model="test/chat", provider="fakeb", cost=7)
    await record(rt, world.keys["bob"], at=day + timedelta(hours=3), model="test/claude", provider="claude", cost=11)
    await record(rt, world.keys["admin"], at=day, model="test/chat", provider="fake", cost=13)
    rows = await activity(world.admin)
    assert {(r["endpoint_id"], r["requests"], r["usage_usd"]) for r in rows} == {
        ("test/chat@fake", 2, "0.000000018"),
        ("test/chat@fakeb", 1, "0.000000007"),
        ("test/claude@claude", 1, "0.000000011"),
    }
    only_bob = await activity(world.admin, api_key_hash=world.keys["bob"].hash)
    assert [(r["model"], r["requests"]) for r in only_bob] == [("test/claude", 1)]
    only_alice = await activity(world.admin, user_id=world.alice.id)
    assert sum(r["requests"] for r in only_alice) == 2
    # Members see everything with visibility "all", their own with "own"; admins always all.
    assert sum(r["requests"] for r in await activity(world.bob)) == 4
    await set_visibility(rt, world.org_id, "own")
    assert sum(r["requests"] for r in await activity(world.bob)) == 1
    assert sum(r["requests"] for r in await activity(world.admin)) == 4
    r = await world.bob.call("GET", "/activity", params={"user_id": world.alice.id})
    assert_envelope(r, 404)


@pytest.mark.parametrize(
    "value",
    ["2025-13-01", "yesterday", "20250101", "1999-01-01", "2999-01-01", "tomorrow", "thirty days ago"],
)
async def test_bad_dates_are_a_400_naming_date(rt, world, value):
    if value == "tomorrow":
        value = (NOW + timedelta(days=1)).date().isoformat()
    elif value == "thirty days ago":
        value = (NOW - timedelta(days=30)).date().isoformat()  # the day before the window
    r = await world.admin.call("GET", "/activity", params={"date": value})
    error = assert_envelope(r, 400, "date")
    assert error["metadata"]["field"] == "date"


async def test_provider_name_is_the_catalogs_display_name(rt, world):
    # As answers and /models/.../endpoints show it; a provider the catalog no longer lists keeps
    # the slug its rows were stored with.
    day = TODAY - timedelta(days=2)
    await record(rt, world.keys["alice"], at=day, model="demo/echo", provider="demo", cost=5)
    await record(rt, world.keys["alice"], at=day, model="test/chat", provider="gone", cost=7)
    rows = await activity(world.admin)
    assert {r["endpoint_id"]: r["provider_name"] for r in rows} == {
        "demo/echo@demo": "teamrouter demo",
        "test/chat@gone": "gone",
    }
