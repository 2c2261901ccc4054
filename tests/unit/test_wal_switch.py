"""The WAL switch retries SQLite's at-once refusal (two connections opening a new file together) and
nothing else."""

from __future__ import annotations

import sqlite3
from typing import Any

import pytest

from teamrouter.storage.wal import use_wal


class Refusing:
    """An `execute` that SQLite refuses as locked `times` times, then accepts."""

    def __init__(self, times: int, message: str = "database is locked") -> None:
        self.times = times
        self.message = message
        self.calls: list[str] = []

    def __call__(self, statement: str) -> Any:
        if statement == "PRAGMA journal_mode":  # the read: a new file is in rollback mode
            return FakeCursor(("delete",))
        self.calls.append(statement)
        if len(self.calls) <= self.times:
            raise sqlite3.OperationalError(self.message)
        return FakeCursor(("wal",))


class FakeCursor:
    def __init__(self, row: tuple[str]) -> None:
        self.row = row

    def fetchone(self) -> tuple[str]:
        return self.row


def test_a_locked_refusal_is_tried_again_until_the_switch_is_made():
    execute = Refusing(times=3)
    use_wal(execute)
    assert execute.calls == ["PRAGMA journal_mode=WAL"] * 4


def test_a_lock_that_outlasts_the_bound_is_reported():
    execute = Refusing(times=10**6)
    with pytest.raises(sqlite3.OperationalError, match="locked"):
        use_wal(execute, seconds=0.1)
    assert 1 < len(execute.calls) < 100


def test_other_failures_are_not_retried():
    execute = Refusing(times=1, message="unable to open database file")
    with pytest.raises(sqlite3.OperationalError, match="unable to open"):
        use_wal(execute)
    assert len(execute.calls) == 1


def test_a_real_database_ends_in_wal(tmp_path):
    conn = sqlite3.connect(tmp_path / "new.db", isolation_level=None)
    try:
        use_wal(conn.execute)
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    finally:
        conn.close()


def test_a_database_already_in_wal_is_not_switched_again(tmp_path):
    conn = sqlite3.connect(tmp_path / "db.sqlite", isolation_level=None)
    try:
        use_wal(conn.execute)
        statements: list[str] = []

        def execute(statement: str) -> Any:
            statements.append(statement)
            return conn.execute(statement)

        use_wal(execute)
        assert statements == ["PRAGMA journal_mode"]  # a read, no lock to wait for
    finally:
        conn.close()
