"""Concurrency at the ledger level: A1/A2 across worker processes, A6 hold races (SQLite and PostgreSQL)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

from sqlalchemy import func, select, text
from tests.support.credits import balance, check_ledger, key_row, make_key, make_user_account, top_up
from tests.support.multiproc import run_reserve_workers

from teamrouter.domain.credits import holds
from teamrouter.domain.credits.models import Hold, LedgerEntry
from teamrouter.ids import new_id
from teamrouter.money import usd_to_units

CENT = usd_to_units("0.01")
DOLLAR = usd_to_units(1)
RACES = 1000
BATCH = 250


async def test_a1_a2_500_reserves_from_4_processes_against_one_dollar(rt, database_url):
    user, account = await make_user_account(rt)
    keys = [await make_key(rt, account_id=account, creator_user_id=user) for _ in range(2)]
    await top_up(rt, account, DOLLAR)

    results = await asyncio.to_thread(
        run_reserve_workers,
        database_url=database_url,
        account_id=account,
        key_ids=keys,
        amount=CENT,
        total=500,
        processes=4,
    )

    errors = [e for r in results for e in r["errors"]]
    assert errors == []  # no "database is locked", no deadlock, no serialization failure
    assert sum(r["ok"] for r in results) == 100
    assert sum(r["refused"] for r in results) == 400
    assert sum(r["settled"] for r in results) == 100
    # The processes really raced: money went to more than one of them. (Not to every one: on a fast
    # machine the first processes can drain the $1 before a fourth wins its first lock; fairness
    # between processes is no part of A1/A2, exactness is.)
    assert sum(r["ok"] > 0 for r in results) >= 2, results
    assert await balance(rt, account) == (0, 0)  # debited exactly $1.00, nothing left held
    usage = [await key_row(rt, k) for k in keys]
    assert sum(k.usage for k in usage) == DOLLAR and all(k.held == 0 for k in usage)
    async with rt.db.read() as s:
        debits = await s.scalar(
            select(func.sum(LedgerEntry.amount)).where(LedgerEntry.account_id == account, LedgerEntry.kind == "usage")
        )
        assert debits == -DOLLAR
        if rt.db.is_sqlite:
            assert (await s.execute(text("PRAGMA integrity_check"))).scalar() == "ok"
    await check_ledger(rt)


async def _open_holds(rt, account: str, key: str, count: int) -> list[str]:
    """`count` open holds of 1 cent, made the way reserve makes them but in one transaction (setup)."""
    now = rt.clock.now()
    ids = [new_id("hold") for _ in range(count)]
    async with rt.db.uow() as uow:
        for hold_id in ids:
            uow.session.add(
                Hold(
                    id=hold_id,
                    account_id=account,
                    key_id=key,
                    amount=CENT,
                    status="open",
                    idempotency_key=hold_id,
                    created_at=now,
                    expires_at=now + timedelta(seconds=30),
                )
            )
        await uow.session.execute(
            text("UPDATE credit_account SET held = held + :n WHERE id = :a"), {"n": CENT * count, "a": account}
        )
        await uow.session.execute(
            text("UPDATE api_key SET held = held + :n WHERE id = :k"), {"n": CENT * count, "k": key}
        )
    return ids


async def test_a6_settle_void_and_sweeper_race_resolves_each_hold_exactly_once(rt):
    user, account = await make_user_account(rt)
    key = await make_key(rt, account_id=account, creator_user_id=user)
    await top_up(rt, account, 100 * DOLLAR)
    later = rt.clock.now() + timedelta(minutes=5)
    applied_total = 0
    for _ in range(RACES // BATCH):
        ids = await _open_holds(rt, account, key, BATCH)
        outcomes = await asyncio.gather(
            *(holds.settle(rt, hold_id=h, actual=CENT) for h in ids),
            *(holds.void(rt, hold_id=h) for h in ids),
            holds.expire_holds(rt, now=later),  # the sweeper, racing all of them at once
        )
        settles, voids, expired = outcomes[:BATCH], outcomes[BATCH : 2 * BATCH], outcomes[-1]
        for settled, voided in zip(settles, voids, strict=True):
            # Exactly one of settle / void / sweeper resolved it; a settle that lost to the sweeper
            # still billed once (late settlement), a settle that lost to void billed nothing.
            resolved = int(settled.applied and settled.status == "posted") + int(voided.applied)
            assert resolved <= 1
        posted = sum(1 for s in settles if s.applied and s.status == "posted")
        assert posted + sum(v.applied for v in voids) + expired == BATCH
        applied_total += BATCH
    assert applied_total == RACES
    async with rt.db.read() as s:
        statuses = dict(
            (
                await s.execute(
                    select(Hold.status, func.count()).where(Hold.account_id == account).group_by(Hold.status)
                )
            ).all()
        )
        assert sum(statuses.values()) == RACES and "open" not in statuses
        billed = await s.scalar(select(func.count()).select_from(LedgerEntry).where(LedgerEntry.kind == "usage"))
        billed_holds = await s.scalar(
            select(func.count()).select_from(Hold).where(Hold.account_id == account, Hold.posted_amount.is_not(None))
        )
        assert billed == billed_holds
    spent = billed * CENT
    assert await balance(rt, account) == (100 * DOLLAR - spent, 0)
    assert (await key_row(rt, key)).held == 0 and (await key_row(rt, key)).usage == spent
    await check_ledger(rt)
