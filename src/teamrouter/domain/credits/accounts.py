"""Finding the credit account of a context: a person's personal account, or an org's shared pool."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from teamrouter.domain.actor import Actor
from teamrouter.domain.credits.models import CreditAccount
from teamrouter.errors import NotFound
from teamrouter.ids import new_id
from teamrouter.storage.db import UnitOfWork
from teamrouter.storage.upsert import insert_for


async def personal_account(session: AsyncSession, user_id: str) -> CreditAccount:
    account = await session.scalar(select(CreditAccount).where(CreditAccount.user_id == user_id))
    if account is None:
        raise NotFound("Credit account not found", code="account_not_found")
    return account


async def org_account(uow: UnitOfWork, organization_id: str, now: datetime) -> CreditAccount:
    """The org's pool, created on first use (INSERT … ON CONFLICT DO NOTHING, so racing creators agree)."""
    table: Any = CreditAccount.__table__
    await uow.session.execute(
        insert_for(uow.dialect, table)
        .values(id=new_id("acct"), organization_id=organization_id, balance=0, held=0, created_at=now, updated_at=now)
        .on_conflict_do_nothing(index_elements=[table.c.organization_id])
    )
    account = await uow.session.scalar(select(CreditAccount).where(CreditAccount.organization_id == organization_id))
    assert account is not None
    return account


async def context_account_id(session: AsyncSession, actor: Actor) -> str | None:
    """The account id of the actor's current context (None: an org whose pool does not exist yet)."""
    if actor.organization_id is None:
        return (await personal_account(session, actor.user_id)).id
    found: str | None = await session.scalar(
        select(CreditAccount.id).where(CreditAccount.organization_id == actor.organization_id)
    )
    return found
