"""`teamrouter serve` as an operator starts it: a bad configuration stops it before any worker starts,
with one line and a non-zero status whatever --workers says; workers log like the parent does."""

from __future__ import annotations

import logging
import os
import re
import subprocess
import sys

import httpx
import pytest
from tests.support.server import ServerProcess

from teamrouter.storage.db import Database

DUPLICATE_MODEL = """
[[providers]]
slug = "demo"
kind = "demo"

[[models]]
id = "demo/twice"
context_length = 1000
[[models.endpoints]]
provider = "demo"
prompt_price = "0"
completion_price = "0"

[[models]]
id = "demo/twice"
context_length = 1000
[[models.endpoints]]
provider = "demo"
prompt_price = "0"
completion_price = "0"
"""

UNSET_KEY = """
[[providers]]
slug = "acme"
kind = "openai"
base_url = "http://127.0.0.1:1/v1"
api_key_env = "TRFIX_UNSET_UPSTREAM_KEY"
"""


def serve(env: dict[str, str], workers: int) -> subprocess.CompletedProcess[str]:
    # Port 0 (any free one): the socket is bound before the database is migrated, and a fixed port
    # could be taken, or (port 1) not ours to bind without root.
    return subprocess.run(
        [sys.executable, "-m", "teamrouter", "serve", "--port", "0", "--workers", str(workers)],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.fixture
def base_env(tmp_path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("TEAMROUTER_") or k.startswith("TEAMROUTER_TEST_")}
    env.pop("TRFIX_UNSET_UPSTREAM_KEY", None)
    return {
        **env,
        "TEAMROUTER_ENV": "dev",
        "TEAMROUTER_VAR_DIR": str(tmp_path / "var"),
        "TEAMROUTER_DATABASE_URL": f"sqlite:///{tmp_path / 'var' / 'teamrouter.db'}",
    }


def _cases(tmp_path) -> list[tuple[str, dict[str, str], str]]:
    duplicate = tmp_path / "duplicate.toml"
    duplicate.write_text(DUPLICATE_MODEL)
    unset = tmp_path / "unset.toml"
    unset.write_text(UNSET_KEY)
    production = {"TEAMROUTER_ENV": "production", "TEAMROUTER_SECRET_KEY": "p" * 48}
    return [
        ("duplicate model id", {"TEAMROUTER_CATALOG": str(duplicate)}, "duplicate model id"),
        ("unset api_key_env", {"TEAMROUTER_CATALOG": str(unset)}, "TRFIX_UNSET_UPSTREAM_KEY"),
        ("misspelt variable", {"TEAMROUTER_DATABSE_URL": "postgresql://db/x"}, "TEAMROUTER_DATABASE_URL?"),
        ("redis without scheme", {"TEAMROUTER_REDIS_URL": "localhost:6379"}, "TEAMROUTER_REDIS_URL"),
        ("smtp malformed", {**production, "TEAMROUTER_SMTP_URL": "mail.internal"}, "TEAMROUTER_SMTP_URL"),
        ("public url", {"TEAMROUTER_PUBLIC_URL": "not-a-url"}, "TEAMROUTER_PUBLIC_URL"),
        ("infinite seconds", {"TEAMROUTER_CACHE_TTL_SECONDS": "inf"}, "TEAMROUTER_CACHE_TTL_SECONDS"),
        ("unreachable database", {"TEAMROUTER_DATABASE_URL": "postgresql://u@127.0.0.1:1/x"}, "DATABASE_URL"),
    ]


def test_a_bad_start_is_one_line_and_fails_with_several_workers(base_env, tmp_path):
    # With one worker uvicorn runs the app in its own process and a failure already exited 3; with
    # several, its supervisor exited 0 after a traceback per worker.
    for what, extra, named in _cases(tmp_path):
        result = serve({**base_env, **extra}, workers=2)
        assert result.returncode != 0, (what, result.stderr)
        assert "Traceback" not in result.stderr, (what, result.stderr)
        assert "listening on" not in result.stderr, (what, result.stderr)
        errors = [line for line in result.stderr.splitlines() if line.startswith("error: ")]
        assert len(errors) == 1 and named in errors[0], (what, result.stderr)


def test_every_worker_logs_in_the_same_format(base_env, tmp_path):
    server = ServerProcess(base_env, workers=2, cwd=tmp_path)
    server.start()
    try:
        # A dev-mode sign-up logs the outbox mail as a WARNING from inside a worker.
        answer = httpx.post(
            f"{server.base_url}/api/v1/auth/signup",
            json={"email": "logs@example.com", "password": "correct horse battery staple"},
            timeout=10,
        )
        assert answer.status_code == 201
    finally:
        server.stop()
    log = server.log()
    stamp = r"^\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} "
    # INFO lines of both workers (not only the parent's) and the worker's WARNING, all formatted.
    assert len(re.findall(stamp + r"INFO uvicorn\.error: Application startup complete", log, re.M)) == 2, log
    assert re.search(stamp + r"WARNING teamrouter\.mailer: email to logs@example\.com", log, re.M), log


async def test_an_unreachable_database_is_logged_once_per_change(caplog):
    database = Database("postgresql://nobody@127.0.0.1:1/none")
    try:
        with caplog.at_level(logging.INFO, logger="teamrouter.storage.db"):
            for _ in range(3):
                assert await database.ping(timeout=2) is False
    finally:
        await database.dispose()
    records = [r for r in caplog.records if r.name == "teamrouter.storage.db"]
    assert len(records) == 1, [r.getMessage() for r in records]
    assert records[0].levelno == logging.WARNING and records[0].exc_info is None
    assert records[0].getMessage().startswith("database unreachable: ")
