"""Time buckets over `usage_rollup.hour`, computed in SQL for each dialect.

Both dialects return the bucket start as text (`YYYY-MM-DD` or `YYYY-MM-DD HH:MM:SS`, UTC), which
`bucket_start` turns back into an aware datetime. Weeks start on Monday (ISO). Constants are
rendered inline (`literal_column`) so the GROUP BY expression is textually the SELECT expression,
which PostgreSQL requires.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from sqlalchemy import String, func, literal_column
from sqlalchemy.sql.elements import ColumnElement

from teamrouter.domain.activity.models import UsageRollup


class Granularity(StrEnum):
    HOUR = "hour"
    DAY = "day"
    WEEK = "week"
    MONTH = "month"


def bucket_expr(dialect: str, granularity: Granularity) -> ColumnElement[str]:
    hour: Any = UsageRollup.hour
    if dialect == "postgresql":
        utc = func.timezone(literal_column("'UTC'"), hour)
        truncated = func.date_trunc(literal_column(f"'{granularity.value}'"), utc)
        return func.to_char(truncated, literal_column("'YYYY-MM-DD HH24:MI:SS'"), type_=String)
    # SQLite keeps UTC timestamps as text 'YYYY-MM-DD HH:MM:SS.ffffff' (see storage.base.UTCDateTime).
    if granularity is Granularity.HOUR:
        return func.substr(hour, literal_column("1"), literal_column("13"), type_=String).concat(
            literal_column("':00:00'")
        )
    if granularity is Granularity.DAY:
        return func.substr(hour, literal_column("1"), literal_column("10"), type_=String)
    if granularity is Granularity.WEEK:
        day = func.substr(hour, literal_column("1"), literal_column("10"), type_=String)
        return func.date(day, literal_column("'-6 days'"), literal_column("'weekday 1'"), type_=String)
    return func.substr(hour, literal_column("1"), literal_column("7"), type_=String).concat(literal_column("'-01'"))


def bucket_start(text: str) -> datetime:
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


def floor_hour(value: datetime) -> datetime:
    return value.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def ceil_hour(value: datetime) -> datetime:
    floored = floor_hour(value)
    return floored if floored == value else floored + timedelta(hours=1)
