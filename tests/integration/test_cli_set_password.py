"""`teamrouter users set-password`: the operator's password reset, run as a separate process the way
an operator would, then checked by signing in over HTTP (a real server process, or in process)."""

from __future__ import annotations

import contextlib
import os
import select as io_select
import subprocess
import sys
import termios
import time
from datetime import UTC, datetime

import httpx
import pytest
from sqlalchemy import func, select
from tests.conftest import PASSWORD
from tests.support.orgs import API, assert_envelope
from tests.support.server import ServerProcess

from teamrouter.domain.accounts.models import LoginFailure, User
from teamrouter.domain.accounts.passwords import password_problem
from teamrouter.domain.accounts.reset import set_password
from teamrouter.domain.actor import Actor
from teamrouter.domain.audit.models import AuditEvent
from teamrouter.domain.mail.models import MailState, OutgoingMail
from teamrouter.errors import Forbidden
from teamrouter.ids import hash_token

NEW_PASSWORD = "a brand new passphrase"


@pytest.fixture
def env(database_url, tmp_path):
    return {
        **os.environ,
        "TEAMROUTER_DATABASE_URL": database_url,
        "TEAMROUTER_VAR_DIR": str(tmp_path / "var"),
        "TEAMROUTER_ENV": "dev",
    }


@pytest.fixture
def cli(env):
    def run(*args: str, stdin: str = "") -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "teamrouter", *args],
            env=env,
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
        )

    return run


def _one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


async def _resets(rt) -> list[AuditEvent]:
    async with rt.db.read() as s:
        return list((await s.scalars(select(AuditEvent).where(AuditEvent.action == "user.password_set"))).all())


async def _audit_count(rt) -> int:
    async with rt.db.read() as s:
        return int(await s.scalar(select(func.count()).select_from(AuditEvent)) or 0)


async def _log_in(client: httpx.AsyncClient, email: str, password: str) -> httpx.Response:
    return await client.post(f"{API}/auth/login", json={"email": email, "password": password})


def test_a_reset_replaces_the_password_and_ends_every_session_on_a_real_server(env, cli, tmp_path):
    made = cli("users", "create", "--email", "ada@example.com", "--password", PASSWORD, "--verified")
    assert made.returncode == 0, made.stderr
    server = ServerProcess(env, cwd=tmp_path)
    server.start()
    try:
        with contextlib.ExitStack() as clients:

            def browser() -> httpx.Client:
                return clients.enter_context(httpx.Client(base_url=f"{server.base_url}{API}", timeout=10))

            laptop, phone = browser(), browser()
            for signed_in in (laptop, phone):
                r = signed_in.post("/auth/login", json={"email": "ada@example.com", "password": PASSWORD})
                assert r.status_code == 200, r.text
                assert signed_in.get("/me").status_code == 200
            old_cookie = laptop.cookies["tr_session"]

            new_password = NEW_PASSWORD + "\n"
            done = cli("users", "set-password", "--email", "Ada@Example.com", "--password-stdin", stdin=new_password)
            assert done.returncode == 0, done.stderr
            assert done.stdout.strip() == "password of ada@example.com set; 2 sessions ended"

            # Both sessions are over, and the old cookie replayed from elsewhere is refused too.
            assert laptop.get("/me").status_code == 401
            assert phone.get("/me").status_code == 401
            replay = browser()
            replay.cookies.set("tr_session", old_cookie)
            assert replay.get("/me").status_code == 401

            http = browser()
            old = http.post("/auth/login", json={"email": "ada@example.com", "password": PASSWORD})
            assert old.status_code == 401
            new = http.post("/auth/login", json={"email": "ada@example.com", "password": NEW_PASSWORD})
            assert new.status_code == 200, new.text
            assert http.get("/me").json()["data"]["user"]["email"] == "ada@example.com"
    finally:
        server.stop()
    assert NEW_PASSWORD not in server.log() and NEW_PASSWORD not in done.stderr


async def test_the_reset_is_audited_without_the_password(cli, rt, make_person):
    ada = await make_person("ada@example.com")
    done = cli("users", "set-password", "--email", ada.email, "--password-stdin", stdin=NEW_PASSWORD + "\n")
    assert done.returncode == 0, done.stderr

    [event] = await _resets(rt)
    assert event.target_id == ada.id and event.actor_user_id is None  # the operator on the host
    assert event.after == {"email_verified": True, "sessions_ended": 1, "keys_disabled": 0}
    async with rt.db.read() as s:
        password_hash = await s.scalar(select(User.password_hash).where(User.id == ada.id))
    recorded = f"{event.before} {event.after}"
    assert NEW_PASSWORD not in recorded and password_hash not in recorded
    # The person is told, through the outbox (sent by this process or, if it exits first, a server).
    async with rt.db.read() as s:
        [mail] = (await s.scalars(select(OutgoingMail).where(OutgoingMail.to_address == ada.email))).all()
    assert mail.subject == "Your teamrouter password was changed" and mail.what == "mail 'password changed'"
    assert mail.state == MailState.SENT or "tell them at once" in mail.body
    assert NEW_PASSWORD not in mail.body


async def test_no_mail_when_nothing_was_reset(cli, rt, make_person):
    ada = await make_person("ada@example.com")
    refused = cli("users", "set-password", "--email", ada.email, "--password-stdin", stdin="short\n")
    assert refused.returncode == 1
    async with rt.db.read() as s:
        assert (await s.scalars(select(OutgoingMail).where(OutgoingMail.to_address == ada.email))).all() == []


def _wait_for(proc: subprocess.Popen[bytes], seen: bytearray, text: bytes, tty: int) -> None:
    """Read the command's output until it shows `text` and its terminal stops echoing (the prompt
    is up: typing earlier would be flushed away when it turns echo off)."""
    deadline = time.monotonic() + 30
    assert proc.stdout is not None
    while time.monotonic() < deadline:
        if text in seen and not termios.tcgetattr(tty)[3] & termios.ECHO:
            return
        ready, _, _ = io_select.select([proc.stdout], [], [], 0.05)
        if ready:
            chunk = os.read(proc.stdout.fileno(), 4096)
            if not chunk and proc.poll() is not None:
                break
            seen += chunk
    raise AssertionError(f"no {text!r} prompt; output so far: {bytes(seen)!r}")


async def test_the_new_password_is_asked_twice_on_a_terminal_without_echo(env, rt, make_person, client):
    ada = await make_person("ada@example.com")
    controller, tty = os.openpty()
    try:
        # A session of its own, so the command's terminal is this pseudo-terminal and never the one
        # pytest may run in.
        with subprocess.Popen(
            [sys.executable, "-m", "teamrouter", "users", "set-password", "--email", ada.email],
            env=env,
            stdin=tty,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        ) as proc:
            try:
                seen = bytearray()
                _wait_for(proc, seen, b"New password:", tty)
                os.write(controller, NEW_PASSWORD.encode() + b"\n")
                _wait_for(proc, seen, b"Repeat for confirmation:", tty)
                os.write(controller, NEW_PASSWORD.encode() + b"\n")
                rest, _ = proc.communicate(timeout=60)
            finally:
                if proc.poll() is None:
                    proc.kill()
    finally:
        os.close(controller)
        os.close(tty)
    output = (bytes(seen) + rest).decode()
    assert proc.returncode == 0, output
    assert NEW_PASSWORD not in output  # not echoed
    assert output.strip().endswith("password of ada@example.com set; 1 session ended")

    assert_envelope(await ada.client.get(f"{API}/me"), 401)
    assert (await _log_in(client, ada.email, PASSWORD)).status_code == 401
    assert (await _log_in(client, ada.email, NEW_PASSWORD)).status_code == 200


async def test_an_unknown_address_or_no_password_changes_nothing(cli, rt, make_person, client):
    ada = await make_person("ada@example.com")
    before = await _audit_count(rt)

    unknown = cli("users", "set-password", "--email", "nobody@example.com", "--password-stdin", stdin=NEW_PASSWORD)
    assert unknown.returncode == 1
    assert _one_line_error(unknown) == "error: No account with email nobody@example.com"
    # The address is checked before the password is asked for.
    unasked = cli("users", "set-password", "--email", "nobody@example.com")
    assert unasked.returncode == 1 and "nobody@example.com" in _one_line_error(unasked)

    # No terminal to ask on and no --password-stdin: refused, not read from a pipe by surprise.
    no_tty = cli("users", "set-password", "--email", ada.email, stdin=NEW_PASSWORD + "\n")
    assert no_tty.returncode == 2 and "--password-stdin" in _one_line_error(no_tty)
    empty = cli("users", "set-password", "--email", ada.email, "--password-stdin", stdin="\n")
    assert empty.returncode == 2 and "--password-stdin" in _one_line_error(empty)

    assert await _audit_count(rt) == before
    assert (await ada.client.get(f"{API}/me")).status_code == 200
    assert (await _log_in(client, ada.email, NEW_PASSWORD)).status_code == 401


async def test_sign_up_password_rules_apply(cli, rt, make_person, client):
    ada = await make_person("ada.lovelace@example.com")
    before = await _audit_count(rt)
    # Too short, the address's name part, a common password: refused with sign-up's own words.
    for weak in ("short", "ada.lovelace rocks", "password123"):
        problem = password_problem(weak, email=ada.email)
        assert problem is not None
        refused = cli("users", "set-password", "--email", ada.email, "--password-stdin", stdin=weak + "\n")
        assert refused.returncode == 1
        assert _one_line_error(refused) == f"error: password: Password {problem}"
    assert await _audit_count(rt) == before
    assert (await ada.client.get(f"{API}/me")).status_code == 200
    assert (await _log_in(client, ada.email, PASSWORD)).status_code == 200


async def test_a_throttled_address_signs_in_at_once_with_the_new_password(cli, rt, make_person, client):
    ada = await make_person("ada@example.com")
    async with rt.db.uow() as uow:  # someone has been guessing: the next attempt must wait minutes
        uow.session.add(LoginFailure(email_hash=hash_token(ada.email), failures=20, last_failure_at=datetime.now(UTC)))
    assert_envelope(await _log_in(client, ada.email, PASSWORD), 429)

    done = cli("users", "set-password", "--email", ada.email, "--password-stdin", stdin=NEW_PASSWORD + "\n")
    assert done.returncode == 0, done.stderr
    assert (await _log_in(client, ada.email, NEW_PASSWORD)).status_code == 200


async def test_verified_also_confirms_the_address(cli, rt, make_person, client):
    ada = await make_person("ada@example.com", verified=False)
    kept = cli("users", "set-password", "--email", ada.email, "--password-stdin", stdin=NEW_PASSWORD + "\n")
    assert kept.returncode == 0 and "verified" not in kept.stdout

    assert (await _log_in(client, ada.email, NEW_PASSWORD)).status_code == 200
    assert (await client.get(f"{API}/me")).json()["data"]["user"]["email_verified"] is False

    other = "another new passphrase"
    done = cli("users", "set-password", "--email", ada.email, "--password-stdin", "--verified", stdin=other + "\n")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "password of ada@example.com set; 1 session ended; email marked verified"
    assert (await _log_in(client, ada.email, other)).status_code == 200
    assert (await client.get(f"{API}/me")).json()["data"]["user"]["email_verified"] is True


async def test_only_staff_may_set_a_password(rt, make_person, client):
    ada = await make_person("ada@example.com")
    bob = await make_person("bob@example.com")
    with pytest.raises(Forbidden):
        await set_password(rt, actor=Actor(user_id=bob.id), email=ada.email, password=NEW_PASSWORD)
    assert (await _log_in(client, ada.email, PASSWORD)).status_code == 200

    staff = Actor(user_id=bob.id, is_staff=True)
    done = await set_password(rt, actor=staff, email=ada.email, password=NEW_PASSWORD)
    assert done.sessions_ended == 2  # make_person's sign-in, and the one just above
    [event] = await _resets(rt)
    assert event.actor_user_id == bob.id


async def test_keys_are_said_to_outlive_the_reset_or_disabled_with_it(cli, rt, make_person, client):
    # Whoever had the password may have made keys, and a management key acts as the person.
    ada = await make_person("ada@example.com")
    made = []
    for body in ({"name": "laptop"}, {"name": "automation", "management": True}):
        r = await ada.call("POST", "/keys", json=body)
        assert r.status_code == 201, r.text
        made.append(r.json()["key"])

    kept = cli("users", "set-password", "--email", ada.email, "--password-stdin", stdin=NEW_PASSWORD + "\n")
    assert kept.returncode == 0, kept.stderr
    assert kept.stdout.strip().endswith("; 2 API keys still working (--disable-keys disables them)")
    for key in made:
        assert (await client.get(f"{API}/key", headers={"Authorization": f"Bearer {key}"})).status_code == 200

    again = "another new passphrase"
    done = cli("users", "set-password", "--email", ada.email, "--password-stdin", "--disable-keys", stdin=again + "\n")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip().endswith("; 2 API keys disabled")
    for key in made:
        assert_envelope(await client.get(f"{API}/key", headers={"Authorization": f"Bearer {key}"}), 401)
    async with rt.db.read() as s:
        reasons = [
            e.after["reason"] for e in await s.scalars(select(AuditEvent).where(AuditEvent.action == "api_key.disable"))
        ]
        bodies = [m.body for m in await s.scalars(select(OutgoingMail).where(OutgoingMail.to_address == ada.email))]
    assert reasons == ["password reset", "password reset"]
    assert any("2 API keys were disabled" in body for body in bodies) or all(body == "" for body in bodies)
    # Back in, the person re-enables what is theirs.
    r = await _log_in(client, ada.email, again)
    assert r.status_code == 200, r.text
