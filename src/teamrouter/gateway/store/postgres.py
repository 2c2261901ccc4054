"""The PostgreSQL hot-path store: asyncpg with statements prepared once per connection.

Every guarded UPDATE is re-checked by PostgreSQL under concurrency (READ COMMITTED re-evaluates the
WHERE on the latest row version), so admission holds across processes and machines.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import asyncpg
from sqlalchemy.dialects import postgresql

from teamrouter.gateway.store import sql
from teamrouter.gateway.store.base import GenerationRecord, Hold, Refusal
from teamrouter.storage.models import metadata


class _Statement:
    def __init__(self, text: str) -> None:
        self.text, self.names = sql.numbered(text)

    def args(self, params: Mapping[str, Any]) -> list[Any]:
        return [params[name] for name in self.names]


_S = {name: _Statement(getattr(sql, name)) for name in sql.STATEMENTS}


_DIALECT = postgresql.dialect()  # type: ignore[no-untyped-call]  # SQLAlchemy's stub leaves it untyped


def _cast(table: str, column: str, param: str) -> str:
    """`CAST(:param AS <column type>)`: in INSERT … SELECT PostgreSQL cannot infer parameter types."""
    kind = metadata.tables[table].c[column].type.compile(dialect=_DIALECT)
    return f"CAST(:{param} AS {kind})"


def _insert_select(table: str, columns: tuple[str, ...], params: tuple[str, ...], tail: str) -> str:
    values = ", ".join(
        p if p.startswith(("'", "a.", "1")) else _cast(table, c, p) for c, p in zip(columns, params, strict=True)
    )
    return f"INSERT INTO {table} ({', '.join(columns)}) SELECT {values} {tail}"


_HOLD_COLUMNS = ("id", "account_id", "key_id", "amount", "status", "idempotency_key", "created_at", "expires_at")
_ROLLUP_COLUMNS = (
    "hour", "account_id", "key_id", "user_id", "model", "provider", "requests", "tokens_prompt",
    "tokens_completion", "tokens_reasoning", "tokens_cached", "cost",
)  # fmt: skip

# Reserve in one statement, so one round trip and one commit: the key's guarded UPDATE, then the
# pool's only if the key's succeeded, then the hold row. Rows are locked key first, then pool: the
# order the settlement statement takes them in (PostgreSQL runs the data-modifying CTEs the main
# query does not read last-declared first: its key UPDATE, then the ledger insert that reads the pool
# UPDATE); the opposite order deadlocked under A1. A statement is all or nothing, so when the pool
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
SETTLE_ONE = (
    f"WITH h AS ({sql.POST_HOLD} RETURNING 1), "
    "a AS (UPDATE credit_account SET held = held - :release, balance = balance - :cost, updated_at = :now "
    "WHERE id = :account_id AND EXISTS (SELECT 1 FROM h) RETURNING balance), "
    "le AS ("
    + _insert_select(
        "ledger_entry",
        (
            "id",
            "account_id",
            "amount",
            "kind",
            "idempotency_key",
            "transaction_id",
            "balance_after",
            "hold_id",
            "generation_id",
            "created_at",
        ),
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
        "FROM a",
    )
    + f"), k AS ({sql.SETTLE_KEY} AND EXISTS (SELECT 1 FROM h)), "
    "g AS ("
    + _insert_select(
        "generation",
        sql.GENERATION_COLUMNS,
        tuple("g_" + c for c in sql.GENERATION_COLUMNS),
        "WHERE EXISTS (SELECT 1 FROM h)",
    )
    + "), r AS ("
    + _insert_select(
        "usage_rollup",
        _ROLLUP_COLUMNS,
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
        "WHERE EXISTS (SELECT 1 FROM h) " + sql.UPSERT_ROLLUP[sql.UPSERT_ROLLUP.index("ON CONFLICT") :],
    )
    + ") SELECT count(*) FROM h"
)


_ONE = {"RESERVE_ONE": _Statement(RESERVE_ONE), "SETTLE_ONE": _Statement(SETTLE_ONE)}


async def _keep_session(_connection: Any) -> None:
    return None


def _rows(status: str) -> int:
    # asyncpg returns the command tag, e.g. "UPDATE 1".
    return int(status.rsplit(" ", 1)[-1])


class PostgresStore:
    def __init__(self, pool: asyncpg.Pool, holds: asyncpg.Pool) -> None:
        self._pool = pool
        self._holds = holds

    @classmethod
    async def connect(cls, url: str, *, min_size: int = 2, max_size: int = 10) -> PostgresStore:
        """Two pools. Settlements use durable commits: an answer is sent only once its billing is on
        disk. Reservations and voids use `synchronous_commit = off`: a database crash can lose the
        last fraction of a second of them, which loses only holds (the held money is free again and
        the request's settlement then finds no hold: the answer goes unbilled, as for any request in
        flight during a crash), never money; and a settlement's durable commit also makes its own
        reservation durable, the WAL being sequential. It saves the WAL flush (~0.3 ms here) a
        request waits for before its upstream call."""
        # No reset on release: by default asyncpg runs RESET ALL / UNLISTEN / advisory unlocks (one round
        # trip) each time a connection goes back. This store never sets session state, so skip it.
        options: dict[str, Any] = {"min_size": min_size, "max_size": max_size, "reset": _keep_session}
        pool = await asyncpg.create_pool(url, **options)
        holds = await asyncpg.create_pool(url, server_settings={"synchronous_commit": "off"}, **options)
        return cls(pool, holds)

    async def _exec(self, conn: Any, name: str, params: Mapping[str, Any]) -> int:
        statement = _S[name]
        return _rows(await conn.execute(statement.text, *statement.args(params)))

    async def _value(self, conn: Any, name: str, params: Mapping[str, Any]) -> Any:
        statement = _S[name]
        return await conn.fetchval(statement.text, *statement.args(params))

    async def reserve(self, hold: Hold, *, now: datetime, expires_at: datetime) -> Refusal | None:
        params = sql.reserve_params(hold, now=now, expires_at=expires_at)
        statement = _ONE["RESERVE_ONE"]
        async with self._holds.acquire() as conn:
            try:
                if await conn.fetchval(statement.text, *statement.args(params)) == 2:
                    return None  # key, pool and hold row written
            except asyncpg.DivisionByZeroError:
                available = await self._value(conn, "POOL_AVAILABLE", params)
                return Refusal("insufficient_credits", max(int(available or 0), 0))
            remaining = await self._value(conn, "KEY_REMAINING", params)
            return Refusal("key_limit_reached", max(int(remaining or 0), 0))

    async def settle(self, hold: Hold, record: GenerationRecord, *, now: datetime) -> bool:
        params = sql.settle_params(hold, record, now=now)
        params.update(sql.generation_params(record, hold.id))
        params.update(sql.rollup_params(record))
        statement = _ONE["SETTLE_ONE"]
        async with self._pool.acquire() as conn:
            if await conn.fetchval(statement.text, *statement.args(params)) == 1:
                return True
            # Not open: already resolved, or expired by the sweeper while the answer streamed.
            async with conn.transaction():
                if await self._exec(conn, "POST_EXPIRED_HOLD", params) != 1:
                    return False
                params["release"] = 0  # the sweeper already released it
                params["balance_after"] = await self._value(conn, "SETTLE_POOL", params)
                await self._exec(conn, "INSERT_USAGE_ENTRY", params)
                await self._exec(conn, "SETTLE_KEY", params)
                await self._exec(conn, "INSERT_GENERATION", params)
                await self._exec(conn, "UPSERT_ROLLUP", params)
        return True

    async def void(self, hold: Hold, *, now: datetime) -> bool:
        params = sql.void_params(hold, now=now)
        async with self._holds.acquire() as conn, conn.transaction():
            if await self._exec(conn, "VOID_HOLD", params) != 1:
                return False
            await self._exec(conn, "RELEASE_POOL", params)
            await self._exec(conn, "RELEASE_KEY", params)
        return True

    async def close(self) -> None:
        await self._pool.close()
        await self._holds.close()
