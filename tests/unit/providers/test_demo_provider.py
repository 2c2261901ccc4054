"""The offline demo provider: deterministic, honours max_tokens, never costs more than its hold."""

from __future__ import annotations

import json

import pytest

from teamrouter.gateway.catalog import Endpoint, load_catalog
from teamrouter.gateway.pricing import clamp_max_tokens, estimate_prompt_tokens, estimate_text_tokens
from teamrouter.providers.demo import PREFIX, DemoAdapter
from teamrouter.providers.registry import make_adapters


@pytest.fixture(scope="module")
def echo() -> Endpoint:
    return load_catalog(None, env={}).endpoints_for("demo/echo")[0]


def test_registry_maps_every_kind() -> None:
    adapters = make_adapters()
    assert set(adapters) == {"openai", "anthropic", "demo"}
    assert all(a.kind == k for k, a in adapters.items())
    assert isinstance(adapters["demo"], DemoAdapter)


def test_whole_answer(echo: Endpoint) -> None:
    adapter = DemoAdapter()
    messages = [{"role": "system", "content": "s"}, {"role": "user", "content": "hello there"}]
    body = {"model": "demo/echo", "messages": messages}
    req = adapter.build_request(echo, body, False, max_tokens=100)
    status, raw = adapter.backend.respond(req, created=1)
    parsed = adapter.parse_response(status, raw, response_id="gen-d", model="demo/echo")
    text = parsed.body["choices"][0]["message"]["content"]
    assert text == PREFIX + "hello there"
    assert parsed.finish_reason == "stop"
    assert parsed.usage is not None
    # Prompt tokens are exactly the gateway's estimate; completion is the same estimator on the text.
    assert parsed.usage.prompt_tokens == estimate_prompt_tokens(messages)
    assert parsed.usage.completion_tokens == estimate_text_tokens(text)
    assert adapter.backend.respond(req, created=1) == (status, raw)  # deterministic


@pytest.mark.parametrize("max_tokens", [1, 2, 5, 13])
def test_max_tokens_is_honoured_and_cost_stays_under_the_hold(echo: Endpoint, max_tokens: int) -> None:
    adapter = DemoAdapter()
    messages = [{"role": "user", "content": "déjà vu " * 20}]
    req = adapter.build_request(echo, {"model": "demo/echo", "messages": messages}, False, max_tokens=max_tokens)
    parsed = adapter.parse_response(*adapter.backend.respond(req))
    assert parsed.usage is not None
    assert parsed.usage.completion_tokens <= max_tokens
    assert parsed.finish_reason == "length"
    hold = echo.worst_case(
        estimate_prompt_tokens(messages), clamp_max_tokens(max_tokens, cap=echo.max_completion_tokens)
    )
    assert echo.cost(parsed.usage.prompt_tokens, parsed.usage.completion_tokens) <= hold


async def test_stream_through_the_openai_parser(echo: Endpoint) -> None:
    adapter = DemoAdapter()
    body = {"model": "demo/echo", "messages": [{"role": "user", "content": "one two three"}], "stream": True}
    req = adapter.build_request(echo, body, True, max_tokens=1000)
    parser = adapter.stream_parser(response_id="gen-s", model="demo/echo")
    events: list[bytes] = []
    raw = [chunk async for chunk in adapter.backend.stream(req, created=5)]
    assert raw[-1] == b"data: [DONE]\n\n"
    assert b'"usage"' in raw[-2]  # the demo sends a usage chunk since include_usage is forced on
    for chunk in raw:
        events += parser.feed(chunk)
    chunks = [json.loads(e[6:]) for e in events]
    text = "".join(c["choices"][0]["delta"].get("content", "") for c in chunks)
    assert text == PREFIX + "one two three"
    assert len(chunks) > 3  # really chunked, word by word
    assert parser.usage is not None and parser.usage.completion_tokens == estimate_text_tokens(text)
    assert parser.finish_reason == "stop" and parser.done
    assert {c["id"] for c in chunks} == {"gen-s"}


def test_n_choices_and_legacy_completions(echo: Endpoint) -> None:
    adapter = DemoAdapter()
    req = adapter.build_request(
        echo, {"model": "demo/echo", "messages": [{"role": "user", "content": "x"}], "n": 3}, False
    )
    parsed = adapter.parse_response(*adapter.backend.respond(req))
    assert len(parsed.body["choices"]) == 3
    assert parsed.usage is not None and parsed.usage.completion_tokens == 3 * estimate_text_tokens(PREFIX + "x")
    req = adapter.build_request(echo, {"model": "demo/echo", "prompt": "abc"}, False, kind="completion", max_tokens=50)
    parsed = adapter.parse_response(*adapter.backend.respond(req), kind="completion")
    assert parsed.body["object"] == "text_completion" and parsed.body["choices"][0]["text"] == PREFIX + "abc"
