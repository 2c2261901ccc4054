"""The SQL both stores run, with `:name` parameters (converted to `$n` for asyncpg).

Windows roll over lazily: a key's `usage_day` counts only while `day_start` is today's start, so no
job resets counters at midnight and a restart loses nothing.
"""

from __future__ import annotations

import functools
import operator
import re
from collections.abc import Iterable, Mapping
from datetime import date
from typing import Any

from teamrouter.domain.credits.holds import usage_entry_key as usage_idempotency_key
from teamrouter.gateway.store.base import GenerationRecord, Hold, Windows
from teamrouter.ids import new_id

__all__ = ["usage_idempotency_key"]

# The current window's spend for the key's limit_reset (lifetime when NULL). A window that started
# after the request's own (another instance's clock is a little ahead, around midnight) counts too:
# windows only move forward (`settle_key_set`), and its spend is the one a limit must not exceed.
_WINDOW_SPEND = """(CASE limit_reset
    WHEN 'daily' THEN (CASE WHEN day_start >= :day THEN usage_day ELSE 0 END)
    WHEN 'weekly' THEN (CASE WHEN week_start >= :week THEN usage_week ELSE 0 END)
    WHEN 'monthly' THEN (CASE WHEN month_start >= :month THEN usage_month ELSE 0 END)
    ELSE usage END)"""

RESERVE_POOL = (
    "UPDATE credit_account SET held = held + :amount, updated_at = :now "
    "WHERE id = :account_id AND balance - held >= :amount"
)
POOL_AVAILABLE = "SELECT balance - held AS available FROM credit_account WHERE id = :account_id"

RESERVE_KEY = (
    "UPDATE api_key SET held = held + :amount WHERE id = :key_id "
    f"AND (spend_limit IS NULL OR spend_limit - held - {_WINDOW_SPEND} >= :amount)"
)
KEY_REMAINING = f"SELECT spend_limit - held - {_WINDOW_SPEND} AS remaining FROM api_key WHERE id = :key_id"

INSERT_HOLD = (
    "INSERT INTO credit_hold (id, account_id, key_id, amount, status, idempotency_key, created_at, expires_at) "
    "VALUES (:hold_id, :account_id, :key_id, :amount, 'open', :idempotency_key, :now, :expires_at)"
)

# Resolving a hold is the exactly-once gate: only the statement that flips it from 'open' proceeds.
# The hold is found by its primary key, its status only checked: written `(status = 'open') IS TRUE`
# so that no index on status can serve it. PostgreSQL's generic plan otherwise chose the open-holds
# index (then on (status, expires_at); partial on status = 'open' since migration 0003) and walked
# the open holds, and settled holds' dead entries not yet cleaned up, filtering on id: 7.6 index
# entries read per settlement over 4,000 in a row, 22 over 600 mixed with voids, and more the more
# holds are open at once; the primary key reads one.
OPEN = "(status = 'open') IS TRUE"
POST_HOLD = (
    "UPDATE credit_hold SET status = 'posted', posted_amount = :cost, resolved_at = :now, "
    f"generation_id = :generation_id WHERE id = :hold_id AND {OPEN}"
)
# A hold the sweeper expired while the answer was still streaming: bill it once, release nothing.
POST_EXPIRED_HOLD = (
    "UPDATE credit_hold SET posted_amount = :cost, generation_id = :generation_id "
    "WHERE id = :hold_id AND status = 'expired' AND posted_amount IS NULL"
)
VOID_HOLD = f"UPDATE credit_hold SET status = 'voided', resolved_at = :now WHERE id = :hold_id AND {OPEN}"


def settle_pool_set(release: str, cost: str, now: str) -> str:
    """The SET list that posts a settlement to its pool (as `settle_key_set` for its key)."""
    return f"held = held - {release}, balance = balance - {cost}, updated_at = {now}"


SETTLE_POOL = (
    f"UPDATE credit_account SET {settle_pool_set(':release', ':cost', ':now')} WHERE id = :account_id RETURNING balance"
)
RELEASE_POOL = "UPDATE credit_account SET held = held - :release, updated_at = :now WHERE id = :account_id"


def settle_key_set(release: str, cost: str, now: str) -> str:
    """The SET list that counts a settlement against its key's windows (`:day`, `:week`, `:month`):
    shared by the one-row statement and PostgreSQL's batch, which passes its own column expressions.

    A window only moves forward. A settlement from a window that has already ended (it committed just
    after one from the next, around midnight, or its instance's clock is behind) counts in the
    current window instead of restarting the old one, which would drop what the new one had counted:
    a limit may then stop a little early around midnight, never late. (Dates compare as ISO text on
    SQLite.)"""
    windows = []
    for usage, start, param in (("usage_day", "day_start", ":day"), ("usage_week", "week_start", ":week"),
                                ("usage_month", "month_start", ":month")):  # fmt: skip
        windows.append(
            f"{usage} = (CASE WHEN {start} >= {param} THEN {usage} + {cost} ELSE {cost} END), "
            f"{start} = (CASE WHEN {start} > {param} THEN {start} ELSE {param} END)"
        )
    return f"held = held - {release}, usage = usage + {cost}, {', '.join(windows)}, last_used_at = {now}"


SETTLE_KEY = f"UPDATE api_key SET {settle_key_set(':release', ':cost', ':now')} WHERE id = :key_id"
RELEASE_KEY = "UPDATE api_key SET held = held - :release WHERE id = :key_id"

INSERT_USAGE_ENTRY = (
    "INSERT INTO ledger_entry (id, account_id, amount, kind, idempotency_key, transaction_id, balance_after, "
    "hold_id, generation_id, created_at) "
    "VALUES (:entry_id, :account_id, :amount, 'usage', :idempotency_key, :entry_id, :balance_after, "
    ":hold_id, :generation_id, :now)"
)

GENERATION_COLUMNS = (
    "id", "created_at", "account_id", "organization_id", "key_id", "key_hash", "user_id", "hold_id", "model",
    "provider", "endpoint_id", "upstream_model", "tokens_prompt", "tokens_completion", "tokens_reasoning",
    "tokens_cached", "cost", "latency_ms", "generation_time_ms", "finish_reason", "streamed", "cancelled",
    "usage_estimated", "status_code", "external_user", "app_referer", "app_title",
)  # fmt: skip
INSERT_GENERATION = (
    f"INSERT INTO generation ({', '.join(GENERATION_COLUMNS)}) "
    f"VALUES ({', '.join(':g_' + c for c in GENERATION_COLUMNS)})"
)

UPSERT_ROLLUP = """INSERT INTO usage_rollup (hour, account_id, key_id, user_id, model, provider, requests,
    tokens_prompt, tokens_completion, tokens_reasoning, tokens_cached, cost)
    VALUES (:hour, :account_id, :key_id, :user_id, :model, :provider, :requests,
    :tokens_prompt, :tokens_completion, :tokens_reasoning, :tokens_cached, :cost)
    ON CONFLICT (hour, account_id, key_id, user_id, model, provider) DO UPDATE SET
    requests = usage_rollup.requests + excluded.requests,
    tokens_prompt = usage_rollup.tokens_prompt + excluded.tokens_prompt,
    tokens_completion = usage_rollup.tokens_completion + excluded.tokens_completion,
    tokens_reasoning = usage_rollup.tokens_reasoning + excluded.tokens_reasoning,
    tokens_cached = usage_rollup.tokens_cached + excluded.tokens_cached,
    cost = usage_rollup.cost + excluded.cost"""

# A rollup row's identity (its primary key) and its counters; `rollup_slot` reads the identity from
# a row's parameters.
ROLLUP_IDENTITY = ("hour", "account_id", "key_id", "user_id", "model", "provider")
ROLLUP_COUNTERS = ("requests", "tokens_prompt", "tokens_completion", "tokens_reasoning", "tokens_cached", "cost")
ROLLUP_COLUMNS = ROLLUP_IDENTITY + ROLLUP_COUNTERS
rollup_slot = operator.itemgetter(*ROLLUP_IDENTITY)


def sum_rollups(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """A batch's rollup rows, one per slot with its counters summed, in slot order (an upsert may
    not change one row twice in a statement, and sorted rows are locked in one order)."""
    summed: dict[tuple[Any, ...], dict[str, Any]] = {}
    for row in rows:
        slot = rollup_slot(row)
        total = summed.get(slot)
        if total is None:
            summed[slot] = {c: row[c] for c in ROLLUP_COLUMNS}
        else:
            for c in ROLLUP_COUNTERS:
                total[c] += row[c]
    return [summed[slot] for slot in sorted(summed)]


# Every statement above, by name: each store prepares them all once.
STATEMENTS = (
    "RESERVE_POOL", "POOL_AVAILABLE", "RESERVE_KEY", "KEY_REMAINING", "INSERT_HOLD", "POST_HOLD",
    "POST_EXPIRED_HOLD", "VOID_HOLD", "SETTLE_POOL", "RELEASE_POOL", "SETTLE_KEY", "RELEASE_KEY",
    "INSERT_USAGE_ENTRY", "INSERT_GENERATION", "UPSERT_ROLLUP",
)  # fmt: skip

_PARAM = re.compile(r"(?<!:):([a-z_]+)")


def numbered(statement: str) -> tuple[str, tuple[str, ...]]:
    """`:name` → `$n` for asyncpg, with the parameter order to pass values in."""
    names: list[str] = []

    def replace(match: re.Match[str]) -> str:
        name = match.group(1)
        if name not in names:
            names.append(name)
        return f"${names.index(name) + 1}"

    return _PARAM.sub(replace, statement), tuple(names)


def qmark(statement: str) -> tuple[str, tuple[str, ...]]:
    """`:name` → `?n` for sqlite3: positional binding skips a dict lookup per parameter."""
    text, names = numbered(statement)
    return text.replace("$", "?"), names


def _same(value: Any) -> Any:
    return value


def _window_params(now: Any, day: Any) -> dict[str, Any]:
    """The key's current spend windows, as the window CASEs compare them (`:day`, `:week`, `:month`).
    Shared between calls (callers only unpack it): it changes once a day."""
    return _formatted_windows(now.date(), day)


@functools.lru_cache(maxsize=8)
def _formatted_windows(today: date, day: Any) -> dict[str, Any]:
    windows = Windows.on(today)
    return {"day": day(windows.day), "week": day(windows.week), "month": day(windows.month)}


def reserve_params(hold: Hold, *, now: Any, expires_at: Any, ts: Any = _same, day: Any = _same) -> dict[str, Any]:
    """Parameters of the reserve statements; `ts`/`day` format values for the driver (SQLite: text)."""
    return {
        "amount": hold.amount,
        "account_id": hold.account_id,
        "key_id": hold.key_id,
        "hold_id": hold.id,
        "idempotency_key": f"hold:{hold.id}",
        "now": ts(now),
        "expires_at": ts(expires_at),
        **_window_params(now, day),
    }


def settle_params(
    hold: Hold, record: GenerationRecord, *, now: Any, ts: Any = _same, day: Any = _same
) -> dict[str, Any]:
    return {
        "hold_id": hold.id,
        "account_id": hold.account_id,
        "key_id": hold.key_id,
        "cost": record.cost,
        "amount": -record.cost,
        "release": hold.amount,
        "generation_id": record.id,
        "entry_id": new_id("le"),
        "idempotency_key": usage_idempotency_key(hold.id),
        "now": ts(now),
        **_window_params(now, day),
    }


def void_params(hold: Hold, *, now: Any, ts: Any = _same) -> dict[str, Any]:
    return {
        "hold_id": hold.id,
        "account_id": hold.account_id,
        "key_id": hold.key_id,
        "release": hold.amount,
        "now": ts(now),
    }


def generation_params(record: GenerationRecord, hold_id: str) -> dict[str, Any]:
    values = {f"g_{name}": getattr(record, name, None) for name in GENERATION_COLUMNS}
    values["g_hold_id"] = hold_id
    return values


def rollup_params(record: GenerationRecord) -> dict[str, Any]:
    return {
        "hour": record.created_at.replace(minute=0, second=0, microsecond=0),
        "account_id": record.account_id,
        "key_id": record.key_id,
        "user_id": record.user_id,
        "model": record.model,
        "provider": record.provider,
        "requests": 1,
        "tokens_prompt": record.tokens_prompt,
        "tokens_completion": record.tokens_completion,
        "tokens_reasoning": record.tokens_reasoning,
        "tokens_cached": record.tokens_cached,
        "cost": record.cost,
    }
