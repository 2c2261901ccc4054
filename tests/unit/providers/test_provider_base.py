"""Shared provider pieces: the minimal request parser, the SSE decoder, retry classification."""

from __future__ import annotations

import json
import math

import aiohttp
import pytest

from teamrouter.providers.base import (
    ChatRequest,
    RequestError,
    SSEDecoder,
    Usage,
    dumps,
    error_message,
    for_client,
    is_retryable_status,
    loads,
)
from teamrouter.providers.registry import error_from_exception


def test_chat_request_extracts_fields() -> None:
    body = {
        "model": "a/b",
        "models": ["c/d"],
        "messages": [{"role": "user", "content": "hello"}],
        "stream": True,
        "max_completion_tokens": 40,
        "max_tokens": 99,
        "n": 2,
        "provider": {"sort": "price"},
        "user": "me",
        "seed": 4,
    }
    req = ChatRequest.parse(body)
    assert (req.model, req.models, req.stream, req.max_tokens, req.n, req.user) == (
        "a/b",
        ("c/d",),
        True,
        40,
        2,
        "me",
    )
    assert req.provider == {"sort": "price"} and req.body is body
    assert req.prompt_tokens_estimate() == 3 + 4 + 2
    legacy = ChatRequest.parse({"model": "a/b", "prompt": "hi"}, kind="completion")
    assert legacy.max_tokens is None and legacy.n == 1 and legacy.prompt_tokens_estimate() == 3 + 1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ([], "body"),
        ({"messages": [{"role": "user", "content": "x"}]}, "model"),
        ({"model": "", "messages": [{"role": "user"}]}, "model"),
        ({"model": "a/b", "models": "c/d", "messages": [{"role": "user"}]}, "models"),
        ({"model": "a/b", "messages": []}, "messages"),
        ({"model": "a/b", "messages": [{"content": "x"}]}, "messages[0]"),
        ({"model": "a/b", "messages": [{"role": "user"}] * 10_001}, "messages"),
        ({"model": "a/b", "messages": [{"role": "user"}], "stream": "yes"}, "stream"),
        ({"model": "a/b", "messages": [{"role": "user"}], "max_tokens": 0}, "max_tokens"),
        ({"model": "a/b", "messages": [{"role": "user"}], "max_tokens": 1.5}, "max_tokens"),
        ({"model": "a/b", "messages": [{"role": "user"}], "n": 1000}, "n"),
        ({"model": "a/b", "messages": [{"role": "user"}], "user": 5}, "user"),
    ],
)
def test_chat_request_rejects_bad_fields(body: object, field: str) -> None:
    with pytest.raises(RequestError) as info:
        ChatRequest.parse(body)
    assert info.value.field == field


def test_sse_decoder_handles_multiline_events_names_and_comments() -> None:
    decoder = SSEDecoder()
    got = decoder.feed(b": hi\nevent: a\ndata: 1\ndata:2\n\nid: 7\ndata: x")
    assert got == [("a", b"1\n2")]
    assert decoder.feed(b"\r\n\r\n") == [(None, b"x")]
    assert decoder.feed(b"data: tail") == []
    assert decoder.close() == [(None, b"tail")]


def test_usage_from_openai_is_defensive() -> None:
    assert Usage.from_openai(None) is None
    assert Usage.from_openai({"prompt_tokens": "3", "completion_tokens": 1}) is None
    assert Usage.from_openai(
        {"prompt_tokens": 3, "completion_tokens": 1, "prompt_tokens_details": {"cached_tokens": 9}}
    ) == Usage(3, 1, 0, 3)


@pytest.mark.parametrize(
    ("status", "retryable"),
    [
        (200, False),
        (400, False),
        (404, False),
        (408, True),
        (429, True),
        (500, True),
        (502, True),
        (529, True),
    ],
)
def test_retryable_statuses(status: int, retryable: bool) -> None:
    assert is_retryable_status(status) is retryable


def test_error_from_exception() -> None:
    timeout = error_from_exception(TimeoutError())
    assert (timeout.status, timeout.retryable) == (504, True)
    refused = error_from_exception(aiohttp.ClientConnectorError(None, OSError(111, "refused")))  # type: ignore[arg-type]
    assert (refused.status, refused.retryable) == (502, True)
    reset = error_from_exception(aiohttp.ServerDisconnectedError())
    assert reset.retryable
    bug = error_from_exception(KeyError("x"))
    assert (bug.status, bug.retryable) == (502, False)


def test_json_helpers_accept_what_the_stdlib_accepted() -> None:
    # orjson first; the stdlib for inputs only it handles, so nothing that parsed or serialized
    # before the switch to orjson now fails.
    assert math.isnan(loads(b'{"a": NaN}')["a"])
    assert loads(b'\xef\xbb\xbf{"a": 1}') == {"a": 1}
    assert loads('{"a": "\\ud800"}') == {"a": "\ud800"}
    with pytest.raises(ValueError):
        loads(b"not json")
    assert dumps({"a": 2**70, 1: "é"}) == '{"a":1180591620717411303424,"1":"é"}'.encode()
    assert dumps({"a": ["é", 1.5, None, True]}) == '{"a":["é",1.5,null,true]}'.encode()


@pytest.mark.parametrize(
    ("text", "masked"),
    [
        ("Incorrect API key provided: sk-upst****************1234.", "Incorrect API key provided: [redacted]"),
        ("header Authorization: Bearer abc.def", "header Authorization: Bearer [redacted]"),
        ('{"x-api-key": "zzz999"}', '{"x-api-key": "[redacted]"}'),
        ("api_key=abc123; retry", "api_key=[redacted]; retry"),
        ("max_tokens: 5 is too small", "max_tokens: 5 is too small"),
        ("The token limit of 4096 was exceeded", "The token limit of 4096 was exceeded"),
    ],
)
def test_upstream_error_text_has_credentials_masked(text: str, masked: str) -> None:
    assert error_message(json.dumps({"error": {"message": text}}).encode()) == masked


def test_the_providers_own_key_is_masked_whatever_its_shape() -> None:
    # No pattern knows a plain key; the deployment's own is masked by value, before the cut.
    text = "x" * 280 + " your key plainsecretvalue42 is bad"
    shown = for_client(text, secret="plainsecretvalue42")
    assert "plainsecret" not in shown and len(shown) == 300
    assert for_client(shown, secret="plainsecretvalue42") == shown  # idempotent
