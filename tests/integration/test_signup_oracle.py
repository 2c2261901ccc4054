"""Sign-up is no account oracle: an address that already has an account gets the same 201 as a new
one, nothing is created or changed, the owner is mailed a notice, and both paths cost the same."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
from sqlalchemy import func, select
from tests.conftest import PASSWORD
from tests.support.smtp import delivered

from teamrouter.app import create_app
from teamrouter.domain.accounts import service as accounts
from teamrouter.domain.accounts.models import EmailToken, User
from teamrouter.domain.accounts.passwords import Passwords
from teamrouter.domain.audit.models import AuditEvent
from teamrouter.domain.credits.models import CreditAccount
from teamrouter.runtime import build_runtime

API = "/api/v1"
OTHER_PASSWORD = "a different long passphrase"


async def count(rt: Any, model: Any) -> int:
    async with rt.db.read() as s:
        return int(await s.scalar(select(func.count()).select_from(model)) or 0)


def mails_to(smtp: Any, to: str) -> list[Any]:
    return [m for m in smtp.sink.messages if m["To"] == to]


async def test_existing_address_gets_the_same_answer_and_nothing_changes(client, rt, smtp, make_person):
    owner = await make_person("owner@oracle.example.com", name="Owner")
    users, accounts_, tokens = await count(rt, User), await count(rt, CreditAccount), await count(rt, EmailToken)

    fresh = await client.post(f"{API}/auth/signup", json={"email": "New@Oracle.Example.com", "password": PASSWORD})
    taken = await client.post(
        f"{API}/auth/signup", json={"email": "OWNER@oracle.example.com", "password": OTHER_PASSWORD, "name": "Mallory"}
    )
    assert fresh.status_code == taken.status_code == 201, (fresh.text, taken.text)
    assert fresh.headers.get("content-type") == taken.headers.get("content-type")
    # The same fields, nothing identifying: only the (normalized) address the caller sent.
    assert fresh.json() == {"data": {"email": "new@oracle.example.com"}}
    assert taken.json() == {"data": {"email": "owner@oracle.example.com"}}

    # Only the new address got an account; the existing one is untouched.
    assert await count(rt, User) == users + 1
    assert await count(rt, CreditAccount) == accounts_ + 1
    assert await count(rt, EmailToken) == tokens + 1  # the new address's verification link only
    async with rt.db.read() as s:
        stored = await s.scalar(select(User).where(User.email == "owner@oracle.example.com"))
    assert stored is not None and stored.id == owner.id and stored.name == "Owner"
    assert stored.email_verified_at is not None
    login = await client.post(f"{API}/auth/login", json={"email": owner.email, "password": OTHER_PASSWORD})
    assert login.status_code == 401
    login = await client.post(f"{API}/auth/login", json={"email": owner.email, "password": PASSWORD})
    assert login.status_code == 200

    # The owner is told, with no link to act on (they are verified); the new address gets its link.
    notice = (await delivered(rt, smtp, owner.email))[-1]
    assert "tried to sign up" in notice["Subject"].lower()
    text = notice.get_payload(decode=True).decode()
    assert "already has an account" in text and "sign in" in text and "token=" not in text
    assert "Mallory" not in text and OTHER_PASSWORD not in text
    assert "token=" in (await delivered(rt, smtp, "new@oracle.example.com"))[-1].get_payload(decode=True).decode()

    async with rt.db.read() as s:
        actions = (await s.scalars(select(AuditEvent.action).where(AuditEvent.target_id == owner.id))).all()
    assert "user.sign_up_existing" in actions and "user.sign_up" not in actions


async def test_a_new_sign_up_takes_over_an_unconfirmed_account_so_nobody_can_pre_register(client, rt, smtp):
    # Someone signs up first with another person's address (the "attacker"), then its owner does.
    # Confirming must never hand the owner's address to the attacker's password: the newest
    # sign-up's password holds, earlier links and sessions end, and the mail is a new sign-up's.
    address = "slow@oracle.example.com"
    first = await client.post(f"{API}/auth/signup", json={"email": address, "password": PASSWORD})
    assert first.status_code == 201
    early_link = smtp.sink.token_in((await delivered(rt, smtp, address))[0])
    early_session = await client.post(f"{API}/auth/login", json={"email": address, "password": PASSWORD})
    assert early_session.is_success
    rt.clock = _Later(rt.clock, seconds=120)  # past the per-address mail interval
    again = await client.post(f"{API}/auth/signup", json={"email": address, "password": OTHER_PASSWORD})
    assert again.status_code == 201 and again.json() == first.json()
    assert await count(rt, User) == 1

    mail = (await delivered(rt, smtp, address, count=2))[1]
    assert "verify" in mail["Subject"].lower()  # the same mail a new sign-up gets
    r = await client.post(f"{API}/auth/verify-email", json={"token": early_link})
    assert r.status_code == 400  # the first sign-up's link ended with it
    assert (await client.get(f"{API}/me")).status_code == 401  # and its session
    r = await client.post(f"{API}/auth/verify-email", json={"token": smtp.sink.token_in(mail)})
    assert r.status_code == 200 and r.json()["data"]["user"]["email_verified"] is True
    r = await client.post(f"{API}/auth/login", json={"email": address, "password": PASSWORD})
    assert r.status_code == 401
    assert (await client.post(f"{API}/auth/login", json={"email": address, "password": OTHER_PASSWORD})).is_success


async def test_both_paths_hash_the_password_once(client, rt, make_person):
    await make_person("counted@oracle.example.com")
    calls: list[str] = []
    real = rt.passwords

    class Counting:
        async def hash(self, password: str) -> str:
            calls.append("hash")
            return await real.hash(password)

        async def verify(self, password_hash: str | None, password: str) -> bool:
            calls.append("verify")
            return await real.verify(password_hash, password)

    rt.passwords = Counting()
    try:
        assert (
            await client.post(f"{API}/auth/signup", json={"email": "x1@oracle.example.com", "password": PASSWORD})
        ).status_code == 201
        new_path, calls[:] = list(calls), []
        r = await client.post(f"{API}/auth/signup", json={"email": "counted@oracle.example.com", "password": PASSWORD})
        assert r.status_code == 201
        assert calls == new_path == ["hash"]
    finally:
        rt.passwords = real


async def test_existing_address_costs_about_as_much_as_a_new_one(settings):
    """With the production argon2 cost, as a real server would run."""
    rt = build_runtime(settings, passwords=Passwords())
    app = create_app(rt)
    try:
        for i in range(3):
            await accounts.create_user(rt, email=f"known{i}@oracle.example.com", password=PASSWORD)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver") as c:

            async def timed(prefix: str) -> float:
                samples = []
                for i in range(3):  # a different address each time: no mail limit in the way
                    start = time.perf_counter()
                    r = await c.post(
                        f"{API}/auth/signup", json={"email": f"{prefix}{i}@oracle.example.com", "password": PASSWORD}
                    )
                    samples.append(time.perf_counter() - start)
                    assert r.status_code == 201, r.text
                return sorted(samples)[1]

            await timed("warm")
            new, known = await timed("fresh"), await timed("known")
        assert 0.5 < known / new < 2.0, (new, known)
    finally:
        await rt.close()


async def test_concurrent_sign_ups_of_one_address_both_get_201(client, rt):
    body = {"email": "race@oracle.example.com", "password": PASSWORD}
    responses = await asyncio.gather(*(client.post(f"{API}/auth/signup", json=body) for _ in range(4)))
    assert [r.status_code for r in responses] == [201] * 4, [r.text for r in responses]
    assert len({r.text for r in responses}) == 1
    assert await count(rt, User) == 1


class _Later:
    """The runtime's clock, moved ahead (the mail limit reads rt.clock)."""

    def __init__(self, clock: Any, *, seconds: float) -> None:
        from datetime import timedelta

        self._clock = clock
        self._delta = timedelta(seconds=seconds)

    def now(self) -> Any:
        return self._clock.now() + self._delta
