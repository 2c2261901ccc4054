"""The activity feed: generations newest first, keyset-paginated with an opaque cursor.

A cursor is base64url JSON of the last row's `(created_at, id)`; the next page is every row strictly
before it in `(created_at DESC, id DESC)` order, so pages never skip or repeat a row while new ones
arrive, and the export can walk a year of rows one page at a time. Rows carry metadata only: there
is no prompt or completion anywhere to show.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, NamedTuple, Unpack

from sqlalchemy import String, or_, select, type_coerce
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.sql.elements import ColumnElement

from teamrouter.clock import iso_utc as iso
from teamrouter.domain.accounts.models import User
from teamrouter.domain.activity.models import Generation
from teamrouter.domain.activity.scope import (
    ActivityFilters,
    ActivityScope,
    FilterArgs,
    resolve_filters,
    resolve_scope,
    scoped_conditions,
)
from teamrouter.domain.actor import Actor
from teamrouter.domain.keys.models import ApiKey
from teamrouter.errors import bad_field
from teamrouter.money import to_usd, to_usd_str
from teamrouter.runtime import Runtime

DEFAULT_LIMIT = 50
MAX_LIMIT = 200
EXPORT_PAGE = 2000


class GenRow(NamedTuple):
    """The generation columns the feed and the export show (metadata only)."""

    id: str
    created_at: datetime
    key_id: str
    key_hash: str
    user_id: str
    model: str
    provider: str
    endpoint_id: str
    tokens_prompt: int
    tokens_completion: int
    tokens_reasoning: int
    tokens_cached: int
    cost: int
    latency_ms: int
    generation_time_ms: int
    finish_reason: str | None
    streamed: bool
    cancelled: bool
    usage_estimated: bool
    external_user: str | None
    app_referer: str | None
    app_title: str | None


COLUMNS = tuple(getattr(Generation, name) for name in GenRow._fields)


def _select_columns(dialect: str) -> tuple[Any, ...]:
    # SQLite hands timestamps back as text that SQLAlchemy parses with a regex, which dominated
    # export time; fetch the text and parse it with the C `fromisoformat` instead (see _gen_row).
    if dialect != "sqlite":
        return COLUMNS
    return (COLUMNS[0], type_coerce(Generation.created_at, String).label("created_at"), *COLUMNS[2:])


def _gen_row(raw: Any) -> GenRow:
    at = raw[1]
    if isinstance(at, str):
        at = datetime.fromisoformat(at).replace(tzinfo=UTC)
    return GenRow(raw[0], at, *raw[2:])


@dataclass(frozen=True, slots=True)
class KeyInfo:
    hash: str
    name: str
    label: str


@dataclass(frozen=True, slots=True)
class UserInfo:
    id: str
    email: str | None
    name: str | None


@dataclass(frozen=True, slots=True)
class FeedRow:
    """One generation with the names the feed shows beside it."""

    row: GenRow
    key: KeyInfo
    user: UserInfo


@dataclass(frozen=True, slots=True)
class FeedPage:
    rows: list[FeedRow]
    next_cursor: str | None


# ---------------------------------------------------------------- cursor


def encode_cursor(created_at: datetime, generation_id: str) -> str:
    raw = json.dumps([created_at.astimezone(UTC).isoformat(), generation_id], separators=(",", ":"))
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    problem = bad_field("cursor", "is not a cursor this server issued (use next_cursor from the previous page)")
    if len(cursor) > 400:
        raise problem
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        when, generation_id = json.loads(raw)
        at = datetime.fromisoformat(when)
        if at.tzinfo is None or not isinstance(generation_id, str) or not generation_id:
            raise problem
        # Inside the try: a forged instant at the calendar's edge overflows on the way to UTC.
        return at.astimezone(UTC), generation_id
    except (ValueError, TypeError, OverflowError, binascii.Error, UnicodeDecodeError):
        raise problem from None


# ---------------------------------------------------------------- queries


def conditions(scope: ActivityScope, filters: ActivityFilters) -> list[ColumnElement[bool]]:
    return scoped_conditions(
        scope, filters, table=Generation, key=(Generation.key_hash, filters.key_hash), at=Generation.created_at
    )


async def _page(
    session: AsyncSession,
    scope: ActivityScope,
    filters: ActivityFilters,
    after: tuple[datetime, str] | None,
    limit: int,
) -> tuple[list[FeedRow], str | None]:
    where = conditions(scope, filters)
    if after is not None:
        at, last_id = after
        # The plain `created_at <= at` bound lets both databases seek the index instead of scanning it.
        where += [Generation.created_at <= at, or_(Generation.created_at < at, Generation.id < last_id)]
    statement = (
        select(*_select_columns(session.get_bind().dialect.name))
        .where(*where)
        .order_by(Generation.created_at.desc(), Generation.id.desc())
        .limit(limit + 1)
    )
    # Core execution on the session's connection: the ORM's row loading is pure overhead here.
    connection = await session.connection()
    rows = [_gen_row(raw) for raw in (await connection.execute(statement)).all()]
    more = len(rows) > limit
    rows = rows[:limit]
    keys, users = await _names(session, rows)
    page = [
        FeedRow(
            row=row,
            key=keys.get(row.key_id) or KeyInfo(hash=row.key_hash, name="", label=""),
            user=users.get(row.user_id) or UserInfo(id=row.user_id, email=None, name=None),
        )
        for row in rows
    ]
    cursor = encode_cursor(rows[-1].created_at, rows[-1].id) if more and rows else None
    return page, cursor


async def _names(session: AsyncSession, rows: Sequence[GenRow]) -> tuple[dict[str, KeyInfo], dict[str, UserInfo]]:
    key_ids = {row.key_id for row in rows}
    user_ids = {row.user_id for row in rows}
    keys: dict[str, KeyInfo] = {}
    users: dict[str, UserInfo] = {}
    if key_ids:
        found = await session.execute(
            select(ApiKey.id, ApiKey.hash, ApiKey.name, ApiKey.label).where(ApiKey.id.in_(key_ids))
        )
        keys = {k.id: KeyInfo(hash=k.hash, name=k.name, label=k.label) for k in found}
    if user_ids:
        found_users = await session.execute(select(User.id, User.email, User.name).where(User.id.in_(user_ids)))
        users = {u.id: UserInfo(id=u.id, email=u.email, name=u.name) for u in found_users}
    return keys, users


async def list_generations(
    rt: Runtime,
    *,
    actor: Actor,
    cursor: str | None = None,
    limit: int = DEFAULT_LIMIT,
    **named: Unpack[FilterArgs],
) -> FeedPage:
    """One page of the feed the actor may see, newest first."""
    if not 1 <= limit <= MAX_LIMIT:
        raise bad_field("limit", f"must be between 1 and {MAX_LIMIT}")
    after = decode_cursor(cursor) if cursor is not None else None
    async with rt.db.read() as session:
        scope = await resolve_scope(session, actor)
        filters = await resolve_filters(session, scope, **named)
        rows, next_cursor = await _page(session, scope, filters, after, limit)
    return FeedPage(rows=rows, next_cursor=next_cursor)


async def open_export(
    rt: Runtime,
    *,
    actor: Actor,
    **named: Unpack[FilterArgs],
) -> tuple[ActivityScope, ActivityFilters]:
    """Check access and filters up front, so a refusal is a proper error, not a broken download."""
    async with rt.db.read() as session:
        scope = await resolve_scope(session, actor)
        filters = await resolve_filters(session, scope, **named)
    return scope, filters


async def iter_pages(
    rt: Runtime, scope: ActivityScope, filters: ActivityFilters, *, page_size: int | None = None
) -> AsyncIterator[list[FeedRow]]:
    """Every matching row, one keyset page at a time (one short read transaction per page)."""
    page_size = page_size or EXPORT_PAGE
    after: tuple[datetime, str] | None = None
    while True:
        async with rt.db.read() as session:
            rows, cursor = await _page(session, scope, filters, after, page_size)
        if rows:
            yield rows
        if cursor is None:
            return
        last = rows[-1].row
        after = (last.created_at, last.id)


# ---------------------------------------------------------------- shape


def feed_public(item: FeedRow, provider_name: str) -> dict[str, Any]:
    """`provider` is the slug the row stores (what filters and `endpoint_id` use); `provider_name`
    the provider's display name, as `/activity` and `/generation` show it."""
    row = item.row
    person = {"id": item.user.id, "email": item.user.email, "name": item.user.name}
    return {
        "id": row.id,
        "created_at": iso(row.created_at),
        "model": row.model,
        "provider": row.provider,
        "provider_name": provider_name,
        "endpoint_id": row.endpoint_id,
        "tokens": {
            "prompt": row.tokens_prompt,
            "completion": row.tokens_completion,
            "reasoning": row.tokens_reasoning,
            "cached": row.tokens_cached,
        },
        "cost": to_usd(row.cost),
        "cost_usd": to_usd_str(row.cost),
        "latency": row.latency_ms,
        "generation_time": row.generation_time_ms,
        "finish_reason": row.finish_reason,
        "streamed": row.streamed,
        "cancelled": row.cancelled,
        "usage_estimated": row.usage_estimated,
        "key": {"hash": item.key.hash, "name": item.key.name, "label": item.key.label},
        # Keys act for their creator: the person who made the key is the one who made the request.
        "key_creator": person,
        "requester": person,
        "external_user": row.external_user,
        "app": {"title": row.app_title, "referer": row.app_referer},
    }
