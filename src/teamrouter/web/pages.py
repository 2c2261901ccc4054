"""Rendering and form handling shared by the server-rendered pages.

Every page is a Jinja2 template rendered with autoescape, served with a Content-Security-Policy that
allows nothing but this origin's stylesheet and form posts (no script at all, nothing from another
origin), `Referrer-Policy: no-referrer` (page URLs carry one-time tokens) and `Cache-Control:
no-store`. Forms are plain POSTs, read here without python-multipart.

Forms posted before anyone is signed in (verify an email, sign in) carry a token bound to a random
`tr_form` cookie (double submit, HMAC-ed with the deployment's secret): another site can make a
browser post to us, but it cannot read or set that cookie, so it cannot forge the field. This is what
keeps a page's sign-in form from being used for login CSRF. Forms of a signed-in person carry the
session's own CSRF token, the one the JSON API wants in `X-CSRF-Token`.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Any
from urllib.parse import parse_qsl

from fastapi import Request
from jinja2 import Environment, PackageLoader, StrictUndefined, select_autoescape
from starlette.responses import HTMLResponse

from teamrouter.api.deps import from_foreign_origin
from teamrouter.ids import constant_time_equal, new_token
from teamrouter.runtime import Runtime

FORM_COOKIE = "tr_form"
MAX_FORM_FIELDS = 8
SECURITY_HEADERS = {
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'self'; img-src 'self'; form-action 'self'; "
        "base-uri 'none'; frame-ancestors 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cache-Control": "no-store",
}


class FormRefused(Exception):
    """A post that is not one of our own forms (foreign origin, missing or wrong token, bad body)."""


def environment() -> Environment:
    return Environment(
        loader=PackageLoader("teamrouter.web", "templates"),
        autoescape=select_autoescape(default=True, default_for_string=True),
        undefined=StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )


class Pages:
    """The template environment and the response conventions, built once per app."""

    def __init__(self) -> None:
        self._env = environment()

    def render(
        self,
        request: Request,
        name: str,
        *,
        status: int = 200,
        headers: dict[str, str] | None = None,
        **context: Any,
    ) -> HTMLResponse:
        # Links and form actions are relative to the site's root, written from this page's depth,
        # so the pages also work under a path prefix (TEAMROUTER_PUBLIC_URL with a path, a proxy).
        root = "../" * max(request.url.path.count("/") - 1, 0)
        html = self._env.get_template(name).render(root=root, **context)
        return HTMLResponse(html, status_code=status, headers={**SECURITY_HEADERS, **(headers or {})})

    def render_with_forms(
        self,
        request: Request,
        rt: Runtime,
        name: str,
        *,
        form_field: str,
        status: int = 200,
        headers: dict[str, str] | None = None,
        **context: Any,
    ) -> HTMLResponse:
        """A page whose signed-out forms carry the HMAC of the browser's `tr_form` cookie (in the
        template variable `form_field`), the cookie set when the browser has none yet."""
        secret, fresh = form_secret(request)
        context[form_field] = form_token(rt, secret)
        response = self.render(request, name, status=status, headers=headers, **context)
        if fresh:
            set_form_cookie(response, rt, secret)
        return response


def form_secret(request: Request) -> tuple[str, bool]:
    """The browser's `tr_form` value, or a new one (True: the response must set it)."""
    current = request.cookies.get(FORM_COOKIE)
    if current and 16 <= len(current) <= 64:
        return current, False
    return new_token(), True


def form_token(rt: Runtime, secret: str) -> str:
    return hmac.new(rt.secret, b"form:" + secret.encode(), hashlib.sha256).hexdigest()


def set_form_cookie(response: HTMLResponse, rt: Runtime, secret: str) -> None:
    response.set_cookie(FORM_COOKIE, secret, httponly=True, samesite="lax", secure=rt.settings.secure_cookies, path="/")


async def read_form(request: Request, rt: Runtime) -> dict[str, str]:
    """The posted fields; refused when the post comes from another origin or is not a plain form."""
    if from_foreign_origin(request, rt):
        raise FormRefused("cross-origin post")
    kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/x-www-form-urlencoded":
        raise FormRefused("not a form post")
    try:
        pairs = parse_qsl(
            (await request.body()).decode("utf-8"),
            keep_blank_values=True,
            strict_parsing=False,
            max_num_fields=MAX_FORM_FIELDS,
        )
    except (UnicodeDecodeError, ValueError) as exc:
        raise FormRefused("unreadable form") from exc
    return dict(pairs)


async def read_signed_out_form(request: Request, rt: Runtime) -> dict[str, str]:
    """A form posted before sign-in: `read_form`'s checks, then its `check_form_token`."""
    form = await read_form(request, rt)
    check_form_token(request, rt, form)
    return form


def check_form_token(request: Request, rt: Runtime, form: dict[str, str]) -> None:
    """A pre-sign-in form: its `csrf` field must match this browser's `tr_form` cookie."""
    secret = request.cookies.get(FORM_COOKIE)
    sent = form.get("csrf", "")
    if not secret or not sent or not constant_time_equal(sent, form_token(rt, secret)):
        raise FormRefused("form token")
