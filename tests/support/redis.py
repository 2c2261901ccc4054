"""The Redis the cross-instance tests use (`.ci/run` starts one): its URL, and whether it answers."""

from __future__ import annotations

import os
import socket

REDIS_URL = os.environ.get("TEAMROUTER_TEST_REDIS_URL", "redis://127.0.0.1:6379/15")


def redis_answers(url: str = REDIS_URL) -> bool:
    host, port = url.split("//", 1)[1].split("/", 1)[0].split(":")
    with socket.socket() as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((host, int(port))) == 0
