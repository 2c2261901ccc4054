"""One rule for every query string, the app's routes and the inference front alike: no parameter
takes several values, so one given twice is a 400 naming it (the framework would keep the last value
and answer as if the first had not been sent: `?model=a&model=b` filtered on b alone)."""

from __future__ import annotations

from collections import Counter
from urllib.parse import parse_qsl

from teamrouter.errors import BadRequest


def refuse_repeated_in(query_string: bytes) -> None:
    """A 400 naming every parameter of an ASGI query string given more than once (empty values
    count: `?a=&a=x`). Parsed as Starlette parses it for the routes' own parameters."""
    if not query_string:
        return
    counts = Counter(name for name, _ in parse_qsl(query_string.decode("latin-1"), keep_blank_values=True))
    repeated = sorted(name for name, count in counts.items() if count > 1)
    if not repeated:
        return
    plural = "s" if len(repeated) > 1 else ""
    raise BadRequest(
        f"query parameter{plural} {', '.join(map(repr, repeated))} given more than once: each takes one value",
        code="repeated_parameter",
        field=repeated[0],
        repeated=repeated,
    )
