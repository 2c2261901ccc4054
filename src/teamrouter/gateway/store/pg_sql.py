"""The PostgreSQL store's own statements: reserve, settle and void each in one statement (one round
trip, one commit), a batch of settlements in one statement, and the reads a retry needs.

They are built from the shared statements in `sql` as data-modifying CTEs chained in the lock order
every writer follows (hold, key, pool, rollup), so that PostgreSQL runs them in that order.
"""

from __future__ import annotations

import operator
from typing import Any

from sqlalchemy.dialects import postgresql

from teamrouter.gateway.store import sql
from teamrouter.storage.models import metadata

_DIALECT = postgresql.dialect()  # type: ignore[no-untyped-call]  # SQLAlchemy's stub leaves it untyped


def _type(table: str, column: str) -> str:
    return str(metadata.tables[table].c[column].type.compile(dialect=_DIALECT))


def _cast(table: str, column: str, param: str) -> str:
    """`CAST(:param AS <column type>)`: in INSERT … SELECT PostgreSQL cannot infer parameter types."""
    return f"CAST(:{param} AS {_type(table, column)})"


def _insert_select(table: str, columns: tuple[str, ...], params: tuple[str, ...], tail: str) -> str:
    values = ", ".join(
        p if p.startswith(("'", "a.", "1")) else _cast(table, c, p) for c, p in zip(columns, params, strict=True)
    )
    return f"INSERT INTO {table} ({', '.join(columns)}) SELECT {values} {tail}"


_HOLD_COLUMNS = ("id", "account_id", "key_id", "amount", "status", "idempotency_key", "created_at", "expires_at")
_LEDGER_COLUMNS = (
    "id", "account_id", "amount", "kind", "idempotency_key", "transaction_id", "balance_after", "hold_id",
    "generation_id", "created_at",
)  # fmt: skip

# Reserve in one statement, so one round trip and one commit: the key's guarded UPDATE, then the
# pool's only if the key's succeeded, then the hold row. Rows are locked key first, then pool: the
# order every writer takes them in (see SETTLE_ONE); the opposite order deadlocked under A1. (The new
# hold row is nobody else's yet: it cannot be waited for.) A statement is all or nothing, so when the pool
# refuses after the key agreed, the final SELECT divides by zero on purpose: the error rolls back
# the key's hold.
RESERVE_ONE = (
    f"WITH k AS ({sql.RESERVE_KEY} RETURNING 1), "
    f"a AS ({sql.RESERVE_POOL} AND EXISTS (SELECT 1 FROM k) RETURNING 1), "
    "h AS ("
    + _insert_select(
        "credit_hold",
        _HOLD_COLUMNS,
        ("hold_id", "account_id", "key_id", "amount", "'open'", "idempotency_key", "now", "expires_at"),
        "WHERE EXISTS (SELECT 1 FROM a) RETURNING 1",
    )
    + ") SELECT CASE WHEN (SELECT count(*) FROM k) = 0 THEN 0 "
    "ELSE 1 / (SELECT count(*) FROM a) + (SELECT count(*) FROM h) END"
)

# Settle in one statement (atomic on its own): every write is gated on flipping the hold from open.
# Each data-modifying CTE reads the one before it, so PostgreSQL runs them in exactly this order
# (it documents none for CTEs that do not depend on each other): hold, key, pool, ledger, activity,
# rollup. That is the lock order every writer of these rows follows (reservations: key, pool; the
# sweeper: holds, keys, pools; a batch of settlements: all its holds, keys, pools, then rollups),
# so none can wait on another in a cycle. (Left to itself, PostgreSQL locked the rollup row first.)
SETTLE_ONE = (
    f"WITH h AS ({sql.POST_HOLD} RETURNING 1), "
    f"k AS ({sql.SETTLE_KEY} AND EXISTS (SELECT 1 FROM h) RETURNING 1), "
    f"a AS (UPDATE credit_account SET {sql.settle_pool_set(':release', ':cost', ':now')} "
    "WHERE id = :account_id AND EXISTS (SELECT 1 FROM k) RETURNING balance), "
    "le AS ("
    + _insert_select(
        "ledger_entry",
        _LEDGER_COLUMNS,
        (
            "entry_id",
            "account_id",
            "amount",
            "'usage'",
            "idempotency_key",
            "entry_id",
            "a.balance",
            "hold_id",
            "generation_id",
            "now",
        ),
        "FROM a RETURNING 1",
    )
    + "), g AS ("
    + _insert_select(
        "generation",
        sql.GENERATION_COLUMNS,
        tuple("g_" + c for c in sql.GENERATION_COLUMNS),
        "WHERE EXISTS (SELECT 1 FROM le) RETURNING 1",
    )
    + "), r AS ("
    + _insert_select(
        "usage_rollup",
        sql.ROLLUP_COLUMNS,
        (
            "hour",
            "account_id",
            "key_id",
            "user_id",
            "model",
            "provider",
            "1",
            "tokens_prompt",
            "tokens_completion",
            "tokens_reasoning",
            "tokens_cached",
            "cost",
        ),
        "WHERE EXISTS (SELECT 1 FROM g) " + sql.UPSERT_ROLLUP[sql.UPSERT_ROLLUP.index("ON CONFLICT") :],
    )
    + ") SELECT count(*) FROM h"
)


def _unnest(*columns: tuple[str, str, str]) -> str:
    """`unnest(CAST(:param AS <column type>[]), …)` for (table, column, param) triples: a batch's rows
    as one array parameter per column."""
    arrays = (f"CAST(:{param} AS {_type(table, column)}[])" for table, column, param in columns)
    return f"unnest({', '.join(arrays)})"


def _sums(table: str, prefix: str, touched: str) -> str:
    """The batch's sums per row of `table` (keys, pools): id, release, cost, and the latest time."""
    return _unnest(
        (table, "id", f"{prefix}_ids"),
        ("credit_hold", "amount", f"{prefix}_releases"),
        ("credit_hold", "amount", f"{prefix}_costs"),
        (table, touched, f"{prefix}_nows"),
    )


# A batch of settlements in one statement, so one round trip and one commit: the rows that a batch
# locks (holds, keys, pools, rollups) stay locked only while it runs and its WAL flushes, where a
# transaction of separate statements held them over seven round trips while every reservation of
# the pool queued behind them. Every write is gated on flipping all the batch's holds from open: if
# any was not (expired by the sweeper, settled before), the SELECT divides by zero on purpose, the
# statement rolls back whole, and the batch goes one by one through SETTLE_ONE. Rows are locked in
# the order of SETTLE_ONE and of reservations: holds, then every key (`lk`, by id), then every pool
# (`la`, by id), then rollup rows (sorted). Each step waits for the whole of the one before it
# (`count(*)`: an EXISTS would read one row, and PostgreSQL then wrote the batch's other keys only
# at the end, after the pool, which deadlocked with reservations). Keys and pools get one update
# each with the batch's sums (an UPDATE cannot change a row twice); the caller sends only batches
# within one set of spend windows. Each ledger entry's balance_after is the pool's new balance plus
# the costs of the entries after it (`later`), as if the batch had been posted one by one.
SETTLE_MANY = (
    "WITH h AS (UPDATE credit_hold SET status = 'posted', posted_amount = s.cost, resolved_at = s.now, "
    "generation_id = s.generation_id FROM "
    + _unnest(
        ("credit_hold", "id", "hold_ids"),
        ("credit_hold", "posted_amount", "hold_costs"),
        ("credit_hold", "resolved_at", "hold_nows"),
        ("credit_hold", "generation_id", "generation_ids"),
    )
    + " AS s (hold_id, cost, now, generation_id) "
    "WHERE credit_hold.id = s.hold_id AND (credit_hold.status = 'open') IS TRUE RETURNING 1), "
    "ok AS (SELECT 1 / (CASE WHEN (SELECT count(*) FROM h) = :expected THEN 1 ELSE 0 END) AS one), "
    "lk AS (SELECT id FROM api_key WHERE id = ANY(CAST(:key_ids AS VARCHAR[])) AND (SELECT one FROM ok) = 1 "
    "ORDER BY id FOR UPDATE), "
    f"k AS (UPDATE api_key SET {sql.settle_key_set('ks.release', 'ks.cost', 'ks.now')} FROM "
    + _sums("api_key", "key", "last_used_at")
    + " AS ks (key_id, release, cost, now) "
    "WHERE api_key.id = ks.key_id AND (SELECT count(*) FROM lk) > 0 RETURNING 1), "
    "la AS (SELECT id FROM credit_account WHERE id = ANY(CAST(:account_ids AS VARCHAR[])) "
    "AND (SELECT count(*) FROM k) > 0 ORDER BY id FOR UPDATE), "
    f"a AS (UPDATE credit_account SET {sql.settle_pool_set('p.release', 'p.cost', 'p.now')} FROM "
    + _sums("credit_account", "account", "updated_at")
    + " AS p (account_id, release, cost, now) "
    "WHERE credit_account.id = p.account_id AND (SELECT count(*) FROM la) > 0 "
    "RETURNING credit_account.id, credit_account.balance), "
    f"le AS (INSERT INTO ledger_entry ({', '.join(_LEDGER_COLUMNS)}) "
    "SELECT e.id, e.account_id, e.amount, 'usage', e.idempotency_key, e.id, a.balance + e.later, e.hold_id, "
    "e.generation_id, e.created_at FROM "
    + _unnest(
        *(
            ("ledger_entry", c, f"entry_{c}")
            for c in ("id", "account_id", "amount", "idempotency_key", "hold_id", "generation_id", "created_at")
        ),
        ("ledger_entry", "balance_after", "entry_later"),
    )
    + " AS e (id, account_id, amount, idempotency_key, hold_id, generation_id, created_at, later) "
    "JOIN a ON a.id = e.account_id RETURNING 1), "
    f"g AS (INSERT INTO generation ({', '.join(sql.GENERATION_COLUMNS)}) SELECT * FROM "
    + _unnest(*(("generation", c, f"g_{c}") for c in sql.GENERATION_COLUMNS))
    + " AS gen WHERE (SELECT count(*) FROM le) > 0 RETURNING 1), "
    f"r AS (INSERT INTO usage_rollup ({', '.join(sql.ROLLUP_COLUMNS)}) SELECT * FROM "
    + _unnest(*(("usage_rollup", c, f"r_{c}") for c in sql.ROLLUP_COLUMNS))
    + " AS roll WHERE (SELECT count(*) FROM g) > 0 "
    + sql.UPSERT_ROLLUP[sql.UPSERT_ROLLUP.index("ON CONFLICT") :]
    + ") SELECT count(*) FROM h"
)

# Void in one statement (one round trip, where BEGIN, three statements and COMMIT took five: 0.85 ms
# p50 here), in the same lock order: hold, key, pool, each CTE reading the one before it. Key rows
# are never deleted (soft delete), so the key's update always finds its row.
VOID_ONE = (
    f"WITH h AS ({sql.VOID_HOLD} RETURNING 1), "
    f"k AS ({sql.RELEASE_KEY} AND EXISTS (SELECT 1 FROM h) RETURNING 1), "
    f"a AS ({sql.RELEASE_POOL} AND EXISTS (SELECT 1 FROM k) RETURNING 1) "
    "SELECT count(*) FROM a"
)

# Only read when an attempt is retried: what the earlier attempt, whose outcome is unknown, did.
HOLD_STATE = "SELECT status, generation_id FROM credit_hold WHERE id = :hold_id"

# Which holds of a batch an earlier attempt of SETTLE_MANY posted, when its connection died.
POSTED = (
    "SELECT id FROM credit_hold WHERE id = ANY(:hold_ids) AND status = 'posted' "
    "AND generation_id = ANY(:generation_ids)"
)


def batch_params(batch: list[dict[str, Any]]) -> dict[str, Any]:
    """SETTLE_MANY's parameters from settlements of distinct holds in one set of spend windows: one
    array per column, each sorted by the row it locks; keys, pools and rollup rows summed."""
    by_hold = sorted(batch, key=operator.itemgetter("hold_id"))
    params: dict[str, Any] = {
        "expected": len(batch),
        "hold_ids": [p["hold_id"] for p in by_hold],
        "hold_costs": [p["cost"] for p in by_hold],
        "hold_nows": [p["now"] for p in by_hold],
        "generation_ids": [p["generation_id"] for p in by_hold],
        "day": batch[0]["day"],
        "week": batch[0]["week"],
        "month": batch[0]["month"],
    }
    for prefix, field in (("key", "key_id"), ("account", "account_id")):
        releases: dict[str, int] = {}
        costs: dict[str, int] = {}
        latest: dict[str, Any] = {}
        for p in batch:
            row = p[field]
            releases[row] = releases.get(row, 0) + p["release"]
            costs[row] = costs.get(row, 0) + p["cost"]
            latest[row] = max(latest.get(row, p["now"]), p["now"])
        ids = sorted(releases)
        params[f"{prefix}_ids"] = ids
        params[f"{prefix}_releases"] = [releases[i] for i in ids]
        params[f"{prefix}_costs"] = [costs[i] for i in ids]
        params[f"{prefix}_nows"] = [latest[i] for i in ids]
    # Each entry's balance is the pool's new balance plus the costs posted after it in the batch.
    later: list[int] = []
    after: dict[str, int] = {}
    for p in reversed(batch):
        later.append(after.get(p["account_id"], 0))
        after[p["account_id"]] = after.get(p["account_id"], 0) + p["cost"]
    later.reverse()
    params["entry_later"] = later
    for column, field in _ENTRY_FIELDS:
        params[f"entry_{column}"] = [p[field] for p in batch]
    for column in sql.GENERATION_COLUMNS:
        params[f"g_{column}"] = [p[f"g_{column}"] for p in batch]
    ordered = sql.sum_rollups(batch)
    for column in sql.ROLLUP_COLUMNS:
        params[f"r_{column}"] = [r[column] for r in ordered]
    return params


# The ledger entry's columns in SETTLE_MANY, from the settle parameters' names.
_ENTRY_FIELDS = (
    ("id", "entry_id"), ("account_id", "account_id"), ("amount", "amount"), ("idempotency_key", "idempotency_key"),
    ("hold_id", "hold_id"), ("generation_id", "generation_id"), ("created_at", "now"),
)  # fmt: skip
