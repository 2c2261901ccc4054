"""The inference front end's last line of defence: an error that reaches it after a stream's head
went out (a keepalive comment can send the head at any time) ends the stream with an SSE error
event, never a second response start."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from teamrouter.errors import BadRequest
from teamrouter.gateway.asgi import InferenceFront


class _Gateway:
    def __init__(self, *, start_first: bool) -> None:
        self.start_first = start_first

    async def stream(self, prepared: Any, emit: Any, head: Any, disconnected: Any) -> None:
        if self.start_first:
            await head.start()
            await emit(b": TEAMROUTER PROCESSING\n\n")
        raise BadRequest("something went wrong", code="test")


async def _run(start_first: bool) -> list[dict[str, Any]]:
    sent: list[dict[str, Any]] = []

    async def send(message: dict[str, Any]) -> None:
        sent.append(message)

    front = InferenceFront(state={}, max_body_bytes=1024)
    disconnected: asyncio.Future[None] = asyncio.get_running_loop().create_future()  # the client stays
    gateway = _Gateway(start_first=start_first)
    await front._stream(gateway, None, send, [(b"x-generation-id", b"gen-1")], disconnected)
    return sent


async def test_an_error_before_the_head_is_an_ordinary_json_error() -> None:
    sent = await _run(start_first=False)
    assert [m["type"] for m in sent] == ["http.response.start", "http.response.body"]
    assert sent[0]["status"] == 400 and orjson.loads(sent[1]["body"])["error"]["code"] == 400


async def test_an_error_after_the_head_ends_the_stream_with_an_error_event() -> None:
    sent = await _run(start_first=True)
    starts = [m for m in sent if m["type"] == "http.response.start"]
    assert len(starts) == 1 and starts[0]["status"] == 200
    bodies = [m["body"] for m in sent if m["type"] == "http.response.body"]
    assert bodies[0].startswith(b":") and bodies[1].startswith(b"data: ") and bodies[-1] == b""
    event = orjson.loads(bodies[1][len(b"data: ") :])
    assert event["error"]["code"] == 400 and event["choices"][0]["finish_reason"] == "error"
    assert sent[-1].get("more_body") is False
