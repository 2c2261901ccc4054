"""Request bodies of the analytics API.

`filters` takes our object form `{api_key_hash?, user_id?, model?, provider?}` or the official
SDK's list form `[{field, operator, value}]` (what `client.analytics.query_analytics` sends), whose
operators are the SDK's equality and set ones: `eq`/`neq` take one value, `in`/`not_in` a list.
Which form is meant is decided by the JSON's shape, so a mistake is reported against that form
alone: as a plain union, a misspelt key in the object also failed the list form, and the 400 said
"Input should be a valid list".
Metric, dimension and granularity names are plain strings here and checked by the service, so an
unknown one gets a message listing the valid choices.
"""

from __future__ import annotations

from enum import StrEnum
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
MAX_FILTER_VALUES = 50


class Operator(StrEnum):
    """The SDK's filter operators we support. Its ordered ones (gt, gte, lt, lte) are left out:
    every field we filter on is an identifier, where order means nothing."""

    EQ = "eq"
    NEQ = "neq"
    IN = "in"
    NOT_IN = "not_in"

    @property
    def takes_list(self) -> bool:
        return self in (Operator.IN, Operator.NOT_IN)


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
    """One SDK-style filter. `include_unset` is accepted and changes nothing: no dimension here has
    an unset value (every rollup row has a key, a person, a model and a provider)."""

    field: Name
    operator: Operator
    # Told apart by shape, so a bad list (empty, too long) is reported as a list alone, not also as
    # "should be a valid string" (the tags are names api.errors leaves out of a field's location).
    value: Annotated[
        Annotated[Value, Tag("str")]
        | Annotated[Annotated[list[Value], Field(min_length=1, max_length=MAX_FILTER_VALUES)], Tag("list")],
        Discriminator(lambda v: "list" if isinstance(v, list) else "str"),
    ]
    include_unset: StrictBool | None = None

    @model_validator(mode="after")
    def _value_fits_operator(self) -> FilterItem:
        # Refused rather than coerced: `in` with one string, or `eq` with a list, is a mistake that
        # would otherwise answer quietly with other rows than the caller meant.
        if self.operator.takes_list and not isinstance(self.value, list):
            raise ValueError(f"operator {self.operator.value!r} takes a list of values")
        if not self.operator.takes_list and isinstance(self.value, list):
            raise ValueError(f"operator {self.operator.value!r} takes one value, not a list")
        return self

    @property
    def values(self) -> tuple[str, ...]:
        return tuple(self.value) if isinstance(self.value, list) else (self.value,)


class OrderBy(_Body):
    """`field` is a metric, a requested dimension or the time bucket; checked by the service."""

    field: Name
    direction: Literal["asc", "desc"]


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
    order_by: OrderBy | None = None
    group_limit: Annotated[int, Field(ge=1, le=MAX_ROWS)] | None = None
