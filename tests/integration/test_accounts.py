"""Accounts over HTTP (in-process ASGI): sign-up → email over real SMTP → verify → login → /me → logout,
bad input, token rules, CSRF, cookies, throttling."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import func, select, text, update
from tests.conftest import PASSWORD
from tests.support.smtp import delivered

from teamrouter.clock import FrozenClock
from teamrouter.domain.accounts.mail_limits import MIN_INTERVAL
from teamrouter.domain.accounts.models import EmailToken, User, WebSession
from teamrouter.domain.audit.models import AuditEvent
from teamrouter.domain.credits.models import CreditAccount

API = "/api/v1"


async def count(rt, model) -> int:
    async with rt.db.read() as s:
        return int(await s.scalar(select(func.count()).select_from(model)) or 0)


def assert_envelope(response: httpx.Response, status: int, *words: str) -> dict:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == status
    assert isinstance(body["error"]["metadata"], dict)
    for word in words:
        assert word.lower() in body["error"]["message"].lower(), body
    return body["error"]


async def test_full_account_flow_over_real_smtp(client, rt, smtp):
    r = await client.post(f"{API}/auth/signup", json={"email": "Ada@Example.com", "password": PASSWORD, "name": "Ada"})
    assert r.status_code == 201, r.text
    # Nothing identifying in the answer: an existing address gets the same (test_signup_oracle.py).
    assert r.json() == {"data": {"email": "ada@example.com"}}

    message = (await delivered(rt, smtp, "ada@example.com"))[0]
    assert "verify" in message["Subject"].lower()
    token = smtp.sink.token_in(message)
    assert len(token) >= 22  # ≥128 bits of urlsafe base64

    # Unverified people can sign in and use their personal account.
    r = await client.post(f"{API}/auth/login", json={"email": "ada@example.com", "password": PASSWORD})
    assert r.status_code == 200
    assert r.json()["data"]["user"]["email_verified"] is False

    r = await client.post(f"{API}/auth/verify-email", json={"token": token})
    assert r.status_code == 200 and r.json()["data"]["user"]["email_verified"] is True

    r = await client.post(f"{API}/auth/login", json={"email": "ADA@example.com", "password": PASSWORD})
    assert r.status_code == 200
    csrf = r.json()["data"]["csrf_token"]
    cookie = r.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=lax" in cookie.replace("Lax", "lax") and "Secure" not in cookie

    r = await client.get(f"{API}/me")
    assert r.status_code == 200
    data = r.json()["data"]
    assert data["user"] == {
        **data["user"],
        "email": "ada@example.com",
        "email_verified": True,
        "is_staff": False,
    }
    assert data["context"] == {"organization_id": None}
    assert data["memberships"] == []
    assert data["csrf_token"] == csrf

    assert (await client.post(f"{API}/auth/logout", headers={"X-CSRF-Token": csrf})).status_code == 204
    assert_envelope(await client.get(f"{API}/me"), 401)

    # Every person gets a personal credit account; sign-up and verification are audited.
    assert await count(rt, CreditAccount) == 1
    async with rt.db.read() as s:
        actions = set((await s.scalars(select(AuditEvent.action))).all())
    assert {"user.sign_up", "user.verify_email"} <= actions


async def test_logout_kills_the_session_server_side(client, make_person):
    person = await make_person()
    stolen = person.client.cookies.get("tr_session")
    assert (await person.call("POST", "/auth/logout")).status_code == 204
    replay = httpx.AsyncClient(transport=person.client._transport, base_url="http://testserver")
    replay.cookies.set("tr_session", stolen)
    assert_envelope(await replay.get(f"{API}/me"), 401)
    await replay.aclose()


async def test_login_rotates_the_session(client, make_person, rt):
    person = await make_person()
    old = person.client.cookies.get("tr_session")
    r = await person.client.post(f"{API}/auth/login", json={"email": person.email, "password": PASSWORD})
    assert r.status_code == 200
    new = person.client.cookies.get("tr_session")
    assert new != old
    other = httpx.AsyncClient(transport=person.client._transport, base_url="http://testserver")
    other.cookies.set("tr_session", old)
    assert_envelope(await other.get(f"{API}/me"), 401)
    await other.aclose()


@pytest.mark.parametrize(
    ("body", "status", "words"),
    [
        ({"email": "not-an-email", "password": PASSWORD}, 400, ["email"]),
        ({"email": "a@example.com", "password": "short"}, 400, ["password", "at least 10"]),
        ({"email": "a@example.com", "password": "password123"}, 400, ["password", "common"]),
        ({"email": "a@example.com", "password": "aaaaaaaaaaaa"}, 400, ["password", "different characters"]),
        (
            {"email": "crlf@example.com", "password": "crlf long passphrase"},
            400,
            ["password: Password must not contain the name part of your email address (before the @)"],
        ),
        (
            {"email": "a@example.com", "password": PASSWORD, "is_staff": True},
            400,
            ["is_staff", "unknown field"],
        ),
        ({"email": "a@example.com", "password": PASSWORD, "name": "x" * 201}, 400, ["name"]),
        ({"email": "a@example.com", "password": 12345678901}, 400, ["password"]),
        ({"email": "a@example.com"}, 400, ["password", "required"]),
        ({"email": "x" * 400 + "@example.com", "password": PASSWORD}, 400, ["email"]),
    ],
)
async def test_bad_sign_ups_are_refused_and_change_nothing(client, rt, body, status, words):
    error = assert_envelope(await client.post(f"{API}/auth/signup", json=body), status, *words)
    assert error["metadata"]["code"] in {"invalid_field", "bad_request"}
    assert await count(rt, User) == 0
    assert await count(rt, EmailToken) == 0


async def test_malformed_json_and_wrong_content(client, rt):
    r = await client.post(f"{API}/auth/signup", content=b"{not json", headers={"content-type": "application/json"})
    assert_envelope(r, 400, "malformed json")
    r = await client.post(f"{API}/auth/signup", content=b"[1,2]", headers={"content-type": "application/json"})
    assert_envelope(r, 400)
    assert await count(rt, User) == 0


async def test_duplicate_sign_up_answers_alike_and_creates_nothing(client, rt, smtp):
    # Was a 409 "already exists": an account oracle. Now the same 201; the owner gets a notice
    # instead (tests/integration/test_signup_oracle.py covers the rest).
    body = {"email": "dup@example.com", "password": PASSWORD}
    first = await client.post(f"{API}/auth/signup", json=body)
    second = await client.post(f"{API}/auth/signup", json={**body, "email": "DUP@example.com"})
    assert first.status_code == second.status_code == 201
    assert first.json() == second.json() == {"data": {"email": "dup@example.com"}}
    assert await count(rt, User) == 1


async def test_verification_tokens_are_hashed_single_use_and_expire(client, rt, smtp):
    rt.clock = clock = FrozenClock(datetime.now(UTC))
    await client.post(f"{API}/auth/signup", json={"email": "tok@example.com", "password": PASSWORD})
    token = smtp.sink.token_in((await delivered(rt, smtp, "tok@example.com"))[0])
    async with rt.db.read() as s:
        stored = (await s.scalars(select(EmailToken.token_hash))).all()
        dump = " ".join(str(v) for row in (await s.execute(text("SELECT * FROM email_token"))).all() for v in row)
    assert token not in dump and len(stored[0]) == 64

    assert_envelope(await client.post(f"{API}/auth/verify-email", json={"token": "nope" * 8}), 400, "not valid")
    assert (await client.post(f"{API}/auth/verify-email", json={"token": token})).status_code == 200
    assert_envelope(await client.post(f"{API}/auth/verify-email", json={"token": token}), 400, "already been used")

    # An expired token: resend, then age it. The resend waits out the per-address mail interval.
    async with rt.db.uow() as uow:
        await uow.session.execute(update(User).values(email_verified_at=None))
    clock.advance(MIN_INTERVAL)
    await client.post(f"{API}/auth/resend-verification", json={"email": "tok@example.com"})
    second = smtp.sink.token_in((await delivered(rt, smtp, "tok@example.com", count=2))[1])
    async with rt.db.uow() as uow:
        await uow.session.execute(
            update(EmailToken)
            .where(EmailToken.used_at.is_(None))
            .values(expires_at=rt.clock.now() - timedelta(seconds=1))
        )
    assert_envelope(await client.post(f"{API}/auth/verify-email", json={"token": second}), 400, "expired")
    async with rt.db.read() as s:
        assert (await s.scalar(select(User.email_verified_at))) is None


async def test_csrf_and_origin_are_required_for_unsafe_session_requests(make_person):
    person = await make_person()
    r = await person.client.put(f"{API}/me/context", json={"organization_id": None})
    assert_envelope(r, 403, "csrf")
    r = await person.client.put(f"{API}/me/context", json={"organization_id": None}, headers={"X-CSRF-Token": "x" * 64})
    assert_envelope(r, 403, "csrf")
    r = await person.call(
        "PUT", "/me/context", json={"organization_id": None}, headers={"Origin": "https://evil.example"}
    )
    assert_envelope(r, 403, "cross-origin")
    assert (await person.call("PUT", "/me/context", json={"organization_id": None})).status_code == 200
    # Safe methods need no token.
    assert (await person.client.get(f"{API}/me")).status_code == 200


async def test_context_switch_refuses_orgs_one_is_not_in(make_person):
    person = await make_person()
    error = assert_envelope(await person.call("PUT", "/me/context", json={"organization_id": "org_nope"}), 404)
    assert error["metadata"]["code"] == "organization_not_found"
    assert_envelope(await person.call("PUT", "/me/context", json={"organization_id": 5}), 400, "organization_id")
    assert_envelope(await person.call("PUT", "/me/context", json={}), 400, "organization_id")


async def test_wrong_password_and_unknown_email_look_alike(client, make_person):
    person = await make_person()
    wrong = await client.post(f"{API}/auth/login", json={"email": person.email, "password": "wrong password!!"})
    unknown = await client.post(
        f"{API}/auth/login", json={"email": "ghost@example.com", "password": "wrong password!!"}
    )
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json()


async def test_unknown_email_costs_about_as_much_as_a_known_one(client, make_person):
    person = await make_person()

    async def timed(email: str) -> float:
        samples = []
        for i in range(3):
            start = time.perf_counter()
            await client.post(
                f"{API}/auth/login",
                json={
                    "email": email.replace("@", f"+{i}@") if i and "ghost" in email else email,
                    "password": "wrong password!!",
                },
            )
            samples.append(time.perf_counter() - start)
        return sorted(samples)[1]

    known, unknown = await timed(person.email), await timed("ghost@example.com")
    assert 0.5 < unknown / known < 2.0, (known, unknown)


async def test_repeated_failures_are_slowed_down(client, make_person, rt):
    person = await make_person()
    bad = {"email": person.email, "password": "wrong password!!"}
    for _ in range(rt.settings.login_free_failures):
        assert (await client.post(f"{API}/auth/login", json=bad)).status_code == 401
    r = await client.post(f"{API}/auth/login", json=bad)
    r2 = await client.post(f"{API}/auth/login", json={**bad, "password": PASSWORD})
    for response in (r, r2):
        error = assert_envelope(response, 429, "too many")
        assert int(response.headers["Retry-After"]) >= 1
        assert error["metadata"]["code"] == "login_throttled"


async def test_sessions_are_only_stored_hashed(make_person, rt):
    person = await make_person()
    token = person.client.cookies.get("tr_session")
    async with rt.db.read() as s:
        rows = (await s.execute(text("SELECT * FROM web_session"))).all()
        hashes = (await s.scalars(select(WebSession.token_hash))).all()
    assert token not in " ".join(str(v) for row in rows for v in row)
    assert len(hashes) == 1


async def test_framework_errors_use_the_envelope(client):
    assert_envelope(await client.get(f"{API}/no-such-route"), 404)
    assert_envelope(await client.delete(f"{API}/auth/login"), 405)
    # Allow names every method of the path, not only the first route's (each method is a route).
    r = await client.put(f"{API}/organizations/org_x/settings", json={})
    assert_envelope(r, 405)
    assert r.headers["allow"] == "GET, HEAD, PATCH"
    assert (await client.put(f"{API}/organizations")).headers["allow"] == "GET, HEAD, POST"
    # HEAD wherever GET works: the GET's status and headers, no body.
    got, head = await client.get("/healthz"), await client.head("/healthz")
    assert head.status_code == got.status_code == 200 and head.content == b""
    assert head.headers["content-length"] == got.headers["content-length"]
    assert (await client.head(f"{API}/me")).status_code == 401
    assert (await client.head(f"{API}/auth/login")).headers["allow"] == "POST"
    # A mount's own 405 keeps its own Allow (static files).
    assert (await client.post("/static/pages.css")).headers["allow"] == "GET, HEAD"
    assert_envelope(await client.get(f"{API}/me"), 401, "sign in")


async def test_oversized_body_is_413_before_anything(client, rt):
    big = b'{"email": "a@example.com", "password": "' + b"x" * (rt.settings.max_body_bytes + 10) + b'"}'
    assert_envelope(
        await client.post(f"{API}/auth/signup", content=big, headers={"content-type": "application/json"}),
        413,
    )
    assert await count(rt, User) == 0


async def test_readiness_follows_the_database(client, rt):
    assert (await client.get("/readyz")).json()["status"] == "ready"
    await rt.db.dispose()
    rt.db.engine.pool  # noqa: B018 (engine reconnects lazily; a wrong URL makes it fail)
    from teamrouter.storage.db import Database

    rt.db = Database("postgresql://nobody@127.0.0.1:1/none")
    r = await client.get("/readyz")
    assert r.status_code == 503 and r.json()["status"] == "not ready"


async def test_openapi_document_is_served(client):
    r = await client.get(f"{API}/openapi.json")
    assert r.status_code == 200
    assert "/api/v1/auth/signup" in r.json()["paths"]


async def test_an_api_key_on_a_session_only_endpoint_is_forbidden_not_unauthenticated(client, make_person):
    ada = await make_person()
    r = await ada.call("POST", "/keys", json={"name": "automation", "management": True})
    assert r.status_code == 201, r.text
    key, key_hash = r.json()["key"], r.json()["data"]["hash"]
    r = await client.get(f"{API}/me", headers={"Authorization": f"Bearer {key}"})
    error = assert_envelope(r, 403, "dashboard session")
    assert error["metadata"]["code"] == "session_only"
    # What is not a working key is no key at all: 401, as everywhere (API.md).
    for header in ("Bearer sk-tr-v1-" + "0" * 64, "Bearer garbage", "Basic YWRhOnB3"):
        r = await client.get(f"{API}/me", headers={"Authorization": header})
        assert_envelope(r, 401)
    assert (await ada.call("PATCH", f"/keys/{key_hash}", json={"disabled": True})).status_code == 200
    assert_envelope(await client.get(f"{API}/me", headers={"Authorization": f"Bearer {key}"}), 401)


async def test_every_route_refuses_a_query_parameter_given_twice(make_person):
    # No parameter takes several values; the framework would keep the last one and answer as if
    # the first had not been sent.
    ada = await make_person()
    for path in ("/organizations?limit=1&limit=2", "/keys?offset=0&offset=1", "/me?x=&x=1"):
        r = await ada.call("GET", path)
        assert_envelope(r, 400)
        assert r.json()["error"]["metadata"]["code"] == "repeated_parameter", path
