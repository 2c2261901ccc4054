"""TESTPLAN C22: workers killed with SIGKILL at random points under mixed traffic, then restarted by
the server's supervisor. Afterwards the database is intact, every answer a client received complete
is billed exactly once, the holds the dead workers left behind expire, and I1–I6 hold."""

from __future__ import annotations

import asyncio
import os
import random
import signal
import sqlite3
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiohttp
import orjson
import pytest
from sqlalchemy import select
from sqlalchemy.engine import make_url
from tests.support.credits import check_ledger
from tests.support.gateway import funded_person, script, start_gateway

from teamrouter.config import load_settings
from teamrouter.domain.activity.models import Generation
from teamrouter.domain.credits import holds
from teamrouter.domain.credits.models import Hold, LedgerEntry
from teamrouter.runtime import build_runtime

pytestmark = pytest.mark.db

CLIENTS = 24
KILLS = 4


def _workers(supervisor_pid: int) -> list[int]:
    children = Path(f"/proc/{supervisor_pid}/task/{supervisor_pid}/children").read_text().split()
    return [int(pid) for pid in children]


async def _client(url: str, key: str, stop: asyncio.Event, seen: dict[str, bool], rng: random.Random) -> None:
    """Requests in a loop; records each generation id and whether its answer arrived complete."""
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    async with aiohttp.ClientSession(headers=headers) as http:
        while not stop.is_set():
            stream = rng.random() < 0.6
            # Slow enough that kills land before, during and after the upstream answers.
            line = script(content="a b c d e f", chunks=6, chunk_delay_ms=rng.randint(0, 30))
            body = {"model": "test/chat", "messages": [{"role": "user", "content": line}], "max_tokens": 32}
            if stream:
                body["stream"] = True
            try:
                async with http.post(url, data=orjson.dumps(body), timeout=aiohttp.ClientTimeout(total=10)) as answer:
                    generation_id = answer.headers.get("X-Generation-Id", "")
                    payload = await answer.read()
                    if answer.status != 200:
                        continue
                    complete = payload.rstrip().endswith(b"data: [DONE]") if stream else bool(orjson.loads(payload))
                    seen[generation_id] = complete
            except (aiohttp.ClientError, TimeoutError, orjson.JSONDecodeError):
                continue  # the worker died under this request: not complete, may or may not be billed


@pytest.fixture
def database(db_factory) -> str:
    return db_factory.create()  # synchronous: the PostgreSQL factory runs its own event loop


async def test_c22_killed_workers_lose_nothing_a_client_received(database, tmp_path, fake, passwords):
    settings = load_settings({}, env="dev", database_url=database, var_dir=str(tmp_path / "rt"), secret_key="c" * 48)
    rt = build_runtime(settings, passwords=passwords)
    try:
        who = await funded_person(rt, usd="1000")
        server = start_gateway(tmp_path, database, fake.url, workers=2)
        rng = random.Random(22)
        seen: dict[str, bool] = {}
        stop = asyncio.Event()
        url = f"{server.base_url}/api/v1/chat/completions"
        try:
            clients = [
                asyncio.create_task(_client(url, who.key, stop, seen, random.Random(rng.random())))
                for _ in range(CLIENTS)
            ]
            assert server.proc is not None
            killed = 0
            deadline = time.monotonic() + 30
            while killed < KILLS and time.monotonic() < deadline:
                await asyncio.sleep(rng.uniform(0.3, 0.9))
                workers = _workers(server.proc.pid)
                if len(workers) < 2:
                    continue  # the supervisor is still replacing the last one
                os.kill(rng.choice(workers), signal.SIGKILL)
                killed += 1
            await asyncio.sleep(1.5)  # traffic goes on through the restarted workers
            stop.set()
            await asyncio.gather(*clients)
        finally:
            server.stop()
        assert killed == KILLS
        complete = {gid for gid, done in seen.items() if done}
        assert len(complete) > 50, "too little traffic to say anything"

        if make_url(database).get_backend_name() == "sqlite":
            with sqlite3.connect(make_url(database).database) as conn:
                assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"

        # Whatever the dead workers still held is released by the sweeper once it expires.
        later = datetime.now(UTC) + timedelta(seconds=settings.hold_ttl_seconds + 1)
        await holds.expire_holds(rt, now=later)
        async with rt.db.read() as session:
            billed = set((await session.scalars(select(Generation.id).where(Generation.cost > 0))).all())
            entries = set(
                (await session.scalars(select(LedgerEntry.generation_id).where(LedgerEntry.kind == "usage"))).all()
            )
            still_open = await session.scalar(select(Hold.id).where(Hold.status == "open").limit(1))
        assert complete <= billed, f"{len(complete - billed)} complete answers were never billed"
        assert complete <= entries
        assert still_open is None
        await check_ledger(rt)
    finally:
        await rt.close()
