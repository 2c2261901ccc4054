"""Per-key request rate limits: a fixed one-minute window per key.

Without Redis each instance counts on its own (N instances admit up to N × the limit). With
`TEAMROUTER_REDIS_URL` every instance counts in one Redis counter per key and minute, so the limit
holds for the deployment; while Redis does not answer, each instance falls back to counting on its
own rather than refusing traffic. Either way this protects upstreams from a runaway client, not the
pool: money is guarded by holds in the database, never by this.
"""

from __future__ import annotations

import logging
import math
import time
from typing import Protocol

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from teamrouter.errors import RateLimited

log = logging.getLogger(__name__)
WINDOW_SECONDS = 60


class RateLimiter(Protocol):
    async def check(self, key_id: str) -> None:
        """Count one request of this key; raises RateLimited past the limit."""

    async def close(self) -> None: ...


def _refusal(per_minute: int, now: float) -> RateLimited:
    return RateLimited(
        f"Rate limit of {per_minute} requests per minute exceeded for this key",
        code="key_rate_limited",
        # Rounded up: a client that waits exactly this long finds the next window open.
        retry_after=max(1, math.ceil(WINDOW_SECONDS - now % WINDOW_SECONDS)),
    )


class KeyRateLimiter:
    """In process. Windows are wall-clock minutes, as in Redis, so `Retry-After` points at the next
    minute on the clock (a clock step only starts a window early or late)."""

    def __init__(self, per_minute: int, *, clock: object = time.time) -> None:
        self.per_minute = per_minute
        self._now = clock
        self._windows: dict[str, tuple[int, int]] = {}  # key id → (window number, count)

    async def check(self, key_id: str) -> None:
        self.count(key_id)

    def count(self, key_id: str) -> None:
        if self.per_minute <= 0:
            return
        now = self._now()  # type: ignore[operator]
        window = int(now // WINDOW_SECONDS)
        current, count = self._windows.get(key_id, (window, 0))
        if current != window:
            count = 0
            if len(self._windows) > 100_000:  # bounded memory: forget idle keys at a window turn
                self._windows.clear()
        if count >= self.per_minute:
            raise _refusal(self.per_minute, now)
        self._windows[key_id] = (window, count + 1)

    async def close(self) -> None:
        return None


class SharedKeyRateLimiter:
    """In Redis: INCR on `teamrouter:rate:<key id>:<minute>` (expiring after two minutes), one
    round trip per request. Minutes are wall-clock ones, so every instance agrees on the window."""

    def __init__(self, per_minute: int, client: aioredis.Redis, *, clock: object = time.time) -> None:
        self.per_minute = per_minute
        self._client = client
        self._now = clock
        self._fallback = KeyRateLimiter(per_minute, clock=clock)
        self._failing = False

    @classmethod
    def from_url(cls, per_minute: int, url: str) -> SharedKeyRateLimiter:
        # Short timeouts: a Redis that hangs must not hold requests up for long before the fallback.
        client = aioredis.Redis.from_url(url, socket_timeout=0.5, socket_connect_timeout=0.5)
        return cls(per_minute, client)

    async def check(self, key_id: str) -> None:
        if self.per_minute <= 0:
            return
        now = self._now()  # type: ignore[operator]
        name = f"teamrouter:rate:{key_id}:{int(now // WINDOW_SECONDS)}"
        try:
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.incr(name)
                pipe.expire(name, 2 * WINDOW_SECONDS)
                count, _ = await pipe.execute()
        except (RedisError, OSError):
            if not self._failing:
                log.warning("Redis unavailable: rate limits counted per instance until it answers", exc_info=True)
                self._failing = True
            self._fallback.count(key_id)
            return
        if self._failing:
            log.info("Redis answers again: rate limits shared across instances")
            self._failing = False
        if int(count) > self.per_minute:
            raise _refusal(self.per_minute, now)

    async def close(self) -> None:
        await self._client.aclose()


def make_rate_limiter(per_minute: int, redis_url: str | None) -> RateLimiter:
    if redis_url and per_minute > 0:
        return SharedKeyRateLimiter.from_url(per_minute, redis_url)
    return KeyRateLimiter(per_minute)
