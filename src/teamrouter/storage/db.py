"""The engine and units of work.

`Database.uow()` is the only way to write: it opens a transaction, yields a `UnitOfWork`, commits on
success, rolls back on error, and only then runs callbacks registered with `on_commit` (emails,
cache invalidation), so a side effect never announces a change that did not happen.

SQLite: WAL, a busy timeout, foreign keys on, and every write transaction starts with
`BEGIN IMMEDIATE` so two writers never both read-then-upgrade and deadlock into "database is locked".
Read-only work (`Database.read()`) starts a deferred transaction and never blocks writers.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event, text
from sqlalchemy.exc import DBAPIError
from sqlalchemy.ext.asyncio import (
    AsyncEngine,
    AsyncSession,
    async_sessionmaker,
    create_async_engine,
)

from teamrouter.storage.urls import async_url, is_sqlite
from teamrouter.storage.wal import use_wal

log = logging.getLogger(__name__)

AfterCommit = Callable[[], Awaitable[None] | None]


class UnitOfWork:
    def __init__(self, session: AsyncSession) -> None:
        self.session = session
        self._after_commit: list[AfterCommit] = []

    @property
    def dialect(self) -> str:
        return self.session.get_bind().dialect.name

    def on_commit(self, callback: AfterCommit) -> None:
        self._after_commit.append(callback)

    async def _run_after_commit(self) -> None:
        for callback in self._after_commit:
            try:
                result = callback()
                if result is not None:
                    await result
            except Exception:  # a side effect failing must not turn a committed change into an error
                log.exception("after-commit callback failed")


class Database:
    def __init__(self, url: str, *, echo: bool = False, pool_size: int = 10) -> None:
        self.url = url
        self.is_sqlite = is_sqlite(url)
        kwargs: dict[str, Any] = {"echo": echo}
        if self.is_sqlite:
            path = async_url(url).database
            if path and path != ":memory:":
                Path(path).parent.mkdir(parents=True, exist_ok=True)
            kwargs["connect_args"] = {"timeout": 30}
        else:
            # Bounded waits (TESTPLAN C24): a database that drops packets instead of refusing would
            # otherwise hold a request for asyncpg's 60 s connect timeout, or forever mid-statement.
            # 30 s per statement leaves room for the largest analytics and export queries.
            kwargs.update(
                pool_size=pool_size,
                max_overflow=pool_size,
                pool_pre_ping=True,
                pool_timeout=10,
                connect_args={"timeout": 5, "command_timeout": 30},
            )
        # A database error's message would otherwise quote the statement's parameters, and a logged
        # error then an outbox mail's one-time link, an address or a key hash.
        self.engine: AsyncEngine = create_async_engine(async_url(url), hide_parameters=True, **kwargs)
        if self.is_sqlite:
            _configure_sqlite(self.engine)
        self._writer = async_sessionmaker(self.engine, expire_on_commit=False)
        self._reader = async_sessionmaker(
            self.engine.execution_options(sqlite_begin="DEFERRED"), expire_on_commit=False
        )
        # What the last ping found (None: no ping yet), so a database that stays down is logged
        # once when it goes and once when it is back, not on every probe of every worker.
        self._answered: bool | None = None

    @asynccontextmanager
    async def uow(self) -> AsyncIterator[UnitOfWork]:
        async with self._writer() as session:
            unit = UnitOfWork(session)
            async with session.begin():
                yield unit
        await unit._run_after_commit()

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncSession]:
        async with self._reader() as session, session.begin():
            yield session

    # The timeout is ours, not the caller's: a probe cancelled from outside could not note that
    # the database stopped answering (packets vanishing look exactly like that).
    async def ping(self, timeout: float | None = None) -> bool:  # noqa: ASYNC109
        """Whether the database answers `SELECT 1` (within `timeout` seconds); logs changes only."""
        try:
            async with asyncio.timeout(timeout), self.engine.connect() as conn:
                await conn.execute(text("SELECT 1"))
        except Exception as exc:
            if self._answered is not False:
                log.warning("database unreachable: %s", describe_failure(exc))
            self._answered = False
            return False
        if self._answered is False:
            log.warning("database reachable again")
        self._answered = True
        return True

    async def dispose(self) -> None:
        await self.engine.dispose()


def describe_failure(exc: BaseException) -> str:
    """One line for a log or an operator: the driver's error, never a URL, a password or a statement."""
    cause: BaseException = exc.orig if isinstance(exc, DBAPIError) and exc.orig is not None else exc
    if isinstance(cause, TimeoutError):
        return "no answer in time"
    lines = str(cause).strip().splitlines()
    return f"{type(cause).__name__}: {lines[0][:300]}" if lines else type(cause).__name__


def _configure_sqlite(engine: AsyncEngine) -> None:
    sync_engine = engine.sync_engine

    @event.listens_for(sync_engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        # Take transaction control away from the driver so our BEGIN is the one that runs.
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA busy_timeout=30000")
        # The adapted cursor's execute returns nothing; its rows are read from the cursor itself.
        use_wal(lambda statement: (cursor.execute(statement), cursor)[1])
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA temp_store=MEMORY")  # statement journals: memory, not temp files
        cursor.close()

    @event.listens_for(sync_engine, "begin")
    def _on_begin(conn: Any) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "IMMEDIATE")
        conn.exec_driver_sql(f"BEGIN {mode}")
