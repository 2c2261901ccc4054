"""Authorization where org data is fetched: load an org *as seen by a person* and check a scope.

The person's role comes from their membership row, read in the same query as the org, never from
the request: an org the person does not belong to is "not found" (404) whoever they are (staff
included), and a member lacking the scope gets 403. Writers that guard an invariant spanning several
rows (the last admin, the invitation list of an email) pass `lock=True`: on PostgreSQL the org row is
taken `FOR UPDATE`, serialising them per org; on SQLite every write transaction already starts with
`BEGIN IMMEDIATE`, which serialises all writers.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession

from teamrouter.domain.actor import Actor
from teamrouter.domain.orgs.models import Membership, Organization
from teamrouter.domain.roles import ROLE_SCOPES, Role, Scope
from teamrouter.errors import Forbidden, NotFound

ORG_NOT_FOUND = "organization_not_found"


def org_not_found() -> NotFound:
    return NotFound("Organization not found", code=ORG_NOT_FOUND)


def scopes_of(membership: Membership) -> frozenset[Scope]:
    return ROLE_SCOPES[Role(membership.role)]


async def load_org(
    session: AsyncSession,
    organization_id: str | None,
    *,
    user_id: str,
    need: Scope,
    lock: bool = False,
) -> tuple[Organization, Membership]:
    """The org and the person's membership in it, after checking `need` (no default: callers decide)."""
    if organization_id is None:
        raise org_not_found()
    statement = (
        select(Organization, Membership)
        .join(Membership, Membership.organization_id == Organization.id)
        .where(Organization.id == organization_id, Membership.user_id == user_id)
    )
    if lock and session.get_bind().dialect.name == "postgresql":
        statement = statement.with_for_update(of=Organization)
    row = (await session.execute(statement)).first()
    if row is None:
        raise org_not_found()
    org, membership = row
    if need not in scopes_of(membership):
        raise Forbidden(f"Your role in this organization does not allow this ({need.value})", code="missing_scope")
    return org, membership


def context_org_id(actor: Actor) -> str:
    """The org of the caller's current context, for the OpenRouter-compatible /organization routes."""
    if actor.organization_id is None:
        raise NotFound(
            "No organization in this context: switch to an organization (PUT /api/v1/me/context) "
            "or use a management key created in one",
            code="no_organization_context",
        )
    return actor.organization_id
