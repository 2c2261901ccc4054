"""GET /generation?id=: one generation's metadata (never its prompt or completion)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Query, Request

from teamrouter.api.deps import RuntimeDep, bearer_token, session_actor_or_none
from teamrouter.api.policy import Access, access
from teamrouter.domain.activity import generations
from teamrouter.domain.keys import auth as key_auth
from teamrouter.errors import Unauthorized
from teamrouter.gateway.setup import provider_name

router = APIRouter(tags=["activity"])


@router.get("/generation", openapi_extra=access(Access.ACTOR))
async def get_generation(
    request: Request, rt: RuntimeDep, id: str = Query(..., min_length=1, max_length=64)
) -> dict[str, Any]:
    """With the inference key that made it, a management key, or a dashboard session."""
    token = bearer_token(request)
    if token is not None:
        key = await key_auth.load_usable_key(rt, token)
        if key.management:
            actor = await key_auth.management_actor(rt, token)
            row = await generations.get_for_actor(rt, actor=actor, generation_id=id)
        else:
            row = await generations.get_for_key(rt, key_id=key.id, generation_id=id)
        return {"data": generations.generation_public(row, provider_name(rt, row.provider))}
    person = await session_actor_or_none(request, rt)
    if person is None:
        raise Unauthorized("Sign in or send an API key as 'Authorization: Bearer <key>'", code="no_credentials")
    row = await generations.get_for_actor(rt, actor=person, generation_id=id)
    return {"data": generations.generation_public(row, provider_name(rt, row.provider))}
