"""The fake upstream itself: every script option, call recording, thread and subprocess modes."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
import typing
import urllib.request
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from openai.types import completion_create_params as text
from openai.types import shared
from openai.types.chat import completion_create_params as chat_params
from tests.fakes.upstream import ACCEPTED, REASONING_EFFORTS, FakeUpstream, FakeUpstreamThread

from teamrouter.providers.base import UpstreamError, Usage, billable_usage
from teamrouter.providers.openai import OpenAIAdapter

ROOT = Path(__file__).resolve().parents[3]
OPENAI = OpenAIAdapter()


@pytest.fixture
async def fake() -> AsyncIterator[FakeUpstream]:
    async with FakeUpstream() as server:
        yield server


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def chat(content: str = "hi", **extra: Any) -> dict[str, Any]:
    return {"model": "fake-model", "messages": [{"role": "user", "content": content}], **extra}


async def post(
    session: aiohttp.ClientSession, url: str, body: dict[str, Any], headers: dict[str, str] | None = None
) -> tuple[int, bytes]:
    async with session.post(url, json=body, headers=headers) as resp:
        return resp.status, await resp.read()


async def stream(
    session: aiohttp.ClientSession, fake: FakeUpstream, body: dict[str, Any]
) -> tuple[list[dict[str, Any]], Any]:
    parser = OPENAI.stream_parser()
    events: list[bytes] = []
    async with session.post(fake.base_url + "/chat/completions", json={**body, "stream": True}) as resp:
        assert resp.status == 200
        async for data in resp.content.iter_any():
            events += parser.feed(data)
    events += parser.close()
    return [json.loads(e[6:]) for e in events], parser


def text_of(chunks: list[dict[str, Any]]) -> str:
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])


async def test_json_answer_with_fixed_usage_and_recorded_call(
    fake: FakeUpstream, session: aiohttp.ClientSession
) -> None:
    fake.set_script(
        {"content": "hello world", "usage": {"prompt_tokens": 11, "completion_tokens": 2, "cached_tokens": 3}}
    )
    status, raw = await post(
        session, fake.base_url + "/chat/completions", chat(max_tokens=64), {"Authorization": "Bearer k1"}
    )
    parsed = OPENAI.parse_response(status, raw)
    assert parsed.body["choices"][0]["message"]["content"] == "hello world"
    assert parsed.usage == Usage(11, 2, 0, 3)
    (call,) = fake.calls
    assert (call.api, call.path, call.model, call.max_tokens, call.stream, call.auth) == (
        "openai-chat",
        "/v1/chat/completions",
        "fake-model",
        64,
        False,
        "k1",
    )


async def test_stream_usage_chunk_only_when_asked(fake: FakeUpstream, session: aiohttp.ClientSession) -> None:
    fake.set_script({"chunks": 5})
    chunks, parser = await stream(session, fake, chat(stream_options={"include_usage": True}))
    assert text_of(chunks) == "tok0 tok1 tok2 tok3 tok4 "
    assert parser.usage is not None and parser.usage.completion_tokens == 5 and parser.done
    _, parser = await stream(session, fake, chat())
    assert parser.usage is None and parser.done
    fake.set_script({"no_usage": True})
    _, parser = await stream(session, fake, chat(stream_options={"include_usage": True}))
    assert parser.usage is None
    assert [c.include_usage for c in fake.calls] == [True, False, True]


async def test_max_tokens_honoured_or_overrun(fake: FakeUpstream, session: aiohttp.ClientSession) -> None:
    fake.set_script({"chunks": 10})
    chunks, parser = await stream(session, fake, chat(max_tokens=4, stream_options={"include_usage": True}))
    assert text_of(chunks) == "tok0 tok1 tok2 tok3 "
    assert parser.finish_reason == "length" and parser.usage.completion_tokens == 4
    fake.set_script({"chunks": 10, "overrun": 3})
    chunks, parser = await stream(session, fake, chat(max_tokens=4, stream_options={"include_usage": True}))
    assert len(text_of(chunks).split()) == 10  # max_tokens ignored
    assert parser.usage.completion_tokens == 12


@pytest.mark.parametrize(("status", "retry_after"), [(503, None), (500, None), (429, 7)])
async def test_error_status_before_first_byte(
    fake: FakeUpstream, session: aiohttp.ClientSession, status: int, retry_after: int | None
) -> None:
    fake.set_script({"status": status, "retry_after": retry_after})
    async with session.post(fake.base_url + "/chat/completions", json=chat(stream=True)) as resp:
        assert resp.status == status
        assert resp.headers.get("Retry-After") == (None if retry_after is None else str(retry_after))
        with pytest.raises(UpstreamError) as info:
            OPENAI.parse_response(resp.status, await resp.read())
    assert info.value.retryable


async def test_hang_times_out_the_client(fake: FakeUpstream, session: aiohttp.ClientSession) -> None:
    fake.set_script({"hang": True})
    started = time.monotonic()
    with pytest.raises(asyncio.TimeoutError):
        async with session.post(
            fake.base_url + "/chat/completions", json=chat(), timeout=aiohttp.ClientTimeout(total=0.3)
        ) as resp:
            await resp.read()
    assert time.monotonic() - started < 2


async def test_delays(fake: FakeUpstream, session: aiohttp.ClientSession) -> None:
    fake.set_script({"first_byte_delay_ms": 100, "chunk_delay_ms": 30, "chunks": 4})
    started = time.monotonic()
    await stream(session, fake, chat())
    assert time.monotonic() - started >= 0.1 + 4 * 0.03


async def test_reset_after_n_chunks(fake: FakeUpstream, session: aiohttp.ClientSession) -> None:
    fake.set_script({"chunks": 10, "reset_after_chunks": 2})
    parser = OPENAI.stream_parser()
    events: list[bytes] = []
    with pytest.raises(aiohttp.ClientPayloadError):
        async with session.post(fake.base_url + "/chat/completions", json=chat(stream=True)) as resp:
            async for data in resp.content.iter_any():
                events += parser.feed(data)
    assert text_of([json.loads(e[6:]) for e in events]) == "tok0 tok1 "
    assert not parser.done and parser.usage is None and parser.completion_chars_seen == 10
    assert billable_usage(parser, prompt_estimate=7) == Usage(7, 3, estimated=True)


async def test_error_event_mid_stream(fake: FakeUpstream, session: aiohttp.ClientSession) -> None:
    fake.set_script({"chunks": 5, "stream_error_after_chunks": 1})
    chunks, parser = await stream(session, fake, chat())
    assert text_of(chunks) == "tok0 "
    assert parser.error is not None and parser.finish_reason == "error"


async def test_script_selection_order(fake: FakeUpstream, session: aiohttp.ClientSession) -> None:
    url = fake.base_url + "/chat/completions"
    fake.set_script({"content": "default"})
    fake.set_script({"content": "by model"}, model="special")

    async def content(body: dict[str, Any], headers: dict[str, str] | None = None) -> str:
        status, raw = await post(session, url, body, headers)
        assert status == 200, raw
        return str(json.loads(raw)["choices"][0]["message"]["content"])

    assert await content(chat()) == "default"
    assert await content({**chat(), "model": "special"}) == "by model"
    marked = chat('please\nFAKE-SCRIPT: {"content": "by marker"}\nthanks')
    assert await content({**marked, "model": "special"}) == "by marker"
    header = {"X-Fake-Script": json.dumps({"content": "by header"})}
    assert await content(marked, header) == "by header"
    assert fake.calls[-1].script is not None and fake.calls[-1].script["content"] == "by header"
    status, raw = await post(session, url, chat(), {"X-Fake-Script": '{"bogus": 1}'})
    assert status == 400 and b"bogus" in raw


async def test_legacy_completions_and_api_key(session: aiohttp.ClientSession) -> None:
    async with FakeUpstream(api_key="right") as fake:
        body = {"model": "m", "prompt": "once", "max_tokens": 2}
        status, _ = await post(session, fake.url + "/completions", body, {"Authorization": "Bearer wrong"})
        assert status == 401
        status, raw = await post(session, fake.url + "/completions", body, {"Authorization": "Bearer right"})
        parsed = OPENAI.parse_response(status, raw, kind="completion")
        assert parsed.body["choices"][0]["text"] == "tok0 tok1 " and parsed.finish_reason == "length"
        assert [c.api for c in fake.calls] == ["openai-completions", "openai-completions"]


async def test_calls_are_bounded_and_many_requests_are_fast(session: aiohttp.ClientSession) -> None:
    async with FakeUpstream(max_calls=50) as fake:
        started = time.monotonic()
        results = await asyncio.gather(
            *(post(session, fake.base_url + "/chat/completions", chat()) for _ in range(300))
        )
        elapsed = time.monotonic() - started
        assert all(status == 200 for status, _ in results)
        assert len(fake.calls) == 50
        assert elapsed < 5, elapsed  # hundreds of requests per second, with a wide margin


def test_thread_mode() -> None:
    with FakeUpstreamThread() as fake:
        fake.set_script({"content": "from a thread"})
        request = urllib.request.Request(
            fake.base_url + "/chat/completions",
            data=json.dumps(chat()).encode(),
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(request, timeout=5) as resp:
            assert json.loads(resp.read())["choices"][0]["message"]["content"] == "from a thread"
        assert len(fake.calls) == 1
        fake.reset()
        assert fake.calls == []


def test_subprocess_mode() -> None:
    proc = subprocess.Popen(
        [sys.executable, "-m", "tests.fakes.upstream", "--port", "0"],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        env={"PYTHONPATH": str(ROOT / "src"), "PATH": "/usr/bin:/bin"},
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        assert line.startswith("READY http://127.0.0.1:"), line
        url = line.split()[1]

        def call(path: str, body: object | None = None) -> Any:
            data = None if body is None else json.dumps(body).encode()
            req = urllib.request.Request(url + path, data=data, headers={"Content-Type": "application/json"})
            with urllib.request.urlopen(req, timeout=5) as resp:
                return json.loads(resp.read())

        call("/_script", {"script": {"content": "scripted"}, "model": "m1"})
        answer = call(
            "/v1/chat/completions",
            {"model": "m1", "messages": [{"role": "user", "content": "x"}], "max_tokens": 9},
        )
        assert answer["choices"][0]["message"]["content"] == "scripted"
        calls = call("/_calls")["calls"]
        assert [(c["model"], c["max_tokens"], c["stream"]) for c in calls] == [("m1", 9, False)]
        call("/_reset", {})
        assert call("/_calls")["calls"] == []
    finally:
        proc.terminate()
        assert proc.wait(timeout=5) == 0
        if proc.stdout is not None:
            proc.stdout.close()


async def test_strict_refuses_fields_the_real_api_does_not_know(
    fake: FakeUpstream, session: aiohttp.ClientSession
) -> None:
    fake.set_script({"strict": True})
    status, _ = await post(session, fake.base_url + "/chat/completions", chat(temperature=0.5, seed=1))
    assert status == 200
    status, raw = await post(session, fake.base_url + "/chat/completions", chat(include_reasoning=False))
    assert status == 400
    assert json.loads(raw)["error"]["message"] == "Unrecognized request argument supplied: include_reasoning"
    anthropic = {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "x"}]}
    status, _ = await post(session, fake.base_url + "/messages", {**anthropic, "thinking": {"type": "disabled"}})
    assert status == 200
    status, raw = await post(session, fake.base_url + "/messages", {**anthropic, "reasoning": {"effort": "low"}})
    assert status == 400 and json.loads(raw)["error"]["message"] == "reasoning: Extra inputs are not permitted"
    status, raw = await post(session, fake.base_url + "/chat/completions", chat(reasoning_effort="extreme"))
    assert status == 400 and json.loads(raw)["error"]["message"].startswith("Invalid value: 'extreme'.")
    fake.set_script(None)  # not strict: anything goes, as before
    assert (await post(session, fake.base_url + "/chat/completions", chat(include_reasoning=False)))[0] == 200
    # Calls record how reasoning was asked for (what the gateway sent), never the prompt.
    await post(session, fake.base_url + "/chat/completions", chat(reasoning_effort="low"))
    await post(session, fake.base_url + "/messages", {**anthropic, "thinking": {"type": "disabled"}})
    recorded = [(c.reasoning_effort, c.thinking, c.reasoning) for c in fake.calls]
    assert recorded[-2:] == [("low", None, None), (None, {"type": "disabled"}, None)]


def test_strict_knows_what_openai_knows() -> None:
    # The SDK's parameters, less `stream`, which its streaming/non-streaming variants add.
    assert set(chat_params.CompletionCreateParamsBase.__annotations__) | {"stream"} == ACCEPTED["openai-chat"]
    assert set(text.CompletionCreateParamsBase.__annotations__) | {"stream"} == ACCEPTED["openai-completions"]
    efforts = typing.get_args(typing.get_args(shared.ReasoningEffort)[0])  # Optional[Literal[...]]
    assert set(efforts) == set(REASONING_EFFORTS)
