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
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import asyncpg

from teamrouter.errors import ServiceUnavailable, database_unavailable
from teamrouter.gateway.store import pg_sql, sql
from teamrouter.gateway.store.base import GenerationRecord, Hold, Refusal, key_refusal, pool_refusal
from teamrouter.gateway.store.pg_connections import Connect, Connections


class _Statement:
    def __init__(self, text: str) -> None:
        self.text, self.names = sql.numbered(text)

    def args(self, params: Mapping[str, Any]) -> list[Any]:
        return [params[name] for name in self.names]


_S = {name: _Statement(getattr(sql, name)) for name in sql.STATEMENTS}


_ONE = {
    "RESERVE_ONE": _Statement(pg_sql.RESERVE_ONE),
    "SETTLE_ONE": _Statement(pg_sql.SETTLE_ONE),
    "VOID_ONE": _Statement(pg_sql.VOID_ONE),
    "SETTLE_MANY": _Statement(pg_sql.SETTLE_MANY),
    "HOLD_STATE": _Statement(pg_sql.HOLD_STATE),
    "POSTED": _Statement(pg_sql.POSTED),
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


# The server rolled the statement back to break a deadlock or a serialization conflict.
_TRANSIENT = (asyncpg.exceptions.DeadlockDetectedError, asyncpg.exceptions.SerializationError)

APPLICATION_NAME = "teamrouter-gateway"


@dataclass(slots=True)
class _Settlement:
    params: dict[str, Any]
    generation_id: str
    future: asyncio.Future[bool]


def _rows(status: str) -> int:
    # asyncpg returns the command tag, e.g. "UPDATE 1".
    return int(status.rsplit(" ", 1)[-1])


class PostgresStore:
    def __init__(self, pool: Connections, holds: Connections) -> None:
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
        # Named, so operators (and the C23 test) can tell the hot path's backends in pg_stat_activity.
        named = {"application_name": APPLICATION_NAME}

        def opener(settings: dict[str, str]) -> Connect:
            async def connect() -> asyncpg.Connection:
                return await asyncpg.connect(
                    url, timeout=CONNECT_TIMEOUT, command_timeout=COMMAND_TIMEOUT, server_settings=settings
                )

            return connect

        pool = await Connections.open(opener(named), min_size=min_size, max_size=max_size)
        try:
            holds = await Connections.open(
                opener({**named, "synchronous_commit": "off"}), min_size=min_size, max_size=max_size
            )
        except BaseException:
            await pool.close()
            raise
        return cls(pool, holds)

    async def _run(self, pool: Connections, what: str, attempt: Callable[[Any, bool], Awaitable[_T]]) -> _T:
        """`attempt(conn, retried)` on a pooled connection; again on a fresh one if the connection dies.

        The success path costs a closure and a frame: no extra round trip, no timer beyond asyncpg's
        own statement timeout, no turn of the event loop to take or give back the connection."""
        first = time.monotonic()
        retries = iter(RETRY_DELAYS)
        retried = False
        attempts = 1
        while True:
            killed = False
            try:
                conn = await pool.take()
                try:
                    return await attempt(conn, retried)
                except _LOST as exc:
                    killed = not isinstance(exc, TimeoutError)
                    # In an unknown state: never reused, a fresh one is opened in its place.
                    conn.terminate()
                    raise
                except asyncio.CancelledError:
                    conn.terminate()  # cancelled mid-statement: its protocol state is unknown
                    raise
                finally:
                    pool.give_back(conn)
            except _LOST + _TRANSIENT as exc:
                if isinstance(exc, asyncpg.InterfaceError) and "closed" not in str(exc):
                    raise  # a misuse of the connection, not an outage
                # A transient error was rolled back whole by the server (the connection is fine):
                # safe to run again, as every operation is keyed by its hold; the lock order makes
                # these rare, and one that persists is raised as it is.
                transient = isinstance(exc, _TRANSIENT)
                delay = next(retries, None)
                elapsed = time.monotonic() - first
                window = KILLED_WINDOW if killed or transient else UNREACHABLE_WINDOW
                if delay is None or elapsed + delay > window:
                    if transient:
                        raise
                    log.warning(
                        "database unreachable during %s (%s): giving up after %d attempts in %.2f s",
                        what, type(exc).__name__, attempts, elapsed,
                    )  # fmt: skip
                    raise database_unavailable() from exc
                if transient:
                    log.warning("%s during %s: retrying", type(exc).__name__, what)
                else:
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
            # When both refuse, the tighter one is reported (as on SQLite).
            available = await self._value(conn, "POOL_AVAILABLE", params)
            if available is None or available < params["amount"]:
                return pool_refusal(available, await self._value(conn, "KEY_REMAINING", params))
            return key_refusal(await self._value(conn, "KEY_REMAINING", params))

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
        args = many.args(pg_sql.batch_params([op.params for op in ops])) if len(windows) == 1 else None

        posted_args = posted_query.args({"hold_ids": list(firsts), "generation_ids": [op.generation_id for op in ops]})

        async def attempt(conn: Any, retried: bool) -> set[str]:
            assert args is not None
            if retried:
                # The statement is all or nothing: if the earlier attempt committed, every hold of
                # the batch is posted for its generation, and nothing is to be done again.
                rows = await conn.fetch(posted_query.text, *posted_args)
                if rows:
                    return {row["id"] for row in rows}
            try:
                await conn.fetchval(many.text, *args)
            except asyncpg.DivisionByZeroError:
                if retried:
                    # The earlier attempt's server process may have committed after this attempt
                    # looked (a timed-out statement whose cancel never arrived): ask again.
                    return {row["id"] for row in await conn.fetch(posted_query.text, *posted_args)}
                return set()  # some hold was not open: nothing was written
            return set(firsts)

        try:
            posted = await self._run(self._pool, "settle", attempt) if args is not None else set()
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
