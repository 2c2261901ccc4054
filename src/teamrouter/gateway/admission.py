"""Admission: from a parsed request and an authenticated key to a reserved hold and ordered endpoints.

The hold covers the worst case of every candidate endpoint (the prompt estimate plus the clamped
completion budget, times price), so a fallback to a pricier endpoint never needs a second reservation
and a provider that honours `max_tokens` can never cost more than was held.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Protocol

from teamrouter.clock import Clock
from teamrouter.errors import KeyLimitReached, PaymentRequired
from teamrouter.gateway.catalog import Endpoint
from teamrouter.gateway.pricing import clamp_max_tokens
from teamrouter.gateway.store.base import GatewayStore, Hold
from teamrouter.ids import new_id
from teamrouter.money import to_usd
from teamrouter.providers.base import ChatRequest


class KeyInfo(Protocol):
    """What the hot path needs of an inference key (resolved and cached by the keys domain)."""

    @property
    def key_id(self) -> str: ...
    @property
    def hash(self) -> str: ...
    @property
    def account_id(self) -> str: ...
    @property
    def organization_id(self) -> str | None: ...
    @property
    def creator_user_id(self) -> str: ...


@dataclass(frozen=True, slots=True)
class Admission:
    request: ChatRequest
    candidates: tuple[Endpoint, ...]
    prompt_estimate: int
    hold: Hold

    def budget(self, endpoint: Endpoint) -> int:
        """Completion tokens per choice sent upstream as `max_tokens` for this endpoint."""
        return clamp_max_tokens(self.request.max_tokens, cap=endpoint.max_completion_tokens)


def hold_amount(request: ChatRequest, candidates: tuple[Endpoint, ...], prompt_estimate: int) -> int:
    return max(_worst_case(e, request, prompt_estimate) for e in candidates)


def _worst_case(endpoint: Endpoint, request: ChatRequest, prompt_estimate: int) -> int:
    budget = clamp_max_tokens(request.max_tokens, cap=endpoint.max_completion_tokens)
    return endpoint.worst_case(prompt_estimate, budget, request.n)


async def admit(
    store: GatewayStore,
    *,
    key: KeyInfo,
    request: ChatRequest,
    candidates: tuple[Endpoint, ...],
    clock: Clock,
    hold_ttl_seconds: int,
) -> Admission:
    prompt_estimate = request.prompt_tokens_estimate()
    amount = hold_amount(request, candidates, prompt_estimate)
    hold = Hold(id=new_id("hold"), account_id=key.account_id, key_id=key.key_id, amount=amount)
    now = clock.now()
    refusal = await store.reserve(hold, now=now, expires_at=now + timedelta(seconds=hold_ttl_seconds))
    if refusal is not None:
        # The budget of the endpoint whose worst case set the hold (a fallback model's cap, when the
        # request gave no max_tokens), so that asking for `affordable` tokens is then admitted.
        costliest = max(candidates, key=lambda e: _worst_case(e, request, prompt_estimate))
        budget = clamp_max_tokens(request.max_tokens, cap=costliest.max_completion_tokens)
        # Consistent with the hold: enough for the priciest candidate, since any may serve it.
        affordable = min(
            e.prices.affordable_completion_tokens(prompt_estimate, refusal.available, request.n) for e in candidates
        )
        message = (
            f"This request requires more credits, or fewer max_tokens. You requested up to {budget} tokens, "
            f"but can only afford {affordable}."
        )
        error_type = KeyLimitReached if refusal.reason == "key_limit_reached" else PaymentRequired
        if refusal.reason == "key_limit_reached":
            message = f"Key limit reached. {message}"
        raise error_type(
            message,
            requested_tokens=budget,
            affordable_tokens=affordable,
            available=to_usd(refusal.available),
            required=to_usd(amount),
        )
    return Admission(request=request, candidates=candidates, prompt_estimate=prompt_estimate, hold=hold)
