"""Analytics from the rollups: meta, buckets per granularity (weeks start on Monday), dimensions,
filters (object and SDK list forms), totals and the cost-optimization breakdowns, visibility, bad
input, and the official SDK calling both endpoints with a management key."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from typing import Any

import httpx
import pytest
from openrouter import OpenRouter, operations
from tests.support.activity import World, make_key, record, set_visibility
from tests.support.keys import add_member, enter, make_org
from tests.support.orgs import assert_envelope

from teamrouter.clock import FrozenClock
from teamrouter.domain.roles import Role

NOW = datetime.now(UTC).replace(hour=12, minute=0, second=0, microsecond=0)
TODAY = datetime.combine(NOW.date(), time(), UTC)
# A Wednesday about three weeks back, so its week (Monday..Sunday) lies wholly in the past.
WED = TODAY - timedelta(days=21 + (TODAY.weekday() - 2) % 7)
MONDAY = WED - timedelta(days=2)
FORTNIGHT = {"start": MONDAY.isoformat(), "end": (MONDAY + timedelta(days=14)).isoformat()}


@pytest.fixture
async def world(rt, make_person) -> World:
    rt.clock = FrozenClock(NOW)
    admin, alice, bob = await make_person(name="Ada"), await make_person(name="Alice"), await make_person(name="Bob")
    org_id = await make_org(rt, admin)
    await add_member(rt, org_id, alice)
    await add_member(rt, org_id, bob)
    w = World(org_id=org_id, admin=admin, alice=alice, bob=bob)
    w.keys["admin"] = await make_key(rt, user_id=admin.id, organization_id=org_id, role=Role.ADMIN, name="ak")
    w.keys["alice"] = await make_key(rt, user_id=alice.id, organization_id=org_id, role=Role.MEMBER, name="alk")
    w.keys["bob"] = await make_key(rt, user_id=bob.id, organization_id=org_id, role=Role.MEMBER, name="bk")
    w.keys["mgmt"] = await make_key(rt, user_id=admin.id, organization_id=org_id, role=Role.ADMIN, management=True)
    for person in (admin, alice, bob):
        await enter(person, org_id)
    # Wednesday 10:xx: alice twice on chat (one hour bucket), bob on claude at 14:xx; Friday admin.
    await record(rt, w.keys["alice"], at=WED + timedelta(hours=10, minutes=5), cost=3000, prompt=100, completion=50)
    await record(rt, w.keys["alice"], at=WED + timedelta(hours=10, minutes=50), cost=1000, prompt=30, completion=20)
    await record(
        rt,
        w.keys["bob"],
        at=WED + timedelta(hours=14),
        model="test/claude",
        provider="claude",
        cost=9000,
        prompt=200,
        completion=100,
    )
    await record(rt, w.keys["admin"], at=WED + timedelta(days=2, hours=1), cost=500, prompt=10, completion=15)
    return w


def iso(value: datetime) -> str:
    return value.isoformat().replace("+00:00", "Z")


async def query(person: Any, status: int = 200, **body: Any) -> dict[str, Any]:
    body.setdefault("metrics", ["total_usage", "request_count", "tokens_prompt", "tokens_completion"])
    body.setdefault("time_range", {"start": iso(MONDAY - timedelta(days=7)), "end": iso(TODAY)})
    r = await person.call("POST", "/analytics/query", json=body)
    assert r.status_code == status, r.text
    payload: dict[str, Any] = r.json()
    if status == 200:
        operations.QueryAnalyticsResponse.model_validate(payload)
        return dict(payload["data"])
    return payload


async def test_meta_lists_metrics_dimensions_granularities_and_limits(world):
    r = await world.alice.call("GET", "/analytics/meta")
    assert r.status_code == 200, r.text
    operations.GetAnalyticsMetaResponse.model_validate(r.json())
    meta = r.json()["data"]
    assert [m["name"] for m in meta["metrics"]] == [
        "total_usage",
        "request_count",
        "tokens_prompt",
        "tokens_completion",
    ]
    assert [d["name"] for d in meta["dimensions"]] == ["model", "provider", "api_key", "user"]
    assert [g["name"] for g in meta["granularities"]] == ["hour", "day", "week", "month"]
    assert meta["max_time_range_days"] == 366 and meta["week_starts_on"] == "monday"


async def test_buckets_for_each_granularity(world):
    hour = await query(world.admin, granularity="hour", metrics=["request_count"], time_range=FORTNIGHT)
    assert [(r["bucket"], r["request_count"]) for r in hour["data"]] == [
        (iso(WED + timedelta(hours=10)), 2),
        (iso(WED + timedelta(hours=14)), 1),
        (iso(WED + timedelta(days=2, hours=1)), 1),
    ]
    day = await query(world.admin, granularity="day", metrics=["request_count", "total_usage"])
    assert [(r["bucket"], r["request_count"], r["total_usage_usd"]) for r in day["data"]] == [
        (iso(WED), 3, "0.000013"),
        (iso(WED + timedelta(days=2)), 1, "0.0000005"),
    ]
    week = await query(world.admin, granularity="week", metrics=["request_count"])
    assert [(r["bucket"], r["request_count"]) for r in week["data"]] == [(iso(MONDAY), 4)]
    month = await query(world.admin, granularity="month", metrics=["tokens_prompt"])
    months = {WED.replace(day=1), (WED + timedelta(days=2)).replace(day=1)}
    assert {r["bucket"] for r in month["data"]} == {iso(m) for m in months}
    assert sum(r["tokens_prompt"] for r in month["data"]) == 340


async def test_dimensions_totals_and_cost_optimization_breakdowns(world):
    result = await query(world.admin, granularity="week", dimensions=["model", "provider", "api_key", "user"])
    rows = {(r["model"], r["api_key_name"], r["user_email"]): r for r in result["data"]}
    alice_row = rows[("test/chat", "alk", world.alice.email)]
    assert alice_row["api_key"] == world.keys["alice"].hash and alice_row["user"] == world.alice.id
    assert (alice_row["request_count"], alice_row["tokens_prompt"], alice_row["total_usage_usd"]) == (
        2,
        130,
        "0.000004",
    )
    assert alice_row["provider"] == "fake" and alice_row["user_name"] == "Alice"
    assert alice_row["provider_name"] == "fake"  # not in this runtime's catalog: its slug
    totals = result["totals"]
    assert (totals["total_usage_usd"], totals["request_count"], totals["tokens_prompt"]) == ("0.0000135", 4, 340)
    assert totals["tokens_completion"] == 185
    insights = result["insights"]
    claude = insights["by_model"][0]  # the most expensive first
    assert claude["model"] == "test/claude"
    assert claude["cost_per_1k_tokens"] == pytest.approx(9000e-9 * 1000 / 300)
    assert [(u["email"], u["total_usage_usd"]) for u in insights["by_user"]] == [
        (world.bob.email, "0.000009"),
        (world.alice.email, "0.000004"),
        (world.admin.email, "0.0000005"),
    ]
    assert [(k["name"], k["request_count"], k["creator_user_id"]) for k in insights["by_api_key"]] == [
        ("bk", 1, world.bob.id),
        ("alk", 2, world.alice.id),
        ("ak", 1, world.admin.id),
    ]
    assert result["metadata"]["row_count"] == 3 and result["metadata"]["truncated"] is False
    limited = await query(world.admin, granularity="hour", limit=2, time_range=FORTNIGHT)
    assert limited["metadata"] == {**limited["metadata"], "row_count": 2, "truncated": True}


async def test_provider_shows_the_activity_feeds_display_name_and_filters_by_its_slug(rt, world):
    # The name /activity shows (the catalog's; a provider the catalog no longer lists keeps the slug
    # its rows were stored with) beside the slug, which stays the value the `provider` filter takes.
    day = TODAY - timedelta(days=1)
    await record(rt, world.keys["alice"], at=day, model="demo/echo", provider="demo", cost=5)
    await record(rt, world.keys["alice"], at=day, model="test/chat", provider="gone", cost=7)
    week = {"start": iso(day), "end": iso(TODAY)}
    rows = (await query(world.admin, dimensions=["provider"], time_range=week))["data"]
    assert {(r["provider"], r["provider_name"], r["request_count"]) for r in rows} == {
        ("demo", "teamrouter demo", 1),
        ("gone", "gone", 1),
    }
    daily = (await world.admin.call("GET", "/activity")).json()["data"]
    assert {r["provider_name"] for r in daily} >= {r["provider_name"] for r in rows}
    demo = next(r for r in rows if r["provider_name"] == "teamrouter demo")
    filtered = await query(world.admin, filters={"provider": demo["provider"]}, time_range=week)
    assert filtered["totals"]["request_count"] == 1
    listed = [{"field": "provider", "operator": "eq", "value": demo["provider"]}]
    assert (await query(world.admin, filters=listed, time_range=week))["totals"]["request_count"] == 1


async def test_filters_object_and_sdk_list_forms(world):
    by_key = await query(world.admin, filters={"api_key_hash": world.keys["bob"].hash})
    assert by_key["totals"]["request_count"] == 1
    by_user = await query(world.admin, filters=[{"field": "user", "operator": "eq", "value": world.alice.id}])
    assert by_user["totals"]["request_count"] == 2
    by_model = await query(world.admin, filters={"model": "test/chat", "provider": "fake"})
    assert by_model["totals"]["request_count"] == 3
    narrow = await query(
        world.admin, time_range={"start": iso(WED + timedelta(hours=10, minutes=30)), "end": iso(TODAY)}
    )
    assert narrow["time_range"]["start"] == iso(WED + timedelta(hours=10))  # whole hours (rollup grain)
    assert narrow["totals"]["request_count"] == 4


async def test_members_follow_activity_visibility(rt, world):
    assert (await query(world.alice))["totals"]["request_count"] == 4
    await set_visibility(rt, world.org_id, "own")
    mine = await query(world.alice, dimensions=["user"])
    assert mine["totals"]["request_count"] == 2 and {r["user"] for r in mine["data"]} == {world.alice.id}
    assert [u["user_id"] for u in mine["insights"]["by_user"]] == [world.alice.id]
    assert (await query(world.admin))["totals"]["request_count"] == 4
    refused = await query(world.alice, 404, filters={"api_key_hash": world.keys["bob"].hash})
    assert refused["error"]["code"] == 404


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"metrics": ["total_usage", "vibes"]}, "metrics"),
        ({"metrics": []}, "metrics"),
        ({"dimensions": ["country"]}, "dimensions"),
        ({"granularity": "minute"}, "granularity"),
        ({"time_range": {"start": "2025-02-01T00:00:00Z", "end": "2025-01-01T00:00:00Z"}}, "time_range"),
        ({"time_range": {"start": "2024-01-01T00:00:00Z", "end": "2025-02-01T00:00:00Z"}}, "time_range"),
        (
            {"granularity": "hour", "time_range": {"start": "2025-01-01T00:00:00Z", "end": "2025-02-15T00:00:00Z"}},
            "time_range",
        ),
        ({"time_range": {"start": "2025-01-01T00:00:00", "end": "2025-01-02T00:00:00Z"}}, "time_range.start"),
        ({"filters": [{"field": "country", "operator": "eq", "value": "x"}]}, "filters"),
        ({"filters": {"team": "x"}}, "filters"),
        ({"limit": 0}, "limit"),
        ({"surprise": 1}, "surprise"),
    ],
)
async def test_bad_queries_are_a_400_naming_the_field(world, body, field):
    error = (await query(world.admin, 400, **body))["error"]
    assert error["code"] == 400 and field in error["message"], error


@pytest.mark.parametrize(
    ("filters", "message"),
    [
        ({"modle": "test/chat"}, "filters: cannot filter on 'modle'; valid: api_key_hash, user_id, model, provider"),
        (
            {"model": "test/chat", "provider_name": "x"},
            "filters: cannot filter on 'provider_name'; valid: api_key_hash, user_id, model, provider",
        ),
        ({"model": 7}, "filters.model: Input should be a valid string"),
        (
            "test/chat",
            "filters: must be an object {api_key_hash?, user_id?, model?, provider?} "
            "or a list of {field, operator, value}",
        ),
    ],
)
async def test_a_bad_filter_object_is_a_400_about_that_object_alone(world, filters, message):
    # Not also about the list form it was never meant as ("filters: Input should be a valid list").
    error = (await query(world.admin, 400, filters=filters))["error"]
    assert error["message"] == message, error
    assert error["metadata"]["field"] == message.partition(":")[0]


async def test_foreign_key_filter_is_not_found(rt, world, make_person):
    outsider = await make_person()
    other = await make_org(rt, outsider, name="Other")
    foreign = await make_key(rt, user_id=outsider.id, organization_id=other, role=Role.ADMIN)
    await record(rt, foreign, at=WED, cost=123456)
    refused = await query(world.admin, 404, filters={"api_key_hash": foreign.hash})
    assert_envelope(httpx.Response(404, json=refused), 404, "key not found")
    everything = await query(world.admin, dimensions=["api_key", "user"])
    assert foreign.hash not in str(everything) and outsider.id not in str(everything)


async def test_official_sdk_meta_and_query_with_a_management_key(world, app):
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as http:
        sdk = OpenRouter(
            api_key=world.keys["mgmt"].plaintext,
            server_url="http://testserver/api/v1",
            async_client=http,
            retry_config=None,
        )
        meta = await sdk.analytics.get_analytics_meta_async()
        assert {m.name for m in meta.data.metrics} == {
            "total_usage",
            "request_count",
            "tokens_prompt",
            "tokens_completion",
        }
        result = await sdk.analytics.query_analytics_async(
            metrics=["total_usage", "request_count"],
            dimensions=["model"],
            granularity="week",
            time_range={"start": MONDAY - timedelta(days=7), "end": TODAY},
            filters=[{"field": "model", "operator": "eq", "value": "test/chat"}],
        )
        # The SDK's row model declares no fields (it drops the values); the row itself is checked above.
        assert result.data.metadata.row_count == 1 and len(result.data.data) == 1
        assert result.data.metadata.truncated is False
