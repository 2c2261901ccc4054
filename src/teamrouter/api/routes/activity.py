"""Activity: the feed (`GET /activity/generations`), its CSV export, and OpenRouter's daily
`GET /activity`. A session or a management key, in its context; who sees what is decided by the
activity service (`domain.activity.scope`). The feed and the export refuse a query parameter they do
not know (400), so a misspelt filter never answers with every row (and, like every route, one given
twice: `api.query`)."""

from __future__ import annotations

from functools import partial
from typing import Annotated, Any

from fastapi import APIRouter, Query
from fastapi.responses import StreamingResponse

from teamrouter.api.deps import ActorDep, RuntimeDep
from teamrouter.api.policy import Access, access
from teamrouter.api.query import QueryModel, refuse_undeclared
from teamrouter.domain.activity import daily, export, feed
from teamrouter.domain.activity.scope import FilterArgs, check_range
from teamrouter.gateway.setup import provider_name
from teamrouter.instants import parse_instant

router = APIRouter(tags=["activity"])

KeyHash = Annotated[str | None, Query(min_length=1, max_length=64)]
Ident = Annotated[str | None, Query(min_length=1, max_length=40)]
ModelId = Annotated[str | None, Query(min_length=1, max_length=200)]
Instant = Annotated[str | None, Query(min_length=1, max_length=64, description="ISO 8601 with a timezone")]
# The slug activity rows store (the feed's `provider`, analytics' `provider` value), as analytics'
# `provider` filter takes it; not the display name (`provider_name`).
ProviderSlug = Annotated[str | None, Query(min_length=1, max_length=100, description="a provider's slug")]


@router.get("/activity", openapi_extra=access(Access.ACTOR))
async def get_activity(
    actor: ActorDep,
    rt: RuntimeDep,
    date: Annotated[str | None, Query(min_length=1, max_length=32)] = None,
    api_key_hash: KeyHash = None,
    user_id: Ident = None,
) -> dict[str, Any]:
    """Daily usage per model and endpoint over the last 30 UTC days, today included (OpenRouter's shape)."""
    rows = await daily.daily_activity(rt, actor=actor, day=date, api_key_hash=api_key_hash, user_id=user_id)
    for row in rows:  # rows group by the provider's slug; OpenRouter shows its display name
        row["provider_name"] = provider_name(rt, row["provider_name"])
    return {"data": rows}


class FeedFilters(QueryModel):
    """The filters of the feed and of its export. Any other parameter is refused (`refuse_undeclared`)."""

    api_key_hash: KeyHash = None
    user_id: Ident = None
    model: ModelId = None
    provider: ProviderSlug = None
    since: Instant = None
    until: Instant = None


def _named(query: FeedFilters) -> FilterArgs:
    """The filters the query names, checked: no unknown parameter, instants that parse, in order."""
    refuse_undeclared(query)
    start, end = parse_instant("since", query.since), parse_instant("until", query.until)
    check_range(start, end)
    return FilterArgs(
        api_key_hash=query.api_key_hash,
        user_id=query.user_id,
        model=query.model,
        provider=query.provider,
        since=start,
        until=end,
    )


class FeedQuery(FeedFilters):
    cursor: Annotated[str | None, Query(min_length=1, max_length=400)] = None
    limit: Annotated[int, Query(ge=1, le=feed.MAX_LIMIT)] = feed.DEFAULT_LIMIT


@router.get("/activity/generations", openapi_extra=access(Access.ACTOR))
async def list_generations(actor: ActorDep, rt: RuntimeDep, query: Annotated[FeedQuery, Query()]) -> dict[str, Any]:
    """The feed, newest first; pass `next_cursor` back as `cursor` for the next page."""
    page = await feed.list_generations(rt, actor=actor, cursor=query.cursor, limit=query.limit, **_named(query))
    return {
        "data": [feed.feed_public(row, provider_name(rt, row.row.provider)) for row in page.rows],
        "next_cursor": page.next_cursor,
    }


@router.get("/activity/export.csv", openapi_extra=access(Access.ACTOR), response_class=StreamingResponse)
async def export_csv(actor: ActorDep, rt: RuntimeDep, query: Annotated[FeedFilters, Query()]) -> StreamingResponse:
    """The feed's rows as CSV, streamed page by page (exact decimal costs)."""
    scope, filters = await feed.open_export(rt, actor=actor, **_named(query))
    return StreamingResponse(
        export.csv_chunks(rt, scope, filters, provider_name=partial(provider_name, rt)),
        media_type="text/csv; charset=utf-8",
        headers={"Content-Disposition": 'attachment; filename="activity.csv"', "Cache-Control": "no-store"},
    )
