"""Sign-up, email verification, sign-in and sign-out."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request, Response
from starlette.responses import JSONResponse

from teamrouter.api.deps import SESSION_COOKIE, RuntimeDep, SessionActor, set_session_cookie
from teamrouter.api.policy import Access, access
from teamrouter.domain.accounts import service as accounts
from teamrouter.domain.accounts.schemas import (
    LogIn,
    ResendVerification,
    SignUp,
    VerifyEmail,
    user_public,
)

router = APIRouter(prefix="/auth", tags=["accounts"])


@router.post("/signup", status_code=201, openapi_extra=access(Access.PUBLIC))
async def sign_up(body: SignUp, rt: RuntimeDep) -> dict[str, Any]:
    """Create an account and email a verification link.

    The same answer whether or not the address already has an account (its owner is mailed a
    notice instead), so nothing in it identifies an account: no user id, no verification state.
    """
    await accounts.sign_up(rt, email=body.email, password=body.password, name=body.name)
    return {"data": {"email": accounts.normalize_email(body.email)}}


@router.post("/verify-email", openapi_extra=access(Access.PUBLIC))
async def verify_email(body: VerifyEmail, rt: RuntimeDep) -> dict[str, Any]:
    """Consume a verification token (single use)."""
    user = await accounts.verify_email(rt, token=body.token)
    return {"data": {"user": user_public(user)}}


@router.post("/resend-verification", status_code=202, openapi_extra=access(Access.PUBLIC))
async def resend_verification(body: ResendVerification, rt: RuntimeDep) -> dict[str, Any]:
    """Mail a fresh verification link, if the address has an unverified account.

    The work is queued and done after the answer, which is the same, and as quick, for any address.
    """
    await accounts.resend_verification(rt, email=body.email)
    return {"data": {"sent": True}}


@router.post("/login", openapi_extra=access(Access.PUBLIC))
async def log_in(body: LogIn, request: Request, rt: RuntimeDep) -> JSONResponse:
    """Open a session: sets an HttpOnly cookie and returns the CSRF token for unsafe requests."""
    user, token = await accounts.log_in(
        rt,
        email=body.email,
        password=body.password,
        previous_token=request.cookies.get(SESSION_COOKIE),
    )
    response = JSONResponse({"data": {"user": user_public(user), "csrf_token": accounts.csrf_token(rt, token)}})
    set_session_cookie(response, rt, token)
    return response


@router.post("/logout", status_code=204, openapi_extra=access(Access.SESSION))
async def log_out(_actor: SessionActor, request: Request, rt: RuntimeDep) -> Response:
    """End this session server-side."""
    token = request.cookies.get(SESSION_COOKIE)
    if token:
        await accounts.log_out(rt, token=token)
    response = Response(status_code=204)
    response.delete_cookie(SESSION_COOKIE, path="/", httponly=True, samesite="lax", secure=rt.settings.secure_cookies)
    return response
