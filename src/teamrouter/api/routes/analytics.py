"""Analytics: `GET /analytics/meta` (what may be asked) and `POST /analytics/query` (answered from
the hourly rollups). Shapes follow the official SDK's `get_analytics_meta` / `query_analytics`."""

from __future__ import annotations

from functools import partial
from typing import Any

from fastapi import APIRouter

from teamrouter.api.deps import ActorDep, RuntimeDep
from teamrouter.api.policy import Access, access
from teamrouter.domain.activity import analytics
from teamrouter.domain.activity.schemas import AnalyticsQuery
from teamrouter.gateway.setup import provider_name

router = APIRouter(tags=["analytics"])


@router.get("/analytics/meta", openapi_extra=access(Access.ACTOR))
async def analytics_meta(actor: ActorDep) -> dict[str, Any]:
    """Metrics, dimensions, granularities, filters and range limits."""
    del actor  # authentication only: the catalogue of metrics is the same for everyone
    return {"data": analytics.analytics_meta()}


@router.post("/analytics/query", openapi_extra=access(Access.ACTOR))
async def query_analytics(body: AnalyticsQuery, actor: ActorDep, rt: RuntimeDep) -> dict[str, Any]:
    """Metrics by time bucket and dimensions, with totals and per-model/member/key breakdowns."""
    return {
        "data": await analytics.query_analytics(rt, actor=actor, query=body, provider_name=partial(provider_name, rt))
    }
