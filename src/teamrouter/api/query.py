"""Query strings that say exactly one thing: no undeclared parameter, none given twice.

A GET that quietly ignores a parameter it does not know answers a misspelt or unsupported filter
(`?modle=…`, or a filter the endpoint does not have) with every row, and the caller believes the
answer filtered: on a view of money, that misleads. An endpoint that declares its query parameters
as one `QueryModel` has a single list to check against and to name in the refusal.

A parameter given twice misleads the same way: the framework keeps the last value, so
`?model=a&model=b` answered with b's rows alone, read as the rows of both. No query parameter
takes several values (analytics' `in` filters are the way to ask for several), so `SingleValuedDep`,
a dependency of the whole app, refuses a repeat on every route.
"""

from __future__ import annotations

from fastapi import Depends, Request
from pydantic import BaseModel, ConfigDict

from teamrouter import query_strings
from teamrouter.errors import BadRequest


class QueryModel(BaseModel):
    # "allow", not "forbid": unknown parameters are kept so `refuse_undeclared` can name them beside
    # the accepted ones, which pydantic's own "extra_forbidden" error cannot list.
    model_config = ConfigDict(extra="allow", frozen=True)


def refuse_undeclared(params: QueryModel) -> None:
    """A 400 naming every parameter ``params`` does not declare and listing the ones it does."""
    unknown = sorted(params.model_extra or {})
    if not unknown:
        return
    accepted = list(type(params).model_fields)
    plural = "s" if len(unknown) > 1 else ""
    raise BadRequest(
        f"unknown query parameter{plural} {', '.join(map(repr, unknown))}; accepted: {', '.join(accepted)}",
        code="unknown_parameter",
        field=unknown[0],
        unknown=unknown,
        accepted=accepted,
    )


def refuse_repeated(request: Request) -> None:
    """`teamrouter.query_strings.refuse_repeated_in` for a route's query string."""
    query_strings.refuse_repeated_in(request.scope["query_string"])


# The app's `dependencies=[...]` (teamrouter.app): it runs before any route's own parameters are read.
SingleValuedDep = Depends(refuse_repeated)
