"""The role matrix (TESTPLAN D29) and tenant isolation (D28), built from the app's own route table.

Every API route must declare who may call it (`openapi_extra=access(Access.X)`); a route without a
declaration fails. Each route is then called by {anonymous, member, admin, admin of another org,
staff who is not a member, an unverified person} with plausible parameters (the org's real id,
unknown ids elsewhere, a minimal body generated from the route's own schema), and the outcome must
be the class the declared level promises. A refused request must leave the database unchanged.
Routes added later by other areas are covered by their declared level with no edit here.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.routing import APIRoute
from sqlalchemy import delete, select, text, update
from tests.support.orgs import create_org, invite_token, join, recording_mailer

from teamrouter.api.policy import ACCESS_KEY, Access
from teamrouter.domain.accounts.models import WebSession
from teamrouter.domain.credits.models import CreditAccount
from teamrouter.domain.keys.models import ApiKey
from teamrouter.domain.orgs.models import Invitation, Membership, Organization
from teamrouter.ids import hash_token, new_api_key, new_id
from teamrouter.runtime import Runtime
from teamrouter.storage.base import Base

API = "/api/v1"
ACTORS = ("anonymous", "member", "admin", "other_admin", "staff", "unverified")
# Error codes that mean "you did not authenticate" (as opposed to e.g. a wrong password at login).
AUTH_CODES = frozenset({"no_session", "no_credentials", "unauthorized", "invalid_key", "bad_authorization"})
VALIDATION_CODES = frozenset({"invalid_field", "malformed_json", "bad_request"})
# Columns that legitimately move on a read-only request.
VOLATILE = {
    "web_session": {"last_seen_at"},
    "api_key": {"last_used_at"},
    # Mail an earlier (allowed) request recorded is sent in the background meanwhile; a refused
    # request recording mail of its own still shows as a new row.
    "outgoing_mail": {"state", "attempts", "next_attempt_at", "body", "last_error", "sent_at"},
}
SKIP_TABLES = {"login_failure", "alembic_version"}


@dataclass
class Endpoint:
    method: str
    path: str  # with {params}
    level: Access
    route: APIRoute
    operation: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return f"{self.method} {self.path} [{self.level.value}]"


def endpoints(app: FastAPI) -> tuple[list[Endpoint], list[str]]:
    """Every API route, with its declared access level; and the routes that declare none."""
    spec = app.openapi()
    found: list[Endpoint] = []
    undeclared: list[str] = []
    for path, route in api_routes(app):
        if not path.startswith(API + "/"):
            continue
        declared = (route.openapi_extra or {}).get(ACCESS_KEY)
        for method in sorted(route.methods - {"HEAD", "OPTIONS"}):
            if declared is None:
                undeclared.append(f"{method} {path}")
                continue
            operation = spec.get("paths", {}).get(path, {}).get(method.lower(), {})
            found.append(Endpoint(method, path, Access(declared), route, operation))
    return found, undeclared


def api_routes(app: FastAPI) -> Iterator[tuple[str, APIRoute]]:
    """(full path, route) for every APIRoute, through included routers (FastAPI ≥ 0.160 keeps them
    as wrappers in `app.routes`; older versions flatten them)."""
    try:
        from fastapi.routing import iter_route_contexts
    except ImportError:  # pragma: no cover - older FastAPI
        for route in app.routes:
            if isinstance(route, APIRoute):
                yield route.path, route
        return
    for context in iter_route_contexts(app.routes):
        if isinstance(context.route, APIRoute):
            yield str(context.path), context.route


class Sampler:
    """A minimal value satisfying a JSON schema, from the OpenAPI document."""

    def __init__(self, spec: dict[str, Any]) -> None:
        self.schemas = spec.get("components", {}).get("schemas", {})

    def resolve(self, schema: dict[str, Any]) -> dict[str, Any]:
        while "$ref" in schema:
            schema = self.schemas[schema["$ref"].rsplit("/", 1)[-1]]
        return schema

    def value(self, schema: dict[str, Any], name: str = "") -> Any:
        schema = self.resolve(schema)
        for combinator in ("anyOf", "oneOf"):
            if combinator in schema:
                options = [s for s in schema[combinator] if self.resolve(s).get("type") != "null"]
                return self.value(options[0] if options else schema[combinator][0], name)
        if "allOf" in schema:
            return self.value(schema["allOf"][0], name)
        if "const" in schema:
            return schema["const"]
        if "enum" in schema:
            return schema["enum"][0]
        if "default" in schema and schema["default"] is not None:
            return schema["default"]
        kind = schema.get("type")
        if kind == "string":
            fmt = schema.get("format", "")
            if fmt == "email" or "email" in name:
                return "someone@example.com"
            if fmt == "date-time":
                return "2030-01-01T00:00:00Z"
            if fmt == "date":
                return "2030-01-01"
            length = max(int(schema.get("minLength", 1)), 8 if "token" in name else 1)
            return "x" * min(length, int(schema.get("maxLength", length)))
        if kind in ("integer", "number"):
            low = schema.get("minimum", schema.get("exclusiveMinimum", 0) + 1)
            return max(1, low) if kind == "integer" else max(1.0, float(low))
        if kind == "boolean":
            return False
        if kind == "array":
            return [self.value(schema.get("items", {}), name) for _ in range(int(schema.get("minItems", 0)))]
        if kind == "object" or "properties" in schema:
            props = schema.get("properties", {})
            # Required fields only; with none required, the first one (an empty update is often a
            # 400 of its own, which would hide the refusal we want to see).
            keys = [key for key in schema.get("required", []) if key in props] or list(props)[:1]
            return {key: self.value(props[key], key) for key in keys}
        return "x"

    def body(self, operation: dict[str, Any]) -> Any:
        content = operation.get("requestBody", {}).get("content", {})
        if "application/json" not in content:
            return None
        return self.value(content["application/json"].get("schema", {}))

    def query(self, operation: dict[str, Any]) -> dict[str, Any]:
        return {
            p["name"]: self.value(p.get("schema", {}), p["name"])
            for p in operation.get("parameters", [])
            if p.get("in") == "query" and p.get("required")
        }


def expectation(level: Access, actor: str) -> str | None:
    """The outcome class a declared level promises for an actor of the world (None: no promise)."""
    if actor == "anonymous":
        return "public" if level is Access.PUBLIC else "401"
    if level is Access.PUBLIC:
        return "public"
    if level in (Access.INFERENCE_KEY, Access.ANY_KEY):
        return "401"  # nobody in the world presents an API key
    if level is Access.SESSION:
        return "allowed"
    if level is Access.VERIFIED:
        return "403" if actor == "unverified" else "allowed"
    if level is Access.ACTOR:
        return None
    if level is Access.MEMBER:
        return "allowed" if actor in ("member", "admin") else "404"
    if level is Access.ADMIN:
        return {"admin": "allowed", "member": "403"}.get(actor, "404")
    if level is Access.CONTEXT_ADMIN:
        return "403" if actor == "member" else "allowed"
    if level is Access.STAFF:
        return "allowed" if actor == "staff" else "403"
    raise AssertionError(f"no expectation for {level}")


def classify(response: httpx.Response) -> tuple[int, str]:
    try:
        code = str(response.json()["error"]["metadata"].get("code", ""))
    except Exception:
        code = ""
    return response.status_code, code


def matches(expected: str, response: httpx.Response, *, org_in_path: bool) -> bool:
    """Whether a response is in the promised class. "allowed" means not refused: for a route on an org
    in its path, a 404 saying the org is not found is a refusal too (ids elsewhere are unknown on
    purpose, so other 404s are fine)."""
    status, code = classify(response)
    if status == 500:
        return False
    if expected == "public":
        return status != 403 and not (status == 401 and code in AUTH_CODES)
    if expected == "allowed":
        refused_org = org_in_path and status == 404 and code == "organization_not_found"
        return status not in (401, 403) and not refused_org
    return status == int(expected)


def inconclusive(expected: str, response: httpx.Response) -> bool:
    """A refusal we could not provoke because the body/params were not plausible enough (400)."""
    status, code = classify(response)
    return expected in ("403", "404") and status == 400 and code in VALIDATION_CODES


async def snapshot(rt: Runtime) -> dict[str, list[tuple[Any, ...]]]:
    tables: dict[str, list[tuple[Any, ...]]] = {}
    async with rt.db.read() as session:
        for table in Base.metadata.sorted_tables:
            if table.name in SKIP_TABLES:
                continue
            columns = [c.name for c in table.columns if c.name not in VOLATILE.get(table.name, set())]
            quoted = ", ".join(f'"{c}"' for c in columns)
            rows = (await session.execute(text(f'SELECT {quoted} FROM "{table.name}"'))).all()
            tables[table.name] = sorted(tuple(str(v) for v in row) for row in rows)
    return tables


@dataclass
class World:
    """Org A (admin, member), org B (other_admin), staff who belongs nowhere, an unverified person."""

    rt: Runtime
    anonymous: httpx.AsyncClient
    people: dict[str, Any]
    org_a: str
    org_b: str
    cookies: dict[str, str] = field(default_factory=dict)
    sessions: dict[str, str] = field(default_factory=dict)
    contexts: dict[str, str | None] = field(default_factory=dict)
    memberships: dict[str, dict[str, str]] = field(default_factory=dict)

    async def record_baseline(self) -> None:
        async with self.rt.db.read() as s:
            for name, person in self.people.items():
                self.cookies[name] = person.client.cookies.get("tr_session")
                self.sessions[name] = await s.scalar(
                    select(WebSession.id).where(WebSession.user_id == person.id, WebSession.revoked_at.is_(None))
                )
                self.contexts[name] = await s.scalar(
                    select(WebSession.organization_id).where(WebSession.id == self.sessions[name])
                )
            for org in (self.org_a, self.org_b):
                rows = (
                    await s.execute(
                        select(Membership.user_id, Membership.role).where(Membership.organization_id == org)
                    )
                ).all()
                self.memberships[org] = dict(rows)

    async def send(self, actor: str, method: str, path: str, body: Any, params: dict[str, Any]) -> httpx.Response:
        kwargs: dict[str, Any] = {"params": params}
        if body is not None:
            kwargs["json"] = body
        if actor == "anonymous":
            return await self.anonymous.request(method, API + path, **kwargs)
        return await self.people[actor].call(method, path, **kwargs)

    async def restore(self) -> None:
        """Undo what an allowed request may have changed in the world (sessions, memberships)."""
        for name, person in self.people.items():
            if person.client.cookies.get("tr_session") != self.cookies[name]:
                person.client.cookies.clear()
                person.client.cookies.set("tr_session", self.cookies[name])
        async with self.rt.db.uow() as uow:
            for name, session_id in self.sessions.items():
                await uow.session.execute(
                    update(WebSession)
                    .where(WebSession.id == session_id)
                    .values(revoked_at=None, organization_id=self.contexts[name])
                )
            now = self.rt.clock.now()
            for org, wanted in self.memberships.items():
                rows = (
                    await uow.session.execute(
                        select(Membership.user_id, Membership.role).where(Membership.organization_id == org)
                    )
                ).all()
                if dict(rows) == wanted:
                    continue
                await uow.session.execute(delete(Membership).where(Membership.organization_id == org))
                for user_id, role in wanted.items():
                    uow.session.add(
                        Membership(
                            id=new_id("mem"),
                            organization_id=org,
                            user_id=user_id,
                            role=role,
                            created_at=now,
                            updated_at=now,
                        )
                    )
                await uow.session.execute(
                    update(Organization).where(Organization.id == org).values(member_count=len(wanted))
                )


PARAM = re.compile(r"{(\w+)(?::\w+)?}")
# This area's routes must be conclusive for every actor (their bodies are simple enough).
STRICT_PREFIXES = ("/api/v1/organizations", "/api/v1/organization/", "/api/v1/invitations")


@pytest.fixture
async def world(make_person, rt, client):
    recording_mailer(rt)
    people = {
        "admin": await make_person("matrix-admin@example.com"),
        "member": await make_person("matrix-member@example.com"),
        "other_admin": await make_person("matrix-other@example.com"),
        "staff": await make_person("matrix-staff@example.com", staff=True),
        "unverified": await make_person("matrix-unverified@example.com", verified=False),
    }
    org_a = await create_org(people["admin"], "Org A")
    org_b = await create_org(people["other_admin"], "Org B")
    await join(rt, people["admin"], people["member"], org_a)
    for name, org in (("admin", org_a), ("member", org_a), ("other_admin", org_b)):
        r = await people[name].call("PUT", "/me/context", json={"organization_id": org})
        assert r.status_code == 200, r.text
    w = World(rt=rt, anonymous=client, people=people, org_a=org_a, org_b=org_b)
    await w.record_baseline()
    return w


def fill(path: str, values: dict[str, str]) -> str:
    return PARAM.sub(lambda m: values.get(m.group(1), f"unknown_{m.group(1)}"), path)


async def test_every_route_declares_its_access(app):
    found, undeclared = endpoints(app)
    assert not undeclared, f"routes without openapi_extra=access(...): {undeclared}"
    assert len(found) >= 20
    declared = {(e.method, e.path): e.level for e in found}
    # This area's own policy table, as API.md states it.
    assert {
        ("POST", "/api/v1/organizations"): Access.VERIFIED,
        ("GET", "/api/v1/organizations"): Access.SESSION,
        ("GET", "/api/v1/organizations/{org}"): Access.MEMBER,
        ("PATCH", "/api/v1/organizations/{org}"): Access.ADMIN,
        ("GET", "/api/v1/organizations/{org}/members"): Access.MEMBER,
        ("PATCH", "/api/v1/organizations/{org}/members/{user_id}"): Access.ADMIN,
        ("DELETE", "/api/v1/organizations/{org}/members/{user_id}"): Access.ADMIN,
        ("POST", "/api/v1/organizations/{org}/leave"): Access.MEMBER,
        ("POST", "/api/v1/organizations/{org}/invitations"): Access.ADMIN,
        ("GET", "/api/v1/organizations/{org}/invitations"): Access.ADMIN,
        ("DELETE", "/api/v1/organizations/{org}/invitations/{invitation_id}"): Access.ADMIN,
        ("POST", "/api/v1/invitations/accept"): Access.VERIFIED,
        ("GET", "/api/v1/organizations/{org}/settings"): Access.MEMBER,
        ("PATCH", "/api/v1/organizations/{org}/settings"): Access.ADMIN,
        ("GET", "/api/v1/organizations/{org}/billing"): Access.ADMIN,
        ("PATCH", "/api/v1/organizations/{org}/billing"): Access.ADMIN,
        ("GET", "/api/v1/organization/members"): Access.ACTOR,
        ("GET", "/api/v1/organization/settings"): Access.ACTOR,
        ("PATCH", "/api/v1/organization/settings"): Access.ACTOR,
    }.items() <= declared.items()


async def test_role_matrix(app, world, rt):
    found, undeclared = endpoints(app)
    assert not undeclared, undeclared
    sampler = Sampler(app.openapi())
    failures: list[str] = []
    unsure: list[str] = []
    checked = 0
    for endpoint in found:
        path = fill(endpoint.path, {"org": world.org_a})[len("/api/v1") :]
        body = sampler.body(endpoint.operation)
        params = sampler.query(endpoint.operation)
        strict = endpoint.path.startswith(STRICT_PREFIXES)
        for actor in ACTORS:
            expected = expectation(endpoint.level, actor)
            refusal = expected in ("401", "403", "404")
            before = await snapshot(rt) if refusal else None
            response = await world.send(actor, endpoint.method, path, body, params)
            got = f"{response.status_code} {response.text[:200]}"
            where = f"{endpoint.label} as {actor}: expected {expected}, got {got}"
            if response.status_code == 500:
                failures.append(where)
            elif expected is not None and not matches(expected, response, org_in_path="{org}" in endpoint.path):
                if inconclusive(expected, response) and not strict:
                    unsure.append(where)
                else:
                    failures.append(where)
            elif refusal and await snapshot(rt) != before:
                failures.append(f"{endpoint.label} as {actor}: refused ({response.status_code}) but changed data")
            else:
                checked += 1
            if not refusal or response.status_code < 400:
                await world.restore()
    assert not failures, "\n".join(failures)
    assert checked >= 100
    # Refusals we could not provoke are only allowed outside this area (bodies too specific to guess).
    assert all(not u.split()[1].startswith(STRICT_PREFIXES) for u in unsure), unsure


async def test_tenant_isolation_other_orgs_ids_are_not_found(app, world, rt):
    """D28: org B's admin on org A's real ids (org, member, invitation, key) → 404, nothing changed."""
    admin, member = world.people["admin"], world.people["member"]
    await invite_token(rt, admin_id=admin.id, org_id=world.org_a, email="pending@example.com")
    now = rt.clock.now()
    async with rt.db.uow() as uow:
        invitation_id = await uow.session.scalar(select(Invitation.id).where(Invitation.email == "pending@example.com"))
        account = await uow.session.scalar(select(CreditAccount.id).where(CreditAccount.organization_id == world.org_a))
        key_hash = hash_token(new_api_key())
        uow.session.add(
            ApiKey(
                id=new_id("key"),
                hash=key_hash,
                label="sk-tr-v1-abc...xyz",
                name="A's key",
                organization_id=world.org_a,
                account_id=account,
                creator_user_id=member.id,
                created_at=now,
                updated_at=now,
            )
        )
    await world.record_baseline()
    a_ids = {
        "org": world.org_a,
        "user_id": member.id,
        "invitation_id": invitation_id,
        "hash": key_hash,
        "key_hash": key_hash,
    }
    found, _ = endpoints(app)
    sampler = Sampler(app.openapi())
    failures: list[str] = []
    tried = 0
    for endpoint in found:
        names = PARAM.findall(endpoint.path)
        if not names or not set(names) <= set(a_ids):
            continue
        if endpoint.level in (Access.PUBLIC, Access.STAFF, Access.INFERENCE_KEY, Access.ANY_KEY):
            continue
        variants = [fill(endpoint.path, a_ids)]
        if "org" in names and len(names) > 1:  # A's sub-ids under B's own org path
            variants.append(fill(endpoint.path, {**a_ids, "org": world.org_b}))
        for full in variants:
            before = await snapshot(rt)
            response = await world.send(
                "other_admin",
                endpoint.method,
                full[len("/api/v1") :],
                sampler.body(endpoint.operation),
                sampler.query(endpoint.operation),
            )
            tried += 1
            if response.status_code != 404 and not (
                inconclusive("404", response) and not endpoint.path.startswith(STRICT_PREFIXES)
            ):
                failures.append(f"{endpoint.method} {full}: {response.status_code} {response.text[:200]}")
            elif await snapshot(rt) != before:
                failures.append(f"{endpoint.method} {full}: 404 but changed data")
            await world.restore()
    assert not failures, "\n".join(failures)
    assert tried >= 12
