"""Request bodies that every provider would refuse (or guess at) are a 400 naming the field."""

from __future__ import annotations

import json

import pytest

from teamrouter.providers.base import ChatRequest
from teamrouter.providers.checks import MAX_NESTING, RequestError, check_nesting

USER = {"role": "user", "content": "hi"}


def chat(**fields: object) -> dict[str, object]:
    return {"model": "m/x", "messages": [USER], **fields}


@pytest.mark.parametrize(
    ("body", "field"),
    [
        (chat(messages=[{"role": "wizard", "content": "hi"}]), "messages[0].role"),
        (chat(messages=[{"role": 3, "content": "hi"}]), "messages[0]"),
        (chat(messages=[USER, {"role": "user"}]), "messages[1].content"),
        (chat(messages=[{"role": "user", "content": None}]), "messages[0].content"),
        (chat(messages=[{"role": "user", "content": 42}]), "messages[0].content"),
        (chat(messages=[{"role": "assistant", "content": None}]), "messages[0].content"),
        (chat(messages=[{"role": "user", "content": ["text"]}]), "messages[0].content[0]"),
        (chat(messages=[{"role": "user", "content": [{"type": "text", "text": 5}]}]), "messages[0].content[0].text"),
        (chat(messages=[{"role": "tool", "content": "rain"}]), "messages[0].tool_call_id"),
        (chat(temperature="hot"), "temperature"),
        (chat(temperature=True), "temperature"),
        (chat(temperature=2.5), "temperature"),
        (chat(top_p=-0.1), "top_p"),
        (chat(presence_penalty=3), "presence_penalty"),
        (chat(top_k=1.5), "top_k"),
        (chat(top_logprobs=21, logprobs=True), "top_logprobs"),
        (chat(top_logprobs=2), "top_logprobs"),  # without logprobs: true, as OpenAI refuses it
        (chat(top_logprobs=2, logprobs=False), "top_logprobs"),
        (chat(seed="7"), "seed"),
        (chat(logprobs="yes"), "logprobs"),
        (chat(response_format="json"), "response_format"),
        (chat(tools="x"), "tools"),
        (chat(tools=["x"]), "tools"),
        (chat(stop=5), "stop"),
        (chat(stop=["a", 1]), "stop"),
        (chat(tool_choice=1), "tool_choice"),
        (chat(include_reasoning="false"), "include_reasoning"),
        (chat(reasoning={"exclude": "true"}), "reasoning.exclude"),
        (chat(reasoning={"exclude": 1}), "reasoning.exclude"),
        (chat(reasoning={"enabled": "false"}), "reasoning.enabled"),
        (chat(reasoning={"effort": "extreme"}), "reasoning.effort"),
        (chat(reasoning={"effort": "HIGH"}), "reasoning.effort"),
        (chat(reasoning={"effort": 2}), "reasoning.effort"),
        (chat(reasoning={"max_tokens": 0}), "reasoning.max_tokens"),
        (chat(reasoning={"max_tokens": "2000"}), "reasoning.max_tokens"),
        (chat(reasoning={"max_tokens": True}), "reasoning.max_tokens"),
        (chat(reasoning={"effort": "high", "max_tokens": 2000}), "reasoning"),  # one or the other
        (chat(reasoning_effort="extreme"), "reasoning_effort"),
        (chat(reasoning_effort=["low"]), "reasoning_effort"),
    ],
)
def test_bad_chat_bodies_name_the_field(body: dict[str, object], field: str) -> None:
    with pytest.raises(RequestError) as raised:
        ChatRequest.parse(body)
    assert raised.value.field == field


@pytest.mark.parametrize(
    "body",
    [
        chat(),
        chat(temperature=0, top_p=1, frequency_penalty=-2, presence_penalty=2.0, top_k=0, seed=-3, stop="\n"),
        chat(temperature=None, tools=None, stop=None),  # null means absent
        chat(stop=["a", "b"], tool_choice="auto", tools=[{"type": "function", "function": {"name": "f"}}]),
        chat(tool_choice={"type": "function", "function": {"name": "f"}}, response_format={"type": "json_object"}),
        chat(
            messages=[
                {"role": "developer", "content": [{"type": "text", "text": "Be brief."}]},
                {"role": "user", "content": [{"type": "image_url", "image_url": {"url": "data:,"}}]},
                {"role": "assistant", "content": None, "tool_calls": [{"id": "c1", "type": "function"}]},
                {"role": "tool", "tool_call_id": "c1", "content": "rain"},
                {"role": "assistant", "content": ""},
            ]
        ),
        chat(unknown_parameter={"goes": "upstream untouched"}),
        chat(reasoning={"effort": "xhigh", "enabled": True, "exclude": False}, reasoning_effort="none"),
        chat(reasoning={"max_tokens": 2000, "effort": None, "enabled": None}, reasoning_effort=None),
    ],
)
def test_good_chat_bodies_pass(body: dict[str, object]) -> None:
    assert ChatRequest.parse(body).messages == body["messages"]


@pytest.mark.parametrize(
    ("fields", "excluded"),
    [
        ({}, False),
        ({"reasoning": {"effort": "high"}}, False),
        ({"reasoning": {"exclude": False}}, False),
        ({"reasoning": {"exclude": None}}, False),  # null means absent
        ({"include_reasoning": True}, False),
        ({"include_reasoning": None}, False),
        ({"reasoning": {"exclude": True}}, True),
        ({"reasoning": {"max_tokens": 2000, "exclude": True}}, True),
        ({"include_reasoning": False}, True),  # OpenRouter's legacy spelling of the same
        ({"include_reasoning": False, "reasoning": {"exclude": False}}, True),  # either one hides it
    ],
)
def test_reasoning_can_be_excluded_from_the_answer(fields: dict[str, object], excluded: bool) -> None:
    assert ChatRequest.parse(chat(**fields)).exclude_reasoning is excluded


@pytest.mark.parametrize(
    ("prompt", "ok"),
    [
        ("", True),
        ("Once upon", True),
        (["a", "b"], True),
        ([1, 2, 3], True),
        ([[1, 2], [3]], True),
        ([], False),
        ([[]], False),
        (["a", 1], False),
        ([True], False),
        (None, False),
        (42, False),
    ],
)
def test_legacy_prompts(prompt: object, ok: bool) -> None:
    body = {"model": "m/x", "prompt": prompt}
    if ok:
        assert ChatRequest.parse(body, kind="completion").prompt == prompt
    else:
        with pytest.raises(RequestError) as raised:
            ChatRequest.parse(body, kind="completion")
        assert raised.value.field == "prompt"


@pytest.mark.parametrize(
    ("logprobs", "chat_ok", "legacy_ok"),
    [
        (True, True, True),  # OpenRouter's one schema sends the switch to text completions too
        (False, True, True),
        (0, False, True),
        (20, False, True),
        (21, False, False),
        ("2", False, False),
    ],
)
def test_logprobs_is_a_switch_in_chat_and_a_switch_or_a_count_in_text_completions(
    logprobs: object, chat_ok: bool, legacy_ok: bool
) -> None:
    for body, kind, ok in (
        (chat(logprobs=logprobs), "chat", chat_ok),
        ({"model": "m/x", "prompt": "a", "logprobs": logprobs}, "completion", legacy_ok),
    ):
        if ok:
            ChatRequest.parse(body, kind=kind)
        else:
            with pytest.raises(RequestError) as raised:
                ChatRequest.parse(body, kind=kind)
            assert raised.value.field == "logprobs", kind


def test_nesting_is_bounded_and_brackets_inside_strings_do_not_count() -> None:
    def body(depth: int, text: str = "hi") -> tuple[bytes, object]:
        raw = '{"model":"m","messages":[{"role":"user","content":' + json.dumps(text) + '}],"extra":'
        raw += "[" * depth + "1" + "]" * depth + "}"
        return raw.encode(), json.loads(raw)

    check_nesting(*body(MAX_NESTING - 1))  # the body object itself is the first level
    with pytest.raises(RequestError) as refused:
        check_nesting(*body(MAX_NESTING))
    assert refused.value.field == "body" and str(MAX_NESTING) in refused.value.problem
    check_nesting(*body(3, text="[" * 5_000))  # many brackets, all in a string
