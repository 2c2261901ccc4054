"""Analytics from the rollups: meta, buckets per granularity (weeks start on Monday), dimensions,
filters (object and SDK list forms, operators eq/neq/in/not_in), order_by and group_limit, totals and
the cost-optimization breakdowns, visibility, bad input, and the official SDK calling both endpoints
with a management key."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta
from typing import Any

import httpx
import pytest
from openrouter import operations
from tests.support.activity import World, make_key, record, set_visibility
from tests.support.keys import add_member, enter, make_org
from tests.support.orgs import assert_envelope
from tests.support.sdk import openrouter

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
    assert meta["operators"] == [
        {"name": "eq", "value_type": "scalar"},
        {"name": "neq", "value_type": "scalar"},
        {"name": "in", "value_type": "array"},
        {"name": "not_in", "value_type": "array"},
    ]
    assert meta["order_by"] == {
        "always": ["date", "bucket", "request_count"],
        "when_requested": ["total_usage", "tokens_prompt", "tokens_completion", "model", "provider", "api_key", "user"],
        "directions": ["asc", "desc"],
    }
    assert meta["group_limit"] == {"min": 1, "max": 10_000}


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


def f(field: str, operator: str, value: Any) -> dict[str, Any]:
    return {"field": field, "operator": operator, "value": value}


async def requests_with(person: Any, *filters: dict[str, Any]) -> int:
    return int((await query(person, filters=list(filters)))["totals"]["request_count"])


async def test_filter_operators_neq_in_not_in(world):
    # Seeded: alice 2 × test/chat, bob 1 × test/claude, admin 1 × test/chat.
    alice, bob, admin = world.keys["alice"].hash, world.keys["bob"].hash, world.keys["admin"].hash
    assert await requests_with(world.admin, f("model", "neq", "test/chat")) == 1
    assert await requests_with(world.admin, f("model", "in", ["test/chat", "test/claude"])) == 4
    assert await requests_with(world.admin, f("model", "in", ["test/claude", "no/such-model"])) == 1
    assert await requests_with(world.admin, f("model", "not_in", ["test/claude"])) == 3
    assert await requests_with(world.admin, f("user", "not_in", [world.alice.id, world.bob.id])) == 1
    assert await requests_with(world.admin, f("user_id", "in", [world.bob.id])) == 1
    assert await requests_with(world.admin, f("api_key", "in", [alice, bob])) == 3
    assert await requests_with(world.admin, f("api_key_hash", "neq", bob)) == 3
    assert await requests_with(world.admin, f("api_key", "not_in", [alice, admin])) == 1
    assert await requests_with(world.admin, f("provider", "neq", "claude")) == 3
    # Filters are ANDed: test/chat, but not alice's → the admin's one request.
    assert await requests_with(world.admin, f("model", "eq", "test/chat"), f("user", "neq", world.alice.id)) == 1
    assert await requests_with(world.admin, f("model", "in", ["test/chat"]), f("model", "neq", "test/chat")) == 0
    rows = await query(world.admin, dimensions=["model"], granularity="week", filters=[f("model", "neq", "test/chat")])
    assert [(r["model"], r["request_count"]) for r in rows["data"]] == [("test/claude", 1)]


async def test_operators_never_widen_the_scope(rt, world, make_person):
    await set_visibility(rt, world.org_id, "own")
    # Alice sees only her own two requests, whatever she excludes.
    assert await requests_with(world.alice, f("model", "neq", "no/such-model")) == 2
    assert await requests_with(world.alice, f("user", "not_in", [world.alice.id])) == 0
    assert await requests_with(world.alice, f("model", "not_in", ["test/claude"])) == 2
    # Naming a key or person she may not see is a 404 whatever the operator, as with `eq`.
    for operator, value in (("neq", world.keys["bob"].hash), ("not_in", [world.keys["bob"].hash])):
        refused = await query(world.alice, 404, filters=[f("api_key", operator, value)])
        assert refused["error"]["metadata"]["code"] == "key_not_found"
    refused = await query(world.alice, 404, filters=[f("user", "in", [world.alice.id, world.bob.id])])
    assert refused["error"]["metadata"]["code"] == "user_not_found"
    outsider = await make_person()
    other = await make_org(rt, outsider, name="Other")
    foreign = await make_key(rt, user_id=outsider.id, organization_id=other, role=Role.ADMIN)
    await record(rt, foreign, at=WED, cost=123456)
    refused = await query(world.admin, 404, filters=[f("api_key", "not_in", [world.keys["bob"].hash, foreign.hash])])
    assert refused["error"]["metadata"]["code"] == "key_not_found"
    assert await requests_with(world.admin, f("model", "neq", "no/such-model")) == 4  # not the outsider's


def cells(result: dict[str, Any], *names: str) -> list[tuple[Any, ...]]:
    return [tuple(r[n] for n in names) for r in result["data"]]


async def test_order_by_a_metric_a_dimension_or_the_date(world):
    # Day × model: (Wed, chat) 2 requests $4000n; (Wed, claude) 1 request $9000n; (Fri, chat) 1 request $500n.
    wed, fri = iso(WED), iso(WED + timedelta(days=2))
    chat_wed, claude_wed, chat_fri = (wed, "test/chat"), (wed, "test/claude"), (fri, "test/chat")

    async def ordered(order_by: dict[str, str] | None, **body: Any) -> list[tuple[Any, ...]]:
        body.setdefault("metrics", ["total_usage"])
        if order_by is not None:
            body["order_by"] = order_by
        return cells(await query(world.admin, dimensions=["model"], **body), "bucket", "model")

    assert await ordered(None) == [chat_wed, claude_wed, chat_fri]  # unchanged default: time, then model
    assert await ordered({"field": "total_usage", "direction": "desc"}) == [claude_wed, chat_wed, chat_fri]
    assert await ordered({"field": "total_usage", "direction": "asc"}) == [chat_fri, chat_wed, claude_wed]
    # request_count may be ordered by without being asked for; the tie (1 and 1) breaks by time, then model.
    assert await ordered({"field": "request_count", "direction": "desc"}) == [chat_wed, claude_wed, chat_fri]
    assert await ordered({"field": "date", "direction": "desc"}) == [chat_fri, chat_wed, claude_wed]
    assert await ordered({"field": "bucket", "direction": "desc"}) == [chat_fri, chat_wed, claude_wed]
    assert await ordered({"field": "model", "direction": "desc"}) == [claude_wed, chat_wed, chat_fri]
    # Ordered before the limit cuts: the top row is the most expensive one, not the earliest.
    top = await query(
        world.admin, dimensions=["model"], limit=1, order_by={"field": "total_usage", "direction": "desc"}
    )
    assert cells(top, "bucket", "model", "total_usage_usd") == [(wed, "test/claude", "0.000009")]
    assert top["metadata"]["truncated"] is True


async def test_order_by_api_key_follows_the_hash_rows_show(world):
    hashes = sorted(world.keys[k].hash for k in ("admin", "alice", "bob"))
    for direction, expected in (("asc", hashes), ("desc", hashes[::-1])):
        result = await query(
            world.admin,
            granularity="week",
            dimensions=["api_key"],
            order_by={"field": "api_key", "direction": direction},
        )
        assert [r["api_key"] for r in result["data"]] == expected


async def test_group_limit_keeps_the_first_rows_of_each_dimension_combination(rt, world):
    # One more day of test/chat: Thursday, $2000n. Day × model is then
    # chat: Wed $4000n, Thu $2000n, Fri $500n; claude: Wed $9000n.
    await record(rt, world.keys["alice"], at=WED + timedelta(days=1, hours=9), cost=2000)
    wed, thu, fri = iso(WED), iso(WED + timedelta(days=1)), iso(WED + timedelta(days=2))
    priciest = {"field": "total_usage", "direction": "desc"}

    async def limited(group_limit: int, dimensions: list[str], **body: Any) -> dict[str, Any]:
        return await query(world.admin, dimensions=dimensions, group_limit=group_limit, **body)

    top2 = await limited(2, ["model"], order_by=priciest)
    assert cells(top2, "bucket", "model", "total_usage_usd") == [
        (wed, "test/claude", "0.000009"),
        (wed, "test/chat", "0.000004"),
        (thu, "test/chat", "0.000002"),
    ]
    # The cut is not `limit`: not reported as truncated, and the totals still count every row.
    assert top2["metadata"]["truncated"] is False and top2["totals"]["request_count"] == 5
    # Without order_by, each model keeps its earliest buckets (the default order is by time).
    first = await limited(1, ["model"])
    assert cells(first, "bucket", "model") == [(wed, "test/chat"), (wed, "test/claude")]
    latest = await limited(1, ["model"], order_by={"field": "date", "direction": "desc"})
    assert cells(latest, "bucket", "model") == [(fri, "test/chat"), (wed, "test/claude")]
    cheapest = await limited(1, ["model"], order_by={"field": "total_usage", "direction": "asc"})
    assert cells(cheapest, "bucket", "model") == [(fri, "test/chat"), (wed, "test/claude")]
    # A group is a combination of every requested dimension: (chat, alice) has Wed and Thu.
    by_user = await limited(1, ["model", "user"], order_by=priciest)
    assert cells(by_user, "bucket", "model", "user") == [
        (wed, "test/claude", world.bob.id),
        (wed, "test/chat", world.alice.id),
        (fri, "test/chat", world.admin.id),
    ]
    # Then `limit` cuts the ordered, group-limited rows.
    both = await limited(2, ["model"], order_by=priciest, limit=2)
    assert cells(both, "bucket", "model") == [(wed, "test/claude"), (wed, "test/chat")]
    assert both["metadata"]["truncated"] is True
    # Ignored without dimensions, as the SDK documents.
    assert cells(await limited(1, []), "bucket") == [(wed,), (thu,), (fri,)]


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
        ({"group_limit": 0}, "group_limit"),
        ({"order_by": {"field": "total_usage", "direction": "up"}}, "order_by.direction"),
        ({"order_by": {"field": "total_usage"}}, "order_by.direction"),
        ({"filters": [{"field": "model", "operator": "gt", "value": "a"}]}, "filters.0.operator"),
        ({"filters": [{"field": "model", "operator": "in", "value": []}]}, "filters.0.value"),
        ({"filters": [{"field": "model", "operator": "eq", "value": 7}]}, "filters.0.value"),
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


@pytest.mark.parametrize(
    ("body", "message"),
    [
        (
            {"filters": [f("model", "in", "test/chat")]},
            "filters.0: operator 'in' takes a list of values",
        ),
        (
            {"filters": [f("model", "not_in", "test/chat")]},
            "filters.0: operator 'not_in' takes a list of values",
        ),
        (
            {"filters": [f("model", "eq", ["test/chat"])]},
            "filters.0: operator 'eq' takes one value, not a list",
        ),
        (
            {"filters": [f("model", "neq", ["test/chat", "test/claude"])]},
            "filters.0: operator 'neq' takes one value, not a list",
        ),
        (
            {"filters": [f("model", "in", [])]},
            "filters.0.value: List should have at least 1 item after validation, not 0",
        ),
        (
            {"filters": [f("model", "like", "test/%")]},
            "filters.0.operator: Input should be 'eq', 'neq', 'in' or 'not_in'",
        ),
        (
            {"metrics": ["total_usage"], "dimensions": ["model"], "order_by": {"field": "cost", "direction": "asc"}},
            "order_by.field: cannot order by 'cost'; valid: date, bucket, total_usage, request_count, model",
        ),
        (
            # A metric that was not asked for (request_count aside), or a dimension not grouped by.
            {"metrics": ["total_usage"], "order_by": {"field": "tokens_prompt", "direction": "asc"}},
            "order_by.field: cannot order by 'tokens_prompt'; valid: date, bucket, total_usage, request_count",
        ),
        (
            {"metrics": ["request_count"], "order_by": {"field": "model", "direction": "asc"}},
            "order_by.field: cannot order by 'model'; valid: date, bucket, request_count",
        ),
    ],
)
async def test_bad_operators_and_order_by_are_a_400_saying_what_fits(world, body, message):
    error = (await query(world.admin, 400, **body))["error"]
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
        sdk = openrouter(world.keys["mgmt"].plaintext, "http://testserver", async_client=http)
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
        assert [o.name for o in meta.data.operators] == ["eq", "neq", "in", "not_in"]
        # Day × model has (Wed, chat), (Wed, claude), (Fri, chat); one row per model, claude left out.
        ranked = await sdk.analytics.query_analytics_async(
            metrics=["total_usage"],
            dimensions=["model"],
            granularity="day",
            time_range={"start": MONDAY - timedelta(days=7), "end": TODAY},
            filters=[
                {"field": "model", "operator": "in", "value": ["test/chat", "test/claude"]},
                {"field": "model", "operator": "neq", "value": "test/claude"},
                {"field": "user", "operator": "not_in", "value": [world.bob.id], "include_unset": False},
            ],
            order_by={"field": "total_usage", "direction": "desc"},
            group_limit=1,
            limit=10,
        )
        assert ranked.data.metadata.row_count == 1 and ranked.data.metadata.truncated is False
