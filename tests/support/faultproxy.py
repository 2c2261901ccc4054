"""The fault proxy (TESTPLAN "Tools"): a TCP proxy on 127.0.0.1 between a client and a server that
can add latency, blackhole traffic, refuse connections, cut every connection at once, or reset each
connection after N bytes. It runs its own event loop in a thread, so whatever the test does on its
own loop (or blocking calls) never stalls the traffic it forwards.

Modes, switched at any time with `set`:
- "pass": forward (after `latency` seconds per chunk, if set);
- "blackhole": accept, forward nothing, answer nothing; bytes wait and flow again when the mode goes
  back to "pass" (as a short network partition does under TCP retransmission);
- "refuse": reset every connection, existing and new (the server went away).
`cut()` resets the current connections once and keeps the mode; `reset_after` resets each connection
once that many bytes went through it (client to server), counted from its start.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
import struct
import threading
from collections.abc import Coroutine
from typing import Any, Literal, TypeVar

Mode = Literal["pass", "blackhole", "refuse"]
_CHUNK = 65536
_T = TypeVar("_T")


def _rst(writer: asyncio.StreamWriter) -> None:
    """Close with a TCP reset (SO_LINGER 0), as a dead peer or a middlebox would."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    writer.transport.abort()


class _Link:
    def __init__(self, proxy: FaultProxy, client: asyncio.StreamWriter, server: asyncio.StreamWriter) -> None:
        self.proxy = proxy
        self.writers = (client, server)
        self.sent = 0

    def reset(self) -> None:
        for writer in self.writers:
            _rst(writer)

    async def pump(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, upstream: bool) -> None:
        try:
            while data := await reader.read(_CHUNK):
                while self.proxy.mode == "blackhole":
                    await self.proxy.changed.wait()
                if self.proxy.mode == "refuse":
                    break
                if self.proxy.latency:
                    await asyncio.sleep(self.proxy.latency)
                if upstream:
                    self.sent += len(data)
                    limit = self.proxy.reset_after
                    if limit is not None and self.sent > limit:
                        writer.write(data[: max(limit - (self.sent - len(data)), 0)])
                        break
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            self.reset()


class FaultProxy:
    def __init__(self, target_host: str, target_port: int) -> None:
        self.target = (target_host, target_port)
        self.mode: Mode = "pass"
        self.latency = 0.0
        self.reset_after: int | None = None
        self.connections = 0  # accepted so far
        self._links: set[_Link] = set()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fault-proxy", daemon=True)
        self._server: asyncio.Server | None = None
        self.changed = asyncio.Event()  # set and cleared at each mode change (wakes blackholed pumps)
        self.port = 0

    def start(self) -> FaultProxy:
        self._thread.start()
        self._server = self._call(asyncio.start_server(self._accept, "127.0.0.1", 0))
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def _call(self, coro: Coroutine[Any, Any, _T]) -> _T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout=10)

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        if self.mode == "refuse":
            _rst(writer)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:
            _rst(writer)
            return
        link = _Link(self, writer, up_writer)
        self._links.add(link)
        try:
            await asyncio.gather(
                link.pump(reader, up_writer, upstream=True), link.pump(up_reader, writer, upstream=False)
            )
        except asyncio.CancelledError:
            link.reset()  # the proxy is stopping (ending normally keeps asyncio's stream callback quiet)
        finally:
            self._links.discard(link)

    async def _set(self, mode: Mode) -> None:
        self.mode = mode
        if mode == "refuse":
            for link in list(self._links):
                link.reset()
        self.changed.set()
        self.changed.clear()

    def set(self, mode: Mode, *, latency: float | None = None, reset_after: int | None = None) -> None:
        if latency is not None:
            self.latency = latency
        self.reset_after = reset_after
        self._call(self._set(mode))

    async def _cut(self) -> int:
        links = list(self._links)
        for link in links:
            link.reset()
        return len(links)

    def cut(self) -> int:
        """Reset every open connection now (the mode stays); how many there were."""
        return self._call(self._cut())

    def stop(self) -> None:
        async def shutdown() -> None:
            assert self._server is not None
            self._server.close()
            await self._cut()
            # Let every connection's task finish here, not be destroyed pending with the loop.
            tasks = [t for t in asyncio.all_tasks() if t is not asyncio.current_task()]
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)

        self._call(shutdown())
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()
