"""Keepalive comments on silent streams, through a real `teamrouter serve` and the fake upstream.

A stream whose upstream says nothing for `TEAMROUTER_STREAM_KEEPALIVE_SECONDS` (here 0.25 s) gets
`: TEAMROUTER PROCESSING` comment lines, its head going out first if need be, so idle timeouts in
proxies do not cut a model that is thinking. The official SDK skips them; a failure after one is an
SSE error event (the stream has started), and a prompt upstream sees none.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import httpx
import openai
import pytest
from tests.support.credits import check_ledger
from tests.support.gateway import funded_person, script, start_gateway
from tests.support.sdk import openrouter

from teamrouter.config import load_settings
from teamrouter.gateway.keepalive import COMMENT
from teamrouter.runtime import build_runtime

pytestmark = pytest.mark.db

EVERY = 0.25
COMMENT_LINE = COMMENT.decode().strip()


@pytest.fixture
def database(db_factory) -> str:
    return db_factory.create()  # not in the async fixture: PostgreSQL's factory runs its own loop


@pytest.fixture
async def setup(database: str, tmp_path: Path, fake, passwords):
    settings = load_settings({}, env="dev", database_url=database, var_dir=str(tmp_path / "rt"), secret_key="k" * 48)
    rt = build_runtime(settings, passwords=passwords)
    who = await funded_person(rt, usd="1")
    server = start_gateway(tmp_path, database, fake.url, workers=1, TEAMROUTER_STREAM_KEEPALIVE_SECONDS=str(EVERY))
    try:
        yield server, who
    finally:
        server.stop()
        await check_ledger(rt)
        await rt.close()


def stream(server, key: str, content: str) -> httpx.Response:
    body = {
        "model": "test/chat",
        "messages": [{"role": "user", "content": content}],
        "stream": True,
        "provider": {"allow_fallbacks": False},
    }
    with httpx.Client(base_url=server.base_url, timeout=30) as client:
        return client.post("/api/v1/chat/completions", headers={"Authorization": f"Bearer {key}"}, json=body)


def events(raw: str) -> list[str]:
    """Data payloads and comments, in order."""
    return [line for line in raw.splitlines() if line.startswith(("data: ", ":"))]


async def test_an_upstream_silent_before_its_first_byte_gets_comments_then_answers_in_full(setup):
    server, who = setup
    answer = stream(server, who.key, script(first_byte_delay_ms=1200, content="Thought about it.", chunks=3))
    assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/event-stream")
    lines = events(answer.text)
    first_data = next(i for i, line in enumerate(lines) if line.startswith("data: "))
    assert 2 <= first_data <= 8 and set(lines[:first_data]) == {COMMENT_LINE}, lines[: first_data + 1]
    data = [json.loads(line[6:]) for line in lines if line.startswith("data: {")]
    assert "".join(c["choices"][0]["delta"].get("content") or "" for c in data if c["choices"]) == "Thought about it."
    assert data[-1]["usage"]["cost"] > 0 and lines[-1] == "data: [DONE]"
    assert COMMENT_LINE not in lines[first_data:]  # the answer itself came without pauses


async def test_the_openrouter_sdk_skips_the_comments(setup):
    server, who = setup
    with (
        warnings.catch_warnings(),
        openrouter(who.key, server.base_url) as sdk,
    ):
        warnings.simplefilter("ignore", DeprecationWarning)
        with sdk.chat.send(
            model="test/chat",
            messages=[{"role": "user", "content": script(first_byte_delay_ms=700, content="x y", chunks=2)}],
            stream=True,
        ) as chunks:
            received = list(chunks)
    assert "".join(e.choices[0].delta.content or "" for e in received if e.choices) == "x y"
    assert received[-1].usage.cost > 0


async def test_gaps_between_tokens_get_comments_and_the_sdk_skips_them(setup):
    server, who = setup
    client = openai.OpenAI(base_url=f"{server.base_url}/api/v1", api_key=who.key, max_retries=0, timeout=30)
    try:
        chunks = list(
            client.chat.completions.create(
                model="test/chat",
                messages=[{"role": "user", "content": script(chunk_delay_ms=600, content="a b c", chunks=3)}],
                stream=True,
                stream_options={"include_usage": True},
            )
        )
    finally:
        client.close()
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "a b c"
    assert chunks[-1].usage is not None and chunks[-1].usage.model_extra["cost"] > 0
    raw = stream(server, who.key, script(chunk_delay_ms=600, content="a b c", chunks=3)).text
    lines = events(raw)
    assert lines[0].startswith("data: ")  # the first token came at once: no comment before it
    assert COMMENT_LINE in lines and lines[-1] == "data: [DONE]"


async def test_an_upstream_that_fails_after_the_stream_started_ends_it_with_an_error_event(setup):
    server, who = setup
    answer = stream(server, who.key, script(first_byte_delay_ms=800, status=503))
    assert answer.status_code == 200  # the head went out with the first comment
    lines = events(answer.text)
    assert lines[0] == COMMENT_LINE and lines[-1].startswith("data: {")
    last = json.loads(lines[-1][6:])
    assert last["error"]["code"] == 502 and last["choices"][0]["finish_reason"] == "error"
    assert last["error"]["metadata"]["code"] == "upstream_failed"  # as the same failure says as JSON
    assert "data: [DONE]" not in lines  # nothing answered, nothing billed (the ledger check after)


async def test_a_prompt_upstream_sees_no_comment(setup):
    server, who = setup
    raw = stream(server, who.key, script(content="quick", chunks=2)).text
    assert COMMENT_LINE not in raw and raw.rstrip().endswith("data: [DONE]")
