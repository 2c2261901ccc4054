"""Organizations over HTTP (dashboard session): orgs, members, invitations, settings, billing.

Thin: parse, one service call, serialize. Authorization is in the services; `access(...)` declares
the intended policy for the role-matrix test.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Response

from teamrouter.api.deps import Offset, RuntimeDep, SessionActor
from teamrouter.api.policy import Access, access
from teamrouter.domain.orgs import invitations, members
from teamrouter.domain.orgs import service as orgs
from teamrouter.domain.orgs.schemas import (
    InvitationAccept,
    InvitationCreate,
    MemberUpdate,
    OrganizationCreate,
    OrganizationUpdate,
    invitation_public,
    member_public,
    membership_public,
    org_public,
)
from teamrouter.domain.orgs.settings import BillingPatch, SettingsPatch, billing_public, settings_public
from teamrouter.runtime import Runtime

router = APIRouter(tags=["organizations"])


def _org(rt: Runtime, view: orgs.OrgView) -> dict[str, Any]:
    return org_public(view.org, role=view.role, default_cap=rt.settings.max_org_members)


@router.post("/organizations", status_code=201, openapi_extra=access(Access.VERIFIED))
async def create_organization(body: OrganizationCreate, actor: SessionActor, rt: RuntimeDep) -> dict[str, Any]:
    """Create an organization; I become its admin. Needs a verified email."""
    view = await orgs.create_organization(rt, actor=actor, name=body.name)
    return {"data": _org(rt, view)}


@router.get("/organizations", openapi_extra=access(Access.SESSION))
async def list_organizations(actor: SessionActor, rt: RuntimeDep) -> dict[str, Any]:
    """The organizations I belong to, with my role in each."""
    views = await orgs.list_organizations(rt, actor=actor)
    return {"data": [_org(rt, view) for view in views]}


@router.get("/organizations/{org}", openapi_extra=access(Access.MEMBER))
async def get_organization(org: str, actor: SessionActor, rt: RuntimeDep) -> dict[str, Any]:
    view = await orgs.get_organization(rt, actor=actor, organization_id=org)
    return {"data": _org(rt, view)}


@router.patch("/organizations/{org}", openapi_extra=access(Access.ADMIN))
async def rename_organization(
    org: str, body: OrganizationUpdate, actor: SessionActor, rt: RuntimeDep
) -> dict[str, Any]:
    """Rename the organization (admin)."""
    view = await orgs.rename_organization(rt, actor=actor, organization_id=org, name=body.name)
    return {"data": _org(rt, view)}


@router.get("/organizations/{org}/members", openapi_extra=access(Access.MEMBER))
async def list_members(
    org: str,
    actor: SessionActor,
    rt: RuntimeDep,
    offset: Offset = 0,
    limit: Annotated[int, Query(ge=1, le=members.MAX_PAGE)] = members.MAX_PAGE,
) -> dict[str, Any]:
    rows, total = await members.list_members(rt, actor=actor, organization_id=org, offset=offset, limit=limit)
    return {"data": [member_public(m, u) for m, u in rows], "total_count": total}


@router.patch("/organizations/{org}/members/{user_id}", openapi_extra=access(Access.ADMIN))
async def change_role(
    org: str, user_id: str, body: MemberUpdate, actor: SessionActor, rt: RuntimeDep
) -> dict[str, Any]:
    """Make a member admin or member. The last admin cannot be demoted (409). A change ends every
    session of that member (they sign in again)."""
    membership, user = await members.change_role(rt, actor=actor, organization_id=org, user_id=user_id, role=body.role)
    return {"data": member_public(membership, user)}


@router.delete("/organizations/{org}/members/{user_id}", status_code=204, openapi_extra=access(Access.ADMIN))
async def remove_member(org: str, user_id: str, actor: SessionActor, rt: RuntimeDep) -> Response:
    await members.remove_member(rt, actor=actor, organization_id=org, user_id=user_id)
    return Response(status_code=204)


@router.post("/organizations/{org}/leave", status_code=204, openapi_extra=access(Access.MEMBER))
async def leave_organization(org: str, actor: SessionActor, rt: RuntimeDep) -> Response:
    """Leave; the last admin cannot (409)."""
    await members.leave_organization(rt, actor=actor, organization_id=org)
    return Response(status_code=204)


@router.post("/organizations/{org}/invitations", status_code=201, openapi_extra=access(Access.ADMIN))
async def invite(org: str, body: InvitationCreate, actor: SessionActor, rt: RuntimeDep) -> dict[str, Any]:
    """Email an invitation link (a pending invitation for the same address is replaced)."""
    invitation = await invitations.invite(rt, actor=actor, organization_id=org, email=body.email, role=body.role)
    return {"data": invitation_public(invitation, rt.clock.now())}


@router.get("/organizations/{org}/invitations", openapi_extra=access(Access.ADMIN))
async def list_invitations(org: str, actor: SessionActor, rt: RuntimeDep) -> dict[str, Any]:
    rows = await invitations.list_invitations(rt, actor=actor, organization_id=org)
    now = rt.clock.now()
    return {"data": [invitation_public(row, now) for row in rows]}


@router.delete("/organizations/{org}/invitations/{invitation_id}", status_code=204, openapi_extra=access(Access.ADMIN))
async def revoke_invitation(org: str, invitation_id: str, actor: SessionActor, rt: RuntimeDep) -> Response:
    await invitations.revoke_invitation(rt, actor=actor, organization_id=org, invitation_id=invitation_id)
    return Response(status_code=204)


@router.get("/invitations/accept", openapi_extra=access(Access.SESSION))
async def preview_invitation(
    actor: SessionActor, rt: RuntimeDep, token: Annotated[str, Query(min_length=1, max_length=200)]
) -> dict[str, Any]:
    """What an invitation link is about; opening it does not consume it."""
    preview = await invitations.preview_invitation(rt, actor=actor, token=token)
    data = invitation_public(preview.invitation, rt.clock.now())
    data["organization"] = {"id": preview.invitation.organization_id, "name": preview.organization_name}
    return {"data": data}


@router.post("/invitations/accept", openapi_extra=access(Access.VERIFIED))
async def accept_invitation(body: InvitationAccept, actor: SessionActor, rt: RuntimeDep) -> dict[str, Any]:
    """Join with a verified email equal to the invited one; 409 if the org is full."""
    membership, org = await invitations.accept_invitation(rt, actor=actor, token=body.token)
    return {"data": membership_public(membership, org)}


@router.get("/organizations/{org}/settings", openapi_extra=access(Access.MEMBER))
async def get_settings(org: str, actor: SessionActor, rt: RuntimeDep) -> dict[str, Any]:
    _, settings = await orgs.get_settings(rt, actor=actor, organization_id=org)
    return {"data": settings_public(settings)}


@router.patch("/organizations/{org}/settings", openapi_extra=access(Access.ADMIN))
async def update_settings(org: str, body: SettingsPatch, actor: SessionActor, rt: RuntimeDep) -> dict[str, Any]:
    """Merge the settings sent (nested objects too); unknown fields are refused, and so are provider
    lists that name a provider the catalog does not list, contradict each other or leave no provider
    (a typo in `only` would stop all of the org's traffic). Providers are stored by slug."""
    _, settings = await orgs.update_settings(rt, actor=actor, organization_id=org, patch=body)
    return {"data": settings_public(settings)}


@router.get("/organizations/{org}/billing", openapi_extra=access(Access.ADMIN))
async def get_billing(org: str, actor: SessionActor, rt: RuntimeDep) -> dict[str, Any]:
    billing = await orgs.get_billing(rt, actor=actor, organization_id=org)
    return {"data": billing_public(billing)}


@router.patch("/organizations/{org}/billing", openapi_extra=access(Access.ADMIN))
async def update_billing(org: str, body: BillingPatch, actor: SessionActor, rt: RuntimeDep) -> dict[str, Any]:
    billing = await orgs.update_billing(rt, actor=actor, organization_id=org, patch=body)
    return {"data": billing_public(billing)}
