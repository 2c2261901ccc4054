"""`teamrouter serve` and its address, through the real command: an address it cannot have is one line
and status 4 before the database is touched, and "listening" is printed only once the port takes
connections."""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from tests.support.smtp import free_port

CANNOT_LISTEN = 4  # teamrouter.cli.EXIT_CANNOT_LISTEN, as the README documents it


@pytest.fixture
def env(tmp_path: Path) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("TEAMROUTER_") or k.startswith("TEAMROUTER_TEST_")}
    return {
        **clean,
        "TEAMROUTER_ENV": "dev",
        "TEAMROUTER_VAR_DIR": str(tmp_path / "var"),
        "TEAMROUTER_DATABASE_URL": f"sqlite:///{tmp_path / 'teamrouter.db'}",
    }


def serve_args(host: str, port: int, workers: int) -> list[str]:
    return [sys.executable, "-m", "teamrouter", "serve", "--host", host, "--port", str(port), "--workers", str(workers)]


def serve(env: dict[str, str], host: str, port: int, workers: int = 1) -> subprocess.CompletedProcess[str]:
    return subprocess.run(serve_args(host, port, workers), env=env, capture_output=True, text=True, timeout=60)


def start(env: dict[str, str], host: str, port: int, workers: int = 1) -> subprocess.Popen[str]:
    """A server whose stderr the test reads line by line as it is written."""
    return subprocess.Popen(
        serve_args(host, port, workers), env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True
    )


@pytest.mark.parametrize("workers", [1, 2])
def test_a_port_in_use_is_one_line_naming_it(env, tmp_path, workers):
    with socket.socket() as taken:  # another server on the port
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = serve(env, "127.0.0.1", port, workers)
    assert result.returncode == CANNOT_LISTEN, result.stderr
    assert result.stderr == f"error: cannot listen on 127.0.0.1:{port}: address already in use\n"
    # Refused before migrating: the database another instance may be serving is left as it was.
    assert not (tmp_path / "teamrouter.db").exists()


def test_an_address_not_this_machines_is_one_line_naming_it(env):
    # 192.0.2.0/24 is TEST-NET-1 (RFC 5737): documentation only, assigned to no interface.
    result = serve(env, "192.0.2.1", 8080)
    assert result.returncode == CANNOT_LISTEN, result.stderr
    assert result.stderr == "error: cannot listen on 192.0.2.1:8080: cannot assign requested address\n"


@pytest.mark.parametrize("workers", [1, 2])
def test_listening_is_said_once_the_port_takes_connections(env, workers):
    port = free_port()
    proc = start(env, "127.0.0.1", port, workers)
    try:
        assert proc.stderr is not None
        before = []
        for line in proc.stderr:  # read as it is written: the check runs the moment the line is out
            if "listening on" in line:
                # Before uvicorn's start-up and the app's, which took 1.5 s or more when this line
                # was printed first: a connection made now was refused then.
                with socket.create_connection(("127.0.0.1", port), timeout=2):
                    pass
                break
            before.append(line)
        else:
            raise AssertionError(f"no listening line; exit {proc.wait()}:\n{''.join(before)}")
        assert line == f"teamrouter listening on http://127.0.0.1:{port} (dev mode)\n"
        assert not any("Application startup complete" in earlier for earlier in before)
        # A request sent at once waits in the backlog for a worker and is answered, not refused.
        assert httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=30).status_code == 200
    finally:
        proc.terminate()
        proc.communicate(timeout=30)


def test_port_zero_serves_on_a_free_port_and_says_which(env, tmp_path):
    proc = start(env, "127.0.0.1", 0)
    try:
        assert proc.stderr is not None
        line = next(line for line in proc.stderr if "listening on" in line)
        found = re.fullmatch(r"teamrouter listening on http://127\.0\.0\.1:(\d+) \(dev mode\)\n", line)
        assert found and int(found[1]) != 0, line
        base = f"http://127.0.0.1:{found[1]}"
        assert httpx.get(f"{base}/healthz", timeout=30).status_code == 200
        # Dev mail links lead back to the port it got, not to TEAMROUTER_PUBLIC_URL's default (:8080).
        signup = {"email": "port@example.com", "password": "correct horse battery"}
        assert httpx.post(f"{base}/api/v1/auth/signup", json=signup, timeout=30).status_code == 201
        outbox = tmp_path / "var" / "outbox"
        deadline = time.monotonic() + 10
        while not list(outbox.glob("*.eml")) and time.monotonic() < deadline:
            time.sleep(0.05)
        (mail,) = outbox.glob("*.eml")
        assert f"{base}/verify-email?token=" in mail.read_text()
    finally:
        proc.terminate()
        proc.communicate(timeout=30)
