"""Account verbs: sign up, verify email, log in and out, resolve a session, switch context."""

from __future__ import annotations

import functools
import hashlib
import hmac
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from pydantic import ValidationError
from sqlalchemy import delete, select, update
from sqlalchemy.exc import IntegrityError

from teamrouter.domain.accounts import verification_mail
from teamrouter.domain.accounts.mail_limits import take_mail_slot
from teamrouter.domain.accounts.models import EmailToken, LoginFailure, User, WebSession
from teamrouter.domain.accounts.passwords import password_problem
from teamrouter.domain.accounts.schemas import EMAIL, user_public
from teamrouter.domain.actor import Actor
from teamrouter.domain.audit import service as audit
from teamrouter.domain.credits.models import CreditAccount
from teamrouter.domain.mail.outbox import mail_after_commit
from teamrouter.domain.names import clean_name
from teamrouter.domain.orgs.models import Membership, Organization
from teamrouter.domain.roles import Role
from teamrouter.errors import BadRequest, Conflict, NotFound, RateLimited, Unauthorized, bad_field
from teamrouter.ids import hash_token, new_id, new_token
from teamrouter.runtime import Runtime
from teamrouter.storage.db import UnitOfWork
from teamrouter.storage.upsert import insert_for

VERIFY_EMAIL = "verify_email"
MAX_LOGIN_DELAY_SECONDS = 300


def normalize_email(email: str) -> str:
    return email.strip().lower()


@dataclass(frozen=True)
class SessionAuth:
    """A resolved dashboard session: the row's id, its token (to derive CSRF) and the acting person."""

    session_id: str
    actor: Actor


def csrf_token(rt: Runtime, session_token: str) -> str:
    """Derived, not stored: HMAC of the session token, so it dies with the session."""
    return hmac.new(rt.secret, b"csrf:" + session_token.encode(), hashlib.sha256).hexdigest()


async def sign_up(rt: Runtime, *, email: str, password: str, name: str = "") -> None:
    """Create an account and mail a verification link.

    An address that already has an account is not an error (409 told anyone which addresses have
    accounts): nothing is created or changed, and the address's owner is mailed a notice instead.
    The caller cannot tell the two apart: the same answer, and the same work on both paths (one
    argon2 hash, one write transaction, at most one mail, under the same per-address mail limit).
    """
    email = normalize_email(email)
    problem = password_problem(password, email=email)
    if problem:
        raise bad_field("password", f"Password {problem}")
    name = clean_name("name", name, required=False)
    password_hash = await rt.passwords.hash(password)  # before the lookup: both paths pay for it
    now = rt.clock.now()
    try:
        async with rt.db.uow() as uow:
            existing = await uow.session.scalar(select(User).where(User.email == email))
            if existing is not None and existing.email_verified_at is None:
                await _restart_pending_sign_up(uow, rt, existing, password_hash=password_hash, name=name, now=now)
                return
            if existing is not None:
                await _notify_existing_account(uow, rt, existing, now)
                return
            user = User(
                id=new_id("user"),
                email=email,
                name=name,
                password_hash=password_hash,
                is_staff=False,
                created_at=now,
                updated_at=now,
            )
            uow.session.add(user)
            await uow.session.flush()
            uow.session.add(CreditAccount(id=new_id("acct"), user_id=user.id, created_at=now, updated_at=now))
            if await take_mail_slot(uow, secret=rt.secret, email=email, now=now):
                _send_verification(uow, rt, user)
            audit.record(
                uow,
                actor=Actor(user_id=user.id),
                clock=rt.clock,
                action="user.sign_up",
                target_type="user",
                target_id=user.id,
                after={"email": email, "name": user.name},
            )
    except IntegrityError:
        # A concurrent sign-up with the same address won the race and mailed it; answer alike.
        return


async def _restart_pending_sign_up(
    uow: UnitOfWork, rt: Runtime, user: User, *, password_hash: str, name: str, now: datetime
) -> None:
    """A sign-up for an address whose account was never confirmed: the newest sign-up takes it over.

    Anyone can sign up with any address, so an unconfirmed account proves nothing about who chose
    its password. Were the owner's own sign-up only to mail them a link for it, confirming would
    hand a verified account to whoever signed up first with their address (pre-registration
    hijack). So the password becomes the new one, earlier links and sessions end, and the owner
    gets the same mail a new sign-up gets: whoever confirms does so for the password they chose."""
    user.password_hash = password_hash
    user.name = name
    user.updated_at = now
    await uow.session.execute(
        update(EmailToken)
        .where(EmailToken.user_id == user.id, EmailToken.purpose == VERIFY_EMAIL, EmailToken.used_at.is_(None))
        .values(used_at=now)
        .execution_options(synchronize_session=False)
    )
    await revoke_sessions(uow, user_id=user.id, now=now)
    audit.record(
        uow,
        actor=None,
        clock=rt.clock,
        action="user.sign_up_again",
        target_type="user",
        target_id=user.id,
    )
    # The links just ended were the only ones: were the new one held back by the one-a-minute rule
    # (a second sign-up seconds after the first: a double click, a retry), the owner would be left
    # with a dead link and no other. The limit lets such a mail through once per interval.
    if await take_mail_slot(uow, secret=rt.secret, email=user.email, now=now, replacing=True):
        _send_verification(uow, rt, user)


async def _notify_existing_account(uow: UnitOfWork, rt: Runtime, user: User, now: datetime) -> None:
    """Someone signed up with an address whose account is confirmed: tell its owner, change nothing."""
    audit.record(
        uow,
        actor=None,
        clock=rt.clock,
        action="user.sign_up_existing",
        target_type="user",
        target_id=user.id,
    )
    if not await take_mail_slot(uow, secret=rt.secret, email=user.email, now=now):
        return
    next_step = (
        f"If it was you, sign in with your existing password instead ({rt.settings.public_url}).\n"
        "teamrouter has no self-service password reset: if you have forgotten your password, ask the\n"
        "people who run this teamrouter deployment to reset it.\n"
    )
    body = (
        f"Hello{(' ' + user.name) if user.name else ''},\n\n"
        "Someone, perhaps you, tried to create a new teamrouter account with this email address.\n"
        "It already has an account, so nothing was created or changed.\n\n"
        f"{next_step}\n"
        "If it was not you, you can ignore this message: nobody can use your account without your password.\n"
    )
    subject = "Someone tried to sign up to teamrouter with your email"
    mail_after_commit(uow, rt, to=user.email, subject=subject, body=body, what="mail 'sign-up notice'")


async def create_user(
    rt: Runtime,
    *,
    email: str,
    password: str,
    name: str = "",
    verified: bool = False,
    staff: bool = False,
) -> User:
    """The CLI's path: same rules as sign-up, optionally pre-verified and staff, no email sent."""
    try:
        # Sign-up's check lives in its request schema; this path has none, so it runs it here.
        email = normalize_email(EMAIL.validate_python(email))
    except ValidationError as exc:
        raise bad_field("email", exc.errors()[0]["msg"]) from exc
    problem = password_problem(password, email=email)
    if problem:
        raise bad_field("password", f"Password {problem}")
    name = clean_name("name", name, required=False)
    password_hash = await rt.passwords.hash(password)
    now = rt.clock.now()
    async with rt.db.uow() as uow:
        if await uow.session.scalar(select(User.id).where(User.email == email)):
            raise Conflict("An account with this email already exists", code="email_taken")
        user = User(
            id=new_id("user"),
            email=email,
            name=name,
            password_hash=password_hash,
            email_verified_at=now if verified else None,
            is_staff=staff,
            created_at=now,
            updated_at=now,
        )
        uow.session.add(user)
        await uow.session.flush()
        uow.session.add(CreditAccount(id=new_id("acct"), user_id=user.id, created_at=now, updated_at=now))
        audit.record(
            uow,
            actor=None,
            clock=rt.clock,
            action="user.create",
            target_type="user",
            target_id=user.id,
            after={"email": email, "verified": verified, "staff": staff},
        )
    return user


def _verification_link(uow: UnitOfWork, rt: Runtime, user: User) -> tuple[str, str]:
    """A fresh single-use verification token for the user's address: its id, and the link to mail."""
    token = new_token()
    token_id = new_id("etok")
    now = rt.clock.now()
    uow.session.add(
        EmailToken(
            id=token_id,
            user_id=user.id,
            purpose=VERIFY_EMAIL,
            email=user.email,
            token_hash=hash_token(token),
            created_at=now,
            expires_at=now + timedelta(hours=rt.settings.email_token_ttl_hours),
        )
    )
    return token_id, f"{rt.settings.public_url}/verify-email?token={token}"


def _send_verification(uow: UnitOfWork, rt: Runtime, user: User) -> None:
    token_id, link = _verification_link(uow, rt, user)
    body = (
        f"Hello{(' ' + user.name) if user.name else ''},\n\n"
        f"Confirm your email address for teamrouter by opening this link:\n\n{link}\n\n"
        f"The link works once and expires in {rt.settings.email_token_ttl_hours} hours.\n"
        "If you did not sign up, ignore this message.\n"
    )
    # The topic lets the sender drop the mail if a later sign-up ends this link before it goes out
    # (verification_mail says why then, and not now).
    mail_after_commit(
        uow,
        rt,
        to=user.email,
        subject="Verify your teamrouter email",
        body=body,
        what="mail 'verification'",
        topic=verification_mail.topic(token_id),
    )


async def resend_verification(rt: Runtime, *, email: str) -> None:
    """Mail a fresh link to an unverified account, after the answer: the caller learns nothing.

    The request only looks the address up (one indexed read, found or not alike) and, for an
    unverified account, queues the rest: the mail limit, the token and the mail, whose writes and
    whose wait for the mail server would otherwise show in the answer's timing (an account oracle).
    One job per address waits at a time, so a flood of resends for one address cannot fill the
    queue that real verification and invitation mail shares.
    """
    address = normalize_email(email)
    async with rt.db.read() as session:
        pending = await session.scalar(select(User.id).where(User.email == address, User.email_verified_at.is_(None)))
    if pending is not None:
        job = functools.partial(_resend_verification, rt, address)
        rt.background.put(job, what="resend-verification", once=f"resend:{address}")


async def _resend_verification(rt: Runtime, email: str) -> None:
    async with rt.db.uow() as uow:
        user = await uow.session.scalar(select(User).where(User.email == email))
        if user is None or user.email_verified_at is not None:
            return
        if not await take_mail_slot(uow, secret=rt.secret, email=user.email, now=rt.clock.now()):
            return
        _send_verification(uow, rt, user)


async def verify_email(rt: Runtime, *, token: str) -> User:
    now = rt.clock.now()
    async with rt.db.uow() as uow:
        row = await uow.session.scalar(
            select(EmailToken).where(EmailToken.token_hash == hash_token(token), EmailToken.purpose == VERIFY_EMAIL)
        )
        if row is None:
            raise bad_field("token", "This verification link is not valid")
        if row.used_at is not None:
            raise BadRequest(
                "token: This verification link has already been used, or a newer one replaced it",
                code="token_used",
                field="token",
            )
        if row.expires_at <= now:
            raise BadRequest("token: This verification link has expired", code="token_expired", field="token")
        # Guarded so two concurrent clicks consume it once.
        consumed = await uow.session.execute(
            update(EmailToken).where(EmailToken.id == row.id, EmailToken.used_at.is_(None)).values(used_at=now)
        )
        if consumed.rowcount != 1:  # type: ignore[attr-defined]
            raise BadRequest(
                "token: This verification link has already been used, or a newer one replaced it",
                code="token_used",
                field="token",
            )
        user = await uow.session.get_one(User, row.user_id)
        if user.email != row.email:
            raise BadRequest("token: This link was sent to an address you no longer use", code="token_stale")
        if user.email_verified_at is None:
            user.email_verified_at = now
            user.updated_at = now
            audit.record(
                uow,
                actor=Actor(user_id=user.id),
                clock=rt.clock,
                action="user.verify_email",
                target_type="user",
                target_id=user.id,
                after={"email_verified": True},
            )
    return user


async def log_in(rt: Runtime, *, email: str, password: str, previous_token: str | None = None) -> tuple[User, str]:
    """Check the password and open a new session (the previous one, if any, is revoked: rotation)."""
    email = normalize_email(email)
    email_hash = hash_token(email)
    now = rt.clock.now()
    async with rt.db.read() as session:
        failure = await session.get(LoginFailure, email_hash)
        user = await session.scalar(select(User).where(User.email == email))
    if failure is not None and failure.failures >= rt.settings.login_free_failures:
        delay = min(2 ** (failure.failures - rt.settings.login_free_failures), MAX_LOGIN_DELAY_SECONDS)
        wait = (failure.last_failure_at + timedelta(seconds=delay) - now).total_seconds()
        if wait > 0:
            raise RateLimited(
                "Too many failed sign-in attempts; try again later",
                code="login_throttled",
                retry_after=int(wait) + 1,
            )
    ok = await rt.passwords.verify(user.password_hash if user else None, password)
    async with rt.db.uow() as uow:
        if not ok or user is None:
            await _note_failure(uow, email_hash, now)
            audit.record(
                uow,
                actor=Actor(user_id=user.id) if user else None,
                clock=rt.clock,
                action="user.login_failed",
                target_type="user",
                target_id=user.id if user else None,
            )
        else:
            await uow.session.execute(delete(LoginFailure).where(LoginFailure.email_hash == email_hash))
            if previous_token:
                await _revoke(uow, previous_token, now)
            token = await _open_session(uow, rt, user.id, now)
    if not ok or user is None:
        raise Unauthorized("Invalid email or password", code="invalid_credentials")
    return user, token


async def _note_failure(uow: UnitOfWork, email_hash: str, now: datetime) -> None:
    table: Any = LoginFailure.__table__
    statement = insert_for(uow.dialect, table).values(email_hash=email_hash, failures=1, last_failure_at=now)
    statement = statement.on_conflict_do_update(
        index_elements=[table.c.email_hash],
        set_={"failures": table.c.failures + 1, "last_failure_at": now},
    )
    await uow.session.execute(statement)


async def _open_session(uow: UnitOfWork, rt: Runtime, user_id: str, now: datetime) -> str:
    token = new_token()
    uow.session.add(
        WebSession(
            id=new_id("sess"),
            token_hash=hash_token(token),
            user_id=user_id,
            organization_id=None,
            created_at=now,
            expires_at=now + timedelta(hours=rt.settings.session_ttl_hours),
            last_seen_at=now,
        )
    )
    return token


async def _revoke(uow: UnitOfWork, token: str, now: datetime) -> None:
    await uow.session.execute(
        update(WebSession)
        .where(WebSession.token_hash == hash_token(token), WebSession.revoked_at.is_(None))
        .values(revoked_at=now)
    )


async def revoke_sessions(uow: UnitOfWork, *, user_id: str, now: datetime) -> int:
    """End every live session of a person, in the caller's transaction (they must sign in again).

    Used when the person's privileges change (TESTPLAN D33): a session token captured before the
    change must not carry the new role; and when their password is reset. Sessions are bearer tokens
    handed out only by a sign-in response, so another person's session cannot be reissued, only
    ended. Returns how many it ended.
    """
    ended = await uow.session.execute(
        update(WebSession)
        # An expired session is over already: left alone, so the count is of sessions that worked.
        .where(WebSession.user_id == user_id, WebSession.revoked_at.is_(None), WebSession.expires_at > now)
        .values(revoked_at=now)
        .execution_options(synchronize_session=False)
    )
    return int(ended.rowcount)  # type: ignore[attr-defined]


async def log_out(rt: Runtime, *, token: str) -> None:
    async with rt.db.uow() as uow:
        await _revoke(uow, token, rt.clock.now())


async def resolve_session(rt: Runtime, token: str) -> SessionAuth | None:
    """The acting person for a session cookie, or None when it is unknown, expired or revoked.

    The context org is honoured only while the person is still a member; otherwise they act in
    personal context (a removed member loses the org at once).
    """
    now = rt.clock.now()
    async with rt.db.read() as session:
        row = (
            await session.execute(
                select(WebSession, User, Membership.role)
                .join(User, User.id == WebSession.user_id)
                .outerjoin(
                    Membership,
                    (Membership.user_id == WebSession.user_id)
                    & (Membership.organization_id == WebSession.organization_id),
                )
                .where(WebSession.token_hash == hash_token(token))
            )
        ).first()
    if row is None:
        return None
    web_session, user, role = row
    if web_session.revoked_at is not None or web_session.expires_at <= now:
        return None
    organization_id = web_session.organization_id if role is not None else None
    actor = Actor(
        user_id=user.id,
        is_staff=user.is_staff,
        email_verified=user.email_verified_at is not None,
        organization_id=organization_id,
        role=Role(role) if role is not None else None,
        session_id=web_session.id,
    )
    return SessionAuth(session_id=web_session.id, actor=actor)


async def set_context(rt: Runtime, *, actor: Actor, organization_id: str | None) -> Actor:
    """The organization switcher. Only orgs the person belongs to; another org reads as not found."""
    if actor.session_id is None:
        raise BadRequest(
            "The context belongs to a dashboard session; a key's context is fixed",
            code="no_session",
        )
    role: str | None = None
    async with rt.db.uow() as uow:
        if organization_id is not None:
            role = await uow.session.scalar(
                select(Membership.role).where(
                    Membership.organization_id == organization_id,
                    Membership.user_id == actor.user_id,
                )
            )
            if role is None:
                raise NotFound("Organization not found", code="organization_not_found")
        await uow.session.execute(
            update(WebSession).where(WebSession.id == actor.session_id).values(organization_id=organization_id)
        )
    return Actor(
        user_id=actor.user_id,
        is_staff=actor.is_staff,
        email_verified=actor.email_verified,
        organization_id=organization_id,
        role=Role(role) if role else None,
        session_id=actor.session_id,
    )


async def me(rt: Runtime, *, actor: Actor) -> dict[str, Any]:
    async with rt.db.read() as session:
        user = await session.get_one(User, actor.user_id)
        rows = (
            await session.execute(
                select(Membership.organization_id, Organization.name, Membership.role)
                .join(Organization, Organization.id == Membership.organization_id)
                .where(Membership.user_id == actor.user_id)
                .order_by(Organization.name, Organization.id)
            )
        ).all()
    return {
        "user": user_public(user),
        "context": {"organization_id": actor.organization_id},
        "memberships": [{"organization_id": org_id, "name": name, "role": role} for org_id, name, role in rows],
    }
