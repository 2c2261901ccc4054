"""Liveness and readiness probes for load balancers and orchestrators."""

from __future__ import annotations

from fastapi import APIRouter
from starlette.responses import JSONResponse

from teamrouter.api.deps import RuntimeDep
from teamrouter.api.policy import Access, access

router = APIRouter(tags=["health"])

# A database that drops packets instead of refusing would make the probe hang until the driver's own
# connect timeout (asyncpg: 60 s); a load balancer needs its answer sooner (TESTPLAN C24).
READY_TIMEOUT_SECONDS = 2.0


@router.get("/healthz", openapi_extra=access(Access.PUBLIC))
async def healthz() -> dict[str, str]:
    """The process is up."""
    return {"status": "ok"}


@router.get("/readyz", openapi_extra=access(Access.PUBLIC))
async def readyz(rt: RuntimeDep) -> JSONResponse:
    """Ready only when the database answers, within READY_TIMEOUT_SECONDS."""
    if await rt.db.ping(timeout=READY_TIMEOUT_SECONDS):
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
