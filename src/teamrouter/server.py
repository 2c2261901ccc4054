"""uvicorn's HTTP protocol with deadlines for slow clients (TESTPLAN C20).

uvicorn closes an idle keep-alive connection after `timeout_keep_alive`, but has no deadline for
receiving a request: a client that sends its headers a byte a second ("slowloris"), or connects and
sends nothing, holds a connection (and a slot in every proxy in front) forever. For a client that
stops reading, it relies on flow control alone: the response waits, paused, for as long as the
socket stays open, and an inference stream keeps its upstream call and its hold meanwhile.

`DeadlineProtocol` adds two deadlines, kept with `loop.call_later` timers like uvicorn's keep-alive
one (nothing per byte, and no timer per request):

- **read deadline**: from a connection's first moment, or from the first byte of each further
  request on it, the whole request (headers and body) must arrive within `read_timeout` seconds.
  Otherwise the client gets a 408 if its headers were still incomplete, and the connection closes;
  an application already reading the body sees `http.disconnect`.
- **write deadline**: when the transport's send buffer passes its high-water mark (the client is
  not reading fast enough), it must drain below the low-water mark within `write_timeout` seconds.
  Otherwise the connection is aborted (not closed: a close waits for the buffer to drain, which a
  client that stopped reading never lets happen). The application sees `http.disconnect`; an
  inference stream then cancels its upstream call and bills what was delivered, as for any client
  that goes away (gateway/core.py `_pump`).

Memory per slow connection stays bounded by the transport's high-water mark plus one write.

It also tells an application that its client left without its having to ask: each request's scope
carries a future under `extensions[DISCONNECTED]`, resolved when the connection is lost or cut
while that request's response is unfinished. The inference path waits on it (to cancel an upstream
call nobody waits for) at the cost of a future per request, where listening for `http.disconnect`
took a task per request: measured +0.06 ms of CPU a request at concurrency 32 (7%).
"""

from __future__ import annotations

import asyncio
import functools
from typing import Any, cast

from uvicorn._types import ASGI3Application
from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol, RequestResponseCycle

# The scope extension holding the request's disconnect future (asyncio.Future[None]).
DISCONNECTED = "teamrouter.disconnected"

REQUEST_TIMEOUT = (
    b"HTTP/1.1 408 Request Timeout\r\n"
    b"content-type: text/plain; charset=utf-8\r\n"
    b"content-length: 16\r\n"
    b"connection: close\r\n"
    b"\r\n"
    b"Request Timeout\n"
)


class DeadlineProtocol(HttpToolsProtocol):
    """`HttpToolsProtocol` with a read deadline per request and a write-progress deadline."""

    def __init__(self, *args: Any, read_timeout: float, write_timeout: float, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.read_timeout = read_timeout
        self.write_timeout = write_timeout
        self.read_check: asyncio.TimerHandle | None = None
        self.write_deadline: asyncio.TimerHandle | None = None
        # loop.time() when the request being read began (None between requests); from the moment
        # a connection opens, so one that never sends a byte is covered too (uvicorn arms its
        # keep-alive timer only after a first response).
        self.request_began: float | None = None
        self.awaiting_headers = True  # between a request's first byte and its last header
        self.running: RequestResponseCycle | None = None  # the cycle whose application runs now

    # -- read deadline ------------------------------------------------------------------------
    # One timer per connection that re-arms itself, rather than one per request: a uvloop
    # call_later and cancel cost ~5 µs, a request's timestamp ~0.1 µs.

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self.request_began = self.loop.time()
        self.read_check = self.loop.call_later(self.read_timeout, self._check_read_deadline)

    def on_message_begin(self) -> None:
        super().on_message_begin()
        # uvicorn types extensions' values as dicts; the ASGI spec leaves them to the server.
        cast(dict[str, Any], self.scope).setdefault("extensions", {})[DISCONNECTED] = self.loop.create_future()
        self.awaiting_headers = True
        if self.request_began is None:  # a further request on a kept-alive connection
            self.request_began = self.loop.time()

    def on_headers_complete(self) -> None:
        self.awaiting_headers = False
        super().on_headers_complete()

    def on_message_complete(self) -> None:
        super().on_message_complete()
        self.request_began = None
        # uvicorn pauses reading once 64 KiB of body wait unread, and only the application's next
        # `receive()` resumes it; one that has its whole body and waits on the DISCONNECTED future
        # never calls it again. With reading paused the client's FIN goes unseen, and so would its
        # leaving. A request's end is a safe place to read on: a pipelined next request pauses
        # reading again (uvicorn's own check), and its body is bounded as this one's was. Not while
        # requests wait in the pipeline: those stay paused, as uvicorn keeps them.
        if not self.pipeline:
            self.flow.resume_reading()

    def _check_read_deadline(self) -> None:
        self.read_check = None
        if self.transport.is_closing():
            return
        now = self.loop.time()
        began = self.request_began
        if began is None or now - began < self.read_timeout:
            # Between requests (uvicorn's keep-alive timer closes idle connections), or in time.
            wait = self.read_timeout if began is None else began + self.read_timeout - now
            self.read_check = self.loop.call_later(wait, self._check_read_deadline)
            return
        if self.flow.write_paused:
            self._cut(abort=True)  # it is not reading either: a 408 would never drain
            return
        if self.awaiting_headers and (self.cycle is None or self.cycle.response_complete):
            # No application saw this request and no earlier response is still being written
            # (pipelining): answer it, so a merely slow client learns why.
            self.transport.write(REQUEST_TIMEOUT)
        self._cut(abort=False)

    # -- write deadline -----------------------------------------------------------------------

    def pause_writing(self) -> None:
        super().pause_writing()
        if self.write_deadline is None:
            self.write_deadline = self.loop.call_later(self.write_timeout, self._write_deadline_passed)

    def resume_writing(self) -> None:
        super().resume_writing()
        self._cancel_write_deadline()

    def _cancel_write_deadline(self) -> None:
        if self.write_deadline is not None:
            self.write_deadline.cancel()
            self.write_deadline = None

    def _write_deadline_passed(self) -> None:
        self.write_deadline = None
        if self.flow.write_paused and not self.transport.is_closing():
            self._cut(abort=True)

    # -- teardown -----------------------------------------------------------------------------

    def _start_asgi_task(self, cycle: RequestResponseCycle, app: ASGI3Application) -> None:
        self.running = cycle
        super()._start_asgi_task(cycle, app)

    def _cut(self, *, abort: bool) -> None:
        """Close (or abort) the connection and tell the running application at once.

        uvloop reports `connection_lost` only on a later loop iteration, and aborting wakes a send
        blocked on flow control right away: without this, that send would write to the closed
        handle (a RuntimeError logged as a 500) instead of returning as after a disconnect.
        """
        self._mark_gone()
        if abort:
            self.transport.abort()
        else:
            self.transport.close()

    def _mark_gone(self) -> None:
        # uvicorn's connection_lost marks only the newest cycle; with pipelined requests the one
        # whose application is running can be an older one.
        for cycle in (self.running, self.cycle):
            if cycle is not None and not cycle.response_complete:
                cycle.disconnected = True
                cycle.message_event.set()
                gone: asyncio.Future[None] | None = (
                    cast(dict[str, Any], cycle.scope).get("extensions", {}).get(DISCONNECTED)
                )
                if gone is not None and not gone.done():
                    gone.set_result(None)

    def connection_lost(self, exc: Exception | None) -> None:
        if self.read_check is not None:
            self.read_check.cancel()
            self.read_check = None
        self._cancel_write_deadline()
        self._mark_gone()
        super().connection_lost(exc)


def deadline_protocol(*, read_timeout: float, write_timeout: float) -> type[asyncio.Protocol]:
    """What to pass as uvicorn's `http`: `DeadlineProtocol` with these deadlines bound.

    A `functools.partial`, not a class made here: uvicorn pickles its config into each spawned
    worker, and a partial of a module-level class pickles by reference. uvicorn only ever calls it
    with keyword arguments, as it would a protocol class (hence the cast for its type hints).
    """
    bound = functools.partial(DeadlineProtocol, read_timeout=read_timeout, write_timeout=write_timeout)
    return cast(type[asyncio.Protocol], bound)
