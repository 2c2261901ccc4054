"""Per-key spend windows: pure functions of an `api_key` row and `now`.

The usage counters live on the key row and roll over lazily: a window counter whose `*_start` is not
the current window's start counts as zero, and the next settlement resets it (see `holds.settle`).
Windows start at 00:00 UTC whatever the server's time zone; weeks start on Monday; months on the 1st.
The same rules are spelled in SQL by `holds.window_spend_sql` for the guarded UPDATE, so what the
API shows and what admission enforces cannot disagree.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Protocol

DAILY = "daily"
WEEKLY = "weekly"
MONTHLY = "monthly"
LIMIT_RESETS = (DAILY, WEEKLY, MONTHLY)


class KeyCounters(Protocol):
    """The columns of `api_key` the window rules read (an ApiKey row, or a test double)."""

    spend_limit: int | None
    limit_reset: str | None
    usage: int
    usage_day: int
    day_start: date | None
    usage_week: int
    week_start: date | None
    usage_month: int
    month_start: date | None
    held: int


@dataclass(frozen=True, slots=True)
class WindowStarts:
    day: date
    week: date
    month: date


def window_starts(now: datetime) -> WindowStarts:
    if now.tzinfo is None:
        raise ValueError("window_starts needs an aware datetime")
    today = now.astimezone(UTC).date()
    return WindowStarts(day=today, week=today - timedelta(days=today.weekday()), month=today.replace(day=1))


def key_usage(key: KeyCounters, now: datetime) -> dict[str, int]:
    """Spend in nano-USD: lifetime and in the current day / week / month (0 for a stale window; a
    window that started after `now`'s, on another instance's clock, is the current one)."""
    starts = window_starts(now)
    return {
        "usage": key.usage or 0,
        "usage_daily": (key.usage_day or 0) if _current(key.day_start, starts.day) else 0,
        "usage_weekly": (key.usage_week or 0) if _current(key.week_start, starts.week) else 0,
        "usage_monthly": (key.usage_month or 0) if _current(key.month_start, starts.month) else 0,
    }


def _current(start: date | None, now_start: date) -> bool:
    return start is not None and start >= now_start


def key_window_spend(key: KeyCounters, now: datetime) -> int:
    """What counts against the key's limit now: the current window's spend, or lifetime spend."""
    usage = key_usage(key, now)
    field = {DAILY: "usage_daily", WEEKLY: "usage_weekly", MONTHLY: "usage_monthly"}.get(key.limit_reset or "", "usage")
    return usage[field]


def limit_remaining(key: KeyCounters, now: datetime) -> int | None:
    """Nano-USD the key may still reserve in this window: limit - spend - open holds, floored at 0.

    None when the key has no limit. Open holds count, because admission counts them: a request is
    refused once spend plus in-flight reservations would pass the limit.
    """
    if key.spend_limit is None:
        return None
    return max(0, key.spend_limit - key_window_spend(key, now) - (key.held or 0))
