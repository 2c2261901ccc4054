"""Key verbs: create, list, get, update and delete keys in the actor's context.

Keys belong to a context (an org, or a person's personal account) and bill that context's credit
account. Authorization happens where keys are fetched: `_visible` scopes every query to the actor's
context and, without `keys:manage_all`, to the keys the actor created; anything else is not found.
The plaintext of a key exists only inside `create_key` and its return value.

*Admin-managed keys*: once an org admin other than the creator sets a key's `disabled`, `limit` or
`limit_reset` (creating a key for someone else with a limit counts), or the key is disabled at its
creator's exit or demotion (see `orgs.members`), the key is admin-managed. Its creator, unless an
admin, may still rename, disable or delete it and lower its limit, but may not re-enable it, raise or
remove its limit or change `limit_reset` (403): otherwise a member could undo the admin's decision and
bill the org pool again. It stays so until an org admin other than the creator hands it back
(`admin_managed: false`, see `_check_hand_back`).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from enum import Enum
from typing import Any

from sqlalchemy import Select, or_, select
from sqlalchemy.exc import IntegrityError

from teamrouter.domain import names
from teamrouter.domain.actor import Actor
from teamrouter.domain.audit import service as audit
from teamrouter.domain.credits.models import CreditAccount
from teamrouter.domain.credits.windows import LIMIT_RESETS
from teamrouter.domain.keys.cache import invalidate_after_commit
from teamrouter.domain.keys.models import ApiKey
from teamrouter.domain.keys.schemas import NAME_MAX
from teamrouter.domain.orgs.models import Membership
from teamrouter.domain.roles import Role, Scope
from teamrouter.errors import BadRequest, Forbidden, NotFound, bad_field
from teamrouter.ids import hash_token, key_label, new_api_key, new_id
from teamrouter.instants import utc_instant
from teamrouter.money import MAX_AMOUNT_USD, AmountError, to_usd_str, usd_to_units
from teamrouter.runtime import Runtime
from teamrouter.storage.db import UnitOfWork
from teamrouter.storage.upsert import insert_for

PAGE_SIZE = 100


class _Unset(Enum):
    UNSET = "unset"


UNSET = _Unset.UNSET


@dataclass(frozen=True)
class CreatedKey:
    """A new key and its plaintext: shown to the caller once, never stored."""

    key: ApiKey
    plaintext: str


# ---------------------------------------------------------------- validation


def _clean_name(name: str | None) -> str:
    if name is None:
        raise bad_field("name", "must be a string")
    cleaned = names.clean_name("name", name)
    if len(cleaned) > NAME_MAX:
        raise bad_field("name", f"must be at most {NAME_MAX} characters")
    return cleaned


def _limit_units(limit: Decimal | None) -> int | None:
    if limit is None:
        return None
    # NaN would raise InvalidOperation in the comparisons below, infinity pass the lower bound.
    if not limit.is_finite():
        raise bad_field("limit", "must be a finite number (USD)")
    # Range first: a huge exponent must not reach Decimal arithmetic (it would overflow there).
    if limit < 0:
        raise bad_field("limit", "must be 0 or more (USD)")
    if limit > MAX_AMOUNT_USD:
        raise bad_field("limit", f"must be at most {MAX_AMOUNT_USD} USD")
    try:
        return usd_to_units(limit)
    except AmountError as exc:
        raise bad_field("limit", str(exc)) from exc


def _limit_reset(value: str | None) -> str | None:
    if value is not None and value not in LIMIT_RESETS:
        raise bad_field("limit_reset", "must be daily, weekly, monthly or null")
    return value


def _expires_at(value: datetime | None, now: datetime) -> datetime | None:
    if value is None:
        return None
    value = utc_instant("expires_at", value)
    if value <= now:
        raise bad_field("expires_at", "must be in the future")
    return value


def _public_fields(key: ApiKey) -> dict[str, Any]:
    """What an audit row may say about a key (no secret: the hash is the key's public id)."""
    return {
        "name": key.name,
        "label": key.label,
        "disabled": key.disabled,
        "limit": None if key.spend_limit is None else to_usd_str(key.spend_limit),
        "limit_reset": key.limit_reset,
        "expires_at": key.expires_at.isoformat() if key.expires_at else None,
        "management": key.management,
        "creator_user_id": key.creator_user_id,
        "admin_managed": key.admin_managed,
    }


# ---------------------------------------------------------------- scoping


def _visible(actor: Actor) -> Select[ApiKey]:
    """Keys the actor may see and manage: the context's keys, and only their own without manage_all."""
    if actor.can(Scope.KEYS_MANAGE_ALL):
        own_only = False
    elif actor.can(Scope.KEYS_MANAGE_OWN):
        own_only = True
    else:
        raise Forbidden("Your role does not allow managing keys", code="missing_scope")
    query = select(ApiKey).where(ApiKey.deleted_at.is_(None))
    if actor.organization_id is None:
        query = query.where(ApiKey.organization_id.is_(None), ApiKey.creator_user_id == actor.user_id)
    else:
        query = query.where(ApiKey.organization_id == actor.organization_id)
        if own_only:
            query = query.where(ApiKey.creator_user_id == actor.user_id)
    return query


def _not_found() -> NotFound:
    return NotFound("Key not found", code="key_not_found")


# The columns an admin's decision covers (update_key's names for `disabled`, `limit`, `limit_reset`).
ADMIN_MANAGED_FIELDS = frozenset({"disabled", "spend_limit", "limit_reset"})


def _takes_over(actor: Actor, key: ApiKey, changes: dict[str, Any]) -> bool:
    """An org admin setting the status or limit of someone else's key: it becomes admin-managed."""
    return (
        actor.organization_id is not None
        and actor.can(Scope.KEYS_MANAGE_ALL)
        and key.creator_user_id != actor.user_id
        and not ADMIN_MANAGED_FIELDS.isdisjoint(changes)
    )


def _check_admin_managed(actor: Actor, key: ApiKey, changes: dict[str, Any]) -> None:
    """On an admin-managed key, a non-admin may only make the key stricter (or rename it)."""
    if not key.admin_managed or actor.can(Scope.KEYS_MANAGE_ALL):
        return
    refused: str | None = None
    if changes.get("disabled") is False and key.disabled:
        refused = "disabled"
    elif "spend_limit" in changes and key.spend_limit is not None:
        new_limit = changes["spend_limit"]
        if new_limit is None or new_limit > key.spend_limit:
            refused = "limit"
    if refused is None and "limit_reset" in changes and changes["limit_reset"] != key.limit_reset:
        refused = "limit_reset"
    if refused is not None:
        raise Forbidden(
            f"{refused}: an organization admin manages this key's status and limit; you may rename it, "
            "disable it or lower its limit, and an admin can change the rest",
            code="key_admin_managed",
            field=refused,
        )


def _check_hand_back(actor: Actor, key: ApiKey) -> None:
    """`admin_managed: false` undoes a take-over, so only who may take over may send it: an org admin
    other than the key's creator (a session, or a management key acting as one, as for every other
    admin-only key action). Anyone else is refused, the creator included: a key is not handed back to
    oneself, and in personal context there is no admin to hand it back from."""
    if actor.organization_id is None or not actor.can(Scope.KEYS_MANAGE_ALL):
        raise Forbidden(
            "admin_managed: only an organization admin can hand a key back to its creator",
            code="field_forbidden",
            field="admin_managed",
        )
    if key.creator_user_id == actor.user_id:
        raise Forbidden(
            "admin_managed: you created this key; another admin of the organization can hand it back to you",
            code="field_forbidden",
            field="admin_managed",
        )


async def _load_for_update(uow: UnitOfWork, actor: Actor, key_hash: str) -> ApiKey:
    key = await uow.session.scalar(_visible(actor).where(ApiKey.hash == key_hash).with_for_update())
    if key is None:
        raise _not_found()
    return key


async def _context_account(uow: UnitOfWork, actor: Actor, now: datetime) -> str:
    """The credit account of the actor's context, created if the context has none yet."""
    if actor.organization_id is None:
        owner = CreditAccount.user_id == actor.user_id
        values: dict[str, Any] = {"user_id": actor.user_id}
    else:
        owner = CreditAccount.organization_id == actor.organization_id
        values = {"organization_id": actor.organization_id}
    account_id = await uow.session.scalar(select(CreditAccount.id).where(owner))
    if account_id is not None:
        return account_id
    # Accounts are normally made with the person or org; this only covers a missing one, race-free.
    table: Any = CreditAccount.__table__
    await uow.session.execute(
        insert_for(uow.dialect, table)
        .values(id=new_id("acct"), balance=0, held=0, created_at=now, updated_at=now, **values)
        .on_conflict_do_nothing()
    )
    found = await uow.session.scalar(select(CreditAccount.id).where(owner))
    assert found is not None
    return found


# ---------------------------------------------------------------- verbs


async def create_key(
    rt: Runtime,
    *,
    actor: Actor,
    name: str,
    limit: Decimal | None = None,
    limit_reset: str | None = None,
    expires_at: datetime | None = None,
    management: bool = False,
    creator_user_id: str | None = None,
) -> CreatedKey:
    """Create a key in the actor's context. `limit` is USD; `creator_user_id` is for admins."""
    actor.require(Scope.KEYS_CREATE)
    now = rt.clock.now()
    clean_name = _clean_name(name)
    spend_limit = _limit_units(limit)
    reset = _limit_reset(limit_reset)
    expiry = _expires_at(expires_at, now)
    if management:
        actor.require(Scope.KEYS_CREATE_MANAGEMENT, "management: only organization admins can create management keys")
    creator = actor.user_id
    if creator_user_id is not None and creator_user_id != actor.user_id:
        if actor.organization_id is None:
            raise bad_field("creator_user_id", "personal keys are always your own; omit this field")
        if not actor.can(Scope.KEYS_MANAGE_ALL):
            raise Forbidden(
                "creator_user_id: only organization admins can create a key for another member",
                code="field_forbidden",
                field="creator_user_id",
            )
        creator = creator_user_id

    plaintext = new_api_key()
    async with rt.db.uow() as uow:
        if creator != actor.user_id:
            role = await uow.session.scalar(
                select(Membership.role).where(
                    Membership.organization_id == actor.organization_id, Membership.user_id == creator
                )
            )
            if role is None:
                raise bad_field("creator_user_id", "is not a member of this organization")
            owner = Actor(user_id=creator, organization_id=actor.organization_id, role=Role(role))
            if management and not owner.can(Scope.KEYS_CREATE_MANAGEMENT):
                raise bad_field("creator_user_id", "a management key acts as its creator, who must be an admin")
        key = ApiKey(
            id=new_id("key"),
            hash=hash_token(plaintext),
            label=key_label(plaintext),
            name=clean_name,
            organization_id=actor.organization_id,
            account_id=await _context_account(uow, actor, now),
            creator_user_id=creator,
            management=management,
            disabled=False,
            # A limit an admin sets on a key made for someone else is the admin's decision, as it would
            # be set by a later PATCH (`_takes_over`): its creator may not lift it.
            admin_managed=creator != actor.user_id and (spend_limit is not None or reset is not None),
            spend_limit=spend_limit,
            limit_reset=reset,
            expires_at=expiry,
            created_at=now,
            updated_at=now,
            usage=0,
            usage_day=0,
            usage_week=0,
            usage_month=0,
            held=0,
        )
        uow.session.add(key)
        try:
            await uow.session.flush()
        except IntegrityError as exc:  # only a vanished creator or org can get here
            raise BadRequest("The key's context no longer exists", code="context_gone") from exc
        audit.record(
            uow,
            actor=actor,
            clock=rt.clock,
            action="api_key.create",
            target_type="api_key",
            target_id=key.id,
            after=_public_fields(key),
        )
    return CreatedKey(key=key, plaintext=plaintext)


async def list_keys(
    rt: Runtime,
    *,
    actor: Actor,
    include_disabled: bool = False,
    include_expired: bool = False,
    offset: int = 0,
    limit: int = PAGE_SIZE,
) -> list[ApiKey]:
    """The actor's visible keys, newest first."""
    query = _visible(actor)
    if not include_disabled:
        query = query.where(ApiKey.disabled.is_(False))
    if not include_expired:
        query = query.where(or_(ApiKey.expires_at.is_(None), ApiKey.expires_at > rt.clock.now()))
    query = query.order_by(ApiKey.created_at.desc(), ApiKey.id.desc()).offset(offset).limit(limit)
    async with rt.db.read() as session:
        return list((await session.scalars(query)).all())


async def get_key(rt: Runtime, *, actor: Actor, key_hash: str) -> ApiKey:
    async with rt.db.read() as session:
        key = await session.scalar(_visible(actor).where(ApiKey.hash == key_hash))
    if key is None:
        raise _not_found()
    return key


async def update_key(
    rt: Runtime,
    *,
    actor: Actor,
    key_hash: str,
    name: str | _Unset | None = UNSET,
    disabled: bool | _Unset | None = UNSET,
    limit: Decimal | _Unset | None = UNSET,
    limit_reset: str | _Unset | None = UNSET,
    admin_managed: bool | _Unset | None = UNSET,
    no_op_fields_sent: bool = False,
) -> ApiKey:
    """Change the given fields only; `limit=None` removes the limit; `admin_managed=False` hands an
    admin-managed key back to its creator (org admins only), and wins over a take-over in the same
    call: the limit then set is one the creator may change.

    `no_op_fields_sent`: the caller sent fields that mean nothing here (the SDK's
    `include_byok_in_limit`, `workspace_id`: no BYOK, one workspace). Sent alone they are no
    mistake (`api_keys.update(include_byok_in_limit=…)`): the key is answered as it is, to whoever
    may see it."""
    hand_back = admin_managed is not UNSET
    if hand_back and admin_managed is not False:
        raise bad_field(
            "admin_managed",
            "can only be false (hand the key back to its creator); a key becomes admin-managed when an "
            "admin sets its disabled, limit or limit_reset",
        )
    changes: dict[str, Any] = {}
    if name is not UNSET:
        changes["name"] = _clean_name(name)
    if disabled is not UNSET:
        if disabled is None:
            raise bad_field("disabled", "must be true or false")
        changes["disabled"] = disabled
    if limit is not UNSET:
        changes["spend_limit"] = _limit_units(limit)
    if limit_reset is not UNSET:
        changes["limit_reset"] = _limit_reset(limit_reset)
    if not changes and not hand_back:
        if no_op_fields_sent:
            return await get_key(rt, actor=actor, key_hash=key_hash)
        raise BadRequest("No update fields provided", code="no_update_fields")

    now = rt.clock.now()
    async with rt.db.uow() as uow:
        key = await _load_for_update(uow, actor, key_hash)
        if hand_back:
            _check_hand_back(actor, key)
        _check_admin_managed(actor, key, changes)
        before = _public_fields(key)
        for field, value in changes.items():
            setattr(key, field, value)
        if hand_back:
            key.admin_managed = False
        elif _takes_over(actor, key, changes):
            key.admin_managed = True
        after = _public_fields(key)
        changed = {k for k in after if after[k] != before[k]}
        if not changed:
            return key
        key.updated_at = now
        if "disabled" in changed:
            audit.record(
                uow,
                actor=actor,
                clock=rt.clock,
                action="api_key.disable" if key.disabled else "api_key.enable",
                target_type="api_key",
                target_id=key.id,
                organization_id=key.organization_id,
                before={"disabled": before["disabled"]},
                after={"disabled": after["disabled"]},
            )
        other = sorted(changed - {"disabled"})
        if other:
            audit.record(
                uow,
                actor=actor,
                clock=rt.clock,
                action="api_key.update",
                target_type="api_key",
                target_id=key.id,
                organization_id=key.organization_id,
                before={k: before[k] for k in other},
                after={k: after[k] for k in other},
            )
        uow.on_commit(invalidate_after_commit(rt, key.hash))
    return key


async def delete_key(rt: Runtime, *, actor: Actor, key_hash: str) -> None:
    """Soft delete: the row stays so activity can name the key; it never authenticates again."""
    now = rt.clock.now()
    async with rt.db.uow() as uow:
        key = await _load_for_update(uow, actor, key_hash)
        before = _public_fields(key)
        key.deleted_at = now
        key.disabled = True
        key.updated_at = now
        audit.record(
            uow,
            actor=actor,
            clock=rt.clock,
            action="api_key.delete",
            target_type="api_key",
            target_id=key.id,
            organization_id=key.organization_id,
            before=before,
        )
        uow.on_commit(invalidate_after_commit(rt, key.hash))
