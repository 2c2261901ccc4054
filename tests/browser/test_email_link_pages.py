"""The links in emails, followed in a real browser: the pages render with their stylesheet and no
policy violation, their forms post back past the CSRF checks as Chromium really sends them (a
no-referrer page posts `Origin: null`), and the session the invitation page opens is one the API
accepts."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import pytest

from tests.conftest import PASSWORD

pytestmark = pytest.mark.browser
API = "/api/v1"


def link_in(smtp: Any, to: str, *, count: int = 1) -> str:
    body = smtp.sink.wait_for(to, count=count)[-1].get_payload(decode=True).decode()
    return next(word for word in body.split() if "token=" in word)


@asynccontextmanager
async def sign_up(server: Any, email: str) -> AsyncIterator[httpx.AsyncClient]:
    """An API client (with its own cookie jar) for a person who has just signed up."""
    async with httpx.AsyncClient(base_url=f"{server.base_url}{API}", timeout=10) as http:
        r = await http.post("/auth/signup", json={"email": email, "password": PASSWORD})
        assert r.status_code == 201, r.text
        yield http


async def test_a_verification_link_confirms_the_address_in_a_browser(server, smtp, page):
    async with sign_up(server, "ada@browser.example.com") as http:
        link = link_in(smtp, "ada@browser.example.com")
        assert link.startswith(f"{server.base_url}/verify-email?token=")

        await page.goto(link)
        assert await page.title() == "Confirm your email address · teamrouter"
        # The stylesheet loaded under the page's policy: the button wears the accent colour.
        button = page.get_by_role("button", name="Confirm my email address")
        assert await button.evaluate("b => getComputedStyle(b).backgroundColor") == "rgb(47, 91, 211)"
        await button.click()
        await page.wait_for_load_state()
        assert (await page.get_by_role("status").inner_text()).startswith("Your email address is confirmed")

        # The account can now create an organization: the confirmation really happened.
        r = await http.post("/auth/login", json={"email": "ada@browser.example.com", "password": PASSWORD})
        csrf = r.json()["data"]["csrf_token"]
        r = await http.post("/organizations", json={"name": "Ada's"}, headers={"X-CSRF-Token": csrf})
        assert r.status_code == 201, r.text

        # Back and submit again: the used link says so, and offers a new one.
        await page.go_back()
        await page.get_by_role("button", name="Confirm my email address").click()
        await page.wait_for_load_state()
        assert "already been used" in await page.get_by_role("alert").inner_text()
        assert await page.get_by_label("Email address").is_visible()


async def test_a_bad_link_offers_a_new_one(server, smtp, page):
    async with sign_up(server, "bea@browser.example.com"):
        link_in(smtp, "bea@browser.example.com")
    await page.goto(f"{server.base_url}/verify-email?token={'x' * 40}")
    await page.get_by_role("button", name="Confirm my email address").click()
    await page.wait_for_load_state()
    assert "not valid" in await page.get_by_role("alert").inner_text()
    await page.get_by_label("Email address").fill("bea@browser.example.com")
    await page.get_by_role("button", name="Send a new link").click()
    await page.wait_for_load_state()
    assert "a new link is on its way" in await page.get_by_role("status").inner_text()
    # (Whether a mail goes out is the per-address limit's business: one a minute, so not here,
    # seconds after the sign-up's. The page answers the same either way.)


async def test_an_invitee_signs_in_and_joins_from_the_invitation_page(server, smtp, page):
    async with sign_up(server, "admin@browser.example.com") as admin:
        verify = link_in(smtp, "admin@browser.example.com").split("token=")[1]
        assert (await admin.post("/auth/verify-email", json={"token": verify})).status_code == 200
        r = await admin.post("/auth/login", json={"email": "admin@browser.example.com", "password": PASSWORD})
        headers = {"X-CSRF-Token": r.json()["data"]["csrf_token"]}
        r = await admin.post("/organizations", json={"name": 'Acme <&> "Co"'}, headers=headers)
        org = r.json()["data"]["id"]
        async with sign_up(server, "bob@browser.example.com") as bob:
            verify = link_in(smtp, "bob@browser.example.com").split("token=")[1]
            assert (await bob.post("/auth/verify-email", json={"token": verify})).status_code == 200
        r = await admin.post(
            f"/organizations/{org}/invitations", json={"email": "bob@browser.example.com"}, headers=headers
        )
        assert r.status_code == 201, r.text
        link = link_in(smtp, "bob@browser.example.com", count=2)

        # Signed out, the page names no organization and asks to sign in.
        await page.goto(link)
        assert "Acme" not in await page.content()
        await page.get_by_label("Email address").fill("bob@browser.example.com")
        await page.get_by_label("Password").fill(PASSWORD)
        await page.get_by_role("button", name="Sign in").click()
        await page.wait_for_load_state()

        # Signed in: the organization's name, escaped as text, and the button to accept.
        assert await page.get_by_role("heading", level=1).inner_text() == 'Join Acme <&> "Co"'
        await page.get_by_role("button", name="Accept the invitation").click()
        await page.wait_for_load_state()
        assert await page.get_by_role("heading", level=1).inner_text() == 'Welcome to Acme <&> "Co"'

        # The browser's session is an ordinary one: the API sees bob as a member of the org.
        session = next(c for c in await page.context.cookies() if c["name"] == "tr_session")
        assert session["httpOnly"] and session["sameSite"] == "Lax"
        async with httpx.AsyncClient(cookies={"tr_session": session["value"]}, timeout=10) as browser_session:
            me = (await browser_session.get(f"{server.base_url}{API}/me")).json()["data"]
        assert me["user"]["email"] == "bob@browser.example.com"
        assert [m["organization_id"] for m in me["memberships"]] == [org]
        members = (await admin.get(f"/organizations/{org}/members")).json()["data"]
        assert sorted(m["email"] for m in members) == ["admin@browser.example.com", "bob@browser.example.com"]
