"""Which adapter serves which catalog ``kind``; and which failures are worth a fallback.

`make_adapters` builds fresh instances (no module-level state); the app builds them once in
its lifespan and looks them up by ``endpoint.provider.kind``. An adapter whose ``kind`` is
``"demo"`` has a ``backend`` to call instead of the network (see providers.demo).
"""

from __future__ import annotations

import asyncio

import aiohttp

from teamrouter.providers.anthropic import AnthropicAdapter
from teamrouter.providers.base import ProviderAdapter, UpstreamError, is_retryable_status
from teamrouter.providers.demo import DemoAdapter
from teamrouter.providers.openai import OpenAIAdapter

__all__ = ["error_from_exception", "is_retryable_status", "make_adapters"]


def make_adapters() -> dict[str, ProviderAdapter]:
    """One adapter per catalog provider kind."""
    return {"openai": OpenAIAdapter(), "anthropic": AnthropicAdapter(), "demo": DemoAdapter()}


def error_from_exception(exc: BaseException) -> UpstreamError:
    """Map a client-side failure of an upstream call to an `UpstreamError`.

    Timeouts are 504 and connection failures 502, both retryable (before the first byte);
    anything else is a 502 that is not retried, since it is likely our bug, not the upstream's.
    """
    if isinstance(exc, UpstreamError):
        return exc
    if isinstance(exc, asyncio.TimeoutError | aiohttp.ServerTimeoutError):
        return UpstreamError(504, "upstream timed out", retryable=True)
    if isinstance(exc, aiohttp.ClientConnectionError | aiohttp.ClientPayloadError | ConnectionError):
        return UpstreamError(502, f"upstream connection failed: {type(exc).__name__}", retryable=True)
    if isinstance(exc, aiohttp.ClientResponseError):
        return UpstreamError(exc.status, f"upstream error {exc.status}", retryable=is_retryable_status(exc.status))
    return UpstreamError(502, f"upstream call failed: {type(exc).__name__}", retryable=False)
