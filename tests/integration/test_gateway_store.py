"""The hot-path store (raw SQL on SQLite and PostgreSQL) against TESTPLAN A10: key limit windows
reset at 00:00 UTC whatever the server's time zone (weeks on Monday, months on the 1st), and a hold
that straddles midnight never lets either day exceed its limit. Also: a hold resolves exactly once."""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import os
import sqlite3
import time
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest
from sqlalchemy import func, select
from tests.support.credits import check_ledger
from tests.support.gateway import funded_person, record_for

from teamrouter.domain.activity.models import UsageRollup
from teamrouter.domain.credits.models import CreditAccount, LedgerEntry
from teamrouter.domain.credits.models import Hold as HoldRow
from teamrouter.domain.keys.models import ApiKey
from teamrouter.errors import ServiceUnavailable
from teamrouter.gateway.setup import open_store
from teamrouter.gateway.store import sql
from teamrouter.gateway.store.base import Hold
from teamrouter.ids import new_id
from teamrouter.storage.urls import async_url

CENT = 10_000_000


@pytest.fixture
async def store(rt):
    opened = await open_store(rt)
    yield opened
    await opened.close()


@pytest.fixture(autouse=True)
def far_away_time_zone():
    # The server's own zone must not matter: windows are UTC.
    previous = os.environ.get("TZ")
    os.environ["TZ"] = "Pacific/Kiritimati"  # UTC+14
    time.tzset()
    yield
    if previous is None:
        del os.environ["TZ"]
    else:
        os.environ["TZ"] = previous
    time.tzset()


async def spend(store, who, at: datetime, cost: int) -> bool:
    hold = Hold(id=new_id("hold"), account_id=who.account_id, key_id=who.key_id, amount=cost)
    if await store.reserve(hold, now=at, expires_at=at + timedelta(minutes=15)) is not None:
        return False
    record = record_for(who, at, cost)
    assert await store.settle(hold, record, now=at)
    return True


@pytest.mark.parametrize(
    ("reset", "last_moment", "next_window"),
    [
        ("daily", datetime(2026, 3, 3, 23, 59, 59, 999000, tzinfo=UTC), datetime(2026, 3, 4, tzinfo=UTC)),
        # Sunday night → Monday 00:00 UTC
        ("weekly", datetime(2026, 3, 8, 23, 59, 59, tzinfo=UTC), datetime(2026, 3, 9, tzinfo=UTC)),
        ("monthly", datetime(2026, 2, 28, 23, 59, 59, tzinfo=UTC), datetime(2026, 3, 1, tzinfo=UTC)),
    ],
)
async def test_a10_windows_reset_at_utc_midnight(rt, store, reset, last_moment, next_window):
    who = await funded_person(rt, usd="10", limit="0.03", limit_reset=reset)
    start = last_moment - timedelta(hours=1)
    assert [await spend(store, who, start, CENT) for _ in range(4)] == [True, True, True, False]
    assert not await spend(store, who, last_moment, CENT)  # still the same window
    assert [await spend(store, who, next_window, CENT) for _ in range(4)] == [True, True, True, False]
    async with rt.db.read() as s:
        key = await s.get_one(ApiKey, who.key_id)
    assert key.usage == 6 * CENT
    await check_ledger(rt)


async def test_a10_a_hold_straddling_midnight_counts_against_both_days(rt, store):
    who = await funded_person(rt, usd="10", limit="0.03", limit_reset="daily")
    evening = datetime(2026, 5, 5, 23, 59, 30, tzinfo=UTC)
    morning = evening + timedelta(minutes=1)
    assert await spend(store, who, evening, 2 * CENT)
    long_hold = Hold(id=new_id("hold"), account_id=who.account_id, key_id=who.key_id, amount=CENT)
    assert await store.reserve(long_hold, now=evening, expires_at=evening + timedelta(minutes=15)) is None
    # After midnight the open hold still counts: 2 more cents fit today, not 3.
    assert await spend(store, who, morning, CENT)
    assert await spend(store, who, morning, CENT)
    assert not await spend(store, who, morning, CENT)
    record = record_for(who, morning, CENT)
    assert await store.settle(long_hold, record, now=morning)
    async with rt.db.read() as s:
        key = await s.get_one(ApiKey, who.key_id)
    assert key.usage_day == 3 * CENT and key.held == 0  # the new day is exactly at its limit
    await check_ledger(rt)


async def test_a10_settlements_straddling_midnight_never_restart_the_old_day(rt, store):
    # Settlements whose times straddle midnight UTC, settled together (in whatever order the backend
    # takes them): the key's day moves forward only. Every new-day cost is in the new day's count;
    # an old-day cost committed after a new-day one counts there too (a limit may stop a little
    # early around midnight, never late), and none is dropped from the lifetime total.
    who = await funded_person(rt, usd="10", limit="1", limit_reset="daily")
    evening = datetime(2026, 5, 5, 23, 59, 59, tzinfo=UTC)
    morning = evening + timedelta(seconds=2)
    holds = [Hold(id=new_id("hold"), account_id=who.account_id, key_id=who.key_id, amount=CENT) for _ in range(8)]
    for hold in holds:
        assert await store.reserve(hold, now=evening, expires_at=evening + timedelta(minutes=15)) is None
    times = [evening, morning] * 4
    settled = await asyncio.gather(
        *(store.settle(h, record_for(who, at, 1000), now=at) for h, at in zip(holds, times, strict=True))
    )
    assert all(settled)
    async with rt.db.read() as s:
        key = await s.get_one(ApiKey, who.key_id)
    assert key.usage == 8 * 1000 and key.held == 0
    assert key.day_start == morning.date() and 4 * 1000 <= key.usage_day <= 8 * 1000
    await check_ledger(rt)


async def test_a_hold_resolves_exactly_once_under_races(rt, store):
    who = await funded_person(rt, usd="10")
    now = datetime.now(UTC)
    for _ in range(50):
        hold = Hold(id=new_id("hold"), account_id=who.account_id, key_id=who.key_id, amount=CENT)
        assert await store.reserve(hold, now=now, expires_at=now + timedelta(minutes=15)) is None
        record = record_for(who, now, CENT // 2)
        outcomes = await asyncio.gather(
            store.settle(hold, record, now=now), store.void(hold, now=now), store.settle(hold, record, now=now)
        )
        assert sum(outcomes) == 1
    async with rt.db.read() as s:
        account = await s.get_one(CreditAccount, who.account_id)
        key_held = await s.scalar(select(ApiKey.held).where(ApiKey.id == who.key_id))
    assert account.held == 0 and key_held == 0
    await check_ledger(rt)


async def test_sqlite_wal_is_truncated_by_the_writers_checkpoint(rt, store):
    if not rt.db.is_sqlite:
        pytest.skip("SQLite only")
    who = await funded_person(rt, usd="10")
    now = datetime.now(UTC)
    for _ in range(200):
        assert await spend(store, who, now, 1000)
    wal = rt.db.engine.url.database + "-wal"
    assert os.path.getsize(wal) > 100_000
    await asyncio.to_thread(store._checkpoint)
    assert os.path.getsize(wal) == 0  # a steady writer must never make the WAL grow without bound


async def test_sqlite_that_cannot_be_written_is_a_503_and_changes_nothing(rt, store):
    """A full disk, a read-only file or an I/O error reaches the client as 503 (like PostgreSQL going
    away), not as a 500; and once it can write again, the store carries on."""
    if not rt.db.is_sqlite:
        pytest.skip("SQLite only")
    who = await funded_person(rt, usd="10")
    now = datetime.now(UTC)
    hold = Hold(id=new_id("hold"), account_id=who.account_id, key_id=who.key_id, amount=CENT)
    store._conn.execute("PRAGMA query_only = 1")  # writes now fail as on a read-only database
    with pytest.raises(ServiceUnavailable) as raised:
        await store.reserve(hold, now=now, expires_at=now + timedelta(minutes=15))
    assert raised.value.code == "database_unavailable"
    async with rt.db.read() as s:
        assert (await s.get(CreditAccount, who.account_id)).held == 0
    store._conn.execute("PRAGMA query_only = 0")
    assert await spend(store, who, now, CENT)
    await check_ledger(rt)


async def test_a_request_that_leaves_while_waiting_for_the_write_lock_leaves_no_transaction(rt, store):
    # Another process holds SQLite's write lock; a request's reservation waits for it in a worker
    # thread and the request is cancelled meanwhile (its client went away). Once the lock is free,
    # the thread must not take it for nobody: the next request's write goes through.
    if not rt.db.is_sqlite:
        pytest.skip("SQLite only")
    who = await funded_person(rt, usd="10")
    now = datetime.now(UTC)
    other = sqlite3.connect(store._path, isolation_level=None)
    other.execute("BEGIN IMMEDIATE")
    try:
        hold = Hold(id=new_id("hold"), account_id=who.account_id, key_id=who.key_id, amount=CENT)
        waiting = asyncio.ensure_future(store.reserve(hold, now=now, expires_at=now + timedelta(minutes=15)))
        await asyncio.sleep(0.05)  # in the worker thread, retrying
        waiting.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await waiting
    finally:
        other.execute("ROLLBACK")
        other.close()
    await asyncio.sleep(0.05)  # time for a thread left behind to take the lock
    assert not store._conn.in_transaction
    assert await spend(store, who, now, CENT)
    await check_ledger(rt)


async def test_concurrent_settlements_take_the_bulk_path_and_keep_every_invariant(rt, store):
    who, now, holds = await _reserved(rt, store, 40)
    costs = [1000 * (i + 1) for i in range(40)]  # all different, so a wrong sum or order shows
    bulk = _count_bulk_batches(store)
    settled = await asyncio.gather(
        *(store.settle(h, record_for(who, now, c), now=now) for h, c in zip(holds, costs, strict=True))
    )
    assert all(settled)
    # The first settlement goes alone (as at concurrency 1); on SQLite its reservation's commit
    # already let the others queue behind it, so all 40 meet in bulk batches.
    assert sum(bulk) >= (40 if rt.db.is_sqlite else 30)
    async with rt.db.read() as s:
        account = await s.get_one(CreditAccount, who.account_id)
        key = await s.get_one(ApiKey, who.key_id)
        entries = (
            await s.execute(
                select(LedgerEntry.amount, LedgerEntry.balance_after).where(
                    LedgerEntry.account_id == who.account_id, LedgerEntry.kind == "usage"
                )
            )
        ).all()
        rollup = await s.scalar(select(func.sum(UsageRollup.requests)).where(UsageRollup.key_id == who.key_id))
    assert account.held == 0 and key.held == 0
    assert account.balance == 10 * 10**9 - sum(costs) and key.usage == sum(costs) and rollup == 40
    # The entries' balance_after values form one chain ending at the cached balance.
    chain = sorted(entries, key=lambda e: -e.balance_after)
    for before, after in itertools.pairwise(chain):
        assert after.balance_after == before.balance_after + after.amount
    assert chain[-1].balance_after == account.balance
    await check_ledger(rt)


async def test_a_bulk_batch_that_fails_is_replayed_one_by_one(rt, store):
    # Two settlements in one batch carrying the same generation id: the bulk insert fails, the batch
    # is replayed operation by operation, and only the second one fails — the first is billed once.
    who, now, holds = await _reserved(rt, store, 2)
    record = record_for(who, now, CENT // 2)
    outcomes = await asyncio.gather(*(store.settle(h, record, now=now) for h in holds), return_exceptions=True)
    # Which of the two wins is up to the backend (on PostgreSQL they race); exactly one does.
    won = [o is True for o in outcomes]
    assert sorted(won) == [False, True] and all(o is True or isinstance(o, Exception) for o in outcomes)
    loser = holds[won.index(False)]
    assert await store.void(loser, now=now)
    async with rt.db.read() as s:
        account = await s.get_one(CreditAccount, who.account_id)
    assert account.held == 0 and account.balance == 10 * 10**9 - CENT // 2
    await check_ledger(rt)


async def test_work_arriving_over_a_few_loop_passes_shares_one_commit(rt, store):
    # Requests under way reach the store a few event-loop passes apart (each has parsing and
    # routing left to do). The SQLite writer lets those passes run before it takes a batch, so they
    # share one COMMIT instead of paying one each.
    if not rt.db.is_sqlite:
        pytest.skip("PostgreSQL's reservations are one statement each; its settlements batch while one is written")
    who, now, (first,) = await _reserved(rt, store, 1)  # one hold open: the rest go to the writer
    holds = [Hold(id=new_id("hold"), account_id=who.account_id, key_id=who.key_id, amount=CENT) for _ in range(12)]
    batches: list[int] = []
    commit = store._commit_batch

    async def counting(batch):
        batches.append(len(batch))
        await commit(batch)

    store._commit_batch = counting

    async def arrive(hold: Hold, passes: int):
        for _ in range(passes):
            await asyncio.sleep(0)
        return await store.reserve(hold, now=now, expires_at=now + timedelta(minutes=15))

    outcomes = await asyncio.gather(*(arrive(h, i % 4) for i, h in enumerate(holds)))
    assert outcomes == [None] * 12
    assert batches == [12]
    for hold in [first, *holds]:
        assert await store.void(hold, now=now)
    await check_ledger(rt)


async def test_work_still_queued_when_the_store_closes_fails_instead_of_hanging(rt):
    if not rt.db.is_sqlite:
        pytest.skip("PostgreSQL's operations are not queued behind a writer task")
    store = await open_store(rt)
    try:
        who, now, _ = await _reserved(rt, store, 1)  # one hold open: the next one is queued
        hold = Hold(id=new_id("hold"), account_id=who.account_id, key_id=who.key_id, amount=CENT)
        queued = asyncio.create_task(store.reserve(hold, now=now, expires_at=now + timedelta(minutes=15)))
        await asyncio.sleep(0)  # queued, the writer not yet run
    finally:
        await store.close()
    with pytest.raises(ServiceUnavailable):
        await asyncio.wait_for(queued, 5)
    with pytest.raises(ServiceUnavailable):  # and nothing new is taken once closing has begun
        await store.reserve(hold, now=now, expires_at=now + timedelta(minutes=15))
    async with rt.db.read() as s:
        assert (await s.get_one(CreditAccount, who.account_id)).held == CENT  # only the first hold


async def test_when_pool_and_key_limit_both_refuse_the_tighter_is_reported(rt, store):
    # $1 in the pool, $0.30 left on the key: a $5 hold is refused by both; what the client can
    # afford is the key's $0.30, so that is the reason and the amount reported.
    who = await funded_person(rt, usd="1", limit="0.30")
    now = datetime.now(UTC)
    hold = Hold(id=new_id("hold"), account_id=who.account_id, key_id=who.key_id, amount=500 * CENT)
    refusal = await store.reserve(hold, now=now, expires_at=now + timedelta(minutes=15))
    assert refusal is not None and (refusal.reason, refusal.available) == ("key_limit_reached", 30 * CENT)
    # The other way round the pool is the tighter one.
    poor = await funded_person(rt, usd="0.20", limit="0.50")
    hold = Hold(id=new_id("hold"), account_id=poor.account_id, key_id=poor.key_id, amount=500 * CENT)
    refusal = await store.reserve(hold, now=now, expires_at=now + timedelta(minutes=15))
    assert refusal is not None and (refusal.reason, refusal.available) == ("insufficient_credits", 20 * CENT)


async def _reserved(rt, store, count: int):
    """A funded person with `count` open one-cent holds."""
    who = await funded_person(rt, usd="10")
    now = datetime.now(UTC)
    holds = [Hold(id=new_id("hold"), account_id=who.account_id, key_id=who.key_id, amount=CENT) for _ in range(count)]
    for hold in holds:
        assert await store.reserve(hold, now=now, expires_at=now + timedelta(minutes=15)) is None
    return who, now, holds


def _count_bulk_batches(store) -> list[int]:
    """The size of every batch the bulk path completed: SQLite's `_settle_bulk`, PostgreSQL's
    `_settle_together` (several settlements in one statement; those it handed to the one-by-one
    path, which also succeed, are not counted)."""
    done: list[int] = []
    name = "_settle_bulk" if hasattr(store, "_settle_bulk") else "_settle_together"
    bulk = getattr(store, name)

    if name == "_settle_bulk":

        def counting(batch):
            results = bulk(batch)
            done.append(len(batch))
            return results

    else:
        alone = store._settle_alone
        singles = [0]

        async def counting_alone(params, generation_id):
            singles[0] += 1
            return await alone(params, generation_id)

        async def counting(batch):
            before = singles[0]
            results = await bulk(batch)
            if len(batch) > 1:
                done.append(sum(result is True for result in results) - (singles[0] - before))
            return results

        store._settle_alone = counting_alone

    setattr(store, name, counting)
    return done


@pytest.mark.parametrize(("usd", "admitted"), [("1", 20), ("0.10", 10)])
async def test_concurrent_reservations_admit_exactly_what_fits(rt, store, usd, admitted):
    # 20 one-cent reservations at once (on SQLite: one inline, the rest in one group-commit batch):
    # exactly as many as fit are admitted, and a refusal leaves no trace.
    who = await funded_person(rt, usd=usd)
    now = datetime.now(UTC)
    holds = [Hold(id=new_id("hold"), account_id=who.account_id, key_id=who.key_id, amount=CENT) for _ in range(20)]
    outcomes = await asyncio.gather(*(store.reserve(h, now=now, expires_at=now + timedelta(minutes=15)) for h in holds))
    assert sum(o is None for o in outcomes) == admitted
    assert all(o.reason == "insufficient_credits" and o.available == 0 for o in outcomes if o is not None)
    async with rt.db.read() as s:
        account = await s.get_one(CreditAccount, who.account_id)
        key = await s.get_one(ApiKey, who.key_id)
    assert account.held == admitted * CENT and key.held == admitted * CENT
    for hold, outcome in zip(holds, outcomes, strict=True):
        if outcome is None:
            assert await store.void(hold, now=now)
    await check_ledger(rt)


@pytest.mark.parametrize("late", [False, True])
async def test_a_batch_whose_answer_is_lost_after_its_commit_is_not_settled_twice(rt, store, late):
    # TESTPLAN C23 for PostgreSQL's batch statement: it commits, then the connection dies before
    # the answer arrives. The retry must find the batch done (not settle again, not fail it), and
    # the requests that were waiting on it must all hear True. `late`: the first attempt's server
    # process commits only after the retry has looked for its holds (a statement timed out whose
    # cancel never arrived), so the retry's own statement finds them posted.
    if rt.db.is_sqlite:
        pytest.skip("PostgreSQL only")

    who, now, holds = await _reserved(rt, store, 12)
    real_pool = store._pool
    lost = []

    class Conn:
        def __init__(self, conn):
            self._conn = conn

        def __getattr__(self, name):
            return getattr(self._conn, name)

        async def fetchval(self, query, *args):
            batch = query.startswith("WITH h AS (UPDATE credit_hold SET status = 'posted'") and "unnest" in query
            if batch and late and not lost:
                lost.append(len(args[1]))  # sent, and the connection died; its backend goes on
                raise asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed in the middle")
            if batch and late and len(lost) == 1:
                lost.append("late")
                other = await real_pool.take()  # the first attempt commits now
                try:
                    await other.fetchval(query, *args)
                finally:
                    real_pool.give_back(other)
            value = await self._conn.fetchval(query, *args)
            if batch and not late and not lost:
                lost.append(len(args[1]))  # committed: now the answer is lost on the way back
                raise asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed in the middle")
            return value

        def terminate(self):
            pass  # the real connection is fine and goes back to its pool

    class Pool:
        async def take(self):
            return Conn(await real_pool.take())

        def give_back(self, conn):
            real_pool.give_back(conn._conn)

    store._pool = Pool()
    costs = [1000 * (i + 1) for i in range(12)]
    try:
        settled = await asyncio.gather(
            *(store.settle(h, record_for(who, now, c), now=now) for h, c in zip(holds, costs, strict=True))
        )
    finally:
        store._pool = real_pool
    assert lost and lost[0] > 1, "no batch statement ran"
    assert all(settled)
    async with rt.db.read() as s:
        account = await s.get_one(CreditAccount, who.account_id)
        usage = await s.scalar(
            select(func.count())
            .select_from(LedgerEntry)
            .where(LedgerEntry.account_id == who.account_id, LedgerEntry.kind == "usage")
        )
    assert usage == 12 and account.held == 0 and account.balance == 10 * 10**9 - sum(costs)
    await check_ledger(rt)


@pytest.mark.parametrize("name", ["SETTLE_ONE", "VOID_ONE", "SETTLE_MANY"])
async def test_postgres_finds_a_hold_by_its_primary_key(rt, store, name):
    # The generic plan PostgreSQL caches for a prepared statement once chose the open-holds index
    # (status, expires_at) for "id = $1 AND status = 'open'", walking every open hold and every
    # settled hold's dead entry on each settlement. The hot statements must look holds up by id.
    if rt.db.is_sqlite:
        pytest.skip("PostgreSQL only")
    from teamrouter.gateway.store import postgres

    await _reserved(rt, store, 3)
    statement = postgres._ONE[name]
    conn = await store._pool.take()
    try:
        await conn.execute("SET plan_cache_mode = force_generic_plan")
        try:
            await conn.execute(f"PREPARE hot AS {statement.text}")
            nulls = ", ".join(["NULL"] * len(statement.names))
            plan = "\n".join(r[0] for r in await conn.fetch(f"EXPLAIN EXECUTE hot({nulls})"))
        finally:
            await conn.execute("DEALLOCATE hot")  # not ALL: asyncpg's own prepared statements live here
            await conn.execute("RESET plan_cache_mode")
    finally:
        store._pool.give_back(conn)
    assert "ix_credit_hold_open" not in plan, plan
    if name != "SETTLE_MANY":  # a batch may also scan a table this small, which is fine
        assert "pk_credit_hold" in plan, plan


async def test_a_batch_of_settlements_locks_every_key_before_any_pool(rt, store):
    # A reservation locks its key, then its pool. A batch over two keys must have every key locked
    # before it waits for the pool, or a reservation holding one of its keys and waiting for the
    # pool would deadlock with it (the batch once locked one key, the pool, and the other key last).
    # Here another transaction holds the pool: while the batch waits for it, both keys are locked.
    if rt.db.is_sqlite:
        pytest.skip("PostgreSQL only")
    from teamrouter.domain.keys import service as keys
    from teamrouter.gateway.store.postgres import _Settlement

    who, now, holds = await _reserved(rt, store, 2)
    other = (await keys.create_key(rt, actor=who.actor, name="second")).key
    held = Hold(id=new_id("hold"), account_id=who.account_id, key_id=other.id, amount=CENT)
    assert await store.reserve(held, now=now, expires_at=now + timedelta(minutes=15)) is None
    batch = []
    for hold in [*holds, held]:
        record = record_for(who, now, 1000)
        record.key_id = hold.key_id
        params = sql.settle_params(hold, record, now=now)
        params.update(sql.generation_params(record, hold.id))
        params.update(sql.rollup_params(record))
        batch.append(_Settlement(params, record.id, asyncio.get_running_loop().create_future()))
    url = async_url(rt.settings.effective_database_url).set(drivername="postgresql").render_as_string(False)
    blocker, probe = await asyncpg.connect(url), await asyncpg.connect(url)
    try:
        async with blocker.transaction():
            await blocker.execute("UPDATE credit_account SET held = held WHERE id = $1", who.account_id)
            settling = asyncio.ensure_future(store._settle_together(batch))
            await asyncio.sleep(0.5)  # the batch is now waiting for the pool this transaction holds
            assert not settling.done()
            for key_id in (who.key_id, other.id):
                with pytest.raises(asyncpg.exceptions.LockNotAvailableError):
                    async with probe.transaction():
                        await probe.execute("SELECT 1 FROM api_key WHERE id = $1 FOR UPDATE NOWAIT", key_id)
        assert await asyncio.wait_for(settling, 10) == [True, True, True]
    finally:
        await blocker.close()
        await probe.close()
    await check_ledger(rt)


def _count_bulk_reservations(store) -> list[int]:
    """SQLite: the size of every batch of reservations admitted whole by one UPDATE per pool and
    per key (`_reserve_bulk` returned their results rather than handing them back one by one)."""
    done: list[int] = []
    bulk = store._reserve_bulk

    def counting(reserves):
        results = bulk(reserves)
        if results is not None:
            done.append(len(reserves))
        return results

    store._reserve_bulk = counting
    return done


@pytest.mark.parametrize(
    ("usd", "limit", "admitted", "reason"),
    [("1", None, 20, None), ("0.10", None, 10, "insufficient_credits"), ("1", "0.05", 5, "key_limit_reached")],
)
async def test_a_batch_of_reservations_admits_in_bulk_exactly_what_one_by_one_would(
    rt, store, usd, limit, admitted, reason
):
    # 21 one-cent reservations over two people: one has a single hold (it fits either way), the
    # other 20, of which the pool or the key limit may refuse some. A batch that fits whole is
    # admitted by one UPDATE per pool and per key; one that does not is decided one by one, so the
    # refusals are the same either way and leave no trace, and the other person is not held up.
    if not rt.db.is_sqlite:
        pytest.skip("PostgreSQL reserves in one statement per request")
    who = await funded_person(rt, usd=usd, limit=limit)
    other = await funded_person(rt, usd="1")
    now = datetime.now(UTC)
    first = Hold(id=new_id("hold"), account_id=who.account_id, key_id=who.key_id, amount=CENT)
    holds = [Hold(id=new_id("hold"), account_id=who.account_id, key_id=who.key_id, amount=CENT) for _ in range(19)]
    theirs = Hold(id=new_id("hold"), account_id=other.account_id, key_id=other.key_id, amount=CENT)
    assert await store.reserve(first, now=now, expires_at=now + timedelta(minutes=15)) is None  # inline
    bulk = _count_bulk_reservations(store)
    outcomes = await asyncio.gather(
        *(store.reserve(h, now=now, expires_at=now + timedelta(minutes=15)) for h in [*holds, theirs])
    )
    assert outcomes[-1] is None
    mine = outcomes[:-1]
    assert sum(o is None for o in mine) == admitted - 1
    assert all(o.reason == reason and o.available == 0 for o in mine if o is not None)
    assert bulk == ([20] if reason is None else [])
    async with rt.db.read() as s:
        account = await s.get_one(CreditAccount, who.account_id)
        key = await s.get_one(ApiKey, who.key_id)
        held = await s.scalar(select(func.count()).select_from(HoldRow).where(HoldRow.account_id == who.account_id))
    assert account.held == admitted * CENT and key.held == admitted * CENT and held == admitted
    for hold, outcome in zip([first, *holds, theirs], [None, *outcomes], strict=True):
        if outcome is None:
            assert await store.void(hold, now=now)
    await check_ledger(rt)


async def test_a_batch_over_several_keys_and_pools_writes_what_one_by_one_would(rt, store):
    # Two people (two pools), three keys, uneven costs: every counter and every ledger balance the
    # batch writes is what settling the same holds one at a time writes.
    from teamrouter.domain.keys import service as keys

    first = await funded_person(rt, usd="10")
    second = await funded_person(rt, usd="5")
    extra = (await keys.create_key(rt, actor=first.actor, name="third")).key
    now = datetime.now(UTC)
    plan = [(first, first.key_id, 1000), (first, first.key_id, 2000), (first, extra.id, 4000)]
    plan += [(second, second.key_id, 8000), (second, second.key_id, 16000)]
    holds, records = [], []
    for who, key_id, cost in plan:
        hold = Hold(id=new_id("hold"), account_id=who.account_id, key_id=key_id, amount=CENT)
        assert await store.reserve(hold, now=now, expires_at=now + timedelta(minutes=15)) is None
        record = record_for(who, now, cost)
        record.key_id = key_id
        holds.append(hold)
        records.append(record)
    bulk = _count_bulk_batches(store)
    assert all(await asyncio.gather(*(store.settle(h, r, now=now) for h, r in zip(holds, records, strict=True))))
    assert sum(bulk) >= (5 if rt.db.is_sqlite else 4)  # all but the first, which goes alone
    async with rt.db.read() as s:
        for who, spent in ((first, 7000), (second, 24000)):
            account = await s.get_one(CreditAccount, who.account_id)
            assert account.held == 0
            entries = (
                await s.execute(
                    select(LedgerEntry.amount, LedgerEntry.balance_after).where(
                        LedgerEntry.account_id == who.account_id, LedgerEntry.kind == "usage"
                    )
                )
            ).all()
            chain = sorted(entries, key=lambda e: -e.balance_after)
            for before, after in itertools.pairwise(chain):
                assert after.balance_after == before.balance_after + after.amount
            assert chain[-1].balance_after == account.balance and -sum(e.amount for e in entries) == spent
        for key_id, spent in ((first.key_id, 3000), (extra.id, 4000), (second.key_id, 24000)):
            key = await s.get_one(ApiKey, key_id)
            assert (key.usage, key.usage_day, key.usage_week, key.usage_month, key.held) == (
                spent,
                spent,
                spent,
                spent,
                0,
            )
            assert key.last_used_at is not None and key.day_start == now.date()
        rollups = (
            await s.execute(
                select(UsageRollup.key_id, UsageRollup.requests, UsageRollup.cost, UsageRollup.tokens_prompt)
            )
        ).all()
    by_key = {r.key_id: (r.requests, r.cost) for r in rollups}
    assert by_key == {first.key_id: (2, 3000), extra.id: (1, 4000), second.key_id: (2, 24000)}
    await check_ledger(rt)
