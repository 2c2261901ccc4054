"""OpenAI-compatible adapter: request building, response parsing, stream passthrough."""

from __future__ import annotations

import json

import pytest

from teamrouter.gateway.catalog import Endpoint, parse_catalog
from teamrouter.providers.base import (
    DONE,
    KEEPALIVE,
    KEEPALIVE_EVERY,
    REASONING_FIELDS,
    UpstreamError,
    Usage,
    for_client,
    output_chars,
    usage_chunk,
)
from teamrouter.providers.openai import OpenAIAdapter

CATALOG = """
[[providers]]
slug = "acme"
kind = "openai"
base_url = "http://up.example/v1"
api_key_env = "ACME_KEY"
headers = { "HTTP-Referer" = "https://teamrouter.test" }

[[providers]]
slug = "local"
kind = "openai"
base_url = "http://localhost:11434/v1"

[[models]]
id = "acme/chat"
context_length = 1000

[[models.endpoints]]
provider = "acme"
upstream_model = "chat-v2"
prompt_price = "0.000001"
completion_price = "0.000002"

[[models.endpoints]]
provider = "local"
upstream_model = "llama3"
prompt_price = "0"
completion_price = "0"
"""


@pytest.fixture(scope="module")
def endpoints() -> tuple[Endpoint, ...]:
    return parse_catalog(CATALOG, env={"ACME_KEY": "sk-up"}).endpoints_for("acme/chat")


ADAPTER = OpenAIAdapter()
BODY = {
    "model": "acme/chat",
    "models": ["acme/other"],
    "provider": {"sort": "price"},
    "usage": {"include": True},
    "messages": [{"role": "user", "content": "hi"}],
    "temperature": 0.3,
    "max_tokens": 50,
}


def test_build_chat_request(endpoints: tuple[Endpoint, ...]) -> None:
    req = ADAPTER.build_request(endpoints[0], BODY, False)
    assert (req.method, req.url) == ("POST", "http://up.example/v1/chat/completions")
    assert req.headers["Authorization"] == "Bearer sk-up"
    assert req.headers["HTTP-Referer"] == "https://teamrouter.test"
    sent = json.loads(req.json_body)
    assert sent == {
        "model": "chat-v2",
        "messages": [{"role": "user", "content": "hi"}],
        "temperature": 0.3,
        "max_tokens": 50,
    }
    assert BODY["model"] == "acme/chat"  # the client's body is not mutated


def test_build_stream_request_forces_usage_and_clamps(endpoints: tuple[Endpoint, ...]) -> None:
    body = {**BODY, "stream": True, "stream_options": {"include_usage": False, "x": 1}}
    req = ADAPTER.build_request(endpoints[0], body, True, max_tokens=20)
    sent = json.loads(req.json_body)
    assert sent["stream"] is True and sent["stream_options"] == {"include_usage": True, "x": 1}
    assert sent["max_tokens"] == 20
    assert req.headers["Accept"] == "text/event-stream"


@pytest.mark.parametrize(
    ("asked", "effort"),
    [
        ({"include_reasoning": False}, None),
        ({"include_reasoning": True}, None),
        # `exclude` alone asks for nothing: reasoning models reason unasked, others refuse the field.
        ({"reasoning": {"exclude": True}}, None),
        ({"reasoning": {"exclude": False}}, None),
        ({"reasoning": {"effort": "low", "exclude": True}, "include_reasoning": False}, "low"),
        ({"reasoning": {"effort": "xhigh"}}, "xhigh"),  # a named effort goes as named
        ({"reasoning": {"effort": "none"}}, "none"),
        # Off is off, and asks for nothing: models that do not reason refuse even "none".
        ({"reasoning": {"enabled": False, "effort": "high"}}, None),
        ({"reasoning": {"enabled": False}, "reasoning_effort": "none"}, "none"),  # OpenAI's own, as sent
        ({"reasoning": {"enabled": True}}, "medium"),  # OpenRouter's default effort
        ({"reasoning": {"enabled": True, "effort": "low"}}, "low"),
        # OpenAI's own field wins over OpenRouter's object.
        ({"reasoning_effort": "high", "reasoning": {"effort": "low"}}, "high"),
        ({"reasoning_effort": "minimal", "reasoning": {"max_tokens": 40}}, "minimal"),
        ({"reasoning_effort": None, "reasoning": {"effort": "low"}}, "low"),  # null means absent
        ({"reasoning_effort": "low"}, "low"),
        # A budget becomes the effort whose share of max_tokens (50 here) is nearest: 20%, 50%, 80%.
        ({"reasoning": {"max_tokens": 1}}, "low"),
        ({"reasoning": {"max_tokens": 17}}, "low"),
        ({"reasoning": {"max_tokens": 18}}, "medium"),
        ({"reasoning": {"max_tokens": 32}}, "medium"),
        ({"reasoning": {"max_tokens": 33}}, "high"),
        ({"reasoning": {"max_tokens": 300}}, "high"),
    ],
)
def test_reasoning_becomes_reasoning_effort(
    endpoints: tuple[Endpoint, ...], asked: dict[str, object], effort: str | None
) -> None:
    # api.openai.com refuses a `reasoning` object and `include_reasoning` (a 400): what only the
    # gateway reads never goes upstream, and OpenRouter's object goes as OpenAI's `reasoning_effort`.
    body = {**BODY, **asked}
    sent = json.loads(ADAPTER.build_request(endpoints[0], body, False).json_body)
    assert "include_reasoning" not in sent and "reasoning" not in sent
    assert sent.get("reasoning_effort") == effort
    assert body == {**BODY, **asked}  # the client's body is not mutated


def test_a_reasoning_budget_is_measured_against_the_max_tokens_sent(endpoints: tuple[Endpoint, ...]) -> None:
    body = {**BODY, "reasoning": {"max_tokens": 400}}
    # The gateway's budget for this endpoint, not the client's number, is what the upstream spends.
    assert json.loads(ADAPTER.build_request(endpoints[0], body, False, max_tokens=500).json_body) == {
        "model": "chat-v2",
        "messages": [{"role": "user", "content": "hi"}],
        "temperature": 0.3,
        "max_tokens": 500,
        "reasoning_effort": "high",
    }
    assert (
        json.loads(ADAPTER.build_request(endpoints[0], body, False, max_tokens=2000).json_body)["reasoning_effort"]
        == "low"
    )
    # No max_tokens anywhere: the endpoint's cap (here its context length, 1,000).
    unbounded = {"model": "acme/chat", "messages": BODY["messages"], "reasoning": {"max_tokens": 500}}
    assert json.loads(ADAPTER.build_request(endpoints[0], unbounded, False).json_body)["reasoning_effort"] == "medium"


def test_legacy_completions_get_no_reasoning_effort(endpoints: tuple[Endpoint, ...]) -> None:
    # OpenAI's /completions knows no reasoning_effort; the object is dropped all the same.
    body = {"model": "acme/chat", "prompt": "hi", "reasoning": {"effort": "high"}}
    sent = json.loads(ADAPTER.build_request(endpoints[0], body, False, kind="completion").json_body)
    assert "reasoning" not in sent and "reasoning_effort" not in sent
    # Nor the client's own reasoning_effort, which OpenAI would refuse with a 400.
    body = {"model": "acme/chat", "prompt": "hi", "reasoning_effort": "high"}
    sent = json.loads(ADAPTER.build_request(endpoints[0], body, False, kind="completion").json_body)
    assert "reasoning_effort" not in sent


def test_build_keeps_max_completion_tokens_spelling(endpoints: tuple[Endpoint, ...]) -> None:
    body = {"model": "m", "messages": [], "max_completion_tokens": 99}
    sent = json.loads(ADAPTER.build_request(endpoints[0], body, False, max_tokens=10).json_body)
    assert sent["max_completion_tokens"] == 10 and "max_tokens" not in sent
    sent = json.loads(
        ADAPTER.build_request(endpoints[0], {"model": "m", "messages": []}, False, max_tokens=7).json_body
    )
    assert sent["max_tokens"] == 7


def test_build_without_key_and_legacy_completions(endpoints: tuple[Endpoint, ...]) -> None:
    req = ADAPTER.build_request(endpoints[1], {"model": "m", "prompt": "once upon"}, False, kind="completion")
    assert req.url == "http://localhost:11434/v1/completions"
    assert "Authorization" not in req.headers
    assert json.loads(req.json_body) == {"model": "llama3", "prompt": "once upon"}


def test_parse_response() -> None:
    body = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "chat-v2",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "yo"}, "finish_reason": "stop"}],
        "usage": {
            "prompt_tokens": 12,
            "completion_tokens": 3,
            "total_tokens": 15,
            "prompt_tokens_details": {"cached_tokens": 4},
            "completion_tokens_details": {"reasoning_tokens": 1},
        },
    }
    parsed = ADAPTER.parse_response(200, json.dumps(body).encode(), response_id="gen-1", model="acme/chat")
    assert parsed.usage == Usage(12, 3, 1, 4)
    assert parsed.finish_reason == "stop"
    assert parsed.body["id"] == "gen-1" and parsed.body["model"] == "acme/chat"
    assert parsed.body["choices"][0]["message"]["content"] == "yo"


def test_parse_response_legacy_text() -> None:
    body = {
        "id": "c",
        "object": "text_completion",
        "choices": [{"text": "x", "index": 0, "finish_reason": "length"}],
    }
    parsed = ADAPTER.parse_response(200, json.dumps(body).encode(), kind="completion")
    assert parsed.finish_reason == "length" and parsed.usage is None


@pytest.mark.parametrize(
    ("status", "retryable"),
    [(400, False), (404, False), (408, True), (429, True), (500, True), (503, True)],
)
def test_error_statuses(status: int, retryable: bool) -> None:
    body = json.dumps({"error": {"message": "boom here", "type": "x"}}).encode()
    with pytest.raises(UpstreamError) as info:
        ADAPTER.parse_response(status, body)
    assert info.value.status == status and info.value.retryable is retryable
    assert "boom here" in info.value.message


@pytest.mark.parametrize("body", [b"<html>", b"[]", b'{"error": {"message": "overloaded"}}'])
def test_malformed_success_bodies_are_retryable_errors(body: bytes) -> None:
    with pytest.raises(UpstreamError) as info:
        ADAPTER.parse_response(200, body)
    assert info.value.retryable and info.value.status == 502


# A realistic upstream stream, with spacing as OpenAI's Python servers write it.
STREAM = (
    b'data: {"id": "chatcmpl-9", "object": "chat.completion.chunk", "created": 7, "model": "chat-v2", '
    b'"choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": null}], '
    b'"usage": null}\n\n'
    b": keep-alive\n\n"
    b'data: {"id": "chatcmpl-9", "object": "chat.completion.chunk", "created": 7, "model": "chat-v2", '
    b'"choices": [{"index": 0, "delta": {"content": "He said \\"id\\": \\"chatcmpl-9\\" "}, '
    b'"finish_reason": null}], "usage": null}\n\n'
    b'data: {"id":"chatcmpl-9","object":"chat.completion.chunk","created":7,"model":"chat-v2",'
    b'"choices":[{"index":0,"delta":{"content":"\xc3\xa9t\xc3\xa9"},"finish_reason":null}]}\r\n\r\n'
    b'data: {"id":"chatcmpl-9","object":"chat.completion.chunk","created":7,"model":"chat-v2",'
    b'"choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}\n\n'
    b'data: {"id":"chatcmpl-9","object":"chat.completion.chunk","created":7,"model":"chat-v2","choices":[],'
    b'"usage":{"prompt_tokens":9,"completion_tokens":4,"total_tokens":13}}\n\n'
    b"data: [DONE]\n\n"
)


def run(
    stream: bytes,
    pieces: list[int],
    *,
    response_id: str | None = None,
    model: str | None = None,
    provider: str | None = None,
    exclude_reasoning: bool = False,
) -> tuple[list[bytes], object]:
    parser = ADAPTER.stream_parser(
        response_id=response_id, model=model, provider=provider, exclude_reasoning=exclude_reasoning
    )
    out: list[bytes] = []
    start = 0
    for cut in [*pieces, len(stream)]:
        out += parser.feed(stream[start:cut])
        start = cut
    out += parser.close()
    return out, parser


def test_stream_passthrough_rewrites_only_id_and_model() -> None:
    out, parser = run(STREAM, [], response_id="gen-abc", model="acme/chat")
    assert len(out) == 4  # usage chunk and [DONE] withheld; the comment dropped
    events = [json.loads(e[len(b"data: ") : -2]) for e in out]
    assert all(e["id"] == "gen-abc" and e["model"] == "acme/chat" for e in events)
    # Bytes are forwarded as received apart from the two values: spacing is preserved...
    assert out[0].startswith(b'data: {"id":"gen-abc", "object": "chat.completion.chunk"')
    # ...and generated text that merely looks like the id is untouched.
    assert events[1]["choices"][0]["delta"]["content"] == 'He said "id": "chatcmpl-9" '
    assert events[2]["choices"][0]["delta"]["content"] == "été"
    assert parser.usage == Usage(9, 4)  # type: ignore[attr-defined]
    assert parser.finish_reason == "stop"  # type: ignore[attr-defined]
    assert parser.done and parser.created == 7  # type: ignore[attr-defined]
    assert parser.completion_chars_seen == len('He said "id": "chatcmpl-9" ') + 3  # type: ignore[attr-defined]


def test_every_passed_through_chunk_names_the_provider() -> None:
    out, _ = run(STREAM, [], response_id="gen-abc", model="acme/chat", provider="Acme Cloud")
    events = [json.loads(e[len(b"data: ") : -2]) for e in out]
    assert [e["provider"] for e in events] == ["Acme Cloud"] * 4
    assert out[0].startswith(b'data: {"provider":"Acme Cloud","id":"gen-abc", "object"')  # spliced in
    assert events[1]["choices"][0]["delta"]["content"] == 'He said "id": "chatcmpl-9" '
    # An upstream that is itself a router names its own provider: ours replaces it, once.
    routed = b'data: {"id":"x","provider":"Upstream Inc","model":"m","choices":[]}\n\n'
    (event,), _ = run(routed, [], response_id="gen-r", model="acme/chat", provider="Acme Cloud")
    assert json.loads(event[6:]) == {"id": "gen-r", "provider": "Acme Cloud", "model": "acme/chat", "choices": []}
    (empty,), _ = run(b"data: {}\n\n", [], provider="Acme Cloud")
    assert json.loads(empty[6:]) == {"provider": "Acme Cloud"}


def test_stream_without_rewrite_is_byte_identical() -> None:
    out, _ = run(STREAM, [])
    assert out[0] == STREAM.split(b"\n\n")[0] + b"\n\n"


def test_stream_split_anywhere_gives_the_same_events() -> None:
    whole, _ = run(STREAM, [], response_id="gen-abc", model="acme/chat")
    for cut in range(1, len(STREAM)):
        got, parser = run(STREAM, [cut], response_id="gen-abc", model="acme/chat")
        assert got == whole, cut
        assert parser.usage == Usage(9, 4)  # type: ignore[attr-defined]
    got, _ = run(STREAM, list(range(1, len(STREAM))), response_id="gen-abc", model="acme/chat")
    assert got == whole


def test_usage_on_a_content_chunk_is_stripped_and_kept() -> None:
    stream = (
        b'data: {"id":"x","model":"m","created":1,"choices":[{"index":0,"delta":{"content":"hi"},'
        b'"finish_reason":"length"}],"usage":{"prompt_tokens":2,"completion_tokens":1}}\n\n'
    )
    out, parser = run(stream, [], response_id="gen-1", model="a/b")
    (event,) = out
    data = json.loads(event[6:])
    assert "usage" not in data and data["id"] == "gen-1" and data["model"] == "a/b"
    assert parser.usage == Usage(2, 1) and parser.finish_reason == "length"  # type: ignore[attr-defined]
    assert not parser.done  # type: ignore[attr-defined]


def test_error_event_in_stream_is_captured_not_forwarded() -> None:
    stream = (
        b'data: {"id":"x","choices":[{"index":0,"delta":{"content":"a"}}]}\n\n'
        b'data: {"error":{"message":"model crashed"}}\n\n'
    )
    out, parser = run(stream, [])
    assert len(out) == 1
    assert parser.error is not None and "model crashed" in parser.error.message  # type: ignore[attr-defined]
    assert parser.finish_reason == "error"  # type: ignore[attr-defined]


def test_legacy_completion_stream_counts_text() -> None:
    stream = (
        b'data: {"id":"c","object":"text_completion","choices":[{"index":0,"text":"abc","finish_reason":null}]}\n\n'
    )
    _, parser = run(stream, [])
    assert parser.completion_chars_seen == 3  # type: ignore[attr-defined]


def test_oversized_event_is_refused() -> None:
    parser = ADAPTER.stream_parser()
    with pytest.raises(UpstreamError, match="oversized"):
        parser.feed(b"data: " + b"x" * (5 * 1024 * 1024))


def test_final_usage_chunk_helper() -> None:
    chunk = usage_chunk(response_id="gen-1", model="a/b", created=5, usage=Usage(3, 4, 0, 1), extra_usage={"cost": 0.5})
    data = json.loads(chunk[6:])
    assert data["choices"] == [] and data["usage"]["cost"] == 0.5
    assert data["usage"]["total_tokens"] == 7 and data["usage"]["prompt_tokens_details"]["cached_tokens"] == 1
    assert chunk.endswith(b"\n\n") and DONE == b"data: [DONE]\n\n"


def test_a_nested_key_like_the_top_level_one_is_never_the_one_rewritten() -> None:
    nested = b'data: {"id":"up-1","meta":{"model":"up-model","id":"up-1"},"model":"up-model","choices":[]}\n\n'
    (event,), _ = run(nested, [], response_id="gen-n", model="acme/chat")
    chunk = json.loads(event[6:])
    assert (chunk["id"], chunk["model"]) == ("gen-n", "acme/chat")
    assert chunk["meta"] == {"model": "up-model", "id": "up-1"}  # the upstream's own object, untouched


def test_output_chars_of_a_whole_answer_count_what_a_stream_would() -> None:
    # An answer without usage is billed from an estimate: tool calls and reasoning are output too.
    body = {
        "choices": [
            {
                "message": {
                    "content": None,
                    "reasoning": "think",
                    "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": '{"a":1}'}}],
                }
            },
            {"message": {"content": "hello", "function_call": {"name": "g", "arguments": "{}"}}},
            {"text": "legacy"},
        ]
    }
    assert output_chars(body) == len("think") + len("f") + len('{"a":1}') + len("hello") + len("g{}") + len("legacy")


def test_a_key_at_the_clients_cut_never_leaves_a_prefix() -> None:
    # A 200 carrying an error object: its text is kept long enough for the gateway's mask by value,
    # which runs before the client's 300-character cut, so a key straddling that cut is masked whole.
    body = json.dumps({"error": {"message": "x" * 290 + " plainsecretvalue42 tail"}}).encode()
    with pytest.raises(UpstreamError) as info:
        ADAPTER.parse_response(200, body)
    shown = for_client(info.value.message, secret="plainsecretvalue42")
    assert "plain" not in shown and len(shown) == 300


def test_excluded_reasoning_is_left_out_of_a_whole_answer_but_still_billed() -> None:
    thought = [{"type": "reasoning.text", "text": "Two and two."}]
    answer = {
        "id": "x",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "4",
                    "reasoning": "Two and two.",
                    "reasoning_details": thought,
                },
                "finish_reason": "stop",
            },
            {"index": 1, "message": {"role": "assistant", "content": "four", "reasoning_content": "2+2"}},
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 20, "completion_tokens_details": {"reasoning_tokens": 15}},
    }
    raw = json.dumps(answer).encode()
    shown = ADAPTER.parse_response(200, raw)
    assert shown.body["choices"][0]["message"]["reasoning"] == "Two and two."  # passed through as sent
    # vLLM's and DeepSeek's reasoning_content becomes OpenRouter's reasoning.
    assert shown.body["choices"][1]["message"] == {"role": "assistant", "content": "four", "reasoning": "2+2"}
    hidden = ADAPTER.parse_response(200, raw, exclude_reasoning=True)
    assert [c["message"] for c in hidden.body["choices"]] == [
        {"role": "assistant", "content": "4"},
        {"role": "assistant", "content": "four"},
    ]
    # Billed as before: the upstream's usage, reasoning tokens included; an estimate would count
    # the withheld characters.
    assert hidden.usage == shown.usage == Usage(5, 20, 15)
    assert hidden.body["usage"] == answer["usage"]
    # (reasoning_details, structured, counts one, as in a stream)
    assert (hidden.withheld_chars, shown.withheld_chars) == (len("Two and two.") + len("2+2") + 1, 0)


def chunk(delta: dict[str, object], finish: str | None = None) -> bytes:
    choice = {"index": 0, "delta": delta, "finish_reason": finish}
    return b"data: " + json.dumps({"id": "c-1", "created": 7, "model": "up", "choices": [choice]}).encode() + b"\n\n"


THINKING = b"".join(
    [
        chunk({"role": "assistant", "content": "", "reasoning": "Two "}),
        chunk({"reasoning": "and two.", "reasoning_details": [{"type": "reasoning.text", "text": "and two."}]}),
        chunk({"reasoning_content": "Hm."}),
        chunk({"content": "4", "reasoning": None}),
        chunk({}, "stop"),
        b'data: {"id":"c-1","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":20,'
        b'"completion_tokens_details":{"reasoning_tokens":15}}}\n\n',
        DONE,
    ]
)


def test_excluded_reasoning_never_leaves_a_stream_but_is_still_billed() -> None:
    shown, shown_parser = run(THINKING, [], response_id="gen-r", model="a/b")
    assert [json.loads(e[6:])["choices"][0]["delta"].get("reasoning") for e in shown] == [
        "Two ",
        "and two.",
        "Hm.",  # vLLM's reasoning_content, named as OpenRouter names it
        None,
        None,
    ]
    assert not any(b"reasoning_content" in e for e in shown)
    hidden, parser = run(THINKING, [], response_id="gen-r", model="a/b", exclude_reasoning=True)
    # Chunks that carried only reasoning are not sent, a comment in place of the first (clients skip
    # it; idle proxies see bytes), none for the second: one per KEEPALIVE_EVERY. The others lose
    # their reasoning fields.
    assert hidden[1] == KEEPALIVE and hidden.count(KEEPALIVE) == 1
    events = [json.loads(e[6:]) for e in hidden if e != KEEPALIVE]
    assert [e["choices"][0]["delta"] for e in events] == [{"role": "assistant", "content": ""}, {"content": "4"}, {}]
    assert all((e["id"], e["model"]) == ("gen-r", "a/b") for e in events)
    assert events[-1]["choices"][0]["finish_reason"] == "stop"
    # Still output: the upstream's usage as sent, and every character counted for an estimate.
    assert parser.usage == shown_parser.usage == Usage(5, 20, 15)  # type: ignore[attr-defined]
    assert parser.completion_chars_seen == shown_parser.completion_chars_seen  # type: ignore[attr-defined]
    assert parser.completion_chars_seen == len("Two and two.Hm.4") + 1  # type: ignore[attr-defined]


def test_a_long_hidden_reasoning_phase_keeps_the_connection_alive() -> None:
    # 2 x KEEPALIVE_EVERY + 1 chunks of reasoning only: a comment for the first, the 21st and the 41st.
    count = 2 * KEEPALIVE_EVERY + 1
    thinking = b"".join(chunk({"reasoning": "hm "}) for _ in range(count))
    stream = chunk({"role": "assistant", "content": ""}) + thinking + chunk({"content": "4"}) + chunk({}, "stop")
    hidden, parser = run(stream, [100, 1000], exclude_reasoning=True)  # split anywhere: the same
    assert [i for i, e in enumerate(hidden) if e == KEEPALIVE] == [1, 2, 3]
    assert [json.loads(e[6:])["choices"][0]["delta"] for e in hidden[4:]] == [{"content": "4"}, {}]
    # Billed on the reasoning it stands for, not on the comments sent.
    assert parser.completion_chars_seen == 3 * count + 1  # type: ignore[attr-defined]
    shown, _ = run(stream, [])
    assert KEEPALIVE not in shown and len(shown) == count + 3  # shown reasoning needs no stand-in


@pytest.mark.parametrize("field", REASONING_FIELDS)
def test_each_reasoning_field_is_withheld_and_counted_alike_whole_and_streamed(field: str) -> None:
    # One list of reasoning fields: each is withheld, and an estimate counts it the same whether the
    # answer came whole or streamed (text by its characters, structured reasoning as one).
    value: object = [{"type": "reasoning.text", "text": "hm"}] if field == "reasoning_details" else "hm"
    whole = {"id": "x", "choices": [{"index": 0, "message": {"content": "4", field: value}, "finish_reason": "stop"}]}
    parsed = ADAPTER.parse_response(200, json.dumps(whole).encode(), exclude_reasoning=True)
    assert parsed.body["choices"][0]["message"] == {"content": "4"}
    out, parser = run(chunk({field: value}) + chunk({"content": "4"}, "stop") + DONE, [], exclude_reasoning=True)
    assert out[0] == KEEPALIVE and not any(field.encode() in e for e in out)
    seen = parser.completion_chars_seen  # type: ignore[attr-defined]
    assert output_chars(whole) == seen == len("4") + parsed.withheld_chars
    assert parsed.withheld_chars == (1 if field == "reasoning_details" else len("hm"))


def test_deepseeks_null_reasoning_content_is_passed_through_untouched() -> None:
    # DeepSeek sends "reasoning_content": null on every content delta: nothing to rename, so the
    # chunk keeps its bytes (no re-encoding, no "reasoning": null added).
    event = chunk({"content": "4", "reasoning_content": None})
    [out], _ = run(event, [])
    assert out == event
