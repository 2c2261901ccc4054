"""Activity end to end: real traffic from several members and keys through a real gateway process,
then the feed, `/activity` (whose window includes today), analytics and the CSV export (served in
process over the same database) must each agree with the ledger to
the last nano-dollar, show each member what `activity_visibility` allows, and never contain the
canary sent in prompts and completions (TESTPLAN D27): not in any table, log, export or response."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import secrets
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from tests.conftest import PASSWORD
from tests.support.activity import Key, account_id_of_org, ledger_usage, make_key, set_visibility
from tests.support.gateway import script
from tests.support.keys import add_member, dump_all_tables

from teamrouter.app import create_app
from teamrouter.config import load_settings
from teamrouter.domain.accounts import service as accounts
from teamrouter.domain.actor import Actor
from teamrouter.domain.credits.ledger import EntryKind
from teamrouter.domain.credits.service import add_credits
from teamrouter.domain.keys.models import ApiKey
from teamrouter.domain.orgs import service as orgs
from teamrouter.domain.roles import Role
from teamrouter.ids import new_id
from teamrouter.money import usd_to_units
from teamrouter.runtime import Runtime, build_runtime

pytestmark = pytest.mark.db
API = "/api/v1"


@dataclass
class Who:
    id: str
    email: str


@pytest.fixture
async def reader(gw_database: str, gw_tmp: Path, passwords) -> AsyncIterator[Runtime]:
    """A runtime over the gateway's database, serving the management API in process."""
    settings = load_settings(
        {}, env="dev", database_url=gw_database, var_dir=str(gw_tmp / "reader"), secret_key="l" * 48
    )
    runtime = build_runtime(settings, passwords=passwords)
    yield runtime
    await runtime.close()


async def person(rt: Runtime, name: str) -> Who:
    user = await accounts.create_user(
        rt, email=f"{name}-{new_id('e')}@example.com", password=PASSWORD, name=name, verified=True
    )
    return Who(id=user.id, email=user.email)


async def login(app: Any, who: Who, org_id: str) -> httpx.AsyncClient:
    client = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")
    r = await client.post(f"{API}/auth/login", json={"email": who.email, "password": PASSWORD})
    assert r.status_code == 200, r.text
    client.headers["X-CSRF-Token"] = r.json()["data"]["csrf_token"]
    r = await client.put(f"{API}/me/context", json={"organization_id": org_id})
    assert r.status_code == 200, r.text
    return client


async def everything(client: httpx.AsyncClient, **params: Any) -> tuple[Decimal, list[dict[str, Any]], str]:
    """(feed total, feed rows, raw text of every response) over every page."""
    rows: list[dict[str, Any]] = []
    texts: list[str] = []
    cursor = None
    while True:
        query = {"limit": 7, **params, **({"cursor": cursor} if cursor else {})}
        r = await client.get(f"{API}/activity/generations", params=query)
        assert r.status_code == 200, r.text
        texts.append(r.text)
        rows += r.json()["data"]
        cursor = r.json()["next_cursor"]
        if cursor is None:
            return sum((Decimal(row["cost_usd"]) for row in rows), Decimal(0)), rows, "".join(texts)


async def totals(client: httpx.AsyncClient, since: datetime, **params: Any) -> tuple[dict[str, Decimal], str]:
    """Spend according to /activity, analytics and the export (USD), and the raw responses."""
    daily = await client.get(f"{API}/activity", params=params)
    assert daily.status_code == 200, daily.text
    filters = {k: v for k, v in params.items()}
    body = {
        "metrics": ["total_usage", "request_count"],
        "dimensions": ["model", "api_key", "user"],
        "granularity": "hour",
        "time_range": {"start": since.isoformat(), "end": (since + timedelta(days=2)).isoformat()},
        "filters": filters,
    }
    analytics = await client.post(f"{API}/analytics/query", json=body)
    assert analytics.status_code == 200, analytics.text
    exported = await client.get(f"{API}/activity/export.csv", params=params)
    assert exported.status_code == 200, exported.text
    lines = list(csv.DictReader(io.StringIO(exported.text)))
    result = analytics.json()["data"]
    assert sum(Decimal(r["total_usage_usd"]) for r in result["data"]) == Decimal(result["totals"]["total_usage_usd"])
    found = {
        "activity": sum((Decimal(r["usage_usd"]) for r in daily.json()["data"]), Decimal(0)),
        "analytics": Decimal(result["totals"]["total_usage_usd"]),
        "export": sum((Decimal(line["cost_usd"]) for line in lines), Decimal(0)),
        "requests_activity": Decimal(sum(r["requests"] for r in daily.json()["data"])),
        "requests_analytics": Decimal(result["totals"]["request_count"]),
        "requests_export": Decimal(len(lines)),
    }
    return found, daily.text + analytics.text + exported.text


def reply(text: str) -> str:
    """The completion text of a JSON answer or of an SSE stream (pieces may split words)."""
    if not text.startswith("data:"):
        return str(json.loads(text)["choices"][0]["message"]["content"])
    parts = []
    for line in text.splitlines():
        if line.startswith("data: {"):
            for choice in json.loads(line[6:]).get("choices", []):
                parts.append(choice.get("delta", {}).get("content") or "")
    return "".join(parts)


async def traffic(base_url: str, keys: list[Key], canary: str) -> list[str]:
    """A mix of JSON and streamed requests on three models from every key; returns generation ids."""
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as client:

        async def one(i: int, key: Key) -> str:
            model = ("test/chat", "test/cent", "test/claude")[i % 3]
            content = f"secret plan {canary}\n" + script(content=f"the answer is {canary} {i}", chunks=3)
            body: dict[str, Any] = {
                "model": model,
                "messages": [{"role": "user", "content": content}],
                "max_tokens": 50,
                "stream": i % 2 == 0,
                "user": f"customer-{i % 4}",
            }
            headers = {"Authorization": f"Bearer {key.plaintext}", "X-Title": "budget app"}
            async with client.stream("POST", f"{API}/chat/completions", json=body, headers=headers) as response:
                text = (await response.aread()).decode()
                assert response.status_code == 200, text
                assert canary in reply(text)  # the completion did carry it back to the caller
                return response.headers["x-generation-id"]

        return list(await asyncio.gather(*(one(i, key) for key in keys for i in range(6))))


async def test_totals_agree_with_the_ledger_visibility_holds_and_no_canary_anywhere(gateway, gw_rt, reader):
    admin, alice, bob = await person(gw_rt, "Ada"), await person(gw_rt, "Alice"), await person(gw_rt, "Bob")
    view = await orgs.create_organization(gw_rt, actor=Actor(user_id=admin.id, email_verified=True), name="Team")
    org_id = view.org.id
    await add_member(gw_rt, org_id, alice)
    await add_member(gw_rt, org_id, bob)
    account_id = await account_id_of_org(gw_rt, org_id)
    await add_credits(
        gw_rt, account_id=account_id, amount=usd_to_units("5"), idempotency_key=new_id("seed"), kind=EntryKind.GRANT
    )
    keys = {
        "admin": await make_key(gw_rt, user_id=admin.id, organization_id=org_id, role=Role.ADMIN, name="ops"),
        "alice1": await make_key(gw_rt, user_id=alice.id, organization_id=org_id, role=Role.MEMBER, name="a-1"),
        "alice2": await make_key(gw_rt, user_id=alice.id, organization_id=org_id, role=Role.MEMBER, name="a-2"),
        "bob": await make_key(gw_rt, user_id=bob.id, organization_id=org_id, role=Role.MEMBER, name="b"),
    }
    canary = "CANARY-" + secrets.token_hex(12)
    since = datetime.now(UTC).replace(minute=0, second=0, microsecond=0) - timedelta(hours=1)
    generation_ids = await traffic(gateway.base_url, list(keys.values()), canary)
    assert len(set(generation_ids)) == 24

    spent = await ledger_usage(gw_rt, account_id)
    assert spent > 0
    ledger_usd = Decimal(spent) / Decimal(10**9)
    async with gw_rt.db.read() as session:
        per_key = {h: u for h, u in (await session.execute(select(ApiKey.hash, ApiKey.usage))).all()}
    app = create_app(reader)
    clients = {who: await login(app, p, org_id) for who, p in (("admin", admin), ("alice", alice), ("bob", bob))}
    seen: list[str] = []
    try:
        # The admin sees all of it, and every view adds up to the ledger exactly.
        feed_total, rows, text = await everything(clients["admin"])
        seen.append(text)
        assert {row["id"] for row in rows} == set(generation_ids)
        assert feed_total == ledger_usd
        found, text = await totals(clients["admin"], since)
        seen.append(text)
        assert found == {
            "activity": ledger_usd,
            "analytics": ledger_usd,
            "export": ledger_usd,
            "requests_activity": 24,
            "requests_analytics": 24,
            "requests_export": 24,
        }
        # Per key, the filtered views match the key's own usage counter.
        for key in keys.values():
            key_usd = Decimal(per_key[key.hash]) / Decimal(10**9)
            total, rows, _ = await everything(clients["admin"], api_key_hash=key.hash)
            assert total == key_usd and len(rows) == 6
            found, _ = await totals(clients["admin"], since, api_key_hash=key.hash)
            assert {found["activity"], found["analytics"], found["export"]} == {key_usd}
        alice_usd = sum((Decimal(per_key[keys[k].hash]) for k in ("alice1", "alice2")), Decimal(0)) / 10**9

        # Members: everyone's activity with "all"; only their own with "own".
        total, _, _ = await everything(clients["bob"])
        assert total == ledger_usd
        await set_visibility(gw_rt, org_id, "own")
        total, rows, text = await everything(clients["alice"])
        seen.append(text)
        assert total == alice_usd and {row["key_creator"]["id"] for row in rows} == {alice.id}
        found, text = await totals(clients["alice"], since)
        seen.append(text)
        assert {found["activity"], found["analytics"], found["export"]} == {alice_usd}
        r = await clients["alice"].get(f"{API}/activity/generations", params={"api_key_hash": keys["bob"].hash})
        assert r.status_code == 404
        total, _, _ = await everything(clients["admin"])
        assert total == ledger_usd

        for gid in generation_ids[:6]:
            r = await clients["admin"].get(f"{API}/generation", params={"id": gid})
            assert r.status_code == 200
            seen.append(r.text)
    finally:
        for client in clients.values():
            await client.aclose()

    # D27: the canary reached the upstream and came back, yet teamrouter kept it nowhere.
    responses = "\n".join(seen)
    assert canary not in responses
    assert "budget app" in responses or "customer-" in responses  # the metadata itself is there
    assert canary not in await dump_all_tables(gw_rt)
    assert canary not in gateway.log()
    assert canary not in json.dumps(rows)
