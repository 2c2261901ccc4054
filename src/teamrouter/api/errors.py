"""Every error leaves as the OpenRouter envelope, including the framework's own 404/405/422."""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import JSONResponse
from starlette.routing import Match, Mount

from teamrouter.errors import TeamrouterError

log = logging.getLogger(__name__)
_METHODS = ("DELETE", "GET", "OPTIONS", "PATCH", "POST", "PUT")

_STATUS_CODES = {
    400: "bad_request",
    401: "unauthorized",
    403: "forbidden",
    404: "not_found",
    405: "method_not_allowed",
    409: "conflict",
    413: "payload_too_large",
    415: "unsupported_media_type",
    422: "unprocessable",
    429: "rate_limited",
}


def envelope(status: int, message: str, code: str, **metadata: Any) -> dict[str, Any]:
    return {"error": {"code": status, "message": message, "metadata": {"code": code, **metadata}}}


def error_response(exc: TeamrouterError) -> JSONResponse:
    headers = {}
    retry_after = exc.metadata.get("retry_after")
    if retry_after is not None:
        headers["Retry-After"] = str(int(retry_after))
    return JSONResponse(exc.envelope(), status_code=exc.status, headers=headers)


# Where a union's members are tried, pydantic adds each member's type to the location
# ("filters.FilterObject", "filters.list[FilterItem].0", "stop.str"): names of types, not of
# fields (ours are snake_case), so they are left out, except where the last part is the field the
# client sent (an unknown or a missing field: "Name" there is theirs).
_TYPE_TAGS = frozenset({"str", "int", "float", "bool", "bytes", "list", "dict", "none", "decimal", "datetime"})
_LOCATIONS = frozenset({"body", "query", "path", "header"})


def _is_type_tag(part: object) -> bool:
    return isinstance(part, str) and (part[:1].isupper() or "[" in part or part in _TYPE_TAGS)


def _field_name(loc: tuple[Any, ...], kind: str = "") -> str:
    keep_last = kind in ("extra_forbidden", "missing")
    parts = [
        str(p)
        for i, p in enumerate(loc)
        if p not in _LOCATIONS and (not _is_type_tag(p) or (keep_last and i == len(loc) - 1))
    ]
    return ".".join(parts) or "body"


def _problem(err: dict[str, Any]) -> str:
    # A validator's own words arrive as "Value error, must be …": the prefix is pydantic's.
    msg = str(err.get("msg", "invalid value"))
    return msg.removeprefix("Value error, ").removeprefix("Assertion failed, ")


def describe_validation(errors: list[dict[str, Any]]) -> tuple[str, str]:
    """(message, first field) for pydantic errors, in words a person can act on."""
    messages = []
    first_field = ""
    for err in errors[:5]:
        kind = err.get("type", "")
        field = _field_name(tuple(err.get("loc", ())), kind)
        if kind == "json_invalid":
            return "Malformed JSON body", "body"
        if kind == "extra_forbidden":
            text = f"{field}: unknown field"
        elif kind == "missing":
            text = f"{field}: field required"
        else:
            text = f"{field}: {_problem(err)}"
        first_field = first_field or field
        if text not in messages:  # a union's members often fail alike
            messages.append(text)
    return "; ".join(messages), first_field


def allowed_methods(request: Request) -> str:
    """Every method some route of the app takes at this path ("" when none does). Starlette's 405
    names only the first route that matched the path, and each method is a route of its own here.
    Asked of the routes themselves, method by method (only on a 405), so routers included with a
    prefix answer as they route."""
    # A mount matches every method: what it takes is its own app's to say.
    routes = [route for route in request.app.router.routes if not isinstance(route, Mount)]
    allowed = {
        method
        for method in _METHODS
        if any(route.matches({**request.scope, "method": method})[0] is Match.FULL for route in routes)
    }
    if "GET" in allowed:
        allowed.add("HEAD")  # served as the GET (teamrouter.app)
    return ", ".join(sorted(allowed))


def install(app: FastAPI) -> None:
    @app.exception_handler(TeamrouterError)
    async def _domain(_request: Request, exc: TeamrouterError) -> JSONResponse:
        if exc.status >= 500:
            log.error("request failed: %s (%s)", exc.code, exc.message)
        return error_response(exc)

    @app.exception_handler(RequestValidationError)
    async def _validation(_request: Request, exc: RequestValidationError) -> JSONResponse:
        message, field = describe_validation(list(exc.errors()))
        code = "malformed_json" if message == "Malformed JSON body" else "invalid_field"
        return JSONResponse(envelope(400, message, code, field=field), status_code=400)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        message = exc.detail if isinstance(exc.detail, str) else "Request failed"
        code = _STATUS_CODES.get(exc.status_code, "http_error")
        headers = getattr(exc, "headers", None)
        allowed = allowed_methods(request) if exc.status_code == 405 else ""
        if allowed:  # else not a route of the app's own (a mount: static files say their own Allow)
            headers = {**(headers or {}), "Allow": allowed}
        return JSONResponse(envelope(exc.status_code, message, code), status_code=exc.status_code, headers=headers)

    @app.exception_handler(Exception)
    async def _unexpected(_request: Request, exc: Exception) -> JSONResponse:
        # Log the type and traceback only: exception text can carry request content.
        log.error("unhandled %s", type(exc).__name__, exc_info=exc)
        return JSONResponse(envelope(500, "Internal error", "internal"), status_code=500)
