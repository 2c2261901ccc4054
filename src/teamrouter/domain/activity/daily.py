"""OpenRouter's `GET /activity`: per UTC day × model × endpoint, over the last 30 UTC days, today
included (API.md). OpenRouter lists completed days only; here today's traffic shows as it happens,
so a request just made is in the answer.

Served from the hourly rollups (never from the generation table), so it stays fast however much
traffic a context has. An endpoint is a model at a provider; its id is the catalog's
`"<model>@<provider>"`.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.sql.elements import ColumnElement

from teamrouter.domain.activity.buckets import Granularity, bucket_expr
from teamrouter.domain.activity.models import UsageRollup
from teamrouter.domain.activity.scope import (
    ActivityFilters,
    ActivityScope,
    resolve_filters,
    resolve_scope,
    scoped_conditions,
)
from teamrouter.domain.actor import Actor
from teamrouter.errors import bad_field
from teamrouter.money import to_usd, to_usd_str
from teamrouter.runtime import Runtime

WINDOW_DAYS = 30


def window(now: datetime) -> tuple[date, date]:
    """(first day, last day) of the last 30 UTC days: today and the 29 before it."""
    today = now.astimezone(UTC).date()
    return today - timedelta(days=WINDOW_DAYS - 1), today


def _parse_day(value: str, first: date, last: date) -> date:
    try:
        day = date.fromisoformat(value)
    except ValueError:
        raise bad_field("date", "must be a date such as 2025-01-31 (YYYY-MM-DD)") from None
    if len(value) != 10 or not first <= day <= last:
        raise bad_field("date", f"must be a UTC day from {first} to {last}")
    return day


def rollup_conditions(scope: ActivityScope, filters: ActivityFilters) -> list[ColumnElement[bool]]:
    return scoped_conditions(
        scope, filters, table=UsageRollup, key=(UsageRollup.key_id, filters.key_id), at=UsageRollup.hour
    )


async def daily_activity(
    rt: Runtime,
    *,
    actor: Actor,
    day: str | None = None,
    api_key_hash: str | None = None,
    user_id: str | None = None,
) -> list[dict[str, Any]]:
    first, last = window(rt.clock.now())
    if day is not None:
        first = last = _parse_day(day, first, last)
    since = datetime.combine(first, time(), UTC)
    until = datetime.combine(last + timedelta(days=1), time(), UTC)
    async with rt.db.read() as session:
        scope = await resolve_scope(session, actor)
        filters = await resolve_filters(
            session, scope, api_key_hash=api_key_hash, user_id=user_id, since=since, until=until
        )
        dialect = session.get_bind().dialect.name
        bucket = bucket_expr(dialect, Granularity.DAY)
        statement = (
            select(
                bucket.label("bucket"),
                UsageRollup.model,
                UsageRollup.provider,
                func.sum(UsageRollup.requests).label("requests"),
                func.sum(UsageRollup.cost).label("cost"),
                func.sum(UsageRollup.tokens_prompt).label("tokens_prompt"),
                func.sum(UsageRollup.tokens_completion).label("tokens_completion"),
                func.sum(UsageRollup.tokens_reasoning).label("tokens_reasoning"),
                func.sum(UsageRollup.tokens_cached).label("tokens_cached"),
            )
            .where(*rollup_conditions(scope, filters))
            .group_by(bucket, UsageRollup.model, UsageRollup.provider)
            .order_by(bucket.desc(), UsageRollup.model, UsageRollup.provider)
        )
        rows = (await session.execute(statement)).all()
    return [_item(row) for row in rows]


def _item(row: Any) -> dict[str, Any]:
    cost = int(row.cost or 0)
    return {
        "date": row.bucket[:10],
        "model": row.model,
        "model_permaslug": row.model,
        "endpoint_id": f"{row.model}@{row.provider}",
        "provider_name": row.provider,
        "usage": to_usd(cost),
        "usage_usd": to_usd_str(cost),
        "byok_usage_inference": 0,
        "requests": int(row.requests or 0),
        "prompt_tokens": int(row.tokens_prompt or 0),
        "completion_tokens": int(row.tokens_completion or 0),
        "reasoning_tokens": int(row.tokens_reasoning or 0),
        "cached_tokens": int(row.tokens_cached or 0),
        "workspace_id": None,
    }
