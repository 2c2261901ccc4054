"""Whose activity an actor may read, and the filters every activity query shares.

One rule for the feed, `/activity`, analytics, the CSV export and `GET /generation`: rows are those
of the context's credit account (looked up from the actor, never taken from the client); admins (and
a person in personal context) see every row; members see every row when the org's
`activity_visibility` is `all`, otherwise only rows of keys they created. A filter naming a key or a
person the actor may not see reads as not found (404), like every foreign object.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypedDict

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute
from sqlalchemy.sql.elements import ColumnElement

from teamrouter.domain.activity.models import Generation, UsageRollup
from teamrouter.domain.actor import Actor
from teamrouter.domain.credits.models import CreditAccount
from teamrouter.domain.keys.models import ApiKey
from teamrouter.domain.orgs.models import Membership, Organization
from teamrouter.domain.orgs.settings import org_settings
from teamrouter.domain.roles import Scope
from teamrouter.errors import NotFound, bad_field

# A feed or export range, and the longest analytics range (hourly granularity has its own cap).
MAX_RANGE_DAYS = 366
NO_ACCOUNT = ""  # matches no row: a context without a credit account has no activity


@dataclass(frozen=True, slots=True)
class ActivityScope:
    """The rows an actor may read: one credit account, and possibly only one person's keys."""

    account_id: str
    organization_id: str | None
    only_user_id: str | None  # set when the actor sees only activity of keys they created


@dataclass(frozen=True, slots=True)
class ActivityFilters:
    """Validated filters. `key_id` is resolved from `api_key_hash` inside the scope."""

    key_id: str | None = None
    key_hash: str | None = None
    user_id: str | None = None
    model: str | None = None
    provider: str | None = None
    since: datetime | None = None
    until: datetime | None = None


def scoped_conditions(
    scope: ActivityScope,
    filters: ActivityFilters,
    *,
    table: type[Generation] | type[UsageRollup],
    key: tuple[InstrumentedAttribute[Any], str | None],
    at: InstrumentedAttribute[Any],
) -> list[ColumnElement[bool]]:
    """The WHERE of every activity query on `table` (generation rows or hourly rollups: both have
    `account_id`, `user_id`, `model` and `provider`): the scope first (the account, and the member's
    own rows when they may see only theirs), then the caller's filters. `key` is the table's key
    column with the filter value for it (activity rows hold the key's hash, rollups its id); `at`
    its time column."""
    where: list[ColumnElement[bool]] = [table.account_id == scope.account_id]
    if scope.only_user_id is not None:
        where.append(table.user_id == scope.only_user_id)
    pairs = (key, (table.user_id, filters.user_id), (table.model, filters.model), (table.provider, filters.provider))
    for column, value in pairs:
        if value is not None:
            where.append(column == value)
    if filters.since is not None:
        where.append(at >= filters.since)
    if filters.until is not None:
        where.append(at < filters.until)
    return where


async def resolve_scope(session: AsyncSession, actor: Actor) -> ActivityScope:
    actor.require(Scope.ACTIVITY_READ_OWN, "Your role does not allow reading activity")
    if actor.organization_id is None:
        owner = CreditAccount.user_id == actor.user_id
    else:
        owner = CreditAccount.organization_id == actor.organization_id
    account_id = await session.scalar(select(CreditAccount.id).where(owner))
    only: str | None = None
    if not actor.can(Scope.ACTIVITY_READ_ALL):
        org = await session.get(Organization, actor.organization_id) if actor.organization_id else None
        if org is None or org_settings(org).activity_visibility != "all":
            only = actor.user_id
    return ActivityScope(account_id=account_id or NO_ACCOUNT, organization_id=actor.organization_id, only_user_id=only)


def key_not_found() -> NotFound:
    return NotFound("Key not found", code="key_not_found")


def user_not_found() -> NotFound:
    return NotFound("User not found", code="user_not_found")


class FilterArgs(TypedDict, total=False):
    """The filters a caller names, as `resolve_filters` takes them (the feed and its export pass
    them through unchanged)."""

    api_key_hash: str | None
    user_id: str | None
    model: str | None
    provider: str | None
    since: datetime | None
    until: datetime | None


async def resolve_filters(
    session: AsyncSession,
    scope: ActivityScope,
    *,
    api_key_hash: str | None = None,
    user_id: str | None = None,
    model: str | None = None,
    provider: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> ActivityFilters:
    """Check that the named key and person are visible in the scope (404 otherwise)."""
    key_id: str | None = None
    if api_key_hash is not None:
        key_id = (await visible_key_ids(session, scope, {api_key_hash}))[api_key_hash]
    if user_id is not None:
        await check_user_visible(session, scope, user_id)
    return ActivityFilters(
        key_id=key_id,
        key_hash=api_key_hash,
        user_id=user_id,
        model=model,
        provider=provider,
        since=since,
        until=until,
    )


async def visible_key_ids(session: AsyncSession, scope: ActivityScope, hashes: set[str]) -> dict[str, str]:
    """Hash → id of each named key, in one query; if any is not visible in the scope, 404."""
    # Deleted keys still count: their activity stays on the record and can be filtered.
    found = await session.execute(
        select(ApiKey.hash, ApiKey.id, ApiKey.creator_user_id).where(
            ApiKey.hash.in_(hashes), ApiKey.account_id == scope.account_id
        )
    )
    ids = {key.hash: key.id for key in found if scope.only_user_id is None or key.creator_user_id == scope.only_user_id}
    if len(ids) != len(hashes):
        raise key_not_found()
    return ids


async def check_user_visible(session: AsyncSession, scope: ActivityScope, user_id: str) -> None:
    visible = (
        user_id == scope.only_user_id if scope.only_user_id is not None else await _in_scope(session, scope, user_id)
    )
    if not visible:
        raise user_not_found()


async def _in_scope(session: AsyncSession, scope: ActivityScope, user_id: str) -> bool:
    """A person whose activity the scope may hold: the owner of a personal account; in an org, a
    member, or a former member whose requests are still on the org's record. Anyone else is a 404,
    as an unknown key is (an empty page would not tell a typo from a quiet member)."""
    if scope.organization_id is None:
        owner = await session.scalar(select(CreditAccount.user_id).where(CreditAccount.id == scope.account_id))
        return owner == user_id
    member = await session.scalar(
        select(Membership.id).where(Membership.organization_id == scope.organization_id, Membership.user_id == user_id)
    )
    if member is not None:
        return True
    used = select(Generation.id).where(Generation.account_id == scope.account_id, Generation.user_id == user_id)
    return await session.scalar(used.limit(1)) is not None


def check_range(
    since: datetime | None,
    until: datetime | None,
    *,
    since_field: str = "since",
    until_field: str = "until",
    max_days: int = MAX_RANGE_DAYS,
) -> None:
    if since is None or until is None:
        return
    if until <= since:
        raise bad_field(until_field, f"must be later than {since_field}")
    if until - since > timedelta(days=max_days):
        raise bad_field(until_field, f"the range may span at most {max_days} days")
