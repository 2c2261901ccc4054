"""Cache invalidation across processes over Redis pub/sub (`TEAMROUTER_REDIS_URL`).

Each process keeps resolved keys, memberships and org settings in TTL caches. A change invalidates
this process's entries after it commits (the listener lists in `rt.extras`). With Redis, the same
invalidation is also published on one channel, and every other process applies it as it arrives
(milliseconds), so a disabled key or a removed member stops working everywhere at once rather
than within the TTL. The TTL stays the safety net: while Redis is down (logged once), caches simply
age out as without Redis; messages sent meanwhile are lost, which the TTL covers.

Messages carry ids only (a key's hash, org and user ids, and the sender's process id), never a
secret.
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import json
import logging
from collections.abc import Callable
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from teamrouter.ids import new_id
from teamrouter.listeners import KEY_LISTENERS, MEMBERSHIP_LISTENERS, ORG_SETTINGS_LISTENERS
from teamrouter.runtime import Runtime

log = logging.getLogger(__name__)

CHANNEL = "teamrouter:invalidate"
# What changed → the rt.extras list of this process's listeners for it (each takes the ids).
LISTENERS = {
    "key": KEY_LISTENERS,
    "member": MEMBERSHIP_LISTENERS,
    "org_settings": ORG_SETTINGS_LISTENERS,
}
ARITY = {"key": 1, "member": 2, "org_settings": 1}
RECONNECT_SECONDS = 1.0
# A subscription reads with no end in sight: a PING this often, and a PONG owed within the second
# interval, tell a live Redis from one whose packets vanish (the read alone would wait forever).
PING_SECONDS = 10.0


class Invalidations:
    """Publishes this process's invalidations and applies everyone else's."""

    def __init__(self, rt: Runtime, client: aioredis.Redis) -> None:
        self._rt = rt
        self._client = client
        self._origin = new_id("proc")  # messages from this process are already applied here
        self._publishers: dict[str, Callable[..., None]] = {}
        self._sending: set[asyncio.Task[None]] = set()
        self._listener: asyncio.Task[None] | None = None
        self._failing = False
        self.subscribed = asyncio.Event()  # set while the subscription is live (tests wait on it)

    @classmethod
    def start(cls, rt: Runtime, url: str) -> Invalidations:
        # Publishing runs after commit, in the background, and gives up after 5 s: a Redis that hangs
        # neither holds up the write that invalidates nor piles up connections.
        client = aioredis.Redis.from_url(url, socket_connect_timeout=0.5, socket_timeout=5.0)
        bus = cls(rt, client)
        for kind, extra in LISTENERS.items():
            publish = functools.partial(bus._publish, kind)
            bus._publishers[kind] = publish
            rt.extras.setdefault(extra, []).append(publish)
        bus._listener = asyncio.get_running_loop().create_task(bus._listen(), name="cache-invalidations")
        return bus

    def _publish(self, kind: str, *ids: str) -> None:
        """A listener like the caches' (sync, after commit): sends in the background."""
        message = json.dumps({"origin": self._origin, "kind": kind, "ids": list(ids)})
        task = asyncio.get_running_loop().create_task(self._send(message))
        self._sending.add(task)
        task.add_done_callback(self._sending.discard)

    async def _send(self, message: str) -> None:
        try:
            await self._client.publish(CHANNEL, message)
        except (RedisError, OSError):
            self._down()

    async def _listen(self) -> None:
        """Subscribed for as long as the process lives; resubscribes after any failure."""
        while True:
            try:
                await self._subscribed()
            except (RedisError, OSError, TimeoutError):
                self._down()
            except Exception:  # a bug must not end cross-instance invalidation for good
                log.exception("cache invalidation listener failed; resubscribing")
            self.subscribed.clear()
            await asyncio.sleep(RECONNECT_SECONDS)

    async def _subscribed(self) -> None:
        loop = asyncio.get_running_loop()
        async with self._client.pubsub() as pubsub:
            await pubsub.subscribe(CHANNEL)
            self.subscribed.set()
            if self._failing:
                log.info("Redis answers again: cache invalidations shared across instances")
                self._failing = False
            last_heard = pinged = loop.time()
            while True:
                message = await pubsub.get_message(timeout=1.0)
                now = loop.time()
                if message is not None:
                    last_heard = now
                    if message.get("type") == "message":
                        self._apply(message.get("data"))
                if now - pinged >= PING_SECONDS:
                    await pubsub.ping()
                    pinged = now
                if now - last_heard > 2 * PING_SECONDS + 1:
                    raise TimeoutError("Redis stopped answering the subscription's pings")

    def _down(self) -> None:
        if not self._failing:
            log.warning("Redis unavailable: other instances see changes within the cache TTL until it answers")
            self._failing = True

    def _apply(self, data: Any) -> None:
        try:
            message = json.loads(data)
            kind, ids, origin = message["kind"], message["ids"], message["origin"]
        except (ValueError, TypeError, KeyError):
            message = kind = ids = origin = None
        valid = (
            kind in ARITY and isinstance(ids, list) and len(ids) == ARITY[kind] and all(isinstance(i, str) for i in ids)
        )
        if not valid:
            log.warning("ignored a malformed cache invalidation")  # another version, or not ours
            return
        if origin == self._origin:
            return
        mine = self._publishers[kind]
        for listener in list(self._rt.extras.get(LISTENERS[kind], ())):
            if listener is mine:
                continue  # applied here, not sent on again
            try:
                listener(*ids)
            except Exception:
                log.exception("a cache listener failed on an invalidation from another instance")

    async def close(self) -> None:
        if self._listener is not None:
            self._listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._listener
        if self._sending:
            await asyncio.wait(self._sending, timeout=1.0)
            for task in list(self._sending):
                task.cancel()  # a Redis that hangs must not hold the shutdown
        for kind, extra in LISTENERS.items():
            with contextlib.suppress(ValueError):
                self._rt.extras.get(extra, []).remove(self._publishers[kind])
        await self._client.aclose()
