"""A fake LLM upstream: OpenAI-compatible and Anthropic-compatible, scripted per request.

Serves on 127.0.0.1 (ephemeral port by default):

- ``POST /v1/chat/completions`` and ``POST /v1/completions`` (OpenAI, JSON or SSE; the final
  usage chunk only when ``stream_options.include_usage``), ``POST /v1/messages`` (Anthropic,
  JSON or SSE). The ``/v1`` prefix is optional.
- ``GET /_calls`` (recorded calls as JSON), ``POST /_reset`` (forget calls and scripts),
  ``POST /_script`` with ``{"script": {...} | null, "model": "name" (optional)}``.

Each request runs a `Script`, chosen by the first of:
1. the request header ``X-Fake-Script: <json>``;
2. a line ``FAKE-SCRIPT: <json>`` anywhere in the text of a message, the Anthropic ``system``
   or the legacy ``prompt`` (this survives a gateway in between, which drops headers);
3. the script set for the request's model (``set_script(..., model=...)`` or ``/_script``);
4. the server's default script (``set_script(...)``), else ``Script()``.

Script fields (all optional): ``content`` (reply text, split into ``chunks`` pieces; default
"tok0 tok1 ..."), ``chunks`` (default 3; one completion token per piece), ``usage``
(``{prompt_tokens, completion_tokens, cached_tokens, reasoning_tokens, cache_write_tokens}``
reported as given; cache writes on the Anthropic API only),
``first_byte_delay_ms``, ``chunk_delay_ms``, ``status`` (answer this HTTP status, e.g. 503 or
429, before any byte; ``retry_after`` sets the header), ``hang`` (never answer; the server
cancels the handler when the client goes away), ``reset_after_chunks`` (close the connection
after N content chunks, mid-stream), ``end_after_chunks`` (end the body cleanly after N content
chunks, with no finish reason and no end-of-stream event), ``stream_error_after_chunks`` (send an in-stream error
event), ``no_usage`` (never report usage), ``overrun`` (ignore ``max_tokens``: report
``ceil(max_tokens * overrun)`` completion tokens), ``finish_reason``, ``set_cookie`` (a
``Set-Cookie`` header on a whole answer; calls record the ``Cookie`` header each request carried),
``body_200`` (answer 200 with this body, JSON if it starts with ``{``, else HTML, even to a stream),
``reasoning`` (the model's reasoning before its reply, split into ``chunks`` pieces like the reply,
one completion and reasoning token each: a ``thinking`` block on the Anthropic API, else the
message's or delta's ``reasoning_field``, by default ``reasoning_content``), ``strict`` (refuse a
request with a top-level field the real API does not know, with the 400 it answers: OpenAI's chat
and legacy completions, Anthropic's Messages; see `ACCEPTED`; and a ``reasoning_effort`` OpenAI does
not know).

Use in process (``async with FakeUpstream() as fake: fake.url``), in a thread for sync code
(``with FakeUpstreamThread() as fake``), or as a subprocess:
``python -m tests.fakes.upstream --port 0`` prints ``READY http://127.0.0.1:<port>`` when
listening. Calls record metadata only (api, model, max_tokens, stream, the reasoning asked for, ...),
never prompts, in a bounded deque.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import dataclasses
import json
import math
import signal
import threading
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

MARKER = "FAKE-SCRIPT:"
HANG_SECONDS = 3600.0  # "hang" ends when the client disconnects (handler cancellation)

# The top-level request fields each real API accepts (openai-python's CompletionCreateParams, the
# Messages API reference); under a `strict` script anything else is refused as they refuse it.
ACCEPTED = {
    "openai-chat": frozenset(
        """model messages stream stream_options n max_tokens max_completion_tokens temperature top_p stop
        seed frequency_penalty presence_penalty logit_bias logprobs top_logprobs user tools tool_choice
        parallel_tool_calls functions function_call response_format reasoning_effort audio modalities
        prediction metadata store service_tier verbosity web_search_options moderation prompt_cache_key
        prompt_cache_options prompt_cache_retention safety_identifier""".split()
    ),
    "openai-completions": frozenset(
        """model prompt stream stream_options n max_tokens temperature top_p stop seed frequency_penalty
        presence_penalty logit_bias logprobs user best_of echo suffix""".split()
    ),
    "anthropic": frozenset(
        """model messages max_tokens system metadata stop_sequences stream temperature top_p top_k tools
        tool_choice thinking service_tier container mcp_servers context_management""".split()
    ),
}


# What OpenAI's chat API takes as `reasoning_effort` (openai-python's `ReasoningEffort`).
REASONING_EFFORTS = ("none", "minimal", "low", "medium", "high", "xhigh", "max")


class ScriptError(ValueError):
    pass


@dataclass(frozen=True)
class Script:
    content: str | None = None
    chunks: int = 3
    usage: Mapping[str, int] | None = None
    first_byte_delay_ms: float = 0.0
    chunk_delay_ms: float = 0.0
    status: int | None = None
    retry_after: int | None = None
    error_message: str = "fake upstream failure"
    hang: bool = False
    reset_after_chunks: int | None = None
    end_after_chunks: int | None = None
    stream_error_after_chunks: int | None = None
    no_usage: bool = False
    overrun: float | None = None
    finish_reason: str | None = None
    set_cookie: str | None = None  # a Set-Cookie header on the answer, as load balancers send
    body_200: str | None = None  # answer 200 with this body (JSON or HTML), streamed request or not
    reasoning: str | None = None  # thinking before the reply
    reasoning_field: str = "reasoning_content"  # where the OpenAI API puts it (OpenRouter: "reasoning")
    strict: bool = False  # refuse unknown top-level request fields, as OpenAI and Anthropic do

    @classmethod
    def from_obj(cls, obj: object) -> Script:
        if isinstance(obj, Script):
            return obj
        if isinstance(obj, str):
            try:
                obj = json.loads(obj)
            except ValueError as exc:
                raise ScriptError(f"script is not JSON: {exc}") from None
        if not isinstance(obj, Mapping):
            raise ScriptError("script must be an object")
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = set(obj) - names
        if unknown:
            raise ScriptError(f"unknown script field(s) {sorted(unknown)}")
        return cls(**obj)

    def pieces(self) -> list[str]:
        if self.content is None:
            return [f"tok{i} " for i in range(self.chunks)]
        return _split(self.content, self.chunks)

    def reasoning_pieces(self) -> list[str]:
        return _split(self.reasoning, self.chunks) if self.reasoning else []


def _split(text: str, chunks: int) -> list[str]:
    if chunks <= 1 or not text:
        return [text]
    size = math.ceil(len(text) / chunks)
    return [text[i : i + size] for i in range(0, len(text), size)]


@dataclass(frozen=True)
class Call:
    api: str  # "openai-chat" | "openai-completions" | "anthropic"
    path: str
    model: str | None
    max_tokens: int | None
    stream: bool
    include_usage: bool
    n: int
    auth: str | None  # the credential presented (bearer token or x-api-key)
    anthropic_version: str | None
    script: dict[str, Any] | None
    cookie: str | None = None  # the Cookie header the request carried
    # How the request asked for reasoning, as sent: OpenAI's `reasoning_effort`, Anthropic's
    # `thinking`, and an OpenRouter `reasoning` object (which neither real API takes).
    reasoning_effort: object = None
    thinking: object = None
    reasoning: object = None
    at: float = field(default_factory=time.time)

    def as_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


def _texts(body: Mapping[str, Any]) -> list[str]:
    """Every text a script marker may hide in (messages, system, prompt)."""
    out: list[str] = []

    def add(content: object) -> None:
        if isinstance(content, str):
            out.append(content)
        elif isinstance(content, list):
            for part in content:
                if isinstance(part, Mapping) and isinstance(part.get("text"), str):
                    out.append(part["text"])
                elif isinstance(part, str):
                    out.append(part)

    for message in body.get("messages") or []:
        if isinstance(message, Mapping):
            add(message.get("content"))
    add(body.get("system"))
    add(body.get("prompt"))
    return out


def _marker_script(body: Mapping[str, Any]) -> str | None:
    for text in _texts(body):
        at = text.find(MARKER)
        if at >= 0:
            line = text[at + len(MARKER) :].split("\n", 1)[0]
            return line.strip()
    return None


def _openai_error(status: int, message: str) -> dict[str, Any]:
    kind = {429: "rate_limit_exceeded", 400: "invalid_request_error"}.get(status, "server_error")
    return {"error": {"message": message, "type": kind, "code": status}}


def _anthropic_error(status: int, message: str) -> dict[str, Any]:
    kinds = {
        429: "rate_limit_error",
        529: "overloaded_error",
        401: "authentication_error",
        400: "invalid_request_error",
    }
    return {"type": "error", "error": {"type": kinds.get(status, "api_error"), "message": message}}


def _sse(payload: object, event: str | None = None) -> bytes:
    data = json.dumps(payload, separators=(",", ":")).encode()
    head = f"event: {event}\n".encode() if event else b""
    return head + b"data: " + data + b"\n\n"


class FakeUpstream:
    """The server. Not thread-safe: use it from the loop it runs on (or `FakeUpstreamThread`)."""

    def __init__(
        self,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        api_key: str | None = None,
        default_script: Script | Mapping[str, Any] | None = None,
        max_calls: int = 10_000,
    ) -> None:
        self.host = host
        self.port = port
        self.api_key = api_key
        self.calls: deque[Call] = deque(maxlen=max_calls)
        self.default_script = Script.from_obj(default_script) if default_script else Script()
        self.model_scripts: dict[str, Script] = {}
        self._runner: web.AppRunner | None = None

    # -- control ------------------------------------------------------------------------
    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """What a catalog's ``base_url`` should say (both APIs live under /v1)."""
        return self.url + "/v1"

    def reset(self) -> None:
        self.calls.clear()
        self.model_scripts.clear()
        self.default_script = Script()

    def set_script(self, script: Script | Mapping[str, Any] | None, *, model: str | None = None) -> None:
        parsed = Script.from_obj(script) if script is not None else None
        if model is None:
            self.default_script = parsed or Script()
        elif parsed is None:
            self.model_scripts.pop(model, None)
        else:
            self.model_scripts[model] = parsed

    # -- lifecycle ----------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application(client_max_size=8 * 1024 * 1024)
        for prefix in ("", "/v1"):
            app.router.add_post(prefix + "/chat/completions", self._chat)
            app.router.add_post(prefix + "/completions", self._completions)
            app.router.add_post(prefix + "/messages", self._messages)
            app.router.add_get(prefix + "/models", self._models)
        app.router.add_get("/_calls", self._get_calls)
        app.router.add_post("/_reset", self._post_reset)
        app.router.add_post("/_script", self._post_script)
        return app

    async def start(self) -> None:
        self._runner = web.AppRunner(self.app(), access_log=None, handler_cancellation=True)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.host, self.port, backlog=1024)
        await site.start()
        server: Any = site._server  # asyncio's or uvloop's Server; both expose .sockets
        assert server is not None
        self.port = server.sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> FakeUpstream:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    # -- control endpoints ----------------------------------------------------------------
    async def _get_calls(self, request: web.Request) -> web.Response:
        return web.json_response({"calls": [c.as_dict() for c in self.calls]})

    async def _post_reset(self, request: web.Request) -> web.Response:
        self.reset()
        return web.json_response({"ok": True})

    async def _post_script(self, request: web.Request) -> web.Response:
        data = await request.json()
        try:
            self.set_script(data.get("script"), model=data.get("model"))
        except (ScriptError, TypeError) as exc:
            return web.json_response({"error": str(exc)}, status=400)
        return web.json_response({"ok": True})

    async def _models(self, request: web.Request) -> web.Response:
        return web.json_response({"object": "list", "data": [{"id": "fake", "object": "model"}]})

    # -- the APIs -------------------------------------------------------------------------
    async def _chat(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, "openai-chat")

    async def _completions(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, "openai-completions")

    async def _messages(self, request: web.Request) -> web.StreamResponse:
        return await self._serve(request, "anthropic")

    def _script_for(self, request: web.Request, body: Mapping[str, Any]) -> tuple[Script, dict[str, Any] | None]:
        raw = request.headers.get("X-Fake-Script") or _marker_script(body)
        if raw is not None:
            script = Script.from_obj(raw)
            return script, dataclasses.asdict(script)
        model = body.get("model")
        if isinstance(model, str) and model in self.model_scripts:
            return self.model_scripts[model], None
        return self.default_script, None

    async def _serve(self, request: web.Request, api: str) -> web.StreamResponse:
        anthropic = api == "anthropic"
        fail = _anthropic_error if anthropic else _openai_error
        try:
            body = await request.json()
            if not isinstance(body, dict):
                raise ValueError("body must be an object")
            script, recorded = self._script_for(request, body)
        except (ValueError, ScriptError, TypeError) as exc:
            return web.json_response(fail(400, f"bad request: {exc}"), status=400)
        if anthropic:
            auth = request.headers.get("x-api-key")
        else:
            header = request.headers.get("Authorization", "")
            auth = header[7:] if header.startswith("Bearer ") else None
        options = body.get("stream_options")
        max_tokens = body.get("max_tokens", body.get("max_completion_tokens"))
        call = Call(
            api=api,
            path=request.path,
            model=body.get("model"),
            max_tokens=max_tokens if isinstance(max_tokens, int) else None,
            stream=bool(body.get("stream")),
            include_usage=isinstance(options, Mapping) and bool(options.get("include_usage")),
            n=int(body.get("n") or 1),
            auth=auth,
            anthropic_version=request.headers.get("anthropic-version"),
            script=recorded,
            cookie=request.headers.get("Cookie"),
            reasoning_effort=body.get("reasoning_effort"),
            thinking=body.get("thinking"),
            reasoning=body.get("reasoning"),
        )
        self.calls.append(call)
        if self.api_key is not None and auth != self.api_key:
            return web.json_response(fail(401, "invalid api key"), status=401)
        if anthropic and call.max_tokens is None:
            return web.json_response(fail(400, "max_tokens: field required"), status=400)
        unknown = sorted(set(body) - ACCEPTED[api]) if script.strict else []
        if unknown:  # in each API's own words
            words = "{}: Extra inputs are not permitted" if anthropic else "Unrecognized request argument supplied: {}"
            return web.json_response(fail(400, words.format(unknown[0])), status=400)
        effort = body.get("reasoning_effort")
        if script.strict and api == "openai-chat" and effort is not None and effort not in REASONING_EFFORTS:
            words = f"Invalid value: '{effort}'. Supported values are: {', '.join(REASONING_EFFORTS)}."
            return web.json_response(fail(400, words), status=400)

        if script.first_byte_delay_ms:
            await asyncio.sleep(script.first_byte_delay_ms / 1000)
        if script.hang:
            await asyncio.sleep(HANG_SECONDS)
        if script.status is not None:
            headers = {"Retry-After": str(script.retry_after)} if script.retry_after is not None else None
            return web.json_response(fail(script.status, script.error_message), status=script.status, headers=headers)

        if script.body_200 is not None:
            kind = "application/json" if script.body_200.startswith("{") else "text/html"
            return web.Response(text=script.body_200, content_type=kind)

        pieces = script.pieces()
        finish = script.finish_reason or "stop"
        limit = call.max_tokens
        if limit is not None and script.overrun is None and len(pieces) > limit:
            pieces = pieces[:limit]
            finish = script.finish_reason or "length"
        n = 1 if anthropic else call.n
        usage = self._usage(script, body, pieces, n, limit)
        if call.stream:
            if anthropic:
                return await self._anthropic_stream(request, call, script, pieces, finish, usage)
            return await self._openai_stream(request, call, api, script, pieces, finish, usage)
        cookie = {"Set-Cookie": script.set_cookie} if script.set_cookie else None
        if anthropic:
            return web.json_response(self._anthropic_json(call, script, pieces, finish, usage), headers=cookie)
        return web.json_response(self._openai_json(call, api, script, pieces, finish, usage), headers=cookie)

    @staticmethod
    def _usage(script: Script, body: Mapping[str, Any], pieces: list[str], n: int, limit: int | None) -> dict[str, int]:
        given = dict(script.usage or {})
        prompt_chars = sum(len(t) for t in _texts(body))
        reasoning = len(script.reasoning_pieces()) * n
        completion = len(pieces) * n + reasoning
        if script.overrun is not None:
            completion = math.ceil((limit if limit is not None else len(pieces)) * script.overrun) * n
        return {
            "prompt_tokens": given.get("prompt_tokens", max(1, prompt_chars // 4)),
            "completion_tokens": given.get("completion_tokens", completion),
            "cached_tokens": given.get("cached_tokens", 0),
            "reasoning_tokens": given.get("reasoning_tokens", reasoning),
            "cache_write_tokens": given.get("cache_write_tokens", 0),  # reported by the Anthropic API only
        }

    @staticmethod
    def _openai_usage(usage: Mapping[str, int]) -> dict[str, Any]:
        return {
            "prompt_tokens": usage["prompt_tokens"],
            "completion_tokens": usage["completion_tokens"],
            "total_tokens": usage["prompt_tokens"] + usage["completion_tokens"],
            "prompt_tokens_details": {"cached_tokens": usage["cached_tokens"]},
            "completion_tokens_details": {"reasoning_tokens": usage["reasoning_tokens"]},
        }

    @staticmethod
    def _anthropic_usage(usage: Mapping[str, int]) -> dict[str, int]:
        return {
            "input_tokens": usage["prompt_tokens"] - usage["cached_tokens"] - usage["cache_write_tokens"],
            "cache_read_input_tokens": usage["cached_tokens"],
            "cache_creation_input_tokens": usage["cache_write_tokens"],
            "output_tokens": usage["completion_tokens"],
        }

    def _openai_json(
        self, call: Call, api: str, script: Script, pieces: list[str], finish: str, usage: Mapping[str, int]
    ) -> dict[str, Any]:
        text = "".join(pieces)
        chat = api == "openai-chat"
        message: dict[str, Any] = {"role": "assistant", "content": text}
        if script.reasoning:
            message[script.reasoning_field] = script.reasoning
        choices = [
            (
                {
                    "index": i,
                    "message": dict(message),
                    "finish_reason": finish,
                    "logprobs": None,
                }
                if chat
                else {"index": i, "text": text, "finish_reason": finish, "logprobs": None}
            )
            for i in range(call.n)
        ]
        out: dict[str, Any] = {
            "id": "chatcmpl-fake" if chat else "cmpl-fake",
            "object": "chat.completion" if chat else "text_completion",
            "created": int(time.time()),
            "model": call.model,
            "choices": choices,
        }
        if not script.no_usage:
            out["usage"] = self._openai_usage(usage)
        return out

    def _anthropic_json(
        self, call: Call, script: Script, pieces: list[str], finish: str, usage: Mapping[str, int]
    ) -> dict[str, Any]:
        stop = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}.get(finish, finish)
        out: dict[str, Any] = {
            "id": "msg_fake",
            "type": "message",
            "role": "assistant",
            "model": call.model,
            "content": [
                *([{"type": "thinking", "thinking": script.reasoning, "signature": "sig"}] if script.reasoning else []),
                {"type": "text", "text": "".join(pieces)},
            ],
            "stop_reason": stop,
            "stop_sequence": None,
        }
        if not script.no_usage:
            out["usage"] = self._anthropic_usage(usage)
        return out

    async def _begin(self, request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
        await response.prepare(request)
        return response

    @staticmethod
    async def _reset(request: web.Request, response: web.StreamResponse) -> web.StreamResponse:
        # Let the chunks already written reach the client, then drop the connection without
        # the chunked-encoding terminator: the client sees a truncated body.
        await asyncio.sleep(0.01)
        if request.transport is not None:
            request.transport.close()
        response.force_close()
        return response

    async def _openai_stream(
        self,
        request: web.Request,
        call: Call,
        api: str,
        script: Script,
        pieces: list[str],
        finish: str,
        usage: Mapping[str, int],
    ) -> web.StreamResponse:
        chat = api == "openai-chat"
        base = {
            "id": "chatcmpl-fake" if chat else "cmpl-fake",
            "object": "chat.completion.chunk" if chat else "text_completion",
            "created": int(time.time()),
            "model": call.model,
        }
        response = await self._begin(request)
        delay = script.chunk_delay_ms / 1000

        def choice(i: int, text: str | None, reason: str | None, *, role: bool = False) -> dict[str, Any]:
            if not chat:
                return {"index": i, "text": text or "", "finish_reason": reason, "logprobs": None}
            delta: dict[str, Any] = {"role": "assistant", "content": ""} if role else {}
            if text is not None:
                delta["content"] = text
            return {"index": i, "delta": delta, "finish_reason": reason, "logprobs": None}

        if chat:
            await response.write(_sse({**base, "choices": [choice(i, None, None, role=True) for i in range(call.n)]}))
            for thought in script.reasoning_pieces():
                thinking = [
                    {"index": i, "delta": {script.reasoning_field: thought}, "finish_reason": None}
                    for i in range(call.n)
                ]
                await response.write(_sse({**base, "choices": thinking}))
        for number, piece in enumerate(pieces):
            if script.reset_after_chunks is not None and number >= script.reset_after_chunks:
                return await self._reset(request, response)
            if script.end_after_chunks is not None and number >= script.end_after_chunks:
                await response.write_eof()
                return response
            if script.stream_error_after_chunks is not None and number >= script.stream_error_after_chunks:
                await response.write(_sse({**_openai_error(500, script.error_message), **base, "choices": []}))
                await response.write_eof()
                return response
            if delay:
                await asyncio.sleep(delay)
            await response.write(_sse({**base, "choices": [choice(i, piece, None) for i in range(call.n)]}))
        if script.reset_after_chunks is not None:
            return await self._reset(request, response)
        await response.write(
            _sse({**base, "choices": [choice(i, "" if not chat else None, finish) for i in range(call.n)]})
        )
        if call.include_usage and not script.no_usage:
            await response.write(_sse({**base, "choices": [], "usage": self._openai_usage(usage)}))
        await response.write(b"data: [DONE]\n\n")
        await response.write_eof()
        return response

    async def _anthropic_stream(
        self,
        request: web.Request,
        call: Call,
        script: Script,
        pieces: list[str],
        finish: str,
        usage: Mapping[str, int],
    ) -> web.StreamResponse:
        response = await self._begin(request)
        delay = script.chunk_delay_ms / 1000
        start_usage = {**self._anthropic_usage(usage), "output_tokens": 1}
        message: dict[str, Any] = {
            "id": "msg_fake",
            "type": "message",
            "role": "assistant",
            "model": call.model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
        }
        if not script.no_usage:
            message["usage"] = start_usage
        await response.write(_sse({"type": "message_start", "message": message}, "message_start"))
        text_index = 0
        if script.reasoning:
            text_index = 1
            await response.write(
                _sse(
                    {"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}},
                    "content_block_start",
                )
            )
            for thought in script.reasoning_pieces():
                delta = {
                    "type": "content_block_delta",
                    "index": 0,
                    "delta": {"type": "thinking_delta", "thinking": thought},
                }
                await response.write(_sse(delta, "content_block_delta"))
            signature = {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "signature_delta", "signature": "sig"},
            }
            await response.write(_sse(signature, "content_block_delta"))
            await response.write(_sse({"type": "content_block_stop", "index": 0}, "content_block_stop"))
        await response.write(
            _sse(
                {"type": "content_block_start", "index": text_index, "content_block": {"type": "text", "text": ""}},
                "content_block_start",
            )
        )
        await response.write(_sse({"type": "ping"}, "ping"))
        for number, piece in enumerate(pieces):
            if script.reset_after_chunks is not None and number >= script.reset_after_chunks:
                return await self._reset(request, response)
            if script.end_after_chunks is not None and number >= script.end_after_chunks:
                await response.write_eof()
                return response
            if script.stream_error_after_chunks is not None and number >= script.stream_error_after_chunks:
                await response.write(_sse(_anthropic_error(500, script.error_message), "error"))
                await response.write_eof()
                return response
            if delay:
                await asyncio.sleep(delay)
            delta = {
                "type": "content_block_delta",
                "index": text_index,
                "delta": {"type": "text_delta", "text": piece},
            }
            await response.write(_sse(delta, "content_block_delta"))
        if script.reset_after_chunks is not None:
            return await self._reset(request, response)
        await response.write(_sse({"type": "content_block_stop", "index": text_index}, "content_block_stop"))
        stop = {"stop": "end_turn", "length": "max_tokens", "tool_calls": "tool_use"}.get(finish, finish)
        final: dict[str, Any] = {
            "type": "message_delta",
            "delta": {"stop_reason": stop, "stop_sequence": None},
        }
        if not script.no_usage:
            final["usage"] = {"output_tokens": usage["completion_tokens"]}
        await response.write(_sse(final, "message_delta"))
        await response.write(_sse({"type": "message_stop"}, "message_stop"))
        await response.write_eof()
        return response


class FakeUpstreamThread:
    """`FakeUpstream` on its own event loop in a daemon thread, for synchronous tests."""

    def __init__(self, **kwargs: Any) -> None:
        self.server = FakeUpstream(**kwargs)
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="fake-upstream", daemon=True)

    def __enter__(self) -> FakeUpstreamThread:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self._loop).result(timeout=10)
        return self

    def __exit__(self, *exc: object) -> None:
        asyncio.run_coroutine_threadsafe(self.server.stop(), self._loop).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._loop.close()

    @property
    def url(self) -> str:
        return self.server.url

    @property
    def base_url(self) -> str:
        return self.server.base_url

    @property
    def calls(self) -> list[Call]:
        calls: list[Call] = self._call(lambda: list(self.server.calls))
        return calls

    def reset(self) -> None:
        self._call(self.server.reset)

    def set_script(self, script: Script | Mapping[str, Any] | None, *, model: str | None = None) -> None:
        self._call(lambda: self.server.set_script(script, model=model))

    def _call(self, fn: Any) -> Any:
        async def run() -> Any:
            return fn()

        return asyncio.run_coroutine_threadsafe(run(), self._loop).result(timeout=10)


async def _serve_forever(args: argparse.Namespace) -> None:
    server = FakeUpstream(host=args.host, port=args.port, api_key=args.api_key)
    await server.start()
    print(f"READY {server.url}", flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="Fake OpenAI/Anthropic upstream for tests")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--api-key", default=None, help="require this key (Bearer or x-api-key)")
    parser.add_argument("--uvloop", action="store_true", help="run on uvloop (load tests)")
    args = parser.parse_args(argv)
    if args.uvloop:
        import uvloop

        uvloop.run(_serve_forever(args))
    else:
        asyncio.run(_serve_forever(args))


if __name__ == "__main__":
    main()
