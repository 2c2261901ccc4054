"""What a request body must look like where OpenAI's API and every provider agree: message roles and
content, the legacy prompt, and the types and ranges of the common sampling parameters.

A request that breaks them gets a 400 naming the field before any hold is taken, instead of being
passed on: an upstream would refuse it (a 400 after a hold and an upstream call) or, worse, guess
(a message with an unknown role or no content sent on and billed). Parameters this module does not
name go upstream untouched.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import orjson

from teamrouter.providers.reasoning import EFFORTS


class RequestError(ValueError):
    """The client's request body is malformed; ``field`` names the offending field (HTTP 400)."""

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


ROLES = ("system", "developer", "user", "assistant", "tool", "function")
_ROLES = frozenset(ROLES)

# name: (lowest, highest), both allowed; numbers may be integers or floats, never booleans.
NUMBER_RANGES: Mapping[str, tuple[float, float]] = {
    "temperature": (0.0, 2.0),
    "top_p": (0.0, 1.0),
    "frequency_penalty": (-2.0, 2.0),
    "presence_penalty": (-2.0, 2.0),
    "repetition_penalty": (0.0, 2.0),
    "min_p": (0.0, 1.0),
    "top_a": (0.0, 1.0),
}
# name: (lowest, highest or None)
INTEGER_RANGES: Mapping[str, tuple[int | None, int | None]] = {
    "top_k": (0, None),
    "seed": (None, None),
    "top_logprobs": (0, 20),
}
BOOLEANS = ("parallel_tool_calls", "include_reasoning")
# `logprobs` is a switch in chat (the count is `top_logprobs`) and the count itself in OpenAI's legacy
# text completions (at most 5 there; vLLM takes 20), where OpenRouter's one schema sends the switch
# too: a text completion takes either, or the SDKs' `completions.create(logprobs=2)` is refused.
LEGACY_LOGPROBS = (0, 20)
# How deep a request body may nest: as deep as orjson writes (254 levels), for the body is re-encoded
# for each upstream. The parser takes 1,024 levels, and the stdlib's encoder, orjson's fallback, fails
# near 1,000 with a RecursionError: without this bound a body between them got a 500 after its hold.
# A tool's JSON schema nests a few tens of levels.
MAX_NESTING = 254
TOO_DEEP = f"must not nest arrays and objects more than {MAX_NESTING} levels deep"
OBJECTS = ("response_format", "logit_bias", "stream_options", "reasoning", "prediction")
LISTS_OF_OBJECTS = ("tools", "functions")


def check_nesting(raw: bytes, body: object) -> None:
    """At most `MAX_NESTING` levels of arrays and objects in `body`, parsed from `raw`."""
    # Each level takes two bytes at least, so a short body cannot be too deep. Otherwise orjson is
    # asked to write it, which it does exactly when it is not: a few µs for a body of a dozen tools,
    # where walking it in Python took 70 or more.
    if len(raw) <= 2 * MAX_NESTING:
        return
    try:
        orjson.dumps(body)
    except orjson.JSONEncodeError:  # a parsed body has no other reason to fail
        raise RequestError("body", TOO_DEEP) from None


def check_messages(messages: Sequence[object]) -> None:
    for i, message in enumerate(messages):
        # `type(x) is dict` first: parsed JSON is dicts, and the ABC check costs a few tenths of a
        # microsecond per message.
        if type(message) is not dict and not isinstance(message, Mapping):
            raise RequestError(f"messages[{i}]", "must be an object with a role")
        role = message.get("role")
        if role not in _ROLES:
            if not isinstance(role, str):
                raise RequestError(f"messages[{i}]", "must be an object with a role")
            raise RequestError(f"messages[{i}].role", f"must be one of {', '.join(ROLES)}")
        content = message.get("content")
        if type(content) is str:
            pass
        elif content is None:
            # OpenAI's own rule: content may be left out only by an assistant that calls tools.
            if role != "assistant" or not (message.get("tool_calls") or message.get("function_call")):
                raise RequestError(f"messages[{i}].content", "is required")
        elif isinstance(content, list):
            _check_parts(i, content)
        else:
            raise RequestError(f"messages[{i}].content", "must be a string or a list of content parts")
        if role == "tool" and not isinstance(message.get("tool_call_id"), str):
            raise RequestError(f"messages[{i}].tool_call_id", "is required on a tool message")


def _check_parts(i: int, parts: list[Any]) -> None:
    for j, part in enumerate(parts):
        if type(part) is not dict or not isinstance(part.get("type"), str):
            raise RequestError(f"messages[{i}].content[{j}]", "must be an object with a type")
        if part["type"] == "text" and not isinstance(part.get("text"), str):
            raise RequestError(f"messages[{i}].content[{j}].text", "must be a string")


def check_prompt(prompt: object) -> None:
    """A string, or a non-empty list of strings, of token ids, or of lists of token ids."""
    if isinstance(prompt, str):
        return
    if not isinstance(prompt, list):
        raise RequestError("prompt", "must be a string or a list")
    if not prompt:
        raise RequestError("prompt", "must not be an empty list")
    if all(isinstance(p, str) for p in prompt) or all(_is_int(p) for p in prompt):
        return
    if all(isinstance(p, list) and p and all(_is_int(t) for t in p) for p in prompt):
        return
    raise RequestError("prompt", "must be a list of strings, of token ids, or of lists of token ids")


def check_parameters(body: Mapping[str, Any], *, legacy: bool = False) -> None:
    """The common sampling parameters, when present (null means absent); `legacy`: of a text
    completion (`/completions`), not a chat."""
    for name, (low, high) in NUMBER_RANGES.items():
        value = body.get(name)
        if value is not None and (not _is_number(value) or not low <= value <= high):
            raise RequestError(name, f"must be a number from {low:g} to {high:g}")
    for name, (lowest, highest) in INTEGER_RANGES.items():
        value = body.get(name)
        if value is None:
            continue
        if not _is_int(value) or (lowest is not None and value < lowest) or (highest is not None and value > highest):
            if lowest is not None and highest is not None:
                bounds = f" from {lowest} to {highest}"
            elif lowest is not None:
                bounds = f" of at least {lowest}"
            else:
                bounds = ""
            raise RequestError(name, f"must be an integer{bounds}")
    for name in BOOLEANS:
        value = body.get(name)
        if value is not None and not isinstance(value, bool):
            raise RequestError(name, "must be a boolean")
    logprobs = body.get("logprobs")
    if logprobs is not None:
        lowest, highest = LEGACY_LOGPROBS
        if not legacy and not isinstance(logprobs, bool):
            raise RequestError("logprobs", "must be a boolean (the number of tokens is top_logprobs)")
        if legacy and not isinstance(logprobs, bool) and (not _is_int(logprobs) or not lowest <= logprobs <= highest):
            problem = f"must be a boolean or an integer from {lowest} to {highest} in a text completion"
            raise RequestError("logprobs", problem)
    if not legacy and body.get("top_logprobs") is not None and logprobs is not True:
        # OpenAI's rule: the count of alternatives means nothing without the log probabilities.
        raise RequestError("top_logprobs", "needs logprobs: true")
    for name in OBJECTS:
        value = body.get(name)
        if value is not None and not isinstance(value, Mapping):
            raise RequestError(name, "must be an object")
    _check_reasoning(body)
    for name in LISTS_OF_OBJECTS:
        value = body.get(name)
        if value is not None and (not isinstance(value, list) or not all(isinstance(v, Mapping) for v in value)):
            raise RequestError(name, "must be a list of objects")
    stop = body.get("stop")
    if stop is not None and not isinstance(stop, str):
        if not isinstance(stop, list) or not all(isinstance(s, str) for s in stop):
            raise RequestError("stop", "must be a string or a list of strings")
    tool_choice = body.get("tool_choice")
    if tool_choice is not None and not isinstance(tool_choice, str | Mapping):
        raise RequestError("tool_choice", "must be a string or an object")


def _check_reasoning(body: Mapping[str, Any]) -> None:
    """OpenRouter's `reasoning` object and OpenAI's `reasoning_effort`, which every adapter
    translates (`reasoning.requested`): a value it would have to guess at is refused here."""
    reasoning = body.get("reasoning")
    if reasoning is not None:
        for name in ("exclude", "enabled"):
            # A string "false" would read as true somewhere: whether reasoning is on or shown must
            # not be a guess.
            if reasoning.get(name) is not None and not isinstance(reasoning[name], bool):
                raise RequestError(f"reasoning.{name}", "must be a boolean")
        _check_effort("reasoning.effort", reasoning.get("effort"))
        tokens = reasoning.get("max_tokens")
        if tokens is not None and (not _is_int(tokens) or tokens < 1):
            raise RequestError("reasoning.max_tokens", "must be a positive integer")
        if tokens is not None and reasoning.get("effort") is not None:
            # OpenRouter's rule: one or the other. Which would win differs by upstream, so neither does.
            raise RequestError("reasoning", "takes effort or max_tokens, not both")
    _check_effort("reasoning_effort", body.get("reasoning_effort"))


def _check_effort(name: str, value: object) -> None:
    if value is not None and (not isinstance(value, str) or value not in EFFORTS):
        raise RequestError(name, f"must be one of {', '.join(EFFORTS)}")


def _is_number(value: object) -> bool:
    return type(value) is float or type(value) is int


def _is_int(value: object) -> bool:
    return type(value) is int
