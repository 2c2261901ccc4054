"""The PostgreSQL store's lean connection pool, on stand-in connections: its bound, its waiters, and
that a connection in an unknown state is never handed out again. (The gateway's PostgreSQL tests,
C23's killed backends among them, run it against the real server.)"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any

import pytest

from teamrouter.errors import ServiceUnavailable
from teamrouter.gateway.store import pg_connections
from teamrouter.gateway.store.pg_connections import Connections


class _Conn:
    numbers = itertools.count(1)

    def __init__(self) -> None:
        self.number = next(self.numbers)
        self.closed = False
        self.in_transaction = False

    def is_closed(self) -> bool:
        return self.closed

    def is_in_transaction(self) -> bool:
        return self.in_transaction

    def terminate(self) -> None:
        self.closed = True

    async def close(self, timeout: float | None = None) -> None:
        self.closed = True


class _Server:
    def __init__(self, *, refusing: bool = False) -> None:
        self.opened: list[_Conn] = []
        self.refusing = refusing

    async def connect(self) -> Any:
        await asyncio.sleep(0)
        if self.refusing:
            raise ConnectionRefusedError("connection refused")
        self.opened.append(_Conn())
        return self.opened[-1]


async def test_connections_are_reused_and_opened_only_up_to_the_bound() -> None:
    server = _Server()
    pool = await Connections.open(server.connect, min_size=1, max_size=2)
    first = await pool.take()
    pool.give_back(first)
    assert await pool.take() is first  # reused, not reopened
    second = await pool.take()
    assert len(server.opened) == 2
    third = asyncio.ensure_future(pool.take())
    await asyncio.sleep(0.01)
    assert not third.done() and len(server.opened) == 2  # waits at the bound
    pool.give_back(second)
    assert await third is second
    await pool.close()


async def test_a_connection_in_an_unknown_state_is_dropped_and_its_place_reopened_for_a_waiter() -> None:
    server = _Server()
    pool = await Connections.open(server.connect, min_size=0, max_size=1)
    conn = await pool.take()
    waiting = asyncio.ensure_future(pool.take())
    await asyncio.sleep(0.01)
    conn.in_transaction = True  # e.g. abandoned inside a transaction
    pool.give_back(conn)
    fresh = await waiting
    assert fresh is not conn and conn.closed and not fresh.closed
    pool.give_back(fresh)
    fresh.closed = True  # the server closed it while it sat idle
    again = await pool.take()
    assert again is not fresh and len(server.opened) == 3
    await pool.close()


async def test_a_waiter_cancelled_as_it_was_handed_a_connection_passes_it_on() -> None:
    server = _Server()
    pool = await Connections.open(server.connect, min_size=0, max_size=1)
    conn = await pool.take()
    first = asyncio.ensure_future(pool.take())
    second = asyncio.ensure_future(pool.take())
    await asyncio.sleep(0.01)
    pool.give_back(conn)  # handed to `first` ...
    first.cancel()  # ... which goes away before it runs
    assert await second is conn
    with pytest.raises(asyncio.CancelledError):
        await first
    await pool.close()


async def test_a_failed_open_frees_its_place() -> None:
    server = _Server(refusing=True)
    pool = await Connections.open(server.connect, min_size=0, max_size=1)
    with pytest.raises(ConnectionRefusedError):
        await pool.take()
    server.refusing = False
    conn = await pool.take()  # the place the failed attempt held is free again
    assert conn is server.opened[0]
    await pool.close()


async def test_close_fails_waiters_closes_idle_connections_and_terminates_one_in_use() -> None:
    server = _Server()
    pool = await Connections.open(server.connect, min_size=2, max_size=2)
    busy = await pool.take()
    other = await pool.take()
    waiting = asyncio.ensure_future(pool.take())
    await asyncio.sleep(0.01)
    pool.give_back(other)  # goes to the waiter
    assert await waiting is other
    pool.give_back(other)
    await pool.close()
    assert other.closed and not busy.closed
    pool.give_back(busy)
    assert busy.closed
    with pytest.raises(ServiceUnavailable):
        await pool.take()


async def test_a_request_waiting_when_the_store_closes_hears_so() -> None:
    pool = await Connections.open(_Server().connect, min_size=1, max_size=1)
    await pool.take()
    waiting = asyncio.ensure_future(pool.take())
    await asyncio.sleep(0.01)
    await pool.close()
    with pytest.raises(ServiceUnavailable):
        await waiting


async def test_a_place_freed_for_a_waiter_is_not_taken_by_a_newcomer_in_the_same_turn() -> None:
    server = _Server()
    pool = await Connections.open(server.connect, min_size=0, max_size=2)
    first, second = await pool.take(), await pool.take()
    waiting = asyncio.ensure_future(pool.take())
    await asyncio.sleep(0.01)
    first.closed = True  # its backend was terminated
    # A request arriving in the same turn (its first step runs before the waiter wakes) ...
    newcomer = asyncio.ensure_future(pool.take())
    pool.give_back(first)  # ... must not take the place this frees, which is held for the waiter
    await asyncio.sleep(0.01)
    assert waiting.done() and not newcomer.done()
    assert len([c for c in server.opened if not c.closed]) == 2  # never more than max_size
    pool.give_back(second)
    assert await newcomer is second
    await pool.close()


async def test_a_waiter_cancelled_as_the_store_closes_stays_cancelled() -> None:
    pool = await Connections.open(_Server().connect, min_size=1, max_size=1)
    await pool.take()
    waiting = asyncio.ensure_future(pool.take())
    await asyncio.sleep(0.01)
    closing = asyncio.ensure_future(pool.close())
    await asyncio.sleep(0)
    waiting.cancel()
    await closing
    with pytest.raises(asyncio.CancelledError):
        await waiting


async def test_a_connection_idle_too_long_is_closed_not_reused(monkeypatch) -> None:
    server = _Server()
    pool = await Connections.open(server.connect, min_size=1, max_size=2)
    old = server.opened[0]
    monkeypatch.setattr(pg_connections, "MAX_IDLE_SECONDS", 0.0)
    await asyncio.sleep(0.01)
    fresh = await pool.take()
    assert fresh is not old and old.closed
    await pool.close()
