"""The real thing: `teamrouter serve` as a separate process (several workers), real HTTP, real SMTP,
and the CLI — as a new user would meet them."""

from __future__ import annotations

import os
import subprocess
import sys

import httpx
import pytest
from tests.conftest import PASSWORD
from tests.support.server import ServerProcess


@pytest.fixture
def server_env(database_url, tmp_path, smtp):
    return {
        "TEAMROUTER_ENV": "dev",
        "TEAMROUTER_DATABASE_URL": database_url,
        "TEAMROUTER_VAR_DIR": str(tmp_path / "var"),
        "TEAMROUTER_SMTP_URL": smtp.url,
        "TEAMROUTER_PUBLIC_URL": "http://127.0.0.1:1",
    }


def cli(env, *args):
    return subprocess.run(
        [sys.executable, "-m", "teamrouter", *args], env={**env}, capture_output=True, text=True, timeout=60
    )


def test_sign_up_to_logout_against_a_real_server(server_env, smtp, tmp_path):
    server = ServerProcess(server_env, workers=2, cwd=tmp_path)
    server.start()
    try:
        with httpx.Client(base_url=f"{server.base_url}/api/v1", timeout=10) as http:
            r = http.post("/auth/signup", json={"email": "real@example.com", "password": PASSWORD, "name": "Real"})
            assert r.status_code == 201, r.text
            assert "server" not in r.headers  # no "server: uvicorn" telling a scanner what to try
            token = smtp.sink.token_in(smtp.sink.wait_for("real@example.com")[0])
            assert http.post("/auth/verify-email", json={"token": token}).status_code == 200
            r = http.post("/auth/login", json={"email": "real@example.com", "password": PASSWORD})
            assert r.status_code == 200
            csrf = r.json()["data"]["csrf_token"]
            # Both workers share the database: many requests, every one sees the session.
            for _ in range(20):
                me = http.get("/me")
                assert me.status_code == 200 and me.json()["data"]["user"]["email_verified"] is True
            assert http.post("/auth/logout", headers={"X-CSRF-Token": csrf}).status_code == 204
            assert http.get("/me").status_code == 401
        assert httpx.get(f"{server.base_url}/readyz").json()["status"] == "ready"
    finally:
        server.stop()
    log = server.log()
    assert token not in log and PASSWORD not in log


def test_cli_help_upgrade_and_users_create(server_env):
    env = {**os.environ, **server_env}
    top = cli(env, "--help")
    assert top.returncode == 0
    for command in ("serve", "db", "users", "staff"):
        assert command in top.stdout
    assert "--workers" in cli(env, "serve", "--help").stdout
    assert cli(env, "db", "upgrade").returncode == 0
    made = cli(env, "users", "create", "--email", "Cli@Example.com", "--password", PASSWORD, "--verified", "--staff")
    assert made.returncode == 0, made.stderr
    assert made.stdout.strip().startswith("user_")
    again = cli(env, "users", "create", "--email", "cli@example.com", "--password", PASSWORD)
    assert again.returncode == 1 and "already exists" in again.stderr
    weak = cli(env, "users", "create", "--email", "weak@example.com", "--password", "short")
    assert weak.returncode == 1 and "at least 10" in weak.stderr


def test_serve_refuses_an_unsafe_production_config(tmp_path, database_url):
    env = {
        **os.environ,
        "TEAMROUTER_ENV": "production",
        "TEAMROUTER_DATABASE_URL": database_url,
        "TEAMROUTER_SECRET_KEY": "changeme",
    }
    result = cli(env, "serve", "--port", "1")
    assert result.returncode == 2
    assert "TEAMROUTER_SECRET_KEY" in result.stderr and "TEAMROUTER_SMTP_URL" in result.stderr
    assert "TEAMROUTER_PUBLIC_URL" in result.stderr
