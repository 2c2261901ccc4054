"""The OpenRouter-compatible keys API: GET /key, GET/POST /keys, GET/PATCH/DELETE /keys/{hash}.

Callable with a management key or a dashboard session, acting in its current context; `GET /key`
describes the presented key (any key) and needs `Authorization: Bearer`.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from teamrouter.api.deps import ActorDep, Offset, RuntimeDep, bearer_token
from teamrouter.api.policy import Access, access
from teamrouter.domain.keys import auth as key_auth
from teamrouter.domain.keys import service as keys
from teamrouter.domain.keys.schemas import (
    SDK_ONLY_FIELDS,
    KeyCreate,
    KeyUpdate,
    current_key_public,
    key_public,
    rate_limit_public,
)
from teamrouter.errors import Unauthorized

router = APIRouter(tags=["keys"])


@router.get("/key", openapi_extra=access(Access.ANY_KEY))
async def get_current_key(request: Request, rt: RuntimeDep) -> dict[str, Any]:
    """The key in `Authorization: Bearer`: its limit, usage per window and kind."""
    token = bearer_token(request)
    if token is None:
        raise Unauthorized("Send an API key as 'Authorization: Bearer <key>'", code="no_credentials")
    key = await key_auth.load_usable_key(rt, token)
    limit = rate_limit_public(rt.settings.key_rate_limit_per_minute, shared=rt.settings.redis_url is not None)
    return {"data": current_key_public(key, rt.clock.now(), rate_limit=limit)}


@router.get("/keys", openapi_extra=access(Access.ACTOR))
async def list_keys(
    actor: ActorDep,
    rt: RuntimeDep,
    include_disabled: bool = False,
    include_expired: bool = False,
    offset: Offset = 0,
) -> dict[str, Any]:
    """Keys of the current context: all of them for admins, one's own for members."""
    found = await keys.list_keys(
        rt,
        actor=actor,
        include_disabled=include_disabled,
        include_expired=include_expired,
        offset=offset,
    )
    now = rt.clock.now()
    return {"data": [key_public(key, now) for key in found]}


@router.post("/keys", status_code=201, openapi_extra=access(Access.ACTOR))
async def create_key(body: KeyCreate, actor: ActorDep, rt: RuntimeDep) -> dict[str, Any]:
    """Create a key; the plaintext `key` is in this response only."""
    created = await keys.create_key(
        rt,
        actor=actor,
        name=body.name,
        limit=body.limit,
        limit_reset=body.limit_reset,
        expires_at=body.expires_at,
        management=body.management,
        creator_user_id=body.creator_user_id,
    )
    return {"data": key_public(created.key, rt.clock.now()), "key": created.plaintext}


@router.get("/keys/{hash}", openapi_extra=access(Access.ACTOR))
async def get_key(hash: str, actor: ActorDep, rt: RuntimeDep) -> dict[str, Any]:
    key = await keys.get_key(rt, actor=actor, key_hash=hash)
    return {"data": key_public(key, rt.clock.now())}


@router.patch("/keys/{hash}", openapi_extra=access(Access.ACTOR))
async def update_key(
    hash: str,
    body: KeyUpdate,
    actor: ActorDep,
    rt: RuntimeDep,
) -> dict[str, Any]:
    """Change name, disabled, limit or limit_reset, or hand an admin-managed key back to its creator
    (`admin_managed: false`, org admins); only the fields sent change."""
    changes = {field: getattr(body, field) for field in body.model_fields_set - SDK_ONLY_FIELDS}
    no_ops = bool(body.model_fields_set & SDK_ONLY_FIELDS)
    key = await keys.update_key(rt, actor=actor, key_hash=hash, no_op_fields_sent=no_ops, **changes)
    return {"data": key_public(key, rt.clock.now())}


@router.delete("/keys/{hash}", openapi_extra=access(Access.ACTOR))
async def delete_key(hash: str, actor: ActorDep, rt: RuntimeDep) -> dict[str, Any]:
    await keys.delete_key(rt, actor=actor, key_hash=hash)
    return {"deleted": True}
