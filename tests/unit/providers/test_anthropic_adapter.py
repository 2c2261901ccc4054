"""Anthropic Messages adapter: translation both ways, streaming, and a real round trip."""

from __future__ import annotations

import json
from typing import Any

import aiohttp
import pytest
from tests.fakes.upstream import FakeUpstream

from teamrouter.gateway.catalog import Endpoint, parse_catalog
from teamrouter.providers.anthropic import AnthropicAdapter, to_anthropic_messages
from teamrouter.providers.base import (
    KEEPALIVE,
    KEEPALIVE_EVERY,
    UnsupportedRequestError,
    UpstreamError,
    Usage,
    billable_usage,
)

ADAPTER = AnthropicAdapter()


def endpoint(base_url: str = "https://api.anthropic.test/v1") -> Endpoint:
    catalog = parse_catalog(
        f"""
[[providers]]
slug = "anthropic"
kind = "anthropic"
base_url = "{base_url}"
api_key_env = "ANTHROPIC_API_KEY"

[[models]]
id = "anthropic/claude"
context_length = 200000

[[models.endpoints]]
provider = "anthropic"
upstream_model = "claude-x"
prompt_price = "0.000003"
completion_price = "0.000015"
max_completion_tokens = 8192
""",
        env={"ANTHROPIC_API_KEY": "sk-ant"},
    )
    return catalog.endpoints_for("anthropic/claude")[0]


def test_build_request_translates_messages_and_parameters() -> None:
    body = {
        "model": "anthropic/claude",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": [{"type": "text", "text": "No emojis."}]},
            {"role": "user", "content": "What's the weather?"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_1",
                        "type": "function",
                        "function": {"name": "weather", "arguments": '{"city":"Oslo"}'},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "rain"},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "And "},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,AAAA"}},
                ],
            },
        ],
        "temperature": 1.7,
        "stop": "END",
        "user": "u-1",
        "tools": [
            {
                "type": "function",
                "function": {"name": "weather", "description": "w", "parameters": {"type": "object"}},
            }
        ],
        "tool_choice": "required",
        "provider": {"sort": "price"},
    }
    req = ADAPTER.build_request(endpoint(), body, True)
    assert req.url == "https://api.anthropic.test/v1/messages"
    assert req.headers["x-api-key"] == "sk-ant" and req.headers["anthropic-version"] == "2023-06-01"
    assert "Authorization" not in req.headers
    sent = json.loads(req.json_body)
    assert sent["model"] == "claude-x"
    assert sent["max_tokens"] == 8192  # required upstream: the endpoint's cap when not given
    assert sent["system"] == "Be brief.\n\nNo emojis."
    assert sent["temperature"] == 1  # Anthropic's maximum
    assert sent["stop_sequences"] == ["END"]
    assert sent["metadata"] == {"user_id": "u-1"}
    assert sent["stream"] is True
    assert sent["tools"] == [{"name": "weather", "input_schema": {"type": "object"}, "description": "w"}]
    assert sent["tool_choice"] == {"type": "any"}
    assert "provider" not in sent
    assert sent["messages"] == [
        {"role": "user", "content": "What's the weather?"},
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "call_1", "name": "weather", "input": {"city": "Oslo"}}],
        },
        {
            # The tool result and the next user turn merge into one user message.
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "call_1", "content": "rain"},
                {"type": "text", "text": "And "},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": "AAAA"}},
            ],
        },
    ]


def test_cache_control_on_parts_reaches_anthropic() -> None:
    # Prompt caching as OpenRouter documents it: cache_control on content parts, system ones included.
    cached = {"type": "ephemeral"}
    body = {
        "messages": [
            {"role": "system", "content": [{"type": "text", "text": "big doc", "cache_control": cached}]},
            {"role": "system", "content": "Be brief."},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "context", "cache_control": cached},
                    {"type": "text", "text": "q"},
                ],
            },
        ],
    }
    sent = json.loads(ADAPTER.build_request(endpoint(), body, False).json_body)
    assert sent["system"] == [
        {"type": "text", "text": "big doc", "cache_control": cached},
        {"type": "text", "text": "Be brief."},
    ]
    assert sent["messages"] == [
        {
            "role": "user",
            "content": [{"type": "text", "text": "context", "cache_control": cached}, {"type": "text", "text": "q"}],
        }
    ]
    # A ttl is dropped: every write is a 5-minute one, the kind cache_write_price bills.
    hour = {
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "doc", "cache_control": {**cached, "ttl": "1h"}}]}
        ]
    }
    assert (
        json.loads(ADAPTER.build_request(endpoint(), hour, False).json_body)["messages"][0]["content"][0][
            "cache_control"
        ]
        == cached
    )
    # Without cache_control the system prompt stays one string: parts joined, messages a blank line apart.
    plain = {
        "messages": [{"role": "system", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]
    }
    plain["messages"] += [{"role": "system", "content": "c"}, {"role": "user", "content": "q"}]
    assert json.loads(ADAPTER.build_request(endpoint(), plain, False).json_body)["system"] == "ab\n\nc"


@pytest.mark.parametrize(
    ("asked", "budget"),
    [
        ({"reasoning": {"max_tokens": 2000}}, 2000),
        ({"reasoning": {"max_tokens": 10}}, 1024),  # Anthropic's minimum
        ({"reasoning": {"effort": "high"}}, 3200),  # OpenRouter's 80% of max_tokens
        ({"reasoning": {"enabled": True}}, 2000),
        ({"reasoning_effort": "low"}, 1024),
        ({"reasoning": {"effort": "xhigh"}}, 3800),  # 95%
        # OpenAI's own field wins over OpenRouter's object, as on the OpenAI adapter.
        ({"reasoning_effort": "high", "reasoning": {"effort": "low"}}, 3200),
        ({"reasoning_effort": "none", "reasoning": {"max_tokens": 2000}}, None),
        ({"reasoning": {"enabled": False, "effort": "high"}}, None),
        ({"reasoning": {"effort": "none"}}, None),
        ({"reasoning": {"enabled": False, "max_tokens": 2000}}, None),
        ({}, None),
    ],
)
def test_reasoning_becomes_extended_thinking(asked: dict[str, object], budget: int | None) -> None:
    body = {"messages": [{"role": "user", "content": "x"}], "max_tokens": 4000, "temperature": 0.2, "top_k": 5}
    sent = json.loads(ADAPTER.build_request(endpoint(), {**body, **asked}, False).json_body)
    if budget is None:
        assert "thinking" not in sent and sent["temperature"] == 0.2
    else:
        assert sent["thinking"] == {"type": "enabled", "budget_tokens": budget}
        assert "temperature" not in sent and "top_k" not in sent  # refused upstream with thinking on


@pytest.mark.parametrize(
    ("asked", "thinking"),
    [
        ({"reasoning": {"exclude": True}}, True),  # exclude alone asks for thinking, as `enabled` does
        ({"include_reasoning": False}, False),
        ({"include_reasoning": False, "reasoning_effort": "low"}, True),
    ],
)
def test_reasoning_exclusion_stays_in_the_gateway(asked: dict[str, object], thinking: bool) -> None:
    body = {"messages": [{"role": "user", "content": "x"}], "max_tokens": 4000, **asked}
    sent = json.loads(ADAPTER.build_request(endpoint(), body, False).json_body)
    # Anthropic refuses fields it does not know: only its own `thinking` may carry the request's wish.
    assert not {"reasoning", "include_reasoning", "reasoning_effort", "exclude"} & set(sent)
    assert ("thinking" in sent) is thinking


def test_reasoning_is_off_for_a_turn_that_continues_tool_calls() -> None:
    # Anthropic would refuse it: the last assistant turn must begin with its signed thinking block.
    call = {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
    messages = [
        {"role": "user", "content": "x"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "c1", "content": "42"},
    ]
    body = {"messages": messages, "max_tokens": 4000, "reasoning": {"effort": "high"}}
    assert "thinking" not in json.loads(ADAPTER.build_request(endpoint(), body, False).json_body)
    answered = [*messages, {"role": "assistant", "content": "done"}, {"role": "user", "content": "again"}]
    sent = json.loads(ADAPTER.build_request(endpoint(), {**body, "messages": answered}, False).json_body)
    assert sent["thinking"] == {"type": "enabled", "budget_tokens": 3200}  # a new turn thinks again


@pytest.mark.parametrize("choice", ["required", {"type": "function", "function": {"name": "f"}}])
def test_reasoning_is_off_when_a_tool_call_is_forced(choice: object) -> None:
    tools = [{"type": "function", "function": {"name": "f", "parameters": {"type": "object"}}}]
    body = {"messages": [{"role": "user", "content": "x"}], "max_tokens": 4000, "reasoning": {"effort": "high"}}
    sent = json.loads(
        ADAPTER.build_request(endpoint(), {**body, "tools": tools, "tool_choice": choice}, False).json_body
    )
    assert "thinking" not in sent and sent["tool_choice"]["type"] in ("any", "tool")


def test_reasoning_needs_room_above_the_minimum_budget() -> None:
    body = {"messages": [{"role": "user", "content": "x"}], "max_tokens": 1000, "reasoning": {"effort": "high"}}
    with pytest.raises(UnsupportedRequestError, match="max_tokens above 1024"):
        ADAPTER.build_request(endpoint(), body, False)


@pytest.mark.parametrize(
    "legacy",
    [
        {"functions": [{"name": "f", "parameters": {"type": "object"}}]},
        {"function_call": "auto"},
        {"messages": [{"role": "assistant", "content": None, "function_call": {"name": "f", "arguments": "{}"}}]},
        {"messages": [{"role": "function", "name": "f", "content": "result"}]},
    ],
)
def test_the_legacy_functions_form_is_left_to_other_endpoints(legacy: dict[str, object]) -> None:
    # Translated, its answer would come back as tool_calls, which a legacy client does not read.
    body = {"messages": [{"role": "user", "content": "x"}], **legacy}
    with pytest.raises(UnsupportedRequestError, match="use tools"):
        ADAPTER.build_request(endpoint(), body, False)


def test_build_request_max_tokens_and_n() -> None:
    body = {"messages": [{"role": "user", "content": "x"}], "max_tokens": 100}
    assert json.loads(ADAPTER.build_request(endpoint(), body, False).json_body)["max_tokens"] == 100
    assert json.loads(ADAPTER.build_request(endpoint(), body, False, max_tokens=10).json_body)["max_tokens"] == 10
    with pytest.raises(UnsupportedRequestError) as info:
        ADAPTER.build_request(endpoint(), {**body, "n": 2}, False)
    assert info.value.retryable


def test_consecutive_user_messages_merge() -> None:
    system, messages = to_anthropic_messages([{"role": "user", "content": "a"}, {"role": "user", "content": "b"}])
    assert system == []
    assert messages == [{"role": "user", "content": [{"type": "text", "text": "a"}, {"type": "text", "text": "b"}]}]


RESPONSE = {
    "id": "msg_1",
    "type": "message",
    "role": "assistant",
    "model": "claude-x",
    "content": [
        {"type": "thinking", "thinking": "hmm"},
        {"type": "text", "text": "Let me check."},
        {"type": "tool_use", "id": "toolu_1", "name": "weather", "input": {"city": "Oslo"}},
    ],
    "stop_reason": "tool_use",
    "usage": {
        "input_tokens": 10,
        "cache_read_input_tokens": 5,
        "cache_creation_input_tokens": 2,
        "output_tokens": 7,
    },
}


def test_parse_response() -> None:
    parsed = ADAPTER.parse_response(
        200, json.dumps(RESPONSE).encode(), response_id="gen-1", model="anthropic/claude", created=9
    )
    assert parsed.usage == Usage(
        prompt_tokens=17, completion_tokens=7, reasoning_tokens=0, cached_tokens=5, cache_write_tokens=2
    )
    assert parsed.finish_reason == "tool_calls"
    body = parsed.body
    assert (body["id"], body["model"], body["created"], body["object"]) == (
        "gen-1",
        "anthropic/claude",
        9,
        "chat.completion",
    )
    message = body["choices"][0]["message"]
    assert message["content"] == "Let me check." and message["reasoning"] == "hmm"
    assert message["tool_calls"] == [
        {
            "id": "toolu_1",
            "type": "function",
            "function": {"name": "weather", "arguments": '{"city": "Oslo"}'},
        }
    ]
    assert body["usage"]["prompt_tokens"] == 17 and body["usage"]["total_tokens"] == 24


def test_excluded_thinking_is_left_out_of_the_answer_but_still_billed() -> None:
    shown = ADAPTER.parse_response(200, json.dumps(RESPONSE).encode())
    hidden = ADAPTER.parse_response(200, json.dumps(RESPONSE).encode(), exclude_reasoning=True)
    assert shown.body["choices"][0]["message"]["reasoning"] == "hmm"  # OpenRouter's field, when not excluded
    message = hidden.body["choices"][0]["message"]
    assert "reasoning" not in message and "reasoning_details" not in message
    assert message == {k: v for k, v in shown.body["choices"][0]["message"].items() if k != "reasoning"}
    # Anthropic's output_tokens include the thinking: the bill is the same either way, and an
    # estimate (an answer without usage) counts the withheld characters.
    assert hidden.usage == shown.usage and hidden.body["usage"] == shown.body["usage"]
    assert (hidden.withheld_chars, shown.withheld_chars) == (len("hmm"), 0)


@pytest.mark.parametrize(
    ("stop", "finish"),
    [
        ("end_turn", "stop"),
        ("stop_sequence", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("refusal", "content_filter"),
    ],
)
def test_stop_reasons(stop: str, finish: str) -> None:
    body = {**RESPONSE, "content": [{"type": "text", "text": "x"}], "stop_reason": stop}
    assert ADAPTER.parse_response(200, json.dumps(body).encode()).finish_reason == finish


def test_legacy_completion_shape() -> None:
    body = {**RESPONSE, "content": [{"type": "text", "text": "once"}], "stop_reason": "max_tokens"}
    parsed = ADAPTER.parse_response(200, json.dumps(body).encode(), kind="completion")
    assert parsed.body["object"] == "text_completion"
    assert parsed.body["choices"][0]["text"] == "once" and parsed.finish_reason == "length"


@pytest.mark.parametrize(("status", "retryable"), [(400, False), (429, True), (500, True), (529, True)])
def test_errors(status: int, retryable: bool) -> None:
    body = json.dumps({"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}).encode()
    with pytest.raises(UpstreamError) as info:
        ADAPTER.parse_response(status, body)
    assert info.value.retryable is retryable and "Overloaded" in info.value.message


@pytest.mark.parametrize("status", [401, 403])
def test_a_refusal_of_the_deployments_credentials_never_repeats_the_upstreams_words(status: int) -> None:
    # OpenAI's words quote part of the key; the client sees the message, and the next endpoint may answer.
    body = json.dumps({"error": {"message": "Incorrect API key provided: sk-upst****************1234."}}).encode()
    with pytest.raises(UpstreamError) as info:
        ADAPTER.parse_response(status, body)
    assert info.value.retryable and "sk-" not in info.value.message and "credentials" in info.value.message


def sse(event: str, data: object) -> bytes:
    return f"event: {event}\ndata: {json.dumps(data)}\n\n".encode()


STREAM = b"".join(
    [
        sse(
            "message_start",
            {
                "type": "message_start",
                "message": {
                    "id": "msg_1",
                    "model": "claude-x",
                    "usage": {"input_tokens": 20, "cache_read_input_tokens": 4, "output_tokens": 1},
                },
            },
        ),
        sse(
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        ),
        sse("ping", {"type": "ping"}),
        sse(
            "content_block_delta",
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hel"}},
        ),
        sse(
            "content_block_delta",
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "lo"}},
        ),
        sse("content_block_stop", {"type": "content_block_stop", "index": 0}),
        sse(
            "content_block_start",
            {
                "type": "content_block_start",
                "index": 1,
                "content_block": {"type": "tool_use", "id": "toolu_1", "name": "f", "input": {}},
            },
        ),
        sse(
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 1,
                "delta": {"type": "input_json_delta", "partial_json": '{"a":'},
            },
        ),
        sse(
            "content_block_delta",
            {
                "type": "content_block_delta",
                "index": 1,
                "delta": {"type": "input_json_delta", "partial_json": "1}"},
            },
        ),
        sse(
            "message_delta",
            {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 15}},
        ),
        sse("message_stop", {"type": "message_stop"}),
    ]
)


def translate(stream: bytes, cut: int | None = None, *, exclude_reasoning: bool = False) -> tuple[list[Any], object]:
    """The chunks sent, parsed; a keepalive comment as it is (`KEEPALIVE`)."""
    parser = ADAPTER.stream_parser(
        response_id="gen-7",
        model="anthropic/claude",
        provider="Anthropic",
        created=3,
        exclude_reasoning=exclude_reasoning,
    )
    parts = [stream] if cut is None else [stream[:cut], stream[cut:]]
    out: list[bytes] = []
    for part in parts:
        out += parser.feed(part)
    out += parser.close()
    assert all(e == KEEPALIVE or (e.startswith(b"data: ") and e.endswith(b"\n\n")) for e in out)
    return [e if e == KEEPALIVE else json.loads(e[6:]) for e in out], parser


def test_stream_translation() -> None:
    chunks, parser = translate(STREAM)
    deltas = [c["choices"][0]["delta"] for c in chunks]  # type: ignore[index]
    assert deltas == [
        {"role": "assistant", "content": ""},
        {"content": "Hel"},
        {"content": "lo"},
        {"tool_calls": [{"index": 0, "id": "toolu_1", "type": "function", "function": {"name": "f", "arguments": ""}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": '{"a":'}}]},
        {"tool_calls": [{"index": 0, "function": {"arguments": "1}"}}]},
        {},
    ]
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"  # type: ignore[index]
    assert all(c["id"] == "gen-7" and c["model"] == "anthropic/claude" and c["created"] == 3 for c in chunks)
    assert all(c["provider"] == "Anthropic" for c in chunks)
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    assert parser.usage == Usage(prompt_tokens=24, completion_tokens=15, cached_tokens=4)  # type: ignore[attr-defined]
    assert parser.done and parser.finish_reason == "tool_calls"  # type: ignore[attr-defined]
    assert parser.completion_chars_seen == len("Hello") + len("f") + len('{"a":1}')  # type: ignore[attr-defined]


def test_stream_translation_split_anywhere() -> None:
    whole, _ = translate(STREAM)
    for cut in range(1, len(STREAM), 7):
        assert translate(STREAM, cut)[0] == whole


def test_stream_error_event() -> None:
    stream = STREAM.split(b"event: content_block_stop")[0] + sse(
        "error", {"type": "error", "error": {"type": "overloaded_error", "message": "Overloaded"}}
    )
    chunks, parser = translate(stream)
    assert len(chunks) == 3
    assert parser.error is not None and parser.finish_reason == "error" and not parser.done  # type: ignore[attr-defined]
    # No final usage; the prompt is known from message_start, the output is estimated.
    assert parser.usage is None and parser.prompt_tokens == 24  # type: ignore[attr-defined]
    usage = billable_usage(parser, prompt_estimate=1000)  # type: ignore[arg-type]
    # "Hello": 5 chars; the cache reads message_start announced keep their price.
    assert usage == Usage(prompt_tokens=24, completion_tokens=2, cached_tokens=4, estimated=True)


async def test_round_trip_through_fake_anthropic_server() -> None:
    async with FakeUpstream(api_key="sk-ant") as fake, aiohttp.ClientSession() as session:
        ep = endpoint(fake.base_url)
        body = {
            "model": "anthropic/claude",
            "messages": [{"role": "system", "content": "sys"}, {"role": "user", "content": "hi"}],
            "max_tokens": 4,
        }
        fake.set_script({"content": "abcdefgh", "chunks": 4, "usage": {"prompt_tokens": 30, "cached_tokens": 10}})
        req = ADAPTER.build_request(ep, body, True)
        parser = ADAPTER.stream_parser(response_id="gen-rt", model="anthropic/claude")
        out: list[bytes] = []
        async with session.request(req.method, req.url, headers=dict(req.headers), data=req.json_body) as resp:
            assert resp.status == 200
            async for data in resp.content.iter_any():
                out += parser.feed(data)
        out += parser.close()
        text = "".join(json.loads(e[6:])["choices"][0]["delta"].get("content", "") for e in out)
        assert text == "abcdefgh"
        assert parser.usage == Usage(prompt_tokens=30, completion_tokens=4, cached_tokens=10)
        assert parser.finish_reason == "stop" and parser.done

        # Non-streamed, and max_tokens below the scripted length: truncated, "length".
        req = ADAPTER.build_request(ep, body, False, max_tokens=2)
        async with session.request(req.method, req.url, headers=dict(req.headers), data=req.json_body) as resp:
            parsed = ADAPTER.parse_response(resp.status, await resp.read(), model="anthropic/claude")
        assert parsed.body["choices"][0]["message"]["content"] == "abcd"
        assert parsed.finish_reason == "length" and parsed.usage == Usage(30, 2, 0, 10)

        (first, second) = list(fake.calls)
        assert (first.api, first.model, first.stream, first.max_tokens) == ("anthropic", "claude-x", True, 4)
        assert first.auth == "sk-ant" and first.anthropic_version == "2023-06-01"
        assert (second.stream, second.max_tokens) == (False, 2)

        # An overloaded upstream maps to a retryable error.
        fake.set_script({"status": 529})
        async with session.request(req.method, req.url, headers=dict(req.headers), data=req.json_body) as resp:
            with pytest.raises(UpstreamError) as info:
                ADAPTER.parse_response(resp.status, await resp.read())
        assert info.value.status == 529 and info.value.retryable


THINKING_STREAM = b"".join(
    [
        sse(
            "message_start",
            {"type": "message_start", "message": {"id": "msg_2", "model": "claude-x", "usage": {"input_tokens": 20}}},
        ),
        sse(
            "content_block_start",
            {"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}},
        ),
        sse(
            "content_block_delta",
            {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "Two and "}},
        ),
        sse(
            "content_block_delta",
            {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "two."}},
        ),
        sse(
            "content_block_delta",
            {"type": "content_block_delta", "index": 0, "delta": {"type": "signature_delta", "signature": "c2ln"}},
        ),
        sse("content_block_stop", {"type": "content_block_stop", "index": 0}),
        sse(
            "content_block_start",
            {"type": "content_block_start", "index": 1, "content_block": {"type": "text", "text": ""}},
        ),
        sse(
            "content_block_delta",
            {"type": "content_block_delta", "index": 1, "delta": {"type": "text_delta", "text": "4"}},
        ),
        sse("content_block_stop", {"type": "content_block_stop", "index": 1}),
        sse(
            "message_delta",
            {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 30}},
        ),
        sse("message_stop", {"type": "message_stop"}),
    ]
)


def test_streamed_thinking_is_reasoning_unless_excluded() -> None:
    shown, shown_parser = translate(THINKING_STREAM)
    assert [c["choices"][0]["delta"] for c in shown] == [  # type: ignore[index]
        {"role": "assistant", "content": ""},
        {"reasoning": "Two and "},
        {"reasoning": "two."},
        {"content": "4"},
        {},
    ]
    hidden, parser = translate(THINKING_STREAM, exclude_reasoning=True)
    # A comment in place of the first thinking delta (clients skip it; idle proxies see bytes), none
    # for the second: one per KEEPALIVE_EVERY.
    assert [c if c == KEEPALIVE else c["choices"][0]["delta"] for c in hidden] == [
        {"role": "assistant", "content": ""},
        KEEPALIVE,
        {"content": "4"},
        {},
    ]
    assert hidden[-1]["choices"][0]["finish_reason"] == "stop"  # type: ignore[index]
    # Withheld, still output: billed from output_tokens (thinking included), and a stream cut before
    # them is estimated from every character the model produced, thinking too.
    assert parser.usage == shown_parser.usage == Usage(20, 30)  # type: ignore[attr-defined]
    chars = len("Two and two.") + len("4")
    assert parser.completion_chars_seen == shown_parser.completion_chars_seen == chars  # type: ignore[attr-defined]
    _, cut = translate(THINKING_STREAM.split(b"event: message_delta")[0], exclude_reasoning=True)
    assert billable_usage(cut, prompt_estimate=1000) == Usage(20, 4, estimated=True)  # type: ignore[arg-type]


def test_a_long_hidden_thinking_phase_keeps_the_connection_alive() -> None:
    # 2 x KEEPALIVE_EVERY + 1 thinking deltas: a comment for the first, the 21st and the 41st.
    deltas = 2 * KEEPALIVE_EVERY + 1
    thinking = b"".join(
        sse(
            "content_block_delta",
            {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "hm "}},
        )
        for _ in range(deltas)
    )
    start, rest = THINKING_STREAM.split(b"event: content_block_delta", 1)
    hidden, parser = translate(start + thinking + b"event: content_block_delta" + rest, exclude_reasoning=True)
    assert hidden.count(KEEPALIVE) == 3 and hidden[1] == KEEPALIVE
    # Billed on the reasoning it stands for, not on the comments sent.
    assert parser.completion_chars_seen == 3 * deltas + len("Two and two.4")  # type: ignore[attr-defined]
    shown, _ = translate(start + thinking + b"event: content_block_delta" + rest)
    assert KEEPALIVE not in shown  # reasoning that is shown needs no stand-in
