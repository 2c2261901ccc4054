"""Helpers for the key tests: orgs with members, context switching, key creation, table dumps.

Orgs are created through the orgs service; members are added as membership rows (the invitation
flow is tested by the orgs area), keeping the key tests independent of invitations.
"""

from __future__ import annotations

import hashlib
from typing import Any

import httpx
from sqlalchemy import func, select, text, update

from teamrouter.domain.actor import Actor
from teamrouter.domain.audit.models import AuditEvent
from teamrouter.domain.keys.models import ApiKey
from teamrouter.domain.orgs import service as orgs
from teamrouter.domain.orgs.models import Membership, Organization
from teamrouter.ids import new_id
from teamrouter.runtime import Runtime
from teamrouter.storage.models import metadata

KEY_FIELDS = {
    "hash",
    "name",
    "label",
    "disabled",
    "limit",
    "limit_remaining",
    "limit_reset",
    "usage",
    "usage_daily",
    "usage_weekly",
    "usage_monthly",
    "created_at",
    "updated_at",
    "expires_at",
    "last_used_at",
    "creator_user_id",
    "management",
}


async def make_org(rt: Runtime, admin: Any, name: str = "Acme") -> str:
    view = await orgs.create_organization(rt, actor=Actor(user_id=admin.id, email_verified=True), name=name)
    return view.org.id


async def add_member(rt: Runtime, org_id: str, person: Any, role: str = "member") -> None:
    now = rt.clock.now()
    async with rt.db.uow() as uow:
        uow.session.add(
            Membership(
                id=new_id("mem"),
                organization_id=org_id,
                user_id=person.id,
                role=role,
                created_at=now,
                updated_at=now,
            )
        )
        await uow.session.execute(
            update(Organization).where(Organization.id == org_id).values(member_count=Organization.member_count + 1)
        )


async def enter(person: Any, org_id: str | None) -> None:
    """Switch the person's dashboard session to an org (or personal context with None)."""
    r = await person.call("PUT", "/me/context", json={"organization_id": org_id})
    assert r.status_code == 200, r.text


async def new_key(person: Any, **body: Any) -> tuple[dict[str, Any], str]:
    """Create a key through the API in the person's current context: (Key object, plaintext)."""
    body.setdefault("name", "test key")
    r = await person.call("POST", "/keys", json=body)
    assert r.status_code == 201, r.text
    payload = r.json()
    return payload["data"], payload["key"]


def bearer(plaintext: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {plaintext}"}


async def with_key(client: httpx.AsyncClient, plaintext: str, method: str, path: str, **kw: Any) -> httpx.Response:
    """A request authenticated only by a key (no cookies)."""
    return await client.request(method, f"/api/v1{path}", headers=bearer(plaintext), **kw)


def sha256(plaintext: str) -> str:
    return hashlib.sha256(plaintext.encode()).hexdigest()


async def key_row(rt: Runtime, key_hash: str) -> ApiKey:
    async with rt.db.read() as session:
        row = await session.scalar(select(ApiKey).where(ApiKey.hash == key_hash))
    assert row is not None
    return row


async def key_count(rt: Runtime) -> int:
    async with rt.db.read() as session:
        return int(await session.scalar(select(func.count()).select_from(ApiKey)) or 0)


async def key_audit(rt: Runtime) -> list[AuditEvent]:
    async with rt.db.read() as session:
        rows = await session.scalars(
            select(AuditEvent).where(AuditEvent.target_type == "api_key").order_by(AuditEvent.created_at, AuditEvent.id)
        )
        return list(rows.all())


async def dump_all_tables(rt: Runtime) -> str:
    """Every row of every table, as text: for "no secret stored anywhere" checks."""
    assert len(metadata.sorted_tables) >= 15  # the whole schema, not only what this module imported
    chunks: list[str] = []
    async with rt.db.read() as session:
        for table in metadata.sorted_tables:
            rows = (await session.execute(text(f'SELECT * FROM "{table.name}"'))).all()
            chunks.append(f"{table.name}: {[tuple(row) for row in rows]!r}")
    return "\n".join(chunks)
