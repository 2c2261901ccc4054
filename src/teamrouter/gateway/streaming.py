"""A stream before and after it commits to an upstream: what `Gateway.stream` reads until the first
output (and falls back from), and what it carries on with. Pure over the parser and the upstream
stream; the gateway owns billing, settlement and the response."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from dataclasses import dataclass
from typing import Any, TypeVar

import aiohttp

from teamrouter.errors import ServiceUnavailable
from teamrouter.gateway import calls
from teamrouter.gateway.catalog import Endpoint
from teamrouter.providers.base import StreamParser, UpstreamError

# Sends whole SSE events (bytes) to the client.
Emit = Callable[[bytes], Awaitable[None]]

_T = TypeVar("_T")


async def unless_client_leaves(pending: Coroutine[Any, Any, _T], disconnected: asyncio.Future[None]) -> _T | None:
    """`pending` run in this task, or None if the client leaves first: it is then cancelled (an
    upstream call closes its connection, which cancels the generation). Without this, a client
    that left while the upstream had yet to send its headers (a model thinking, its keepalive
    comments going nowhere) went unnoticed until they came: the upstream worked on, and its first
    output was billed as if delivered. A callback on `disconnected`, not a second task: one fewer
    task per stream."""
    task = asyncio.current_task()
    assert task is not None
    waiting = True
    cut = False

    def client_left(_: asyncio.Future[None]) -> None:
        nonlocal cut
        if waiting:  # a callback scheduled just as `pending` finished must not cancel what follows
            cut = True
            task.cancel()

    disconnected.add_done_callback(client_left)
    try:
        return await pending
    except asyncio.CancelledError:
        if not cut or task.uncancel() > 0:
            raise  # cancelled for another reason too (shutdown): that stands
        return None
    finally:
        waiting = False
        disconnected.remove_done_callback(client_left)


class Head:
    """Sends a stream's response head once, whoever asks first: the stream itself or its keepalive
    (`teamrouter.gateway.keepalive`), which run as two tasks. A second caller arriving while the
    head is being sent waits for it, so no event can go out before the head."""

    __slots__ = ("_on_start", "_sending")

    def __init__(self, on_start: Callable[[], Awaitable[None]]) -> None:
        self._on_start = on_start
        self._sending: asyncio.Future[None] | None = None

    @property
    def sent(self) -> bool:
        """Whether the head went out (or is going): a failure must then be an SSE error event."""
        return self._sending is not None

    async def start(self) -> None:
        if self._sending is None:
            self._sending = asyncio.get_running_loop().create_future()
            try:
                await self._on_start()
            finally:
                self._sending.set_result(None)
        elif not self._sending.done():
            await self._sending


@dataclass(frozen=True, slots=True)
class Committed:
    """An upstream stream that has carried output: the events read so far, and the rest to come."""

    endpoint: Endpoint
    opened: calls.OpenStream
    parser: StreamParser
    head: list[bytes]  # the events read before committing, sent first
    first_byte: float  # perf_counter when its first bytes arrived


async def until_output(
    parser: StreamParser,
    opened: calls.OpenStream,
    disconnected: asyncio.Future[None],
    emit: Emit,
    start: Callable[[], Awaitable[None]],
) -> list[bytes]:
    """Read the stream until it carries output (text, reasoning, a tool call) or finishes, and
    return the events read since the last emit. The preamble before that (content-free events: a
    role chunk) is sent on as it arrives, after the head, so the client's first byte is as early as
    the upstream's. An error event, a break or an end (even a `[DONE]`) before any output raises a
    retryable `UpstreamError`: no output reached the client, so the next endpoint may answer, and
    nothing is billed. A client gone meanwhile commits this stream as it is (the caller closed the
    upstream): the prompt was sent, and is billed as for any client that leaves. Usually no extra
    read: the first bytes carry the first tokens."""
    events = parser.feed(opened.first)
    try:
        while True:
            if disconnected.done():
                return events
            if parser.error is not None and not parser.completion_chars_seen:
                raise UpstreamError(parser.error.status, parser.error.message, retryable=True)
            if parser.completion_chars_seen or parser.finish_reason:
                return events
            if parser.done:
                raise UpstreamError(502, "upstream stream ended before any output", retryable=True)
            await start()
            if events:
                await emit(b"".join(events))
                events = []
            chunk = await anext(opened.rest, None)
            if chunk is None:
                events += parser.close()
                if parser.error is None and not (parser.completion_chars_seen or parser.finish_reason or parser.done):
                    raise UpstreamError(502, "upstream stream ended before any output", retryable=True)
                continue  # decided by the checks above
            events += parser.feed(chunk)
    except (aiohttp.ClientError, TimeoutError, ConnectionError) as exc:
        if disconnected.done():
            return events  # the caller closed it for the client that left
        raise UpstreamError(
            502, f"upstream stream broke before any output: {type(exc).__name__}", retryable=True
        ) from None


def close_stream(opened: calls.OpenStream, _: object) -> None:
    if opened.close is not None:
        opened.close()


@dataclass(slots=True)
class StreamOutcome:
    """How a stream ended, for billing and the activity row."""

    cancelled: bool = False  # the client went away
    broken: UpstreamError | None = None  # the upstream failed after the first byte
    unsettled: ServiceUnavailable | None = None  # the database stayed away: not billed, not complete
