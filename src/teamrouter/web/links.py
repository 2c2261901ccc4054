"""The pages the links in emails open: `/verify-email?token=…` and `/invitations/accept?token=…`.

Opening a link (GET) never consumes its token: mail scanners and link previews fetch links before
the person does. The page shows a button; only its form POST, handled here, calls the same service
as the JSON API. Tokens travel in the POST body, never in a URL this site builds (forms post to
paths without the query), and no page loads anything from another origin (see pages.py).

What an invitation page says depends on who is signed in, not on the token: signed out, it says
only "an organization invitation" and offers to sign in; the organization's name is shown only to
the person it was sent to (a verified address equal to the invited one), as the JSON preview does.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import HTMLResponse
from starlette.staticfiles import StaticFiles

from teamrouter.api.deps import SESSION_COOKIE, RuntimeDep, set_session_cookie
from teamrouter.api.policy import Access, access
from teamrouter.domain.accounts import service as accounts
from teamrouter.domain.actor import Actor
from teamrouter.domain.orgs import invitations
from teamrouter.domain.orgs.schemas import invitation_status
from teamrouter.errors import BadRequest, RateLimited, TeamrouterError, Unauthorized
from teamrouter.ids import constant_time_equal
from teamrouter.runtime import Runtime
from teamrouter.web.pages import (
    FormRefused,
    Pages,
    read_form,
    read_signed_out_form,
)

MAX_TOKEN = 200  # as the JSON API's token fields
MAX_EMAIL = 320
MAX_PASSWORD = 1024

VERIFY_MESSAGES = {
    "token_used": (
        "This link has already been used, or a newer one replaced it. If you confirmed your address with it,"
        " you are all set: sign in; if you signed up again since, open the newest link."
    ),
    "token_expired": "This link has expired. Ask for a new one below.",
    "token_stale": "This link was sent to an address your account no longer uses.",
}
VERIFY_INVALID = "This link is not valid. Check that you opened the whole link from the email, or ask for a new one."
INVITATION_MESSAGES = {
    "token_used": "This invitation has already been used.",
    "invitation_revoked": "This invitation has been withdrawn by the organization.",
    "token_expired": "This invitation has expired. Ask an admin of the organization to invite you again.",
    "already_member": "You are already a member of this organization.",
}
REFUSED = "This form has expired or did not come from this site. Open the link from your email again."


def static_files() -> StaticFiles:
    """The pages' own stylesheet (vendored; nothing is fetched from elsewhere)."""
    return StaticFiles(packages=[("teamrouter.web", "static")])


def router() -> APIRouter:
    pages = Pages()
    routes = APIRouter(include_in_schema=False)

    def verify_page(request: Request, rt: Runtime, *, status: int = 200, **context: Any) -> HTMLResponse:
        context.setdefault("token", "")
        context.setdefault("error", None)
        return pages.render_with_forms(request, rt, "verify_email.html", form_field="csrf", status=status, **context)

    @routes.get("/verify-email", openapi_extra=access(Access.PUBLIC))
    async def verify_email_page(request: Request, rt: RuntimeDep, token: str = "") -> HTMLResponse:
        """A button that confirms the address; opening the page consumes nothing."""
        if not token or len(token) > MAX_TOKEN:
            return verify_page(request, rt, state="failed", error=VERIFY_INVALID, status=400)
        return verify_page(request, rt, state="confirm", token=token)

    @routes.post("/verify-email", openapi_extra=access(Access.PUBLIC))
    async def verify_email(request: Request, rt: RuntimeDep) -> HTMLResponse:
        try:
            form = await read_signed_out_form(request, rt)
        except FormRefused:
            return verify_page(request, rt, state="failed", error=REFUSED, status=403)
        token = form.get("token", "")
        if not token or len(token) > MAX_TOKEN:
            return verify_page(request, rt, state="failed", error=VERIFY_INVALID, status=400)
        try:
            await accounts.verify_email(rt, token=token)
        except BadRequest as exc:
            error = VERIFY_MESSAGES.get(exc.code, VERIFY_INVALID)
            return verify_page(request, rt, state="failed", error=error, status=400)
        return verify_page(request, rt, state="done")

    @routes.post("/verify-email/resend", openapi_extra=access(Access.PUBLIC))
    async def resend_verification(request: Request, rt: RuntimeDep) -> HTMLResponse:
        """The JSON API's resend: silent about whether the address has an account, and rate limited."""
        try:
            form = await read_signed_out_form(request, rt)
        except FormRefused:
            return verify_page(request, rt, state="failed", error=REFUSED, status=403)
        email = form.get("email", "").strip()
        if "@" in email and len(email) <= MAX_EMAIL:
            await accounts.resend_verification(rt, email=email)
        return verify_page(request, rt, state="resent")

    async def signed_in(request: Request, rt: Runtime) -> tuple[Actor | None, str | None]:
        token = request.cookies.get(SESSION_COOKIE)
        if not token:
            return None, None
        auth = await accounts.resolve_session(rt, token)
        return (auth.actor, token) if auth is not None else (None, None)

    async def invitation_view(rt: Runtime, actor: Actor | None, token: str) -> dict[str, Any]:
        """What the page may say to this person about this link (see the module docstring)."""
        if actor is None:
            return {"state": "signed_out"}
        email = (await accounts.me(rt, actor=actor))["user"]["email"]
        if not actor.email_verified:
            return {"state": "unverified", "email": email}
        try:
            preview = await invitations.preview_invitation(rt, actor=actor, token=token)
        except BadRequest:
            return {"state": "not_for_you", "email": email}
        return {
            "state": invitation_status(preview.invitation, rt.clock.now()),
            "email": email,
            "organization": preview.organization_name,
            "role": preview.invitation.role,
        }

    def invitation_page(
        request: Request,
        rt: Runtime,
        view: dict[str, Any],
        *,
        token: str,
        session_token: str | None,
        status: int = 200,
        error: str | None = None,
        headers: dict[str, str] | None = None,
    ) -> HTMLResponse:
        return pages.render_with_forms(
            request,
            rt,
            "invitation.html",
            form_field="form_csrf",
            status=status,
            headers=headers,
            view={"email": None, "organization": None, "role": None, **view},
            token=token,
            error=error,
            session_csrf=accounts.csrf_token(rt, session_token) if session_token else "",
        )

    @routes.get("/invitations/accept", openapi_extra=access(Access.PUBLIC))
    async def invitation_landing(request: Request, rt: RuntimeDep, token: str = "") -> HTMLResponse:
        """Explains the invitation as far as this person may know it; opening it consumes nothing."""
        if not token or len(token) > MAX_TOKEN:
            view = {"state": "bad_link"}
            return invitation_page(request, rt, view, token="", session_token=None, status=400)
        actor, session_token = await signed_in(request, rt)
        view = await invitation_view(rt, actor, token)
        return invitation_page(request, rt, view, token=token, session_token=session_token)

    @routes.post("/invitations/sign-in", openapi_extra=access(Access.PUBLIC))
    async def invitation_sign_in(request: Request, rt: RuntimeDep) -> HTMLResponse:
        """The JSON API's sign-in, from the invitation page; answers with the page for the new session."""
        try:
            form = await read_signed_out_form(request, rt)
        except FormRefused:
            view = {"state": "signed_out"}
            return invitation_page(request, rt, view, token="", session_token=None, status=403, error=REFUSED)
        token = form.get("token", "")[:MAX_TOKEN]
        email, password = form.get("email", ""), form.get("password", "")
        signed_out = {"state": "signed_out"}
        if not email or not password or len(email) > MAX_EMAIL or len(password) > MAX_PASSWORD:
            error = "Enter your email address and password."
            return invitation_page(request, rt, signed_out, token=token, session_token=None, status=400, error=error)
        try:
            _user, session_token = await accounts.log_in(
                rt, email=email, password=password, previous_token=request.cookies.get(SESSION_COOKIE)
            )
        except RateLimited as exc:
            retry = {"Retry-After": str(int(exc.metadata.get("retry_after", 1)))}
            return invitation_page(
                request, rt, signed_out, token=token, session_token=None, status=429, error=exc.message, headers=retry
            )
        except Unauthorized:
            error = "Wrong email address or password."
            return invitation_page(request, rt, signed_out, token=token, session_token=None, status=401, error=error)
        auth = await accounts.resolve_session(rt, session_token)
        view = await invitation_view(rt, auth.actor if auth else None, token)
        response = invitation_page(request, rt, view, token=token, session_token=session_token)
        set_session_cookie(response, rt, session_token)
        return response

    @routes.post("/invitations/accept", openapi_extra=access(Access.PUBLIC))
    async def accept_invitation(request: Request, rt: RuntimeDep) -> HTMLResponse:
        """Join, as POST /api/v1/invitations/accept does: a session, its CSRF token, a verified address."""
        actor, session_token = await signed_in(request, rt)
        try:
            form = await read_form(request, rt)
        except FormRefused:
            form = {}
        token = form.get("token", "")[:MAX_TOKEN]
        if actor is None or session_token is None:
            error = "Sign in first (your session may have ended)."
            return invitation_page(
                request, rt, {"state": "signed_out"}, token=token, session_token=None, status=401, error=error
            )
        sent = form.get("csrf", "")
        if not sent or not constant_time_equal(sent, accounts.csrf_token(rt, session_token)):
            view = await invitation_view(rt, actor, token)
            return invitation_page(
                request, rt, view, token=token, session_token=session_token, status=403, error=REFUSED
            )
        view = await invitation_view(rt, actor, token)
        if view["state"] != "pending":
            return invitation_page(request, rt, view, token=token, session_token=session_token, status=400)
        try:
            membership, org = await invitations.accept_invitation(rt, actor=actor, token=token)
        except TeamrouterError as exc:
            error = INVITATION_MESSAGES.get(exc.code, exc.message)
            view = await invitation_view(rt, actor, token)
            return invitation_page(
                request, rt, view, token=token, session_token=session_token, status=exc.status, error=error
            )
        joined = {**view, "state": "joined", "organization": org.name, "role": membership.role}
        return invitation_page(request, rt, joined, token="", session_token=session_token)

    return routes
