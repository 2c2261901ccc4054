"""Reasoning through a real teamrouter process to the fake upstreams: asked of each upstream in its
own terms (OpenAI's `reasoning_effort`, Anthropic's `thinking`), shown in OpenRouter's shape by
default, never returned when the request excludes it (`reasoning.exclude`, or the legacy
`include_reasoning: false`), and billed the same either way, whole answers and streams alike."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from openrouter import components
from openrouter.utils import eventstreaming
from openrouter.utils.unmarshal_json_response import unmarshal_json_response
from sqlalchemy import select
from tests.support.gateway import funded_person, script

from teamrouter.domain.activity.models import Generation
from teamrouter.domain.credits.models import CreditAccount
from teamrouter.ids import new_id

pytestmark = pytest.mark.db

REASONING_FIELDS = {"reasoning", "reasoning_content", "reasoning_details"}
USAGE = {"prompt_tokens": 100, "completion_tokens": 50, "reasoning_tokens": 30}
THOUGHT = "Two and two make four."
REPLY = "The answer is 4."
# Where the upstream puts its reasoning: Anthropic's thinking block, an OpenAI-compatible upstream's
# `reasoning` or vLLM's and DeepSeek's `reasoning_content`; the client finds it as `reasoning`
# whichever it was, as OpenRouter names it.
UPSTREAMS = [
    pytest.param("test/claude", {}, "reasoning", id="anthropic"),
    pytest.param("test/chat", {"reasoning_field": "reasoning"}, "reasoning", id="openai-reasoning"),
    pytest.param("test/chat", {}, "reasoning", id="openai-reasoning_content"),
]
# Both ask Anthropic for thinking (a budget above its 1,024-token minimum fits in max_tokens).
EXCLUSIONS = [
    pytest.param({"reasoning": {"exclude": True}}, id="exclude"),
    pytest.param({"include_reasoning": False, "reasoning_effort": "low"}, id="include_reasoning-false"),
]


@pytest.fixture
def client(gateway):
    with httpx.Client(base_url=gateway.base_url, timeout=30) as c:
        yield c


def ask(client: httpx.Client, key: str, body: dict[str, Any], *, stream: bool) -> tuple[dict[str, Any], dict[str, Any]]:
    """The answer's message (for a stream, its deltas merged: strings joined) and its usage."""
    r = client.post(
        "/api/v1/chat/completions", headers={"Authorization": f"Bearer {key}"}, json={**body, "stream": stream}
    )
    assert r.status_code == 200, r.text
    if not stream:
        answer = r.json()
        return answer["choices"][0]["message"], answer["usage"]
    events = [json.loads(line[6:]) for line in r.text.splitlines() if line.startswith("data: {")]
    merged: dict[str, Any] = {}
    for event in events:
        for choice in event["choices"]:
            for key, value in choice["delta"].items():
                joined = isinstance(value, str) and isinstance(merged.get(key), str)
                merged[key] = merged[key] + value if joined else value
    assert events[-1]["choices"] == []
    return merged, events[-1]["usage"]


async def balance(rt, account_id: str) -> int:
    async with rt.db.read() as s:
        return (await s.get_one(CreditAccount, account_id)).balance


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("exclusion", EXCLUSIONS)
@pytest.mark.parametrize(("model", "upstream", "field"), UPSTREAMS)
async def test_excluded_reasoning_is_not_returned_and_is_billed_the_same(
    client, gw_rt, model, upstream, field, exclusion, stream
):
    who = await funded_person(gw_rt, usd="1")
    content = script(content=REPLY, reasoning=THOUGHT, usage=USAGE, **upstream)
    asked = {"model": model, "messages": [{"role": "user", "content": content}], "max_tokens": 2000}
    start = await balance(gw_rt, who.account_id)

    shown, shown_usage = ask(client, who.key, {**asked, "reasoning": {"effort": "low"}}, stream=stream)
    assert shown[field] == THOUGHT and shown["content"] == REPLY
    middle = await balance(gw_rt, who.account_id)

    hidden, hidden_usage = ask(client, who.key, {**asked, **exclusion}, stream=stream)
    assert not REASONING_FIELDS & set(hidden), hidden
    assert hidden["content"] == REPLY
    # Reasoning tokens are output tokens, billed whether or not they are returned.
    assert hidden_usage == shown_usage and hidden_usage["completion_tokens"] == 50
    assert start - middle == middle - await balance(gw_rt, who.account_id) > 0


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize(("model", "upstream", "field"), UPSTREAMS)
async def test_withheld_reasoning_counts_in_the_estimate_of_an_answer_without_usage(
    client, gw_rt, model, upstream, field, stream
):
    who = await funded_person(gw_rt, usd="1")
    content = script(content=REPLY, reasoning=THOUGHT, no_usage=True, **upstream)
    body = {
        "model": model,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": 2000,
        "reasoning": {"exclude": True},
    }
    hidden, usage = ask(client, who.key, body, stream=stream)
    assert not REASONING_FIELDS & set(hidden) and hidden["content"] == REPLY
    # About four characters a token, over everything the model produced: the reply and its reasoning.
    assert usage["completion_tokens"] == math.ceil(len(REPLY + THOUGHT) / 4)
    async with gw_rt.db.read() as s:
        row = await s.scalar(select(Generation).where(Generation.account_id == who.account_id))
    assert row is not None and row.usage_estimated and row.tokens_completion == usage["completion_tokens"]


@pytest.mark.parametrize("stream", [False, True], ids=["whole", "stream"])
@pytest.mark.parametrize("exclusion", EXCLUSIONS)
@pytest.mark.parametrize("model", ["test/chat", "test/claude"])
async def test_exclusion_never_reaches_an_upstream_that_refuses_unknown_fields(client, gw_rt, model, exclusion, stream):
    # As api.openai.com and api.anthropic.com do: an unknown top-level field is a 400, not retried.
    who = await funded_person(gw_rt, usd="1")
    content = script(content=REPLY, reasoning=THOUGHT, usage=USAGE, strict=True)
    body = {"model": model, "messages": [{"role": "user", "content": content}], "max_tokens": 2000}
    hidden, usage = ask(client, who.key, {**body, **exclusion}, stream=stream)
    assert hidden["content"] == REPLY and not REASONING_FIELDS & set(hidden)
    assert usage["completion_tokens"] == 50
    # The strict upstream does refuse what it does not know, through the gateway.
    r = client.post(
        "/api/v1/chat/completions",
        headers={"Authorization": f"Bearer {who.key}"},
        json={**body, "model": "test/chat", "top_k": 5, "stream": stream},
    )
    assert r.status_code == 400 and "Unrecognized request argument supplied: top_k" in r.text


class Recording(httpx.BaseTransport):
    """The network, keeping every response's bytes as they arrive (what a client was really sent)."""

    def __init__(self) -> None:
        self.inner = httpx.HTTPTransport()
        self.received = bytearray()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        response = self.inner.handle_request(request)
        stream = response.stream
        assert isinstance(stream, httpx.SyncByteStream)

        def tee() -> Iterator[bytes]:
            for part in stream:
                self.received += part
                yield part

        return httpx.Response(response.status_code, headers=response.headers, stream=Tee(tee(), stream))

    def close(self) -> None:
        self.inner.close()


class Tee(httpx.SyncByteStream):
    def __init__(self, parts: Iterator[bytes], inner: httpx.SyncByteStream) -> None:
        self.parts, self.inner = parts, inner

    def __iter__(self) -> Iterator[bytes]:
        return self.parts

    def close(self) -> None:
        self.inner.close()


@pytest.mark.parametrize(("model", "upstream", "field"), UPSTREAMS)
async def test_withheld_reasoning_streams_keepalive_comments_that_the_sdks_skip(gateway, gw_rt, model, upstream, field):
    who = await funded_person(gw_rt, usd="1")
    # 25 pieces of reasoning, none shown: a comment in place of the 1st and the 21st.
    content = script(content=REPLY, reasoning="thinking " * 25, chunks=25, usage=USAGE, **upstream)
    recording = Recording()
    with openai.OpenAI(
        base_url=f"{gateway.base_url}/api/v1",
        api_key=who.key,
        max_retries=0,
        http_client=httpx.Client(transport=recording, timeout=30),
    ) as client:
        chunks = list(
            client.chat.completions.create(
                model=model,
                messages=[{"role": "user", "content": content}],
                max_tokens=2000,
                stream=True,
                extra_body={"reasoning": {"exclude": True}},
            )
        )
    raw = bytes(recording.received)
    assert raw.split(b"\n\n").count(b": PROCESSING") == 2  # whole events, as the SSE comment they are
    # The openai SDK skips the comments: every chunk parses, the reply whole, no reasoning.
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == REPLY
    assert not any(REASONING_FIELDS & set(c.choices[0].delta.model_extra or {}) for c in chunks if c.choices)
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 50
    # So does the openrouter SDK's decoder (the one its chat.send streams with), on the same bytes.
    response = httpx.Response(200, content=raw, headers={"content-type": "text/event-stream"})
    events = list(
        eventstreaming.EventStream(
            response,
            lambda text: unmarshal_json_response(components.ChatStreamingResponse, response, text).data,
            sentinel="[DONE]",
        )
    )
    assert len(events) == len(chunks)
    assert "".join(e.choices[0].delta.content or "" for e in events if e.choices) == REPLY
    deltas = [e.choices[0].delta for e in events if e.choices]
    assert not any(REASONING_FIELDS & (d.model_fields_set | set(d.model_extra or {})) for d in deltas)
    assert events[-1].usage.completion_tokens == 50


# What the upstream is asked, per model, when the client asks with max_tokens 4000 (test/chat's
# endpoint caps it at 1,000; test/claude's at 4,096): OpenAI's `reasoning_effort`, Anthropic's
# thinking budget (OpenRouter's share of max_tokens, at least 1,024).
TRANSLATIONS = [
    pytest.param({"reasoning": {"effort": "high"}}, "high", 3200, id="effort"),
    pytest.param({"reasoning": {"max_tokens": 500}}, "medium", 1024, id="max_tokens"),  # half of 1,000
    pytest.param({"reasoning_effort": "low", "reasoning": {"effort": "high"}}, "low", 1024, id="reasoning_effort-wins"),
    pytest.param({"reasoning": {"enabled": True}}, "medium", 2000, id="enabled"),
    pytest.param({"reasoning": {"enabled": False}}, None, None, id="disabled"),
    pytest.param({"reasoning": {"effort": "xhigh", "exclude": True}}, "xhigh", 3800, id="effort-excluded"),
]


def sent_upstream(fake, tag: str) -> dict[str, Any]:
    """The fake upstream's record of the one call whose scripted reply is `tag`."""
    calls = [c for c in fake.calls() if (c["script"] or {}).get("content") == tag]
    assert len(calls) == 1, calls
    return calls[0]


@pytest.mark.parametrize("via", ["openai-sdk", "http-stream"])
@pytest.mark.parametrize("model", ["test/chat", "test/claude"])
@pytest.mark.parametrize(("asked", "effort", "budget"), TRANSLATIONS)
async def test_reasoning_reaches_a_strict_upstream_in_its_own_terms(
    client, sdk, fake, gw_rt, model, asked, effort, budget, via
):
    # The strict fake refuses what api.openai.com and api.anthropic.com refuse: OpenRouter's
    # `reasoning` object (either API) and an effort OpenAI does not know. Every ask gets through.
    who = await funded_person(gw_rt, usd="1")
    tag = f"{REPLY} {new_id('t')}"
    content = script(content=tag, reasoning=THOUGHT, usage=USAGE, strict=True)
    messages = [{"role": "user", "content": content}]
    if via == "openai-sdk":
        options = dict(asked)
        effort_kwarg = options.pop("reasoning_effort", openai.omit)
        answer = sdk(who.key).chat.completions.create(
            model=model, messages=messages, max_tokens=4000, reasoning_effort=effort_kwarg, extra_body=options
        )
        message = answer.choices[0].message
        shown = {"content": message.content, **(message.model_extra or {})}
    else:
        shown, _ = ask(
            client, who.key, {"model": model, "messages": messages, "max_tokens": 4000, **asked}, stream=True
        )
    excluded = asked.get("reasoning", {}).get("exclude", False)
    assert shown["content"] == tag
    assert bool(REASONING_FIELDS & {k for k, v in shown.items() if v}) is not excluded
    call = sent_upstream(fake, tag)
    assert call["reasoning"] is None  # OpenRouter's object reaches neither API
    if model == "test/chat":
        assert (call["reasoning_effort"], call["thinking"]) == (effort, None)
    else:
        thinking = None if budget is None else {"type": "enabled", "budget_tokens": budget}
        assert (call["reasoning_effort"], call["thinking"]) == (None, thinking)


@pytest.mark.parametrize(
    ("asked", "field"),
    [
        ({"reasoning": {"effort": "extreme"}}, "reasoning.effort"),
        ({"reasoning": {"max_tokens": "lots"}}, "reasoning.max_tokens"),
        ({"reasoning": {"enabled": "yes"}}, "reasoning.enabled"),
        ({"reasoning": {"effort": "low", "max_tokens": 500}}, "reasoning"),
        ({"reasoning_effort": "ultra"}, "reasoning_effort"),
    ],
)
async def test_a_bad_reasoning_ask_is_a_400_naming_the_field_before_any_upstream_call(
    client, sdk, fake, gw_rt, asked, field
):
    who = await funded_person(gw_rt, usd="1")
    tag = f"{REPLY} {new_id('t')}"
    messages = [{"role": "user", "content": script(content=tag, strict=True)}]
    with pytest.raises(openai.BadRequestError) as raised:
        sdk(who.key).chat.completions.create(model="test/chat", messages=messages, extra_body=asked)
    error = raised.value.response.json()["error"]
    assert error["code"] == 400 and error["message"].startswith(f"{field}: ")
    assert error["metadata"] == {"code": "invalid_field", "field": field}
    r = client.post(
        "/api/v1/chat/completions",
        headers={"Authorization": f"Bearer {who.key}"},
        json={"model": "test/claude", "messages": messages, **asked},
    )
    assert r.status_code == 400 and r.json()["error"]["metadata"]["field"] == field
    assert not [c for c in fake.calls() if (c["script"] or {}).get("content") == tag]


async def test_reasoning_on_anthropic_with_too_few_max_tokens_is_a_400_naming_max_tokens(client, fake, gw_rt):
    # Anthropic's thinking budget is at least 1,024 tokens and below max_tokens: the gateway finds
    # 1,000 too few before asking it, and says which field to change (not "the provider refused").
    who = await funded_person(gw_rt, usd="1")
    tag = f"{REPLY} {new_id('t')}"
    r = client.post(
        "/api/v1/chat/completions",
        headers={"Authorization": f"Bearer {who.key}"},
        json={
            "model": "test/claude",
            "messages": [{"role": "user", "content": script(content=tag)}],
            "max_tokens": 1000,
            "reasoning": {"effort": "high"},
        },
    )
    error = r.json()["error"]
    assert r.status_code == 400 and error["metadata"] == {"code": "invalid_field", "field": "max_tokens"}
    assert error["message"].startswith("max_tokens: reasoning on Anthropic needs max_tokens above 1024")
    assert not [c for c in fake.calls() if (c["script"] or {}).get("content") == tag]
