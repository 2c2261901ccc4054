"""The SQLite hot-path store: inline stdlib `sqlite3` on the event loop.

Each statement costs tens of microseconds, less than a thread hop (aiosqlite adds ~0.3 ms a call), so
running them inline is the fast choice (DESIGN.md measures it). Writes start with BEGIN IMMEDIATE so
concurrent processes serialise on the write lock instead of failing. Automatic WAL checkpoints would
stall the loop for milliseconds; they are turned off here and run by the writer in a worker thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sqlite3
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from teamrouter.errors import ServiceUnavailable
from teamrouter.gateway.store import sql
from teamrouter.gateway.store.base import GenerationRecord, Hold, Refusal

log = logging.getLogger(__name__)
CHECKPOINT_EVERY_SECONDS = 1.0
LOCK_WAIT_SECONDS = 30.0
# Operations committed together at most; bounds how long one batch holds the loop (~30 µs each).
MAX_BATCH = 32


@dataclass(slots=True)
class _Op:
    work: Callable[[], Any]
    undo_if: Callable[[Any], bool] | None
    future: asyncio.Future[Any]


def _is_refusal(value: Any) -> bool:
    return isinstance(value, Refusal)


def _fail(future: asyncio.Future[Any], exc: BaseException) -> None:
    if not future.done():
        future.set_exception(exc if isinstance(exc, Exception) else ServiceUnavailable("Store is shutting down"))


def _ts(value: datetime) -> str:
    # The format SQLAlchemy's SQLite DateTime uses (naive UTC), so both sides read each other's rows.
    if value.tzinfo is not UTC:
        value = value.astimezone(UTC)
    return value.replace(tzinfo=None).isoformat(sep=" ", timespec="microseconds")


def _d(value: date) -> str:
    return value.isoformat()


class SqliteStore:
    """Group commit: one writer task per process drains queued reserve/settle/void operations into
    a single transaction (a SAVEPOINT each), so concurrent requests share one WAL commit. At
    concurrency 1 an operation commits at once; nothing waits on a timer.

    Never waits for the write lock while blocking the loop. Automatic WAL checkpoints are off (they
    would stall the loop for milliseconds inside a COMMIT); the writer checkpoints in a worker thread
    between batches instead.

    The lock may be held by this very process's async ORM transaction, which needs the event loop to
    reach its COMMIT; a blocking busy-wait here would deadlock until the timeout. So BEGIN IMMEDIATE
    is tried without waiting and retried after short asynchronous sleeps.
    """

    def __init__(self, path: str) -> None:
        self._path = path
        self._conn = self._connect(autocheckpoint=False)
        self._queue: asyncio.Queue[_Op] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None
        self._last_checkpoint = time.monotonic()

    def _connect(self, *, autocheckpoint: bool) -> sqlite3.Connection:
        conn = sqlite3.connect(self._path, isolation_level=None, check_same_thread=False, timeout=30)
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        # No foreign-key checks here: this connection only writes ids it has just read or updated in
        # the same transaction, and each check is another B-tree lookup on the hot path.
        conn.execute("PRAGMA foreign_keys=OFF")
        conn.execute("PRAGMA busy_timeout=0" if not autocheckpoint else "PRAGMA busy_timeout=30000")
        if not autocheckpoint:
            conn.execute("PRAGMA wal_autocheckpoint=0")
        return conn

    def _checkpoint(self) -> None:
        # On the writer's own connection, between transactions. TRUNCATE, because with a steady
        # writer a PASSIVE checkpoint was seen never to restart the WAL (it grew past 300 MB); when
        # another process is reading it reports busy without waiting, and the next one succeeds.
        try:
            self._conn.execute("PRAGMA wal_checkpoint(TRUNCATE)").fetchall()
        except sqlite3.Error:
            log.warning("WAL checkpoint failed", exc_info=True)

    async def _begin(self) -> None:
        delay = 0.0002
        deadline = time.monotonic() + LOCK_WAIT_SECONDS
        while True:
            try:
                self._conn.execute("BEGIN IMMEDIATE")
                return
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) and "busy" not in str(exc):
                    raise
                if time.monotonic() > deadline:
                    raise ServiceUnavailable("Database is busy; try again", code="database_busy") from exc
            await asyncio.sleep(delay)
            delay = min(delay * 2, 0.01)

    def _run(self, statement: str, params: Mapping[str, Any]) -> sqlite3.Cursor:
        return self._conn.execute(statement, params)

    def _value(self, statement: str, params: Mapping[str, Any]) -> Any:
        """The first column of the first row. Reads every row, which resets the statement: a
        half-read statement keeps its read snapshot open and the WAL could never restart."""
        rows = self._conn.execute(statement, params).fetchall()
        return rows[0][0] if rows else None

    # -- operations: each runs inside the writer's transaction, under its own SAVEPOINT ---------

    def _reserve(self, hold: Hold, params: dict[str, Any]) -> Refusal | None:
        if self._run(sql.RESERVE_POOL, params).rowcount != 1:
            available = self._value(sql.POOL_AVAILABLE, params)
            return Refusal("insufficient_credits", max(int(available or 0), 0))
        if self._run(sql.RESERVE_KEY, params).rowcount != 1:
            remaining = self._value(sql.KEY_REMAINING, params)
            return Refusal("key_limit_reached", max(int(remaining or 0), 0))
        self._run(sql.INSERT_HOLD, params)
        return None

    def _settle(self, hold: Hold, record: GenerationRecord, params: dict[str, Any]) -> bool:
        if self._run(sql.POST_HOLD, params).rowcount != 1:
            if self._run(sql.POST_EXPIRED_HOLD, params).rowcount != 1:
                return False
            params["release"] = 0  # the sweeper already released it
        params["balance_after"] = self._value(sql.SETTLE_POOL, params)
        self._run(sql.INSERT_USAGE_ENTRY, params)
        self._run(sql.SETTLE_KEY, params)
        self._run(sql.INSERT_GENERATION, _generation_params(record, hold))
        self._run(sql.UPSERT_ROLLUP, _rollup_params(record))
        return True

    def _void(self, params: dict[str, Any]) -> bool:
        if self._run(sql.VOID_HOLD, params).rowcount != 1:
            return False
        self._run(sql.RELEASE_POOL, params)
        self._run(sql.RELEASE_KEY, params)
        return True

    async def reserve(self, hold: Hold, *, now: datetime, expires_at: datetime) -> Refusal | None:
        params = sql.reserve_params(hold, now=now, expires_at=expires_at, ts=_ts, day=_d)
        result: Refusal | None = await self._submit(lambda: self._reserve(hold, params), undo_if=_is_refusal)
        return result

    async def settle(self, hold: Hold, record: GenerationRecord, *, now: datetime) -> bool:
        params = sql.settle_params(hold, record, now=now, ts=_ts, day=_d)
        settled: bool = await self._submit(lambda: self._settle(hold, record, params))
        return settled

    async def void(self, hold: Hold, *, now: datetime) -> bool:
        params = sql.void_params(hold, now=now, ts=_ts)
        voided: bool = await self._submit(lambda: self._void(params))
        return voided

    # -- group commit ----------------------------------------------------------------------------

    async def _submit(self, work: Callable[[], Any], *, undo_if: Callable[[Any], bool] | None = None) -> Any:
        if self._writer is None:
            self._writer = asyncio.get_running_loop().create_task(self._write_forever(), name="sqlite-writer")
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._queue.put_nowait(_Op(work, undo_if, future))
        # Shielded: a cancelled request must not cancel the shared writer's bookkeeping.
        return await asyncio.shield(future)

    async def _write_forever(self) -> None:
        while True:
            batch = [await self._queue.get()]
            while len(batch) < MAX_BATCH and not self._queue.empty():
                batch.append(self._queue.get_nowait())
            await self._commit_batch(batch)
            if time.monotonic() - self._last_checkpoint >= CHECKPOINT_EVERY_SECONDS:
                # In a worker thread: the loop keeps serving; new operations queue for the next batch.
                await asyncio.to_thread(self._checkpoint)
                self._last_checkpoint = time.monotonic()

    async def _commit_batch(self, batch: list[_Op]) -> None:
        try:
            await self._begin()
        except BaseException as exc:
            for op in batch:
                _fail(op.future, exc)
            if not isinstance(exc, Exception):
                raise
            return
        conn = self._conn
        results: list[tuple[_Op, Any, BaseException | None]] = []
        try:
            for op in batch:
                conn.execute("SAVEPOINT op")
                try:
                    value = op.work()
                except Exception as exc:
                    conn.execute("ROLLBACK TO op")
                    conn.execute("RELEASE op")
                    results.append((op, None, exc))
                    continue
                if op.undo_if is not None and op.undo_if(value):
                    conn.execute("ROLLBACK TO op")  # a refused reservation leaves no trace
                conn.execute("RELEASE op")
                results.append((op, value, None))
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
                op.future.set_exception(error)
            else:
                op.future.set_result(value)

    async def close(self) -> None:
        if self._writer is not None:
            self._writer.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._writer
        self._checkpoint()
        self._conn.close()


def _generation_params(record: GenerationRecord, hold: Hold) -> dict[str, Any]:
    values = sql.generation_params(record, hold.id)
    values["g_created_at"] = _ts(record.created_at)
    return values


def _rollup_params(record: GenerationRecord) -> dict[str, Any]:
    values = sql.rollup_params(record)
    values["hour"] = _ts(values["hour"])
    return values
