"""The one error tree. Each error has a stable machine `code`, an HTTP `status` and `metadata`.

Front ends translate these once into the OpenRouter envelope
`{"error": {"code": <status>, "message": ..., "metadata": {"code": <machine code>, ...}}}`.

    TeamrouterError (500 internal)
    ├── ConfigError (500 config)                     bad deployment configuration
    │   └── CannotListen (500 cannot_listen)         `serve` cannot bind its address (in use, not ours)
    ├── BadRequest (400 bad_request)                 malformed or invalid input; metadata.field names it
    ├── Unauthorized (401 unauthorized)              no or bad credentials
    ├── PaymentRequired (402 insufficient_credits)   pool cannot cover the hold
    │   └── KeyLimitReached (402 key_limit_reached)
    ├── Forbidden (403 forbidden)
    ├── NotFound (404 not_found)                     also for objects of another context
    ├── MethodNotAllowed (405 method_not_allowed)
    ├── Conflict (409 conflict)
    ├── PayloadTooLarge (413 payload_too_large)
    ├── Unprocessable (422 unprocessable)
    ├── RateLimited (429 rate_limited)               metadata.retry_after seconds
    ├── UpstreamFailed (502 upstream_failed)
    ├── ServiceUnavailable (503 unavailable)         no provider, database down
    └── UpstreamTimeout (504 upstream_timeout)
"""

from __future__ import annotations

from typing import Any, ClassVar


class TeamrouterError(Exception):
    status: ClassVar[int] = 500
    default_code: ClassVar[str] = "internal"
    default_message: ClassVar[str] = "Internal error"

    def __init__(self, message: str | None = None, *, code: str | None = None, **metadata: Any) -> None:
        self.message = message or self.default_message
        self.code = code or self.default_code
        self.metadata = metadata
        super().__init__(self.message)

    def envelope(self) -> dict[str, Any]:
        return {
            "error": {
                "code": self.status,
                "message": self.message,
                "metadata": {"code": self.code, **self.metadata},
            }
        }


class ConfigError(TeamrouterError):
    default_code = "config"
    default_message = "Invalid configuration"


class CannotListen(ConfigError):
    default_code = "cannot_listen"
    default_message = "Cannot listen on the address"


class BadRequest(TeamrouterError):
    status = 400
    default_code = "bad_request"
    default_message = "Bad request"


class Unauthorized(TeamrouterError):
    status = 401
    default_code = "unauthorized"
    default_message = "Authentication required"


class PaymentRequired(TeamrouterError):
    status = 402
    default_code = "insufficient_credits"
    default_message = "Insufficient credits"


class KeyLimitReached(PaymentRequired):
    default_code = "key_limit_reached"
    default_message = "Key limit reached"


class Forbidden(TeamrouterError):
    status = 403
    default_code = "forbidden"
    default_message = "Not allowed"


class NotFound(TeamrouterError):
    status = 404
    default_code = "not_found"
    default_message = "Not found"


class MethodNotAllowed(TeamrouterError):
    status = 405
    default_code = "method_not_allowed"
    default_message = "Method not allowed"


class Conflict(TeamrouterError):
    status = 409
    default_code = "conflict"
    default_message = "Conflict"


class PayloadTooLarge(TeamrouterError):
    status = 413
    default_code = "payload_too_large"
    default_message = "Request body too large"


class Unprocessable(TeamrouterError):
    status = 422
    default_code = "unprocessable"
    default_message = "Unprocessable request"


class RateLimited(TeamrouterError):
    status = 429
    default_code = "rate_limited"
    default_message = "Rate limit exceeded"


class UpstreamFailed(TeamrouterError):
    status = 502
    default_code = "upstream_failed"
    default_message = "Upstream provider failed"


class ServiceUnavailable(TeamrouterError):
    status = 503
    default_code = "unavailable"
    default_message = "Service unavailable"


class UpstreamTimeout(TeamrouterError):
    status = 504
    default_code = "upstream_timeout"
    default_message = "Upstream provider timed out"


def database_unavailable() -> ServiceUnavailable:
    """The database could not be reached or written (PostgreSQL gone, SQLite disk full or read-only)."""
    return ServiceUnavailable("Database unavailable; try again shortly", code="database_unavailable")


def bad_field(field: str, problem: str) -> BadRequest:
    """A 400 that names the offending field, in the message and in metadata."""
    return BadRequest(f"{field}: {problem}", code="invalid_field", field=field)
