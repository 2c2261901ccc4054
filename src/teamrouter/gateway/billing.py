"""What a finished (or broken) generation costs, from the usage the upstream reported or an estimate.

- Zero-completion insurance: an upstream that produced no completion tokens and no finish reason,
  or finished with `error`, is not billed.
- A client that went away, or an upstream that broke mid-stream, is billed at least the prompt plus
  what was delivered — never silently zero.
- A stream that never reported usage is billed from the prompt estimate and the characters seen,
  and the activity row says so (`usage_estimated`).
"""

from __future__ import annotations

from dataclasses import dataclass

from teamrouter.gateway.catalog import Endpoint
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
    # The prompt was processed in every case below, so only a clean "nothing happened" is free.
    insured = (
        not cancelled
        and not broken
        and (finish_reason == "error" or (usage.completion_tokens == 0 and finish_reason is None))
    )
    if insured:
        return Bill(usage=usage, cost=0, estimated=estimated)
    return Bill(
        usage=usage,
        cost=endpoint.cost(usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens),
        estimated=estimated,
    )
