"""SSE comments while a stream is silent, so proxies and clients with idle timeouts keep it open.

A reasoning model can think for minutes before its first token, or between two; nginx cuts a
proxied connection after 60 s without a byte by default, and many load balancers sooner. After
`every` seconds without a byte to the client, the stream is started if it was not (its head goes
out: from then on a failure is an SSE error event, as API.md has it for any started stream) and a
comment line is sent, which SSE clients, the official SDKs among them, skip. OpenRouter does the
same (`: OPENROUTER PROCESSING`).

A stream whose upstream answers promptly never sees a comment, and pays one timer for the lot:
it is re-armed only when it fires, not on every event.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

from teamrouter.gateway.streaming import Emit

COMMENT = b": TEAMROUTER PROCESSING\n\n"

log = logging.getLogger(__name__)


class Keepalive:
    """Wraps a stream's `start` and `emit`; `stop()` once the stream has sent its last event."""

    def __init__(self, every: float, start: Callable[[], Awaitable[None]], emit: Emit) -> None:
        self._every = every
        self._start = start
        self._emit = emit
        self._loop = asyncio.get_running_loop()
        self._last = self._loop.time()
        self._timer = self._loop.call_later(every, self._due) if every > 0 else None
        self._sending: asyncio.Task[None] | None = None
        # An event is being sent: a slow reader holding it up is not silence, and a comment then
        # could land after the stream's last event.
        self._emitting = False

    async def emit(self, data: bytes) -> None:
        self._emitting = True
        try:
            await self._emit(data)
        finally:
            self._emitting = False
            self._last = self._loop.time()

    async def stop(self) -> None:
        """No comment after this returns (one under way is let finish: it is a whole event)."""
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._sending is not None and not self._sending.done():
            with contextlib.suppress(Exception):
                await asyncio.shield(self._sending)

    def _due(self) -> None:
        idle = 0.0 if self._emitting else self._loop.time() - self._last
        if idle >= self._every and (self._sending is None or self._sending.done()):
            self._sending = self._loop.create_task(self._comment(), name="sse-keepalive")
            idle = 0.0
        self._timer = self._loop.call_later(self._every - idle, self._due)

    async def _comment(self) -> None:
        self._last = self._loop.time()
        try:
            await self._start()
            await self._emit(COMMENT)
        except Exception:  # the client went away: the stream's own task finds out and ends
            log.debug("keepalive comment not sent", exc_info=True)
