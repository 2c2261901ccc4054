"""The PostgreSQL hot-path store: asyncpg with statements prepared once per connection.

Every guarded UPDATE is re-checked by PostgreSQL under concurrency (READ COMMITTED re-evaluates the
WHERE on the latest row version), so admission holds across processes and machines.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

import asyncpg

from teamrouter.gateway.store import sql
from teamrouter.gateway.store.base import GenerationRecord, Hold, Refusal


class _Statement:
    def __init__(self, text: str) -> None:
        self.text, self.names = sql.numbered(text)

    def args(self, params: Mapping[str, Any]) -> list[Any]:
        return [params[name] for name in self.names]


_S = {
    name: _Statement(getattr(sql, name))
    for name in (
        "RESERVE_POOL", "POOL_AVAILABLE", "RESERVE_KEY", "KEY_REMAINING", "INSERT_HOLD", "POST_HOLD",
        "POST_EXPIRED_HOLD", "VOID_HOLD", "SETTLE_POOL", "RELEASE_POOL", "SETTLE_KEY", "RELEASE_KEY",
        "INSERT_USAGE_ENTRY", "INSERT_GENERATION", "UPSERT_ROLLUP",
    )
}  # fmt: skip


def _rows(status: str) -> int:
    # asyncpg returns the command tag, e.g. "UPDATE 1".
    return int(status.rsplit(" ", 1)[-1])


class PostgresStore:
    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool

    @classmethod
    async def connect(cls, url: str, *, min_size: int = 2, max_size: int = 10) -> PostgresStore:
        pool = await asyncpg.create_pool(url, min_size=min_size, max_size=max_size)
        return cls(pool)

    async def _exec(self, conn: Any, name: str, params: Mapping[str, Any]) -> int:
        statement = _S[name]
        return _rows(await conn.execute(statement.text, *statement.args(params)))

    async def _value(self, conn: Any, name: str, params: Mapping[str, Any]) -> Any:
        statement = _S[name]
        return await conn.fetchval(statement.text, *statement.args(params))

    async def reserve(self, hold: Hold, *, now: datetime, expires_at: datetime) -> Refusal | None:
        params = sql.reserve_params(hold, now=now, expires_at=expires_at)
        refusal: Refusal | None = None
        async with self._pool.acquire() as conn:
            transaction = conn.transaction()
            await transaction.start()
            try:
                if await self._exec(conn, "RESERVE_POOL", params) != 1:
                    available = await self._value(conn, "POOL_AVAILABLE", params)
                    refusal = Refusal("insufficient_credits", max(int(available or 0), 0))
                elif await self._exec(conn, "RESERVE_KEY", params) != 1:
                    remaining = await self._value(conn, "KEY_REMAINING", params)
                    refusal = Refusal("key_limit_reached", max(int(remaining or 0), 0))
                else:
                    await self._exec(conn, "INSERT_HOLD", params)
            except BaseException:
                await transaction.rollback()
                raise
            if refusal is None:
                await transaction.commit()
            else:
                await transaction.rollback()
        return refusal

    async def settle(self, hold: Hold, record: GenerationRecord, *, now: datetime) -> bool:
        params = sql.settle_params(hold, record, now=now)
        async with self._pool.acquire() as conn, conn.transaction():
            if await self._exec(conn, "POST_HOLD", params) != 1:
                if await self._exec(conn, "POST_EXPIRED_HOLD", params) != 1:
                    return False
                params["release"] = 0
            params["balance_after"] = await self._value(conn, "SETTLE_POOL", params)
            await self._exec(conn, "INSERT_USAGE_ENTRY", params)
            await self._exec(conn, "SETTLE_KEY", params)
            await self._exec(conn, "INSERT_GENERATION", sql.generation_params(record, hold.id))
            await self._exec(conn, "UPSERT_ROLLUP", sql.rollup_params(record))
        return True

    async def void(self, hold: Hold, *, now: datetime) -> bool:
        params = sql.void_params(hold, now=now)
        async with self._pool.acquire() as conn, conn.transaction():
            if await self._exec(conn, "VOID_HOLD", params) != 1:
                return False
            await self._exec(conn, "RELEASE_POOL", params)
            await self._exec(conn, "RELEASE_KEY", params)
        return True

    async def close(self) -> None:
        await self._pool.close()
