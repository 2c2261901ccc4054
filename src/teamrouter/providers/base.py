"""Typed shapes shared by every adapter: request, usage, upstream call, parsed answer, errors.

The client always speaks OpenAI's chat (or legacy text) completion format; an adapter turns it
into its upstream's format and the answer (whole or streamed) back into OpenAI's format.
Streams are parsed incrementally: ``StreamParser.feed`` takes raw upstream bytes as they come
and returns the OpenAI SSE events to forward, while it tracks usage and the finish reason.
The upstream's usage chunk and ``[DONE]`` are *not* forwarded: the gateway ends every stream
itself with one usage chunk carrying ``cost`` (see `usage_chunk`) and `DONE`. Reasoning the request
excludes is not forwarded either; an SSE comment now and then takes its place (`keepalive`).
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

import orjson

from teamrouter.gateway.pricing import (
    estimate_completion_prompt_tokens,
    estimate_prompt_tokens,
)
from teamrouter.providers.checks import RequestError, check_messages, check_parameters, check_prompt

if TYPE_CHECKING:
    from teamrouter.gateway.catalog import Endpoint

Kind = Literal["chat", "completion"]
DONE = b"data: [DONE]\n\n"
# One SSE event larger than this is a broken or hostile upstream; memory stays bounded.
MAX_SSE_EVENT_BYTES = 4 * 1024 * 1024
# Typical English output is ~4 characters per token; used only when usage never arrives.
CHARS_PER_TOKEN_ESTIMATE = 4
# Where OpenAI-shaped answers carry a model's reasoning, in a message or a stream delta: OpenRouter's
# `reasoning` (text) and `reasoning_details` (structured), vLLM's and DeepSeek's `reasoning_content`
# (text). What a request that excludes reasoning never gets back, and output all the same.
REASONING_FIELDS = ("reasoning", "reasoning_content", "reasoning_details")
# The parts of a message or delta that are output, for an estimate when usage never arrives: text
# counts its characters, output without text (audio, images, structured reasoning) one, as it is there.
OUTPUT_FIELDS = ("content", "refusal", *REASONING_FIELDS, "audio", "images")
# An SSE comment (clients skip it: the SSE spec, both official SDKs), sent in place of withheld
# reasoning: a long hidden thinking phase would otherwise leave the connection silent until a
# proxy's idle timeout (nginx: 60 s) cut it. OpenRouter keeps its streams alive with such lines too.
KEEPALIVE = b": PROCESSING\n\n"
KEEPALIVE_EVERY = 20


class UpstreamError(Exception):
    """The upstream failed. ``retryable`` means another endpoint may be tried (before the first
    byte reached the client): connection errors, timeouts, 408, 429 and 5xx."""

    def __init__(self, status: int, message: str, *, retryable: bool) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.retryable = retryable
        self.retry_after: float | None = None  # seconds, from a 429's `Retry-After`
        # The upstream's own error code (OpenAI's `code`, Anthropic's `type`), when it gave a plain
        # one: clients tell some refusals apart by it ("context_length_exceeded").
        self.upstream_code: str | None = None

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.status}, {self.message!r}, retryable={self.retryable})"


class UnsupportedRequestError(UpstreamError):
    """This upstream cannot serve the request as asked (e.g. ``n > 1`` on Anthropic).

    Retryable, because another endpoint of the same model may support it; status 400. `field` names
    the request field at fault: when no endpoint can serve the request, the client gets a 400 naming it.
    """

    def __init__(self, message: str, *, field: str | None = None) -> None:
        super().__init__(400, message, retryable=True)
        self.field = field


def is_retryable_status(status: int) -> bool:
    """Statuses worth trying the next endpoint for (only before the first byte is sent): the
    upstream's own trouble, including refusing the deployment's credentials (401, 403)."""
    return status in (401, 403, 408, 425, 429) or status >= 500


def upstream_error(status: int, body: bytes) -> UpstreamError:
    """An upstream's non-200 answer as an `UpstreamError`. A refusal of the deployment's own
    credentials says so without the upstream's words, which can quote part of the operator's key
    (OpenAI's "Incorrect API key provided: sk-…"): the client sees the message, and the key is not
    theirs to fix."""
    if status in (401, 403):
        message = f"upstream error {status}: the provider refused this deployment's credentials"
    else:
        message = f"upstream error {status}: {error_message(body)}"
    error = UpstreamError(status, message, retryable=is_retryable_status(status))
    error.upstream_code = _error_code(body)
    return error


_PLAIN_CODE = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,63}")


def _error_code(body: bytes) -> str | None:
    """`error.code` (OpenAI) or `error.type` (Anthropic) of an error body, when it is a plain
    identifier: anything else could carry text that is not the gateway's to repeat."""
    try:
        data = loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    err = data.get("error", data) if isinstance(data, Mapping) else None
    if not isinstance(err, Mapping):
        return None
    for name in ("code", "type"):
        code = err.get(name)
        if isinstance(code, str) and _PLAIN_CODE.fullmatch(code):
            return code
    return None


@dataclass(frozen=True, slots=True)
class Usage:
    """Token usage in OpenAI semantics: ``prompt_tokens`` includes ``cached_tokens`` and
    ``completion_tokens`` includes ``reasoning_tokens`` and sums every choice."""

    prompt_tokens: int = 0
    completion_tokens: int = 0
    reasoning_tokens: int = 0
    cached_tokens: int = 0
    estimated: bool = False  # True when the upstream never reported usage
    # Of prompt_tokens, those written to the provider's prompt cache (Anthropic bills them above
    # the plain prompt price). Not in OpenAI's usage object.
    cache_write_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def to_openai(self) -> dict[str, Any]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
            "prompt_tokens_details": {"cached_tokens": self.cached_tokens},
            "completion_tokens_details": {"reasoning_tokens": self.reasoning_tokens},
        }

    @classmethod
    def from_openai(cls, usage: object) -> Usage | None:
        """Parse an OpenAI ``usage`` object; ``None`` when absent or malformed."""
        if usage is None or not isinstance(usage, Mapping):  # None first: the ABC check is slow
            return None
        prompt = _count(usage.get("prompt_tokens"))
        completion = _count(usage.get("completion_tokens"))
        if prompt is None or completion is None:
            return None
        prompt_details = usage.get("prompt_tokens_details")
        completion_details = usage.get("completion_tokens_details")
        cached = _count(prompt_details.get("cached_tokens")) if isinstance(prompt_details, Mapping) else 0
        reasoning = _count(completion_details.get("reasoning_tokens")) if isinstance(completion_details, Mapping) else 0
        return cls(prompt, completion, reasoning or 0, min(cached or 0, prompt))


def _count(value: object) -> int | None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        return None
    return value


def estimate_completion_tokens(chars: int) -> int:
    """Completion tokens for ``chars`` characters seen, when the upstream gave no usage."""
    return -(-chars // CHARS_PER_TOKEN_ESTIMATE)


def output_chars(body: Mapping[str, Any]) -> int:
    """Characters of output in a whole answer, for an estimate when it carried no usage: its
    `OUTPUT_FIELDS` (text, reasoning, refusals), and the names and arguments of tool (and legacy
    function) calls, as a stream's parser counts them."""
    total = 0
    for choice in body.get("choices") or ():
        if not isinstance(choice, Mapping):
            continue
        message = choice.get("message")
        if not isinstance(message, Mapping):
            text = choice.get("text")  # legacy /completions
            total += len(text) if isinstance(text, str) else 0
            continue
        for field in OUTPUT_FIELDS:
            value = message.get(field)
            if value:
                total += len(value) if isinstance(value, str) else 1
        calls = message.get("tool_calls")
        functions = (
            [call.get("function") for call in calls if isinstance(call, Mapping)] if isinstance(calls, list) else []
        )
        functions.append(message.get("function_call"))
        for function in functions:
            if isinstance(function, Mapping):
                for part in (function.get("name"), function.get("arguments")):
                    total += len(part) if isinstance(part, str) else 0
    return total


def keepalive(dropped: int) -> bytes | None:
    """What to send in place of the `dropped`-th (from 1) stream event left empty by withheld
    reasoning: `KEEPALIVE` for the first and every `KEEPALIVE_EVERY`-th after, else nothing.

    Counted, not timed, as parsers are pure: reasoning streams an event per token or few, many a
    second, so one comment per 20 is far inside any idle timeout, where one per event would be a
    write to the client per token, for nothing. The comment is not output: a stream commits to its
    upstream, and a cut one is billed, on the reasoning itself (counted before it was withheld)."""
    return KEEPALIVE if (dropped - 1) % KEEPALIVE_EVERY == 0 else None


def billable_usage(parser: StreamParser, *, prompt_estimate: int) -> Usage:
    """The usage to settle a stream with: the upstream's when it reported it, else an estimate
    (flagged ``estimated``) from the prompt tokens the upstream announced, or the gateway's own
    prompt estimate, plus the characters delivered. Never zero prompt tokens: the prompt was sent.
    """
    if parser.usage is not None:
        return parser.usage
    if parser.prompt_tokens is None:
        return Usage(prompt_estimate, estimate_completion_tokens(parser.completion_chars_seen), estimated=True)
    completion = estimate_completion_tokens(parser.completion_chars_seen)
    return Usage(
        parser.prompt_tokens,
        completion,
        cached_tokens=parser.cached_tokens,
        cache_write_tokens=parser.cache_write_tokens,
        estimated=True,
    )


@dataclass(frozen=True, slots=True)
class UpstreamRequest:
    """An HTTP request for the gateway to send (it owns the aiohttp session)."""

    method: str
    url: str
    headers: Mapping[str, str]
    json_body: bytes
    stream: bool = False


@dataclass(frozen=True, slots=True)
class ParsedResponse:
    """A whole (non-streamed) answer in OpenAI shape."""

    body: dict[str, Any]
    usage: Usage | None
    finish_reason: str | None
    # Characters of output left out of `body` because the client excluded them (its reasoning):
    # produced and billed all the same, so an estimate without usage counts them too.
    withheld_chars: int = 0


class StreamParser(Protocol):
    """Incremental translator of one upstream stream into OpenAI SSE events.

    ``usage`` is set only once the upstream reported the *final* usage; when a stream is cut
    or never reports it, bill with `billable_usage`, which falls back to an estimate.
    """

    usage: Usage | None
    prompt_tokens: int | None  # known early from some upstreams (Anthropic's message_start)
    cached_tokens: int  # of those, read from the provider's prompt cache (billed at its price)
    cache_write_tokens: int  # of those, written to the provider's prompt cache (billed at its price)
    finish_reason: str | None
    completion_chars_seen: int
    error: UpstreamError | None  # an error event inside the stream (not forwarded)
    done: bool  # the upstream said it finished ([DONE] / message_stop)
    created: int | None  # the `created` of the stream, for the gateway's final chunk

    def feed(self, data: bytes) -> list[bytes]:
        """Consume raw upstream bytes; return complete ``data: ...\\n\\n`` events to forward (and,
        in place of withheld reasoning, now and then a `keepalive` comment)."""
        ...

    def close(self) -> list[bytes]:
        """The upstream closed: flush a final event that lacked its blank line."""
        ...


class ProviderAdapter(Protocol):
    """What the gateway needs from one upstream API. All methods are pure.

    ``exclude_reasoning`` (the request's `ChatRequest.exclude_reasoning`) tells the parsers to
    keep the model's reasoning out of what the client receives; it is still counted as output."""

    kind: str

    def build_request(
        self,
        endpoint: Endpoint,
        body: Mapping[str, Any],
        stream: bool,
        *,
        max_tokens: int | None = None,
        kind: Kind = "chat",
    ) -> UpstreamRequest: ...

    def parse_response(
        self,
        status: int,
        body: bytes,
        *,
        kind: Kind = "chat",
        response_id: str | None = None,
        model: str | None = None,
        exclude_reasoning: bool = False,
    ) -> ParsedResponse: ...

    def stream_parser(
        self,
        *,
        kind: Kind = "chat",
        response_id: str | None = None,
        model: str | None = None,
        provider: str | None = None,
        exclude_reasoning: bool = False,
    ) -> StreamParser: ...

    def map_error(self, status: int, body: bytes) -> UpstreamError: ...


def sse_event(payload: Mapping[str, Any]) -> bytes:
    """One SSE ``data:`` event with compact JSON."""
    return b"data: " + dumps(payload) + b"\n\n"


def dumps(payload: object) -> bytes:
    """Compact UTF-8 JSON. orjson on the hot path; the stdlib for what orjson refuses (integers
    beyond 64 bits, non-string keys, deep nesting), so nothing that serialized before now fails."""
    try:
        return orjson.dumps(payload)
    except orjson.JSONEncodeError:
        return json.dumps(payload, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def loads(data: bytes | str) -> Any:
    """Parse JSON with orjson; the stdlib for what only it accepts (NaN, a BOM, lone surrogates),
    so an upstream answer parses exactly when it used to. Errors are ValueError as before."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError:
        try:
            return json.loads(data)
        except RecursionError:  # deeper than orjson's 1,024 levels: malformed like any other
            raise ValueError("JSON nested too deeply") from None


def usage_chunk(
    *,
    response_id: str,
    model: str,
    created: int,
    usage: Usage,
    kind: Kind = "chat",
    extra_usage: Mapping[str, Any] | None = None,
    provider: str | None = None,
) -> bytes:
    """The final SSE chunk the gateway sends: empty ``choices`` and ``usage`` (plus e.g. cost)."""
    usage_obj = usage.to_openai()
    if extra_usage:
        usage_obj.update(extra_usage)
    return sse_event(
        {
            "id": response_id,
            "object": "chat.completion.chunk" if kind == "chat" else "text_completion",
            "created": created,
            "model": model,
            **({"provider": provider} if provider is not None else {}),
            "choices": [],
            "usage": usage_obj,
        }
    )


# What an upstream's error text may echo of a credential: a bearer token, an `sk-…` style key, a
# header or parameter named like one. Its words reach clients, so these are masked first.
_CREDENTIAL = re.compile(
    r"(?i)((?:bearer|basic)\s+"
    r"|(?:api[_-]?key|x-api-key|authorization|access[_-]?token|token|secret|passw(?:or)?d)[\"']?\s*[:=]\s*[\"']?"
    r"(?:bearer\s+|basic\s+)?"
    r"|[?&](?:key|api_key|access_token|token)=)"
    r"[^\s\"',;&}]+"
    r"|\b(?:sk|pk|rk|key)-[A-Za-z0-9_\-*.]{6,}"
    r"|\bAIza[0-9A-Za-z_\-]{20,}"  # Google API keys
    r"|\b(?=[A-Za-z_]*[0-9])[A-Za-z0-9_]{32,}\b"  # long opaque tokens (model names have - and .)
)


# How much of an upstream's error text an UpstreamError keeps: far more than a client is shown. The
# gateway masks the provider's own key by value and only then makes the client's cut (gateway.core);
# a key already cut here would slip past that match.
UPSTREAM_TEXT_LIMIT = 4096


def redact_credentials(text: str) -> str:
    return _CREDENTIAL.sub(lambda m: (m.group(1) or "") + "[redacted]", text)


def for_client(text: str, *, secret: str | None, limit: int = 300) -> str:
    """An upstream's words as a client may see them: the provider's own key (whatever its shape)
    and anything shaped like a credential masked, then bounded. Idempotent."""
    if secret:
        text = text.replace(secret, "[redacted]")
    return redact_credentials(text)[:limit]


def error_message(body: bytes, *, limit: int = UPSTREAM_TEXT_LIMIT) -> str:
    """A human message out of an upstream error body (JSON ``error.message`` or text), with anything
    that looks like a credential masked (before it is cut: a cut key would not match)."""
    return redact_credentials(_raw_error_message(body, 4 * limit))[:limit]


def _raw_error_message(body: bytes, limit: int) -> str:
    try:
        data = loads(body)  # never a RecursionError, however deep an upstream nests its error
    except (ValueError, UnicodeDecodeError):
        text = body[:limit].decode("utf-8", "replace").strip()
        return text or "no error message"
    if isinstance(data, Mapping):
        err = data.get("error", data)
        if isinstance(err, Mapping) and isinstance(err.get("message"), str):
            return str(err["message"])[:limit]
        if isinstance(err, str):
            return err[:limit]
    return body[:limit].decode("utf-8", "replace")


class SSEDecoder:
    """Splits a byte stream into SSE events ``(event name or None, data bytes)``.

    Handles events split across reads, ``\\r\\n`` line ends and multi-line data; ignores
    comment lines. Memory is bounded by `MAX_SSE_EVENT_BYTES`.
    """

    __slots__ = ("_buf", "_data", "_event")

    def __init__(self) -> None:
        self._buf = b""
        self._event: str | None = None
        self._data: list[bytes] = []

    def feed(self, data: bytes) -> list[tuple[str | None, bytes]]:
        buf = self._buf + data if self._buf else data
        lines = buf.split(b"\n")
        self._buf = lines.pop()  # the unterminated rest
        events: list[tuple[str | None, bytes]] = []
        # `_line`, inlined: this runs for every line of every stream.
        crlf = b"\r" in buf
        name, pending = self._event, self._data
        for line in lines:
            if crlf and line.endswith(b"\r"):
                line = line[:-1]
            if not line:
                if pending:
                    events.append((name, b"\n".join(pending)))
                    pending = []
                name = None
            elif line.startswith(b"data:"):
                pending.append(line[6:] if line.startswith(b"data: ") else line[5:])
            elif line.startswith(b"event:"):
                name = line[6:].strip().decode("utf-8", "replace")
        self._event, self._data = name, pending
        if len(self._buf) + sum(map(len, self._data)) > MAX_SSE_EVENT_BYTES:
            raise UpstreamError(502, "upstream sent an oversized stream event", retryable=False)
        return events

    def close(self) -> list[tuple[str | None, bytes]]:
        events: list[tuple[str | None, bytes]] = []
        if self._buf:
            self._line(self._buf.rstrip(b"\r"), events)
            self._buf = b""
        self._line(b"", events)
        return events

    def _line(self, line: bytes, events: list[tuple[str | None, bytes]]) -> None:
        if not line:
            if self._data:
                events.append((self._event, b"\n".join(self._data)))
            self._event = None
            self._data = []
        elif line.startswith(b"data:"):
            value = line[5:]
            self._data.append(value[1:] if value.startswith(b" ") else value)
        elif line.startswith(b"event:"):
            self._event = line[6:].strip().decode("utf-8", "replace")
        # Comments (":") and unknown fields (id:, retry:) carry nothing we forward.


@dataclass(frozen=True, slots=True)
class ChatRequest:
    """A client request, minimally parsed: the body passes through, the fields the gateway needs
    for routing, admission and billing are extracted and checked."""

    body: Mapping[str, Any]
    kind: Kind
    model: str | None
    models: tuple[str, ...]
    stream: bool
    max_tokens: int | None
    n: int
    messages: Sequence[Mapping[str, Any]] = ()
    prompt: object = None
    provider: object = None  # the raw `provider` object; gateway.routing validates it
    user: str | None = None
    # OpenRouter's `reasoning.exclude` (or its legacy `include_reasoning: false`): the model may
    # reason, but its reasoning is not returned. One rule for every upstream, so decided here.
    exclude_reasoning: bool = False

    @classmethod
    def parse(cls, body: object, *, kind: Kind = "chat", max_messages: int = 10_000, max_n: int = 128) -> ChatRequest:
        """Check the fields teamrouter relies on; everything else goes upstream untouched."""
        # `type(x) is dict` first: parsed JSON is dicts, and the ABC isinstance(x, Mapping) check
        # costs a few tenths of a microsecond, per message below.
        if type(body) is not dict and not isinstance(body, Mapping):
            raise RequestError("body", "must be a JSON object")
        model = body.get("model")
        if model is not None and (not isinstance(model, str) or not model):
            raise RequestError("model", "must be a non-empty string")
        models = body.get("models")
        if models is None:
            models = []
        if not isinstance(models, list) or (models and not all(isinstance(m, str) and m for m in models)):
            raise RequestError("models", "must be a list of model ids")
        if model is None and not models:
            raise RequestError("model", "is required")
        stream = body.get("stream", False)
        if stream is None:
            stream = False
        if not isinstance(stream, bool):
            raise RequestError("stream", "must be a boolean")
        max_tokens = _positive(body, "max_completion_tokens") or _positive(body, "max_tokens")
        n = _positive(body, "n") or 1
        if n > max_n:
            raise RequestError("n", f"must be at most {max_n}")
        user = body.get("user")
        if user is not None and not isinstance(user, str):
            raise RequestError("user", "must be a string")
        messages: Sequence[Mapping[str, Any]] = ()
        prompt: object = None
        if kind == "chat":
            raw = body.get("messages")
            if not isinstance(raw, list) or not raw:
                raise RequestError("messages", "must be a non-empty list")
            if len(raw) > max_messages:
                raise RequestError("messages", f"at most {max_messages} messages")
            check_messages(raw)
            messages = raw
        else:
            prompt = body.get("prompt")
            check_prompt(prompt)
        check_parameters(body, legacy=kind == "completion")
        return cls(
            body=body,
            kind=kind,
            model=model,
            models=tuple(models),
            stream=stream,
            max_tokens=max_tokens,
            n=n,
            messages=messages,
            prompt=prompt,
            provider=body.get("provider"),
            user=user,
            exclude_reasoning=_excludes_reasoning(body),
        )

    def prompt_tokens_estimate(self) -> int:
        if self.kind == "chat":
            return estimate_prompt_tokens(self.messages, tools=self.body.get("tools"))
        return estimate_completion_prompt_tokens(self.prompt)


def _excludes_reasoning(body: Mapping[str, Any]) -> bool:
    """Whether the client asked not to see reasoning. OpenRouter documents ``include_reasoning:
    false`` as ``reasoning: {exclude: true}``; either one hides it (check_parameters has made sure
    both are booleans)."""
    reasoning = body.get("reasoning")
    return body.get("include_reasoning") is False or (
        isinstance(reasoning, Mapping) and reasoning.get("exclude") is True
    )


def _positive(body: Mapping[str, Any], key: str) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise RequestError(key, "must be a positive integer")
    return value
