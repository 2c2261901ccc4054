"""What PostgreSQL alone costs a JSON request at concurrency 1, measured beside `make bench`'s table.

A JSON answer waits for two round trips to the database: the reservation (before the upstream call)
and the settlement (a durable commit, before the answer leaves). Their medians through the real
`PostgresStore`, next to a bare `SELECT 1` on the same pool, give the floor that no amount of work
on the gateway's own CPU can go under on this machine.
"""

from __future__ import annotations

import statistics
import time
from datetime import UTC, datetime, timedelta

from tests.support.gateway import Funded, record_for

from teamrouter.gateway.store.base import Hold
from teamrouter.gateway.store.postgres import PostgresStore
from teamrouter.ids import new_id

ROUNDS = 2000
WARMUP = 200


async def postgres_floor(url: str, who: Funded) -> str:
    """One line: median SELECT 1, reservation and settlement times, in milliseconds."""
    store = await PostgresStore.connect(url)
    select, reserve, settle = [], [], []
    try:
        for _ in range(ROUNDS):
            conn = await store._pool.take()
            started = time.perf_counter()
            await conn.fetchval("SELECT 1")
            select.append(time.perf_counter() - started)
            store._pool.give_back(conn)
            hold = Hold(id=new_id("hold"), account_id=who.account_id, key_id=who.key_id, amount=1000)
            now = datetime.now(UTC)
            started = time.perf_counter()
            refusal = await store.reserve(hold, now=now, expires_at=now + timedelta(minutes=5))
            reserve.append(time.perf_counter() - started)
            assert refusal is None, refusal
            record = record_for(who, datetime.now(UTC), 500)
            started = time.perf_counter()
            assert await store.settle(hold, record, now=record.created_at)
            settle.append(time.perf_counter() - started)
    finally:
        await store.close()

    def median(samples: list[float]) -> float:
        return statistics.median(samples[WARMUP:]) * 1000

    return (
        f"PostgreSQL round trips (median of {ROUNDS - WARMUP}, this run): SELECT 1 {median(select):.3f} ms, "
        f"reservation {median(reserve):.3f} ms, settlement with its durable commit {median(settle):.3f} ms"
    )
