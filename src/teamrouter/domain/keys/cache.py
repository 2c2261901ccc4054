"""An in-process cache of resolved inference keys, keyed by key hash.

The hot path authenticates a key without touching the database while an entry is fresh. Every change
to a key invalidates its entry after commit (`uow.on_commit`), so this process sees the change at
once; other processes see it within the TTL (`settings.cache_ttl_seconds`), or at once with Redis
(`storage.invalidation`). The cache also remembers when this process last wrote `last_used_at` for
a key, so that write happens at most once a minute.

One cache per Runtime, kept in `rt.extras` (no module globals).
"""

from __future__ import annotations

import asyncio
import functools
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime

from teamrouter.listeners import KEY_LISTENERS, MEMBERSHIP_LISTENERS
from teamrouter.runtime import Runtime
from teamrouter.storage.cache import TTLCache

EXTRAS_KEY = "key_cache"
KEY_LISTENING = "key_cache_listening"  # this runtime's cache listens for key changes
MAX_ENTRIES = 10_000


@dataclass(frozen=True, slots=True)
class KeyAuth:
    """What the gateway needs to admit a request with a key (a snapshot of the row, no secret)."""

    key_id: str
    hash: str
    account_id: str
    organization_id: str | None
    creator_user_id: str
    management: bool
    disabled: bool
    deleted: bool
    spend_limit: int | None  # nano-USD; None = no limit
    limit_reset: str | None
    expires_at: datetime | None
    last_used_at: datetime | None


class KeyCache:
    def __init__(self, ttl_seconds: float, *, monotonic: Callable[[], float] = time.monotonic) -> None:
        self._entries: TTLCache[str, KeyAuth] = TTLCache(ttl_seconds, max_entries=MAX_ENTRIES, monotonic=monotonic)
        self._touched: dict[str, datetime] = {}
        self._loading: dict[str, asyncio.Future[KeyAuth | None]] = {}
        # Bumped by every invalidation: a load that raced one must not cache what it read.
        self._epoch = 0

    def get(self, key_hash: str) -> KeyAuth | None:
        return self._entries.get(key_hash)

    def put(self, value: KeyAuth) -> None:
        self._entries.put(value.hash, value)

    async def get_or_load(self, key_hash: str, load: Callable[[], Awaitable[KeyAuth | None]]) -> KeyAuth | None:
        """A fresh entry, or one load shared by every concurrent caller for the same hash.

        A burst of requests with a key not yet cached (start-up, TTL expiry) makes one database read,
        not one per request. Unknown keys (None) are not cached.
        """
        hit = self.get(key_hash)
        if hit is not None:
            return hit
        pending = self._loading.get(key_hash)
        if pending is not None:
            return await asyncio.shield(pending)
        future: asyncio.Future[KeyAuth | None] = asyncio.get_running_loop().create_future()
        self._loading[key_hash] = future
        epoch = self._epoch
        try:
            value = await load()
        except BaseException as exc:
            future.set_exception(exc)
            future.exception()  # retrieved: no "never retrieved" noise when nobody was waiting
            raise
        finally:
            self._loading.pop(key_hash, None)
        if value is not None and epoch == self._epoch:
            self.put(value)
        future.set_result(value)
        return value

    def invalidate(self, key_hash: str) -> None:
        self._epoch += 1
        self._entries.invalidate(key_hash)

    def clear(self) -> None:
        self._epoch += 1
        self._entries.clear()
        self._touched.clear()

    def last_touched(self, key_hash: str) -> datetime | None:
        return self._touched.get(key_hash)

    def note_touched(self, key_hash: str, at: datetime) -> None:
        if len(self._touched) >= MAX_ENTRIES and key_hash not in self._touched:
            self._touched.pop(next(iter(self._touched)))
        self._touched[key_hash] = at

    def forget_member(self, organization_id: str, user_id: str) -> None:
        """Drop the keys a person created in an org (their membership ended: keys may be disabled)."""
        self._epoch += 1
        self._entries.drop_where(
            lambda value: value.organization_id == organization_id and value.creator_user_id == user_id
        )

    def __len__(self) -> int:
        return len(self._entries)


def key_cache(rt: Runtime) -> KeyCache:
    """This runtime's key cache, created on first use."""
    cache = rt.extras.get(EXTRAS_KEY)
    if not isinstance(cache, KeyCache):
        cache = KeyCache(rt.settings.cache_ttl_seconds)
        rt.extras[EXTRAS_KEY] = cache
        # The orgs domain disables a leaver's keys in bulk and calls these after commit.
        rt.extras.setdefault(MEMBERSHIP_LISTENERS, []).append(cache.forget_member)
    _listen_for_key_changes(rt)
    return cache


def _listen_for_key_changes(rt: Runtime) -> None:
    """A changed key's listeners run after commit: this runtime's cache (whichever it holds then),
    and with Redis the publisher that tells other processes (storage.invalidation), whose own
    messages come back through the same list."""
    if not rt.extras.get(KEY_LISTENING):
        rt.extras[KEY_LISTENING] = True
        rt.extras.setdefault(KEY_LISTENERS, []).append(functools.partial(_invalidate_cached, rt))


def _invalidate_cached(rt: Runtime, key_hash: str) -> None:
    key_cache(rt).invalidate(key_hash)


def invalidate_after_commit(rt: Runtime, key_hash: str) -> Callable[[], None]:
    """A callback for `uow.on_commit` that drops one key from this process's cache (and, with
    Redis, from every other process's)."""

    def invalidate() -> None:
        _listen_for_key_changes(rt)
        for listener in list(rt.extras.get(KEY_LISTENERS, ())):
            listener(key_hash)

    return invalidate
