"""Helpers for organization tests: make an org, invite and join, inspect rows, capture mail."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import httpx
from sqlalchemy import func, select

from teamrouter.domain.actor import Actor
from teamrouter.domain.orgs import invitations
from teamrouter.domain.orgs.models import Membership, Organization
from teamrouter.domain.roles import Role
from teamrouter.runtime import Runtime

API = "/api/v1"


@dataclass
class RecordingMailer:
    """Keeps messages in memory, for tests that need many invitation tokens quickly."""

    sent: list[dict[str, str]] = field(default_factory=list)

    async def send(self, *, to: str, subject: str, body: str) -> None:
        self.sent.append({"to": to, "subject": subject, "body": body})

    def token_for(self, to: str) -> str:
        for message in reversed(self.sent):
            if message["to"] == to:
                match = re.search(r"token=([A-Za-z0-9_\-]+)", message["body"])
                assert match, message
                return match.group(1)
        raise AssertionError(f"no email to {to}")


def recording_mailer(rt: Runtime) -> RecordingMailer:
    mailer = RecordingMailer()
    rt.mailer = mailer
    return mailer


def assert_envelope(response: httpx.Response, status: int, *words: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    body = response.json()
    assert set(body) == {"error"}
    assert body["error"]["code"] == status
    assert isinstance(body["error"]["metadata"], dict)
    for word in words:
        assert word.lower() in body["error"]["message"].lower(), body
    error: dict[str, Any] = body["error"]
    return error


async def create_org(person: Any, name: str = "Acme") -> str:
    r = await person.call("POST", "/organizations", json={"name": name})
    assert r.status_code == 201, r.text
    org_id: str = r.json()["data"]["id"]
    return org_id


async def invite_token(rt: Runtime, *, admin_id: str, org_id: str, email: str, role: str = "member") -> str:
    """Invite through the service with a recording mailer swapped in; returns the mailed token."""
    previous = rt.mailer
    mailer = RecordingMailer()
    rt.mailer = mailer
    try:
        await invitations.invite(
            rt,
            actor=Actor(user_id=admin_id, email_verified=True),
            organization_id=org_id,
            email=email,
            role=Role(role),
        )
        await rt.background.idle()  # the mail leaves after the service returns
    finally:
        rt.mailer = previous
    return mailer.token_for(email.lower())


async def join(rt: Runtime, admin: Any, person: Any, org_id: str, role: str = "member") -> None:
    token = await invite_token(rt, admin_id=admin.id, org_id=org_id, email=person.email, role=role)
    r = await person.call("POST", "/invitations/accept", json={"token": token})
    assert r.status_code == 200, r.text


async def org_row(rt: Runtime, org_id: str) -> Organization:
    async with rt.db.read() as s:
        return await s.get_one(Organization, org_id)


async def member_count(rt: Runtime, org_id: str) -> tuple[int, int]:
    """(the cached counter, the real number of membership rows)."""
    async with rt.db.read() as s:
        cached = await s.scalar(select(Organization.member_count).where(Organization.id == org_id))
        real = await s.scalar(select(func.count()).select_from(Membership).where(Membership.organization_id == org_id))
    return int(cached or 0), int(real or 0)


async def roles(rt: Runtime, org_id: str) -> dict[str, str]:
    async with rt.db.read() as s:
        rows = (
            await s.execute(select(Membership.user_id, Membership.role).where(Membership.organization_id == org_id))
        ).all()
    return {user_id: role for user_id, role in rows}


async def sign_in_again(person: Any) -> None:
    """Open a fresh session for a test `Person` (e.g. after a role change ended theirs)."""
    from tests.conftest import PASSWORD

    r = await person.client.post(f"{API}/auth/login", json={"email": person.email, "password": PASSWORD})
    assert r.status_code == 200, r.text
    person.csrf = r.json()["data"]["csrf_token"]
