"""One generation's metadata, for `GET /generation?id=` (OpenRouter's shape).

Who may read it: the inference key that made it; or, in its context, an admin (or the person in
personal context), the member who owns the key, and — when the org's `activity_visibility` is
`all` — every member. Anything else reads as not found.
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select

from teamrouter.clock import iso_utc
from teamrouter.domain.activity.models import Generation
from teamrouter.domain.activity.scope import resolve_scope
from teamrouter.domain.actor import Actor
from teamrouter.errors import NotFound
from teamrouter.money import to_usd
from teamrouter.runtime import Runtime


def _not_found(generation_id: str) -> NotFound:
    return NotFound(f"Generation {generation_id} not found", code="generation_not_found")


async def get_for_key(rt: Runtime, *, key_id: str, generation_id: str) -> Generation:
    async with rt.db.read() as session:
        row = await session.scalar(
            select(Generation).where(Generation.id == generation_id, Generation.key_id == key_id)
        )
    if row is None:
        raise _not_found(generation_id)
    return row


async def get_for_actor(rt: Runtime, *, actor: Actor, generation_id: str) -> Generation:
    """The generation, if the actor may see it under the activity visibility rules (`scope`)."""
    async with rt.db.read() as session:
        scope = await resolve_scope(session, actor)
        query = select(Generation).where(Generation.id == generation_id, Generation.account_id == scope.account_id)
        if scope.only_user_id is not None:
            query = query.where(Generation.user_id == scope.only_user_id)
        row = await session.scalar(query)
    if row is None:
        raise _not_found(generation_id)
    return row


def generation_public(row: Generation, provider_name: str) -> dict[str, Any]:
    """`provider_name` is the provider's display name (the row stores its slug)."""
    cost = to_usd(row.cost)
    return {
        "id": row.id,
        "model": row.model,
        "provider_name": provider_name,
        "total_cost": cost,
        "usage": cost,
        "tokens_prompt": row.tokens_prompt,
        "tokens_completion": row.tokens_completion,
        "native_tokens_prompt": row.tokens_prompt,
        "native_tokens_completion": row.tokens_completion,
        "native_tokens_reasoning": row.tokens_reasoning,
        "native_tokens_cached": row.tokens_cached,
        "native_tokens_completion_images": None,
        "latency": row.latency_ms,
        "generation_time": row.generation_time_ms,
        "moderation_latency": None,
        "finish_reason": row.finish_reason,
        "native_finish_reason": row.finish_reason,
        "streamed": row.streamed,
        "cancelled": row.cancelled,
        "usage_estimated": row.usage_estimated,
        "created_at": iso_utc(row.created_at),
        "api_key_hash": row.key_hash,
        "user_id": row.user_id,
        "external_user": row.external_user,
        "http_referer": row.app_referer,
        "app_id": None,
        "app_title": row.app_title,
        "upstream_id": None,
        "upstream_inference_cost": None,
        "cache_discount": None,
        "is_byok": False,
        "origin": row.app_referer or "",
        "data_region": "global",
        "api_type": "completions",
        "num_fetches": None,
        "num_input_audio_prompt": None,
        "num_media_completion": None,
        "num_media_prompt": None,
        "num_search_results": None,
        "preset_id": None,
        "provider_responses": None,
        "router": None,
        "service_tier": None,
        "user_agent": None,
        "web_search_engine": None,
        "workspace_id": None,
    }
