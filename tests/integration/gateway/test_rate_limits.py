"""Per-key rate limits across instances: with Redis configured, two worker processes share one
count per key and minute; when Redis does not answer, each process counts on its own and traffic
still flows. Needs the Redis server `.ci/run` starts (skipped with a message when none answers)."""

from __future__ import annotations

import asyncio
import os
import time

import httpx
import pytest
from tests.support.gateway import funded_person, start_gateway
from tests.support.redis import REDIS_URL, redis_answers
from tests.support.smtp import free_port

from teamrouter.config import load_settings
from teamrouter.gateway.ratelimit import SharedKeyRateLimiter
from teamrouter.runtime import build_runtime

pytestmark = pytest.mark.db

LIMIT = 10


@pytest.fixture
def redis_url() -> str:
    if not redis_answers():
        pytest.skip(f"no Redis at {REDIS_URL}")
    return REDIS_URL


@pytest.fixture
def database(db_factory) -> str:
    return db_factory.create()


def _away_from_a_minute_boundary() -> None:
    # Counts are per wall-clock minute: a test straddling one would see its budget twice.
    remaining = 60 - time.time() % 60
    if remaining < 8:
        time.sleep(remaining + 0.1)


async def _statuses(url: str, key: str, count: int) -> list[httpx.Response]:
    body = {"model": "test/chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 5}
    async with httpx.AsyncClient(timeout=30) as http:
        return [await http.post(url, json=body, headers={"Authorization": f"Bearer {key}"}) for _ in range(count)]


async def _funded_key(database: str, tmp_path, passwords) -> str:
    settings = load_settings({}, env="dev", database_url=database, var_dir=str(tmp_path / "rt"), secret_key="r" * 48)
    rt = build_runtime(settings, passwords=passwords)
    try:
        return (await funded_person(rt, usd="10")).key
    finally:
        await rt.close()


async def _through_a_server(database, tmp_path, fake, key, *, workers, redis_url, count):
    """`count` requests of one key through a fresh server; the answers and the server's log."""
    server = start_gateway(
        tmp_path,
        database,
        fake.url,
        workers=workers,
        TEAMROUTER_REDIS_URL=redis_url,
        TEAMROUTER_KEY_RATE_LIMIT_PER_MINUTE=str(LIMIT),
    )
    try:
        _away_from_a_minute_boundary()
        answers = await _statuses(f"{server.base_url}/api/v1/chat/completions", key, count)
    finally:
        server.stop()
    return answers, server.log()


async def test_two_workers_share_one_limit_through_redis(database, tmp_path, fake, passwords, redis_url):
    key = await _funded_key(database, tmp_path, passwords)
    answers, _ = await _through_a_server(database, tmp_path, fake, key, workers=2, redis_url=redis_url, count=3 * LIMIT)
    statuses = [a.status_code for a in answers]
    assert statuses.count(200) == LIMIT and statuses.count(429) == 2 * LIMIT
    refused = next(a for a in answers if a.status_code == 429)
    assert refused.json()["error"]["code"] == 429 and 1 <= int(refused.headers["Retry-After"]) <= 60


async def test_without_redis_each_process_counts_and_traffic_flows(database, tmp_path, fake, passwords):
    key = await _funded_key(database, tmp_path, passwords)
    dead = f"redis://127.0.0.1:{free_port()}/0"  # nothing listens there
    answers, log = await _through_a_server(database, tmp_path, fake, key, workers=1, redis_url=dead, count=LIMIT + 3)
    statuses = [a.status_code for a in answers]
    assert statuses.count(200) == LIMIT and statuses.count(429) == 3
    assert "Redis unavailable" in log


async def test_limiters_of_two_processes_count_together(redis_url):
    # The same shared counter seen from two limiter instances (as two processes would hold).
    key_id = f"key_{os.getpid()}_{time.time_ns()}"
    first, second = (SharedKeyRateLimiter.from_url(LIMIT, redis_url) for _ in range(2))
    try:
        _away_from_a_minute_boundary()
        outcomes = await asyncio.gather(
            *((first if i % 2 else second).check(key_id) for i in range(LIMIT + 5)), return_exceptions=True
        )
    finally:
        await first.close()
        await second.close()
    assert sum(o is None for o in outcomes) == LIMIT
