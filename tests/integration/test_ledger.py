"""The ledger core and holds at the service level: idempotency, guards, windows, integer money (A8)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import BigInteger, Float, Integer, Numeric, func, select
from tests.support.credits import (
    balance,
    check_ledger,
    key_row,
    make_key,
    make_user_account,
    set_key_limit,
    top_up,
)

from teamrouter.clock import FrozenClock
from teamrouter.domain.credits import holds
from teamrouter.domain.credits.ledger import EntryKind, post_entry
from teamrouter.domain.credits.models import CreditAccount, Hold, LedgerEntry, Payment
from teamrouter.domain.credits.windows import key_usage, key_window_spend, limit_remaining
from teamrouter.domain.keys.models import ApiKey
from teamrouter.errors import Conflict, KeyLimitReached, NotFound, PaymentRequired
from teamrouter.money import usd_to_units
from teamrouter.storage.models import metadata

CENT = usd_to_units("0.01")
DOLLAR = usd_to_units(1)


async def entries(rt, account_id: str) -> list[LedgerEntry]:
    async with rt.db.read() as s:
        return list(await s.scalars(select(LedgerEntry).where(LedgerEntry.account_id == account_id)))


async def test_post_entry_is_idempotent_and_refuses_a_different_body(rt):
    _, account = await make_user_account(rt)
    now = rt.clock.now()
    async with rt.db.uow() as uow:
        first = await post_entry(
            uow, account_id=account, amount=5 * DOLLAR, kind=EntryKind.GRANT, idempotency_key="k1", now=now
        )
    async with rt.db.uow() as uow:
        again = await post_entry(
            uow, account_id=account, amount=5 * DOLLAR, kind=EntryKind.GRANT, idempotency_key="k1", now=now
        )
    assert first.created and not again.created and again.entry.id == first.entry.id
    assert first.entry.balance_after == 5 * DOLLAR
    with pytest.raises(Conflict) as exc:
        async with rt.db.uow() as uow:
            await post_entry(
                uow, account_id=account, amount=6 * DOLLAR, kind=EntryKind.GRANT, idempotency_key="k1", now=now
            )
    assert exc.value.code == "idempotency_key_reused"
    assert await balance(rt, account) == (5 * DOLLAR, 0)
    assert len(await entries(rt, account)) == 1
    with pytest.raises(NotFound):
        async with rt.db.uow() as uow:
            await post_entry(uow, account_id="acct_nope", amount=1, kind="grant", idempotency_key="k2", now=now)
    with pytest.raises(TypeError):
        async with rt.db.uow() as uow:
            await post_entry(uow, account_id=account, amount=0.5, kind="grant", idempotency_key="k3", now=now)  # type: ignore[arg-type]
    await check_ledger(rt)


async def test_guarded_debit_refuses_what_is_not_available(rt):
    _, account = await make_user_account(rt)
    await top_up(rt, account, DOLLAR)
    await holds.reserve(rt, account_id=account, amount=60 * CENT, idempotency_key="h")
    with pytest.raises(PaymentRequired):
        async with rt.db.uow() as uow:
            await post_entry(
                uow,
                account_id=account,
                amount=-50 * CENT,
                kind=EntryKind.TRANSFER_OUT,
                idempotency_key="t",
                now=rt.clock.now(),
                require_available=True,
            )
    assert await balance(rt, account) == (DOLLAR, 60 * CENT)
    await check_ledger(rt)


async def test_reserve_settle_void_and_replay(rt):
    user, account = await make_user_account(rt)
    key = await make_key(rt, account_id=account, creator_user_id=user)
    await top_up(rt, account, DOLLAR)

    hold = await holds.reserve(rt, account_id=account, amount=30 * CENT, idempotency_key="r1", key_id=key)
    assert await balance(rt, account) == (DOLLAR, 30 * CENT)
    assert (await key_row(rt, key)).held == 30 * CENT
    # Same idempotency key, same request: the same hold; a different request: 409.
    assert (
        await holds.reserve(rt, account_id=account, amount=30 * CENT, idempotency_key="r1", key_id=key)
    ).id == hold.id
    with pytest.raises(Conflict):
        await holds.reserve(rt, account_id=account, amount=31 * CENT, idempotency_key="r1", key_id=key)
    assert await balance(rt, account) == (DOLLAR, 30 * CENT)

    first = await holds.settle(rt, hold_id=hold.id, actual=12 * CENT, generation_id="gen-1")
    second = await holds.settle(rt, hold_id=hold.id, actual=12 * CENT)
    assert first.applied and not second.applied and second.status == "posted"
    assert await balance(rt, account) == (88 * CENT, 0)
    row = await key_row(rt, key)
    assert (row.held, row.usage) == (0, 12 * CENT)
    assert key_usage(row, rt.clock.now())["usage_daily"] == 12 * CENT

    other = await holds.reserve(rt, account_id=account, amount=10 * CENT, idempotency_key="r2", key_id=key)
    assert (await holds.void(rt, hold_id=other.id)).applied
    assert not (await holds.settle(rt, hold_id=other.id, actual=10 * CENT)).applied  # void won
    assert not (await holds.void(rt, hold_id=other.id)).applied
    assert await balance(rt, account) == (88 * CENT, 0)
    with pytest.raises(NotFound):
        await holds.settle(rt, hold_id="hold_missing", actual=1)
    with pytest.raises(ValueError):
        await holds.settle(rt, hold_id=hold.id, actual=-1)
    await check_ledger(rt)


async def test_reserve_refuses_beyond_available_and_changes_nothing(rt):
    user, account = await make_user_account(rt)
    key = await make_key(rt, account_id=account, creator_user_id=user, limit=50 * CENT)
    await top_up(rt, account, DOLLAR)
    with pytest.raises(PaymentRequired) as exc:
        await holds.reserve(rt, account_id=account, amount=DOLLAR + 1, idempotency_key="big", key_id=key)
    assert exc.value.code == "insufficient_credits"
    with pytest.raises(KeyLimitReached):
        await holds.reserve(rt, account_id=account, amount=51 * CENT, idempotency_key="key", key_id=key)
    # The account hold was rolled back with the refused key hold.
    assert await balance(rt, account) == (DOLLAR, 0)
    assert (await key_row(rt, key)).held == 0
    async with rt.db.read() as s:
        assert await s.scalar(select(func.count()).select_from(Hold)) == 0
    await check_ledger(rt)


async def test_overrun_is_posted_and_then_everything_is_refused(rt):
    _user, account = await make_user_account(rt)
    await top_up(rt, account, 10 * CENT)
    hold = await holds.reserve(rt, account_id=account, amount=10 * CENT, idempotency_key="o")
    await holds.settle(rt, hold_id=hold.id, actual=30 * CENT)
    assert await balance(rt, account) == (-20 * CENT, 0)
    with pytest.raises(PaymentRequired):
        await holds.reserve(rt, account_id=account, amount=1, idempotency_key="after")
    await check_ledger(rt)
    await top_up(rt, account, 21 * CENT)
    await holds.reserve(rt, account_id=account, amount=CENT, idempotency_key="after2")
    await check_ledger(rt)


async def test_sweeper_expires_due_holds_and_a_late_settle_still_bills_once(rt):
    _, account = await make_user_account(rt)
    await top_up(rt, account, DOLLAR)
    short = await holds.reserve(
        rt, account_id=account, amount=40 * CENT, idempotency_key="s", ttl=timedelta(seconds=10)
    )
    long = await holds.reserve(rt, account_id=account, amount=10 * CENT, idempotency_key="l", ttl=timedelta(hours=1))
    assert await holds.expire_holds(rt, now=rt.clock.now() + timedelta(seconds=5)) == 0
    assert await holds.expire_holds(rt, now=rt.clock.now() + timedelta(seconds=11)) == 1
    assert await balance(rt, account) == (DOLLAR, 10 * CENT)
    late = await holds.settle(rt, hold_id=short.id, actual=25 * CENT)
    assert late.applied and late.status == "expired"
    assert not (await holds.settle(rt, hold_id=short.id, actual=25 * CENT)).applied
    assert await balance(rt, account) == (75 * CENT, 10 * CENT)
    assert not (await holds.void(rt, hold_id=short.id)).applied
    assert (await holds.void(rt, hold_id=long.id)).applied
    await check_ledger(rt)


async def test_windows_roll_over_at_midnight_utc_and_mondays(rt, settings, passwords):
    from teamrouter.runtime import build_runtime

    clock = FrozenClock(datetime(2025, 3, 9, 23, 59, tzinfo=UTC))  # a Sunday
    frozen = build_runtime(settings, clock=clock, passwords=passwords)
    try:
        user, account = await make_user_account(frozen)
        key = await make_key(frozen, account_id=account, creator_user_id=user, limit=10 * CENT, limit_reset="daily")
        await top_up(frozen, account, DOLLAR)
        for n in range(10):
            hold = await holds.reserve(frozen, account_id=account, amount=CENT, idempotency_key=f"d{n}", key_id=key)
            await holds.settle(frozen, hold_id=hold.id, actual=CENT)
        with pytest.raises(KeyLimitReached):
            await holds.reserve(frozen, account_id=account, amount=1, idempotency_key="over", key_id=key)
        row = await key_row(frozen, key)
        assert limit_remaining(row, clock.now()) == 0
        clock.advance(timedelta(minutes=1))  # Monday 00:00 UTC: new day, new week, same month
        row = await key_row(frozen, key)
        assert key_usage(row, clock.now()) == {
            "usage": 10 * CENT,
            "usage_daily": 0,
            "usage_weekly": 0,
            "usage_monthly": 10 * CENT,
        }
        assert limit_remaining(row, clock.now()) == 10 * CENT
        hold = await holds.reserve(frozen, account_id=account, amount=4 * CENT, idempotency_key="mon", key_id=key)
        row = await key_row(frozen, key)
        assert limit_remaining(row, clock.now()) == 6 * CENT  # open holds count
        await holds.settle(frozen, hold_id=hold.id, actual=3 * CENT)
        row = await key_row(frozen, key)
        assert key_usage(row, clock.now()) == {
            "usage": 13 * CENT,
            "usage_daily": 3 * CENT,
            "usage_weekly": 3 * CENT,
            "usage_monthly": 13 * CENT,
        }
        # Switching to a monthly limit counts the whole month's spend.
        await set_key_limit(frozen, key, limit=13 * CENT, limit_reset="monthly")
        row = await key_row(frozen, key)
        assert key_window_spend(row, clock.now()) == 13 * CENT
        with pytest.raises(KeyLimitReached):
            await holds.reserve(frozen, account_id=account, amount=1, idempotency_key="m", key_id=key)
        await set_key_limit(frozen, key, limit=None, limit_reset=None)
        await holds.reserve(frozen, account_id=account, amount=CENT, idempotency_key="free", key_id=key)
        await check_ledger(frozen)
    finally:
        await frozen.close()


async def test_a8_many_tiny_charges_land_exactly_on_the_key_limit(rt):
    # 1,000,000 × $0.000001 at the ledger level would take minutes through SQLAlchemy; the same
    # arithmetic is proved with 2,000 × $0.0005 = $1 exactly (integers: no drift is possible).
    user, account = await make_user_account(rt)
    tiny = usd_to_units("0.0005")
    key = await make_key(rt, account_id=account, creator_user_id=user, limit=DOLLAR)
    await top_up(rt, account, 5 * DOLLAR)
    # Bulk-settle through the same code path in big strides, then the last ones one by one.
    async with rt.db.uow() as uow:
        from sqlalchemy import update

        await uow.session.execute(update(ApiKey).where(ApiKey.id == key).values(usage=DOLLAR - 3 * tiny))
    async with rt.db.uow() as uow:
        await post_entry(
            uow,
            account_id=account,
            amount=-(DOLLAR - 3 * tiny),
            kind=EntryKind.CORRECTION,
            idempotency_key="bulk",
            now=rt.clock.now(),
        )
    for n in range(3):
        hold = await holds.reserve(rt, account_id=account, amount=tiny, idempotency_key=f"t{n}", key_id=key)
        await holds.settle(rt, hold_id=hold.id, actual=tiny)
    row = await key_row(rt, key)
    assert row.usage == DOLLAR and limit_remaining(row, rt.clock.now()) == 0
    with pytest.raises(KeyLimitReached):
        await holds.reserve(rt, account_id=account, amount=1, idempotency_key="next", key_id=key)
    await check_ledger(rt, invariants=frozenset({"I1", "I2", "I3", "I4", "I6"}))


async def test_a8_thousands_of_micro_charges_sum_exactly(rt):
    user, account = await make_user_account(rt)
    micro = usd_to_units("0.000001")
    key = await make_key(rt, account_id=account, creator_user_id=user, limit=100 * micro)
    await top_up(rt, account, DOLLAR)
    ok = 0
    for n in range(101):
        try:
            hold = await holds.reserve(rt, account_id=account, amount=micro, idempotency_key=f"m{n}", key_id=key)
        except KeyLimitReached:
            continue
        await holds.settle(rt, hold_id=hold.id, actual=micro)
        ok += 1
    assert ok == 100
    row = await key_row(rt, key)
    assert row.usage == 100 * micro == row.spend_limit
    assert await balance(rt, account) == (DOLLAR - 100 * micro, 0)
    await check_ledger(rt)


def test_a8_no_float_or_numeric_column_in_money_tables():
    money_tables = {t.name for t in (CreditAccount.__table__, LedgerEntry.__table__, Hold.__table__, Payment.__table__)}
    money_tables |= {"api_key", "generation", "usage_rollup"}
    for table in metadata.sorted_tables:
        if table.name not in money_tables:
            continue
        for column in table.columns:
            assert not isinstance(column.type, Float | Numeric), f"{table.name}.{column.name} is {column.type}"
    amount_columns = ["balance", "held", "amount", "balance_after", "posted_amount"]
    for table in (CreditAccount.__table__, LedgerEntry.__table__, Hold.__table__, Payment.__table__):
        for name in amount_columns:
            if name in table.columns:
                assert isinstance(table.columns[name].type, BigInteger | Integer)


async def test_no_float_column_in_the_migrated_database(rt):
    async with rt.db.read() as s:

        def inspect_types(sync_session):
            from sqlalchemy import inspect

            inspector = inspect(sync_session.connection())
            found = []
            for table in ("credit_account", "ledger_entry", "credit_hold", "payment", "api_key", "generation"):
                for column in inspector.get_columns(table):
                    kind = str(column["type"]).upper()
                    if any(word in kind for word in ("FLOAT", "REAL", "DOUBLE", "NUMERIC", "DECIMAL")):
                        found.append(f"{table}.{column['name']}: {kind}")
            return found

        assert await s.run_sync(inspect_types) == []


async def test_the_migrated_schema_is_what_the_models_declare(rt):
    # Alembic's comparison of the migrated database with the models, indexes (and a partial index's
    # WHERE) included: a model changed without its migration, or the reverse, shows up here.
    from alembic.autogenerate import compare_metadata
    from alembic.migration import MigrationContext

    async with rt.db.read() as s:
        differences = await s.run_sync(
            lambda sync_session: compare_metadata(MigrationContext.configure(sync_session.connection()), metadata)
        )
    assert differences == []


async def test_a_database_error_never_quotes_the_statements_parameters(rt):
    # What a failed statement carried (an outbox mail's one-time link, an address, a key hash) must
    # not reach a log line through the error's message: the engine hides parameters.
    from sqlalchemy import text
    from sqlalchemy.exc import DBAPIError

    secret = "https://example.com/verify-email?token=do-not-log-me"
    with pytest.raises(DBAPIError) as raised:
        async with rt.db.uow() as uow:
            await uow.session.execute(text("SELECT no_such_column, :link FROM ledger_entry"), {"link": secret})
    assert secret not in str(raised.value)
