"""TESTPLAN C20: slow clients against a real `teamrouter serve` over real sockets.

Fifty "slowloris" connections send a request's headers a byte a second (and a few more do so after
a first request on a kept-alive connection), a few a body, a few send nothing; other clients never read
what they asked for (a stream they read a byte a second, a pile of pipelined requests they never
read). Meanwhile a normal client keeps its latency, every slow connection is cut by the deadlines
of teamrouter.server (2 s here), the stream's upstream call is cancelled and billed like a
disconnect, and the server's memory stays bounded.
"""

from __future__ import annotations

import asyncio
import socket
import statistics
import time
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import orjson
import pytest
from sqlalchemy import select
from tests.support.credits import check_ledger
from tests.support.gateway import funded_person, script, start_gateway

from teamrouter.config import load_settings
from teamrouter.domain.activity.models import Generation
from teamrouter.domain.credits.models import Hold
from teamrouter.runtime import build_runtime

pytestmark = pytest.mark.db

DEADLINE = 2.0  # both deadlines, in seconds
SLACK = 2.5  # a cut may come this much after its deadline on a loaded 2-core machine
SLOWLORIS = 50
PIPELINED = 400  # requests for a ~46 KB document each, far more than the kernel buffers hold
STREAM_CHUNKS = 40_000  # an SSE stream of several MB, ditto


@dataclass
class Cut:
    """How a slow connection ended, seen from the client."""

    after: float | None = None  # seconds from connecting until the server closed it; None: never
    received: int = 0
    head: bytes = b""


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


async def small_window_socket(port: int) -> socket.socket:
    """A connected non-blocking socket with a tiny receive buffer, so an unread answer backs up."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.setblocking(False)
    await asyncio.get_running_loop().sock_connect(sock, ("127.0.0.1", port))
    return sock


async def read_until_closed(sock: socket.socket, cut: Cut, started: float, *, pace: float | None, limit: float) -> None:
    """Read (one byte per `pace` seconds, or as fast as possible) until EOF or reset, for `limit` s."""
    loop = asyncio.get_running_loop()
    deadline = started + limit
    while time.monotonic() < deadline:
        try:
            data = await asyncio.wait_for(loop.sock_recv(sock, 1 if pace else 65536), deadline - time.monotonic())
        except TimeoutError:
            return
        except ConnectionError:
            data = b""
        if not data:
            cut.after = time.monotonic() - started
            return
        cut.received += len(data)
        if len(cut.head) < 64:
            cut.head += data
        if pace:
            await asyncio.sleep(pace)


SLOW_HEADERS = b"GET /api/v1/models HTTP/1.1\r\nHost: 127.0.0.1\r\nX-Padding: " + b"a" * 60


def slow_body(key: str) -> bytes:
    """Whole headers at once, then a body that would take 100 s at a byte a second."""
    return (
        (
            f"POST /api/v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n"
            "Content-Type: application/json\r\nContent-Length: 100\r\n\r\n"
        ).encode()
        + b"{"
        + b" " * 99
    )


async def slowloris(port: int, request: bytes = SLOW_HEADERS, *, kept_alive: bool = False) -> Cut:
    """`request` one byte a second (headers first, the rest of `slow_body` at once); listens for
    the server giving up. `kept_alive`: after one quick request and a second of quiet on the same
    connection (the deadline then runs from the slow request's first byte)."""
    loop = asyncio.get_running_loop()
    sock = socket.socket()
    sock.setblocking(False)
    await loop.sock_connect(sock, ("127.0.0.1", port))
    if kept_alive:
        await loop.sock_sendall(sock, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
        answer = b""
        while not answer.endswith(b"}"):  # the whole small JSON answer, however it is split
            answer += await loop.sock_recv(sock, 65536)
        assert answer.startswith(b"HTTP/1.1 200 "), answer
        await asyncio.sleep(1)
    started = time.monotonic()
    cut = Cut()
    head, _, body = request.partition(b"\r\n\r\n")

    async def dribble() -> None:
        if body:
            await loop.sock_sendall(sock, head + b"\r\n\r\n")
        for byte in body or request:
            try:
                await loop.sock_sendall(sock, bytes([byte]))
            except OSError:
                return
            await asyncio.sleep(1)

    sender = asyncio.create_task(dribble())
    try:
        await read_until_closed(sock, cut, started, pace=None, limit=DEADLINE + SLACK + 3)
    finally:
        sender.cancel()
        sock.close()
    return cut


async def pipelined_non_reader(port: int) -> Cut:
    """Asks for the OpenAPI document PIPELINED times in one go and reads nothing for a while."""
    loop = asyncio.get_running_loop()
    sock = await small_window_socket(port)
    started = time.monotonic()
    await loop.sock_sendall(sock, b"GET /api/v1/openapi.json HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n" * PIPELINED)
    await asyncio.sleep(DEADLINE + SLACK)
    cut = Cut()
    try:
        await read_until_closed(sock, cut, started, pace=None, limit=DEADLINE + SLACK + 10)
    finally:
        sock.close()
    return cut


async def stream_reader_at_one_byte_a_second(port: int, key: str) -> Cut:
    """Starts a long stream and reads it a byte a second (for as long as the test lasts)."""
    loop = asyncio.get_running_loop()
    body = orjson.dumps(
        {
            "model": "test/chat",
            "stream": True,
            "max_tokens": 100,
            # `overrun`: the fake ignores max_tokens, so the stream really is STREAM_CHUNKS long.
            "messages": [{"role": "user", "content": script(chunks=STREAM_CHUNKS, overrun=1)}],
        }
    )
    head = (
        f"POST /api/v1/chat/completions HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer {key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    sock = await small_window_socket(port)
    started = time.monotonic()
    await loop.sock_sendall(sock, head + body)
    cut = Cut()
    try:
        await read_until_closed(sock, cut, started, pace=1.0, limit=DEADLINE + SLACK + 3)
    finally:
        sock.close()
    return cut


async def latencies(url: str, key: str, count: int) -> list[float]:
    """Sequential small chat completions on one kept-alive connection; seconds each."""
    body = orjson.dumps({"model": "test/chat", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]})
    headers = {"Authorization": f"Bearer {key}", "Content-Type": "application/json"}
    taken: list[float] = []
    async with aiohttp.ClientSession(headers=headers) as http:
        for _ in range(count):
            started = time.perf_counter()
            async with http.post(f"{url}/api/v1/chat/completions", data=body) as answer:
                await answer.read()
                assert answer.status == 200
            taken.append(time.perf_counter() - started)
    return taken


@pytest.fixture
def database(db_factory) -> str:
    return db_factory.create()


async def test_c20_slow_clients_are_cut_and_others_keep_their_latency(database, tmp_path, fake, passwords):
    settings = load_settings({}, env="dev", database_url=database, var_dir=str(tmp_path / "rt"), secret_key="s" * 48)
    rt = build_runtime(settings, passwords=passwords)
    server = None
    try:
        normal = await funded_person(rt, usd="10")
        streamer = await funded_person(rt, usd="10")
        server = start_gateway(
            tmp_path,
            database,
            fake.url,
            workers=1,  # one process: its RSS is the server's
            TEAMROUTER_REQUEST_READ_TIMEOUT_SECONDS=str(DEADLINE),
            TEAMROUTER_RESPONSE_WRITE_TIMEOUT_SECONDS=str(DEADLINE),
        )
        assert server.proc is not None
        await latencies(server.base_url, normal.key, 10)  # warm up
        rss_before = rss_kib(server.proc.pid)
        alone = statistics.median(await latencies(server.base_url, normal.key, 40))

        slow = [asyncio.create_task(slowloris(server.port)) for _ in range(SLOWLORIS)]
        slow += [asyncio.create_task(slowloris(server.port, slow_body(streamer.key))) for _ in range(5)]
        slow += [asyncio.create_task(slowloris(server.port, b"")) for _ in range(5)]  # never send a byte
        slow += [asyncio.create_task(slowloris(server.port, kept_alive=True)) for _ in range(5)]
        slow.append(asyncio.create_task(pipelined_non_reader(server.port)))
        slow.append(asyncio.create_task(stream_reader_at_one_byte_a_second(server.port, streamer.key)))
        await asyncio.sleep(0.5)  # every slow connection is open and dribbling
        crowded = statistics.median(await latencies(server.base_url, normal.key, 40))
        rss_peak = rss_kib(server.proc.pid)
        *cut, pipelined, stream = await asyncio.gather(*slow)
        loris, bodies, silent = cut[:SLOWLORIS] + cut[-5:], cut[SLOWLORIS:-10], cut[-10:-5]
        rss_after = rss_kib(server.proc.pid)
    finally:
        if server is not None:
            server.stop()
    try:
        # Slowloris: each got a 408 and was closed at the read deadline.
        never = [c for c in loris if c.after is None]
        assert not never, f"{len(never)} of {len(loris)} slow-header connections were never closed"
        assert all(c.head.startswith(b"HTTP/1.1 408 ") for c in loris), {c.head[:20] for c in loris}
        assert max(c.after or 0 for c in loris) < DEADLINE + SLACK, sorted(c.after or 0 for c in loris)[-5:]
        # A connection that never sent a byte: the same. A slow body: the request was already with
        # the application, which sees a disconnect (and answers nothing).
        assert all(c.after is not None and c.after < DEADLINE + SLACK for c in silent + bodies), silent + bodies
        assert all(c.head.startswith(b"HTTP/1.1 408 ") for c in silent), silent
        assert all(c.received == 0 for c in bodies), bodies

        # The pipelined non-reader was cut long before its answers were all written.
        full = PIPELINED * 40_000
        assert pipelined.after is not None and pipelined.received < full / 2, pipelined

        # The one-byte-a-second stream reader: cut, and its generation billed as a disconnect, the
        # upstream's 40,000 chunks never all delivered.
        async with rt.db.read() as session:
            row = await session.scalar(select(Generation).where(Generation.account_id == streamer.account_id))
            open_holds = await session.scalar(select(Hold.id).where(Hold.status == "open").limit(1))
        assert row is not None and row.cancelled, row
        assert 0 < row.tokens_completion < STREAM_CHUNKS and row.cost > 0
        assert row.generation_time_ms < (DEADLINE + SLACK) * 1000
        assert open_holds is None
        assert stream.received < 1000  # it really read a byte a second

        # Others kept their latency (generous: the test's own clients share the 2 cores).
        assert crowded < max(3 * alone, alone + 0.025), (alone, crowded)
        # Memory stayed bounded: the unread answers wait in the kernel, not in the process.
        assert rss_peak - rss_before < 40_000 and rss_after - rss_before < 40_000, (rss_before, rss_peak, rss_after)
        print(  # numbers for the record (`pytest -s`)
            f"p50 alone {alone * 1000:.2f} ms, with slow clients {crowded * 1000:.2f} ms; "
            f"RSS {rss_before} → peak {rss_peak} → {rss_after} KiB; "
            f"slowloris cut after {min(c.after or 0 for c in loris):.2f}–{max(c.after or 0 for c in loris):.2f} s; "
            f"pipelined non-reader got {pipelined.received} of ~{PIPELINED * 46_000} bytes; "
            f"stream billed {row.tokens_completion} tokens, generation {row.generation_time_ms} ms"
        )
        await check_ledger(rt)
    finally:
        await rt.close()
