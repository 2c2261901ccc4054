"""The SQLite hot-path store: inline stdlib `sqlite3` on the event loop.

Each statement costs tens of microseconds, less than a thread hop (aiosqlite adds ~0.3 ms a call), so
running them inline is the fast choice (DESIGN.md measures it). Writes start with BEGIN IMMEDIATE so
concurrent processes serialise on the write lock instead of failing. Automatic WAL checkpoints would
stall the loop for milliseconds; they are turned off here and run off the loop (see SqliteStore).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import operator
import os
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from teamrouter.errors import ServiceUnavailable, database_unavailable
from teamrouter.gateway.store import sql
from teamrouter.gateway.store.base import GenerationRecord, Hold, Refusal, key_refusal, pool_refusal
from teamrouter.storage.wal import use_wal

log = logging.getLogger(__name__)
CHECKPOINT_EVERY_SECONDS = 1.0
# Past this size the writer pauses for a TRUNCATE checkpoint, which resets the WAL file.
TRUNCATE_WAL_ABOVE_BYTES = 64 * 1024 * 1024
# Past this size the writer pauses for a RESTART checkpoint: under steady writes a PASSIVE one never
# catches up with the writer, so the WAL would only ever grow (measured: ~20 MB/s at 660 req/s)
# until the TRUNCATE above, a 100-250 ms stall on this machine. A RESTART copies what the last
# PASSIVE left and lets the next write start the WAL over: the file stays at ~13 MB, reused.
RESTART_WAL_ABOVE_BYTES = 4 * 1024 * 1024
LOCK_WAIT_SECONDS = 30.0
LOCK_RETRY_SECONDS = 0.0001
# Operations committed together at most; bounds how long one batch holds the loop.
MAX_BATCH = 64
# Passes of the event loop the writer lets run before it takes a batch, while each brings new work.
GATHER_PASSES = 8


class _Statement:
    """A shared `:name` statement bound positionally (sqlite3 binds a tuple faster than a dict)."""

    __slots__ = ("args", "text")

    def __init__(self, statement: str) -> None:
        self.text, names = sql.qmark(statement)
        getter = operator.itemgetter(*names)
        self.args: Callable[[Mapping[str, Any]], tuple[Any, ...]] = (
            getter if len(names) > 1 else lambda params: (getter(params),)
        )


_S = {name: _Statement(getattr(sql, name)) for name in sql.STATEMENTS}

RESERVE, SETTLE, VOID = "reserve", "settle", "void"


@dataclass(slots=True)
class _Op:
    kind: str
    params: dict[str, Any]
    future: asyncio.Future[Any]
    generation: tuple[Any, ...] | None = None  # settle only: the activity row, positionally
    rollup: dict[str, Any] | None = None  # settle only


class _Fallback(Exception):
    """The batch is not the common case the bulk path handles; apply it operation by operation."""


def _fail(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(
            _for_client(exc) if isinstance(exc, Exception) else ServiceUnavailable("Store is shutting down")
        )


def _for_client(exc: Exception) -> Exception:
    """A database that cannot be written (disk full, read-only, I/O error) is a 503 for the client,
    like PostgreSQL going away; anything else (a bug) stays what it is."""
    if isinstance(exc, sqlite3.OperationalError):
        log.warning("SQLite store unavailable: %s", exc)
        return database_unavailable()
    return exc


def _ts(value: datetime) -> str:
    # The format SQLAlchemy's SQLite DateTime uses (naive UTC), so both sides read each other's rows.
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    return value.replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


def _d(value: date) -> str:
    return value.isoformat()


class SqliteStore:
    """Group commit: one writer task per process drains queued reserve/settle/void operations into
    a single transaction, so concurrent requests share one WAL commit. Before it takes a batch it
    lets the event loop run while each pass brings more work (`_gather`). A request alone in its
    process (no other hold open) commits inline instead, without the hop to the writer; nothing ever
    waits on a timer.

    A batch of several operations takes the bulk path (`_apply_many`): its settlements as one
    executemany per insert, one UPDATE per account and per key with the batch's sums and one upsert
    per rollup row; its reservations as one guarded UPDATE per pool and per key with their summed
    amounts and one executemany of hold rows (a sum that does not fit is decided one reservation at
    a time). Anything unusual in it (a hold that is no longer open, an error) rolls the batch back and
    replays it one operation at a time under SAVEPOINTs, which is always correct; the bulk path is
    only faster.

    Never waits for the write lock while blocking the loop (see `_begin`). Automatic WAL
    checkpoints are off (they would stall the loop for milliseconds inside a COMMIT); once a second
    a PASSIVE checkpoint runs in a worker thread on its own connection while writes go on; once the
    WAL passes 4 MB the writer pauses for a RESTART (it copies only what the PASSIVE runs left, and
    the WAL file is then reused from its start), and for a TRUNCATE only past 64 MB.
    """

    def __init__(self, path: str) -> None:
        self._path = path
        self._conn = self._connect()
        # A plain deque: the writer is woken by `_wake`, so asyncio.Queue's own waiter bookkeeping
        # (on every put and get) would be paid for nothing.
        self._queue: collections.deque[_Op] = collections.deque()
        self._writer: asyncio.Task[None] | None = None
        self._wake = asyncio.Event()  # queued work, or a checkpoint that is due
        # The connection is in a transaction or checkpointing, or the writer is gathering a batch;
        # everything else queues.
        self._busy = False
        self._closed = False  # close() has begun: nothing new is accepted
        # Holds this process reserved and has not yet resolved: the concurrency the writer can batch.
        self._open = 0
        self._last_checkpoint = time.monotonic()
        self._background: sqlite3.Connection | None = None  # the PASSIVE checkpointer's connection
        self._passive: asyncio.Future[None] | None = None

    def _connect(self) -> sqlite3.Connection:
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False, timeout=30)
        use_wal(conn.execute)
        conn.execute("PRAGMA synchronous=NORMAL")
        # No foreign-key checks here: this connection only writes ids it has just read or updated in
        # the same transaction, and each check is another B-tree lookup on the hot path.
        conn.execute("PRAGMA foreign_keys=OFF")
        conn.execute("PRAGMA busy_timeout=0")
        conn.execute("PRAGMA wal_autocheckpoint=0")
        # The hot tables' upper B-tree levels stay in memory (the default is 2 MB).
        conn.execute("PRAGMA cache_size=-32768")
        # Statement journals (opened by every multi-index INSERT or upsert inside a transaction)
        # in memory, not temp files: measured 59 → 15 µs per activity-row insert.
        conn.execute("PRAGMA temp_store=MEMORY")
        return conn

    def _checkpoint(self, mode: str = "TRUNCATE") -> None:
        """RESTART or TRUNCATE, on the writer's own connection between transactions (in a worker
        thread, writes queueing meanwhile): copies every frame back, so the next write starts the
        WAL over; TRUNCATE also empties the file, at the price of a longer pause. When another
        process is reading it reports busy without waiting, and the next tick tries again."""
        try:
            self._conn.execute(f"PRAGMA wal_checkpoint({mode})").fetchall()
        except sqlite3.Error:
            log.warning("WAL checkpoint failed", exc_info=True)

    def _passive_checkpoint(self) -> None:
        """PASSIVE, in a worker thread on a connection of its own: copies frames back while the
        writer keeps committing (it takes no lock writers wait for). Once it has caught up, the next
        write transaction starts the WAL over from its beginning, so the file stops growing."""
        if self._background is None:
            self._background = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False)
        try:
            self._background.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchall()
        except sqlite3.Error:
            log.warning("WAL checkpoint failed", exc_info=True)

    def _wal_bytes(self) -> int:
        try:
            return os.path.getsize(self._path + "-wal")
        except OSError:
            return 0

    async def _begin(self) -> None:
        """BEGIN IMMEDIATE without ever blocking the loop on the write lock.

        Free (the common case): taken at once, inline. Held by another process: waited for in a
        worker thread that retries every 0.1 ms, so the loop goes on serving (uvloop's timers tick in
        whole milliseconds, too coarse for locks held a fraction of one, and spinning on the loop
        burnt the CPU the other process needed to finish). The holder may also be this process's
        own ORM transaction, which needs the loop to reach its COMMIT — another reason not to block it.
        """
        if self._try_begin():
            return
        abandoned = threading.Event()
        waiting = asyncio.ensure_future(
            asyncio.to_thread(self._wait_and_begin, time.monotonic() + LOCK_WAIT_SECONDS, abandoned)
        )
        try:
            began = await asyncio.shield(waiting)
        except asyncio.CancelledError:
            # The request went away while waiting. The thread stops at its next retry; a lock it took
            # just before would otherwise stay held by a transaction nobody ends.
            abandoned.set()
            if await waiting:
                self._conn.execute("ROLLBACK")
            raise
        if not began:
            raise ServiceUnavailable("Database is busy; try again", code="database_busy")

    def _try_begin(self) -> bool:
        try:
            self._conn.execute("BEGIN IMMEDIATE")
        except sqlite3.OperationalError as exc:
            if "locked" not in str(exc) and "busy" not in str(exc):
                raise
            return False
        return True

    def _wait_and_begin(self, deadline: float, abandoned: threading.Event) -> bool:
        while time.monotonic() < deadline and not abandoned.is_set():
            if self._try_begin():
                return True
            time.sleep(LOCK_RETRY_SECONDS)
        return False

    def _run(self, name: str, params: Mapping[str, Any]) -> sqlite3.Cursor:
        statement = _S[name]
        return self._conn.execute(statement.text, statement.args(params))

    def _value(self, name: str, params: Mapping[str, Any]) -> Any:
        """The first column of the first row. Reads every row, which resets the statement: a
        half-read statement keeps its read snapshot open and the WAL could never restart."""
        rows = self._run(name, params).fetchall()
        return rows[0][0] if rows else None

    # -- the public operations: queued for the writer ------------------------------------------

    async def reserve(self, hold: Hold, *, now: datetime, expires_at: datetime) -> Refusal | None:
        params = sql.reserve_params(hold, now=now, expires_at=expires_at, ts=_ts, day=_d)
        result: Refusal | None = await self._submit(_Op(RESERVE, params, self._future()), alone=self._open == 0)
        if result is None:
            self._open += 1
        return result

    async def settle(self, hold: Hold, record: GenerationRecord, *, now: datetime) -> bool:
        created = _ts(record.created_at)
        # The gateway settles at the record's own time: its text is formatted once for all three.
        ts = (lambda _: created) if now is record.created_at else _ts
        params = sql.settle_params(hold, record, now=now, ts=ts, day=_d)
        row = _generation_row(record, hold, created)
        op = _Op(SETTLE, params, self._future(), row, _rollup_params(record, created))
        try:
            settled: bool = await self._submit(op, alone=self._open <= 1)
        finally:
            self._open = max(self._open - 1, 0)
        return settled

    async def void(self, hold: Hold, *, now: datetime) -> bool:
        params = sql.void_params(hold, now=now, ts=_ts)
        try:
            voided: bool = await self._submit(_Op(VOID, params, self._future()), alone=self._open <= 1)
        finally:
            self._open = max(self._open - 1, 0)
        return voided

    # -- one operation at a time (inside the writer's transaction) -------------------------------

    def _reserve(self, params: dict[str, Any]) -> Refusal | None:
        if self._run("RESERVE_POOL", params).rowcount != 1:
            return pool_refusal(self._value("POOL_AVAILABLE", params), self._value("KEY_REMAINING", params))
        if self._run("RESERVE_KEY", params).rowcount != 1:
            return key_refusal(self._value("KEY_REMAINING", params))
        self._run("INSERT_HOLD", params)
        return None

    def _settle(self, op: _Op) -> bool:
        params = op.params
        if self._run("POST_HOLD", params).rowcount != 1:
            if self._run("POST_EXPIRED_HOLD", params).rowcount != 1:
                return False
            params["release"] = 0  # the sweeper already released it
        params["balance_after"] = self._value("SETTLE_POOL", params)
        self._run("INSERT_USAGE_ENTRY", params)
        self._run("SETTLE_KEY", params)
        assert op.generation is not None and op.rollup is not None
        self._conn.execute(_S["INSERT_GENERATION"].text, op.generation)
        self._run("UPSERT_ROLLUP", op.rollup)
        return True

    def _void(self, params: dict[str, Any]) -> bool:
        if self._run("VOID_HOLD", params).rowcount != 1:
            return False
        self._run("RELEASE_POOL", params)
        self._run("RELEASE_KEY", params)
        return True

    def _apply(self, op: _Op) -> Any:
        if op.kind == RESERVE:
            return self._reserve(op.params)
        if op.kind == SETTLE:
            return self._settle(op)
        return self._void(op.params)

    def _apply_each(self, batch: list[_Op]) -> list[tuple[_Op, Any, BaseException | None]]:
        """Each operation under its own SAVEPOINT: a failed or refused one leaves no trace."""
        conn = self._conn
        results: list[tuple[_Op, Any, BaseException | None]] = []
        for op in batch:
            conn.execute("SAVEPOINT op")
            try:
                value = self._apply(op)
            except Exception as exc:
                conn.execute("ROLLBACK TO op")
                conn.execute("RELEASE op")
                results.append((op, None, exc))
                continue
            if isinstance(value, Refusal):
                conn.execute("ROLLBACK TO op")  # a refused reservation leaves no trace
            conn.execute("RELEASE op")
            results.append((op, value, None))
        return results

    def _apply_alone(self, op: _Op) -> list[tuple[_Op, Any, BaseException | None]]:
        """A batch of one (every request at concurrency 1) needs no SAVEPOINT: its transaction is
        the operation, so a refusal or an error rolls the transaction back and COMMIT finds none."""
        try:
            value = self._apply(op)
        except Exception as exc:
            self._conn.execute("ROLLBACK")
            return [(op, None, exc)]
        if isinstance(value, Refusal):
            self._conn.execute("ROLLBACK")  # a refused reservation leaves no trace
        return [(op, value, None)]

    # -- the bulk path: a batch in a few statements ------------------------------------------------

    def _apply_many(self, batch: list[_Op]) -> list[tuple[_Op, Any, BaseException | None]]:
        """Settlements first (they only release), then voids, then reservations. The whole batch
        commits atomically, so this order is as valid as the queue's; it lets a reservation see the
        money its batch released. Settlements and reservations go in bulk when there are several."""
        settles: list[_Op] = []
        voids: list[_Op] = []
        reserves: list[_Op] = []
        for op in batch:
            (settles if op.kind == SETTLE else reserves if op.kind == RESERVE else voids).append(op)
        results = self._settle_bulk(settles) if len(settles) > 1 else self._apply_each(settles)
        results += self._apply_each(voids)
        reserved = self._reserve_bulk(reserves) if len(reserves) > 1 else None
        return results + (reserved if reserved is not None else self._apply_each(reserves))

    def _settle_bulk(self, settles: list[_Op]) -> list[tuple[_Op, Any, BaseException | None]]:
        """One executemany per insert, one UPDATE per account and per key with the batch's sums, one
        upsert per rollup row."""
        conn = self._conn
        post = _S["POST_HOLD"]
        if conn.executemany(post.text, [post.args(op.params) for op in settles]).rowcount != len(settles):
            raise _Fallback  # some hold was not open (expired, raced, repeated): go one by one
        accounts, keys = _by_pool_and_key(settles)
        rollups = sql.sum_rollups(op.rollup for op in settles if op.rollup is not None)
        for ops in accounts.values():
            balance = self._value("SETTLE_POOL", _summed(ops, "cost", "release"))
            # Each entry records the balance right after it, as if posted one by one in queue order.
            for op in reversed(ops):
                op.params["balance_after"] = balance
                balance += op.params["cost"]
        for ops in keys.values():
            self._run("SETTLE_KEY", _summed(ops, "cost", "release"))
        for name, rows in (("INSERT_USAGE_ENTRY", [op.params for op in settles]), ("UPSERT_ROLLUP", rollups)):
            statement = _S[name]
            conn.executemany(statement.text, [statement.args(row) for row in rows])
        conn.executemany(_S["INSERT_GENERATION"].text, [op.generation for op in settles if op.generation])
        return [(op, True, None) for op in settles]

    def _reserve_bulk(self, reserves: list[_Op]) -> list[tuple[_Op, Any, BaseException | None]] | None:
        """Several reservations as one guarded UPDATE per pool and per key with their summed
        amounts, and one executemany of the hold rows. The sum fits exactly when each would fit
        one after the other (amounts are positive), so this admits what the one-by-one path would.
        When a sum does not fit, some reservation must be refused: nothing is kept (None) and the
        caller decides each one by one."""
        conn = self._conn
        pools, keys = _by_pool_and_key(reserves)
        conn.execute("SAVEPOINT bulk")
        fits = all(self._run("RESERVE_POOL", _summed(ops, "amount")).rowcount == 1 for ops in pools.values()) and all(
            self._run("RESERVE_KEY", _summed(ops, "amount")).rowcount == 1 for ops in keys.values()
        )
        if not fits:
            conn.execute("ROLLBACK TO bulk")
            conn.execute("RELEASE bulk")
            return None
        insert = _S["INSERT_HOLD"]
        conn.executemany(insert.text, [insert.args(op.params) for op in reserves])
        conn.execute("RELEASE bulk")
        return [(op, None, None) for op in reserves]

    # -- group commit ----------------------------------------------------------------------------

    def _future(self) -> asyncio.Future[Any]:
        return asyncio.get_running_loop().create_future()

    async def _submit(self, op: _Op, *, alone: bool) -> Any:
        if self._closed:
            raise ServiceUnavailable("Store is shutting down")
        if alone and not self._busy and not self._queue:
            # No other request of this process holds money (always so at concurrency 1): commit
            # right here, without the two event-loop hops to the writer task and back. With others
            # in flight the writer batches instead — inline commits would each pay a whole COMMIT.
            self._busy = True
            try:
                await self._commit_batch([op])
            except BaseException:
                if op.future.done():
                    op.future.exception()  # reported by this raise; keep asyncio from logging it again
                raise
            finally:
                self._done_with_connection()
            if self._checkpoint_due():
                self._start_writer()  # it checkpoints when it finds nothing else to do
                self._wake.set()
            return op.future.result()
        self._start_writer()
        self._queue.append(op)
        self._wake.set()
        # Not shielded (a shield is another future and two callbacks per operation): a request
        # cancelled meanwhile cancels only its own future, which the writer then leaves alone (it
        # checks `done()` before reporting); the operation itself is still applied, as it may
        # already be. A cancelled reservation's hold is left to the sweeper either way.
        return await op.future

    def _start_writer(self) -> None:
        if self._writer is None:
            self._writer = asyncio.get_running_loop().create_task(self._write_forever(), name="sqlite-writer")

    def _done_with_connection(self) -> None:
        self._busy = False
        if self._queue:
            self._wake.set()  # operations queued while the connection was in use

    def _checkpoint_due(self) -> bool:
        return time.monotonic() - self._last_checkpoint >= CHECKPOINT_EVERY_SECONDS

    async def _write_forever(self) -> None:
        """Drains the queue whenever the connection is free, then checkpoints when one is due."""
        while True:
            await self._wake.wait()
            if self._busy:
                self._wake.clear()
                continue  # the inline path wakes us again when it is done
            self._busy = True
            try:
                await self._gather()
                self._wake.clear()  # everything queued so far is drained below
                await self._drain()
                await self._checkpoint_if_due()
            finally:
                self._done_with_connection()

    async def _gather(self) -> None:
        """Before taking a batch, let the requests already under way reach the queue: each pass of
        the event loop (no timer) runs those that are ready up to their store call. A batch costs
        about one COMMIT whatever its size; without this the writer took only what had queued during
        the previous COMMIT, and at moderate concurrency most batches were of one operation. Stops
        at the first pass that brings nothing new, so work arriving alone waits one pass."""
        for _ in range(GATHER_PASSES):
            queued = len(self._queue)
            if queued == 0 or queued >= MAX_BATCH:
                return
            await asyncio.sleep(0)
            if len(self._queue) == queued:
                return

    async def _drain(self) -> None:
        queue = self._queue
        while queue:
            batch = [queue.popleft() for _ in range(min(len(queue), MAX_BATCH))]
            await self._commit_batch(batch)

    async def _checkpoint_if_due(self) -> None:
        if not self._checkpoint_due():
            return
        self._last_checkpoint = time.monotonic()
        wal = self._wal_bytes()
        if wal > TRUNCATE_WAL_ABOVE_BYTES:
            # In a worker thread: the loop keeps serving; new operations queue meanwhile.
            await asyncio.to_thread(self._checkpoint)
        elif wal > RESTART_WAL_ABOVE_BYTES and (self._passive is None or self._passive.done()):
            await asyncio.to_thread(self._checkpoint, "RESTART")
        elif self._passive is None or self._passive.done():
            self._passive = asyncio.ensure_future(asyncio.to_thread(self._passive_checkpoint))

    async def _commit_batch(self, batch: list[_Op]) -> None:
        conn = self._conn
        try:
            await self._begin()
            if len(batch) == 1:
                results = self._apply_alone(batch[0])
            else:
                try:
                    results = self._apply_many(batch)
                except Exception as exc:
                    if not isinstance(exc, _Fallback):
                        log.warning("bulk path failed; replaying the batch one by one", exc_info=True)
                    conn.execute("ROLLBACK")
                    await self._begin()  # the replay recomputes every balance_after it writes
                    results = self._apply_each(batch)
            if conn.in_transaction:  # a lone refused or failed operation already rolled back
                conn.execute("COMMIT")
        except BaseException as exc:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            for op in batch:
                _fail(op.future, exc)
            if not isinstance(exc, Exception):
                raise
            return
        # Results are released only after COMMIT: nothing is reported that is not durable.
        for op, value, error in results:
            if op.future.done():
                continue
            if error is not None:
                op.future.set_exception(_for_client(error) if isinstance(error, Exception) else error)
            else:
                op.future.set_result(value)

    async def close(self) -> None:
        self._closed = True
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
        if self._passive is not None:
            with contextlib.suppress(Exception):
                await self._passive
        while self._queue:  # queued when the writer stopped: nobody will write these
            future = self._queue.popleft().future
            if not future.done():
                future.set_exception(ServiceUnavailable("Store is shutting down"))
        if self._background is not None:
            self._background.close()
        self._checkpoint()
        self._conn.close()


def _by_pool_and_key(ops: list[_Op]) -> tuple[dict[str, list[_Op]], dict[tuple[Any, ...], list[_Op]]]:
    """A batch's operations by pool (account id) and by key and spend windows (one set of windows
    per UPDATE: a batch may straddle midnight UTC), each group in queue order."""
    pools: dict[str, list[_Op]] = {}
    keys: dict[tuple[Any, ...], list[_Op]] = {}
    for op in ops:
        p = op.params
        pools.setdefault(p["account_id"], []).append(op)
        keys.setdefault((p["key_id"], p["day"], p["week"], p["month"]), []).append(op)
    return pools, keys


def _summed(ops: list[_Op], *amounts: str) -> dict[str, Any]:
    """One account's or key's share of a batch (the ops share its id) as one operation's parameters:
    the `amounts` named (a reservation's amount; a settlement's cost and release) summed, and the
    latest time for `updated_at`/`last_used_at`."""
    total = dict(ops[-1].params)
    for name in amounts:
        total[name] = sum(op.params[name] for op in ops)
    total["now"] = max(op.params["now"] for op in ops)
    return total


# The activity row is bound as a tuple in GENERATION_COLUMNS order (INSERT_GENERATION's `?n` order):
# one C-level attrgetter instead of a 27-entry dict per request.
assert sql.qmark(sql.INSERT_GENERATION)[1] == tuple("g_" + c for c in sql.GENERATION_COLUMNS)
_RECORD_FIELDS = operator.attrgetter(*(c for c in sql.GENERATION_COLUMNS if c != "hold_id"))
_HOLD_AT = sql.GENERATION_COLUMNS.index("hold_id")
_CREATED_AT = sql.GENERATION_COLUMNS.index("created_at")


def _generation_row(record: GenerationRecord, hold: Hold, created: str) -> tuple[Any, ...]:
    values = list(_RECORD_FIELDS(record))
    values.insert(_HOLD_AT, hold.id)
    values[_CREATED_AT] = created
    return tuple(values)


def _rollup_params(record: GenerationRecord, created: str) -> dict[str, Any]:
    values = sql.rollup_params(record)
    values["hour"] = created[:13] + ":00:00.000000"  # the hour of `created` in _ts's format
    return values
