"""Request bodies of the analytics API.

`filters` takes our object form `{api_key_hash?, user_id?, model?, provider?}` or the official
SDK's list form `[{field, operator: "eq", value}]` (what `client.analytics.query_analytics` sends).
Which form is meant is decided by the JSON's shape, so a mistake is reported against that form
alone: as a plain union, a misspelt key in the object also failed the list form, and the 400 said
"Input should be a valid list".
Metric, dimension and granularity names are plain strings here and checked by the service, so an
unknown one gets a message listing the valid choices.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    StrictBool,
    StringConstraints,
    Tag,
    model_validator,
)

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

    @model_validator(mode="before")
    @classmethod
    def _known_keys(cls, data: Any) -> Any:
        # Before field validation, so the 400 lists the keys there are (pydantic's own
        # "extra_forbidden" names only the stray one).
        if isinstance(data, dict):
            unknown = [key for key in data if key not in cls.model_fields]
            if unknown:
                names = ", ".join(repr(key) for key in unknown)
                raise ValueError(f"cannot filter on {names}; valid: {', '.join(cls.model_fields)}")
        return data


class FilterItem(_Body):
    """One SDK-style filter; only equality is supported."""

    field: Name
    operator: Literal["eq"]
    value: Value
    include_unset: StrictBool | None = None


def _filters_form(value: Any) -> str | None:
    if isinstance(value, dict | FilterObject):
        return "FilterObject"
    if isinstance(value, list):
        return "list[FilterItem]"
    return None


# The tags are the members' type names, which error locations leave out (api.errors).
Filters = Annotated[
    Annotated[FilterObject, Tag("FilterObject")]
    | Annotated[Annotated[list[FilterItem], Field(max_length=10)], Tag("list[FilterItem]")],
    Discriminator(
        _filters_form,
        custom_error_type="filters_form",
        custom_error_message="must be an object {api_key_hash?, user_id?, model?, provider?} "
        "or a list of {field, operator, value}",
    ),
]


class AnalyticsQuery(_Body):
    metrics: Annotated[list[Name], Field(min_length=1, max_length=10)]
    dimensions: Annotated[list[Name], Field(max_length=4)] = Field(default_factory=list)
    granularity: Name = "day"
    time_range: TimeRange | None = None
    filters: Filters | None = None
    limit: Annotated[int, Field(ge=1, le=MAX_ROWS)] = MAX_ROWS
