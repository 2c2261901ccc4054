"""A lean pool of asyncpg connections for the PostgreSQL hot-path store.

asyncpg's own pool costs about 50 µs per acquire and release here (measured beside a bare
`SELECT 1`): its release runs under `asyncio.shield`, which is a new task and one more turn of the
event loop, and it wraps every connection in a proxy and re-arms an inactivity timer each time. A
request takes a connection twice (reserve, settle), so at concurrency 1 that was ~0.1 ms of its
added latency. The store needs none of it: its connections never carry session state (no SET, no
LISTEN, no open transaction between operations), so taking one is popping it from a list and giving
it back is pushing it again.

A connection whose state is unknown (it died, a statement timed out, or its task was cancelled
mid-statement) is terminated by the store before it comes back; one that comes back closed or inside
a transaction is dropped, and its place is free for a new one.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
from collections.abc import Awaitable, Callable

import asyncpg

from teamrouter.errors import ServiceUnavailable

Connect = Callable[[], Awaitable[asyncpg.Connection]]


class Connections:
    """At most `max_size` connections; those beyond `min_size` are opened on demand and kept."""

    def __init__(self, connect: Connect, *, max_size: int) -> None:
        self._connect = connect
        self._max_size = max_size
        self._idle: collections.deque[asyncpg.Connection] = collections.deque()
        self._size = 0  # connections open, being opened, or in use
        # Requests waiting for a connection when all `max_size` are in use. Each gets a connection,
        # or None when a dropped connection freed a place (it then opens its own).
        self._waiters: collections.deque[asyncio.Future[asyncpg.Connection | None]] = collections.deque()
        self._closed = False

    @classmethod
    async def open(cls, connect: Connect, *, min_size: int, max_size: int) -> Connections:
        """Opens `min_size` connections now, so a database that cannot be reached fails start-up."""
        pool = cls(connect, max_size=max_size)
        try:
            for _ in range(min_size):
                pool._idle.append(await pool._open())
        except BaseException:
            await pool.close()
            raise
        return pool

    async def take(self) -> asyncpg.Connection:
        if self._closed:
            raise ServiceUnavailable("Store is shutting down")
        while self._idle:
            conn = self._idle.pop()  # the most recently used: its socket and backend are warm
            if not conn.is_closed():
                return conn
            self._size -= 1  # the server closed it while it sat here
        if self._size < self._max_size:
            return await self._open()
        waiter: asyncio.Future[asyncpg.Connection | None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            conn = await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self._pass_on(waiter.result())  # handed over just as this request went away
            raise
        return conn if conn is not None else await self._open()

    def give_back(self, conn: asyncpg.Connection) -> None:
        if self._closed or conn.is_closed() or conn.is_in_transaction():
            conn.terminate()
            self._size -= 1
            self._pass_on(None)
            return
        self._pass_on(conn)

    async def close(self) -> None:
        """Closes the idle connections; one still in use is terminated when it comes back."""
        self._closed = True
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(ServiceUnavailable("Store is shutting down"))
        idle = list(self._idle)
        self._idle.clear()
        self._size -= len(idle)
        for conn in idle:
            with contextlib.suppress(Exception):
                await conn.close(timeout=2)

    async def _open(self) -> asyncpg.Connection:
        self._size += 1
        try:
            return await self._connect()
        except BaseException:
            self._size -= 1
            self._pass_on(None)  # a waiter may succeed where this one failed
            raise

    def _pass_on(self, conn: asyncpg.Connection | None) -> None:
        """To the first waiter still waiting, else (a connection) to the idle list."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(conn)
                return
        if conn is not None:
            if self._closed:
                conn.terminate()
                self._size -= 1
            else:
                self._idle.append(conn)
