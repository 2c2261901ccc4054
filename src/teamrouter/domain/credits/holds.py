"""Two-phase holds: reserve the worst case, then settle the real cost, void, or expire. Exactly once.

SQL semantics (the gateway's hot path re-implements them with raw SQL on the same tables). `:day`,
`:week`, `:month` are the current window starts (00:00 UTC; weeks on Monday), see `windows`.

reserve(account A, amount N, key K?, idempotency key I):
    SELECT * FROM credit_hold WHERE idempotency_key = :I      -- replay: same request -> that hold
    UPDATE api_key SET held = held + :N WHERE id = :K AND (spend_limit IS NULL OR
        spend_limit - held - CASE limit_reset
            WHEN 'daily'   THEN CASE WHEN day_start   >= :day   THEN usage_day   ELSE 0 END
            WHEN 'weekly'  THEN CASE WHEN week_start  >= :week  THEN usage_week  ELSE 0 END
            WHEN 'monthly' THEN CASE WHEN month_start >= :month THEN usage_month ELSE 0 END
            ELSE usage END >= :N)
        rowcount 0 -> 402 key_limit_reached (the whole transaction rolls back)
    UPDATE credit_account SET held = held + :N WHERE id = :A AND balance - held >= :N
        rowcount 0 -> 402 insufficient_credits (rolls back the key's hold too)
    INSERT INTO credit_hold (..., status = 'open', expires_at = now + ttl)
    Both guards run in ONE transaction: on PostgreSQL each UPDATE re-checks its WHERE after waiting
    for a concurrent writer's row lock; on SQLite the transaction began with BEGIN IMMEDIATE.
    Lock order everywhere: credit_hold, then api_key, then credit_account, then usage_rollup (no
    deadlock cycles). The gateway's PostgreSQL store takes them in the same order.

settle(hold H, actual C):
    UPDATE credit_hold SET status = 'posted', posted_amount = :C, resolved_at = :now
        WHERE id = :H AND status = 'open' RETURNING account_id, key_id, amount
        no row: already resolved -> no-op, except a hold the sweeper expired whose cost was never
        posted (`status = 'expired' AND posted_amount IS NULL`, guarded the same way): the usage is
        still billed (late settlement) but nothing is released twice.
    UPDATE api_key SET held = held - amount WHERE id = key_id
    UPDATE credit_account SET held = held - amount WHERE id = account_id
    post_entry(account_id, -C, 'usage', idempotency_key = 'hold:<H>:usage')   -- see ledger
    UPDATE api_key SET usage = usage + :C,
        usage_day = CASE WHEN day_start >= :day THEN usage_day + :C ELSE :C END,  -- windows only move forward
        day_start = CASE WHEN day_start > :day THEN day_start ELSE :day END,
        (same for week and month)
        WHERE id = key_id
    An overrun (C > amount) is posted in full: the only way a balance goes below zero.

void(H) / expire: UPDATE credit_hold SET status = 'voided' | 'expired', resolved_at = :now
    WHERE id = :H AND status = 'open' [AND expires_at <= :now] RETURNING ..., then release as above.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import ColumnElement, case, func, literal_column, or_, select, update
from sqlalchemy.exc import IntegrityError

from teamrouter.domain.credits.ledger import EntryKind, fingerprint, post_entry
from teamrouter.domain.credits.models import CreditAccount, Hold
from teamrouter.domain.credits.windows import DAILY, MONTHLY, WEEKLY, WindowStarts, window_starts
from teamrouter.domain.keys.models import ApiKey
from teamrouter.errors import Conflict, KeyLimitReached, NotFound, PaymentRequired
from teamrouter.ids import new_id
from teamrouter.money import to_usd, to_usd_text
from teamrouter.runtime import Runtime
from teamrouter.storage.db import UnitOfWork

NO_SYNC = {"synchronize_session": False}


class HoldStatus(StrEnum):
    OPEN = "open"
    POSTED = "posted"
    VOIDED = "voided"
    EXPIRED = "expired"


FINAL_STATUSES = frozenset({HoldStatus.POSTED, HoldStatus.VOIDED, HoldStatus.EXPIRED})


@dataclass(frozen=True, slots=True)
class Resolution:
    """What a settle / void call did. `applied` is True only for the one call that resolved (or,
    for a late settlement of an expired hold, billed) the hold."""

    hold_id: str
    status: HoldStatus
    applied: bool
    posted_amount: int | None


def usage_entry_key(hold_id: str) -> str:
    return f"hold:{hold_id}:usage"


def window_spend_sql(starts: WindowStarts) -> ColumnElement[Any]:
    """The key's spend in its current limit window, as SQL (mirror of `windows.key_window_spend`)."""
    return case(
        (ApiKey.limit_reset == DAILY, case((ApiKey.day_start >= starts.day, ApiKey.usage_day), else_=0)),
        (ApiKey.limit_reset == WEEKLY, case((ApiKey.week_start >= starts.week, ApiKey.usage_week), else_=0)),
        (
            ApiKey.limit_reset == MONTHLY,
            case((ApiKey.month_start >= starts.month, ApiKey.usage_month), else_=0),
        ),
        else_=ApiKey.usage,
    )


async def reserve(
    rt: Runtime,
    *,
    account_id: str,
    amount: int,
    idempotency_key: str,
    key_id: str | None = None,
    ttl: timedelta | None = None,
    generation_id: str | None = None,
) -> Hold:
    """Hold `amount` against the account (and the key's limit). 402 when either cannot cover it."""
    if isinstance(amount, bool) or not isinstance(amount, int) or amount < 0:
        raise ValueError("a hold is a non-negative integer amount")
    now = rt.clock.now()
    expires_at = now + (ttl if ttl is not None else timedelta(seconds=rt.settings.hold_ttl_seconds))
    try:
        async with rt.db.uow() as uow:
            existing = await _hold_by_key(uow, idempotency_key)
            if existing is not None:
                return _replayed(existing, account_id, amount, key_id)
            if key_id is not None:
                try:
                    await _hold_key(uow, key_id, amount, window_starts(now))
                except KeyLimitReached:
                    # Both refusing: the empty pool is the reason to report (as the gateway does).
                    await _hold_account(uow, account_id, amount)
                    raise
            await _hold_account(uow, account_id, amount)
            hold = Hold(
                id=new_id("hold"),
                account_id=account_id,
                key_id=key_id,
                amount=amount,
                status=HoldStatus.OPEN.value,
                idempotency_key=idempotency_key,
                generation_id=generation_id,
                created_at=now,
                expires_at=expires_at,
            )
            uow.session.add(hold)
    except IntegrityError:
        # A concurrent reserve with the same idempotency key committed first (PostgreSQL).
        async with rt.db.uow() as uow:
            existing = await _hold_by_key(uow, idempotency_key)
            if existing is None:
                raise
            return _replayed(existing, account_id, amount, key_id)
    return hold


async def _hold_by_key(uow: UnitOfWork, idempotency_key: str) -> Hold | None:
    found: Hold | None = await uow.session.scalar(select(Hold).where(Hold.idempotency_key == idempotency_key))
    return found


def _replayed(hold: Hold, account_id: str, amount: int, key_id: str | None) -> Hold:
    if (hold.account_id, hold.amount, hold.key_id) != (account_id, amount, key_id):
        raise Conflict("This idempotency key was already used for a different hold", code="idempotency_key_reused")
    return hold


async def _hold_account(uow: UnitOfWork, account_id: str, amount: int) -> None:
    result: Any = await uow.session.execute(
        update(CreditAccount)
        .where(CreditAccount.id == account_id, CreditAccount.balance - CreditAccount.held >= amount)
        .values(held=CreditAccount.held + amount)
        .execution_options(**NO_SYNC)
    )
    if result.rowcount == 1:
        return
    row = (
        await uow.session.execute(
            select(CreditAccount.balance, CreditAccount.held).where(CreditAccount.id == account_id)
        )
    ).first()
    if row is None:
        raise NotFound("Credit account not found", code="account_not_found")
    available = int(row.balance) - int(row.held)
    raise PaymentRequired(
        f"Insufficient credits: {to_usd_text(max(available, 0))} available, {to_usd_text(amount)} needed",
        available=to_usd(available),
        required=to_usd(amount),
    )


async def _hold_key(uow: UnitOfWork, key_id: str, amount: int, starts: WindowStarts) -> None:
    result: Any = await uow.session.execute(
        update(ApiKey)
        .where(
            ApiKey.id == key_id,
            or_(
                ApiKey.spend_limit.is_(None),
                ApiKey.spend_limit - ApiKey.held - window_spend_sql(starts) >= amount,
            ),
        )
        .values(held=ApiKey.held + amount)
        .execution_options(**NO_SYNC)
    )
    if result.rowcount == 1:
        return
    row = (
        await uow.session.execute(
            select(ApiKey.spend_limit, ApiKey.held, window_spend_sql(starts).label("spent")).where(ApiKey.id == key_id)
        )
    ).first()
    if row is None:
        raise NotFound("API key not found", code="key_not_found")
    remaining = max(0, int(row.spend_limit or 0) - int(row.held) - int(row.spent))
    raise KeyLimitReached(
        f"Key limit reached: {to_usd_text(remaining)} left in this window, {to_usd_text(amount)} needed",
        limit_remaining=to_usd(remaining),
        required=to_usd(amount),
    )


async def _release(uow: UnitOfWork, *, account_id: str, key_id: str | None, amount: int, now: datetime) -> None:
    if key_id is not None:
        await uow.session.execute(
            update(ApiKey).where(ApiKey.id == key_id).values(held=ApiKey.held - amount).execution_options(**NO_SYNC)
        )
    await uow.session.execute(
        update(CreditAccount)
        .where(CreditAccount.id == account_id)
        .values(held=CreditAccount.held - amount, updated_at=now)
        .execution_options(**NO_SYNC)
    )


async def _count_usage(uow: UnitOfWork, *, key_id: str, actual: int, now: datetime) -> None:
    """Add spend to the key's counters, rolling stale windows over (SET sees the old row values).
    Windows only move forward: spend from a window that has already ended counts in the current one
    (as the gateway's store does, `gateway.store.sql.settle_key_set`)."""
    s = window_starts(now)
    values: dict[str, Any] = {"usage": ApiKey.usage + actual}
    for usage, start, current in (
        (ApiKey.usage_day, ApiKey.day_start, s.day),
        (ApiKey.usage_week, ApiKey.week_start, s.week),
        (ApiKey.usage_month, ApiKey.month_start, s.month),
    ):
        values[usage.key] = case((start >= current, usage + actual), else_=actual)
        values[start.key] = case((start > current, start), else_=current)
    await uow.session.execute(update(ApiKey).where(ApiKey.id == key_id).values(**values).execution_options(**NO_SYNC))


async def _bill(
    uow: UnitOfWork,
    *,
    hold_id: str,
    account_id: str,
    key_id: str | None,
    actual: int,
    generation_id: str | None,
    now: datetime,
) -> None:
    if actual == 0:
        return  # nothing to bill (zero completion insurance, or a free model)
    await post_entry(
        uow,
        account_id=account_id,
        amount=-actual,
        kind=EntryKind.USAGE,
        idempotency_key=usage_entry_key(hold_id),
        request_fingerprint=fingerprint(hold_id, actual),
        now=now,
        hold_id=hold_id,
        generation_id=generation_id,
    )
    if key_id is not None:
        await _count_usage(uow, key_id=key_id, actual=actual, now=now)


async def settle(rt: Runtime, *, hold_id: str, actual: int, generation_id: str | None = None) -> Resolution:
    """Post the real cost and release the hold. A second settle (or one after a void) is a no-op."""
    if isinstance(actual, bool) or not isinstance(actual, int) or actual < 0:
        raise ValueError("a settlement is a non-negative integer amount")
    now = rt.clock.now()
    async with rt.db.uow() as uow:
        values: dict[str, Any] = {"status": HoldStatus.POSTED.value, "posted_amount": actual, "resolved_at": now}
        if generation_id is not None:
            values["generation_id"] = generation_id
        row = (
            await uow.session.execute(
                update(Hold)
                .where(Hold.id == hold_id, Hold.status == HoldStatus.OPEN.value)
                .values(**values)
                .returning(Hold.account_id, Hold.key_id, Hold.amount, Hold.generation_id)
                .execution_options(**NO_SYNC)
            )
        ).first()
        if row is not None:
            await _release(uow, account_id=row.account_id, key_id=row.key_id, amount=int(row.amount), now=now)
            await _bill(
                uow,
                hold_id=hold_id,
                account_id=row.account_id,
                key_id=row.key_id,
                actual=actual,
                generation_id=row.generation_id,
                now=now,
            )
            return Resolution(hold_id, HoldStatus.POSTED, True, actual)
        return await _late_or_noop(uow, hold_id=hold_id, actual=actual, generation_id=generation_id, now=now)


async def _late_or_noop(
    uow: UnitOfWork, *, hold_id: str, actual: int, generation_id: str | None, now: datetime
) -> Resolution:
    values: dict[str, Any] = {"posted_amount": actual}
    if generation_id is not None:
        values["generation_id"] = generation_id
    late = (
        await uow.session.execute(
            update(Hold)
            .where(Hold.id == hold_id, Hold.status == HoldStatus.EXPIRED.value, Hold.posted_amount.is_(None))
            .values(**values)
            .returning(Hold.account_id, Hold.key_id, Hold.generation_id)
            .execution_options(**NO_SYNC)
        )
    ).first()
    if late is not None:
        # The request outlived its hold's TTL (or its worker was presumed dead): the sweeper already
        # released the reservation, but the work was done, so it is still billed, once.
        await _bill(
            uow,
            hold_id=hold_id,
            account_id=late.account_id,
            key_id=late.key_id,
            actual=actual,
            generation_id=late.generation_id,
            now=now,
        )
        return Resolution(hold_id, HoldStatus.EXPIRED, True, actual)
    current = (await uow.session.execute(select(Hold.status, Hold.posted_amount).where(Hold.id == hold_id))).first()
    if current is None:
        raise NotFound("Hold not found", code="hold_not_found")
    return Resolution(hold_id, HoldStatus(current.status), False, current.posted_amount)


async def _finish(uow: UnitOfWork, *, hold_id: str, status: HoldStatus, now: datetime) -> bool:
    """Move an open hold to a final state and release it; False if it was not open."""
    statement = update(Hold).where(Hold.id == hold_id, Hold.status == HoldStatus.OPEN.value)
    row = (
        await uow.session.execute(
            statement.values(status=status.value, resolved_at=now)
            .returning(Hold.account_id, Hold.key_id, Hold.amount)
            .execution_options(**NO_SYNC)
        )
    ).first()
    if row is None:
        return False
    await _release(uow, account_id=row.account_id, key_id=row.key_id, amount=int(row.amount), now=now)
    return True


async def void(rt: Runtime, *, hold_id: str) -> Resolution:
    """Release a hold without billing (the upstream failed before any output). Exactly once."""
    now = rt.clock.now()
    async with rt.db.uow() as uow:
        if await _finish(uow, hold_id=hold_id, status=HoldStatus.VOIDED, now=now):
            return Resolution(hold_id, HoldStatus.VOIDED, True, None)
        current = (await uow.session.execute(select(Hold.status, Hold.posted_amount).where(Hold.id == hold_id))).first()
    if current is None:
        raise NotFound("Hold not found", code="hold_not_found")
    return Resolution(hold_id, HoldStatus(current.status), False, current.posted_amount)


async def expire_holds(rt: Runtime, *, now: datetime | None = None, batch: int = 500) -> int:
    """The sweeper: open holds past `expires_at` become expired and are released. Returns how many.

    One transaction per batch:
        SELECT id FROM credit_hold WHERE status = 'open' AND expires_at <= :now
            ORDER BY expires_at LIMIT :batch FOR UPDATE SKIP LOCKED     -- PostgreSQL; SQLite ignores it
        UPDATE credit_hold SET status = 'expired', resolved_at = :now
            WHERE id IN (...) AND status = 'open' RETURNING account_id, key_id, amount
        then one `held = held - sum` per key, then per account, each in id order.
    SKIP LOCKED leaves holds a settle/void is resolving right now to that settle/void, and lets
    sweepers in several processes split the work; the lock order (holds, keys, accounts) is the
    one every other verb uses, so the sweeper cannot deadlock with them.
    """
    now = now or rt.clock.now()
    expired = 0
    while True:
        async with rt.db.uow() as uow:
            due = list(
                await uow.session.scalars(
                    select(Hold.id)
                    # A literal, not a parameter: PostgreSQL can use the partial open-holds index
                    # only when the query itself says status = 'open' (a generic plan could not).
                    .where(Hold.status == literal_column("'open'"), Hold.expires_at <= now)
                    .order_by(Hold.expires_at, Hold.id)
                    .limit(batch)
                    .with_for_update(skip_locked=True)
                )
            )
            if not due:
                return expired
            rows = (
                await uow.session.execute(
                    update(Hold)
                    .where(Hold.id.in_(due), Hold.status == HoldStatus.OPEN.value)
                    .values(status=HoldStatus.EXPIRED.value, resolved_at=now)
                    .returning(Hold.account_id, Hold.key_id, Hold.amount)
                    .execution_options(**NO_SYNC)
                )
            ).all()
            by_account: dict[str, int] = defaultdict(int)
            by_key: dict[str, int] = defaultdict(int)
            for row in rows:
                by_account[row.account_id] += int(row.amount)
                if row.key_id is not None:
                    by_key[row.key_id] += int(row.amount)
            for key_id in sorted(by_key):
                await uow.session.execute(
                    update(ApiKey)
                    .where(ApiKey.id == key_id)
                    .values(held=ApiKey.held - by_key[key_id])
                    .execution_options(**NO_SYNC)
                )
            for account_id in sorted(by_account):
                await uow.session.execute(
                    update(CreditAccount)
                    .where(CreditAccount.id == account_id)
                    .values(held=CreditAccount.held - by_account[account_id], updated_at=now)
                    .execution_options(**NO_SYNC)
                )
            expired += len(rows)
        if len(due) < batch:
            return expired


async def open_held(rt: Runtime, *, account_id: str) -> int:
    """Sum of open holds on an account (what `credit_account.held` must equal)."""
    async with rt.db.read() as session:
        total = await session.scalar(
            select(func.coalesce(func.sum(Hold.amount), 0)).where(
                Hold.account_id == account_id, Hold.status == HoldStatus.OPEN.value
            )
        )
    return int(total or 0)
