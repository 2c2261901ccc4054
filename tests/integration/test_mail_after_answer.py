"""No answer about an address waits for the mail server (TESTPLAN D34): its timing is no oracle.

Resend-verification mails only an unverified account, and sign-up mails differently for a new, an
unconfirmed and a confirmed address; a request that waited for SMTP took a mail server's time
longer exactly when it mailed (a second per request with a slow one: whether an address has an
unverified account was a timing measurement away). Here a real server mails through an SMTP sink
that takes each message but holds its answer until the test opens a gate: every request must be
answered while its mail is held (a server that waited for the mail would not answer at all), and
the mail must then arrive, so it was sent, after the answer. No timing is measured: nothing flaky.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from tests.conftest import PASSWORD
from tests.support.server import ServerProcess
from tests.support.smtp import SmtpServer

from teamrouter.domain.accounts import service as accounts
from teamrouter.runtime import Runtime

API = "/api/v1"
# Far below the server's own SMTP timeout (10 s), after which a server that waited would answer.
ANSWER_WITHIN = 5.0


@pytest.fixture
def held_smtp() -> Iterator[SmtpServer]:
    smtp = SmtpServer()
    smtp.start()
    smtp.sink.gate.clear()
    yield smtp
    smtp.sink.gate.set()
    smtp.stop()


@pytest.fixture
def server(database_url: str, tmp_path: Path, held_smtp: SmtpServer) -> Iterator[ServerProcess]:
    process = ServerProcess(
        {
            "TEAMROUTER_ENV": "dev",
            "TEAMROUTER_DATABASE_URL": database_url,
            "TEAMROUTER_VAR_DIR": str(tmp_path / "var"),
            "TEAMROUTER_SMTP_URL": held_smtp.url,
            "TEAMROUTER_PUBLIC_URL": "http://127.0.0.1:1",
        },
        cwd=tmp_path,
    )
    process.start()
    yield process
    held_smtp.sink.gate.set()  # mail still held would make the server's shutdown wait for it
    process.stop()


def post(server: ServerProcess, path: str, body: dict[str, str]) -> httpx.Response:
    with httpx.Client(base_url=f"{server.base_url}{API}", timeout=ANSWER_WITHIN) as http:
        return http.post(path, json=body)


async def test_resend_answers_before_its_mail_is_sent(rt: Runtime, server: ServerProcess, held_smtp: SmtpServer):
    # Made directly: no mail yet, so the per-address mail limit lets the resend mail them.
    await accounts.create_user(rt, email="pending@answer.example.com", password=PASSWORD)
    await accounts.create_user(rt, email="confirmed@answer.example.com", password=PASSWORD, verified=True)

    for email in ("pending@answer.example.com", "confirmed@answer.example.com", "nobody@answer.example.com"):
        r = post(server, "/auth/resend-verification", {"email": email})
        assert r.status_code == 202 and r.json() == {"data": {"sent": True}}, (email, r.text)

    held_smtp.sink.wait_until_arrived(1)  # the unverified account's mail is on its way, held
    assert held_smtp.sink.messages == []
    held_smtp.sink.gate.set()
    mail = held_smtp.sink.wait_for("pending@answer.example.com")[0]
    assert "verify" in mail["Subject"].lower() and held_smtp.sink.token_in(mail)


async def test_every_sign_up_answers_before_its_mail_is_sent(rt: Runtime, server: ServerProcess, held_smtp: SmtpServer):
    await accounts.create_user(rt, email="pending@answer.example.com", password=PASSWORD)
    await accounts.create_user(rt, email="confirmed@answer.example.com", password=PASSWORD, verified=True)

    addresses = ("new@answer.example.com", "pending@answer.example.com", "confirmed@answer.example.com")
    for email in addresses:
        r = post(server, "/auth/signup", {"email": email, "password": PASSWORD})
        assert r.status_code == 201 and r.json() == {"data": {"email": email}}, (email, r.text)

    held_smtp.sink.wait_until_arrived(1)
    assert held_smtp.sink.messages == []
    held_smtp.sink.gate.set()
    subjects = {email: held_smtp.sink.wait_for(email)[0]["Subject"].lower() for email in addresses}
    assert "verify" in subjects["new@answer.example.com"]
    assert "verify" in subjects["pending@answer.example.com"]
    assert "tried to sign up" in subjects["confirmed@answer.example.com"]


def test_mail_queued_at_shutdown_is_still_sent(server: ServerProcess, held_smtp: SmtpServer):
    """The queue belongs to the app's lifespan: stopping the server lets queued mail go out first."""
    r = post(server, "/auth/signup", {"email": "late@answer.example.com", "password": PASSWORD})
    assert r.status_code == 201
    held_smtp.sink.wait_until_arrived(1)
    assert server.proc is not None
    server.proc.terminate()  # SIGTERM, as a service manager stops it, while the mail is held
    deadline = time.monotonic() + 10
    while "Waiting for application shutdown" not in server.log():  # uvicorn: the lifespan's turn
        assert time.monotonic() < deadline, server.log()
        time.sleep(0.02)
    time.sleep(1.0)
    assert server.proc.poll() is None, server.log()  # still there: waiting for the mail to go
    held_smtp.sink.gate.set()
    # uvicorn re-raises the signal once it has shut down cleanly
    assert server.proc.wait(timeout=20) in (0, -signal.SIGTERM), server.log()
    assert held_smtp.sink.wait_for("late@answer.example.com", timeout=1.0)
    assert "failed" not in server.log() and "unfinished" not in server.log(), server.log()
