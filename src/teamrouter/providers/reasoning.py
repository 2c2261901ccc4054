"""What a request asks of a model's reasoning, read one way for every adapter.

Clients say it in two ways: OpenRouter's ``reasoning`` object (``effort`` or ``max_tokens``,
``enabled``, ``exclude``) and OpenAI's ``reasoning_effort``. `requested` reduces them to one
`ReasoningAsk`, an effort or a token budget, which each adapter puts in its upstream's terms (OpenAI's
``reasoning_effort``, Anthropic's thinking budget), converting between the two with OpenRouter's
documented shares of ``max_tokens``. ``exclude`` is no part of it: the gateway hides reasoning
itself (`base.ChatRequest.exclude_reasoning`). `checks.check_parameters` has validated the fields.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# OpenAI's values (its SDK's `ReasoningEffort`), which OpenRouter's `reasoning.effort` shares but for
# "max"; "none" asks for no reasoning.
EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh", "max")
# OpenRouter's share of max_tokens that each effort spends on reasoning. It documents none for "max":
# xhigh's, as all of max_tokens would leave the answer nothing.
EFFORT_SHARE = {"minimal": 0.1, "low": 0.2, "medium": 0.5, "high": 0.8, "xhigh": 0.95, "max": 0.95}
# What `enabled: true` alone asks for: OpenRouter's default effort.
DEFAULT_EFFORT = "medium"
# The efforts a token budget is turned into: the ones every OpenAI reasoning model accepts (o1 and
# o3 know no "minimal", "none" or "xhigh"). An effort the client names itself goes upstream as named.
BUDGET_EFFORTS = ("low", "medium", "high")


@dataclass(frozen=True, slots=True)
class ReasoningAsk:
    """Exactly one of `effort` and `max_tokens` is set."""

    effort: str | None = None  # one of EFFORTS
    max_tokens: int | None = None  # a budget of reasoning tokens
    # `enabled: false`: effort "none", but not named by the client. An upstream that takes only
    # efforts is then sent nothing, since models that do not reason (and OpenAI's before GPT-5.1)
    # refuse "none", which OpenRouter clients send whatever the model.
    off: bool = False


def requested(body: Mapping[str, Any]) -> ReasoningAsk | None:
    """The request's ask, or None when it asks nothing (the upstream's default then applies).

    ``reasoning_effort``, when sent, wins over the ``reasoning`` object: it is the upstream's own
    field, set on purpose. Within the object ``enabled: false`` wins (it is the same as effort
    "none"), then ``effort`` or ``max_tokens`` (never both), then ``enabled: true`` (the default
    effort). Null means absent, as everywhere in a request."""
    effort = body.get("reasoning_effort")
    if effort is not None:
        return ReasoningAsk(effort=effort)
    reasoning = body.get("reasoning")
    if not isinstance(reasoning, Mapping):
        return None
    if reasoning.get("enabled") is False:
        return ReasoningAsk(effort="none", off=True)
    if reasoning.get("effort") is not None:
        return ReasoningAsk(effort=reasoning["effort"])
    if reasoning.get("max_tokens") is not None:
        return ReasoningAsk(max_tokens=reasoning["max_tokens"])
    if reasoning.get("enabled") is True:
        return ReasoningAsk(effort=DEFAULT_EFFORT)
    return None


def effort_for_budget(tokens: int, max_tokens: int) -> str:
    """The effort whose share of ``max_tokens`` is nearest to a budget of ``tokens`` (the cheaper on
    a tie), among `BUDGET_EFFORTS`: OpenRouter's rule for a model that takes only an effort."""
    share = tokens / max_tokens if max_tokens > 0 else 1.0
    return min(BUDGET_EFFORTS, key=lambda effort: abs(EFFORT_SHARE[effort] - share))


def budget_for_effort(effort: str, max_tokens: int) -> int | None:
    """Reasoning tokens for an effort, its share of ``max_tokens``; None for "none"."""
    share = EFFORT_SHARE.get(effort)
    return None if share is None else int(max_tokens * share)
