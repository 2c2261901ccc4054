"""Invitations: an admin invites an email address; the person with that verified address accepts.

- The token is `new_token()` randomness, mailed as `{public_url}/invitations/accept?token=…` after
  commit, and stored only as its SHA-256. It is single-use, expires after
  `settings.invitation_ttl_hours` and can be revoked. Reading (listing, previewing) never consumes it.
- Inviting an address that already has a pending invitation to the org *replaces* it: the old link is
  revoked and a fresh one is mailed (this is how an admin re-sends an invitation).
- *The member cap* (`organization.member_cap`, else `settings.max_org_members`) is enforced by one
  guarded UPDATE on `organization.member_count` when accepting, so concurrent accepts can never push
  the count past it; inviting into a full org is refused early too, as a courtesy.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select, update
from sqlalchemy.exc import IntegrityError

from teamrouter.domain.accounts.models import User
from teamrouter.domain.accounts.service import normalize_email
from teamrouter.domain.actor import Actor
from teamrouter.domain.audit import service as audit
from teamrouter.domain.mail.models import topic
from teamrouter.domain.mail.outbox import cancel_mail, mail_after_commit
from teamrouter.domain.names import shown_name
from teamrouter.domain.orgs.models import Invitation, Membership, Organization
from teamrouter.domain.orgs.policy import load_org
from teamrouter.domain.orgs.schemas import effective_cap, invitation_status
from teamrouter.domain.roles import Role, Scope
from teamrouter.errors import BadRequest, Conflict, Forbidden, NotFound, bad_field
from teamrouter.ids import hash_token, new_id, new_token
from teamrouter.runtime import Runtime
from teamrouter.storage.db import UnitOfWork


def organization_full(cap: int) -> Conflict:
    return Conflict(
        f"The organization is full: it has reached its member cap of {cap}",
        code="organization_full",
        member_cap=cap,
    )


@dataclass(frozen=True)
class InvitationPreview:
    """What the invited person sees before accepting (no token, nothing consumed)."""

    invitation: Invitation
    organization_name: str


async def invite(rt: Runtime, *, actor: Actor, organization_id: str, email: str, role: Role) -> Invitation:
    email = normalize_email(email)
    now = rt.clock.now()
    token = new_token()
    async with rt.db.uow() as uow:
        org, _ = await load_org(
            uow.session, organization_id, user_id=actor.user_id, need=Scope.MEMBERS_MANAGE, lock=True
        )
        already = await uow.session.scalar(
            select(Membership.id)
            .join(User, User.id == Membership.user_id)
            .where(Membership.organization_id == org.id, User.email == email)
        )
        if already is not None:
            raise Conflict(f"{email} is already a member of this organization", code="already_member")
        cap = effective_cap(org, rt.settings.max_org_members)
        if org.member_count >= cap:
            raise organization_full(cap)
        await _revoke_pending(uow, rt, actor, org.id, email)
        invitation = Invitation(
            id=new_id("inv"),
            organization_id=org.id,
            email=email,
            role=role.value,
            token_hash=hash_token(token),
            invited_by_user_id=actor.user_id,
            created_at=now,
            expires_at=now + timedelta(hours=rt.settings.invitation_ttl_hours),
        )
        uow.session.add(invitation)
        audit.record(
            uow,
            actor=actor,
            clock=rt.clock,
            action="invitation.create",
            target_type="invitation",
            target_id=invitation.id,
            organization_id=org.id,
            after={"email": email, "role": role.value, "expires_at": invitation.expires_at.isoformat()},
        )
        _mail_invitation(uow, rt, to=email, org_name=org.name, role=role, token=token, invitation_id=invitation.id)
    return invitation


async def _revoke_pending(uow: UnitOfWork, rt: Runtime, actor: Actor, organization_id: str, email: str) -> None:
    now = rt.clock.now()
    pending = (
        await uow.session.scalars(
            select(Invitation).where(
                Invitation.organization_id == organization_id,
                Invitation.email == email,
                Invitation.accepted_at.is_(None),
                Invitation.revoked_at.is_(None),
                Invitation.expires_at > now,
            )
        )
    ).all()
    for old in pending:
        old.revoked_at = now
        await cancel_mail(uow, rt, topic=_topic(old.id))
        audit.record(
            uow,
            actor=actor,
            clock=rt.clock,
            action="invitation.revoke",
            target_type="invitation",
            target_id=old.id,
            organization_id=organization_id,
            before={"status": "pending"},
            after={"status": "revoked", "reason": "replaced by a new invitation"},
        )


def _topic(invitation_id: str) -> str:
    return topic("invitation", invitation_id)


def _mail_invitation(
    uow: UnitOfWork, rt: Runtime, *, to: str, org_name: str, role: Role, token: str, invitation_id: str
) -> None:
    link = f"{rt.settings.public_url}/invitations/accept?token={token}"
    days = rt.settings.invitation_ttl_hours / 24
    body = (
        f"You have been invited to join the organization {org_name!r} on teamrouter as {role.value}.\n\n"
        f"Sign in (or sign up) with this email address, verify it, then open this link:\n\n{link}\n\n"
        f"The link works once and expires in {days:g} days.\n"
        "If you did not expect this invitation, ignore this message.\n"
    )
    # A name stored before teamrouter.domain.names refused them may hold a line break (a header cannot:
    # the mail would never leave) or a bidi override; the body's repr shows such characters escaped.
    subject = f"Invitation to join {shown_name(org_name)} on teamrouter"
    mail_after_commit(uow, rt, to=to, subject=subject, body=body, what="mail 'invitation'", topic=_topic(invitation_id))


async def list_invitations(rt: Runtime, *, actor: Actor, organization_id: str) -> list[Invitation]:
    """Pending invitations (not accepted, revoked or expired), newest first. Never consumes one."""
    now = rt.clock.now()
    async with rt.db.read() as session:
        org, _ = await load_org(session, organization_id, user_id=actor.user_id, need=Scope.MEMBERS_MANAGE)
        rows = await session.scalars(
            select(Invitation)
            .where(
                Invitation.organization_id == org.id,
                Invitation.accepted_at.is_(None),
                Invitation.revoked_at.is_(None),
                Invitation.expires_at > now,
            )
            .order_by(Invitation.created_at.desc(), Invitation.id.desc())
        )
        return list(rows.all())


async def revoke_invitation(rt: Runtime, *, actor: Actor, organization_id: str, invitation_id: str) -> None:
    """Revoke (idempotent for an already revoked one); an accepted invitation cannot be revoked."""
    async with rt.db.uow() as uow:
        org, _ = await load_org(
            uow.session, organization_id, user_id=actor.user_id, need=Scope.MEMBERS_MANAGE, lock=True
        )
        invitation = await uow.session.scalar(
            select(Invitation).where(Invitation.id == invitation_id, Invitation.organization_id == org.id)
        )
        if invitation is None:
            raise NotFound("No such invitation in this organization", code="invitation_not_found")
        if invitation.accepted_at is not None:
            raise Conflict(
                "This invitation has already been accepted; remove the member instead", code="already_accepted"
            )
        if invitation.revoked_at is not None:
            return
        status = invitation_status(invitation, rt.clock.now())
        invitation.revoked_at = rt.clock.now()
        await cancel_mail(uow, rt, topic=_topic(invitation.id))  # not yet sent: it never will be
        audit.record(
            uow,
            actor=actor,
            clock=rt.clock,
            action="invitation.revoke",
            target_type="invitation",
            target_id=invitation.id,
            organization_id=org.id,
            before={"status": status, "email": invitation.email},
            after={"status": "revoked"},
        )


async def preview_invitation(rt: Runtime, *, actor: Actor, token: str) -> InvitationPreview:
    """What a link is about, for the page it opens: org name, address, role, status. Consumes nothing.

    Only for the person it was sent to (a verified address equal to the invited one). Anyone else
    holding the link, a forwarded mail say, learns nothing from it, not even that it is valid.
    """
    async with rt.db.read() as session:
        row = (
            await session.execute(
                select(Invitation, Organization.name)
                .join(Organization, Organization.id == Invitation.organization_id)
                .where(Invitation.token_hash == hash_token(token))
            )
        ).first()
        user = await session.get(User, actor.user_id)
    invitee = user is not None and user.email_verified_at is not None and row is not None and user.email == row[0].email
    if row is None or not invitee:
        raise bad_field("token", "This invitation link is not valid")
    return InvitationPreview(invitation=row[0], organization_name=row[1])


async def accept_invitation(rt: Runtime, *, actor: Actor, token: str) -> tuple[Membership, Organization]:
    if not actor.email_verified:
        raise Forbidden("Verify your email address before accepting an invitation", code="email_not_verified")
    now = rt.clock.now()
    try:
        async with rt.db.uow() as uow:
            invitation = await uow.session.scalar(select(Invitation).where(Invitation.token_hash == hash_token(token)))
            if invitation is None:
                raise bad_field("token", "This invitation link is not valid")
            _check_usable(invitation, now)
            user = await uow.session.get_one(User, actor.user_id)
            if user.email_verified_at is None:
                raise Forbidden("Verify your email address before accepting an invitation", code="email_not_verified")
            if user.email != invitation.email:
                raise Forbidden(
                    "This invitation was sent to a different email address; sign in with that address to accept it",
                    code="email_mismatch",
                )
            member = await uow.session.scalar(
                select(Membership.id).where(
                    Membership.organization_id == invitation.organization_id,
                    Membership.user_id == user.id,
                )
            )
            if member is not None:
                raise Conflict("You are already a member of this organization", code="already_member")
            await _take_seat(uow, rt, invitation.organization_id)
            # Guarded: two concurrent accepts of one token consume it once.
            consumed = await uow.session.execute(
                update(Invitation)
                .where(
                    Invitation.id == invitation.id,
                    Invitation.accepted_at.is_(None),
                    Invitation.revoked_at.is_(None),
                )
                .values(accepted_at=now, accepted_by_user_id=user.id)
                .execution_options(synchronize_session=False)
            )
            if consumed.rowcount != 1:  # type: ignore[attr-defined]
                raise _used()
            membership = Membership(
                id=new_id("mem"),
                organization_id=invitation.organization_id,
                user_id=user.id,
                role=invitation.role,
                created_at=now,
                updated_at=now,
            )
            uow.session.add(membership)
            await uow.session.flush()
            org = await uow.session.get_one(Organization, invitation.organization_id)
            await uow.session.refresh(org)
            audit.record(
                uow,
                actor=actor,
                clock=rt.clock,
                action="invitation.accept",
                target_type="invitation",
                target_id=invitation.id,
                organization_id=org.id,
                before={"status": "pending"},
                after={"status": "accepted"},
            )
            audit.record(
                uow,
                actor=actor,
                clock=rt.clock,
                action="membership.create",
                target_type="user",
                target_id=user.id,
                organization_id=org.id,
                after={"role": invitation.role, "via": "invitation", "invitation_id": invitation.id},
            )
    except IntegrityError as exc:  # a concurrent accept for the same person won the race
        raise Conflict("You are already a member of this organization", code="already_member") from exc
    return membership, org


def _used() -> BadRequest:
    return BadRequest("token: This invitation has already been used", code="token_used", field="token")


def _check_usable(invitation: Invitation, now: datetime) -> None:
    status = invitation_status(invitation, now)
    if status == "accepted":
        raise _used()
    if status == "revoked":
        raise BadRequest("token: This invitation has been revoked", code="invitation_revoked", field="token")
    if status == "expired":
        raise BadRequest("token: This invitation has expired", code="token_expired", field="token")


async def _take_seat(uow: UnitOfWork, rt: Runtime, organization_id: str) -> None:
    """The member cap, as one guarded UPDATE: it succeeds only while a seat is free."""
    default = rt.settings.max_org_members
    taken = await uow.session.execute(
        update(Organization)
        .where(
            Organization.id == organization_id,
            Organization.member_count < func.coalesce(Organization.member_cap, default),
        )
        .values(member_count=Organization.member_count + 1)
        .execution_options(synchronize_session=False)
    )
    if taken.rowcount != 1:  # type: ignore[attr-defined]
        cap = await uow.session.scalar(
            select(func.coalesce(Organization.member_cap, default)).where(Organization.id == organization_id)
        )
        raise organization_full(int(cap or default))
