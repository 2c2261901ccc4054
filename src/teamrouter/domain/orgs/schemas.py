"""Request and response shapes for organizations; unknown fields on writes are refused.

Settings and billing shapes live in `settings.py` (the gateway reads them too).
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, ConfigDict, EmailStr, Field, StrictBool, StringConstraints

from teamrouter.clock import iso_utc as iso
from teamrouter.domain.accounts.models import User
from teamrouter.domain.orgs.models import Invitation, Membership, Organization
from teamrouter.domain.roles import Role

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OrganizationCreate(Strict):
    name: Name


class OrganizationUpdate(Strict):
    name: Name


class InvitationCreate(Strict):
    email: EmailStr = Field(max_length=320)
    role: Role = Role.MEMBER


class InvitationAccept(Strict):
    token: str = Field(min_length=1, max_length=200)


class MemberUpdate(Strict):
    role: Role


class OpenRouterSettingsUpdate(Strict):
    is_filtered_model_catalog_enabled: StrictBool


def effective_cap(org: Organization, default_cap: int) -> int:
    return org.member_cap if org.member_cap is not None else default_cap


def org_public(org: Organization, *, role: str, default_cap: int) -> dict[str, Any]:
    return {
        "id": org.id,
        "name": org.name,
        "role": role,
        "member_count": org.member_count,
        "member_cap": effective_cap(org, default_cap),
        "created_at": iso(org.created_at),
    }


def member_public(membership: Membership, user: User) -> dict[str, Any]:
    return {
        "id": user.id,
        "email": user.email,
        "name": user.name,
        "role": membership.role,
        "joined_at": iso(membership.created_at),
    }


def openrouter_member(membership: Membership, user: User) -> dict[str, Any]:
    """OpenRouter's member object: names split at the first space; role as `org:<role>`."""
    first, _, last = user.name.strip().partition(" ")
    return {
        "id": user.id,
        "email": user.email,
        "first_name": first or None,
        "last_name": last.strip() or None,
        "role": Role(membership.role).openrouter_name,
    }


def invitation_status(invitation: Invitation, now: datetime) -> str:
    if invitation.accepted_at is not None:
        return "accepted"
    if invitation.revoked_at is not None:
        return "revoked"
    if invitation.expires_at <= now:
        return "expired"
    return "pending"


def invitation_public(invitation: Invitation, now: datetime) -> dict[str, Any]:
    return {
        "id": invitation.id,
        "organization_id": invitation.organization_id,
        "email": invitation.email,
        "role": invitation.role,
        "status": invitation_status(invitation, now),
        "invited_by_user_id": invitation.invited_by_user_id,
        "created_at": iso(invitation.created_at),
        "expires_at": iso(invitation.expires_at),
    }


def membership_public(membership: Membership, org: Organization) -> dict[str, Any]:
    return {
        "organization_id": org.id,
        "organization": {"id": org.id, "name": org.name},
        "user_id": membership.user_id,
        "role": membership.role,
        "joined_at": iso(membership.created_at),
    }
