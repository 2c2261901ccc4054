"""The signed-in person, their memberships and the organization switcher."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request

from teamrouter.api.deps import SESSION_COOKIE, RuntimeDep, SessionActor
from teamrouter.api.policy import Access, access
from teamrouter.domain.accounts import service as accounts
from teamrouter.domain.accounts.schemas import SetContext

router = APIRouter(tags=["accounts"])


@router.get("/me", openapi_extra=access(Access.SESSION))
async def get_me(actor: SessionActor, request: Request, rt: RuntimeDep) -> dict[str, Any]:
    """Who I am, my current context and the organizations I can switch to."""
    data = await accounts.me(rt, actor=actor)
    data["csrf_token"] = accounts.csrf_token(rt, request.cookies.get(SESSION_COOKIE, ""))
    return {"data": data}


@router.put("/me/context", openapi_extra=access(Access.SESSION))
async def set_context(body: SetContext, actor: SessionActor, rt: RuntimeDep) -> dict[str, Any]:
    """Switch between personal context (null) and an organization I belong to."""
    updated = await accounts.set_context(rt, actor=actor, organization_id=body.organization_id)
    return {"data": {"context": {"organization_id": updated.organization_id}}}
