"""The official `openrouter` SDK as a new user points it at teamrouter: only the server URL changed.

No retries (a retry would hide the first answer a test checks) and a 30 s timeout. In-process
tests pass `async_client=` an httpx client on the app's ASGI transport.
"""

from __future__ import annotations

from typing import Any

from openrouter import OpenRouter


def openrouter(key: str, base_url: str, **options: Any) -> OpenRouter:
    return OpenRouter(api_key=key, server_url=f"{base_url}/api/v1", retry_config=None, timeout_ms=30_000, **options)
