"""The activity feed and its CSV export: who sees what (admins, members under `activity_visibility`
all/own, personal context, management keys), cursor pagination, filters, and bad input (4xx in the
envelope, nothing leaked)."""

from __future__ import annotations

import base64
import csv
import io
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy import delete
from tests.support.activity import World, make_key, record, set_visibility
from tests.support.keys import add_member, enter, make_org
from tests.support.orgs import assert_envelope

from teamrouter.clock import FrozenClock
from teamrouter.domain.orgs.models import Membership
from teamrouter.domain.roles import Role

NOW = datetime.now(UTC).replace(microsecond=0)


@pytest.fixture
async def world(rt, make_person) -> World:
    rt.clock = FrozenClock(NOW)
    admin = await make_person(name="Ada Admin")
    alice = await make_person(name="Alice")
    bob = await make_person(name="Bob")
    org_id = await make_org(rt, admin)
    await add_member(rt, org_id, alice)
    await add_member(rt, org_id, bob)
    w = World(org_id=org_id, admin=admin, alice=alice, bob=bob)
    w.keys["admin"] = await make_key(rt, user_id=admin.id, organization_id=org_id, role=Role.ADMIN, name="admin key")
    w.keys["alice1"] = await make_key(rt, user_id=alice.id, organization_id=org_id, role=Role.MEMBER, name="a1")
    w.keys["alice2"] = await make_key(rt, user_id=alice.id, organization_id=org_id, role=Role.MEMBER, name="a2")
    w.keys["bob"] = await make_key(rt, user_id=bob.id, organization_id=org_id, role=Role.MEMBER, name="=HYPERLINK()")
    w.keys["alice_personal"] = await make_key(rt, user_id=alice.id, organization_id=None, name="mine")
    w.keys["mgmt"] = await make_key(
        rt, user_id=admin.id, organization_id=org_id, role=Role.ADMIN, name="ops", management=True
    )
    for person in (admin, alice, bob):
        await enter(person, org_id)
    return w


async def seed(rt, w: World) -> dict[str, str]:
    """Nine generations, one minute apart, newest last: which key made each (by generation id)."""
    made: dict[str, str] = {}
    order = ["admin", "alice1", "bob", "alice2", "alice1", "bob", "admin", "alice_personal", "alice1"]
    for i, name in enumerate(order):
        model = "test/claude" if name == "bob" else "test/chat"
        gid = await record(rt, w.keys[name], at=NOW - timedelta(minutes=60 - i), model=model, cost=1000 * (i + 1))
        made[gid] = name
    return made


async def feed(person: Any, **params: Any) -> list[dict[str, Any]]:
    """Every page of the feed, following next_cursor."""
    rows: list[dict[str, Any]] = []
    cursor = None
    while True:
        query = {**params, **({"cursor": cursor} if cursor else {})}
        r = await person.call("GET", "/activity/generations", params=query)
        assert r.status_code == 200, r.text
        body = r.json()
        rows += body["data"]
        cursor = body["next_cursor"]
        if cursor is None:
            return rows


async def export(person: Any, **params: Any) -> list[dict[str, str]]:
    r = await person.call("GET", "/activity/export.csv", params=params)
    assert r.status_code == 200, r.text
    assert r.headers["content-type"].startswith("text/csv")
    return list(csv.DictReader(io.StringIO(r.text)))


async def test_admin_sees_every_org_generation_newest_first_with_names(rt, world):
    made = await seed(rt, world)
    rows = await feed(world.admin)
    org_ids = [gid for gid, name in made.items() if name != "alice_personal"]
    assert [r["id"] for r in rows] == list(reversed(org_ids))
    newest = rows[0]
    assert newest["key"] == {"hash": world.keys["alice1"].hash, "name": "a1", "label": newest["key"]["label"]}
    assert newest["key"]["label"].startswith("sk-tr-v1-")
    assert newest["key_creator"] == {"id": world.alice.id, "email": world.alice.email, "name": "Alice"}
    assert newest["requester"] == newest["key_creator"]
    assert newest["tokens"] == {"prompt": 10, "completion": 20, "reasoning": 0, "cached": 0}
    assert (newest["cost"], newest["cost_usd"]) == (0.000009, "0.000009")
    assert (newest["latency"], newest["generation_time"], newest["finish_reason"]) == (120, 480, "stop")
    assert newest["provider"] == "fake" and newest["model"] == "test/chat"
    assert set(newest) >= {"streamed", "cancelled", "usage_estimated", "external_user", "app", "created_at"}


async def test_members_see_everyone_with_visibility_all_and_only_their_own_with_own(rt, world):
    made = await seed(rt, world)
    org_rows = {gid for gid, name in made.items() if name != "alice_personal"}
    alice_org = {gid for gid, name in made.items() if name in ("alice1", "alice2")}
    assert {r["id"] for r in await feed(world.alice)} == org_rows
    assert {r["id"] for r in await feed(world.bob)} == org_rows

    await set_visibility(rt, world.org_id, "own")
    assert {r["id"] for r in await feed(world.alice)} == alice_org
    assert {r["id"] for r in await feed(world.bob)} == {gid for gid, n in made.items() if n == "bob"}
    assert {r["id"] for r in await feed(world.admin)} == org_rows  # admins always see all
    assert {row["id"] for row in await export(world.alice)} == alice_org
    # /generation follows the same rule.
    bob_gid = next(gid for gid, n in made.items() if n == "bob")
    r = await world.alice.call("GET", "/generation", params={"id": bob_gid})
    assert_envelope(r, 404)
    r = await world.alice.call("GET", "/generation", params={"id": next(iter(alice_org))})
    assert r.status_code == 200


async def test_personal_context_shows_only_the_persons_own_personal_activity(rt, world):
    made = await seed(rt, world)
    await enter(world.alice, None)
    assert [r["id"] for r in await feed(world.alice)] == [g for g, n in made.items() if n == "alice_personal"]
    await enter(world.bob, None)
    assert await feed(world.bob) == []
    await enter(world.alice, world.org_id)
    assert all(made[r["id"]] != "alice_personal" for r in await feed(world.alice))


async def test_management_key_acts_as_its_creator_in_its_context(rt, world, client):
    made = await seed(rt, world)
    await set_visibility(rt, world.org_id, "own")
    r = await client.get(
        "/api/v1/activity/generations",
        params={"limit": 200},
        headers={"Authorization": f"Bearer {world.keys['mgmt'].plaintext}"},
    )
    assert r.status_code == 200, r.text
    assert len(r.json()["data"]) == sum(1 for n in made.values() if n != "alice_personal")
    inference = await client.get(
        "/api/v1/activity/generations", headers={"Authorization": f"Bearer {world.keys['bob'].plaintext}"}
    )
    assert_envelope(inference, 403)


async def test_cursor_pages_never_skip_or_repeat_even_with_equal_timestamps(rt, world):
    same = NOW - timedelta(hours=2)
    ids = [await record(rt, world.keys["bob"], at=same) for _ in range(5)]
    ids += [await record(rt, world.keys["alice1"], at=same + timedelta(seconds=i)) for i in range(4)]
    pages = []
    cursor = None
    while True:
        r = await world.admin.call(
            "GET", "/activity/generations", params={"limit": 2, **({"cursor": cursor} if cursor else {})}
        )
        assert r.status_code == 200, r.text
        pages.append([row["id"] for row in r.json()["data"]])
        cursor = r.json()["next_cursor"]
        if cursor is None:
            break
        if len(pages) == 1:  # a row arriving mid-way is newer than the cursor: later pages ignore it
            late = await record(rt, world.keys["bob"], at=NOW)
    flat = [gid for page in pages for gid in page]
    assert sorted(flat) == sorted(ids) and len(flat) == len(set(flat))
    assert [len(p) for p in pages] == [2, 2, 2, 2, 1]
    assert flat[:4] == ids[5:][::-1]  # newest first
    assert late not in flat
    assert len(await feed(world.admin, limit=3)) == 10


async def test_filters_by_key_member_model_and_time(rt, world):
    made = await seed(rt, world)
    by = {name: {g for g, n in made.items() if n == name} for name in set(made.values())}
    rows = await feed(world.admin, api_key_hash=world.keys["alice1"].hash)
    assert {r["id"] for r in rows} == by["alice1"]
    rows = await feed(world.admin, user_id=world.alice.id)
    assert {r["id"] for r in rows} == by["alice1"] | by["alice2"]
    rows = await feed(world.admin, model="test/claude")
    assert {r["id"] for r in rows} == by["bob"]
    since = (NOW - timedelta(minutes=57)).isoformat()
    until = (NOW - timedelta(minutes=54)).isoformat().replace("+00:00", "Z")
    rows = await feed(world.admin, since=since, until=until)
    assert len(rows) == 3  # minutes -57, -56, -55 (until is exclusive)
    # A member (visibility all) may filter on any key of the org.
    assert {r["id"] for r in await feed(world.bob, api_key_hash=world.keys["alice2"].hash)} == by["alice2"]


async def test_export_has_the_feed_rows_with_exact_costs_and_defused_formulas(rt, world):
    made = await seed(rt, world)
    await record(rt, world.keys["admin"], at=NOW - timedelta(minutes=1), cost=1, external_user="+cmd")
    rows = await export(world.admin)
    feed_rows = await feed(world.admin)
    assert [r["id"] for r in rows] == [r["id"] for r in feed_rows]
    assert rows[0]["cost_usd"] == "0.000000001" and rows[0]["external_user"] == "'+cmd"
    assert sum(int(r["tokens_prompt"]) for r in rows) == 10 * len(rows)
    bob_row = next(r for r in rows if made.get(r["id"]) == "bob")
    assert bob_row["api_key_name"] == "'=HYPERLINK()" and bob_row["user_email"] == world.bob.email
    assert list(rows[0]) == [
        "id", "created_at", "model", "provider", "provider_name", "endpoint_id", "tokens_prompt", "tokens_completion",
        "tokens_reasoning", "tokens_cached", "cost_usd", "latency_ms", "generation_time_ms", "finish_reason",
        "streamed", "cancelled", "usage_estimated", "api_key_hash", "api_key_name", "api_key_label", "user_id",
        "user_email", "user_name", "external_user", "app_title", "app_referer",
    ]  # fmt: skip
    filtered = await export(world.admin, api_key_hash=world.keys["bob"].hash)
    assert {r["id"] for r in filtered} == {g for g, n in made.items() if n == "bob"}


async def test_feed_and_export_show_the_providers_display_name_beside_its_slug(rt, world):
    # The name /activity and /generation show (the catalog's); the slug stays, as filters and
    # endpoint ids use it, and a provider the catalog no longer lists shows its slug for both.
    await record(rt, world.keys["alice1"], at=NOW - timedelta(minutes=2), model="demo/echo", provider="demo")
    await record(rt, world.keys["alice1"], at=NOW - timedelta(minutes=1), provider="gone")
    expected = [("gone", "gone", "test/chat@gone"), ("demo", "teamrouter demo", "demo/echo@demo")]
    shown = [(r["provider"], r["provider_name"], r["endpoint_id"]) for r in await feed(world.admin)]
    exported = [(r["provider"], r["provider_name"], r["endpoint_id"]) for r in await export(world.admin)]
    assert shown == exported == expected
    daily = (await world.admin.call("GET", "/activity")).json()["data"]
    assert {r["endpoint_id"]: r["provider_name"] for r in daily} == {e: n for _, n, e in expected}


async def test_feed_and_export_filter_by_provider_slug(rt, world):
    made = await seed(rt, world)  # every seeded row is on the provider "fake"
    demo = set()
    for minutes, name in ((1, "alice1"), (2, "bob")):
        at = NOW - timedelta(minutes=minutes)
        demo.add(await record(rt, world.keys[name], at=at, model="demo/echo", provider="demo"))
    assert {r["id"] for r in await feed(world.admin, provider="demo")} == demo
    assert {r["id"] for r in await export(world.admin, provider="demo")} == demo
    fake = {g for g, n in made.items() if n != "alice_personal"}
    assert {r["id"] for r in await feed(world.admin, provider="fake", limit=2)} == fake
    # Combined with the other filters, and with the member's own-rows scope.
    assert [r["id"] for r in await feed(world.admin, provider="demo", user_id=world.bob.id)] == [
        r["id"] for r in await export(world.admin, provider="demo", api_key_hash=world.keys["bob"].hash)
    ]
    await set_visibility(rt, world.org_id, "own")
    assert {r["provider"] for r in await feed(world.alice, provider="demo")} == {"demo"}
    assert len(await feed(world.alice, provider="demo")) == 1
    # The filter takes the slug, as analytics' does: the display name matches no row.
    assert await feed(world.admin, provider="teamrouter demo") == []


@pytest.mark.parametrize("path", ["/activity/generations", "/activity/export.csv"])
@pytest.mark.parametrize(
    ("params", "unknown"),
    [
        ({"modle": "test/chat"}, ["modle"]),
        ({"provider_name": "demo", "model": "test/chat"}, ["provider_name"]),
        ({"user": "x", "api_key": "y", "since": NOW.isoformat()}, ["api_key", "user"]),
    ],
)
async def test_unknown_query_parameters_are_a_400_naming_them_and_the_accepted_ones(rt, world, path, params, unknown):
    # Ignored, a misspelt filter would answer with every row, read as a filtered total.
    await seed(rt, world)
    error = assert_envelope(await world.admin.call("GET", path, params=params), 400, *unknown)
    accepted = ["api_key_hash", "user_id", "model", "provider", "since", "until"]
    accepted += ["cursor", "limit"] if path.endswith("generations") else []
    assert error["message"].endswith("accepted: " + ", ".join(accepted)), error
    assert error["metadata"] == {
        "code": "unknown_parameter",
        "field": unknown[0],
        "unknown": unknown,
        "accepted": accepted,
    }
    # The export has no pages: a `limit` there would have been ignored too, exporting every row.
    if path.endswith("export.csv"):
        assert_envelope(await world.admin.call("GET", path, params={"limit": 5}), 400, "'limit'")


@pytest.mark.parametrize("path", ["/activity/generations", "/activity/export.csv", "/activity"])
async def test_a_query_parameter_given_twice_is_a_400_naming_it(rt, world, path):
    # Kept to its last value, `?model=a&model=b` answered with b's rows alone, read as both models'.
    await seed(rt, world)
    alice1, bob, bob_id = world.keys["alice1"].hash, world.keys["bob"].hash, world.bob.id
    for params, repeated in (
        ([("model", "test/chat"), ("model", "test/claude")], ["model"]),
        ([("api_key_hash", alice1), ("api_key_hash", bob)], ["api_key_hash"]),
        ([("user_id", bob_id), ("user_id", bob_id)], ["user_id"]),  # even the same value
        (
            [("user_id", bob_id), ("api_key_hash", bob), ("user_id", ""), ("api_key_hash", bob)],
            ["api_key_hash", "user_id"],
        ),
    ):
        error = assert_envelope(await world.admin.call("GET", path, params=params), 400, *map(repr, repeated))
        assert error["metadata"] == {"code": "repeated_parameter", "field": repeated[0], "repeated": repeated}
    # Each once, the same filters answer as before.
    r = await world.admin.call("GET", path, params=[("api_key_hash", bob), ("user_id", world.bob.id)])
    assert r.status_code == 200, r.text


async def test_export_pages_through_more_rows_than_one_page(rt, world, monkeypatch):
    from teamrouter.domain.activity import feed as feed_module

    monkeypatch.setattr(feed_module, "EXPORT_PAGE", 3)
    for i in range(10):
        await record(rt, world.keys["bob"], at=NOW - timedelta(seconds=i), cost=7)
    rows = await export(world.admin)
    assert len(rows) == 10 and len({r["id"] for r in rows}) == 10


@pytest.mark.parametrize(
    ("params", "status", "field"),
    [
        ({"cursor": "not-a-cursor"}, 400, "cursor"),
        ({"cursor": base64.urlsafe_b64encode(b'["2025-01-01T00:00:00", "x"]').decode()}, 400, "cursor"),
        ({"cursor": base64.urlsafe_b64encode(b'{"a": 1}').decode()}, 400, "cursor"),
        ({"limit": 0}, 400, "limit"),
        ({"limit": 201}, 400, "limit"),
        ({"since": "2025-01-01T00:00:00"}, 400, "since"),
        ({"until": "yesterday"}, 400, "until"),
        ({"since": "2025-02-01T00:00:00Z", "until": "2025-01-01T00:00:00Z"}, 400, "until"),
        ({"since": "2024-01-01T00:00:00Z", "until": "2025-01-03T00:00:00Z"}, 400, "until"),
    ],
)
async def test_bad_feed_input_is_a_400_naming_the_field(rt, world, params, status, field):
    await seed(rt, world)
    paging = "cursor" in params or "limit" in params  # the export has no pages to ask for
    for path in ("/activity/generations",) if paging else ("/activity/generations", "/activity/export.csv"):
        r = await world.admin.call("GET", path, params=params)
        error = assert_envelope(r, status)
        assert field in error["message"], error


async def test_filters_on_keys_or_people_one_may_not_see_are_not_found(rt, world, make_person):
    made = await seed(rt, world)
    outsider = await make_person()
    other_org = await make_org(rt, outsider, name="Other")
    foreign = await make_key(rt, user_id=outsider.id, organization_id=other_org, role=Role.ADMIN)
    await record(rt, foreign, at=NOW - timedelta(minutes=3))
    for path in ("/activity/generations", "/activity/export.csv", "/activity"):
        r = await world.admin.call("GET", path, params={"api_key_hash": foreign.hash})
        assert_envelope(r, 404, "key not found")
        # Alice's personal key is not a key of the org context either.
        r = await world.admin.call("GET", path, params={"api_key_hash": world.keys["alice_personal"].hash})
        assert_envelope(r, 404)
        # Nor is a person outside the org, known or not: a 404 like a key's, not an empty page.
        for user_id in (outsider.id, "user_nobody"):
            assert_envelope(await world.admin.call("GET", path, params={"user_id": user_id}), 404, "user not found")
        assert (await world.admin.call("GET", path, params={"user_id": world.bob.id})).status_code == 200
    # A former member's requests stay on the org's record, and can still be filtered by.
    async with rt.db.uow() as uow:
        await uow.session.execute(
            delete(Membership).where(Membership.organization_id == world.org_id, Membership.user_id == world.bob.id)
        )
    rows = await feed(world.admin, user_id=world.bob.id)
    assert len(rows) == sum(1 for n in made.values() if n == "bob")
    await set_visibility(rt, world.org_id, "own")
    r = await world.alice.call("GET", "/activity/generations", params={"api_key_hash": world.keys["bob"].hash})
    assert_envelope(r, 404)
    r = await world.alice.call("GET", "/activity/export.csv", params={"user_id": world.bob.id})
    assert_envelope(r, 404)
    r = await world.alice.call("GET", "/activity/generations", params={"api_key_hash": world.keys["alice2"].hash})
    assert r.status_code == 200 and len(r.json()["data"]) == sum(1 for n in made.values() if n == "alice2")
    # Nothing of the other org leaks into this one's feed.
    assert foreign.hash not in str(await feed(world.admin))
    # In a personal account, the only person is its owner.
    assert_envelope(await outsider.call("GET", "/activity/generations", params={"user_id": world.bob.id}), 404)


async def test_anonymous_is_refused(client):
    for path in ("/api/v1/activity/generations", "/api/v1/activity/export.csv", "/api/v1/activity"):
        assert_envelope(await client.get(path), 401)
