"""The links in emails open real pages: /verify-email and /invitations/accept. Opening one consumes
nothing; the page's form POST does the work; the pages leak nothing to someone holding only the link,
refuse forged posts, load nothing from elsewhere, and send no Referer. Here the pages are driven over
HTTP as a browser would drive them (GET the link, read the form, POST it), which reaches the forged
and edge cases; tests/browser/ follows the main paths in Chromium itself."""

from __future__ import annotations

from datetime import timedelta
from html.parser import HTMLParser
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx
import pytest
from sqlalchemy import select, update
from tests.conftest import PASSWORD
from tests.support.orgs import invite_token
from tests.support.server import ServerProcess
from tests.support.smtp import delivered

from teamrouter.domain.accounts.models import EmailToken, User
from teamrouter.domain.orgs.models import Invitation, Membership

API = "/api/v1"


class Forms(HTMLParser):
    """The forms of a page: action and fields (hidden values; visible inputs as empty strings)."""

    def __init__(self, html: str) -> None:
        super().__init__()
        self.forms: list[tuple[str, dict[str, str]]] = []
        self.scripts = 0
        self.external: list[str] = []
        self.stylesheets: list[str] = []
        self.feed(html)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        if tag == "form":
            assert a.get("method") == "post"
            self.forms.append((a["action"], {}))
        elif tag == "input" and self.forms:
            self.forms[-1][1][a["name"]] = a.get("value", "")
        elif tag == "script":
            self.scripts += 1
        if tag == "link" and a.get("rel") == "stylesheet":
            self.stylesheets.append(a["href"])
        for name in ("src", "href"):
            if a.get(name, "").startswith(("http:", "https:", "//")):
                self.external.append(a[name])

    def form(self, action_ends: str) -> tuple[str, dict[str, str]]:
        found = [f for f in self.forms if f[0].endswith(action_ends)]
        assert len(found) == 1, self.forms
        return found[0]


def flat(response: httpx.Response) -> str:
    """The page's text with runs of whitespace as one space (templates wrap their sentences)."""
    return " ".join(response.text.split())


def check_page(response: httpx.Response) -> Forms:
    assert response.headers["content-type"].startswith("text/html")
    csp = response.headers["content-security-policy"]
    assert "default-src 'none'" in csp and "form-action 'self'" in csp and "frame-ancestors 'none'" in csp
    assert "script-src" not in csp and "unsafe" not in csp
    assert response.headers["referrer-policy"] == "no-referrer"
    assert response.headers["x-content-type-options"] == "nosniff"
    assert response.headers["cache-control"] == "no-store"
    forms = Forms(response.text)
    assert forms.scripts == 0 and forms.external == []
    # Relative links (the pages may live under a path prefix) that resolve to this site's files.
    assert [urlsplit(urljoin(str(response.url), href)).path for href in forms.stylesheets] == ["/static/pages.css"]
    for action, _ in forms.forms:
        assert urlsplit(urljoin(str(response.url), action)).path in {
            "/verify-email",
            "/verify-email/resend",
            "/invitations/accept",
            "/invitations/sign-in",
        }
    return forms


async def submit(client: httpx.AsyncClient, page: httpx.Response, action_ends: str, **fields: str) -> httpx.Response:
    """Post a page's form as a browser would: relative action, the page's hidden fields, `Origin: null`
    (what browsers send from a no-referrer page), and no token in the URL."""
    action, hidden = Forms(page.text).form(action_ends)
    url = urljoin(str(page.url), action)
    assert "token" not in urlsplit(url).query
    return await client.post(url, data={**hidden, **fields}, headers={"Origin": "null"})


def link_in(smtp: Any, to: str, *, count: int = 1) -> str:
    """The link in the count-th mail to `to` (from a server process: its own loop sends it)."""
    body = smtp.sink.wait_for(to, count=count)[count - 1].get_payload(decode=True).decode()
    return next(word for word in body.split() if "token=" in word)


async def mailed_link(rt: Any, smtp: Any, to: str) -> str:
    """The link in the last mail to `to` from the in-process runtime."""
    body = (await delivered(rt, smtp, to))[-1].get_payload(decode=True).decode()
    return next(word for word in body.split() if "token=" in word)


async def unused_tokens(rt: Any) -> int:
    async with rt.db.read() as s:
        return len((await s.scalars(select(EmailToken.id).where(EmailToken.used_at.is_(None)))).all())


async def verified(rt: Any, email: str) -> bool:
    async with rt.db.read() as s:
        return (await s.scalar(select(User.email_verified_at).where(User.email == email))) is not None


async def test_verification_link_opens_a_page_whose_button_verifies(client, rt, smtp):
    assert (
        await client.post(f"{API}/auth/signup", json={"email": "ada@links.example.com", "password": PASSWORD})
    ).is_success
    link = await mailed_link(rt, smtp, "ada@links.example.com")
    assert link.startswith("http://testserver/verify-email?token=")

    # Opening the link (twice, as a mail scanner then the person would) consumes nothing.
    for _ in range(2):
        page = await client.get(link)
        assert page.status_code == 200, page.text
        check_page(page)
        assert "Confirm" in page.text
    assert await unused_tokens(rt) == 1 and not await verified(rt, "ada@links.example.com")

    done = await submit(client, page, "verify-email")
    assert done.status_code == 200, done.text
    check_page(done)
    assert "confirmed" in done.text and "ada@links.example.com" not in done.text
    assert await verified(rt, "ada@links.example.com") and await unused_tokens(rt) == 0

    again = await submit(client, page, "verify-email")
    assert again.status_code == 400 and "already been used" in flat(again)


async def test_verification_page_errors_are_clear(client, rt, smtp):
    await client.post(f"{API}/auth/signup", json={"email": "late@links.example.com", "password": PASSWORD})
    link = await mailed_link(rt, smtp, "late@links.example.com")
    page = await client.get(link)
    async with rt.db.uow() as uow:
        await uow.session.execute(update(EmailToken).values(expires_at=rt.clock.now() - timedelta(seconds=1)))
    expired = await submit(client, page, "verify-email")
    assert expired.status_code == 400 and "expired" in expired.text
    check_page(expired)
    # The error page offers a new link, through the rate-limited, silent resend.
    assert Forms(expired.text).form("verify-email/resend")

    bogus = await client.get("/verify-email", params={"token": "x" * 40})
    assert bogus.status_code == 200  # opening says nothing about the token
    r = await submit(client, bogus, "verify-email")
    assert r.status_code == 400 and "not valid" in r.text
    assert (await client.get("/verify-email")).status_code == 400


async def test_verification_posts_from_elsewhere_are_refused(client, rt, smtp):
    await client.post(f"{API}/auth/signup", json={"email": "csrf@links.example.com", "password": PASSWORD})
    link = await mailed_link(rt, smtp, "csrf@links.example.com")
    page = await client.get(link)
    _, fields = Forms(page.text).form("verify-email")

    # Another site's form: a foreign Origin, or no form cookie, or a wrong token.
    r = await client.post("/verify-email", data=fields, headers={"Origin": "https://evil.example"})
    assert r.status_code == 403
    stranger = httpx.AsyncClient(transport=client._transport, base_url="http://testserver")
    assert (await stranger.post("/verify-email", data=fields)).status_code == 403
    await stranger.aclose()
    r = await client.post("/verify-email", data={**fields, "csrf": "0" * 64})
    assert r.status_code == 403
    r = await client.post("/verify-email", json=fields)
    assert r.status_code == 403
    assert await unused_tokens(rt) == 1 and not await verified(rt, "csrf@links.example.com")


async def test_resend_from_the_page_mails_a_new_link(client, rt, smtp):
    from teamrouter.clock import FrozenClock

    rt.clock = clock = FrozenClock(rt.clock.now())
    await client.post(f"{API}/auth/signup", json={"email": "again@links.example.com", "password": PASSWORD})
    page = await client.get("/verify-email", params={"token": "x" * 40})
    failed = await submit(client, page, "verify-email")
    clock.advance(timedelta(minutes=2))
    sent = await submit(client, failed, "verify-email/resend", email="again@links.example.com")
    nobody = await submit(client, failed, "verify-email/resend", email="nobody@links.example.com")
    assert sent.status_code == nobody.status_code == 200
    check_page(sent)
    assert sent.text.replace("again@", "") == nobody.text.replace("nobody@", "")
    assert len(await delivered(rt, smtp, "again@links.example.com", count=2)) == 2


@pytest.fixture
async def invited(rt, make_person, smtp):
    """An org 'Acme <&> "Co"' whose admin invited bob@links.example.com; the token from the real mail."""
    admin = await make_person("admin@links.example.com")
    r = await admin.call("POST", "/organizations", json={"name": 'Acme <&> "Co"'})
    assert r.status_code == 201, r.text
    org = r.json()["data"]["id"]
    r = await admin.call("POST", f"/organizations/{org}/invitations", json={"email": "bob@links.example.com"})
    assert r.status_code == 201, r.text
    link = await mailed_link(rt, smtp, "bob@links.example.com")
    assert link.startswith("http://testserver/invitations/accept?token=")
    return org, link


async def member(rt: Any, org: str, email: str) -> bool:
    async with rt.db.read() as s:
        found = await s.scalar(
            select(Membership.id)
            .join(User, User.id == Membership.user_id)
            .where(Membership.organization_id == org, User.email == email)
        )
    return found is not None


async def test_signed_out_invitee_signs_in_on_the_page_then_accepts(client, rt, make_person, invited):
    org, link = invited
    bob = await make_person("bob@links.example.com")
    await bob.client.aclose()
    page = await client.get(link)
    assert page.status_code == 200
    forms = check_page(page)
    # Signed out: an invitation, nothing about which organization or address.
    assert "an organization" in flat(page) and "Acme" not in page.text and "bob@links.example.com" not in page.text
    assert [action for action, _ in forms.forms] == ["../invitations/sign-in"]

    signed_in = await submit(client, page, "sign-in", email="bob@links.example.com", password=PASSWORD)
    assert signed_in.status_code == 200, signed_in.text
    check_page(signed_in)
    assert "tr_session" in signed_in.headers["set-cookie"] and "HttpOnly" in signed_in.headers["set-cookie"]
    # The invitee sees the organization (escaped) and a button; still nothing consumed.
    assert "Acme &lt;&amp;&gt; &#34;Co&#34;" in signed_in.text and "<&>" not in signed_in.text
    assert not await member(rt, org, "bob@links.example.com")
    reopened = await client.get(link)
    assert "Acme &lt;&amp;&gt;" in reopened.text

    joined = await submit(client, reopened, "accept")
    assert joined.status_code == 200, joined.text
    check_page(joined)
    assert "You are now a member" in flat(joined)
    assert await member(rt, org, "bob@links.example.com")

    again = await submit(client, reopened, "accept")
    assert again.status_code == 400 and "already been used" in flat(again)
    # The session the page opened works for the JSON API too.
    me = await client.get(f"{API}/me")
    assert me.json()["data"]["memberships"][0]["organization_id"] == org


async def test_wrong_password_and_forged_sign_in_are_refused(client, rt, make_person, invited):
    _, link = invited
    await make_person("bob@links.example.com")
    page = await client.get(link)
    wrong = await submit(client, page, "sign-in", email="bob@links.example.com", password="wrong password!!")
    assert wrong.status_code == 401 and "Wrong email address or password" in flat(wrong)
    assert "set-cookie" not in wrong.headers or "tr_session" not in wrong.headers["set-cookie"]
    # Login CSRF: another site posting our sign-in form has neither our form cookie nor its token.
    _, fields = Forms(page.text).form("sign-in")
    forged = httpx.AsyncClient(transport=client._transport, base_url="http://testserver")
    r = await forged.post(
        "/invitations/sign-in", data={**fields, "email": "bob@links.example.com", "password": PASSWORD}
    )
    assert r.status_code == 403 and "tr_session" not in r.headers.get("set-cookie", "")
    await forged.aclose()


async def test_someone_else_holding_the_link_learns_nothing(client, rt, make_person, invited):
    org, link = invited
    mallory = await make_person("mallory@links.example.com")
    anonymous_page = (await client.get(link)).text
    page = await mallory.client.get(link)
    assert page.status_code == 200
    assert "Acme" not in page.text and "bob@links.example.com" not in page.text
    assert "not a valid invitation for that address" in flat(page)
    # A made-up token reads the same, to her and to someone signed out.
    fake = "http://testserver/invitations/accept?token=" + "A" * 32
    assert (await mallory.client.get(fake)).text.replace("A" * 32, "") == page.text.replace(link.split("=")[1], "")
    assert (await client.get(fake)).text.replace("A" * 32, "") == anonymous_page.replace(link.split("=")[1], "")

    # The JSON preview tells her nothing either (it answered org id, name, address and role).
    token = link.split("token=")[1]
    r = await mallory.client.get(f"{API}/invitations/accept", params={"token": token})
    assert r.status_code == 400 and "Acme" not in r.text and "bob@" not in r.text

    # Her own session and CSRF token do not make the page accept it for her.
    r = await mallory.client.post(
        "/invitations/accept", data={"token": token, "csrf": mallory.csrf}, headers={"Origin": "null"}
    )
    assert r.status_code == 400 and "Acme" not in r.text
    assert not await member(rt, org, "mallory@links.example.com")


async def test_accepting_needs_the_session_csrf_token_and_a_verified_address(client, rt, make_person, invited):
    org, link = invited
    bob = await make_person("bob@links.example.com", verified=False)
    page = await bob.client.get(link)
    assert "not confirmed yet" in flat(page) and "Acme" not in page.text
    async with rt.db.uow() as uow:
        await uow.session.execute(update(User).values(email_verified_at=rt.clock.now()))
    page = await bob.client.get(link)
    _, fields = Forms(page.text).form("accept")
    assert fields["csrf"] == bob.csrf  # the JSON API's CSRF token for this session

    for data, headers in (
        ({**fields, "csrf": ""}, {}),
        ({**fields, "csrf": "0" * 64}, {}),
        (fields, {"Origin": "https://evil.example"}),
    ):
        r = await bob.client.post("/invitations/accept", data=data, headers=headers)
        assert r.status_code == 403, r.text
    signed_out = httpx.AsyncClient(transport=client._transport, base_url="http://testserver")
    r = await signed_out.post("/invitations/accept", data=fields)
    assert r.status_code == 401 and "Sign in" in flat(r)
    await signed_out.aclose()
    assert not await member(rt, org, "bob@links.example.com")
    async with rt.db.read() as s:
        assert (await s.scalar(select(Invitation.accepted_at))) is None

    r = await submit(bob.client, page, "accept")
    assert r.status_code == 200 and await member(rt, org, "bob@links.example.com")


async def test_the_stylesheet_is_served_locally(client):
    r = await client.get("/static/pages.css")
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/css")
    assert "http" not in r.text and "@import" not in r.text


async def test_invitation_tokens_from_the_helper_also_open_the_page(client, rt, make_person):
    """The mailed link and the service agree on the path (tests/support's recording mailer)."""
    admin = await make_person()
    org = (await admin.call("POST", "/organizations", json={"name": "Helper"})).json()["data"]["id"]
    token = await invite_token(rt, admin_id=admin.id, org_id=org, email="carol@links.example.com")
    carol = await make_person("carol@links.example.com")
    page = await carol.client.get("/invitations/accept", params={"token": token})
    assert "Join Helper" in flat(page)


def test_the_links_work_against_a_real_server(database_url, tmp_path, smtp):
    """`teamrouter serve` over real HTTP: sign up, open the mailed link, press the button, sign in on
    an invitation page and accept; no token in the server's log."""
    server = ServerProcess(
        {
            "TEAMROUTER_ENV": "dev",
            "TEAMROUTER_DATABASE_URL": database_url,
            "TEAMROUTER_VAR_DIR": str(tmp_path / "var"),
            "TEAMROUTER_SMTP_URL": smtp.url,
        },
        cwd=tmp_path,
    )
    server.env["TEAMROUTER_PUBLIC_URL"] = server.base_url
    server.start()
    tokens: list[str] = []

    def post_form(http: httpx.Client, page: httpx.Response, action_ends: str, **fields: str) -> httpx.Response:
        action, hidden = Forms(page.text).form(action_ends)
        return http.post(urljoin(str(page.url), action), data={**hidden, **fields}, headers={"Origin": "null"})

    def sign_up_and_verify(email: str) -> None:
        with httpx.Client(timeout=10) as http:
            assert http.post(
                f"{server.base_url}{API}/auth/signup", json={"email": email, "password": PASSWORD}
            ).is_success
            link = link_in(smtp, email)
            tokens.append(link.split("token=")[1])
            assert link.startswith(f"{server.base_url}/verify-email?token=")
            page = http.get(link)
            check_page(page)
            done = post_form(http, page, "verify-email")
            assert done.status_code == 200 and "confirmed" in done.text, done.text

    try:
        sign_up_and_verify("ada.real@links.example.com")
        sign_up_and_verify("bob.real@links.example.com")
        with httpx.Client(base_url=f"{server.base_url}{API}", timeout=10) as ada:
            csrf = ada.post("/auth/login", json={"email": "ada.real@links.example.com", "password": PASSWORD}).json()[
                "data"
            ]["csrf_token"]
            org = ada.post("/organizations", json={"name": "Real Co"}, headers={"X-CSRF-Token": csrf}).json()["data"][
                "id"
            ]
            r = ada.post(
                f"/organizations/{org}/invitations",
                json={"email": "bob.real@links.example.com"},
                headers={"X-CSRF-Token": csrf},
            )
            assert r.status_code == 201, r.text
        link = link_in(smtp, "bob.real@links.example.com", count=2)  # after its verification mail
        tokens.append(link.split("token=")[1])
        with httpx.Client(timeout=10) as bob:
            page = bob.get(link)
            assert page.status_code == 200 and "Real Co" not in page.text
            page = post_form(bob, page, "sign-in", email="bob.real@links.example.com", password=PASSWORD)
            assert page.status_code == 200 and "Join Real Co" in flat(page), page.text
            joined = post_form(bob, page, "accept")
            assert joined.status_code == 200 and "You are now a member" in flat(joined)
            memberships = bob.get(f"{server.base_url}{API}/me").json()["data"]["memberships"]
            assert [m["organization_id"] for m in memberships] == [org]
    finally:
        server.stop()
    log = server.log()
    assert tokens and not [t for t in tokens if t in log]
