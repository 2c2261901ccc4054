"""Liveness and readiness probes for load balancers and orchestrators."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import JSONResponse

from teamrouter.api.deps import RuntimeDep
from teamrouter.api.policy import Access, access

router = APIRouter(tags=["health"])


@router.get("/healthz", openapi_extra=access(Access.PUBLIC))
async def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz", openapi_extra=access(Access.PUBLIC))
async def readyz(rt: RuntimeDep) -> JSONResponse:
    """Ready only when the database answers."""
    if await rt.db.ping():
        return JSONResponse({"status": "ready", "database": "ok"})
    return JSONResponse(
        {
            "status": "not ready",
            "database": "unreachable",
            "error": {
                "code": 503,
                "message": "Database unreachable",
                "metadata": {"code": "database_down"},
            },
        },
        status_code=503,
    )
