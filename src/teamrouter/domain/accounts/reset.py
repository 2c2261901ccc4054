"""The operator's password reset (`teamrouter users set-password`): there is no self-service one, and
the sign-up notice mail sends people who forgot their password to the operators."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import delete, select, update

from teamrouter.domain.accounts.models import LoginFailure, User
from teamrouter.domain.accounts.passwords import password_problem
from teamrouter.domain.accounts.service import normalize_email, revoke_sessions
from teamrouter.domain.actor import Actor
from teamrouter.domain.audit import service as audit
from teamrouter.domain.keys.cache import invalidate_after_commit
from teamrouter.domain.keys.models import ApiKey
from teamrouter.domain.mail.outbox import mail_after_commit
from teamrouter.domain.names import shown_name
from teamrouter.errors import Forbidden, NotFound, bad_field
from teamrouter.ids import hash_token
from teamrouter.runtime import Runtime
from teamrouter.storage.db import UnitOfWork


@dataclass(frozen=True)
class PasswordSet:
    """What `set_password` did, for the operator to read."""

    email: str
    sessions_ended: int
    verified_now: bool
    keys_disabled: int  # with `disable_keys`
    keys_working: int  # the person's keys still enabled afterwards


async def set_password(
    rt: Runtime,
    *,
    actor: Actor | None,
    email: str,
    password: str,
    verified: bool = False,
    disable_keys: bool = False,
) -> PasswordSet:
    """Give a person a new password. Staff only.

    `actor=None` is the operator on the host, trusted like staff and audited with no acting user.
    Sign-up's password rules apply. A reset is asked for when the account may be in other hands, so
    every session of the person ends, and the address's failed sign-ins are forgotten so that the
    new password works at once. `verified` also confirms the address, as `users create --verified`.
    `disable_keys` disables every API key the person created (personal and in organizations): whoever
    had the password may have made keys, and a management key acts as the person. They stay theirs
    to re-enable once they are back in.
    """
    if actor is not None and not actor.is_staff:
        raise Forbidden("Only deployment staff can set a person's password", code="staff_only")
    email = normalize_email(email)
    problem = password_problem(password, email=email)
    if problem:
        raise bad_field("password", f"Password {problem}")
    password_hash = await rt.passwords.hash(password)  # before the transaction: no lock held meanwhile
    now = rt.clock.now()
    async with rt.db.uow() as uow:
        user = await uow.session.scalar(select(User).where(User.email == email))
        if user is None:
            raise NotFound(f"No account with email {email}", code="user_not_found")
        was_verified = user.email_verified_at is not None
        user.password_hash = password_hash
        user.updated_at = now
        if verified and not was_verified:
            user.email_verified_at = now
        ended = await revoke_sessions(uow, user_id=user.id, now=now)
        await uow.session.execute(delete(LoginFailure).where(LoginFailure.email_hash == hash_token(email)))
        keys = list(
            await uow.session.scalars(
                select(ApiKey).where(
                    ApiKey.creator_user_id == user.id, ApiKey.disabled.is_(False), ApiKey.deleted_at.is_(None)
                )
            )
        )
        disabled = await _disable(uow, rt, actor, keys) if disable_keys else 0
        _mail_password_changed(uow, rt, user, sessions_ended=ended, keys_disabled=disabled)
        audit.record(
            uow,
            actor=actor,
            clock=rt.clock,
            action="user.password_set",
            target_type="user",
            target_id=user.id,
            before={"email_verified": was_verified},
            after={
                "email_verified": user.email_verified_at is not None,
                "sessions_ended": ended,
                "keys_disabled": disabled,
            },
        )
    return PasswordSet(
        email=email,
        sessions_ended=ended,
        verified_now=verified and not was_verified,
        keys_disabled=disabled,
        keys_working=len(keys) - disabled,
    )


async def _disable(uow: UnitOfWork, rt: Runtime, actor: Actor | None, keys: list[ApiKey]) -> int:
    if not keys:
        return 0
    await uow.session.execute(
        update(ApiKey)
        .where(ApiKey.id.in_([key.id for key in keys]))
        .values(disabled=True, updated_at=rt.clock.now())
        .execution_options(synchronize_session=False)
    )
    for key in keys:
        uow.on_commit(invalidate_after_commit(rt, key.hash))  # the gateways' caches drop it at once
        audit.record(
            uow,
            actor=actor,
            clock=rt.clock,
            action="api_key.disable",
            target_type="api_key",
            target_id=key.id,
            organization_id=key.organization_id,
            before={"disabled": False, "name": key.name, "management": key.management},
            after={"disabled": True, "reason": "password reset"},
        )
    return len(keys)


def _mail_password_changed(
    uow: UnitOfWork, rt: Runtime, user: User, *, sessions_ended: int, keys_disabled: int
) -> None:
    """Tell the person, in the reset's transaction: a reset the person did not ask for (an operator
    talked into it by someone else) is then noticed by the one who can say so."""
    signed_out = "Every session of yours was signed out.\n" if sessions_ended else ""
    keys = (
        f"Your {keys_disabled} API key{'' if keys_disabled == 1 else 's'} {'was' if keys_disabled == 1 else 'were'}"
        " disabled: once signed in, re-enable the ones that are yours.\n"
        if keys_disabled
        else ""
    )
    body = (
        f"Hello{(' ' + shown_name(user.name)) if user.name else ''},\n\n"
        "The people who run this teamrouter deployment have set a new password for your account.\n"
        f"{signed_out}{keys}\n"
        f"If you asked them to, sign in with the new password ({rt.settings.public_url}).\n"
        "If you did not, tell them at once: someone else may have asked in your name.\n"
    )
    subject = "Your teamrouter password was changed"
    mail_after_commit(uow, rt, to=user.email, subject=subject, body=body, what="mail 'password changed'")
