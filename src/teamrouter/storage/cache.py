"""A small time-bounded, size-bounded cache for per-process lookups on the hot path (resolved keys,
org routing policies). Entries expire `ttl_seconds` after they were stored; past `max_entries` the
oldest insertion goes, so a flood of distinct keys cannot grow memory."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Generic, TypeVar

K = TypeVar("K")
V = TypeVar("V")


class TTLCache(Generic[K, V]):
    def __init__(
        self, ttl_seconds: float, *, max_entries: int = 10_000, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self.ttl = ttl_seconds
        self.max_entries = max_entries
        self._monotonic = monotonic
        self._entries: dict[K, tuple[float, V]] = {}

    def get(self, key: K) -> V | None:
        found = self._entries.get(key)
        if found is None:
            return None
        if self._monotonic() - found[0] >= self.ttl:
            del self._entries[key]
            return None
        return found[1]

    def put(self, key: K, value: V) -> None:
        if len(self._entries) >= self.max_entries and key not in self._entries:
            self._entries.pop(next(iter(self._entries)))
        self._entries[key] = (self._monotonic(), value)

    def invalidate(self, key: K) -> None:
        self._entries.pop(key, None)

    def drop_where(self, stale: Callable[[V], bool]) -> None:
        for key in [key for key, (_, value) in self._entries.items() if stale(value)]:
            del self._entries[key]

    def clear(self) -> None:
        self._entries.clear()

    def __len__(self) -> int:
        return len(self._entries)
