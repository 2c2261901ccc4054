"""Types the gateway exchanges with its store, and the store protocol (two small implementations)."""

from __future__ import annotations

import functools
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Protocol


@dataclass(frozen=True, slots=True)
class Windows:
    """Starts of the current spend windows, 00:00 UTC (weeks begin on Monday)."""

    day: date
    week: date
    month: date

    @classmethod
    def at(cls, now: datetime) -> Windows:
        return _windows_of(now.date())

    @classmethod
    def on(cls, day: date) -> Windows:
        return _windows_of(day)


@functools.lru_cache(maxsize=8)
def _windows_of(day: date) -> Windows:
    # Twice per request, and the answer changes once a day.
    return Windows(day=day, week=day - timedelta(days=day.weekday()), month=day.replace(day=1))


@dataclass(frozen=True, slots=True)
class Hold:
    id: str
    account_id: str
    key_id: str
    amount: int


@dataclass(frozen=True, slots=True)
class Refusal:
    """Why a reservation failed: the pool (`available`) or the key's limit (`key_remaining`)."""

    reason: str  # "insufficient_credits" | "key_limit_reached"
    available: int  # what could still be reserved, nano-USD (≥ 0)


def pool_refusal(available: int | None, key_remaining: int | None) -> Refusal:
    """The pool refused; the key's limit may refuse too (`key_remaining` None: no limit). The
    tighter of the two is reported, since it is what the client can actually afford."""
    pool = max(int(available or 0), 0)
    if key_remaining is not None and int(key_remaining) < pool:
        return key_refusal(key_remaining)
    return Refusal("insufficient_credits", pool)


def key_refusal(remaining: int | None) -> Refusal:
    """The key's limit refused (the pool agreed): what is left of the limit, never below 0."""
    return Refusal("key_limit_reached", max(int(remaining or 0), 0))


@dataclass(slots=True)
class GenerationRecord:
    """One activity row: metadata only, never a prompt or a completion."""

    id: str
    created_at: datetime
    account_id: str
    organization_id: str | None
    key_id: str
    key_hash: str
    user_id: str
    model: str
    provider: str
    endpoint_id: str
    upstream_model: str
    tokens_prompt: int = 0
    tokens_completion: int = 0
    tokens_reasoning: int = 0
    tokens_cached: int = 0
    cost: int = 0
    latency_ms: int = 0
    generation_time_ms: int = 0
    finish_reason: str | None = None
    streamed: bool = False
    cancelled: bool = False
    usage_estimated: bool = False
    status_code: int = 200
    external_user: str | None = None
    app_referer: str | None = None
    app_title: str | None = None


class GatewayStore(Protocol):
    async def reserve(self, hold: Hold, *, now: datetime, expires_at: datetime) -> Refusal | None:
        """Reserve `hold.amount` against the pool and the key's limit atomically; None on success."""

    async def settle(self, hold: Hold, record: GenerationRecord, *, now: datetime) -> bool:
        """Post the real cost, release the hold, count key usage, write the activity row and rollup.

        Exactly once per hold: False (and no change) when the hold was already posted or voided.
        A hold the sweeper expired is still billed (the client got the answer), without releasing twice.
        """

    async def void(self, hold: Hold, *, now: datetime) -> bool:
        """Release an unused hold; False when it had already resolved."""

    async def close(self) -> None: ...
