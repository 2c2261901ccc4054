"""Adapter for Anthropic's Messages API, translated to and from OpenAI's format.

Request: system/developer messages become ``system``; assistant ``tool_calls`` become
``tool_use`` blocks and ``tool`` messages ``tool_result`` blocks; consecutive messages of one
role are merged (the API wants alternating turns); ``max_tokens`` is always sent (it is
required there); ``stop`` becomes ``stop_sequences``; OpenAI temperatures above 1 are clamped
to Anthropic's maximum of 1. ``cache_control`` on text and image parts (system ones included)
is kept, so clients can ask for prompt caching as on OpenRouter. OpenRouter's ``reasoning``
(``max_tokens``, ``effort`` or ``enabled``) and OpenAI's ``reasoning_effort`` become extended
``thinking`` with a token budget (`reasoning.requested`, read as the OpenAI adapter reads it).
Unsupported (another endpoint may serve them): ``n > 1``, and the legacy ``functions`` /
``function_call`` form, whose answers would not come back in it.

Response and stream: text becomes ``content``, thinking becomes ``reasoning`` (OpenRouter's
field; left out when the request excludes reasoning, though still billed as the output it is, and
streamed as an occasional `keepalive` comment),
``tool_use`` becomes ``tool_calls``; stop reasons map end_turn/stop_sequence → stop,
max_tokens → length, tool_use → tool_calls, refusal → content_filter. Usage is normalized to
OpenAI semantics: prompt tokens = input + cache reads + cache writes, cached = cache reads.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from teamrouter.providers.base import (
    Kind,
    ParsedResponse,
    SSEDecoder,
    UnsupportedRequestError,
    UpstreamError,
    UpstreamRequest,
    Usage,
    dumps,
    error_message,
    keepalive,
    loads,
    sse_event,
    upstream_error,
)
from teamrouter.providers.reasoning import DEFAULT_EFFORT, ReasoningAsk, budget_for_effort, requested

if TYPE_CHECKING:
    from teamrouter.gateway.catalog import Endpoint

STOP_REASONS = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "refusal": "content_filter",
    "pause_turn": "stop",
}
# 529 is Anthropic's "overloaded": like 503, worth another endpoint.
_PASSTHROUGH = ("temperature", "top_p", "top_k")
MIN_THINKING_TOKENS = 1024  # Anthropic's smallest thinking budget


def map_stop_reason(reason: object) -> str | None:
    if reason is None:
        return None
    return STOP_REASONS.get(str(reason), "stop")


class AnthropicAdapter:
    """POST {base_url}/messages with ``x-api-key`` and ``anthropic-version``."""

    kind = "anthropic"

    def build_request(
        self,
        endpoint: Endpoint,
        body: Mapping[str, Any],
        stream: bool,
        *,
        max_tokens: int | None = None,
        kind: Kind = "chat",
    ) -> UpstreamRequest:
        n = body.get("n") or 1
        if n != 1:
            raise UnsupportedRequestError("Anthropic endpoints do not support n > 1", field="n")
        if kind == "chat" and _uses_legacy_functions(body):
            raise UnsupportedRequestError(
                "Anthropic endpoints do not support the legacy functions / function_call form; use tools",
                field="functions" if "functions" in body else "function_call",
            )
        if kind == "chat":
            system, messages = to_anthropic_messages(body.get("messages") or [])
        else:
            prompt = body.get("prompt")
            text = prompt if isinstance(prompt, str) else "".join(map(str, prompt or []))
            system, messages = [], [{"role": "user", "content": text}]
        budget = max_tokens or body.get("max_completion_tokens") or body.get("max_tokens")
        out: dict[str, Any] = {
            "model": endpoint.upstream_model,
            "max_tokens": budget or endpoint.max_completion_tokens,
            "messages": messages,
        }
        if system:
            out["system"] = _system(system)
        for key in _PASSTHROUGH:
            if body.get(key) is not None:
                out[key] = body[key]
        if isinstance(out.get("temperature"), int | float):
            out["temperature"] = min(out["temperature"], 1)
        if kind == "chat" and (thinking := _thinking(body, out["max_tokens"])) is not None:
            out["thinking"] = thinking
            # Anthropic refuses sampling changes with thinking on (temperature must be 1).
            for key in _PASSTHROUGH:
                out.pop(key, None)
        stop = body.get("stop")
        if isinstance(stop, str):
            out["stop_sequences"] = [stop]
        elif isinstance(stop, list) and stop:
            out["stop_sequences"] = stop
        if kind == "chat":
            tools = body.get("tools")
            if isinstance(tools, list) and tools:
                out["tools"] = [_tool(t) for t in tools]
                choice = _tool_choice(body.get("tool_choice"), body.get("parallel_tool_calls"))
                if choice is not None:
                    out["tool_choice"] = choice
        if isinstance(body.get("user"), str):
            out["metadata"] = {"user_id": body["user"]}
        if stream:
            out["stream"] = True
        headers = {
            "Content-Type": "application/json",
            "Accept": "text/event-stream" if stream else "application/json",
            "anthropic-version": endpoint.provider.anthropic_version,
        }
        headers.update(endpoint.provider.headers)
        if endpoint.provider.api_key:
            headers["x-api-key"] = endpoint.provider.api_key
        return UpstreamRequest("POST", endpoint.provider.base_url + "/messages", headers, dumps(out), stream=stream)

    def parse_response(
        self,
        status: int,
        body: bytes,
        *,
        kind: Kind = "chat",
        response_id: str | None = None,
        model: str | None = None,
        created: int | None = None,
        exclude_reasoning: bool = False,
    ) -> ParsedResponse:
        if not 200 <= status < 300:
            raise self.map_error(status, body)
        try:
            data = loads(body)
        except (ValueError, UnicodeDecodeError):
            raise UpstreamError(502, "upstream sent invalid JSON", retryable=True) from None
        if not isinstance(data, dict) or data.get("type") == "error" or "content" not in data:
            raise UpstreamError(502, f"unexpected upstream answer: {error_message(body)}", retryable=True)
        text: list[str] = []
        reasoning: list[str] = []
        tool_calls: list[dict[str, Any]] = []
        for block in data.get("content") or []:
            if not isinstance(block, Mapping):
                continue
            if block.get("type") == "text":
                text.append(str(block.get("text", "")))
            elif block.get("type") == "thinking":
                reasoning.append(str(block.get("thinking", "")))
            elif block.get("type") == "tool_use":
                tool_calls.append(
                    {
                        "id": block.get("id"),
                        "type": "function",
                        "function": {
                            "name": block.get("name"),
                            "arguments": json.dumps(block.get("input", {}), ensure_ascii=False),
                        },
                    }
                )
        finish = map_stop_reason(data.get("stop_reason"))
        usage = usage_from_anthropic(data.get("usage"))
        rid = response_id or str(data.get("id", ""))
        name = model or str(data.get("model", ""))
        when = created if created is not None else int(time.time())
        content = "".join(text)
        if kind == "completion":
            out: dict[str, Any] = {
                "id": rid,
                "object": "text_completion",
                "created": when,
                "model": name,
                "choices": [{"index": 0, "text": content, "finish_reason": finish, "logprobs": None}],
            }
        else:
            message: dict[str, Any] = {
                "role": "assistant",
                "content": content if (content or not tool_calls) else None,
            }
            if reasoning and not exclude_reasoning:
                message["reasoning"] = "".join(reasoning)
            if tool_calls:
                message["tool_calls"] = tool_calls
            out = {
                "id": rid,
                "object": "chat.completion",
                "created": when,
                "model": name,
                "system_fingerprint": None,
                "choices": [{"index": 0, "message": message, "finish_reason": finish, "logprobs": None}],
            }
        if usage is not None:
            out["usage"] = usage.to_openai()
        withheld = sum(map(len, reasoning)) if exclude_reasoning else 0
        return ParsedResponse(out, usage, finish, withheld_chars=withheld)

    def stream_parser(
        self,
        *,
        kind: Kind = "chat",
        response_id: str | None = None,
        model: str | None = None,
        provider: str | None = None,
        created: int | None = None,
        exclude_reasoning: bool = False,
    ) -> AnthropicStreamParser:
        return AnthropicStreamParser(
            kind=kind,
            response_id=response_id,
            model=model,
            provider=provider,
            created=created,
            exclude_reasoning=exclude_reasoning,
        )

    def map_error(self, status: int, body: bytes) -> UpstreamError:
        return upstream_error(status, body)


def usage_from_anthropic(usage: object) -> Usage | None:
    if not isinstance(usage, Mapping):
        return None

    def count(key: str) -> int:
        value = usage.get(key)
        return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else 0

    cache_read, cache_write = count("cache_read_input_tokens"), count("cache_creation_input_tokens")
    prompt = count("input_tokens") + cache_read + cache_write
    return Usage(prompt, count("output_tokens"), 0, cache_read, cache_write_tokens=cache_write)


def _blocks(content: object) -> list[dict[str, Any]]:
    if content is None:
        return []
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    blocks: list[dict[str, Any]] = []
    for part in content if isinstance(content, Sequence) else []:
        if not isinstance(part, Mapping):
            continue
        block: dict[str, Any] | None = None
        if part.get("type") == "text":
            block = {"type": "text", "text": str(part.get("text", ""))}
        elif part.get("type") == "image_url":
            image = part.get("image_url")
            url = image.get("url") if isinstance(image, Mapping) else image
            if isinstance(url, str):
                block = {"type": "image", "source": _image_source(url)}
        if block is not None:
            if isinstance(part.get("cache_control"), Mapping):
                # Prompt caching, as on OpenRouter. Without its `ttl`: every write is a 5-minute one,
                # the kind the catalog's cache_write_price bills (an hour's costs more upstream).
                block["cache_control"] = {k: v for k, v in part["cache_control"].items() if k != "ttl"}
            blocks.append(block)
    return blocks


def _system(messages: list[list[dict[str, Any]]]) -> str | list[dict[str, Any]]:
    """The ``system`` field: one string (messages apart by a blank line, a message's parts joined
    as OpenAI joins them), or the text blocks themselves when one asks for prompt caching."""
    if any("cache_control" in block for blocks in messages for block in blocks):
        return [block for blocks in messages for block in blocks]
    return "\n\n".join("".join(block["text"] for block in blocks) for blocks in messages)


def _uses_legacy_functions(body: Mapping[str, Any]) -> bool:
    if body.get("functions") or body.get("function_call"):
        return True
    messages = body.get("messages")
    return isinstance(messages, list) and any(
        isinstance(m, Mapping) and (m.get("role") == "function" or m.get("function_call")) for m in messages
    )


def _continues_tool_calls(messages: object) -> bool:
    """Whether the conversation's last assistant message called tools (a tool loop goes on)."""
    if not isinstance(messages, list):
        return False
    for message in reversed(messages):
        if isinstance(message, Mapping) and message.get("role") == "assistant":
            return bool(message.get("tool_calls"))
    return False


def _thinking(body: Mapping[str, Any], max_tokens: int) -> dict[str, Any] | None:
    """Extended thinking from what the request asks (`reasoning.requested`: OpenRouter's ``reasoning``
    object or OpenAI's ``reasoning_effort``, which wins); None when it asks for none. An effort
    spends OpenRouter's share of ``max_tokens``. The budget counts toward ``max_tokens`` (and so
    toward the hold), and Anthropic wants it at least 1,024 and below ``max_tokens``."""
    choice = body.get("tool_choice")
    if choice == "required" or isinstance(choice, Mapping):
        return None  # Anthropic refuses thinking when a tool call is forced; the tool call wins
    if _continues_tool_calls(body.get("messages")):
        # Mid tool loop Anthropic wants the last assistant turn to begin with its thinking block,
        # signed; OpenAI-shaped messages cannot carry it back, so this turn goes without thinking
        # (turning it on here would be refused outright).
        return None
    ask = requested(body)
    reasoning = body.get("reasoning")
    if ask is None and isinstance(reasoning, Mapping) and reasoning.get("exclude") is not None:
        # Anthropic thinks only when asked: a client that says what to do with the reasoning expects
        # some (OpenRouter's reading), where an OpenAI reasoning model would reason unasked.
        ask = ReasoningAsk(effort=DEFAULT_EFFORT)
    if ask is None:
        return None
    tokens = budget_for_effort(ask.effort, max_tokens) if ask.effort is not None else ask.max_tokens
    if tokens is None:
        return None  # effort "none", or `enabled: false`
    budget = min(max(tokens, MIN_THINKING_TOKENS), max_tokens - 1)
    if budget < MIN_THINKING_TOKENS:
        raise UnsupportedRequestError(
            f"reasoning on Anthropic needs max_tokens above {MIN_THINKING_TOKENS} (it was {max_tokens})",
            field="max_tokens",
        )
    return {"type": "enabled", "budget_tokens": budget}


def _image_source(url: str) -> dict[str, str]:
    if url.startswith("data:") and ";base64," in url:
        media_type, data = url[5:].split(";base64,", 1)
        return {"type": "base64", "media_type": media_type, "data": data}
    return {"type": "url", "url": url}


def to_anthropic_messages(
    messages: Sequence[Mapping[str, Any]],
) -> tuple[list[list[dict[str, Any]]], list[dict[str, Any]]]:
    """OpenAI messages → (system text blocks, one list per message; Anthropic messages with merged
    same-role turns)."""
    system: list[list[dict[str, Any]]] = []
    out: list[dict[str, Any]] = []
    for message in messages:
        role = message.get("role")
        if role in ("system", "developer"):
            system.append([block for block in _blocks(message.get("content")) if block["type"] == "text"])
            continue
        if role == "tool":
            result = message.get("content")
            blocks: list[dict[str, Any]] = [
                {
                    "type": "tool_result",
                    "tool_use_id": message.get("tool_call_id"),
                    "content": result if isinstance(result, str) else _blocks(result),
                }
            ]
            role = "user"
        else:
            role = "assistant" if role == "assistant" else "user"
            blocks = _blocks(message.get("content"))
            for call in message.get("tool_calls") or []:
                fn = call.get("function") or {}
                try:
                    arguments = loads(fn.get("arguments") or "{}")
                except ValueError:
                    arguments = {}
                blocks.append(
                    {
                        "type": "tool_use",
                        "id": call.get("id"),
                        "name": fn.get("name"),
                        "input": arguments,
                    }
                )
        if out and out[-1]["role"] == role:
            previous = out[-1]["content"]
            if isinstance(previous, str):
                previous = [{"type": "text", "text": previous}] if previous else []
            out[-1]["content"] = previous + blocks
        elif role == "user" and isinstance(message.get("content"), str) and message.get("role") != "tool":
            out.append({"role": role, "content": message["content"]})
        else:
            out.append({"role": role, "content": blocks})
    return system, out


def _tool(tool: Mapping[str, Any]) -> dict[str, Any]:
    fn = tool.get("function") if tool.get("type") == "function" else tool
    fn = fn if isinstance(fn, Mapping) else {}
    out: dict[str, Any] = {
        "name": fn.get("name"),
        "input_schema": fn.get("parameters") or {"type": "object", "properties": {}},
    }
    if fn.get("description"):
        out["description"] = fn["description"]
    return out


def _tool_choice(choice: object, parallel: object) -> dict[str, Any] | None:
    result: dict[str, Any] | None
    if choice == "auto":
        result = {"type": "auto"}
    elif choice == "required":
        result = {"type": "any"}
    elif choice == "none":
        result = {"type": "none"}
    elif isinstance(choice, Mapping) and isinstance(choice.get("function"), Mapping):
        result = {"type": "tool", "name": choice["function"].get("name")}
    else:
        result = None
    if parallel is False:
        result = (result or {"type": "auto"}) | {"disable_parallel_tool_use": True}
    return result


class AnthropicStreamParser:
    """Translate Messages API stream events into OpenAI ``chat.completion.chunk`` events."""

    def __init__(
        self,
        *,
        kind: Kind = "chat",
        response_id: str | None = None,
        model: str | None = None,
        provider: str | None = None,
        created: int | None = None,
        exclude_reasoning: bool = False,
    ) -> None:
        self.usage: Usage | None = None
        self.prompt_tokens: int | None = None
        self.cached_tokens = 0
        self.cache_write_tokens = 0
        self.finish_reason: str | None = None
        self.completion_chars_seen = 0
        self.error: UpstreamError | None = None
        self.done = False
        self.created: int | None = created
        self._kind = kind
        self._id = response_id
        self._model = model
        self._provider = {"provider": provider} if provider is not None else {}
        self._decoder = SSEDecoder()
        self._prompt = Usage()
        self._tool_index: dict[int, int] = {}  # Anthropic block index -> OpenAI tool index
        self._exclude_reasoning = exclude_reasoning
        self._dropped = 0  # thinking deltas withheld, for `keepalive`

    def feed(self, data: bytes) -> list[bytes]:
        return self._events(self._decoder.feed(data))

    def close(self) -> list[bytes]:
        return self._events(self._decoder.close())

    def _events(self, events: list[tuple[str | None, bytes]]) -> list[bytes]:
        out: list[bytes] = []
        for _name, payload in events:
            try:
                event = loads(payload)
            except (ValueError, UnicodeDecodeError):
                continue
            if isinstance(event, dict):
                chunk = self._event(event)
                if chunk is not None:
                    out.append(chunk)
        return out

    def _chunk(self, delta: dict[str, Any], finish: str | None = None) -> bytes:
        if self._kind == "completion":
            choice: dict[str, Any] = {
                "index": 0,
                "text": delta.get("content", ""),
                "finish_reason": finish,
                "logprobs": None,
            }
            obj = "text_completion"
        else:
            choice = {"index": 0, "delta": delta, "finish_reason": finish, "logprobs": None}
            obj = "chat.completion.chunk"
        return sse_event(
            {
                "id": self._id,
                "object": obj,
                "created": self.created,
                "model": self._model,
                **self._provider,
                "choices": [choice],
            }
        )

    def _event(self, event: dict[str, Any]) -> bytes | None:
        kind = event.get("type")
        if kind == "message_start":
            message = event.get("message") or {}
            self._id = self._id or str(message.get("id", ""))
            self._model = self._model or str(message.get("model", ""))
            if self.created is None:
                self.created = int(time.time())
            self._prompt = usage_from_anthropic(message.get("usage")) or Usage()
            if "usage" in message:
                # A stream cut before message_delta is billed from these: cache reads at their price.
                self.prompt_tokens = self._prompt.prompt_tokens
                self.cached_tokens = self._prompt.cached_tokens
                self.cache_write_tokens = self._prompt.cache_write_tokens
            # Final usage only comes with message_delta; a stream cut before it is estimated.
            return self._chunk({"role": "assistant", "content": ""})
        if kind == "content_block_start":
            block = event.get("content_block") or {}
            if block.get("type") == "tool_use" and self._kind == "chat":
                index = len(self._tool_index)
                self._tool_index[int(event.get("index", 0))] = index
                self.completion_chars_seen += len(str(block.get("name", "")))
                call = {
                    "index": index,
                    "id": block.get("id"),
                    "type": "function",
                    "function": {"name": block.get("name"), "arguments": ""},
                }
                return self._chunk({"tool_calls": [call]})
            return None
        if kind == "content_block_delta":
            delta = event.get("delta") or {}
            dtype = delta.get("type")
            if dtype == "text_delta":
                text = str(delta.get("text", ""))
                self.completion_chars_seen += len(text)
                return self._chunk({"content": text})
            if dtype == "thinking_delta" and self._kind == "chat":
                text = str(delta.get("thinking", ""))
                # Counted even when withheld: thinking is billed output, and it commits the stream.
                self.completion_chars_seen += len(text)
                if self._exclude_reasoning:
                    self._dropped += 1
                    return keepalive(self._dropped)
                return self._chunk({"reasoning": text})
            if dtype == "input_json_delta" and self._kind == "chat":
                partial = str(delta.get("partial_json", ""))
                self.completion_chars_seen += len(partial)
                index = self._tool_index.get(int(event.get("index", 0)), 0)
                return self._chunk({"tool_calls": [{"index": index, "function": {"arguments": partial}}]})
            return None
        if kind == "message_delta":
            usage = event.get("usage") or {}
            output = usage.get("output_tokens") if isinstance(usage, Mapping) else None
            if isinstance(output, int) and not isinstance(output, bool):
                # output_tokens in message_delta is the running total, not an increment.
                self.usage = Usage(
                    self._prompt.prompt_tokens,
                    max(output, 0),
                    0,
                    self._prompt.cached_tokens,
                    cache_write_tokens=self._prompt.cache_write_tokens,
                )
            reason = (event.get("delta") or {}).get("stop_reason")
            if reason is not None:
                self.finish_reason = map_stop_reason(reason)
                return self._chunk({}, self.finish_reason)
            return None
        if kind == "message_stop":
            self.done = True
            return None
        if kind == "error":
            err = event.get("error") or {}
            message = err.get("message") if isinstance(err, Mapping) else str(err)
            self.error = UpstreamError(502, f"upstream error in stream: {message}", retryable=False)
            self.finish_reason = "error"
            return None
        return None  # ping, content_block_stop, unknown future events
