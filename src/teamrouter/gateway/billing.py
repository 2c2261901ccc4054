"""What a finished (or broken) generation costs, from the usage the upstream reported or an estimate.

- Zero-completion insurance: an upstream that produced no completion tokens and no finish reason,
  or finished with `error`, is not billed. That includes a stream that broke (an error event, a
  reset, a cut) before it delivered any output: an overloaded upstream's error right after its
  first event costs nothing.
- A client that went away is billed at least the prompt plus what was delivered, and an upstream
  that broke mid-answer the prompt plus what it delivered — never silently zero.
- A stream that never reported usage is billed from the prompt estimate and the characters seen,
  and the activity row says so (`usage_estimated`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from teamrouter.gateway.catalog import Endpoint
from teamrouter.money import to_usd
from teamrouter.providers.base import Usage


@dataclass(frozen=True, slots=True)
class Bill:
    usage: Usage
    cost: int  # nano-USD
    estimated: bool


def bill(
    endpoint: Endpoint,
    *,
    usage: Usage,
    finish_reason: str | None,
    cancelled: bool = False,
    broken: bool = False,
) -> Bill:
    """`usage` is the upstream's, or an estimate flagged `estimated` (providers.base.billable_usage)."""
    estimated = usage.estimated
    # The client's own cancellation is never insured: the prompt was processed at its request.
    # A break after some output is billed for it (TESTPLAN C17); one before any output is not.
    nothing_delivered = usage.completion_tokens == 0 and finish_reason in (None, "error")
    insured = not cancelled and (nothing_delivered or (finish_reason == "error" and not broken))
    if insured:
        return Bill(usage=usage, cost=0, estimated=estimated)
    return Bill(
        usage=usage,
        cost=endpoint.cost(usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens, usage.cache_write_tokens),
        estimated=estimated,
    )


def cost_fields(charged: Bill) -> dict[str, Any]:
    """What an answer's `usage` says of its cost, beside the token counts."""
    return {"cost": to_usd(charged.cost), "is_byok": False, "estimated": charged.estimated}


def usage_json(charged: Bill) -> dict[str, Any]:
    """A whole answer's `usage`: the OpenAI token counts and the cost fields."""
    usage: dict[str, Any] = charged.usage.to_openai()
    usage.update(cost_fields(charged))
    return usage
