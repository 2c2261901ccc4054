"""Activity-test helpers: a small org world (admin, two members, keys in org and personal contexts)
and `record`, which writes a generation and its rollup the way the gateway's settlement does
(one row, plus an upsert into the hour's rollup), for edge cases real traffic cannot place in time."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from typing import Any

from sqlalchemy import func, select

from teamrouter.domain.activity.models import Generation, UsageRollup
from teamrouter.domain.actor import Actor
from teamrouter.domain.credits.models import CreditAccount, LedgerEntry
from teamrouter.domain.keys import service as keys
from teamrouter.domain.keys.models import ApiKey
from teamrouter.domain.orgs.models import Organization
from teamrouter.domain.roles import Role
from teamrouter.ids import new_id
from teamrouter.runtime import Runtime
from teamrouter.storage.upsert import insert_for

SUMMED = ("requests", "tokens_prompt", "tokens_completion", "tokens_reasoning", "tokens_cached", "cost")


@dataclass(frozen=True)
class Key:
    id: str
    hash: str
    plaintext: str
    account_id: str
    user_id: str
    organization_id: str | None


async def make_key(
    rt: Runtime,
    *,
    user_id: str,
    organization_id: str | None,
    role: Role | None = None,
    name: str = "key",
    management: bool = False,
) -> Key:
    """A key created through the keys service, acting as `user_id` in the given context."""
    actor = Actor(user_id=user_id, email_verified=True, organization_id=organization_id, role=role)
    created = await keys.create_key(rt, actor=actor, name=name, management=management)
    return Key(
        id=created.key.id,
        hash=created.key.hash,
        plaintext=created.plaintext,
        account_id=created.key.account_id,
        user_id=user_id,
        organization_id=organization_id,
    )


async def record(
    rt: Runtime,
    key: Key,
    *,
    at: datetime,
    model: str = "test/chat",
    provider: str = "fake",
    cost: int = 1000,
    prompt: int = 10,
    completion: int = 20,
    reasoning: int = 0,
    cached: int = 0,
    generation_id: str | None = None,
    **extra: Any,
) -> str:
    """One settled generation (metadata only) and its rollup increment, in one transaction."""
    gid = generation_id or new_id("gen")
    hour = at.replace(minute=0, second=0, microsecond=0)
    async with rt.db.uow() as uow:
        uow.session.add(
            Generation(
                id=gid,
                created_at=at,
                account_id=key.account_id,
                organization_id=key.organization_id,
                key_id=key.id,
                key_hash=key.hash,
                user_id=key.user_id,
                model=model,
                provider=provider,
                endpoint_id=f"{model}@{provider}",
                upstream_model=model.split("/")[-1],
                tokens_prompt=prompt,
                tokens_completion=completion,
                tokens_reasoning=reasoning,
                tokens_cached=cached,
                cost=cost,
                latency_ms=extra.pop("latency_ms", 120),
                generation_time_ms=extra.pop("generation_time_ms", 480),
                finish_reason=extra.pop("finish_reason", "stop"),
                **extra,
            )
        )
        table: Any = UsageRollup.__table__
        values = {
            "hour": hour,
            "account_id": key.account_id,
            "key_id": key.id,
            "user_id": key.user_id,
            "model": model,
            "provider": provider,
            "requests": 1,
            "tokens_prompt": prompt,
            "tokens_completion": completion,
            "tokens_reasoning": reasoning,
            "tokens_cached": cached,
            "cost": cost,
        }
        statement = insert_for(uow.dialect, table).values(**values)
        await uow.session.execute(
            statement.on_conflict_do_update(
                index_elements=["hour", "account_id", "key_id", "user_id", "model", "provider"],
                set_={c: table.c[c] + statement.excluded[c] for c in SUMMED},
            )
        )
    return gid


async def set_visibility(rt: Runtime, org_id: str, value: str) -> None:
    async with rt.db.uow() as uow:
        org = await uow.session.get_one(Organization, org_id)
        org.settings = {**(org.settings or {}), "activity_visibility": value}


async def ledger_usage(rt: Runtime, account_id: str) -> int:
    """What the ledger says the account spent on inference (usage entries are negative)."""
    async with rt.db.read() as session:
        total = await session.scalar(
            select(func.coalesce(func.sum(LedgerEntry.amount), 0)).where(
                LedgerEntry.account_id == account_id, LedgerEntry.kind == "usage"
            )
        )
    return -int(total or 0)


async def account_id_of_org(rt: Runtime, org_id: str) -> str:
    async with rt.db.read() as session:
        found = await session.scalar(select(CreditAccount.id).where(CreditAccount.organization_id == org_id))
    assert found is not None
    return found


async def key_row(rt: Runtime, key_hash: str) -> ApiKey:
    async with rt.db.read() as session:
        row = await session.scalar(select(ApiKey).where(ApiKey.hash == key_hash))
    assert row is not None
    return row


def usd(units: int) -> Decimal:
    return Decimal(units) / Decimal(1_000_000_000)


@dataclass
class World:
    """An org with an admin and two members, each with keys; plus each person's personal key."""

    org_id: str
    admin: Any
    alice: Any  # member
    bob: Any  # member
    keys: dict[str, Key] = field(default_factory=dict)
