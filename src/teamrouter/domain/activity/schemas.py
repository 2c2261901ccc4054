"""Request bodies of the analytics API.

`filters` takes our object form `{api_key_hash?, user_id?, model?, provider?}` or the official
SDK's list form `[{field, operator: "eq", value}]` (what `client.analytics.query_analytics` sends).
Metric, dimension and granularity names are plain strings here and checked by the service, so an
unknown one gets a message listing the valid choices.
"""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StrictBool, StringConstraints

Name = Annotated[str, StringConstraints(min_length=1, max_length=64)]
Value = Annotated[str, StringConstraints(min_length=1, max_length=300)]

MAX_ROWS = 10_000


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TimeRange(_Body):
    start: AwareDatetime
    end: AwareDatetime


class FilterObject(_Body):
    api_key_hash: Value | None = None
    user_id: Value | None = None
    model: Value | None = None
    provider: Value | None = None


class FilterItem(_Body):
    """One SDK-style filter; only equality is supported."""

    field: Name
    operator: Literal["eq"]
    value: Value
    include_unset: StrictBool | None = None


class AnalyticsQuery(_Body):
    metrics: Annotated[list[Name], Field(min_length=1, max_length=10)]
    dimensions: Annotated[list[Name], Field(max_length=4)] = Field(default_factory=list)
    granularity: Name = "day"
    time_range: TimeRange | None = None
    filters: FilterObject | Annotated[list[FilterItem], Field(max_length=10)] | None = None
    limit: Annotated[int, Field(ge=1, le=MAX_ROWS)] = MAX_ROWS
