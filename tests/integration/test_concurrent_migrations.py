"""Instances starting together on a new database (TESTPLAN B): every one migrates, none fails.

Processes are started first and released together by a barrier, so their migrations overlap (with
separate `teamrouter serve` commands Python's start-up spreads them out and the race hides)."""

from __future__ import annotations

import asyncio
import multiprocessing
import uuid

import asyncpg
import pytest
from sqlalchemy.engine import make_url
from tests.support.databases import backend, postgres_url

from teamrouter.storage import migrate

pytestmark = pytest.mark.db
PROCESSES = 4


def _migrate(url: str, start: multiprocessing.synchronize.Barrier, results: multiprocessing.Queue) -> None:
    start.wait()
    try:
        migrate.upgrade(url, quiet=True)
        results.put("ok")
    except Exception as exc:  # reported to the test, which shows it
        results.put(f"{type(exc).__name__}: {exc}")


def _race(url: str) -> list[str]:
    context = multiprocessing.get_context("fork")
    start = context.Barrier(PROCESSES)
    results: multiprocessing.Queue = context.Queue()
    processes = [context.Process(target=_migrate, args=(url, start, results)) for _ in range(PROCESSES)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=60)
    return [results.get(timeout=5) for _ in processes]


async def _admin(statement: str) -> None:
    conn = await asyncpg.connect(make_url(postgres_url()).set(drivername="postgresql").render_as_string(False))
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


def test_concurrent_migrations_of_a_new_database_all_succeed(tmp_path):
    for attempt in range(3):  # the race is lost most times without the lock; three tries make it sure
        if backend() == "postgres":
            name = f"trfix_migrate_{uuid.uuid4().hex[:8]}"
            asyncio.run(_admin(f'CREATE DATABASE "{name}"'))
            url = make_url(postgres_url()).set(database=name).render_as_string(hide_password=False)
        else:
            name = ""
            url = f"sqlite:///{tmp_path / f'new{attempt}.db'}"
        try:
            assert _race(url) == ["ok"] * PROCESSES
        finally:
            if name:
                asyncio.run(_admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
