"""Request dependencies: the runtime, and the acting person (session cookie or management key).

Deny by default: `ActorDep` fails with 401 when nothing authenticates. Unsafe methods through a
session cookie must carry `X-CSRF-Token` and must not come from a foreign Origin; a management key
in `Authorization` is not ambient authority, so it needs neither.
"""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlsplit

from fastapi import Depends, Query, Request, Response

from teamrouter.domain.accounts import service as accounts
from teamrouter.domain.actor import Actor
from teamrouter.domain.keys import auth as key_auth
from teamrouter.errors import Forbidden, Unauthorized
from teamrouter.ids import constant_time_equal, new_generation_id
from teamrouter.runtime import Runtime

SESSION_COOKIE = "tr_session"
CSRF_HEADER = "x-csrf-token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def get_runtime(request: Request) -> Runtime:
    runtime: Runtime = request.app.state.runtime
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]

# Offset pagination, on every list that has it: far past any real page, and inside every database's
# integer type (an unbounded 2**63 reached SQLite's driver as an OverflowError, a 500).
MAX_OFFSET = 1_000_000
Offset = Annotated[int, Query(ge=0, le=MAX_OFFSET)]


def bearer_token(request: Request) -> str | None:
    header = request.headers.get("authorization")
    if not header:
        return None
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("Authorization header must be 'Bearer <key>'", code="bad_authorization")
    return token.strip()


async def require_inference_key(request: Request, response: Response, rt: RuntimeDep) -> None:
    """The catalog endpoints sit with inference in API.md: an inference key (401 without one, 403
    for a management key), and an `X-Generation-Id` on the answer as on every inference response."""
    token = bearer_token(request)
    if token is None:
        raise Unauthorized("No API key provided: send 'Authorization: Bearer <key>'", code="no_credentials")
    await key_auth.inference_key(rt, token)
    response.headers["x-generation-id"] = new_generation_id()


InferenceKeyDep = Depends(require_inference_key)


def _same_origin(request: Request, rt: Runtime) -> bool:
    origin = request.headers.get("origin")
    if not origin or origin == "null":
        return origin is None
    allowed = {_origin_of(rt.settings.public_url)}
    host = request.headers.get("host")
    if host:
        allowed.add(f"{request.url.scheme}://{host}")
    return origin in allowed


def from_foreign_origin(request: Request, rt: Runtime) -> bool:
    """True when the request names an Origin other than this deployment's.

    For the server-rendered pages (teamrouter.web): they are served with `Referrer-Policy:
    no-referrer`, which makes browsers send `Origin: null` on the pages' own form posts, so null
    (like an absent header) is not foreign here; the form's CSRF token carries the protection.
    """
    origin = request.headers.get("origin")
    if origin is None or origin == "null":
        return False
    return not _same_origin(request, rt)


def set_session_cookie(response: Response, rt: Runtime, token: str) -> None:
    """The dashboard session cookie, as sign-in sets it (API and pages alike)."""
    response.set_cookie(
        SESSION_COOKIE,
        token,
        max_age=rt.settings.session_ttl_hours * 3600,
        httponly=True,
        samesite="lax",
        secure=rt.settings.secure_cookies,
        path="/",
    )


def _origin_of(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.netloc}"


async def session_actor_or_none(request: Request, rt: RuntimeDep) -> Actor | None:
    token = request.cookies.get(SESSION_COOKIE)
    if not token:
        return None
    auth = await accounts.resolve_session(rt, token)
    if auth is None:
        return None
    if request.method not in SAFE_METHODS:
        if not _same_origin(request, rt):
            raise Forbidden("Cross-origin request refused", code="bad_origin")
        sent = request.headers.get(CSRF_HEADER, "")
        if not sent or not constant_time_equal(sent, accounts.csrf_token(rt, token)):
            raise Forbidden("Missing or invalid X-CSRF-Token header", code="csrf")
    return auth.actor


async def session_actor(
    request: Request, rt: RuntimeDep, actor: Annotated[Actor | None, Depends(session_actor_or_none)]
) -> Actor:
    if actor is None:
        token = bearer_token(request)  # 401 for another scheme
        if token is not None:
            # A working key is refused for what it is (403); anything else is not a key at all, and
            # API.md answers a missing, unknown, disabled or expired key with 401.
            await key_auth.load_usable_key(rt, token)
            raise Forbidden(
                "This endpoint needs a signed-in dashboard session; API keys cannot use it", code="session_only"
            )
        raise Unauthorized("Sign in first", code="no_session")
    return actor


async def actor(request: Request, rt: RuntimeDep) -> Actor:
    """A management key (Authorization: Bearer) or, failing that, the dashboard session."""
    token = bearer_token(request)
    if token is not None:
        return await key_auth.management_actor(rt, token)
    found = await session_actor_or_none(request, rt)
    if found is None:
        raise Unauthorized(
            "Sign in or send a management key as 'Authorization: Bearer <key>'",
            code="no_credentials",
        )
    return found


SessionActor = Annotated[Actor, Depends(session_actor)]
ActorDep = Annotated[Actor, Depends(actor)]
