"""Upstream calls against the in-process fake: answers, the first-byte timeout, the per-provider timeouts."""

from __future__ import annotations

import asyncio
import gc
import socket
import time
from collections.abc import AsyncIterator, Iterator
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


@pytest.fixture
def unanswered_port() -> Iterator[int]:
    """A port whose SYNs go unanswered: a listener whose accept queue is full (Linux drops further
    SYNs then), so a connect to it waits, as to an upstream host gone dark."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    port = server.getsockname()[1]
    fillers = []
    for _ in range(4):  # enough for the kernel's smallest accept queue
        filler = socket.socket()
        filler.setblocking(False)
        filler.connect_ex(("127.0.0.1", port))
        fillers.append(filler)
    time.sleep(0.1)
    try:
        yield port
    finally:
        for sock in (*fillers, server):
            sock.close()


@pytest.mark.parametrize("stream", [False, True])
async def test_a_body_says_whether_it_went_out_before_the_call_was_cancelled(
    fake: FakeUpstream, unanswered_port: int, stream: bool
) -> None:
    """The gateway bills a client that left while a call was pending for its prompt only once an
    upstream had it (gateway.core `_bill_the_prompt`); cut while still connecting, nothing. And a
    call cancelled after the upstream's headers closes their response at once."""
    adapter = OpenAIAdapter()
    http = calls.make_http_session(connect_timeout=2)
    cases = [
        # (upstream, script, request kind, whether the body went out)
        (f"http://127.0.0.1:{unanswered_port}", {}, "chat", False),  # still connecting
        (fake.url, {"first_byte_delay_ms": 3000}, "chat", True),  # waiting for the headers
    ]
    if stream:  # headers in, waiting for the first bytes (legacy completions send no role chunk first)
        cases.append((fake.url, {"chunk_delay_ms": 3000}, "completion", True))
    try:
        for url, script, kind, sent in cases:
            catalog = CATALOG.format(url=url).replace("first_byte_timeout = 0.3", "first_byte_timeout = 10")
            endpoint = parse_catalog(catalog, env={}).endpoints_for("t/chat")[0]
            fake.set_script(script)
            asked = {"model": "t/chat", "prompt": "hi"} if kind == "completion" else {"model": "t/chat", "messages": []}
            request = adapter.build_request(endpoint, asked, stream, kind=kind)
            payload = calls.Body(request.json_body)
            call = calls.open_stream if stream else calls.fetch
            timeouts = calls.Timeouts.of(endpoint.provider)
            task = asyncio.create_task(call(http, adapter, endpoint, request, timeouts, payload))
            await asyncio.sleep(0.3)
            assert not task.done()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert payload.sent is sent, (url, script)
            gc.collect()
            alive = [o for o in gc.get_objects() if isinstance(o, aiohttp.ClientResponse) and not o.closed]
            assert alive == [], f"a call cancelled with {script} left its upstream response open"
    finally:
        await http.close()
