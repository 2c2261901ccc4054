"""Instants a client sends (query text, JSON bodies, cursors), made aware UTC or refused with a 400
naming the field.

Every instant is moved to UTC before use, and that step can fail: Python's datetime spans years
1..9999 in *local* time, so `0001-01-01T00:00:00+01:00` (year 0 in UTC) and
`9999-12-31T23:59:59-01:00` (year 10000) parse but raise OverflowError in `astimezone`. Funnelling
every client instant through here keeps that a bad request instead of a 500.
"""

from __future__ import annotations

from datetime import UTC, datetime

from teamrouter.errors import bad_field

OUT_OF_RANGE = "must lie between 0001-01-01 and 9999-12-31 in UTC"
NEEDS_ZONE = "must include a time zone, e.g. 2030-01-01T00:00:00Z"


def utc_instant(field: str, value: datetime) -> datetime:
    """An aware datetime in UTC; naive or out-of-calendar values are a 400 naming `field`."""
    if value.tzinfo is None or value.utcoffset() is None:
        raise bad_field(field, NEEDS_ZONE)
    try:
        return value.astimezone(UTC)
    except OverflowError:
        raise bad_field(field, OUT_OF_RANGE) from None


def parse_instant(field: str, value: str | None) -> datetime | None:
    """ISO 8601 text with a time zone (`2025-01-01T00:00:00Z`) as aware UTC; None stays None."""
    if value is None:
        return None
    try:
        parsed = datetime.fromisoformat(value.strip())
    except ValueError:
        raise bad_field(field, "must be an ISO 8601 date-time such as 2025-01-01T00:00:00Z") from None
    return utc_instant(field, parsed)
