"""The PostgreSQL store's retry windows (TESTPLAN C23/C24), on a stand-in pool: connections killed
under an operation while the server accepts new ones are retried for longer than a server that
cannot be reached at all."""

from __future__ import annotations

import time
from typing import Any

import asyncpg
import pytest

from teamrouter.errors import ServiceUnavailable
from teamrouter.gateway.store import postgres


class _Conn:
    def terminate(self) -> None:
        pass


class _Pool:
    """Hands out connections, or refuses to open one when `refusing`."""

    def __init__(self, *, refusing: bool = False) -> None:
        self.refusing = refusing

    async def take(self) -> _Conn:
        if self.refusing:
            raise ConnectionRefusedError("connection refused")
        return _Conn()

    def give_back(self, conn: _Conn) -> None:
        pass


def _store() -> postgres.PostgresStore:
    return postgres.PostgresStore(_Pool(), _Pool())  # type: ignore[arg-type]


async def test_a_connection_killed_five_times_in_a_row_is_still_retried_to_success() -> None:
    kills = 5  # four attempts in 2 s, the old bound, would have given up
    calls: list[bool] = []

    async def attempt(conn: Any, retried: bool) -> str:
        calls.append(retried)
        if len(calls) <= kills:
            raise asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed in the middle")
        return "done"

    assert await _store()._run(_Pool(), "settle", attempt) == "done"
    assert calls == [False] + [True] * kills


async def test_a_connection_killed_every_time_gives_up_within_the_killed_window() -> None:
    async def attempt(conn: Any, retried: bool) -> None:
        raise asyncpg.exceptions.ConnectionDoesNotExistError("connection was closed in the middle")

    started = time.monotonic()
    with pytest.raises(ServiceUnavailable):
        await _store()._run(_Pool(), "settle", attempt)
    assert time.monotonic() - started <= postgres.KILLED_WINDOW + 0.5


async def test_an_unreachable_server_gives_up_within_the_unreachable_window() -> None:
    async def attempt(conn: Any, retried: bool) -> None:
        raise AssertionError("no connection was opened")

    started = time.monotonic()
    with pytest.raises(ServiceUnavailable):
        await _store()._run(_Pool(refusing=True), "reserve", attempt)
    assert time.monotonic() - started <= postgres.UNREACHABLE_WINDOW


async def test_a_deadlock_victim_is_run_again() -> None:
    # PostgreSQL rolled the statement back whole: running it again is safe (keyed by its hold), and
    # a reservation that lost a deadlock must not become a 500.
    calls: list[bool] = []

    async def attempt(conn: Any, retried: bool) -> str:
        calls.append(retried)
        if len(calls) <= 2:
            raise asyncpg.exceptions.DeadlockDetectedError("deadlock detected")
        return "done"

    assert await _store()._run(_Pool(), "reserve", attempt) == "done"
    assert calls == [False, True, True]
