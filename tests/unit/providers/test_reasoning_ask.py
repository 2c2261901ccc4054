"""One reading of a request's reasoning ask for every adapter, and OpenRouter's shares both ways."""

from __future__ import annotations

import typing

import pytest
from openai.types import shared

from teamrouter.providers.reasoning import (
    EFFORT_SHARE,
    EFFORTS,
    ReasoningAsk,
    budget_for_effort,
    effort_for_budget,
    requested,
)


def test_the_efforts_are_openais() -> None:
    # A value OpenAI's own SDK sends must not be refused by the gateway's check.
    assert set(typing.get_args(typing.get_args(shared.ReasoningEffort)[0])) == set(EFFORTS)
    assert set(EFFORT_SHARE) == set(EFFORTS) - {"none"}


@pytest.mark.parametrize(
    ("body", "ask"),
    [
        ({}, None),
        ({"reasoning": {"exclude": True}}, None),  # hiding is the gateway's; it asks for nothing
        ({"reasoning": {}}, None),
        ({"reasoning": {"enabled": True}}, ReasoningAsk(effort="medium")),
        ({"reasoning": {"enabled": False, "max_tokens": 500}}, ReasoningAsk(effort="none", off=True)),
        ({"reasoning": {"effort": "high", "enabled": True}}, ReasoningAsk(effort="high")),
        ({"reasoning": {"max_tokens": 500}}, ReasoningAsk(max_tokens=500)),
        ({"reasoning_effort": "low"}, ReasoningAsk(effort="low")),
        ({"reasoning_effort": "low", "reasoning": {"effort": "high"}}, ReasoningAsk(effort="low")),
        ({"reasoning_effort": "low", "reasoning": {"enabled": False}}, ReasoningAsk(effort="low")),
        ({"reasoning_effort": None, "reasoning": {"max_tokens": 9}}, ReasoningAsk(max_tokens=9)),
    ],
)
def test_requested(body: dict[str, object], ask: ReasoningAsk | None) -> None:
    assert requested(body) == ask


def test_a_budget_and_an_effort_map_into_each_other() -> None:
    for effort in ("low", "medium", "high"):
        budget = budget_for_effort(effort, 4000)
        assert budget is not None and effort_for_budget(budget, 4000) == effort
    assert budget_for_effort("none", 4000) is None
    assert effort_for_budget(50_000, 4000) == "high"  # beyond max_tokens: as much as there is
    assert effort_for_budget(1, 4000) == "low"  # a budget never becomes "minimal", which o1 and o3 refuse
