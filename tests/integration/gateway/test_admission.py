"""Admission and money end to end over HTTP (TESTPLAN A1, A3, A4, A9, A12) through a real server
with two worker processes; the ledger checker runs after each test."""

from __future__ import annotations

import asyncio
import random

import httpx
import pytest
from sqlalchemy import func, select
from tests.support.gateway import add_key, funded_person, script

from teamrouter.domain.activity.models import Generation
from teamrouter.domain.credits.models import CreditAccount, Hold
from teamrouter.money import UNITS_PER_USD

pytestmark = pytest.mark.db
CENT = UNITS_PER_USD // 100


async def account(rt, account_id: str) -> CreditAccount:
    async with rt.db.read() as s:
        return await s.get_one(CreditAccount, account_id)


async def chat(client: httpx.AsyncClient, key: str, model: str, content: str = "hi", **body) -> httpx.Response:
    return await client.post(
        "/api/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": model, "messages": [{"role": "user", "content": content}], **body},
    )


def http(gateway, connections: int = 100) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=gateway.base_url,
        timeout=60,
        limits=httpx.Limits(max_connections=connections, max_keepalive_connections=connections),
    )


async def test_a1_five_hundred_concurrent_requests_never_overspend_a_one_dollar_pool(gateway, gw_rt, fake):
    who = await funded_person(gw_rt, usd="1.00")
    second = await add_key(gw_rt, who)
    fake.reset()
    async with http(gateway, 250) as client:
        responses = await asyncio.gather(
            *(chat(client, who.key if i % 2 else second, "test/cent", max_tokens=10) for i in range(500))
        )
    statuses = [r.status_code for r in responses]
    assert statuses.count(200) == 100, {s: statuses.count(s) for s in set(statuses)}
    others = [(r.status_code, r.text[:300]) for r in responses if r.status_code not in (200, 402)]
    assert statuses.count(402) == 400, others[:5]
    refused = next(r for r in responses if r.status_code == 402).json()["error"]
    assert refused["code"] == 402 and "afford" in refused["message"]
    assert len([c for c in fake.calls() if c["model"] == "fake-cent"]) == 100
    pool = await account(gw_rt, who.account_id)
    assert (pool.balance, pool.held) == (0, 0)


async def test_a3_concurrent_streams_debit_exactly_their_real_costs(gateway, gw_rt):
    who = await funded_person(gw_rt, usd="0.05")
    rng = random.Random(7)

    async def one(client: httpx.AsyncClient) -> int:
        words = rng.randint(1, 40)
        content = script(content=" ".join(f"w{i}" for i in range(words)), chunks=min(words, 8))
        async with client.stream(
            "POST",
            "/api/v1/chat/completions",
            headers={"Authorization": f"Bearer {who.key}"},
            json={
                "model": "test/chat",
                "messages": [{"role": "user", "content": content}],
                "max_tokens": 64,
                "stream": True,
            },
        ) as response:
            await response.aread()
            return response.status_code

    async with http(gateway, 200) as client:
        statuses = await asyncio.gather(*(one(client) for _ in range(200)))
    assert set(statuses) <= {200, 402} and statuses.count(200) > 0
    pool = await account(gw_rt, who.account_id)
    async with gw_rt.db.read() as s:
        billed = await s.scalar(select(func.sum(Generation.cost)).where(Generation.account_id == who.account_id))
        count = await s.scalar(
            select(func.count()).select_from(Generation).where(Generation.account_id == who.account_id)
        )
    assert count == statuses.count(200)
    assert pool.held == 0 and pool.balance >= 0
    assert 5 * CENT - pool.balance == billed
    # Nothing is stuck: a request that fits is admitted right away.
    async with http(gateway) as client:
        r = await chat(client, who.key, "test/chat", script(content="ok"), max_tokens=1)
    assert r.status_code == (200 if pool.balance >= 100_000 else 402)


async def test_a4_an_upstream_that_ignores_max_tokens_is_billed_and_then_refused(gateway, gw_rt):
    who = await funded_person(gw_rt, usd="0.001")  # 1,000,000 nano
    async with http(gateway) as client:
        statuses = []
        for _ in range(6):
            # Pinned to one endpoint so the hold is that endpoint's worst case, which the overrun triples.
            r = await chat(client, who.key, "test/chat", script(overrun=3), max_tokens=100, provider={"only": ["fake"]})
            statuses.append(r.status_code)
        pool = await account(gw_rt, who.account_id)
        async with gw_rt.db.read() as s:
            holds = (await s.scalars(select(Hold).where(Hold.account_id == who.account_id))).all()
        assert any(h.posted_amount is not None and h.posted_amount > h.amount for h in holds)
        assert pool.balance < 0 and pool.held == 0
        assert statuses[-1] == 402
        # Every later request is refused until a top-up.
        again = await chat(client, who.key, "test/chat", script(content="x"), max_tokens=1)
        assert again.status_code == 402


async def test_a9_key_limits_and_the_pool_each_stop_at_exactly_their_amount(gateway, gw_rt):
    who = await funded_person(gw_rt, usd="1.00", limit="0.30")  # key A
    key_b = await add_key(gw_rt, who)
    key_c = await add_key(gw_rt, who, limit="5")
    async with http(gateway) as client:
        a = [(await chat(client, who.key, "test/cent", max_tokens=5)).status_code for _ in range(31)]
        assert a.count(200) == 30 and a[-1] == 402
        last = await chat(client, who.key, "test/cent", max_tokens=5)
        assert last.json()["error"]["metadata"]["code"] == "key_limit_reached"
        c = [(await chat(client, key_c, "test/cent", max_tokens=5)).status_code for _ in range(71)]
        assert c.count(200) == 70 and c[-1] == 402
        b = await chat(client, key_b, "test/cent", max_tokens=5)
        assert b.status_code == 402 and b.json()["error"]["metadata"]["code"] == "insufficient_credits"
        usage = (await client.get("/api/v1/key", headers={"Authorization": f"Bearer {who.key}"})).json()["data"]
    assert usage["usage"] == pytest.approx(0.30) and usage["limit_remaining"] == 0
    pool = await account(gw_rt, who.account_id)
    assert (pool.balance, pool.held) == (0, 0)


async def test_a12_missing_or_absurd_max_tokens_holds_the_cap_and_unaffordable_is_refused(gateway, gw_rt, fake):
    # test/chat: $1/M prompt, $2/M completion, cap 1000 → a capped hold is about $0.002.
    who = await funded_person(gw_rt, usd="0.0015")
    fake.reset()
    async with http(gateway) as client:
        prompt = script(content="fits")
        refused = await chat(client, who.key, "test/chat", prompt)  # no max_tokens: holds the cap, can't afford it
        assert refused.status_code == 402
        message = refused.json()["error"]["message"]
        assert "You requested up to 1000 tokens, but can only afford" in message
        affordable = refused.json()["error"]["metadata"]["affordable_tokens"]
        assert 0 < affordable < 1000
        assert fake.calls() == []  # no upstream call
        ok = await chat(client, who.key, "test/chat", prompt, max_tokens=affordable)
        assert ok.status_code == 200
    rich = await funded_person(gw_rt, usd="10")
    async with http(gateway) as client:
        r = await chat(client, rich.key, "test/chat", script(content="x"), max_tokens=10**9)
    assert r.status_code == 200
    assert [c["max_tokens"] for c in fake.calls()][-1] == 1000  # clamped to the endpoint's cap
    pool = await account(gw_rt, rich.account_id)
    assert pool.held == 0
    poor = await funded_person(gw_rt, usd="0.000001")
    async with http(gateway) as client:
        r = await chat(client, poor.key, "test/chat", "a much longer prompt " * 50, max_tokens=1)
    assert r.status_code == 402 and r.json()["error"]["metadata"]["affordable_tokens"] == 0


async def test_a402_names_the_budget_that_set_the_hold_and_its_affordable_tokens_are_admitted(gateway, gw_rt, fake):
    # test/chat (cap 1000) with test/claude (cap 4096, pricier) as the fallback model and no
    # max_tokens: the hold is test/claude's worst case, so its cap is what was "requested".
    who = await funded_person(gw_rt, usd="0.01")
    fake.reset()
    async with http(gateway) as client:
        prompt = script(content="fits")
        refused = await chat(client, who.key, "test/chat", prompt, models=["test/claude"])
        assert refused.status_code == 402
        error = refused.json()["error"]
        assert "You requested up to 4096 tokens, but can only afford" in error["message"]
        affordable = error["metadata"]["affordable_tokens"]
        assert 0 < affordable < 1000 and fake.calls() == []
        ok = await chat(client, who.key, "test/chat", prompt, models=["test/claude"], max_tokens=affordable)
        assert ok.status_code == 200, ok.text
