"""Organization verbs: create, list, read; settings and billing; the staff member-cap override.

Membership changes (roles, removal, leaving) are in `members.py`, invitations in `invitations.py`.
Every verb takes the runtime first and an explicit actor; authorization happens in `policy.load_org`
while the org is fetched.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

from sqlalchemy import select, update

from teamrouter.domain.actor import Actor
from teamrouter.domain.audit import service as audit
from teamrouter.domain.credits.models import CreditAccount
from teamrouter.domain.names import clean_name
from teamrouter.domain.orgs import settings as org_settings_mod
from teamrouter.domain.orgs.models import Membership, Organization
from teamrouter.domain.orgs.policy import context_org_id, load_org, org_not_found
from teamrouter.domain.orgs.settings import (
    BillingPatch,
    OrgBilling,
    OrgSettings,
    SettingsPatch,
    org_billing,
    org_settings,
)
from teamrouter.domain.roles import Role, Scope
from teamrouter.errors import BadRequest, Forbidden, bad_field
from teamrouter.gateway.setup import catalog_for
from teamrouter.ids import new_id
from teamrouter.listeners import ORG_SETTINGS_LISTENERS
from teamrouter.runtime import Runtime
from teamrouter.storage.db import UnitOfWork

MAX_MEMBER_CAP = 100_000


@dataclass(frozen=True)
class OrgView:
    """An org as one person sees it: the row and their role in it."""

    org: Organization
    role: str


async def create_organization(rt: Runtime, *, actor: Actor, name: str) -> OrgView:
    """A new org with the creator as its admin and its own (empty) credit pool, in one transaction."""
    if not actor.email_verified:
        raise Forbidden(
            "Your email address must be verified before you can create an organization",
            code="email_not_verified",
        )
    name = clean_name("name", name)
    now = rt.clock.now()
    async with rt.db.uow() as uow:
        org = Organization(
            id=new_id("org"),
            name=name,
            created_by_user_id=actor.user_id,
            member_count=1,
            member_cap=None,
            settings={},
            billing={},
            created_at=now,
            updated_at=now,
        )
        uow.session.add(org)
        await uow.session.flush()
        membership = Membership(
            id=new_id("mem"),
            organization_id=org.id,
            user_id=actor.user_id,
            role=Role.ADMIN.value,
            created_at=now,
            updated_at=now,
        )
        uow.session.add(membership)
        uow.session.add(CreditAccount(id=new_id("acct"), organization_id=org.id, created_at=now, updated_at=now))
        audit.record(
            uow,
            actor=actor,
            clock=rt.clock,
            action="organization.create",
            target_type="organization",
            target_id=org.id,
            organization_id=org.id,
            after={"name": name},
        )
        audit.record(
            uow,
            actor=actor,
            clock=rt.clock,
            action="membership.create",
            target_type="user",
            target_id=actor.user_id,
            organization_id=org.id,
            after={"role": Role.ADMIN.value, "via": "create"},
        )
    return OrgView(org=org, role=Role.ADMIN.value)


async def list_organizations(rt: Runtime, *, actor: Actor) -> list[OrgView]:
    async with rt.db.read() as session:
        rows = (
            await session.execute(
                select(Organization, Membership.role)
                .join(Membership, Membership.organization_id == Organization.id)
                .where(Membership.user_id == actor.user_id)
                .order_by(Organization.name, Organization.id)
            )
        ).all()
    return [OrgView(org=org, role=role) for org, role in rows]


async def get_organization(rt: Runtime, *, actor: Actor, organization_id: str) -> OrgView:
    async with rt.db.read() as session:
        org, membership = await load_org(session, organization_id, user_id=actor.user_id, need=Scope.ORG_READ)
    return OrgView(org=org, role=membership.role)


async def rename_organization(rt: Runtime, *, actor: Actor, organization_id: str, name: str) -> OrgView:
    """A new name for the org (admin only), under the names rule; audited with the old one."""
    name = clean_name("name", name)
    async with rt.db.uow() as uow:
        org, membership = await load_org(
            uow.session, organization_id, user_id=actor.user_id, need=Scope.ORG_MANAGE, lock=True
        )
        if org.name != name:
            before = org.name
            org.name = name
            org.updated_at = rt.clock.now()
            audit.record(
                uow,
                actor=actor,
                clock=rt.clock,
                action="organization.rename",
                target_type="organization",
                target_id=org.id,
                organization_id=org.id,
                before={"name": before},
                after={"name": name},
            )
    return OrgView(org=org, role=membership.role)


# Settings -----------------------------------------------------------------------------------------


async def get_settings(rt: Runtime, *, actor: Actor, organization_id: str) -> tuple[str, OrgSettings]:
    async with rt.db.read() as session:
        org, _ = await load_org(session, organization_id, user_id=actor.user_id, need=Scope.ORG_READ)
    return org.id, org_settings(org)


async def update_settings(
    rt: Runtime, *, actor: Actor, organization_id: str, patch: SettingsPatch
) -> tuple[str, OrgSettings]:
    """Merge the fields sent into the current settings (admin only). An empty patch is a 400, and so
    are provider lists the catalog cannot satisfy (`settings.merge_settings`)."""
    async with rt.db.uow() as uow:
        org, _ = await load_org(uow.session, organization_id, user_id=actor.user_id, need=Scope.ORG_MANAGE, lock=True)
        if not patch.model_fields_set:
            raise BadRequest("Nothing to change: send at least one setting", code="empty_update")
        before = org_settings(org)
        after = org_settings_mod.merge_settings(before, patch, catalog=catalog_for(rt))
        await _store_settings(uow, rt, actor, org, before, after)
    return org.id, after


async def _store_settings(
    uow: UnitOfWork, rt: Runtime, actor: Actor, org: Organization, before: OrgSettings, after: OrgSettings
) -> None:
    if after == before:
        return
    org.settings = after.model_dump(mode="json")
    org.updated_at = rt.clock.now()
    audit.record(
        uow,
        actor=actor,
        clock=rt.clock,
        action="organization.settings_update",
        target_type="organization",
        target_id=org.id,
        organization_id=org.id,
        before=before.model_dump(mode="json"),
        after=after.model_dump(mode="json"),
    )
    _notify_settings_changed(uow, rt, org.id)


def _notify_settings_changed(uow: UnitOfWork, rt: Runtime, organization_id: str) -> None:
    # Caches of org settings (the gateway's) register `rt.extras[ORG_SETTINGS_LISTENERS]`: callables
    # taking the org id, run after commit so they never see an uncommitted value.
    for listener in rt.extras.get(ORG_SETTINGS_LISTENERS, ()):
        uow.on_commit(functools.partial(listener, organization_id))


async def get_billing(rt: Runtime, *, actor: Actor, organization_id: str) -> OrgBilling:
    async with rt.db.read() as session:
        org, _ = await load_org(session, organization_id, user_id=actor.user_id, need=Scope.BILLING_READ)
    return org_billing(org)


async def update_billing(rt: Runtime, *, actor: Actor, organization_id: str, patch: BillingPatch) -> OrgBilling:
    async with rt.db.uow() as uow:
        org, _ = await load_org(
            uow.session, organization_id, user_id=actor.user_id, need=Scope.BILLING_MANAGE, lock=True
        )
        if not patch.model_fields_set:
            raise BadRequest("Nothing to change: send at least one billing field", code="empty_update")
        before = org_billing(org)
        after = org_settings_mod.merge_billing(before, patch)
        if after != before:
            org.billing = after.model_dump(mode="json")
            org.updated_at = rt.clock.now()
            audit.record(
                uow,
                actor=actor,
                clock=rt.clock,
                action="organization.billing_update",
                target_type="organization",
                target_id=org.id,
                organization_id=org.id,
                before=before.model_dump(mode="json"),
                after=after.model_dump(mode="json"),
            )
    return after


# The OpenRouter-compatible view of the context org --------------------------------------------------


async def get_context_settings(rt: Runtime, *, actor: Actor) -> tuple[str, OrgSettings]:
    return await get_settings(rt, actor=actor, organization_id=context_org_id(actor))


async def set_filtered_model_catalog(rt: Runtime, *, actor: Actor, enabled: bool) -> tuple[str, OrgSettings]:
    """OpenRouter's `PATCH /organization/settings`: one flag of the context org (admin only)."""
    organization_id = context_org_id(actor)
    async with rt.db.uow() as uow:
        org, _ = await load_org(uow.session, organization_id, user_id=actor.user_id, need=Scope.ORG_MANAGE, lock=True)
        before = org_settings(org)
        after = before.model_copy(update={"filtered_model_catalog": enabled})
        await _store_settings(uow, rt, actor, org, before, after)
    return org.id, after


# Staff ----------------------------------------------------------------------------------------------


async def set_member_cap(rt: Runtime, *, actor: Actor | None, organization_id: str, cap: int | None) -> Organization:
    """Override an org's member cap (None = back to the deployment default). Staff only.

    `actor=None` is the operator on the host (the CLI: `teamrouter staff set-member-cap`), trusted
    like staff and audited with no acting user. Lowering the cap below the current member count is
    allowed: nobody is removed, new members are refused until the count is under it.
    """
    if actor is not None and not actor.is_staff:
        raise Forbidden("Only deployment staff can change an organization's member cap", code="staff_only")
    if cap is not None and not 1 <= cap <= MAX_MEMBER_CAP:
        raise bad_field("cap", f"must be between 1 and {MAX_MEMBER_CAP}")
    async with rt.db.uow() as uow:
        org = await uow.session.get(Organization, organization_id)
        if org is None:
            raise org_not_found()
        before = org.member_cap
        await uow.session.execute(
            update(Organization)
            .where(Organization.id == organization_id)
            .values(member_cap=cap, updated_at=rt.clock.now())
        )
        await uow.session.refresh(org)
        audit.record(
            uow,
            actor=actor,
            clock=rt.clock,
            action="organization.member_cap_set",
            target_type="organization",
            target_id=organization_id,
            organization_id=organization_id,
            before={"member_cap": before},
            after={"member_cap": cap},
        )
    return org
