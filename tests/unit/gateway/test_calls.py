"""Upstream calls against the in-process fake: answers, the first-byte timeout, the per-provider timeouts."""

from __future__ import annotations

import asyncio
import gc
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import aiohttp
import pytest
from tests.fakes.upstream import FakeUpstream

from teamrouter.gateway import calls
from teamrouter.gateway.catalog import parse_catalog
from teamrouter.providers.base import UpstreamError
from teamrouter.providers.openai import OpenAIAdapter

CATALOG = """
[[providers]]
slug = "fake"
kind = "openai"
base_url = "{url}/v1"
connect_timeout = 2
first_byte_timeout = 0.3
read_timeout = 5

[[models]]
id = "t/chat"
context_length = 1000
[[models.endpoints]]
provider = "fake"
upstream_model = "fake-chat"
prompt_price = "0"
completion_price = "0"
"""


@pytest.fixture
async def fake() -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream() as server:
        yield server


def test_timeouts_of_a_provider() -> None:
    provider = parse_catalog(CATALOG.format(url="http://x"), env={}).endpoints_for("t/chat")[0].provider
    t = calls.Timeouts.of(provider)
    assert (t.fetch.total, t.fetch.sock_connect, t.fetch.sock_read) == (5.3, 2.0, 0.3)
    assert (t.stream.total, t.stream.sock_connect, t.stream.sock_read) == (None, 2.0, 5.0)
    assert t.first_byte == 0.3


@pytest.mark.parametrize("stream", [False, True])
async def test_answers_and_the_first_byte_timeout(fake: FakeUpstream, stream: bool) -> None:
    endpoint = parse_catalog(CATALOG.format(url=fake.url), env={}).endpoints_for("t/chat")[0]
    adapter = OpenAIAdapter()
    body = {"model": "t/chat", "messages": [{"role": "user", "content": "hi"}]}
    http = calls.make_http_session(connect_timeout=2)
    try:
        request = adapter.build_request(endpoint, body, stream)
        if stream:
            opened = await calls.open_stream(http, adapter, endpoint, request)
            assert opened.first.startswith(b"data: ")
            assert b"[DONE]" in opened.first + b"".join([chunk async for chunk in opened.rest])
        else:
            status, raw = await calls.fetch(http, adapter, endpoint, request)
            assert status == 200 and b"choices" in raw
        fake.set_script({"first_byte_delay_ms": 3000})
        started = time.monotonic()
        with pytest.raises(UpstreamError) as info:
            if stream:
                await calls.open_stream(http, adapter, endpoint, request)
            else:
                await calls.fetch(http, adapter, endpoint, request)
        assert (info.value.status, info.value.retryable) == (504, True)
        assert time.monotonic() - started < 2
    finally:
        await http.close()


async def test_a_stream_closed_under_a_read_leaves_nothing_behind(fake: FakeUpstream) -> None:
    """OpenStream.close() while the read waits (a client gone mid-stream) must free the response.

    aiohttp wakes such a read with one shared exception instance whose traceback grows by the
    reader's stack at each raise: before the fix every closed stream stayed in memory for good."""
    endpoint = parse_catalog(CATALOG.format(url=fake.url), env={}).endpoints_for("t/chat")[0]
    adapter = OpenAIAdapter()
    body = {"model": "t/chat", "messages": [{"role": "user", "content": "hi"}]}
    fake.set_script({"chunks": 8, "chunk_delay_ms": 200})
    http = calls.make_http_session(connect_timeout=2)
    try:
        request = adapter.build_request(endpoint, body, True)
        for _ in range(20):
            opened = await calls.open_stream(http, adapter, endpoint, request)
            asyncio.get_running_loop().call_later(0.01, opened.close)
            with pytest.raises(aiohttp.ClientConnectionError) as info:
                async for _chunk in opened.rest:
                    pass
            assert info.value.__context__ is None or info.value.__context__.__traceback__ is None
            del opened, info
        gc.collect()
        alive = [o for o in gc.get_objects() if isinstance(o, aiohttp.ClientResponse)]
        assert alive == [], f"{len(alive)} closed upstream responses still referenced"
    finally:
        await http.close()


async def test_a_cookie_an_upstream_sets_is_never_sent_again(fake: FakeUpstream) -> None:
    """One upstream client serves every tenant of the process: a cookie one answer sets (a load
    balancer's affinity cookie, say) must not ride along on anyone's next request. aiohttp keeps
    cookies from named hosts only, so the upstream is called by name here, as real ones are."""
    endpoint = parse_catalog(CATALOG.format(url=fake.url.replace("127.0.0.1", "localhost")), env={}).endpoints_for(
        "t/chat"
    )[0]
    adapter = OpenAIAdapter()
    request = adapter.build_request(
        endpoint, {"model": "t/chat", "messages": [{"role": "user", "content": "hi"}]}, False
    )
    http = calls.make_http_session(connect_timeout=2)
    try:
        fake.set_script({"set_cookie": "affinity=tenant-a; Path=/"})
        await calls.fetch(http, adapter, endpoint, request)
        fake.set_script(None)
        await calls.fetch(http, adapter, endpoint, request)
        assert [call.cookie for call in fake.calls] == [None, None]
    finally:
        await http.close()


@pytest.mark.parametrize(
    ("value", "seconds"),
    [
        ("17", 17.0),
        ("0", 0.0),
        ("-5", 0.0),
        ("1e999", None),  # infinite: not a promise
        ("inf", None),
        ("nan", None),
        ("99999999", 3600.0),  # capped at an hour
        ("Sun, 29 Nov 2026 12:00:30 GMT", 30.0),  # an HTTP date, 30 s after `now`
        ("soon", None),
    ],
)
def test_retry_after_is_seconds_or_a_date_within_an_hour(value: str, seconds: float | None) -> None:
    now = datetime(2026, 11, 29, 12, 0, 0, tzinfo=UTC).timestamp()
    assert calls.retry_after_seconds(value, now=now) == seconds
