"""Request and response shapes of the OpenRouter-compatible keys API.

Requests refuse unknown fields (`usage`, `organization_id`, `hash`, … are not settable). Responses
carry every field the official `openrouter` SDK requires (docs/sdk-compat.md §4.1, §4.2), with 0,
false, null or "default" where teamrouter has no such concept (BYOK, workspaces, budgets).
"""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import Annotated, Any, Literal

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from teamrouter.clock import iso_utc as iso
from teamrouter.domain.credits.windows import key_usage, limit_remaining
from teamrouter.domain.keys.models import ApiKey
from teamrouter.money import to_usd

NAME_MAX = 200
# teamrouter has no workspaces; the SDK needs a non-null string on key objects.
WORKSPACE_ID = "default"


class Strict(BaseModel):
    # Strict types: "yes" is not a boolean and "5" is not a number; a key's limits are money.
    model_config = ConfigDict(extra="forbid", strict=True)


def _json_number(value: Any) -> Any:
    if isinstance(value, bool) or not isinstance(value, int | float | Decimal):
        raise ValueError("must be a number (USD)")
    # The decimal text of a JSON float (0.1 → Decimal("0.1")), never its binary expansion.
    return Decimal(str(value)) if isinstance(value, float) else Decimal(value)


UsdNumber = Annotated[Decimal, BeforeValidator(_json_number)]


# Fields the official SDK may send. teamrouter has no BYOK and one workspace, so the values that make
# sense here are accepted and change nothing. Declared last in each model (first is what matters).
SDK_ONLY_FIELDS = frozenset({"include_byok_in_limit", "workspace_id"})


class KeyCreate(Strict):
    name: str = Field(max_length=NAME_MAX)
    limit: UsdNumber | None = None  # USD
    limit_reset: str | None = Field(default=None, max_length=16)
    expires_at: datetime | None = Field(default=None, strict=False)  # ISO 8601 text from JSON
    management: bool = False
    creator_user_id: str | None = Field(default=None, max_length=40)
    include_byok_in_limit: bool | None = None
    workspace_id: Literal["default"] | None = None


class KeyUpdate(Strict):
    """Only the fields present in the body change; `limit: null` removes the limit.

    `admin_managed` is teamrouter's own: `false` from an org admin hands the key back to its creator.
    """

    name: str | None = Field(default=None, max_length=NAME_MAX)
    disabled: bool | None = None
    limit: UsdNumber | None = None
    limit_reset: str | None = Field(default=None, max_length=16)
    admin_managed: bool | None = None
    include_byok_in_limit: bool | None = None
    workspace_id: Literal["default"] | None = None


def _usd(units: int | None) -> float | None:
    return None if units is None else to_usd(units)


def key_public(key: ApiKey, now: datetime) -> dict[str, Any]:
    """The `Key` object of API.md, plus the fields the SDK requires."""
    usage = key_usage(key, now)
    return {
        "hash": key.hash,
        "name": key.name,
        "label": key.label,
        "disabled": key.disabled,
        "limit": _usd(key.spend_limit),
        "limit_remaining": _usd(limit_remaining(key, now)),
        "limit_reset": key.limit_reset,
        **{field: to_usd(units) for field, units in usage.items()},
        "byok_usage": 0,
        "byok_usage_daily": 0,
        "byok_usage_weekly": 0,
        "byok_usage_monthly": 0,
        "include_byok_in_limit": False,
        "created_at": iso(key.created_at),
        "updated_at": iso(key.updated_at),
        "expires_at": iso(key.expires_at),
        "last_used_at": iso(key.last_used_at),
        "creator_user_id": key.creator_user_id,
        "organization_id": key.organization_id,
        "management": key.management,
        # teamrouter's own: an org admin decides this key's status and limit (see keys.service).
        "admin_managed": key.admin_managed,
        "workspace_id": WORKSPACE_ID,
        "external_user": None,
    }


def rate_limit_public(per_minute: int, *, shared: bool) -> dict[str, Any]:
    """`GET /key`'s `rate_limit`: the deployment's per-key request limit (`requests` -1: none).
    OpenRouter reports a fixed -1 there; an actual limit is worth knowing before the 429s."""
    if per_minute <= 0:
        return {"interval": "1m", "note": "no per-key request limit", "requests": -1}
    scope = "across all gateway instances" if shared else "on each gateway process"
    return {"interval": "1m", "note": f"requests per key per minute, {scope}", "requests": per_minute}


def current_key_public(key: ApiKey, now: datetime, *, rate_limit: dict[str, Any]) -> dict[str, Any]:
    """`GET /key`: the presented key, in the shape of OpenRouter's current-key response."""
    usage = key_usage(key, now)
    return {
        "hash": key.hash,
        "name": key.name,
        "label": key.label,
        "limit": _usd(key.spend_limit),
        "limit_remaining": _usd(limit_remaining(key, now)),
        "limit_reset": key.limit_reset,
        **{field: to_usd(units) for field, units in usage.items()},
        "is_management_key": key.management,
        "is_provisioning_key": key.management,
        "is_free_tier": False,
        "creator_user_id": key.creator_user_id,
        "organization_id": key.organization_id,
        "expires_at": iso(key.expires_at),
        "allowed_data_regions": [],
        "budgets": [],
        "effective_budget": None,
        "byok_usage": 0,
        "byok_usage_daily": 0,
        "byok_usage_weekly": 0,
        "byok_usage_monthly": 0,
        "include_byok_in_limit": False,
        "free_model_daily_requests": {"limit": 0, "remaining": 0, "used": 0},
        "rate_limit": rate_limit,
        "workspace_id": None,
    }
