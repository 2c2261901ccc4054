"""Resolve a presented API key to an acting person (management keys) — completed by the keys issue."""

from __future__ import annotations

from teamrouter.domain.actor import Actor
from teamrouter.errors import Unauthorized
from teamrouter.runtime import Runtime


async def management_actor(rt: Runtime, plaintext: str) -> Actor:
    # Until API keys exist no key can authenticate; deny.
    raise Unauthorized("Invalid API key", code="invalid_key")
