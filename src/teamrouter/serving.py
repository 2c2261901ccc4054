"""The listening socket of `teamrouter serve`, bound here and handed to uvicorn.

uvicorn binds its own socket only once the app is loaded (one worker) and logs a failure its own way,
exiting 3. Binding it here instead lets `serve` refuse an address it cannot have (in use, not this
machine's, not allowed) in one line before it touches the database, and say "listening" only once it
is so: from `listen()` on, the kernel accepts connections into the backlog, and the workers answer
them as soon as they have started. The same socket serves one worker or many (uvicorn's supervisor
passes it to each).
"""

from __future__ import annotations

import socket

from uvicorn import Config, Server
from uvicorn.supervisors import Multiprocess

from teamrouter.errors import CannotListen

# uvicorn's default, passed to it too, so its own listen() on our socket keeps the same queue.
BACKLOG = 2048


def bind(host: str, port: int) -> socket.socket:
    """A TCP socket bound to host:port, not listening yet; CannotListen naming the address and why."""
    # An IPv6 literal needs its own family; anything else (an IPv4 address, a name) as uvicorn does.
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        # A restart must not wait for the last run's connections to leave TIME_WAIT. On Linux this
        # does not let two servers share a listening port: that still fails with EADDRINUSE.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
    except OSError as exc:  # socket.gaierror too: a host name that does not resolve
        sock.close()
        raise _cannot_listen(host, port, exc) from exc
    sock.set_inheritable(True)  # as uvicorn's own: workers may inherit it
    return sock


def listen(sock: socket.socket) -> None:
    """Start accepting connections: from here on, a client's connect succeeds."""
    try:
        sock.listen(BACKLOG)
    except OSError as exc:
        host, port = sock.getsockname()[:2]
        sock.close()
        raise _cannot_listen(host, port, exc) from exc


def url(sock: socket.socket) -> str:
    """http://host:port of a bound socket, with the port it got (`--port 0` picks a free one)."""
    host, port = sock.getsockname()[:2]
    return f"http://{_hostport(host, port)}"


def local_url(sock: socket.socket) -> str:
    """`url`, with a wildcard address (0.0.0.0, ::) given as this machine's loopback, which a
    browser on it can open."""
    host, port = sock.getsockname()[:2]
    host = {"0.0.0.0": "127.0.0.1", "::": "::1"}.get(host, host)  # noqa: S104  # read, not bound
    return f"http://{_hostport(host, port)}"


def run(config: Config, sock: socket.socket) -> bool:
    """Serve on `sock` until a signal stops it; False if the (single) server never started.

    What `uvicorn.run` does once it has a socket, with ours: one worker runs in this process, several
    under uvicorn's supervisor, which restarts a worker that dies.
    """
    if config.workers > 1:
        Multiprocess(config, sockets=[sock]).run()
        return True
    server = Server(config)
    server.run(sockets=[sock])
    return server.started


def _cannot_listen(host: str, port: int, exc: OSError) -> CannotListen:
    reason = exc.strerror or str(exc)  # "Address already in use", "Cannot assign requested address"
    return CannotListen(f"cannot listen on {_hostport(host, port)}: {reason[:1].lower()}{reason[1:]}")


def _hostport(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
