"""The offline ``demo`` provider: a deterministic echo that needs no network and no key.

It speaks the OpenAI wire format in process, so the gateway treats it like any OpenAI-compatible
upstream: build the request with `DemoAdapter.build_request` (the OpenAI adapter's), then
instead of sending it, hand it to ``adapter.backend.respond(request)`` (whole answer) or
iterate ``adapter.backend.stream(request)`` (SSE bytes, ending with a usage chunk and
``[DONE]``), and parse the result with the same parser as a real upstream.

The reply is ``"[teamrouter demo] You said: <last user text>"``, cut to ``max_tokens``.
Token counts use the gateway's own estimator (gateway.pricing): the prompt counts exactly what
`estimate_prompt_tokens` says, and the reply ``ceil(UTF-8 bytes / 3)``; the reply is cut at
``3 * max_tokens`` bytes, so it never exceeds ``max_tokens`` and a demo request never costs
more than its hold.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
import zlib
from collections.abc import AsyncIterator, Iterator, Mapping
from typing import Any

from teamrouter.gateway.pricing import (
    BYTES_PER_TOKEN,
    estimate_completion_prompt_tokens,
    estimate_prompt_tokens,
    estimate_text_tokens,
)
from teamrouter.providers.base import DONE, UpstreamRequest, Usage, dumps, sse_event, upstream_error
from teamrouter.providers.openai import OpenAIAdapter

PREFIX = "[teamrouter demo] You said: "
DEFAULT_MAX_TOKENS = 256
_WORD = re.compile(r"\S+\s*|\s+")


def _last_user_text(messages: object) -> str:
    if not isinstance(messages, list):
        return ""
    for message in reversed(messages):
        if isinstance(message, Mapping) and message.get("role") == "user":
            content = message.get("content")
            if isinstance(content, str):
                return content
            if isinstance(content, list):
                return " ".join(
                    str(p.get("text", "")) for p in content if isinstance(p, Mapping) and p.get("type") == "text"
                )
    return ""


def _truncate(text: str, max_tokens: int) -> tuple[str, bool]:
    """Cut to at most ``max_tokens`` estimated tokens, at a character boundary."""
    raw = text.encode("utf-8")
    limit = max_tokens * BYTES_PER_TOKEN
    if len(raw) <= limit:
        return text, False
    return raw[:limit].decode("utf-8", "ignore"), True


def _read(request: UpstreamRequest) -> tuple[dict[str, Any], bool, int]:
    """The request's body, whether it is a chat, and its prompt's tokens."""
    body = json.loads(request.json_body)
    chat = request.url.endswith("/chat/completions")
    if chat:
        return body, chat, estimate_prompt_tokens(body.get("messages") or [], tools=body.get("tools"))
    return body, chat, estimate_completion_prompt_tokens(body.get("prompt"))


def _too_long(context_length: int, tokens: int, *, chat: bool) -> bytes:
    """OpenAI's 400 body for a prompt longer than the model's context."""
    what = "messages" if chat else "prompt"
    message = (
        f"This model's maximum context length is {context_length} tokens. However, your {what} "
        f"resulted in {tokens} tokens. Please reduce the length of the {what}."
    )
    error = {"message": message, "type": "invalid_request_error", "param": what, "code": "context_length_exceeded"}
    return dumps({"error": error})


class DemoBackend:
    """Answers an OpenAI-format `UpstreamRequest` in process."""

    def __init__(self, *, chunk_delay: float = 0.0) -> None:
        self.chunk_delay = chunk_delay

    def reply(self, body: Mapping[str, Any], *, chat: bool, prompt_tokens: int) -> tuple[str, bool, Usage]:
        """The reply text, whether it was cut by max_tokens, and the usage (all n choices)."""
        if chat:
            said = _last_user_text(body.get("messages"))
        else:
            prompt = body.get("prompt")
            said = prompt if isinstance(prompt, str) else " ".join(map(str, prompt or []))
        budget = body.get("max_completion_tokens") or body.get("max_tokens") or DEFAULT_MAX_TOKENS
        text, cut = _truncate(PREFIX + said, int(budget))
        n = int(body.get("n") or 1)
        return text, cut, Usage(prompt_tokens, n * estimate_text_tokens(text))

    def respond(
        self, request: UpstreamRequest, *, context_length: int | None = None, created: int | None = None
    ) -> tuple[int, bytes]:
        """The (status, body) an OpenAI server would answer to a non-streamed request: a 400 for a
        prompt longer than `context_length` (the demo model refuses what a real one would, rather
        than bill for it)."""
        body, chat, prompt_tokens = _read(request)
        if context_length is not None and prompt_tokens > context_length:
            return 400, _too_long(context_length, prompt_tokens, chat=chat)
        text, cut, usage = self.reply(body, chat=chat, prompt_tokens=prompt_tokens)
        finish = "length" if cut else "stop"
        n = int(body.get("n") or 1)
        if chat:
            choices: list[dict[str, Any]] = [
                {
                    "index": i,
                    "message": {"role": "assistant", "content": text},
                    "finish_reason": finish,
                    "logprobs": None,
                }
                for i in range(n)
            ]
        else:
            choices = [{"index": i, "text": text, "finish_reason": finish, "logprobs": None} for i in range(n)]
        answer = {
            "id": f"demo-{zlib.crc32(text.encode()):08x}",  # stable across processes
            "object": "chat.completion" if chat else "text_completion",
            "created": created if created is not None else int(time.time()),
            "model": body.get("model", "demo"),
            "system_fingerprint": None,
            "choices": choices,
            "usage": usage.to_openai(),
        }
        return 200, dumps(answer)

    def chunks(
        self, request: UpstreamRequest, *, context_length: int | None = None, created: int | None = None
    ) -> Iterator[bytes]:
        """The SSE events of a streamed answer, as an OpenAI server would send them; a prompt longer
        than `context_length` raises the `UpstreamError` of its 400 at the first event, as the
        refusal an upstream answers before any stream."""
        body, chat, prompt_tokens = _read(request)
        if context_length is not None and prompt_tokens > context_length:
            raise upstream_error(400, _too_long(context_length, prompt_tokens, chat=chat))
        text, cut, usage = self.reply(body, chat=chat, prompt_tokens=prompt_tokens)
        n = int(body.get("n") or 1)
        base = {
            "id": "demo-stream",
            "object": "chat.completion.chunk" if chat else "text_completion",
            "created": created if created is not None else int(time.time()),
            "model": body.get("model", "demo"),
        }

        def event(index: int, piece: dict[str, Any], finish: str | None = None) -> bytes:
            if chat:
                choice = {"index": index, "delta": piece, "finish_reason": finish, "logprobs": None}
            else:
                choice = {"index": index, "text": piece.get("content", ""), "finish_reason": finish}
            return sse_event({**base, "choices": [choice]})

        for i in range(n):
            if chat:
                yield event(i, {"role": "assistant", "content": ""})
            for word in _WORD.findall(text):
                yield event(i, {"content": word})
            yield event(i, {}, "length" if cut else "stop")
        options = body.get("stream_options")
        if isinstance(options, Mapping) and options.get("include_usage"):
            yield sse_event({**base, "choices": [], "usage": usage.to_openai()})
        yield DONE

    async def stream(
        self, request: UpstreamRequest, *, context_length: int | None = None, created: int | None = None
    ) -> AsyncIterator[bytes]:
        """`chunks` as an async iterator, yielding to the event loop between events."""
        for chunk in self.chunks(request, context_length=context_length, created=created):
            yield chunk
            await asyncio.sleep(self.chunk_delay)


class DemoAdapter(OpenAIAdapter):
    """OpenAI wire format, answered by `backend` instead of the network."""

    kind = "demo"

    def __init__(self, backend: DemoBackend | None = None) -> None:
        self.backend = backend or DemoBackend()
