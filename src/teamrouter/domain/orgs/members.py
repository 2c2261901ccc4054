"""Membership verbs: list members, change roles, remove a member, leave.

A role change ends every session of the person whose role changed (they sign in again): roles are
re-read on each request anyway, and ending the sessions means a token obtained before a promotion
never carries the new role. A demotion also disables the management keys the person created in the
org: they already stop authenticating while their creator is not an admin, and disabling them means
a later promotion does not bring old keys back to life.

Named invariants:
- *The last admin*: an org always keeps at least one admin. Every verb that can take the admin role
  away loads the org with `lock=True` (PostgreSQL `SELECT … FOR UPDATE` on the org row; SQLite
  writers are already serialised by `BEGIN IMMEDIATE`) and only then counts the admins, so two admins
  demoting each other concurrently cannot both succeed.
- *The member count*: `organization.member_count` moves with membership rows in the same transaction
  (the cap is enforced on it, see `invitations.accept_invitation`).

Leaving or removal ends access at once: the membership row goes (sessions resolve the context only
while a membership exists), sessions whose context was the org fall back to personal, keys the person
created in the org are disabled unless the org keeps them (`member_exit_keys = "keep"`), and their
management keys are always disabled.

Keys disabled here become admin-managed (`ApiKey.admin_managed`, see `keys.service`): a person who
comes back as a member cannot re-enable them; an admin can. So do those of the same keys the person
had already disabled themselves, or pausing a key before leaving would keep it revivable.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import Any, TypeVar

from sqlalchemy import Row, Select, delete, func, select, update

from teamrouter.domain.accounts.models import User, WebSession
from teamrouter.domain.accounts.service import revoke_sessions
from teamrouter.domain.actor import Actor
from teamrouter.domain.audit import service as audit
from teamrouter.domain.keys.models import ApiKey
from teamrouter.domain.orgs.models import Membership, Organization
from teamrouter.domain.orgs.policy import context_org_id, load_org
from teamrouter.domain.orgs.settings import org_settings
from teamrouter.domain.roles import Role, Scope
from teamrouter.errors import Conflict, NotFound
from teamrouter.listeners import MEMBERSHIP_LISTENERS
from teamrouter.runtime import Runtime
from teamrouter.storage.db import UnitOfWork

MAX_PAGE = 500


def member_not_found() -> NotFound:
    return NotFound("No such member in this organization", code="member_not_found")


def last_admin() -> Conflict:
    return Conflict(
        "An organization must keep at least one admin: make someone else admin first",
        code="last_admin",
    )


async def list_members(
    rt: Runtime, *, actor: Actor, organization_id: str, offset: int = 0, limit: int | None = None
) -> tuple[list[tuple[Membership, User]], int]:
    """Members (oldest first) and the total count. Any member may list them."""
    async with rt.db.read() as session:
        org, _ = await load_org(session, organization_id, user_id=actor.user_id, need=Scope.ORG_READ)
        statement = (
            select(Membership, User)
            .join(User, User.id == Membership.user_id)
            .where(Membership.organization_id == org.id)
            .order_by(Membership.created_at, Membership.id)
            .offset(offset)
            .limit(min(limit, MAX_PAGE) if limit is not None else MAX_PAGE)
        )
        rows = [(m, u) for m, u in (await session.execute(statement)).all()]
        total = await session.scalar(
            select(func.count()).select_from(Membership).where(Membership.organization_id == org.id)
        )
    return rows, int(total or 0)


async def list_context_members(
    rt: Runtime, *, actor: Actor, offset: int = 0, limit: int | None = None
) -> tuple[list[tuple[Membership, User]], int]:
    """`GET /organization/members`: the members of the caller's context org."""
    return await list_members(rt, actor=actor, organization_id=context_org_id(actor), offset=offset, limit=limit)


async def change_role(
    rt: Runtime, *, actor: Actor, organization_id: str, user_id: str, role: Role
) -> tuple[Membership, User]:
    async with rt.db.uow() as uow:
        org, _ = await load_org(
            uow.session, organization_id, user_id=actor.user_id, need=Scope.MEMBERS_MANAGE, lock=True
        )
        target = await _membership(uow, org.id, user_id)
        before = target.role
        if before != role.value:
            if before == Role.ADMIN.value and await _admin_count(uow, org.id) <= 1:
                raise last_admin()
            now = rt.clock.now()
            target.role = role.value
            target.updated_at = now
            # Rotation at a role change (TESTPLAN D33): the person signs in again, in every browser.
            await revoke_sessions(uow, user_id=user_id, now=now)
            audit.record(
                uow,
                actor=actor,
                clock=rt.clock,
                action="membership.role_change",
                target_type="user",
                target_id=user_id,
                organization_id=org.id,
                before={"role": before},
                after={"role": role.value},
            )
            if before == Role.ADMIN.value:
                await _disable_keys(
                    uow,
                    rt,
                    actor=actor,
                    organization_id=org.id,
                    user_id=user_id,
                    management_only=True,
                    reason="creator is no longer an admin of the organization",
                )
        user = await uow.session.get_one(User, user_id)
    return target, user


async def remove_member(rt: Runtime, *, actor: Actor, organization_id: str, user_id: str) -> None:
    """An admin removes someone (themselves included, as long as another admin remains)."""
    async with rt.db.uow() as uow:
        org, _ = await load_org(
            uow.session, organization_id, user_id=actor.user_id, need=Scope.MEMBERS_MANAGE, lock=True
        )
        target = await _membership(uow, org.id, user_id)
        await end_membership(uow, rt, actor=actor, org=org, membership=target, action="membership.remove")


async def leave_organization(rt: Runtime, *, actor: Actor, organization_id: str) -> None:
    async with rt.db.uow() as uow:
        org, membership = await load_org(
            uow.session, organization_id, user_id=actor.user_id, need=Scope.ORG_READ, lock=True
        )
        await end_membership(uow, rt, actor=actor, org=org, membership=membership, action="membership.leave")


async def end_membership(
    uow: UnitOfWork, rt: Runtime, *, actor: Actor, org: Organization, membership: Membership, action: str
) -> None:
    """Everything that must happen, in the caller's transaction (which holds the org lock)."""
    if membership.role == Role.ADMIN.value and await _admin_count(uow, org.id) <= 1:
        raise last_admin()
    now = rt.clock.now()
    user_id = membership.user_id
    exit_keys = org_settings(org).member_exit_keys
    await uow.session.execute(delete(Membership).where(Membership.id == membership.id))
    await uow.session.execute(
        update(Organization)
        .where(Organization.id == org.id)
        .values(member_count=Organization.member_count - 1, updated_at=now)
        .execution_options(synchronize_session=False)
    )
    await uow.session.execute(
        update(WebSession)
        .where(WebSession.user_id == user_id, WebSession.organization_id == org.id)
        .values(organization_id=None)
        .execution_options(synchronize_session=False)
    )
    disabled = await _disable_keys(
        uow,
        rt,
        actor=actor,
        organization_id=org.id,
        user_id=user_id,
        management_only=exit_keys == "keep",
        reason="creator left the organization",
    )
    audit.record(
        uow,
        actor=actor,
        clock=rt.clock,
        action=action,
        target_type="user",
        target_id=user_id,
        organization_id=org.id,
        before={"role": membership.role},
        after={"disabled_keys": disabled, "member_exit_keys": exit_keys},
    )


_Query = TypeVar("_Query", bound="Select[*tuple[Any, ...]]")


async def _enabled_keys(
    uow: UnitOfWork, organization_id: str, user_id: str, *, management_only: bool
) -> Sequence[Row[str, str, bool]]:
    """(id, name, management) of the live, enabled keys a person created in an org."""
    keys = _persons_keys(
        select(ApiKey.id, ApiKey.name, ApiKey.management), organization_id, user_id, management_only
    ).where(ApiKey.disabled.is_(False))
    return (await uow.session.execute(keys)).all()


def _persons_keys(query: _Query, organization_id: str, user_id: str, management_only: bool) -> _Query:
    """`query` narrowed to the live keys a person created in an org (management keys only, if so)."""
    query = query.where(
        ApiKey.organization_id == organization_id, ApiKey.creator_user_id == user_id, ApiKey.deleted_at.is_(None)
    )
    return query.where(ApiKey.management.is_(True)) if management_only else query


async def _disable_keys(
    uow: UnitOfWork,
    rt: Runtime,
    *,
    actor: Actor,
    organization_id: str,
    user_id: str,
    management_only: bool,
    reason: str,
) -> int:
    """Disable a person's enabled keys in an org (management keys only, if so) as the system, in the
    caller's transaction; returns how many.

    They become admin-managed, so the person cannot re-enable them unless they are an admin, and so do
    the keys of the same kind the person had already disabled; the membership-scoped caches drop the
    person's keys after commit, as at an exit."""
    now = rt.clock.now()
    keys = await _enabled_keys(uow, organization_id, user_id, management_only=management_only)
    await _claim_disabled_keys(
        uow,
        rt,
        actor=actor,
        organization_id=organization_id,
        user_id=user_id,
        management_only=management_only,
        reason=reason,
    )
    if keys:
        await uow.session.execute(
            update(ApiKey)
            .where(ApiKey.id.in_([row.id for row in keys]))
            .values(disabled=True, admin_managed=True, updated_at=now)
            .execution_options(synchronize_session=False)
        )
    for row in keys:
        audit.record(
            uow,
            actor=actor,
            clock=rt.clock,
            action="api_key.disable",
            target_type="api_key",
            target_id=row.id,
            organization_id=organization_id,
            before={"disabled": False, "name": row.name, "management": row.management},
            after={"disabled": True, "admin_managed": True, "reason": reason},
        )
    # Membership-scoped caches (key auth, context) register `rt.extras[MEMBERSHIP_LISTENERS]`:
    # callables taking (organization_id, user_id), run after commit.
    for listener in rt.extras.get(MEMBERSHIP_LISTENERS, ()):
        uow.on_commit(functools.partial(listener, organization_id, user_id))
    return len(keys)


async def _claim_disabled_keys(
    uow: UnitOfWork,
    rt: Runtime,
    *,
    actor: Actor,
    organization_id: str,
    user_id: str,
    management_only: bool,
    reason: str,
) -> None:
    """Make admin-managed the live keys a person created in an org and had disabled themselves."""
    keys = _persons_keys(select(ApiKey.id), organization_id, user_id, management_only).where(
        ApiKey.disabled.is_(True), ApiKey.admin_managed.is_(False)
    )
    ids = list((await uow.session.scalars(keys)).all())
    if not ids:
        return
    await uow.session.execute(
        update(ApiKey)
        .where(ApiKey.id.in_(ids))
        .values(admin_managed=True, updated_at=rt.clock.now())
        .execution_options(synchronize_session=False)
    )
    for key_id in ids:
        audit.record(
            uow,
            actor=actor,
            clock=rt.clock,
            action="api_key.update",
            target_type="api_key",
            target_id=key_id,
            organization_id=organization_id,
            before={"admin_managed": False},
            after={"admin_managed": True, "reason": reason},
        )


async def _membership(uow: UnitOfWork, organization_id: str, user_id: str) -> Membership:
    target = await uow.session.scalar(
        select(Membership).where(Membership.organization_id == organization_id, Membership.user_id == user_id)
    )
    if target is None:
        raise member_not_found()
    return target


async def _admin_count(uow: UnitOfWork, organization_id: str) -> int:
    count = await uow.session.scalar(
        select(func.count())
        .select_from(Membership)
        .where(Membership.organization_id == organization_id, Membership.role == Role.ADMIN.value)
    )
    return int(count or 0)
