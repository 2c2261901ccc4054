"""Resolve a presented API key: to an acting person (management keys) or to a KeyAuth (inference).

A key is looked up by its SHA-256 with one indexed read, and the stored hash is compared with the
computed one in constant time. Missing, unknown, disabled, deleted or expired keys are 401 with the
same code. Management keys act as their creator in the key's context, and only while the creator
still holds the scope to create management keys there (an admin demoted or removed: the key stops
working at once, which is why management authentication is never served from the cache).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from sqlalchemy import or_, select, update
from sqlalchemy.exc import SQLAlchemyError

from teamrouter.domain.accounts.models import User
from teamrouter.domain.actor import Actor
from teamrouter.domain.keys.cache import KeyAuth, KeyCache, key_cache
from teamrouter.domain.keys.models import ApiKey
from teamrouter.domain.orgs.models import Membership
from teamrouter.domain.roles import Role, Scope
from teamrouter.errors import Forbidden, Unauthorized
from teamrouter.ids import constant_time_equal, hash_token
from teamrouter.runtime import Runtime

__all__ = ["KeyAuth", "inference_key", "load_usable_key", "management_actor"]

log = logging.getLogger(__name__)

# last_used_at is bookkeeping: write it at most this often per key, so use stays cheap.
TOUCH_INTERVAL = timedelta(minutes=1)
NOT_MANAGEMENT = "Only management keys can perform this operation"


def _invalid(message: str = "Invalid API key") -> Unauthorized:
    return Unauthorized(message, code="invalid_key")


def _check_usable(*, disabled: bool, deleted: bool, expires_at: datetime | None, now: datetime) -> None:
    if deleted:
        raise _invalid()
    if disabled:
        raise _invalid("This API key is disabled")
    if expires_at is not None and expires_at <= now:
        raise _invalid("This API key has expired")


def snapshot(key: ApiKey) -> KeyAuth:
    return KeyAuth(
        key_id=key.id,
        hash=key.hash,
        account_id=key.account_id,
        organization_id=key.organization_id,
        creator_user_id=key.creator_user_id,
        management=key.management,
        disabled=key.disabled,
        deleted=key.deleted_at is not None,
        spend_limit=key.spend_limit,
        limit_reset=key.limit_reset,
        expires_at=key.expires_at,
        last_used_at=key.last_used_at,
    )


async def load_usable_key(rt: Runtime, plaintext: str | None) -> ApiKey:
    """The key row for a presented key, fresh from the database (GET /key); 401 unless usable."""
    if not plaintext:
        raise _invalid("Missing API key")
    digest = hash_token(plaintext)
    async with rt.db.read() as session:
        key = await session.scalar(select(ApiKey).where(ApiKey.hash == digest))
    if key is None or not constant_time_equal(key.hash, digest):
        raise _invalid()
    _check_usable(
        disabled=key.disabled,
        deleted=key.deleted_at is not None,
        expires_at=key.expires_at,
        now=rt.clock.now(),
    )
    return key


async def inference_key(rt: Runtime, plaintext: str | None) -> KeyAuth:
    """The key for an inference request: cached, 401 unless usable, 403 for management keys."""
    if not plaintext:
        raise _invalid("Missing API key")
    digest = hash_token(plaintext)
    cache = key_cache(rt)

    async def load() -> KeyAuth | None:
        async with rt.db.read() as session:
            key = await session.scalar(select(ApiKey).where(ApiKey.hash == digest))
        return snapshot(key) if key is not None else None

    # A fresh entry needs no await (this runs on every inference request).
    auth = cache.get(digest) or await cache.get_or_load(digest, load)
    if auth is None or not constant_time_equal(auth.hash, digest):
        raise _invalid()
    now = rt.clock.now()
    _check_usable(disabled=auth.disabled, deleted=auth.deleted, expires_at=auth.expires_at, now=now)
    if auth.management:
        raise Forbidden("Management keys cannot be used for inference", code="management_key")
    if _touch_due(cache, key_hash=auth.hash, last_used_at=auth.last_used_at, now=now):
        await touch(rt, key_id=auth.key_id, key_hash=auth.hash, last_used_at=auth.last_used_at, now=now)
    return auth


async def management_actor(rt: Runtime, plaintext: str) -> Actor:
    """The person a management key acts as, in the key's context."""
    digest = hash_token(plaintext)
    async with rt.db.read() as session:
        row = (
            await session.execute(
                select(ApiKey, User, Membership.role)
                .join(User, User.id == ApiKey.creator_user_id)
                .outerjoin(
                    Membership,
                    (Membership.organization_id == ApiKey.organization_id)
                    & (Membership.user_id == ApiKey.creator_user_id),
                )
                .where(ApiKey.hash == digest)
            )
        ).first()
    if row is None:
        raise _invalid()
    key, user, role = row
    if not constant_time_equal(key.hash, digest):
        raise _invalid()
    now = rt.clock.now()
    _check_usable(disabled=key.disabled, deleted=key.deleted_at is not None, expires_at=key.expires_at, now=now)
    if not key.management:
        raise Forbidden(NOT_MANAGEMENT, code="not_management_key")
    actor = Actor(
        user_id=user.id,
        # Staff powers are personal: they are not delegated to keys.
        is_staff=False,
        email_verified=user.email_verified_at is not None,
        organization_id=key.organization_id,
        role=Role(role) if role is not None else None,
        key_id=key.id,
    )
    if key.organization_id is not None and not actor.can(Scope.KEYS_CREATE_MANAGEMENT):
        raise _invalid("This management key's creator is no longer an admin of its organization")
    await touch(rt, key_id=key.id, key_hash=key.hash, last_used_at=key.last_used_at, now=now)
    return actor


def _touch_due(cache: KeyCache, *, key_hash: str, last_used_at: datetime | None, now: datetime) -> bool:
    last = cache.last_touched(key_hash)
    if last_used_at is not None and (last is None or last_used_at > last):
        last = last_used_at
    return last is None or now - last >= TOUCH_INTERVAL


async def touch(rt: Runtime, *, key_id: str, key_hash: str, last_used_at: datetime | None, now: datetime) -> None:
    """Record use of a key, at most once per TOUCH_INTERVAL per key and process."""
    cache = key_cache(rt)
    if not _touch_due(cache, key_hash=key_hash, last_used_at=last_used_at, now=now):
        return
    # Noted before the write, so concurrent requests of this process do not all write.
    cache.note_touched(key_hash, now)
    try:
        async with rt.db.uow() as uow:
            # Guarded: another process may have written it a moment ago.
            await uow.session.execute(
                update(ApiKey)
                .where(
                    ApiKey.id == key_id,
                    or_(ApiKey.last_used_at.is_(None), ApiKey.last_used_at <= now - TOUCH_INTERVAL),
                )
                .values(last_used_at=now)
            )
    except SQLAlchemyError:
        # Bookkeeping must not fail a request the key is entitled to make.
        log.warning("could not record last_used_at for key %s", key_id, exc_info=True)
