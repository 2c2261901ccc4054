"""Usage analytics from the hourly rollups: metrics by time bucket and dimensions, plus totals and
the breakdowns behind "cost optimization" (spend per model with cost per 1k tokens, per member,
per key).

Buckets are computed in SQL (see `buckets`), so a year of traffic is one GROUP BY over rollup rows,
never a scan of generations. Sums stay integers (nano-USD) until they are shown. Rows group by what
the rollups store (a provider's slug, a key's id); each dimension is shown with its names beside it,
the provider's display name as the activity feed shows it, and the value stays what filters take.

Filters (`eq`, `neq`, `in`, `not_in`) only ever narrow the caller's scope: they are ANDed after it,
with their values bound as SQL parameters. `order_by` sorts the rows and `group_limit` keeps the
first rows of each combination of dimension values, both in SQL, before `limit`.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from typing import Any

from sqlalchemy import Select, func, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import InstrumentedAttribute
from sqlalchemy.sql.base import ReadOnlyColumnCollection
from sqlalchemy.sql.elements import ColumnElement, KeyedColumnElement

from teamrouter.clock import iso_utc as iso
from teamrouter.domain.accounts.models import User
from teamrouter.domain.activity.buckets import Granularity, bucket_expr, bucket_start, ceil_hour, floor_hour
from teamrouter.domain.activity.daily import rollup_conditions
from teamrouter.domain.activity.models import UsageRollup
from teamrouter.domain.activity.schemas import MAX_ROWS, AnalyticsQuery, FilterObject, Operator, OrderBy
from teamrouter.domain.activity.scope import (
    ActivityScope,
    check_user_visible,
    resolve_filters,
    resolve_scope,
    visible_key_ids,
)
from teamrouter.domain.actor import Actor
from teamrouter.domain.keys.models import ApiKey
from teamrouter.errors import bad_field
from teamrouter.instants import utc_instant
from teamrouter.money import UNITS_PER_USD, to_usd, to_usd_str
from teamrouter.runtime import Runtime

# metric name → (rollup column, label, display format)
METRICS: dict[str, tuple[str, str, str]] = {
    "total_usage": ("cost", "Spend (USD)", "currency"),
    "request_count": ("requests", "Requests", "number"),
    "tokens_prompt": ("tokens_prompt", "Prompt tokens", "number"),
    "tokens_completion": ("tokens_completion", "Completion tokens", "number"),
}
# dimension name → (rollup column, label)
DIMENSIONS: dict[str, tuple[str, str]] = {
    "model": ("model", "Model"),
    "provider": ("provider", "Provider"),
    "api_key": ("key_id", "API key"),
    "user": ("user_id", "Member"),
}
MAX_DAYS: dict[Granularity, int] = {
    Granularity.HOUR: 31,
    Granularity.DAY: 366,
    Granularity.WEEK: 366,
    Granularity.MONTH: 366,
}
DEFAULT_DAYS = 30
FILTER_FIELDS = {"api_key_hash": "api_key_hash", "api_key": "api_key_hash", "user_id": "user_id", "user": "user_id"}
FILTER_FIELDS |= {"model": "model", "provider": "provider"}
# filter name (FILTER_FIELDS' values) → rollup column; a key filter takes hashes, rollups hold ids
FILTER_COLUMNS: dict[str, InstrumentedAttribute[str]] = {
    "api_key_hash": UsageRollup.key_id,
    "user_id": UsageRollup.user_id,
    "model": UsageRollup.model,
    "provider": UsageRollup.provider,
}
# `order_by` names for the time bucket: the SDK's ("date") and the rows' own ("bucket")
ORDER_BUCKET = ("date", "bucket")
_SUMMED = ("requests", "cost", "tokens_prompt", "tokens_completion")


def analytics_meta() -> dict[str, Any]:
    """What `POST /analytics/query` accepts (the SDK's `GetAnalyticsMetaData`, plus range caps)."""
    return {
        "metrics": [
            {"name": name, "display_label": label, "display_format": fmt, "is_rate": False}
            for name, (_, label, fmt) in METRICS.items()
        ],
        "dimensions": [{"name": name, "display_label": label} for name, (_, label) in DIMENSIONS.items()],
        "granularities": [
            {"name": g.value, "display_label": g.value.capitalize(), "max_time_range_days": MAX_DAYS[g]}
            for g in Granularity
        ],
        "operators": [{"name": op.value, "value_type": "array" if op.takes_list else "scalar"} for op in Operator],
        "filters": sorted(FILTER_FIELDS),
        # What `order_by` takes (`_order`): the bucket and the request count always, a metric or a
        # dimension when the query asks for it too; `group_limit` counts rows per combination of
        # the requested dimensions.
        "order_by": {
            "always": [*ORDER_BUCKET, "request_count"],
            "when_requested": [*(m for m in METRICS if m != "request_count"), *DIMENSIONS],
            "directions": ["asc", "desc"],
        },
        "group_limit": {"min": 1, "max": MAX_ROWS},
        "max_time_range_days": max(MAX_DAYS.values()),
        "week_starts_on": "monday",
        "timezone": "UTC",
    }


@dataclass(frozen=True, slots=True)
class Condition:
    """One filter: a FILTER_FIELDS name, an operator and its value(s)."""

    field: str
    operator: Operator
    values: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Plan:
    metrics: list[str]
    dimensions: list[str]
    granularity: Granularity
    start: datetime
    end: datetime
    filters: list[Condition]
    order: tuple[str, bool] | None  # (field, descending)
    group_limit: int | None  # None also when there are no dimensions (the SDK ignores it then)


def plan(query: AnalyticsQuery, now: datetime) -> Plan:
    """Validate names and the range; every problem is a 400 naming the field."""
    for metric in query.metrics:
        if metric not in METRICS:
            raise bad_field("metrics", f"unknown metric {metric!r}; valid: {', '.join(METRICS)}")
    for dimension in query.dimensions:
        if dimension not in DIMENSIONS:
            raise bad_field("dimensions", f"unknown dimension {dimension!r}; valid: {', '.join(DIMENSIONS)}")
    try:
        granularity = Granularity(query.granularity)
    except ValueError:
        raise bad_field("granularity", f"must be one of {', '.join(g.value for g in Granularity)}") from None
    if query.time_range is None:
        end = ceil_hour(now)
        start = end - timedelta(days=DEFAULT_DAYS)
    else:
        given_start = utc_instant("time_range.start", query.time_range.start)
        given_end = utc_instant("time_range.end", query.time_range.end)
        if given_end <= given_start:
            raise bad_field("time_range", "end must be later than start")
        start = floor_hour(given_start)
        try:
            end = ceil_hour(given_end)
        except OverflowError:  # rounding 9999-12-31T23:xx up to the hour leaves the calendar
            raise bad_field("time_range.end", "must be at most 9999-12-31T23:00:00Z") from None
        if end - start > timedelta(days=MAX_DAYS[granularity]):
            raise bad_field("time_range", f"may span at most {MAX_DAYS[granularity]} days at {granularity} granularity")
    metrics = list(dict.fromkeys(query.metrics))
    dimensions = list(dict.fromkeys(query.dimensions))
    return Plan(
        metrics=metrics,
        dimensions=dimensions,
        granularity=granularity,
        start=start,
        end=end,
        filters=_filters(query.filters),
        order=_order(query.order_by, metrics, dimensions),
        group_limit=query.group_limit if dimensions else None,
    )


def _filters(given: FilterObject | list[Any] | None) -> list[Condition]:
    if given is None:
        return []
    if isinstance(given, FilterObject):
        return [Condition(k, Operator.EQ, (v,)) for k, v in given.model_dump().items() if v is not None]
    found: list[Condition] = []
    equal: dict[str, str] = {}
    for item in given:
        name = FILTER_FIELDS.get(item.field)
        if name is None:
            raise bad_field("filters", f"cannot filter on {item.field!r}; valid: {', '.join(sorted(FILTER_FIELDS))}")
        # Filters are ANDed; two different `eq` values on one field would match nothing, surely a mistake.
        if item.operator is Operator.EQ and equal.setdefault(name, item.values[0]) != item.values[0]:
            raise bad_field("filters", f"two different values for {item.field!r}")
        found.append(Condition(name, item.operator, item.values))
    return found


def _order(order_by: OrderBy | None, metrics: list[str], dimensions: list[str]) -> tuple[str, bool] | None:
    """As the SDK documents: a requested metric (or `request_count`, always allowed), a requested
    dimension, or the time bucket."""
    if order_by is None:
        return None
    valid = list(dict.fromkeys([*ORDER_BUCKET, *metrics, "request_count", *dimensions]))
    if order_by.field not in valid:
        raise bad_field("order_by.field", f"cannot order by {order_by.field!r}; valid: {', '.join(valid)}")
    return order_by.field, order_by.direction == "desc"


async def query_analytics(
    rt: Runtime, *, actor: Actor, query: AnalyticsQuery, provider_name: Callable[[str], str]
) -> dict[str, Any]:
    """``provider_name`` maps a provider's slug, as rollups store it, to the name to show."""
    started = time.perf_counter()
    p = plan(query, rt.clock.now())
    async with rt.db.read() as session:
        scope = await resolve_scope(session, actor)
        period = await resolve_filters(session, scope, since=p.start, until=p.end)
        where = rollup_conditions(scope, period) + await _filter_conditions(session, scope, p.filters)
        bucket = bucket_expr(session.get_bind().dialect.name, p.granularity)
        sums = [func.sum(getattr(UsageRollup, c)).label(c) for c in _SUMMED]
        rows = list((await session.execute(_rows_statement(p, where, bucket, query.limit + 1))).all())
        overall = (
            await session.execute(
                select(UsageRollup.key_id, UsageRollup.user_id, UsageRollup.model, *sums)
                .where(*where)
                .group_by(UsageRollup.key_id, UsageRollup.user_id, UsageRollup.model)
            )
        ).all()
        names = await _names(session, {r.key_id for r in overall}, {r.user_id for r in overall}, provider_name)
    truncated = len(rows) > query.limit
    rows = rows[: query.limit]
    data = [_row(row, p, names) for row in rows]
    return {
        "data": data,
        "totals": _totals([_sums(r) for r in overall]),
        "insights": _insights(overall, names),
        "metrics": p.metrics,
        "dimensions": p.dimensions,
        "granularity": p.granularity.value,
        "time_range": {"start": iso(p.start), "end": iso(p.end)},
        "metadata": {
            "query_time_ms": round((time.perf_counter() - started) * 1000, 3),
            "row_count": len(data),
            "truncated": truncated,
        },
    }


async def _filter_conditions(
    session: AsyncSession, scope: ActivityScope, conditions: list[Condition]
) -> list[ColumnElement[bool]]:
    """The filters as SQL on the rollups. A named key or person the scope does not hold is a 404
    whatever the operator, as `resolve_filters` has it: excluding one tells as much as selecting it."""
    where: list[ColumnElement[bool]] = []
    for condition in conditions:
        values = condition.values
        if condition.field == "api_key_hash":
            ids = await visible_key_ids(session, scope, set(values))
            values = tuple(ids[h] for h in values)
        elif condition.field == "user_id":
            for user_id in dict.fromkeys(values):
                await check_user_visible(session, scope, user_id)
        where.append(_compare(FILTER_COLUMNS[condition.field], condition.operator, values))
    return where


def _compare(column: InstrumentedAttribute[str], operator: Operator, values: tuple[str, ...]) -> ColumnElement[bool]:
    # No column here is nullable, so `!=` and NOT IN need no NULL case (hence no `include_unset`).
    if operator is Operator.EQ:
        return column == values[0]
    if operator is Operator.NEQ:
        return column != values[0]
    if operator is Operator.IN:
        return column.in_(values)
    return column.not_in(values)


Columns = ReadOnlyColumnCollection[str, KeyedColumnElement[Any]]


def _rows_statement(p: Plan, where: list[ColumnElement[bool]], bucket: ColumnElement[str], limit: int) -> Select[Any]:
    """Sums per bucket × dimensions in a subquery, so ordering and the per-group cut can name its
    columns; with `group_limit`, each group's rows are numbered in the answer's own order."""
    dims = [getattr(UsageRollup, DIMENSIONS[d][0]) for d in p.dimensions]
    sums = [func.sum(getattr(UsageRollup, c)).label(c) for c in _SUMMED]
    grouped = select(bucket.label("bucket"), *dims, *sums).where(*where).group_by(bucket, *dims).subquery("grouped")
    if p.group_limit is None:
        return select(grouped).order_by(*_ordering(p, grouped.c)).limit(limit)
    rank = func.row_number().over(
        partition_by=[grouped.c[DIMENSIONS[d][0]] for d in p.dimensions], order_by=_ordering(p, grouped.c)
    )
    ranked = select(grouped, rank.label("group_rank")).subquery("ranked")
    return select(ranked).where(ranked.c.group_rank <= p.group_limit).order_by(*_ordering(p, ranked.c)).limit(limit)


def _ordering(p: Plan, columns: Columns) -> list[ColumnElement[Any]]:
    """The caller's `order_by` first, then bucket and dimensions ascending: ties always break the
    same way, so a truncated answer and each group's cut are the same on every run and database."""
    tie_break: list[ColumnElement[Any]] = [columns.bucket, *(columns[DIMENSIONS[d][0]] for d in p.dimensions)]
    if p.order is None:
        return tie_break
    field, descending = p.order
    key = _order_key(field, columns)
    return [key.desc() if descending else key.asc(), *tie_break]


def _order_key(field: str, columns: Columns) -> ColumnElement[Any]:
    if field in ORDER_BUCKET:
        return columns.bucket
    if field in METRICS:
        return columns[METRICS[field][0]]
    if field == "api_key":
        # Rows group by a key's id but show its hash: order by what the caller sees.
        return select(ApiKey.hash).where(ApiKey.id == columns.key_id).scalar_subquery()
    return columns[DIMENSIONS[field][0]]


@dataclass(frozen=True, slots=True)
class Names:
    keys: dict[str, tuple[str, str, str, str]]  # key id → (hash, name, label, creator)
    users: dict[str, tuple[str, str]]  # user id → (email, name)
    provider: Callable[[str], str]  # slug → display name


async def _names(
    session: AsyncSession, key_ids: set[str], user_ids: set[str], provider_name: Callable[[str], str]
) -> Names:
    keys: dict[str, tuple[str, str, str, str]] = {}
    users: dict[str, tuple[str, str]] = {}
    if key_ids:
        found = await session.execute(
            select(ApiKey.id, ApiKey.hash, ApiKey.name, ApiKey.label, ApiKey.creator_user_id).where(
                ApiKey.id.in_(key_ids)
            )
        )
        keys = {k.id: (k.hash, k.name, k.label, k.creator_user_id) for k in found}
    if user_ids:
        found_users = await session.execute(select(User.id, User.email, User.name).where(User.id.in_(user_ids)))
        users = {u.id: (u.email, u.name) for u in found_users}
    return Names(keys=keys, users=users, provider=provider_name)


def _sums(row: Any) -> dict[str, int]:
    return {c: int(getattr(row, c) or 0) for c in _SUMMED}


def _metric_values(sums: dict[str, int], metrics: list[str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for metric in metrics:
        column = METRICS[metric][0]
        if column == "cost":
            out[metric] = to_usd(sums["cost"])
            out[f"{metric}_usd"] = to_usd_str(sums["cost"])
        else:
            out[metric] = sums[column]
    return out


def _row(row: Any, p: Plan, names: Names) -> dict[str, Any]:
    out: dict[str, Any] = {"bucket": iso(bucket_start(row.bucket))}
    for dimension in p.dimensions:
        value = getattr(row, DIMENSIONS[dimension][0])
        if dimension == "api_key":
            key_hash, key_name, label, _ = names.keys.get(value, ("", "", "", ""))
            out |= {"api_key": key_hash, "api_key_name": key_name, "api_key_label": label}
        elif dimension == "user":
            email, user_name = names.users.get(value, ("", ""))
            out |= {"user": value, "user_email": email, "user_name": user_name}
        elif dimension == "provider":
            # The slug stays the value (what the `provider` filter takes, as OpenRouter's analytics
            # accept a dimension's value as returned); the name is what /activity shows.
            out |= {"provider": value, "provider_name": names.provider(value)}
        else:
            out[dimension] = value
    return out | _metric_values(_sums(row), p.metrics)


def _totals(parts: list[dict[str, int]]) -> dict[str, Any]:
    """Every metric over the whole range and filters, whatever was asked (cheap, and what UIs show)."""
    total = {c: sum(part[c] for part in parts) for c in _SUMMED}
    return _metric_values(total, list(METRICS))


def _add(into: dict[str, dict[str, int]], key: str, sums: dict[str, int]) -> None:
    slot = into.setdefault(key, dict.fromkeys(_SUMMED, 0))
    for c in _SUMMED:
        slot[c] += sums[c]


def _insights(overall: Any, names: Names) -> dict[str, Any]:
    by_model: dict[str, dict[str, int]] = {}
    by_user: dict[str, dict[str, int]] = {}
    by_key: dict[str, dict[str, int]] = {}
    for row in overall:
        sums = _sums(row)
        _add(by_model, row.model, sums)
        _add(by_user, row.user_id, sums)
        _add(by_key, row.key_id, sums)
    everything = list(METRICS)

    def ranked(group: dict[str, dict[str, int]]) -> list[tuple[str, dict[str, int]]]:
        return sorted(group.items(), key=lambda item: (-item[1]["cost"], item[0]))

    models = [
        {"model": model, **_metric_values(s, everything), "cost_per_1k_tokens": _per_1k(s)}
        for model, s in ranked(by_model)
    ]
    users = [
        {
            "user_id": uid,
            "email": names.users.get(uid, ("", ""))[0],
            "name": names.users.get(uid, ("", ""))[1],
            **_metric_values(s, everything),
        }
        for uid, s in ranked(by_user)
    ]
    keys = []
    for key_id, s in ranked(by_key):
        key_hash, key_name, label, creator = names.keys.get(key_id, ("", "", "", ""))
        keys.append(
            {"hash": key_hash, "name": key_name, "label": label, "creator_user_id": creator}
            | _metric_values(s, everything)
        )
    return {"by_model": models, "by_user": users, "by_api_key": keys}


def _per_1k(sums: dict[str, int]) -> float | None:
    """USD per 1,000 tokens (prompt + completion): the number to compare models on."""
    tokens = sums["tokens_prompt"] + sums["tokens_completion"]
    if tokens == 0:
        return None
    return float(Decimal(sums["cost"]) * 1000 / tokens / UNITS_PER_USD)
