"""TESTPLAN B14: restarting every instance mid-window keeps the window's spend and its open holds;
the holds of the killed processes are released by the sweeper once their TTL has passed.

Two instances of two workers each share one database. A key with a $0.10 daily limit spends $0.04
on a one-cent model and has three more requests in flight (the upstream never answers) when every
process of both instances is SIGKILLed. After a restart, `GET /key` still shows the day's $0.04 and
the $0.03 the dead requests hold, and the limit is enforced across the restart: only $0.03 more is
admitted. Once the holds' TTL has passed the sweeper releases them, and exactly that $0.03 can be
spent again — never earlier, never more.
"""

from __future__ import annotations

import asyncio
import os
import signal
import time
from pathlib import Path

import aiohttp
import httpx
import orjson
import pytest
from sqlalchemy import func, select
from tests.support.credits import check_ledger
from tests.support.gateway import funded_person, script, start_gateway
from tests.support.server import ServerProcess

from teamrouter.config import load_settings
from teamrouter.domain.credits.models import Hold
from teamrouter.runtime import build_runtime

pytestmark = [pytest.mark.db, pytest.mark.slow]

HOLD_TTL = 40  # seconds: restarting both instances took up to 27 s on this 2-core machine under load
SWEEP = 0.5
IN_FLIGHT = 3


def cent(key: str, base_url: str, *, hang: bool = False) -> httpx.Response:
    text = script(hang=True) if hang else "hi"
    return httpx.post(
        f"{base_url}/api/v1/chat/completions",
        headers={"Authorization": f"Bearer {key}"},
        json={"model": "test/cent", "messages": [{"role": "user", "content": text}]},
        timeout=30,
    )


def current_key(key: str, base_url: str) -> dict[str, float]:
    r = httpx.get(f"{base_url}/api/v1/key", headers={"Authorization": f"Bearer {key}"}, timeout=10)
    assert r.status_code == 200, r.text
    data: dict[str, float] = r.json()["data"]
    return data


def kill_instance(server: ServerProcess) -> None:
    """SIGKILL the supervisor first (so it respawns nothing), then every child it had: the workers
    (and multiprocessing's resource tracker)."""
    assert server.proc is not None
    supervisor = server.proc.pid
    workers = [int(pid) for pid in Path(f"/proc/{supervisor}/task/{supervisor}/children").read_text().split()]
    assert len(workers) >= 2, workers
    os.kill(supervisor, signal.SIGKILL)
    for pid in workers:
        os.kill(pid, signal.SIGKILL)
    server.proc.wait(timeout=10)
    for pid in workers:
        while Path(f"/proc/{pid}").exists() and "zombie" not in Path(f"/proc/{pid}/status").read_text():
            time.sleep(0.01)
    server.stop()  # closes its log


async def hang(url: str, key: str) -> None:
    body = orjson.dumps({"model": "test/cent", "messages": [{"role": "user", "content": script(hang=True)}]})
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    async with aiohttp.ClientSession(headers=headers) as http, http.post(url, data=body) as answer:
        await answer.read()


async def open_holds(rt) -> int:
    async with rt.db.read() as session:
        count = await session.scalar(select(func.count()).select_from(Hold).where(Hold.status == "open"))
    return int(count or 0)


async def start_instances(tmp: Path, database: str, fake_url: str, env: dict[str, str]) -> list[ServerProcess]:
    """Two instances of two workers on one database, started side by side (each in its own directory)."""
    dirs = [tmp / f"instance{n}" for n in range(2)]
    for path in dirs:
        path.mkdir(exist_ok=True)
    started = await asyncio.gather(
        *(asyncio.to_thread(start_gateway, path, database, fake_url, workers=2, **env) for path in dirs),
        return_exceptions=True,
    )
    servers = [s for s in started if isinstance(s, ServerProcess)]
    if len(servers) < len(started):
        for server in servers:
            server.stop()
        raise next(e for e in started if isinstance(e, BaseException))
    return servers


@pytest.fixture
def database(db_factory) -> str:
    return db_factory.create()


async def test_b14_restart_keeps_window_spend_and_holds_until_the_sweeper_releases_them(
    database, tmp_path, fake, passwords
):
    settings = load_settings({}, env="dev", database_url=database, var_dir=str(tmp_path / "rt"), secret_key="r" * 48)
    rt = build_runtime(settings, passwords=passwords)
    env = {"TEAMROUTER_HOLD_TTL_SECONDS": str(HOLD_TTL), "TEAMROUTER_HOLD_SWEEP_SECONDS": str(SWEEP)}
    servers: list[ServerProcess] = []
    in_flight: list[asyncio.Task[None]] = []
    try:
        who = await funded_person(rt, usd="10", limit="0.10", limit_reset="daily")
        servers = await start_instances(tmp_path, database, fake.url, env)
        a, b = servers
        for server in (a, b, a, b):
            assert cent(who.key, server.base_url).status_code == 200
        in_flight = [
            asyncio.create_task(hang(f"{servers[i % 2].base_url}/api/v1/chat/completions", who.key))
            for i in range(IN_FLIGHT)
        ]
        deadline = time.monotonic() + 10
        while await open_holds(rt) < IN_FLIGHT and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert await open_holds(rt) == IN_FLIGHT
        before = current_key(who.key, a.base_url)
        assert before["usage_daily"] == pytest.approx(0.04) and before["limit_remaining"] == pytest.approx(0.03)

        killed_at = time.monotonic()
        for server in servers:
            kill_instance(server)
        results = await asyncio.gather(*in_flight, return_exceptions=True)
        assert all(isinstance(r, aiohttp.ClientError) for r in results), results
        servers = await start_instances(tmp_path, database, fake.url, env)
        a, b = servers
        restarted_in = time.monotonic() - killed_at
        assert restarted_in < HOLD_TTL - 3, f"restart took {restarted_in:.1f} s: the holds may expire first"

        # The window's spend and the dead requests' holds survived the restart…
        after = current_key(who.key, b.base_url)
        assert after["usage_daily"] == pytest.approx(0.04) and after["limit_remaining"] == pytest.approx(0.03)
        assert await open_holds(rt) == IN_FLIGHT
        # …and the limit is enforced across it: $0.03 more, then 402 on either instance.
        assert [cent(who.key, s.base_url).status_code for s in (a, b, a, b, a)] == [200, 200, 200, 402, 402]
        assert current_key(who.key, a.base_url)["limit_remaining"] == pytest.approx(0)

        # The sweeper (every worker of the new instances runs one) releases the holds after the TTL.
        deadline = time.monotonic() + HOLD_TTL + 10
        while await open_holds(rt) and time.monotonic() < deadline:
            await asyncio.sleep(0.1)
        released_after = time.monotonic() - killed_at
        assert await open_holds(rt) == 0, "the sweeper never released the dead requests' holds"
        assert released_after > HOLD_TTL - 2, f"released {released_after:.1f} s after the kill, before the TTL"
        async with rt.db.read() as session:
            statuses = dict((await session.execute(select(Hold.status, func.count()).group_by(Hold.status))).all())
        assert statuses == {"posted": 7, "expired": IN_FLIGHT}, statuses
        final = current_key(who.key, b.base_url)
        assert final["usage_daily"] == pytest.approx(0.07) and final["limit_remaining"] == pytest.approx(0.03)
        assert [cent(who.key, s.base_url).status_code for s in (b, a, b, a)] == [200, 200, 200, 402]
        assert current_key(who.key, a.base_url)["usage_daily"] == pytest.approx(0.10)
        print(f"restart took {restarted_in:.1f} s; holds released {released_after:.1f} s after the kill")
        await check_ledger(rt)
    finally:
        for task in in_flight:
            task.cancel()
        for server in servers:
            server.stop()
        await rt.close()
