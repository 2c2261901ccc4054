"""Nothing is lost when a process dies, mail included: the outbox (teamrouter.domain.mail).

Mail is recorded in the transaction of the change that causes it, sent after its commit, retried
when the mail server fails, given up after the last attempt, and sent once however many processes
share the outbox. Through real interfaces: a real SMTP sink that can refuse, real server processes
killed with SIGKILL, two runtimes over one database.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import select
from tests.conftest import PASSWORD
from tests.support.server import ServerProcess
from tests.support.smtp import SmtpServer, free_port

from teamrouter.clock import FrozenClock
from teamrouter.config import Settings
from teamrouter.domain.accounts import service as accounts
from teamrouter.domain.accounts.passwords import Passwords
from teamrouter.domain.actor import Actor
from teamrouter.domain.mail.dispatcher import MAX_RETRY_DELAY, retry_delay
from teamrouter.domain.mail.models import MailState, OutgoingMail
from teamrouter.domain.mail.outbox import mail_after_commit
from teamrouter.domain.orgs import invitations
from teamrouter.domain.orgs import service as orgs
from teamrouter.domain.roles import Role
from teamrouter.runtime import Runtime, build_runtime

API = "/api/v1"


@pytest.fixture
def sink() -> Iterator[SmtpServer]:
    """A mail server of this test's own: the tests below make it refuse or hold mail."""
    server = SmtpServer()
    server.start()
    yield server
    server.sink.gate.set()
    server.stop()


@pytest.fixture
async def make_runtime(settings: Settings, passwords: Passwords, sink: SmtpServer) -> Any:
    """Runtimes over the test's database mailing through `sink`, closed at the end."""
    made: list[Runtime] = []

    def make(**overrides: Any) -> Runtime:
        rt = build_runtime(settings.model_copy(update={"smtp_url": sink.url, **overrides}), passwords=passwords)
        made.append(rt)
        return rt

    yield make
    for rt in made:
        await rt.close()


async def outbox(rt: Runtime) -> list[OutgoingMail]:
    async with rt.db.read() as session:
        return list((await session.scalars(select(OutgoingMail).order_by(OutgoingMail.id))).all())


async def eventually(check: Any, *, timeout: float = 10.0) -> Any:
    """Wait (without blocking the loop the dispatcher runs on) until `check()` returns something true."""
    deadline = time.monotonic() + timeout
    while True:
        result = await check()
        if result:
            return result
        assert time.monotonic() < deadline, f"not within {timeout}s"
        await asyncio.sleep(0.02)


def to(sink: SmtpServer, address: str) -> list[Any]:
    return [m for m in sink.sink.messages if m["To"] == address]


def test_retries_back_off_doubling_to_at_most_an_hour():
    delays = [retry_delay(n, first_seconds=30).total_seconds() for n in range(1, 13)]
    assert delays[:8] == [30, 60, 120, 240, 480, 960, 1920, 3600]
    assert max(delays) == MAX_RETRY_DELAY.total_seconds() == 3600
    assert retry_delay(10_000, first_seconds=30) == MAX_RETRY_DELAY


async def test_mail_recorded_in_a_rolled_back_transaction_is_never_sent(make_runtime, sink):
    rt = make_runtime()
    with pytest.raises(RuntimeError):
        async with rt.db.uow() as uow:
            mail_after_commit(uow, rt, to="never@outbox.example.com", subject="s", body="b", what="mail 'test'")
            raise RuntimeError("the change fails after deciding to mail")
    assert await outbox(rt) == []

    async with rt.db.uow() as uow:  # the same, committed, goes out (and shows the sender ran)
        mail_after_commit(uow, rt, to="sent@outbox.example.com", subject="s", body="b", what="mail 'test'")
    await rt.background.idle()
    assert len(to(sink, "sent@outbox.example.com")) == 1
    assert [m.to_address for m in await outbox(rt)] == ["sent@outbox.example.com"]
    assert to(sink, "never@outbox.example.com") == []


async def test_a_temporary_refusal_is_retried_and_the_mail_arrives_once(make_runtime, sink):
    rt = make_runtime(mail_retry_seconds=0.05)
    sink.sink.refuse_next = 2  # "451 try again later", twice
    await accounts.sign_up(rt, email="greylisted@outbox.example.com", password=PASSWORD)

    async def sent() -> list[OutgoingMail]:
        return [m for m in await outbox(rt) if m.state == MailState.SENT]

    [row] = await eventually(sent)
    await asyncio.sleep(0.3)  # time for a wrong further attempt
    assert sink.sink.refused == 2
    [mail] = to(sink, "greylisted@outbox.example.com")
    assert "verify" in mail["Subject"].lower() and sink.sink.token_in(mail)
    assert row.attempts == 3 and row.body == "" and row.sent_at is not None  # no link kept once sent


async def test_a_mail_refused_for_good_stops_after_the_last_attempt(make_runtime, sink, caplog):
    rt = make_runtime(mail_retry_seconds=0.02, mail_max_attempts=3)
    sink.sink.refuse_next = 1_000
    address = "unlucky@outbox.example.com"
    with caplog.at_level(logging.INFO, logger="teamrouter"):
        await accounts.sign_up(rt, email=address, password=PASSWORD)

        async def failed() -> list[OutgoingMail]:
            return [m for m in await outbox(rt) if m.state == MailState.FAILED]

        [row] = await eventually(failed)
        await asyncio.sleep(0.3)  # time for a wrong fourth attempt
    assert sink.sink.refused == 3 and to(sink, address) == []
    assert row.attempts == 3 and row.body == "" and row.last_error == "SMTPDataError 451"
    assert f"mail 'verification' given up after 3 attempts (SMTPDataError 451): outgoing_mail row {row.id}" in (
        caplog.text
    )
    # Each failure is logged by what the mail is, never by whom it is for or what it says.
    logged = "\n".join(r.getMessage() for r in caplog.records if r.name.startswith("teamrouter.domain.mail"))
    assert logged.count("not sent (attempt") == 2
    assert address not in logged and "token" not in logged and "Confirm" not in logged


async def test_a_mail_the_server_refuses_for_good_is_given_up_at_once(make_runtime, sink, caplog):
    # A 5xx reply (no such mailbox, policy) is the server's final word: asking again would get the
    # same answer, so the mail is not tried again however many attempts are allowed.
    rt = make_runtime(mail_retry_seconds=0.02, mail_max_attempts=5)
    sink.sink.refuse_next = 1_000
    sink.sink.refusal = "550 5.1.1 Mailbox unavailable"
    with caplog.at_level(logging.INFO, logger="teamrouter"):
        await accounts.sign_up(rt, email="nobody@outbox.example.com", password=PASSWORD)

        async def failed() -> list[OutgoingMail]:
            return [m for m in await outbox(rt) if m.state == MailState.FAILED]

        [row] = await eventually(failed)
        await asyncio.sleep(0.3)  # time for a wrong second attempt
    assert sink.sink.refused == 1 and row.attempts == 1 and row.last_error == "SMTPDataError 550"
    assert "given up after 1 attempt (SMTPDataError 550)" in caplog.text


async def test_a_revoked_invitations_pending_mail_never_goes_out(make_runtime, sink):
    # The mail server is refusing while an admin invites someone and then revokes the invitation
    # (or replaces it with a new one): once the server is back, only the live invitation's mail
    # arrives. A revoked one's would have named the organization with a dead link.
    rt = make_runtime(mail_retry_seconds=0.05)
    admin = await accounts.create_user(rt, email="admin@outbox.example.com", password=PASSWORD, verified=True)
    actor = Actor(user_id=admin.id, email_verified=True)
    org = (await orgs.create_organization(rt, actor=actor, name="Outbox Ltd")).org
    sink.sink.refuse_next = 1_000
    revoked = await invitations.invite(
        rt, actor=actor, organization_id=org.id, email="kate@x.example.com", role=Role.MEMBER
    )
    replaced = await invitations.invite(
        rt, actor=actor, organization_id=org.id, email="lee@x.example.com", role=Role.MEMBER
    )
    await invitations.revoke_invitation(rt, actor=actor, organization_id=org.id, invitation_id=revoked.id)
    live = await invitations.invite(
        rt, actor=actor, organization_id=org.id, email="lee@x.example.com", role=Role.MEMBER
    )
    assert live.id != replaced.id
    sink.sink.refuse_next = 0

    async def settled() -> list[OutgoingMail]:
        rows = await outbox(rt)
        return rows if all(m.state != MailState.PENDING for m in rows) else []

    rows = await eventually(settled)
    await asyncio.sleep(0.3)  # time for a wrong delivery
    assert to(sink, "kate@x.example.com") == []
    [mail] = to(sink, "lee@x.example.com")
    assert sink.sink.token_in(mail)
    states = {m.topic: (m.state, m.body) for m in rows if m.topic}
    assert states[f"invitation:{revoked.id}"] == (MailState.CANCELLED, "")
    assert states[f"invitation:{replaced.id}"] == (MailState.CANCELLED, "")
    assert states[f"invitation:{live.id}"] == (MailState.SENT, "")


async def test_two_dispatchers_on_one_outbox_send_each_mail_once(make_runtime, sink):
    first, second = make_runtime(), make_runtime()
    sink.sink.gate.clear()  # every mail is held until both dispatchers have theirs in flight
    addresses = [f"many{n}@outbox.example.com" for n in range(20)]
    async with first.db.uow() as uow:
        for address in addresses:
            mail_after_commit(uow, first, to=address, subject="s", body="b", what="mail 'test'")
    second.mail.wake()  # as its ticker would, finding the rows due
    # Each runtime has at most 4 SMTP conversations at once: 8 held means both are sending.
    await asyncio.to_thread(sink.sink.wait_until_arrived, 8)
    sink.sink.gate.set()
    await first.background.idle()
    await second.background.idle()
    await asyncio.sleep(0.2)
    assert sorted(m["To"] for m in sink.sink.messages) == sorted(addresses)
    rows = await outbox(first)
    assert {(m.state, m.attempts, m.body) for m in rows} == {(MailState.SENT, 1, "")}


@pytest.fixture
def server_env(database_url: str, tmp_path: Path) -> dict[str, str]:
    return {
        "TEAMROUTER_ENV": "dev",
        "TEAMROUTER_DATABASE_URL": database_url,
        "TEAMROUTER_VAR_DIR": str(tmp_path / "var"),
        "TEAMROUTER_PUBLIC_URL": "http://127.0.0.1:1",
        "TEAMROUTER_MAIL_RETRY_SECONDS": "1",
    }


async def test_mail_survives_a_kill_while_the_mail_server_is_down(
    rt: Runtime, server_env: dict[str, str], sink: SmtpServer, tmp_path: Path
):
    address = "survivor@outbox.example.com"
    down = ServerProcess({**server_env, "TEAMROUTER_SMTP_URL": f"smtp://127.0.0.1:{free_port()}"}, cwd=tmp_path)
    down.start()
    try:
        with httpx.Client(base_url=f"{down.base_url}{API}", timeout=10) as http:
            r = http.post("/auth/signup", json={"email": address, "password": PASSWORD})
        assert r.status_code == 201, r.text

        async def tried() -> list[OutgoingMail]:  # the first attempt failed (connection refused)
            return [m for m in await outbox(rt) if m.last_error is not None]

        [row] = await eventually(tried)
        assert row.state == MailState.PENDING and row.body  # still to send, link and all
        assert down.proc is not None
        down.proc.kill()  # SIGKILL: no shutdown, no drain
        down.proc.wait(timeout=10)
        assert "token=" not in down.log() and address not in down.log(), down.log()
    finally:
        down.stop()

    up = ServerProcess({**server_env, "TEAMROUTER_SMTP_URL": sink.url}, cwd=tmp_path)
    up.start()  # nothing asks it to mail: it finds the row itself
    try:
        await asyncio.to_thread(sink.sink.wait_for, address, timeout=15)
        await asyncio.sleep(1.5)  # time for a wrong second copy (the retry interval is 1 s)
        [mail] = to(sink, address)
        assert "verify" in mail["Subject"].lower()
        [row] = await outbox(rt)
        assert row.state == MailState.SENT and row.body == ""
        # The link the survivor got works.
        with httpx.Client(base_url=f"{up.base_url}{API}", timeout=10) as http:
            r = http.post("/auth/verify-email", json={"token": sink.sink.token_in(mail)})
        assert r.status_code == 200, r.text
    finally:
        up.stop()


async def test_a_superseded_verification_mail_never_goes_out(
    rt: Runtime, server_env: dict[str, str], sink: SmtpServer, tmp_path: Path
):
    # The mail server is refusing while someone signs up, then signs up again with the same
    # address (a takeover of the unconfirmed account: the first link ends). Sign-up writes nothing
    # more for that (its timing must not tell), so the sender checks each verification link just
    # before sending: once the mail server is back only the live link arrives. Another person's
    # sign-up, mailed during the same outage, arrives as ever.
    taken_over, untouched = "twice@outbox.example.com", "once@outbox.example.com"
    sink.sink.refuse_next = 1_000
    server = ServerProcess({**server_env, "TEAMROUTER_SMTP_URL": sink.url}, cwd=tmp_path)
    server.start()
    try:
        with httpx.Client(base_url=f"{server.base_url}{API}", timeout=10) as http:
            for email in (taken_over, untouched, taken_over):
                r = http.post("/auth/signup", json={"email": email, "password": PASSWORD})
                assert r.status_code == 201, r.text

            async def all_tried() -> list[OutgoingMail]:  # every mail met the refusing server once
                rows = await outbox(rt)
                return rows if len(rows) == 3 and all(m.attempts for m in rows) else []

            await eventually(all_tried)
            sink.sink.refuse_next = 0  # the mail server is back

            async def settled() -> list[OutgoingMail]:
                rows = await outbox(rt)
                return rows if all(m.state != MailState.PENDING for m in rows) else []

            superseded, once, live = await eventually(settled, timeout=15)
            await asyncio.sleep(1.5)  # time for a wrong delivery (the retry interval is 1 s)
            assert [m["To"] for m in sink.sink.messages].count(taken_over) == 1
            [mail] = to(sink, taken_over)
            assert http.post("/auth/verify-email", json={"token": sink.sink.token_in(mail)}).status_code == 200
            assert len(to(sink, untouched)) == 1
    finally:
        server.stop()
    assert (superseded.state, superseded.body, superseded.sent_at) == (MailState.CANCELLED, "", None)
    assert (once.state, live.state) == (MailState.SENT, MailState.SENT)
    log = server.log()
    assert f"mail 'verification' not sent: its link no longer works; outgoing_mail row {superseded.id}" in log, log
    assert "token=" not in log and taken_over not in log and untouched not in log, log


async def test_an_expired_verification_link_is_not_mailed(make_runtime, sink, caplog):
    # The mail server refused for longer than the link lives (24 h by default; retries go on for
    # about five hours with the defaults, for days with a longer retry setting).
    rt = make_runtime(mail_retry_seconds=3600)
    sink.sink.refuse_next = 1_000
    await accounts.sign_up(rt, email="late@outbox.example.com", password=PASSWORD)

    async def tried() -> list[OutgoingMail]:
        return [m for m in await outbox(rt) if m.last_error is not None]

    await eventually(tried)
    sink.sink.refuse_next = 0
    clock = FrozenClock(rt.clock.now() + timedelta(hours=rt.settings.email_token_ttl_hours, minutes=1))
    rt.clock = clock
    with caplog.at_level(logging.INFO, logger="teamrouter"):
        rt.mail.wake()  # as its ticker would once the retry fell due

        async def cancelled() -> list[OutgoingMail]:
            return [m for m in await outbox(rt) if m.state == MailState.CANCELLED]

        [row] = await eventually(cancelled)
    assert to(sink, "late@outbox.example.com") == [] and row.body == ""
    assert "late@outbox.example.com" not in caplog.text and "token" not in caplog.text


async def test_a_queued_mail_whose_subject_has_a_line_break_is_sent_on_one_line(make_runtime, sink):
    # As one recorded before organization names were checked: "Invitation to join Line\r\nBreak …".
    # The email package refuses such a header; every attempt would fail the same way.
    rt = make_runtime()
    async with rt.db.uow() as uow:
        subject = "Invitation to join Line\r\nBreak\non teamrouter"
        mail_after_commit(uow, rt, to="crlf@outbox.example.com", subject=subject, body="b", what="mail 'test'")

    async def sent() -> list[OutgoingMail]:
        return [m for m in await outbox(rt) if m.state == MailState.SENT]

    [row] = await eventually(sent)
    assert row.attempts == 1 and row.last_error is None
    [mail] = to(sink, "crlf@outbox.example.com")
    assert mail["Subject"] == "Invitation to join Line Break on teamrouter"
