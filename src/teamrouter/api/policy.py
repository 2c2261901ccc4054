"""Who may call a route, declared on the route itself and checked by the role-matrix test.

Every API route passes `openapi_extra=access(...)`; a route without one fails the matrix test, so a
new endpoint cannot ship without someone deciding its policy. The declaration documents intent; the
enforcement is in the services (authorization where data is fetched).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

ACCESS_KEY = "x-teamrouter-access"


class Access(StrEnum):
    PUBLIC = "public"  # anyone, no credentials (sign-up, login, webhooks with their own signature)
    SESSION = "session"  # any signed-in person (dashboard session only)
    ACTOR = "actor"  # a session or a management key, in its current context
    VERIFIED = "verified"  # a signed-in person with a verified email
    MEMBER = "member"  # a member of the organization in the path
    ADMIN = "admin"  # an admin of the organization in the path
    CONTEXT_ADMIN = "context_admin"  # personal context, or an admin of the context org
    STAFF = "staff"  # deployment staff
    INFERENCE_KEY = "inference_key"  # an inference API key
    ANY_KEY = "any_key"  # any API key (GET /key)


def access(level: Access) -> dict[str, Any]:
    return {ACCESS_KEY: level.value}
