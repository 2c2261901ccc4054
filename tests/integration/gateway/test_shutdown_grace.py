"""SIGTERM with a long stream open: the server waits at most TEAMROUTER_SHUTDOWN_GRACE_SECONDS for it,
not for as long as the upstream keeps streaming (up to its read timeout)."""

from __future__ import annotations

import time

import httpx
import pytest
from tests.support.credits import check_ledger
from tests.support.gateway import funded_person, script, start_gateway

from teamrouter.config import load_settings
from teamrouter.runtime import build_runtime

pytestmark = pytest.mark.db


@pytest.fixture
def database(db_factory) -> str:
    return db_factory.create()


async def test_sigterm_cuts_a_long_stream_after_the_grace(database, tmp_path, fake, passwords):
    settings = load_settings({}, env="dev", database_url=database, var_dir=str(tmp_path / "rt"), secret_key="g" * 48)
    rt = build_runtime(settings, passwords=passwords)
    try:
        who = await funded_person(rt, usd="10")
    finally:
        await rt.close()
    server = start_gateway(tmp_path, database, fake.url, workers=2, TEAMROUTER_SHUTDOWN_GRACE_SECONDS="1")
    try:
        # 60 chunks 0.5 s apart: half a minute of stream.
        body = {
            "model": "test/chat",
            "stream": True,
            "max_tokens": 100,
            "messages": [{"role": "user", "content": script(content="word " * 60, chunks=60, chunk_delay_ms=500)}],
        }
        headers = {"Authorization": f"Bearer {who.key}"}
        async with (
            httpx.AsyncClient(base_url=server.base_url, timeout=60) as http,
            http.stream("POST", "/api/v1/chat/completions", json=body, headers=headers) as answer,
        ):
            assert answer.status_code == 200
            chunks = answer.aiter_lines()
            await anext(chunks)  # the stream is under way
            assert server.proc is not None
            began = time.monotonic()
            server.proc.terminate()
            try:
                async for _ in chunks:
                    pass
            except httpx.HTTPError:
                pass  # cut: what a client of a server going away sees
            server.proc.wait(timeout=20)
            took = time.monotonic() - began
    finally:
        server.stop()
    assert took < 8, f"shutdown took {took:.1f} s with a 1 s grace"
    rt = build_runtime(settings, passwords=passwords)
    try:
        await check_ledger(rt)  # the cut stream left the ledger consistent
    finally:
        await rt.close()
