"""CSV export of the feed: a header row, then one line per generation, streamed page by page.

Costs are exact decimal strings (never floats). Text cells a person controls (key names, external
user ids, app titles) are neutralised against spreadsheet formula injection. A provider shows as its
slug (`provider`, what rows store and filters take) and its display name (`provider_name`, as the
feed and `/activity` show it).
"""

from __future__ import annotations

import csv
import io
from collections.abc import AsyncIterator, Callable
from functools import cache
from typing import Any

from teamrouter.clock import iso_utc as iso
from teamrouter.domain.activity.feed import FeedRow, iter_pages
from teamrouter.domain.activity.scope import ActivityFilters, ActivityScope
from teamrouter.money import to_usd_str
from teamrouter.runtime import Runtime

HEADER = (
    "id",
    "created_at",
    "model",
    "provider",
    "provider_name",
    "endpoint_id",
    "tokens_prompt",
    "tokens_completion",
    "tokens_reasoning",
    "tokens_cached",
    "cost_usd",
    "latency_ms",
    "generation_time_ms",
    "finish_reason",
    "streamed",
    "cancelled",
    "usage_estimated",
    "api_key_hash",
    "api_key_name",
    "api_key_label",
    "user_id",
    "user_email",
    "user_name",
    "external_user",
    "app_title",
    "app_referer",
)
_FORMULA_START = ("=", "+", "-", "@", "\t", "\r")


def _text(value: str | None) -> str:
    if not value:
        return ""
    return "'" + value if value.startswith(_FORMULA_START) else value


def _flag(value: bool) -> str:
    return "true" if value else "false"


def csv_line(item: FeedRow, provider_name: str) -> list[Any]:
    # Unpacked once (in feed.COLUMNS order): attribute access per field is what made exports slow.
    (
        gid, created_at, _key_id, _key_hash, user_id, model, provider, endpoint_id,
        prompt, completion, reasoning, cached, cost, latency, generation_time, finish_reason,
        streamed, cancelled, estimated, external_user, referer, title,
    ) = item.row  # fmt: skip
    return [
        gid,
        iso(created_at),
        _text(model),
        _text(provider),
        _text(provider_name),
        _text(endpoint_id),
        prompt,
        completion,
        reasoning,
        cached,
        to_usd_str(cost),
        latency,
        generation_time,
        finish_reason or "",
        _flag(streamed),
        _flag(cancelled),
        _flag(estimated),
        item.key.hash,
        _text(item.key.name),
        item.key.label,
        user_id,
        _text(item.user.email),
        _text(item.user.name),
        _text(external_user),
        _text(title),
        _text(referer),
    ]


async def csv_chunks(
    rt: Runtime, scope: ActivityScope, filters: ActivityFilters, *, provider_name: Callable[[str], str]
) -> AsyncIterator[bytes]:
    """The export as byte chunks, one per page: memory stays bounded by the page size.
    ``provider_name`` maps a provider's slug to its display name."""
    name = cache(provider_name)  # a handful of providers over many rows, and exports are hot
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow(HEADER)
    yield buffer.getvalue().encode()
    async for page in iter_pages(rt, scope, filters):
        buffer.seek(0)
        buffer.truncate()
        writer.writerows(csv_line(item, name(item.row.provider)) for item in page)
        yield buffer.getvalue().encode()
