"""The PostgreSQL hot-path store: asyncpg with statements prepared once per connection.

Every guarded UPDATE is re-checked by PostgreSQL under concurrency (READ COMMITTED re-evaluates the
WHERE on the latest row version), so admission holds across processes and machines.

An operation whose connection dies (backend terminated, connection reset or refused, a statement or
connect timing out) is retried on a fresh connection a bounded number of times (TESTPLAN C23), and
then fails with 503 (C24). Retrying is safe because each operation is keyed by its hold: a retried
reserve first looks for the hold row its earlier attempt may have committed, and a retried settle or
void that finds the hold already resolved by that earlier attempt reports success.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import operator
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import asyncpg
from sqlalchemy.dialects import postgresql

from teamrouter.errors import ServiceUnavailable, database_unavailable
from teamrouter.gateway.store import sql
from teamrouter.gateway.store.base import GenerationRecord, Hold, Refusal
from teamrouter.storage.models import metadata


class _Statement:
    def __init__(self, text: str) -> None:
        self.text, self.names = sql.numbered(text)

    def args(self, params: Mapping[str, Any]) -> list[Any]:
        return [params[name] for name in self.names]


_S = {name: _Statement(getattr(sql, name)) for name in sql.STATEMENTS}


_DIALECT = postgresql.dialect()  # type: ignore[no-untyped-call]  # SQLAlchemy's stub leaves it untyped


def _cast(table: str, column: str, param: str) -> str:
    """`CAST(:param AS <column type>)`: in INSERT … SELECT PostgreSQL cannot infer parameter types."""
    kind = metadata.tables[table].c[column].type.compile(dialect=_DIALECT)
    return f"CAST(:{param} AS {kind})"


def _insert_select(table: str, columns: tuple[str, ...], params: tuple[str, ...], tail: str) -> str:
    values = ", ".join(
        p if p.startswith(("'", "a.", "1")) else _cast(table, c, p) for c, p in zip(columns, params, strict=True)
    )
    return f"INSERT INTO {table} ({', '.join(columns)}) SELECT {values} {tail}"


_HOLD_COLUMNS = ("id", "account_id", "key_id", "amount", "status", "idempotency_key", "created_at", "expires_at")
_ROLLUP_COLUMNS = (
    "hour", "account_id", "key_id", "user_id", "model", "provider", "requests", "tokens_prompt",
    "tokens_completion", "tokens_reasoning", "tokens_cached", "cost",
)  # fmt: skip

# Reserve in one statement, so one round trip and one commit: the key's guarded UPDATE, then the
# pool's only if the key's succeeded, then the hold row. Rows are locked key first, then pool: the
# order every writer takes them in (see SETTLE_ONE); the opposite order deadlocked under A1. (The new
# hold row is nobody else's yet: it cannot be waited for.) A statement is all or nothing, so when the pool
# refuses after the key agreed, the final SELECT divides by zero on purpose: the error rolls back
# the key's hold.
RESERVE_ONE = (
    f"WITH k AS ({sql.RESERVE_KEY} RETURNING 1), "
    f"a AS ({sql.RESERVE_POOL} AND EXISTS (SELECT 1 FROM k) RETURNING 1), "
    "h AS ("
    + _insert_select(
        "credit_hold",
        _HOLD_COLUMNS,
        ("hold_id", "account_id", "key_id", "amount", "'open'", "idempotency_key", "now", "expires_at"),
        "WHERE EXISTS (SELECT 1 FROM a) RETURNING 1",
    )
    + ") SELECT CASE WHEN (SELECT count(*) FROM k) = 0 THEN 0 "
    "ELSE 1 / (SELECT count(*) FROM a) + (SELECT count(*) FROM h) END"
)

# Settle in one statement (atomic on its own): every write is gated on flipping the hold from open.
# Each data-modifying CTE reads the one before it, so PostgreSQL runs them in exactly this order
# (it documents none for CTEs that do not depend on each other): hold, key, pool, ledger, activity,
# rollup. That is the lock order every writer of these rows follows (reservations: key, pool; the
# sweeper: holds, keys, pools; a batch of settlements: all its holds, keys, pools, then rollups),
# so none can wait on another in a cycle. (Left to itself, PostgreSQL locked the rollup row first.)
SETTLE_ONE = (
    f"WITH h AS ({sql.POST_HOLD} RETURNING 1), "
    f"k AS ({sql.SETTLE_KEY} AND EXISTS (SELECT 1 FROM h) RETURNING 1), "
    "a AS (UPDATE credit_account SET held = held - :release, balance = balance - :cost, updated_at = :now "
    "WHERE id = :account_id AND EXISTS (SELECT 1 FROM k) RETURNING balance), "
    "le AS ("
    + _insert_select(
        "ledger_entry",
        (
            "id",
            "account_id",
            "amount",
            "kind",
            "idempotency_key",
            "transaction_id",
            "balance_after",
            "hold_id",
            "generation_id",
            "created_at",
        ),
        (
            "entry_id",
            "account_id",
            "amount",
            "'usage'",
            "idempotency_key",
            "entry_id",
            "a.balance",
            "hold_id",
            "generation_id",
            "now",
        ),
        "FROM a RETURNING 1",
    )
    + "), g AS ("
    + _insert_select(
        "generation",
        sql.GENERATION_COLUMNS,
        tuple("g_" + c for c in sql.GENERATION_COLUMNS),
        "WHERE EXISTS (SELECT 1 FROM le) RETURNING 1",
    )
    + "), r AS ("
    + _insert_select(
        "usage_rollup",
        _ROLLUP_COLUMNS,
        (
            "hour",
            "account_id",
            "key_id",
            "user_id",
            "model",
            "provider",
            "1",
            "tokens_prompt",
            "tokens_completion",
            "tokens_reasoning",
            "tokens_cached",
            "cost",
        ),
        "WHERE EXISTS (SELECT 1 FROM g) " + sql.UPSERT_ROLLUP[sql.UPSERT_ROLLUP.index("ON CONFLICT") :],
    )
    + ") SELECT count(*) FROM h"
)


def _unnest(*columns: tuple[str, str, str]) -> str:
    """`unnest(CAST(:param AS <column type>[]), …)` for (table, column, param) triples: a batch's rows
    as one array parameter per column."""
    arrays = []
    for table, column, param in columns:
        kind = metadata.tables[table].c[column].type.compile(dialect=_DIALECT)
        arrays.append(f"CAST(:{param} AS {kind}[])")
    return f"unnest({', '.join(arrays)})"


def _sums(table: str, prefix: str, touched: str) -> str:
    """The batch's sums per row of `table` (keys, pools): id, release, cost, and the latest time."""
    return _unnest(
        (table, "id", f"{prefix}_ids"),
        ("credit_hold", "amount", f"{prefix}_releases"),
        ("credit_hold", "amount", f"{prefix}_costs"),
        (table, touched, f"{prefix}_nows"),
    )


# A batch of settlements in one statement, so one round trip and one commit: the rows that a batch
# locks (holds, keys, pools, rollups) stay locked only while it runs and its WAL flushes, where a
# transaction of separate statements held them over seven round trips while every reservation of
# the pool queued behind them. Every write is gated on flipping all the batch's holds from open: if
# any was not (expired by the sweeper, settled before), the SELECT divides by zero on purpose, the
# statement rolls back whole, and the batch goes one by one through SETTLE_ONE. The CTEs read each
# other in the lock order of SETTLE_ONE (holds, keys, pools, then rollups); each array is sorted by
# the row it locks, so two batches take their rows in the same order. Keys and pools get one update
# each with the batch's sums (an UPDATE cannot change a row twice); the caller sends only batches
# within one set of spend windows. Each ledger entry's balance_after is the pool's new balance plus
# the costs of the entries after it (`later`), as if the batch had been posted one by one.
SETTLE_MANY = (
    "WITH h AS (UPDATE credit_hold SET status = 'posted', posted_amount = s.cost, resolved_at = s.now, "
    "generation_id = s.generation_id FROM "
    + _unnest(
        ("credit_hold", "id", "hold_ids"),
        ("credit_hold", "posted_amount", "hold_costs"),
        ("credit_hold", "resolved_at", "hold_nows"),
        ("credit_hold", "generation_id", "generation_ids"),
    )
    + " AS s (hold_id, cost, now, generation_id) "
    "WHERE credit_hold.id = s.hold_id AND (credit_hold.status = 'open') IS TRUE RETURNING 1), "
    "ok AS (SELECT 1 / (CASE WHEN (SELECT count(*) FROM h) = :expected THEN 1 ELSE 0 END) AS one), "
    f"k AS (UPDATE api_key SET {sql.settle_key_set('ks.release', 'ks.cost', 'ks.now')} FROM "
    + _sums("api_key", "key", "last_used_at")
    + " AS ks (key_id, release, cost, now) "
    "WHERE api_key.id = ks.key_id AND (SELECT one FROM ok) = 1 RETURNING 1), "
    "a AS (UPDATE credit_account SET held = held - p.release, balance = balance - p.cost, updated_at = p.now FROM "
    + _sums("credit_account", "account", "updated_at")
    + " AS p (account_id, release, cost, now) "
    "WHERE credit_account.id = p.account_id AND EXISTS (SELECT 1 FROM k) "
    "RETURNING credit_account.id, credit_account.balance), "
    "le AS (INSERT INTO ledger_entry (id, account_id, amount, kind, idempotency_key, transaction_id, "
    "balance_after, hold_id, generation_id, created_at) "
    "SELECT e.id, e.account_id, e.amount, 'usage', e.idempotency_key, e.id, a.balance + e.later, e.hold_id, "
    "e.generation_id, e.created_at FROM "
    + _unnest(
        *(
            ("ledger_entry", c, f"entry_{c}")
            for c in ("id", "account_id", "amount", "idempotency_key", "hold_id", "generation_id", "created_at")
        ),
        ("ledger_entry", "balance_after", "entry_later"),
    )
    + " AS e (id, account_id, amount, idempotency_key, hold_id, generation_id, created_at, later) "
    "JOIN a ON a.id = e.account_id RETURNING 1), "
    f"g AS (INSERT INTO generation ({', '.join(sql.GENERATION_COLUMNS)}) SELECT * FROM "
    + _unnest(*(("generation", c, f"g_{c}") for c in sql.GENERATION_COLUMNS))
    + " AS gen WHERE EXISTS (SELECT 1 FROM le) RETURNING 1), "
    f"r AS (INSERT INTO usage_rollup ({', '.join(_ROLLUP_COLUMNS)}) SELECT * FROM "
    + _unnest(*(("usage_rollup", c, f"r_{c}") for c in _ROLLUP_COLUMNS))
    + " AS roll WHERE EXISTS (SELECT 1 FROM g) "
    + sql.UPSERT_ROLLUP[sql.UPSERT_ROLLUP.index("ON CONFLICT") :]
    + ") SELECT count(*) FROM h"
)

# Void in one statement (one round trip, where BEGIN, three statements and COMMIT took five: 0.85 ms
# p50 here), in the same lock order: hold, key, pool, each CTE reading the one before it. Key rows
# are never deleted (soft delete), so the key's update always finds its row.
VOID_ONE = (
    f"WITH h AS ({sql.VOID_HOLD} RETURNING 1), "
    f"k AS ({sql.RELEASE_KEY} AND EXISTS (SELECT 1 FROM h) RETURNING 1), "
    f"a AS ({sql.RELEASE_POOL} AND EXISTS (SELECT 1 FROM k) RETURNING 1) "
    "SELECT count(*) FROM a"
)

# Only read when an attempt is retried: what the earlier attempt, whose outcome is unknown, did.
HOLD_STATE = "SELECT status, generation_id FROM credit_hold WHERE id = :hold_id"

# Which holds of a batch an earlier attempt of SETTLE_MANY posted, when its connection died.
POSTED = (
    "SELECT id FROM credit_hold WHERE id = ANY(:hold_ids) AND status = 'posted' "
    "AND generation_id = ANY(:generation_ids)"
)

_ONE = {
    "RESERVE_ONE": _Statement(RESERVE_ONE),
    "SETTLE_ONE": _Statement(SETTLE_ONE),
    "VOID_ONE": _Statement(VOID_ONE),
    "SETTLE_MANY": _Statement(SETTLE_MANY),
    "HOLD_STATE": _Statement(HOLD_STATE),
    "POSTED": _Statement(POSTED),
}

# Settlements written by one transaction at most (one WAL flush for all of them).
MAX_SETTLE_BATCH = 64

log = logging.getLogger(__name__)
_T = TypeVar("_T")

# Bounds on a database that is gone (C24): a request gets its 503 within about
# COMMAND_TIMEOUT + CONNECT_TIMEOUT (~7 s) when packets vanish, within ~1.5 s when connections are
# refused or reset. The statements here take milliseconds; under A1's contention, lock waits stay
# well under a second.
CONNECT_TIMEOUT = 2.0  # seconds to open a connection
COMMAND_TIMEOUT = 5.0  # seconds for one statement (asyncpg cancels it, then the attempt is retried)
RETRY_DELAYS = (0.05, 0.25, 1.0, 1.0, 1.0, 1.0, 1.0)  # seconds before the 2nd, 3rd, ... attempt
# No new attempt starts later than this after the first began, when the last attempt could not
# connect or its statement timed out: the database is unreachable, and a client should hear so soon.
UNREACHABLE_WINDOW = 2.0
# ... and when the last attempt had a connection that died under it: the server accepts connections,
# so another attempt is likely to succeed, and giving up would lose an answer already paid for
# upstream (C23 kills busy backends every 50-200 ms; four attempts in 2 s were not always enough).
KILLED_WINDOW = 6.0

# The connection died under the operation, or could not be made; the statement may or may not have
# committed. (InterfaceError counts only when the connection it came from is closed: otherwise it is
# a programming error, not an outage.)
_LOST = (
    asyncpg.PostgresConnectionError,  # class 08, and asyncpg's "connection was closed in the middle"
    asyncpg.exceptions.OperatorInterventionError,  # class 57: pg_terminate_backend, shutdown, cancel
    asyncpg.InterfaceError,
    # A backend terminated while its connection sat in the pool: its FATAL message is read before the
    # socket closes, and the next statement finds the protocol still "consuming an error".
    asyncpg.exceptions.InternalClientError,
    OSError,  # refused, reset, unreachable
    TimeoutError,  # connect or statement timeout
)


APPLICATION_NAME = "teamrouter-gateway"


@dataclass(slots=True)
class _Settlement:
    params: dict[str, Any]
    generation_id: str
    future: asyncio.Future[bool]


async def _keep_session(_connection: Any) -> None:
    return None


def _rows(status: str) -> int:
    # asyncpg returns the command tag, e.g. "UPDATE 1".
    return int(status.rsplit(" ", 1)[-1])


def _batch_params(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """SETTLE_MANY's parameters from settlements of distinct holds in one set of spend windows: one
    array per column, each sorted by the row it locks; keys, pools and rollup rows summed."""
    by_hold = sorted(batch, key=operator.itemgetter("hold_id"))
    params: dict[str, Any] = {
        "expected": len(batch),
        "hold_ids": [p["hold_id"] for p in by_hold],
        "hold_costs": [p["cost"] for p in by_hold],
        "hold_nows": [p["now"] for p in by_hold],
        "generation_ids": [p["generation_id"] for p in by_hold],
        "day": batch[0]["day"],
        "week": batch[0]["week"],
        "month": batch[0]["month"],
    }
    for prefix, field in (("key", "key_id"), ("account", "account_id")):
        releases: dict[str, int] = {}
        costs: dict[str, int] = {}
        latest: dict[str, Any] = {}
        for p in batch:
            row = p[field]
            releases[row] = releases.get(row, 0) + p["release"]
            costs[row] = costs.get(row, 0) + p["cost"]
            latest[row] = max(latest.get(row, p["now"]), p["now"])
        ids = sorted(releases)
        params[f"{prefix}_ids"] = ids
        params[f"{prefix}_releases"] = [releases[i] for i in ids]
        params[f"{prefix}_costs"] = [costs[i] for i in ids]
        params[f"{prefix}_nows"] = [latest[i] for i in ids]
    # Each entry's balance is the pool's new balance plus the costs posted after it in the batch.
    later: list[int] = []
    after: dict[str, int] = {}
    for p in reversed(batch):
        later.append(after.get(p["account_id"], 0))
        after[p["account_id"]] = after.get(p["account_id"], 0) + p["cost"]
    later.reverse()
    params["entry_later"] = later
    for column, field in _ENTRY_FIELDS:
        params[f"entry_{column}"] = [p[field] for p in batch]
    for column in sql.GENERATION_COLUMNS:
        params[f"g_{column}"] = [p[f"g_{column}"] for p in batch]
    rollups: dict[tuple[Any, ...], dict[str, Any]] = {}
    for p in batch:
        slot = sql.rollup_slot(p)
        summed = rollups.get(slot)
        if summed is None:
            rollups[slot] = {c: p[c] for c in _ROLLUP_COLUMNS}
        else:
            for c in _ROLLUP_COLUMNS[6:]:  # the counters, after the six columns of the row's identity
                summed[c] += p[c]
    ordered = [rollups[slot] for slot in sorted(rollups)]
    for column in _ROLLUP_COLUMNS:
        params[f"r_{column}"] = [r[column] for r in ordered]
    return params


# The ledger entry's columns in SETTLE_MANY, from the settle parameters' names.
_ENTRY_FIELDS = (
    ("id", "entry_id"), ("account_id", "account_id"), ("amount", "amount"), ("idempotency_key", "idempotency_key"),
    ("hold_id", "hold_id"), ("generation_id", "generation_id"), ("created_at", "now"),
)  # fmt: skip


class PostgresStore:
    def __init__(self, pool: asyncpg.Pool, holds: asyncpg.Pool) -> None:
        self._pool = pool
        self._holds = holds
        # Group commit for settlements (see `settle`): those that arrive while one is being written.
        self._queue: list[_Settlement] = []
        self._settling = False
        self._drainer: asyncio.Task[None] | None = None

    @classmethod
    async def connect(cls, url: str, *, min_size: int = 2, max_size: int = 10) -> PostgresStore:
        """Two pools. Settlements use durable commits: an answer is sent only once its billing is on
        disk. Reservations and voids use `synchronous_commit = off`: a database crash can lose the
        last fraction of a second of them, which loses only holds (the held money is free again and
        the request's settlement then finds no hold: the answer goes unbilled, as for any request in
        flight during a crash), never money; and a settlement's durable commit also makes its own
        reservation durable, the WAL being sequential. It saves the part of the WAL flush a request
        would wait for before its upstream call (0.16–0.19 ms and 3.0–3.5 ms on the two disks
        measured)."""
        # No reset on release: by default asyncpg runs RESET ALL / UNLISTEN / advisory unlocks (one round
        # trip) each time a connection goes back. This store never sets session state, so skip it.
        options: dict[str, Any] = {
            "min_size": min_size,
            "max_size": max_size,
            "reset": _keep_session,
            "timeout": CONNECT_TIMEOUT,
            "command_timeout": COMMAND_TIMEOUT,
        }
        # Named, so operators (and the C23 test) can tell the hot path's backends in pg_stat_activity.
        named = {"application_name": APPLICATION_NAME}
        pool = await asyncpg.create_pool(url, server_settings=named, **options)
        holds = await asyncpg.create_pool(url, server_settings={**named, "synchronous_commit": "off"}, **options)
        return cls(pool, holds)

    async def _run(self, pool: asyncpg.Pool, what: str, attempt: Callable[[Any, bool], Awaitable[_T]]) -> _T:
        """`attempt(conn, retried)` on a pooled connection; again on a fresh one if the connection dies.

        The success path costs a closure and a frame: no extra round trip, no timer beyond asyncpg's
        own statement timeout."""
        first = time.monotonic()
        retries = iter(RETRY_DELAYS)
        retried = False
        attempts = 1
        while True:
            killed = False
            try:
                async with pool.acquire() as conn:
                    try:
                        return await attempt(conn, retried)
                    except _LOST as exc:
                        killed = not isinstance(exc, TimeoutError)
                        # In an unknown state: never reused, the pool opens a fresh one. (A connection
                        # that closed has already gone back to the pool on its own.)
                        with contextlib.suppress(asyncpg.InterfaceError):
                            conn.terminate()
                        raise
            except _LOST as exc:
                if isinstance(exc, asyncpg.InterfaceError) and "closed" not in str(exc):
                    raise  # a misuse of the connection, not an outage
                delay = next(retries, None)
                elapsed = time.monotonic() - first
                window = KILLED_WINDOW if killed else UNREACHABLE_WINDOW
                if delay is None or elapsed + delay > window:
                    log.warning(
                        "database unreachable during %s (%s): giving up after %d attempts in %.2f s",
                        what, type(exc).__name__, attempts, elapsed,
                    )  # fmt: skip
                    raise database_unavailable() from exc
                log.warning("database connection lost during %s (%s): retrying", what, type(exc).__name__)
            await asyncio.sleep(delay)
            retried = True
            attempts += 1

    async def _exec(self, conn: Any, name: str, params: Mapping[str, Any]) -> int:
        statement = _S[name]
        return _rows(await conn.execute(statement.text, *statement.args(params)))

    async def _value(self, conn: Any, name: str, params: Mapping[str, Any]) -> Any:
        statement = _S[name]
        return await conn.fetchval(statement.text, *statement.args(params))

    async def _hold_state(self, conn: Any, params: Mapping[str, Any]) -> Any:
        return await conn.fetchrow(_ONE["HOLD_STATE"].text, *_ONE["HOLD_STATE"].args(params))

    async def reserve(self, hold: Hold, *, now: datetime, expires_at: datetime) -> Refusal | None:
        params = sql.reserve_params(hold, now=now, expires_at=expires_at)
        statement = _ONE["RESERVE_ONE"]

        async def attempt(conn: Any, retried: bool) -> Refusal | None:
            # The reservation is one statement that also writes the hold row: if an earlier attempt's
            # commit got through before its connection died, that row is there and nothing is redone.
            if retried and await self._hold_state(conn, params) is not None:
                return None
            try:
                if await conn.fetchval(statement.text, *statement.args(params)) == 2:
                    return None  # key, pool and hold row written
            except asyncpg.DivisionByZeroError:
                pass  # the key agreed, the pool refused
            # When both refuse, the pool's reason is the one reported (as on SQLite, which asks the
            # pool first).
            available = await self._value(conn, "POOL_AVAILABLE", params)
            if available is None or available < params["amount"]:
                return Refusal("insufficient_credits", max(int(available or 0), 0))
            remaining = await self._value(conn, "KEY_REMAINING", params)
            return Refusal("key_limit_reached", max(int(remaining or 0), 0))

        return await self._run(self._holds, "reserve", attempt)

    async def settle(self, hold: Hold, record: GenerationRecord, *, now: datetime) -> bool:
        """Durable before it returns. A settlement alone in this process is one statement, as at
        concurrency 1; those arriving while another is being written wait and then go together, in
        one transaction: the pool's and the key's rows stay locked until a commit's WAL flush (0.35 to
        4 ms on the disks measured), so one commit per settlement would cap every pool at one
        settlement per flush (a few hundred a second on the slower disk), whatever the number of
        processes."""
        params = sql.settle_params(hold, record, now=now)
        params.update(sql.generation_params(record, hold.id))
        params.update(sql.rollup_params(record))
        if self._settling:
            op = _Settlement(params, record.id, asyncio.get_running_loop().create_future())
            self._queue.append(op)
            return await asyncio.shield(op.future)
        self._settling = True
        try:
            return await self._settle_alone(params, record.id)
        finally:
            if self._queue:
                self._drainer = asyncio.get_running_loop().create_task(self._drain(), name="pg-settle-batches")
            else:
                self._settling = False

    async def _drain(self) -> None:
        batch: list[_Settlement] = []
        try:
            while self._queue:
                batch = self._queue[:MAX_SETTLE_BATCH]
                del self._queue[:MAX_SETTLE_BATCH]
                try:
                    outcomes = await self._settle_together(batch)
                except Exception as exc:  # each waiting request gets it as its own
                    outcomes = [exc] * len(batch)
                for op, outcome in zip(batch, outcomes, strict=True):
                    if op.future.done():
                        continue
                    if isinstance(outcome, BaseException):
                        op.future.set_exception(outcome)
                    else:
                        op.future.set_result(outcome)
        finally:
            self._settling = False
            for op in batch + self._queue:  # cancelled (shutdown): nobody will write these
                if not op.future.done():
                    op.future.set_exception(ServiceUnavailable("Store is shutting down"))
            self._queue.clear()

    async def _settle_together(self, batch: list[_Settlement]) -> list[bool | BaseException]:
        """One statement for the batch (SETTLE_MANY). A hold it did not post (the sweeper expired it,
        or it was settled before: then none of the batch is posted), a second settlement of one hold
        in the same batch, a batch that straddles midnight UTC (two sets of spend windows), and a
        batch that failed for any other reason than a lost connection go through the one-by-one
        path, which decides each exactly as if it had come alone."""
        if len(batch) == 1:
            return [await self._settle_alone(batch[0].params, batch[0].generation_id)]
        firsts: dict[str, _Settlement] = {}
        for op in batch:
            firsts.setdefault(op.params["hold_id"], op)
        ops = list(firsts.values())
        many = _ONE["SETTLE_MANY"]
        posted_query = _ONE["POSTED"]
        windows = {(op.params["day"], op.params["week"], op.params["month"]) for op in ops}
        args = many.args(_batch_params([op.params for op in ops])) if len(windows) == 1 else None

        posted_args = posted_query.args({"hold_ids": list(firsts), "generation_ids": [op.generation_id for op in ops]})

        async def attempt(conn: Any, retried: bool) -> set[str]:
            if args is None:
                return set()
            if retried:
                # The statement is all or nothing: if the earlier attempt committed, every hold of
                # the batch is posted for its generation, and nothing is to be done again.
                rows = await conn.fetch(posted_query.text, *posted_args)
                if rows:
                    return {row["id"] for row in rows}
            try:
                await conn.fetchval(many.text, *args)
            except asyncpg.DivisionByZeroError:
                return set()  # some hold was not open: nothing was written
            return set(firsts)

        try:
            posted = await self._run(self._pool, "settle", attempt)
        except ServiceUnavailable:
            raise
        except Exception:
            log.warning("batched settlement failed; settling its %d one by one", len(batch), exc_info=True)
            posted = set()
        outcomes: list[bool | BaseException] = []
        for op in batch:
            if firsts[op.params["hold_id"]] is op and op.params["hold_id"] in posted:
                outcomes.append(True)
                continue
            try:
                outcomes.append(await self._settle_alone(op.params, op.generation_id))
            except Exception as exc:  # this request's own failure
                outcomes.append(exc)
        return outcomes

    async def _settle_alone(self, params: dict[str, Any], generation_id: str) -> bool:
        statement = _ONE["SETTLE_ONE"]

        async def attempt(conn: Any, retried: bool) -> bool:
            if await conn.fetchval(statement.text, *statement.args(params)) == 1:
                return True
            # Not open: already resolved, or expired by the sweeper while the answer streamed.
            async with conn.transaction():
                if await self._exec(conn, "POST_EXPIRED_HOLD", params) == 1:
                    late = {**params, "release": 0}  # the sweeper already released it
                    await self._exec(conn, "SETTLE_KEY", late)  # the lock order: hold, key, pool, rollup
                    late["balance_after"] = await self._value(conn, "SETTLE_POOL", late)
                    for name in ("INSERT_USAGE_ENTRY", "INSERT_GENERATION", "UPSERT_ROLLUP"):
                        await self._exec(conn, name, late)
                    return True
            if not retried:
                return False
            # The hold carries the generation it was posted for: if it is this one, the earlier
            # attempt committed before its connection died, and this settlement has happened.
            state = await self._hold_state(conn, params)
            return state is not None and state["generation_id"] == generation_id

        return await self._run(self._pool, "settle", attempt)

    async def void(self, hold: Hold, *, now: datetime) -> bool:
        params = sql.void_params(hold, now=now)
        statement = _ONE["VOID_ONE"]

        async def attempt(conn: Any, retried: bool) -> bool:
            if await conn.fetchval(statement.text, *statement.args(params)) == 1:
                return True
            # Only this request voids its hold: voided means the earlier attempt committed.
            return (
                retried and (state := await self._hold_state(conn, params)) is not None and state["status"] == "voided"
            )

        return await self._run(self._holds, "void", attempt)

    async def close(self) -> None:
        if self._drainer is not None and not self._drainer.done():
            with contextlib.suppress(Exception):
                await asyncio.wait_for(asyncio.shield(self._drainer), COMMAND_TIMEOUT)
        await self._pool.close()
        await self._holds.close()
