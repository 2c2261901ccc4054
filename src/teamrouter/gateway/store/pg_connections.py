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
import time
from collections.abc import Awaitable, Callable

import asyncpg

from teamrouter.errors import ServiceUnavailable

Connect = Callable[[], Awaitable[asyncpg.Connection]]


# A connection idle this long is closed rather than reused (asyncpg's pool's default too): a NAT or
# firewall may have dropped its flow silently, and its first statement would then wait out the
# statement timeout before the retry.
MAX_IDLE_SECONDS = 300.0


class Connections:
    """At most `max_size` connections; those beyond `min_size` are opened on demand and kept."""

    def __init__(self, connect: Connect, *, max_size: int) -> None:
        self._connect = connect
        self._max_size = max_size
        # (connection, monotonic time it came back); taken from the right, the most recently used.
        self._idle: collections.deque[tuple[asyncpg.Connection, float]] = collections.deque()
        self._size = 0  # connections open, being opened, in use, or places held for a waiter
        # Requests waiting for a connection when all `max_size` places are taken. Each gets a
        # connection, or None: a place freed by a dropped connection, held for it to open its own
        # (counted in `_size` from the moment it is handed over, so no newcomer can take it too).
        self._waiters: collections.deque[asyncio.Future[asyncpg.Connection | None]] = collections.deque()
        self._closed = False

    @classmethod
    async def open(cls, connect: Connect, *, min_size: int, max_size: int) -> Connections:
        """Opens `min_size` connections now, so a database that cannot be reached fails start-up."""
        pool = cls(connect, max_size=max_size)
        try:
            for _ in range(min_size):
                pool._size += 1
                pool._idle.append((await pool._open_held(), time.monotonic()))
        except BaseException:
            await pool.close()
            raise
        return pool

    async def take(self) -> asyncpg.Connection:
        if self._closed:
            raise ServiceUnavailable("Store is shutting down")
        idle = self._idle
        if idle:
            stale = time.monotonic() - MAX_IDLE_SECONDS
            while idle and idle[0][1] < stale:  # the oldest are on the left
                self._drop(idle.popleft()[0])
            while idle:
                conn = idle.pop()[0]  # the most recently used: its socket and backend are warm
                if not conn.is_closed():
                    return conn
                self._size -= 1  # the server closed it while it sat here
        if self._size < self._max_size:
            self._size += 1
            return await self._open_held()
        waiter: asyncio.Future[asyncpg.Connection | None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            conn = await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.exception() is None:
                handed = waiter.result()  # handed over just as this request went away
                if handed is None:
                    self._size -= 1  # the place held for it
                self._pass_on(handed)
            raise
        return conn if conn is not None else await self._open_held()

    def give_back(self, conn: asyncpg.Connection) -> None:
        if self._closed or conn.is_closed() or conn.is_in_transaction():
            self._drop(conn)
            return
        self._pass_on(conn)

    async def close(self) -> None:
        """Closes the idle connections (at once, each bounded); one in use is terminated when it
        comes back."""
        self._closed = True
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_exception(ServiceUnavailable("Store is shutting down"))
        idle = [conn for conn, _ in self._idle]
        self._idle.clear()
        self._size -= len(idle)
        try:
            # Together: a database that does not answer costs one timeout, not one per connection.
            await asyncio.gather(*(conn.close(timeout=2) for conn in idle), return_exceptions=True)
        finally:
            for conn in idle:
                conn.terminate()  # any that did not close in time (or a cancelled close)

    async def _open_held(self) -> asyncpg.Connection:
        """Opens a connection in a place already counted in `_size`; frees the place if it fails."""
        try:
            return await self._connect()
        except BaseException:
            self._size -= 1
            self._pass_on(None)  # a waiter may succeed where this one failed
            raise

    def _drop(self, conn: asyncpg.Connection) -> None:
        conn.terminate()
        self._size -= 1
        self._pass_on(None)

    def _pass_on(self, conn: asyncpg.Connection | None) -> None:
        """To the first waiter still waiting (None: a free place, held for it), else a connection
        goes to the idle list."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                if conn is None:
                    self._size += 1
                waiter.set_result(conn)
                return
        if conn is not None:
            if self._closed:
                conn.terminate()
                self._size -= 1
            else:
                self._idle.append((conn, time.monotonic()))
