"""OpenRouter-compatible organization endpoints, for the caller's current context.

Callable with a management key or a dashboard session. In personal context there is no
organization: 404 with a message saying how to pick one (OpenRouter's SDK maps 404 to
`NotFoundResponseError`).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query

from teamrouter.api.deps import ActorDep, Offset, RuntimeDep
from teamrouter.api.policy import Access, access
from teamrouter.domain.orgs import members
from teamrouter.domain.orgs import service as orgs
from teamrouter.domain.orgs.schemas import OpenRouterSettingsUpdate, openrouter_member
from teamrouter.domain.orgs.settings import OrgSettings

router = APIRouter(prefix="/organization", tags=["organization"])


def _settings(organization_id: str, settings: OrgSettings) -> dict[str, Any]:
    return {
        "data": {
            "id": organization_id,
            "is_filtered_model_catalog_enabled": settings.filtered_model_catalog,
        }
    }


@router.get("/members", openapi_extra=access(Access.ACTOR))
async def list_members(
    actor: ActorDep,
    rt: RuntimeDep,
    offset: Offset = 0,
    limit: Annotated[int, Query(ge=1, le=members.MAX_PAGE)] = 50,
) -> dict[str, Any]:
    rows, total = await members.list_context_members(rt, actor=actor, offset=offset, limit=limit)
    return {"data": [openrouter_member(m, u) for m, u in rows], "total_count": total}


@router.get("/settings", openapi_extra=access(Access.ACTOR))
async def get_settings(actor: ActorDep, rt: RuntimeDep) -> dict[str, Any]:
    organization_id, settings = await orgs.get_context_settings(rt, actor=actor)
    return _settings(organization_id, settings)


@router.patch("/settings", openapi_extra=access(Access.ACTOR))
async def update_settings(body: OpenRouterSettingsUpdate, actor: ActorDep, rt: RuntimeDep) -> dict[str, Any]:
    """Admins only (a member gets 403)."""
    organization_id, settings = await orgs.set_filtered_model_catalog(
        rt, actor=actor, enabled=body.is_filtered_model_catalog_enabled
    )
    return _settings(organization_id, settings)
