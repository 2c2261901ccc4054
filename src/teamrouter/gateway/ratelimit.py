"""Per-key request rate limit: a fixed one-minute window per key, in process.

Each instance counts on its own (N instances admit up to N × the limit); that is the documented
bound without Redis. It protects upstreams from a runaway client, not the pool: money is guarded by
holds in the database, never by this.
"""

from __future__ import annotations

import time

from teamrouter.errors import RateLimited


class KeyRateLimiter:
    def __init__(self, per_minute: int, *, clock: object = time.monotonic) -> None:
        self.per_minute = per_minute
        self._now = clock
        self._windows: dict[str, tuple[int, int]] = {}  # key id → (window number, count)

    def check(self, key_id: str) -> None:
        if self.per_minute <= 0:
            return
        now = self._now()  # type: ignore[operator]
        window = int(now // 60)
        current, count = self._windows.get(key_id, (window, 0))
        if current != window:
            count = 0
            if len(self._windows) > 100_000:  # bounded memory: forget idle keys at a window turn
                self._windows.clear()
        if count >= self.per_minute:
            retry_after = max(1, int(60 - now % 60))
            raise RateLimited(
                f"Rate limit of {self.per_minute} requests per minute exceeded for this key",
                code="key_rate_limited",
                retry_after=retry_after,
            )
        self._windows[key_id] = (window, count + 1)
