"""Adapter for any OpenAI-compatible server (OpenAI, vLLM, Ollama, llama.cpp, Together, ...).

Requests pass through with the model replaced by the endpoint's upstream model name, the
gateway-only fields removed (reasoning exclusion among them: ``include_reasoning`` and
``reasoning.exclude``), and ``stream_options.include_usage`` forced on when streaming so usage
arrives in-band. OpenRouter's ``reasoning`` object is not OpenAI's (api.openai.com refuses it): a chat
request's becomes ``reasoning_effort`` (`reasoning.requested`; a token budget becomes the nearest
effort), and the object itself never goes upstream. Streams pass through byte for byte as far as
possible: each event is parsed for usage and finish reason, but forwarded as received except that
``id`` and ``model`` are rewritten to the gateway's (a byte substitution; the JSON is re-encoded
only when that substitution cannot be done safely, when the event also carries usage, which is
stripped, or when it carries vLLM's and DeepSeek's ``reasoning_content``, renamed ``reasoning`` as
OpenRouter names it, in whole answers too).
When the request excludes reasoning, the reasoning fields an upstream may send
(`base.REASONING_FIELDS`) are removed from messages and deltas; a chunk left with nothing else to
say is not forwarded, an occasional `keepalive` comment going out in its place.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from teamrouter.providers.base import (
    OUTPUT_FIELDS,
    REASONING_FIELDS,
    Kind,
    ParsedResponse,
    SSEDecoder,
    UpstreamError,
    UpstreamRequest,
    Usage,
    dumps,
    error_message,
    keepalive,
    loads,
    output_chars,
    upstream_error,
)
from teamrouter.providers.reasoning import effort_for_budget, requested

if TYPE_CHECKING:
    from teamrouter.gateway.catalog import Endpoint

# OpenRouter request fields the gateway consumes itself; upstreams reject or misread them (OpenAI
# answers an unknown field with a 400). `include_reasoning` is one: the gateway withholds reasoning;
# `reasoning` another: it is translated into `reasoning_effort`.
GATEWAY_FIELDS = frozenset(
    {"models", "provider", "route", "transforms", "plugins", "usage", "include_reasoning", "reasoning"}
)


class OpenAIAdapter:
    """OpenAI chat completions (``/chat/completions``) and legacy ``/completions``."""

    kind = "openai"

    def build_request(
        self,
        endpoint: Endpoint,
        body: Mapping[str, Any],
        stream: bool,
        *,
        max_tokens: int | None = None,
        kind: Kind = "chat",
    ) -> UpstreamRequest:
        out = {k: v for k, v in body.items() if k not in GATEWAY_FIELDS}
        out["model"] = endpoint.upstream_model
        # The client may have said max_completion_tokens (newer) or max_tokens; older
        # OpenAI-compatible servers only know max_tokens, which OpenAI itself still accepts.
        # o-series models need max_completion_tokens, so keep the client's spelling.
        budget = max_tokens
        if budget is None:
            budget = body.get("max_completion_tokens") or body.get("max_tokens")
        if budget is not None:
            key = "max_completion_tokens" if "max_completion_tokens" in body else "max_tokens"
            out.pop("max_tokens", None)
            out[key] = budget
        if kind != "chat":
            # The legacy /completions API knows no `reasoning_effort`: the client's own is dropped
            # like the `reasoning` object, rather than sent to be refused.
            out.pop("reasoning_effort", None)
        elif (ask := requested(body)) is not None:
            # OpenAI has no reasoning budget, only efforts: a budget becomes the effort that spends
            # about as much of max_tokens (OpenRouter's rule). `exclude` alone asks for nothing here,
            # unlike on Anthropic: reasoning models reason unasked, and others refuse the field.
            cap = budget if budget is not None else endpoint.max_completion_tokens
            if not ask.off:
                out["reasoning_effort"] = ask.effort or effort_for_budget(ask.max_tokens or 0, cap)
        if stream:
            out["stream"] = True
            options = body.get("stream_options")
            out["stream_options"] = {
                **(options if isinstance(options, Mapping) else {}),
                "include_usage": True,
            }
        else:
            out.pop("stream", None)
            out.pop("stream_options", None)
        headers = {
            "Content-Type": "application/json",
            "Accept": "text/event-stream" if stream else "application/json",
        }
        headers.update(endpoint.provider.headers)
        if endpoint.provider.api_key:
            headers["Authorization"] = f"Bearer {endpoint.provider.api_key}"
        path = "/chat/completions" if kind == "chat" else "/completions"
        return UpstreamRequest("POST", endpoint.provider.base_url + path, headers, dumps(out), stream=stream)

    def parse_response(
        self,
        status: int,
        body: bytes,
        *,
        kind: Kind = "chat",
        response_id: str | None = None,
        model: str | None = None,
        exclude_reasoning: bool = False,
    ) -> ParsedResponse:
        if not 200 <= status < 300:
            raise self.map_error(status, body)
        try:
            data = loads(body)
        except (ValueError, UnicodeDecodeError):
            raise UpstreamError(502, "upstream sent invalid JSON", retryable=True) from None
        if not isinstance(data, dict) or not isinstance(data.get("choices"), list):
            if isinstance(data, dict) and data.get("error"):
                # Some servers answer 200 with an error object; nothing was produced.
                raise UpstreamError(502, error_message(body), retryable=True)
            raise UpstreamError(502, "upstream answer has no choices", retryable=True)
        if response_id is not None:
            data["id"] = response_id
        if model is not None:
            data["model"] = model
        finish = None
        for choice in data["choices"]:
            if isinstance(choice, dict):  # parsed JSON: every object is a dict
                if finish is None and choice.get("finish_reason"):
                    finish = str(choice["finish_reason"])
                _name_reasoning(choice.get("message"))
        withheld = 0
        if exclude_reasoning:
            shown = output_chars(data)
            _withhold_reasoning(data["choices"], "message")
            withheld = shown - output_chars(data)
        return ParsedResponse(data, Usage.from_openai(data.get("usage")), finish, withheld_chars=withheld)

    def stream_parser(
        self,
        *,
        kind: Kind = "chat",
        response_id: str | None = None,
        model: str | None = None,
        provider: str | None = None,
        exclude_reasoning: bool = False,
    ) -> OpenAIStreamParser:
        return OpenAIStreamParser(
            response_id=response_id, model=model, provider=provider, exclude_reasoning=exclude_reasoning
        )

    def map_error(self, status: int, body: bytes) -> UpstreamError:
        return upstream_error(status, body)


class OpenAIStreamParser:
    """Pass OpenAI SSE through, rewriting ``id``/``model`` and naming the ``provider`` (as
    OpenRouter's chunks do), extracting usage on the fly."""

    def __init__(
        self,
        *,
        response_id: str | None = None,
        model: str | None = None,
        provider: str | None = None,
        exclude_reasoning: bool = False,
    ) -> None:
        self.usage: Usage | None = None
        self.prompt_tokens: int | None = None  # OpenAI reports usage only at the end
        self.cached_tokens = 0
        self.cache_write_tokens = 0
        self.finish_reason: str | None = None
        self.completion_chars_seen = 0
        self.error: UpstreamError | None = None
        self.done = False
        self.created: int | None = None
        self._decoder = SSEDecoder()
        self._new = tuple((k, v) for k, v in (("id", response_id), ("model", model)) if v is not None)
        self._provider = provider
        # Spliced in as the chunk's first field: no re-serialisation of a chunk passed through.
        self._provider_field = b'{"provider":%s,' % dumps(provider) if provider is not None else None
        # key -> (upstream value, byte patterns to replace, replacement); learned from the first chunk.
        self._patterns: dict[str, tuple[str, tuple[bytes, bytes], bytes]] = {}
        self._exclude_reasoning = exclude_reasoning
        self._dropped = 0  # chunks that carried only withheld reasoning, for `keepalive`
        self._keepalive: bytes | None = None  # what `_event` left to send in place of the chunk it dropped

    def feed(self, data: bytes) -> list[bytes]:
        return self._events(self._decoder.feed(data))

    def close(self) -> list[bytes]:
        return self._events(self._decoder.close())

    def _events(self, events: list[tuple[str | None, bytes]]) -> list[bytes]:
        out: list[bytes] = []
        for _name, payload in events:
            forwarded = self._event(payload)
            if forwarded is not None:
                out.append(b"data: " + forwarded + b"\n\n")
            elif self._keepalive is not None:  # a withheld chunk dropped (checked for dropped events only)
                out.append(self._keepalive)
                self._keepalive = None
        return out

    def _event(self, payload: bytes) -> bytes | None:
        if payload.strip() == b"[DONE]":
            self.done = True
            return None
        try:
            chunk = loads(payload)
        except (ValueError, UnicodeDecodeError):
            return None  # not JSON: nothing a client could use
        if not isinstance(chunk, dict):
            return None
        if chunk.get("error"):
            err = chunk["error"]
            message = err.get("message") if isinstance(err, Mapping) else str(err)
            self.error = UpstreamError(502, f"upstream error in stream: {message}", retryable=False)
            self.finish_reason = "error"
            return None
        if self.created is None and isinstance(chunk.get("created"), int):
            self.created = chunk["created"]
        usage = Usage.from_openai(chunk.get("usage"))
        if usage is not None:
            self.usage = usage
        choices = chunk.get("choices")
        withheld = silent = renamed = False
        if isinstance(choices, list):
            for choice in choices:
                if isinstance(choice, dict):  # parsed JSON: every object is a dict
                    self._count(choice)
                    renamed = _name_reasoning(choice.get("delta")) or renamed
            # After counting: withheld reasoning is still output, billed and committing the stream.
            if self._exclude_reasoning and _withhold_reasoning(choices, "delta"):
                withheld, silent = True, _says_nothing(choices)
        if usage is not None:
            if not choices:
                return None  # the usage-only chunk: the gateway sends its own, with cost
            chunk.pop("usage", None)
            return self._redump(chunk)
        if withheld:
            if silent:  # it carried reasoning only
                self._dropped += 1
                self._keepalive = keepalive(self._dropped)
                return None
            return self._redump(chunk)
        if renamed:
            return self._redump(chunk)
        return self._rewrite(payload, chunk)

    def _count(self, choice: dict[str, Any]) -> None:
        if choice.get("finish_reason"):
            self.finish_reason = str(choice["finish_reason"])
        delta = choice.get("delta")
        if isinstance(delta, dict):
            for key in OUTPUT_FIELDS:  # as `output_chars` counts a whole answer's
                value = delta.get(key)
                if value:
                    self.completion_chars_seen += len(value) if isinstance(value, str) else 1
            tool_calls = delta.get("tool_calls")
            if isinstance(tool_calls, list):
                for call in tool_calls:
                    fn = call.get("function") if isinstance(call, dict) else None
                    if isinstance(fn, dict):
                        # The name counts as output too: a tool call's first delta commits the stream.
                        for part in (fn.get("name"), fn.get("arguments")):
                            if isinstance(part, str):
                                self.completion_chars_seen += len(part)
        elif isinstance(choice.get("text"), str):  # legacy /completions
            self.completion_chars_seen += len(choice["text"])

    def _redump(self, chunk: dict[str, Any]) -> bytes:
        for key, new in self._new:
            chunk[key] = new
        if self._provider is not None:
            chunk["provider"] = self._provider
        return dumps(chunk)

    def _rewrite(self, payload: bytes, chunk: dict[str, Any]) -> bytes:
        out = self._renamed(payload, chunk)
        if out is None:
            return self._redump(chunk)
        if self._provider_field is None:
            return out
        if not chunk or "provider" in chunk or not out.startswith(b"{"):
            # Empty, an upstream that names its own (another router), or leading spaces.
            return self._redump(chunk)
        return self._provider_field + out[1:]

    def _renamed(self, payload: bytes, chunk: dict[str, Any]) -> bytes | None:
        """`payload` with the new `id` and `model` substituted in place, or None when it cannot be."""
        out = payload
        for key, new in self._new:
            old = chunk.get(key)
            if old == new:
                continue
            if not isinstance(old, str):
                return None
            learned = self._patterns.get(key)
            if learned is None or learned[0] != old:
                # Keyed patterns ("id":"x") cannot match inside string content, where quotes
                # are escaped, so the substitution never touches generated text.
                literal = json.dumps(old).encode()
                learned = (
                    old,
                    (b'"%s":%s' % (key.encode(), literal), b'"%s": %s' % (key.encode(), literal)),
                    b'"%s":%s' % (key.encode(), dumps(new)),
                )
                self._patterns[key] = learned
            _, patterns, replacement = learned
            # Exactly one occurrence, which is then the top-level key's: a nested object with the
            # same key and value ({"meta":{"model":"x"},"model":"x"}) sends the chunk to be redumped.
            compact, spaced = out.count(patterns[0]), out.count(patterns[1])
            if compact + spaced != 1:
                return None
            out = out.replace(patterns[0] if compact else patterns[1], replacement, 1)
        return out


def _name_reasoning(holder: Any) -> bool:
    """vLLM's and DeepSeek's ``reasoning_content`` under the name OpenRouter gives reasoning,
    ``reasoning``, in a message or a delta (the `openrouter` SDK reads only that one; Anthropic's
    thinking arrives so named too); whether it was there. A ``reasoning`` the upstream also sent
    is kept as it is."""
    if not isinstance(holder, dict) or holder.get("reasoning_content") is None:
        return False  # absent, or DeepSeek's null on every content delta: nothing to re-encode for
    text = holder.pop("reasoning_content")
    if holder.get("reasoning") is None:
        holder["reasoning"] = text
    return True


def _withhold_reasoning(choices: list[Any], part: str) -> bool:
    """Remove the reasoning fields from each choice's ``part`` (its message or delta); whether any
    was there."""
    removed = False
    for choice in choices:
        holder = choice.get(part) if isinstance(choice, dict) else None
        if isinstance(holder, dict):
            for key in REASONING_FIELDS:
                if key in holder:
                    del holder[key]
                    removed = True
    return removed


def _says_nothing(choices: list[Any]) -> bool:
    """No choice has a delta or a finish reason left (once its reasoning was withheld)."""
    return not any(isinstance(c, dict) and (c.get("delta") or c.get("finish_reason")) for c in choices)
