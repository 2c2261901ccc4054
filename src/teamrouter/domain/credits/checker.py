"""The ledger checker (TESTPLAN I1–I6): recompute everything from the entries and holds, report mismatches.

Run after every money test and by `teamrouter db check-ledger`. Returns a list of problems in words
(empty = green). It only reads, so it is safe on a live database, though a check racing live traffic
may see a settlement half-way between two of its queries; run it quiesced for a verdict.

    I1  available (balance - held) >= 0, unless overruns (settled beyond their hold, or billed late
        after the sweeper expired the hold) explain the deficit
    I2  each account's cached balance == the sum of its entries
    I3  each hold is in exactly one final state (or open), consistently stamped; account.held and
        key.held == the sum of their open holds
    I4  at most one usage entry per hold and per generation, and it matches the hold's posted amount
    I5  per key: lifetime usage counter == its usage entries; window spend <= limit (overruns excluded)
    I6  every generation with a cost has exactly one matching usage entry, and vice versa
"""

from __future__ import annotations

from collections import defaultdict
from datetime import UTC, datetime, time
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncSession

from teamrouter.domain.activity.models import Generation
from teamrouter.domain.credits.holds import HoldStatus
from teamrouter.domain.credits.ledger import EntryKind
from teamrouter.domain.credits.models import CreditAccount, Hold, LedgerEntry
from teamrouter.domain.credits.windows import DAILY, MONTHLY, WEEKLY, key_window_spend, window_starts
from teamrouter.domain.keys.models import ApiKey
from teamrouter.runtime import Runtime

ALL_INVARIANTS = frozenset({"I1", "I2", "I3", "I4", "I5", "I6"})


async def check_ledger(
    target: Runtime | AsyncSession,
    *,
    now: datetime | None = None,
    invariants: frozenset[str] = ALL_INVARIANTS,
) -> list[str]:
    """Problems found (empty list = all invariants hold). `invariants` narrows what is checked
    (I5's window check is meaningless right after someone lowered a key's limit below its spend)."""
    if isinstance(target, AsyncSession):
        return await _check(target, now or datetime.now(UTC), invariants)
    async with target.db.read() as session:
        return await _check(session, now or target.clock.now(), invariants)


async def _check(session: AsyncSession, now: datetime, invariants: frozenset[str]) -> list[str]:
    problems: list[str] = []
    accounts = list(await session.scalars(select(CreditAccount)))
    holds = list(await session.scalars(select(Hold)))
    usage = list(await session.scalars(select(LedgerEntry).where(LedgerEntry.kind == EntryKind.USAGE.value)))
    sums: dict[str, int] = {
        account_id: int(total)
        for account_id, total in (
            await session.execute(
                select(LedgerEntry.account_id, func.sum(LedgerEntry.amount)).group_by(LedgerEntry.account_id)
            )
        ).all()
    }
    usage_by_hold: dict[str, list[LedgerEntry]] = defaultdict(list)
    for entry in usage:
        if entry.hold_id is not None:
            usage_by_hold[entry.hold_id].append(entry)
    overrun_by_account: dict[str, int] = defaultdict(int)
    for hold in holds:
        overrun_by_account[hold.account_id] += _overrun(hold)

    for account in accounts:
        if "I2" in invariants and account.balance != sums.get(account.id, 0):
            problems.append(
                f"I2 account {account.id}: cached balance {account.balance} != sum of entries {sums.get(account.id, 0)}"
            )
        deficit = account.held - account.balance
        if "I1" in invariants and deficit > overrun_by_account[account.id]:
            problems.append(
                f"I1 account {account.id}: available {-deficit} is below zero by more than its "
                f"overruns ({overrun_by_account[account.id]})"
            )
    if "I3" in invariants:
        problems += _check_holds(accounts, holds)
        problems += await _check_key_held(session, holds)
    if "I4" in invariants:
        problems += _check_settlements(holds, usage, usage_by_hold)
    if "I5" in invariants:
        problems += await _check_keys(session, holds, usage_by_hold, now)
    if "I6" in invariants:
        problems += await _check_generations(session, usage)
    return problems


def _overrun(hold: Hold) -> int:
    """What a hold billed beyond what it had reserved (the only legitimate way below zero)."""
    if hold.posted_amount is None:
        return 0
    if hold.status == HoldStatus.POSTED:
        return max(0, hold.posted_amount - hold.amount)
    if hold.status == HoldStatus.EXPIRED:
        return hold.posted_amount  # billed after the sweeper released the reservation
    return 0


def _check_holds(accounts: list[CreditAccount], holds: list[Hold]) -> list[str]:
    problems: list[str] = []
    open_by_account: dict[str, int] = defaultdict(int)
    statuses = {s.value for s in HoldStatus}
    for hold in holds:
        if hold.status not in statuses:
            problems.append(f"I3 hold {hold.id}: unknown status {hold.status!r}")
            continue
        if hold.status == HoldStatus.OPEN:
            open_by_account[hold.account_id] += hold.amount
            if hold.resolved_at is not None or hold.posted_amount is not None:
                problems.append(f"I3 hold {hold.id}: open but stamped as resolved")
        elif hold.resolved_at is None:
            problems.append(f"I3 hold {hold.id}: {hold.status} without resolved_at")
        if hold.status == HoldStatus.POSTED and hold.posted_amount is None:
            problems.append(f"I3 hold {hold.id}: posted without a posted amount")
        if hold.status == HoldStatus.VOIDED and hold.posted_amount is not None:
            problems.append(f"I3 hold {hold.id}: voided yet billed")
    for account in accounts:
        if account.held != open_by_account.get(account.id, 0):
            problems.append(
                f"I3 account {account.id}: held {account.held} != open holds {open_by_account.get(account.id, 0)}"
            )
    return problems


async def _check_key_held(session: AsyncSession, holds: list[Hold]) -> list[str]:
    open_by_key: dict[str, int] = defaultdict(int)
    for hold in holds:
        if hold.status == HoldStatus.OPEN and hold.key_id is not None:
            open_by_key[hold.key_id] += hold.amount
    problems = []
    for key_id, held in (await session.execute(select(ApiKey.id, ApiKey.held))).all():
        if held != open_by_key.get(key_id, 0):
            problems.append(f"I3 key {key_id}: held {held} != open holds {open_by_key.get(key_id, 0)}")
    return problems


def _check_settlements(
    holds: list[Hold], usage: list[LedgerEntry], usage_by_hold: dict[str, list[LedgerEntry]]
) -> list[str]:
    problems: list[str] = []
    by_generation: dict[str, int] = defaultdict(int)
    for entry in usage:
        if entry.generation_id is not None:
            by_generation[entry.generation_id] += 1
    problems += [f"I4 generation {g}: {n} usage entries" for g, n in by_generation.items() if n > 1]
    known = {hold.id for hold in holds}
    for hold_id, entries in usage_by_hold.items():
        if len(entries) > 1:
            problems.append(f"I4 hold {hold_id}: {len(entries)} usage entries")
        if hold_id not in known:
            problems.append(f"I4 usage entry {entries[0].id} names unknown hold {hold_id}")
    for hold in holds:
        billed = sum(-e.amount for e in usage_by_hold.get(hold.id, []))
        expected = hold.posted_amount or 0
        if billed != expected:
            problems.append(f"I4 hold {hold.id} ({hold.status}): posted {expected} but billed {billed}")
    return problems


def _window_start(reset: str | None, now: datetime) -> datetime | None:
    starts = window_starts(now)
    day = {DAILY: starts.day, WEEKLY: starts.week, MONTHLY: starts.month}.get(reset or "")
    return datetime.combine(day, time(), tzinfo=UTC) if day is not None else None


async def _check_keys(
    session: AsyncSession, holds: list[Hold], usage_by_hold: dict[str, list[LedgerEntry]], now: datetime
) -> list[str]:
    problems: list[str] = []
    holds_by_key: dict[str, list[Hold]] = defaultdict(list)
    for hold in holds:
        if hold.key_id is not None:
            holds_by_key[hold.key_id].append(hold)
    for key in await session.scalars(select(ApiKey)):
        entries = [(h, e) for h in holds_by_key.get(key.id, []) for e in usage_by_hold.get(h.id, [])]
        billed = sum(-e.amount for _, e in entries)
        if key.usage != billed:
            problems.append(f"I5 key {key.id}: usage counter {key.usage} != its usage entries {billed}")
        if key.spend_limit is None:
            continue
        start = _window_start(key.limit_reset, now)
        overrun = sum(_overrun(h) for h, e in entries if start is None or e.created_at >= start)
        spend = key_window_spend(key, now)
        if spend - overrun > key.spend_limit:
            problems.append(
                f"I5 key {key.id}: window spend {spend} (overruns {overrun}) exceeds its limit {key.spend_limit}"
            )
    return problems


async def _check_generations(session: AsyncSession, usage: list[LedgerEntry]) -> list[str]:
    problems: list[str] = []
    costs: dict[str, Any] = {
        gen_id: int(cost) for gen_id, cost in (await session.execute(select(Generation.id, Generation.cost))).all()
    }
    if not costs:
        return problems
    billed: dict[str, int] = {e.generation_id: -e.amount for e in usage if e.generation_id is not None}
    for gen_id, cost in costs.items():
        if cost > 0 and billed.get(gen_id) != cost:
            problems.append(f"I6 generation {gen_id}: cost {cost} but billed {billed.get(gen_id)}")
    for gen_id, amount in billed.items():
        if gen_id not in costs:
            problems.append(f"I6 usage entry for generation {gen_id} has no generation row")
        elif costs[gen_id] != amount:
            problems.append(f"I6 generation {gen_id}: billed {amount} != cost {costs[gen_id]}")
    return problems
