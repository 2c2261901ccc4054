"""TESTPLAN D33: sessions rotate at a role change. Every session of the member whose role changed
ends (in every browser); they sign in again and act with the new role. Nobody else's session is
touched, and a request that changes nothing ends nothing."""

from __future__ import annotations

import httpx
import pytest
from tests.conftest import PASSWORD
from tests.support.orgs import API, assert_envelope, create_org, join, recording_mailer, sign_in_again


@pytest.fixture(autouse=True)
def _quiet_mail(rt):
    recording_mailer(rt)


async def _second_browser(app, person) -> httpx.AsyncClient:
    """Another signed-in session of the same person (a second device)."""
    c = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")
    r = await c.post(f"{API}/auth/login", json={"email": person.email, "password": PASSWORD})
    assert r.status_code == 200, r.text
    return c


def _set_role(actor, org, target, role):
    return actor.call("PATCH", f"/organizations/{org}/members/{target.id}", json={"role": role})


async def test_a_role_change_ends_every_session_of_that_member(make_person, rt, app):
    admin = await make_person()
    bob = await make_person()
    org = await create_org(admin)
    await join(rt, admin, bob, org)
    # Bob's first session works in the org; his second one sits in personal context.
    assert (await bob.call("PUT", "/me/context", json={"organization_id": org})).status_code == 200
    laptop = await _second_browser(app, bob)
    old_cookie = bob.client.cookies.get("tr_session")
    try:
        assert (await laptop.get(f"{API}/me")).status_code == 200

        r = await _set_role(admin, org, bob, "admin")
        assert r.status_code == 200, r.text
        # Both of Bob's sessions are over, also the one whose context was not the org.
        assert_envelope(await bob.client.get(f"{API}/me"), 401)
        assert_envelope(await laptop.get(f"{API}/me"), 401)
        # The admin who made the change keeps hers.
        assert (await admin.client.get(f"{API}/me")).status_code == 200

        # Signing in again gives a new token, and the new role works.
        await sign_in_again(bob)
        assert bob.client.cookies.get("tr_session") != old_cookie
        assert (await bob.call("PUT", "/me/context", json={"organization_id": org})).status_code == 200
        assert (await bob.client.get(f"{API}/organizations/{org}/billing")).status_code == 200

        # A replayed pre-promotion token stays dead.
        replay = httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://testserver")
        replay.cookies.set("tr_session", old_cookie)
        assert_envelope(await replay.get(f"{API}/organizations/{org}/billing"), 401)
        await replay.aclose()

        # Demotion rotates too; setting the role a member already has changes nothing.
        assert (await _set_role(admin, org, bob, "member")).status_code == 200
        assert_envelope(await bob.client.get(f"{API}/me"), 401)
        await sign_in_again(bob)
        assert (await _set_role(admin, org, bob, "member")).status_code == 200
        assert (await bob.client.get(f"{API}/me")).status_code == 200
    finally:
        await laptop.aclose()


async def test_demoting_oneself_ends_ones_own_session(make_person, rt):
    first = await make_person()
    second = await make_person()
    org = await create_org(first)
    await join(rt, first, second, org, role="admin")

    assert (await _set_role(first, org, first, "member")).status_code == 200
    assert_envelope(await first.client.get(f"{API}/me"), 401)
    assert (await second.client.get(f"{API}/me")).status_code == 200
    await sign_in_again(first)
    assert (await first.call("PUT", "/me/context", json={"organization_id": org})).status_code == 200
    assert_envelope(await _set_role(first, org, second, "member"), 403)
