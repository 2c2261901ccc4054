"""What a client is told when upstreams fail: their words masked and bounded, the error to report
once every candidate failed, its API error, and the SSE error event that ends a started stream."""

from __future__ import annotations

import math
from typing import Any

from teamrouter.errors import (
    BadRequest,
    RateLimited,
    ServiceUnavailable,
    TeamrouterError,
    UpstreamFailed,
    UpstreamTimeout,
    bad_field,
)
from teamrouter.gateway.catalog import Endpoint
from teamrouter.providers.base import UnsupportedRequestError, UpstreamError, for_client, sse_event

# The most of an upstream's error text a client is shown.
MESSAGE_LIMIT = 300


def masked(error: UpstreamError, endpoint: Endpoint) -> UpstreamError:
    """An upstream's words reach the client: the provider's own key (whatever its shape) and
    anything shaped like a credential are masked, then the text is bounded. Idempotent."""
    error.message = for_client(error.message, secret=endpoint.provider.api_key, limit=MESSAGE_LIMIT)
    return error


def error_event(generation_id: str, endpoint: Endpoint, created: int, error: UpstreamError | TeamrouterError) -> bytes:
    """An error in a started stream. An upstream that broke after some output keeps its own words;
    a gateway error (every endpoint failed after the head went out, a settlement that could not be
    written) says what the same failure says as JSON, `metadata.code` included."""
    if isinstance(error, UpstreamError):
        body: dict[str, Any] = {
            "code": 502,
            "message": f"Upstream error: {masked(error, endpoint).message}",
            "metadata": {"error_type": "upstream_error"},
        }
    else:
        body = error.envelope()["error"]
        body["metadata"]["error_type"] = error.code
    body["metadata"]["provider_name"] = endpoint.provider.name
    return sse_event(
        {
            "id": generation_id,
            "object": "chat.completion.chunk",
            "created": created,
            "model": endpoint.model_id,
            "provider": endpoint.provider.name,
            "error": body,
            "choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": "error"}],
        }
    )


def worse(last: UpstreamError | None, error: UpstreamError) -> UpstreamError:
    """The error to report once every candidate failed: an upstream's own, rather than an endpoint
    the gateway did not ask because it cannot serve the request as sent, whatever the order tried."""
    if last is not None and isinstance(error, UnsupportedRequestError):
        return last
    return error


CONTEXT_LENGTH_EXCEEDED = "context_length_exceeded"
# How upstreams word it when they give no such code: OpenAI-compatible servers (vLLM) and Anthropic.
_CONTEXT_WORDS = ("maximum context length", "prompt is too long")


def _context_too_long(error: UpstreamError) -> bool:
    if error.upstream_code == CONTEXT_LENGTH_EXCEEDED:
        return True
    message = error.message.lower()
    return any(words in message for words in _CONTEXT_WORDS)


def as_api_error(error: UpstreamError | None) -> TeamrouterError:
    if error is None:
        return ServiceUnavailable("No provider available", code="no_endpoints")
    if isinstance(error, UnsupportedRequestError) and error.field is not None:
        # No endpoint was asked: the gateway itself found the request unservable as sent there.
        return bad_field(error.field, error.message)
    if error.status == 504:
        return UpstreamTimeout(f"Upstream timed out: {error.message}")
    if 400 <= error.status < 500 and error.status not in (401, 403, 408, 429):
        # The upstream refused the request itself (a parameter it does not accept): the client's to fix.
        # The upstream's code goes along. A prompt too long for the model is the refusal clients act
        # on (a shorter prompt, another model), so it is also the error's own code, as OpenAI's.
        upstream = error.upstream_code
        code = CONTEXT_LENGTH_EXCEEDED if _context_too_long(error) else "upstream_rejected"
        extra = {"upstream_code": upstream} if upstream is not None else {}
        return BadRequest(f"Provider rejected the request: {error.message}", code=code, **extra)
    if error.status == 429:
        # Every endpoint tried was rate limited: a 429, which clients (the SDKs) back off and retry,
        # not a 502 they would take for a fault.
        return RateLimited(
            f"Provider rate limited the request: {error.message}",
            code="upstream_rate_limited",
            # The upstream's own wait when it gave one, else a second: every 429 says when to retry.
            retry_after=max(1, math.ceil(error.retry_after or 0)),
        )
    return UpstreamFailed(f"Upstream failed: {error.message}", code="upstream_failed")
