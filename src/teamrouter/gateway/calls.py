"""Upstream I/O: one pooled aiohttp session per process, explicit timeouts, and the demo backend.

A call is "committed" once its first body bytes arrive: before that any connection error, timeout,
429 or 5xx is retryable on the next endpoint; after it, failures belong to this generation.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import math
import time
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import aiohttp
from aiohttp.abc import AbstractStreamWriter

from teamrouter.gateway.catalog import Endpoint, Provider
from teamrouter.providers.base import ProviderAdapter, UpstreamError, UpstreamRequest, error_message
from teamrouter.providers.demo import DemoAdapter
from teamrouter.providers.registry import error_from_exception


def make_http_session(*, connect_timeout: float) -> aiohttp.ClientSession:
    connector = aiohttp.TCPConnector(limit=0, limit_per_host=0, ttl_dns_cache=300, enable_cleanup_closed=True)
    return aiohttp.ClientSession(
        connector=connector,
        # One session serves every tenant of the process: a cookie an upstream sets (a load
        # balancer's affinity cookie, say) must never ride along on another request.
        cookie_jar=aiohttp.DummyCookieJar(),
        timeout=aiohttp.ClientTimeout(total=None, sock_connect=connect_timeout),
        auto_decompress=True,
        skip_auto_headers=("User-Agent",),
    )


@dataclass(frozen=True, slots=True)
class Timeouts:
    """One provider's timeouts as aiohttp objects, built once per provider (they are immutable).

    A whole answer has `first_byte_timeout` until the first byte and `first_byte_timeout +
    read_timeout` in total (aiohttp's `total` covers the connection, the request and reading the
    body, as an `asyncio.timeout` around all of it did). A stream has `first_byte_timeout` until
    its first bytes (an `asyncio.timeout` in `open_stream`, since aiohttp's `total` would also
    bound the rest of the stream), then `read_timeout` of silence at most between chunks.
    """

    fetch: aiohttp.ClientTimeout
    stream: aiohttp.ClientTimeout
    first_byte: float

    @classmethod
    def of(cls, provider: Provider) -> Timeouts:
        return cls(
            fetch=aiohttp.ClientTimeout(
                total=provider.first_byte_timeout + provider.read_timeout,
                sock_connect=provider.connect_timeout,
                sock_read=provider.first_byte_timeout,
            ),
            stream=aiohttp.ClientTimeout(sock_connect=provider.connect_timeout, sock_read=provider.read_timeout),
            first_byte=provider.first_byte_timeout,
        )


class Body(aiohttp.BytesPayload):
    """A request body that knows whether it went out: a client that leaves while the call is
    pending owes the prompt only once an upstream has it (gateway.core `_bill_the_prompt`); cut
    while connecting, nothing. aiohttp takes a payload as it is, where it would wrap bytes in one."""

    sent = False

    def __init__(self, value: bytes) -> None:
        super().__init__(value, content_type="application/json")

    async def write_with_length(self, writer: AbstractStreamWriter, content_length: int | None) -> None:
        await super().write_with_length(writer, content_length)
        self.sent = True


@dataclass
class OpenStream:
    """A committed upstream stream: the first bytes already read, the rest to iterate."""

    first: bytes
    rest: AsyncIterator[bytes]
    close: Any = field(default=None)  # closes the upstream connection (cancels the generation)


async def fetch(
    http: aiohttp.ClientSession,
    adapter: ProviderAdapter,
    endpoint: Endpoint,
    request: UpstreamRequest,
    timeouts: Timeouts | None = None,
    payload: Body | None = None,
) -> tuple[int, bytes]:
    """A whole (non-streamed) answer; raises UpstreamError (retryable or not). `payload`, when given,
    is `request.json_body` as a `Body`, for the caller to tell whether it went out."""
    retry_after: str | None = None
    if isinstance(adapter, DemoAdapter):
        if payload is not None:
            payload.sent = True  # in-process: it has the request at once
        status, body = adapter.backend.respond(request, context_length=endpoint.context_length)
    else:
        timeouts = timeouts or Timeouts.of(endpoint.provider)
        try:
            # aiohttp copies the headers into its own multidict: no copy of ours is needed.
            async with http.request(
                request.method,
                request.url,
                data=request.json_body if payload is None else payload,
                headers=request.headers,
                timeout=timeouts.fetch,
            ) as response:
                body = await response.read()
                status = response.status
                retry_after = response.headers.get("Retry-After")
        except Exception as exc:
            raise error_from_exception(exc) from exc
    if status != 200:
        raise _refused(adapter, status, body, retry_after)
    return status, body


async def open_stream(
    http: aiohttp.ClientSession,
    adapter: ProviderAdapter,
    endpoint: Endpoint,
    request: UpstreamRequest,
    timeouts: Timeouts | None = None,
    payload: Body | None = None,
) -> OpenStream:
    """Open a stream and read its first bytes; raises UpstreamError before anything is committed.
    `payload` as for `fetch`."""
    if isinstance(adapter, DemoAdapter):
        if payload is not None:
            payload.sent = True
        iterator = adapter.backend.stream(request, context_length=endpoint.context_length)
        first = await anext(iterator)  # a prompt too long is refused here, before anything is committed
        return OpenStream(first=first, rest=iterator, close=None)
    timeouts = timeouts or Timeouts.of(endpoint.provider)
    response: aiohttp.ClientResponse | None = None
    try:
        async with asyncio.timeout(timeouts.first_byte):
            response = await http.request(
                request.method,
                request.url,
                data=request.json_body if payload is None else payload,
                headers=request.headers,
                timeout=timeouts.stream,
            )
            if response.status != 200:
                body = await response.read()
                response.release()
                raise _refused(adapter, response.status, body, response.headers.get("Retry-After"))
            first = await response.content.readany()
            if not first:
                raise UpstreamError(502, "upstream closed the stream without data", retryable=True)
            if not _is_event_stream(first):
                # A 200 whose body is JSON or HTML (an error object, a proxy's page): nothing was
                # generated, so it fails before the first byte, and the next endpoint may answer.
                body = first + await response.content.read(NON_STREAM_BODY_LIMIT)
                raise UpstreamError(502, f"upstream sent no event stream: {error_message(body)}", retryable=True)
    except BaseException as exc:
        if response is not None:
            response.close()  # cancelled too (the client left): the connection is not left to the collector
        if not isinstance(exc, Exception):
            raise
        raise error_from_exception(exc) from exc
    return OpenStream(first=first, rest=_chunks(response), close=response.close)


def _refused(adapter: ProviderAdapter, status: int, body: bytes, retry_after: str | None) -> UpstreamError:
    error = adapter.map_error(status, body)
    if status == 429 and retry_after is not None:
        error.retry_after = retry_after_seconds(retry_after, now=time.time())
    return error


# The longest wait a 429 passes on; an upstream's larger value (or a garbled one) is not a promise.
MAX_RETRY_AFTER = 3600.0


def retry_after_seconds(value: str, *, now: float) -> float | None:
    """`Retry-After` in seconds: delta-seconds or an HTTP date (RFC 9110), within 0 and an hour;
    None when it is neither."""
    try:
        seconds = float(value)
    except ValueError:
        try:
            seconds = email.utils.parsedate_to_datetime(value).timestamp() - now
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
    if not math.isfinite(seconds):
        return None
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


# How much of a body that is not an event stream is read for its error message.
NON_STREAM_BODY_LIMIT = 64 * 1024


def _is_event_stream(first: bytes) -> bool:
    """Whether a stream's first bytes can begin Server-Sent Events (`data:`, `event:`, a `:`
    comment, blank lines…), as opposed to a JSON or HTML body."""
    head = first.lstrip(b"\xef\xbb\xbf \t\r\n")[:1]
    return head not in (b"{", b"[", b"<")


async def _chunks(response: aiohttp.ClientResponse) -> AsyncIterator[bytes]:
    try:
        while True:
            try:
                chunk = await response.content.readany()
            except aiohttp.ClientConnectionError as exc:
                # `response.close()` under a pending read (the client went away: OpenStream.close)
                # wakes the read with one module-level exception instance of aiohttp's. Each raise
                # prepends the raising stack to that instance's traceback, so it would keep every
                # such request's frames, response and connection alive for the life of the process
                # (the D36 soak saw ~3 MB/min). Cut its traceback and raise an exception of our own.
                exc.__traceback__ = None
                raise aiohttp.ClientConnectionError(str(exc)) from None
            if not chunk:
                return
            yield chunk
    finally:
        with contextlib.suppress(Exception):
            response.release()
