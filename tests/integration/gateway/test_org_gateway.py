"""Organizations on the inference path: every member's key bills the shared pool, the admins'
provider and privacy settings tighten routing, and a removed member's keys stop working."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from sqlalchemy import select
from tests.support.gateway import make_team

from teamrouter.domain.activity.models import Generation
from teamrouter.domain.credits.models import CreditAccount
from teamrouter.domain.orgs import members
from teamrouter.domain.orgs import service as orgs
from teamrouter.domain.orgs.settings import SettingsPatch
from teamrouter.money import UNITS_PER_USD

pytestmark = pytest.mark.db


async def chat(client: httpx.AsyncClient, key: str, **body: object) -> httpx.Response:
    payload = {"model": "test/chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 10, **body}
    return await client.post("/api/v1/chat/completions", headers={"Authorization": f"Bearer {key}"}, json=payload)


async def test_member_keys_bill_the_shared_pool_and_settings_tighten_routing(gateway, gw_rt, fake):
    admin, admin_actor, org, pool, member_id, member_key = await make_team(gw_rt)
    async with httpx.AsyncClient(base_url=gateway.base_url, timeout=30) as client:
        r = await chat(client, member_key)
        assert r.status_code == 200, r.text
        async with gw_rt.db.read() as s:
            row = await s.scalar(select(Generation).where(Generation.id == r.json()["id"]))
            pool_balance = await s.scalar(select(CreditAccount.balance).where(CreditAccount.id == pool))
            personal = await s.scalar(select(CreditAccount.balance).where(CreditAccount.id == admin.account_id))
        assert row.account_id == pool and row.organization_id == org.id and row.user_id == member_id
        assert pool_balance == UNITS_PER_USD - row.cost and personal == 5 * UNITS_PER_USD

        # Admins deny providers that may retain data: "fakeb" (data_collection = allow) is out, so when
        # "fake" fails there is nothing to fall back to — even though the request allows fallbacks.
        await orgs.update_settings(
            gw_rt,
            actor=admin_actor,
            organization_id=org.id,
            patch=SettingsPatch.model_validate({"privacy": {"data_collection": "deny"}}),
        )
        fake.set_script({"status": 503}, model="fake-chat")
        try:
            deadline = time.monotonic() + 3  # the policy cache of every worker expires within its TTL
            while True:
                r = await chat(client, member_key)
                if r.status_code == 502 or time.monotonic() > deadline:
                    break
                await asyncio.sleep(0.2)
            assert r.status_code == 502, r.text
            # A request cannot loosen the org's rule by asking for the provider either.
            r = await chat(client, member_key, provider={"only": ["fakeb"]})
            assert r.status_code == 503 and "data_collection" in r.json()["error"]["message"]
        finally:
            fake.set_script(None, model="fake-chat")


async def test_a_removed_member_key_stops_working(gateway, gw_rt):
    _, admin_actor, org, _, member_id, member_key = await make_team(gw_rt)
    async with httpx.AsyncClient(base_url=gateway.base_url, timeout=30) as client:
        assert (await chat(client, member_key)).status_code == 200
        await members.remove_member(gw_rt, actor=admin_actor, organization_id=org.id, user_id=member_id)
        deadline = time.monotonic() + 3
        while (await chat(client, member_key)).status_code != 401 and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        assert (await chat(client, member_key)).status_code == 401
