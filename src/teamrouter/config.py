"""Settings, read once from `TEAMROUTER_*` variables and an optional TOML file, typed, passed down.

This is the only module that reads the process environment. Everything else receives a `Settings`.
Precedence: environment variables over the TOML file (named by `TEAMROUTER_CONFIG`) over defaults.
"""

from __future__ import annotations

import os
import secrets
import tomllib
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator

from teamrouter.errors import ConfigError

PREFIX = "TEAMROUTER_"
# Values people paste from examples; refused as secrets outside dev mode.
PLACEHOLDER_SECRETS = frozenset({"changeme", "change-me", "secret", "dev", "test", "placeholder", "xxx"})
MIN_SECRET_LENGTH = 32


class Env(StrEnum):
    DEV = "dev"
    PRODUCTION = "production"


class PaymentsBackend(StrEnum):
    STRIPE = "stripe"
    MANUAL = "manual"
    DEV = "dev"


class Settings(BaseModel):
    """Every knob of a deployment. Field names are the variable names without the prefix."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    env: Env = Env.PRODUCTION
    database_url: str = ""  # empty: a SQLite file under var_dir
    catalog: Path | None = None
    secret_key: SecretStr | None = None
    public_url: str = "http://127.0.0.1:8080"
    smtp_url: str | None = None
    email_from: str = "teamrouter <no-reply@teamrouter.local>"
    redis_url: str | None = None
    payments: PaymentsBackend | None = None  # None: dev in dev mode, else manual
    max_org_members: int = Field(default=10, ge=1, le=100_000)
    var_dir: Path = Path("var")

    session_ttl_hours: int = Field(default=24 * 14, ge=1)
    email_token_ttl_hours: int = Field(default=24, ge=1)
    invitation_ttl_hours: int = Field(default=24 * 7, ge=1)
    # Failed logins per email before each further attempt is delayed.
    login_free_failures: int = Field(default=5, ge=1)

    stripe_api_key: SecretStr | None = None
    stripe_webhook_secret: SecretStr | None = None
    stripe_api_base: str | None = None  # tests point the SDK at a local fake

    # Inference path
    hold_ttl_seconds: int = Field(default=900, ge=10)
    cache_ttl_seconds: float = Field(default=1.0, gt=0)
    key_rate_limit_per_minute: int = Field(default=0, ge=0)  # 0 = unlimited
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    upstream_connect_timeout: float = Field(default=10.0, gt=0)
    upstream_first_byte_timeout: float = Field(default=60.0, gt=0)
    upstream_total_timeout: float = Field(default=600.0, gt=0)
    # How often each process looks for holds past their TTL (their requests' processes died).
    hold_sweep_seconds: float = Field(default=30.0, gt=0)

    # Slow clients (teamrouter.server): a whole request must arrive within the first; a response
    # whose client stopped reading is cut after the second without progress.
    request_read_timeout_seconds: float = Field(default=10.0, gt=0)
    response_write_timeout_seconds: float = Field(default=10.0, gt=0)

    @field_validator("public_url")
    @classmethod
    def _strip_slash(cls, value: str) -> str:
        return value.rstrip("/")

    @property
    def is_dev(self) -> bool:
        return self.env is Env.DEV

    @property
    def effective_payments(self) -> PaymentsBackend:
        if self.payments is not None:
            return self.payments
        return PaymentsBackend.DEV if self.is_dev else PaymentsBackend.MANUAL

    @property
    def effective_database_url(self) -> str:
        return self.database_url or f"sqlite:///{self.var_dir / 'teamrouter.db'}"

    @property
    def secure_cookies(self) -> bool:
        return self.public_url.startswith("https://")

    @property
    def outbox_dir(self) -> Path:
        return self.var_dir / "outbox"

    def problems_for_serving(self) -> list[str]:
        """What makes this configuration unsafe to serve with; empty when it is fine."""
        problems: list[str] = []
        if self.is_dev:
            return problems
        secret = self.secret_key.get_secret_value() if self.secret_key else ""
        if not secret:
            problems.append("TEAMROUTER_SECRET_KEY is required outside dev mode")
        elif secret.lower() in PLACEHOLDER_SECRETS or len(secret) < MIN_SECRET_LENGTH:
            problems.append(
                f"TEAMROUTER_SECRET_KEY looks like a placeholder; use at least {MIN_SECRET_LENGTH} random "
                "characters (e.g. `python -c 'import secrets; print(secrets.token_urlsafe(48))'`)"
            )
        if self.effective_payments is PaymentsBackend.DEV:
            problems.append("TEAMROUTER_PAYMENTS=dev credits accounts for free; it is allowed only in dev mode")
        if self.effective_payments is PaymentsBackend.STRIPE and not (
            self.stripe_api_key and self.stripe_webhook_secret
        ):
            problems.append("TEAMROUTER_PAYMENTS=stripe needs TEAMROUTER_STRIPE_API_KEY and _STRIPE_WEBHOOK_SECRET")
        if not self.smtp_url:
            problems.append("TEAMROUTER_SMTP_URL is required outside dev mode (the email outbox is for dev only)")
        return problems


def load_settings(environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Read settings from the environment (and the TOML file it names); `overrides` win over both."""
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    config_path = environ.get(PREFIX + "CONFIG")
    if config_path:
        values.update(_read_toml(Path(config_path)))
    known = set(Settings.model_fields)
    for name, value in environ.items():
        if name.startswith(PREFIX):
            field = name[len(PREFIX) :].lower()
            if field in known:
                values[field] = value
    values.update(overrides)
    try:
        return Settings.model_validate(values)
    except ValidationError as exc:
        details = "; ".join(
            f"{PREFIX}{'.'.join(str(p) for p in err['loc']).upper()}: {err['msg']}" for err in exc.errors()
        )
        raise ConfigError(f"invalid configuration: {details}") from exc


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from exc
    values: dict[str, Any] = {}
    for key, value in raw.items():
        name = key[len(PREFIX) :] if key.upper().startswith(PREFIX) else key
        values[name.lower()] = value
    unknown = set(values) - set(Settings.model_fields)
    if unknown:
        raise ConfigError(f"unknown keys in {path}: {', '.join(sorted(unknown))}")
    return values


def upstream_credentials() -> Mapping[str, str]:
    """Where catalog providers' `api_key_env` names are looked up: the process environment."""
    return os.environ


def resolve_secret(settings: Settings) -> Settings:
    """Return settings with a usable secret key: in dev one is generated once and kept under var_dir."""
    if settings.secret_key is not None:
        return settings
    if not settings.is_dev:
        raise ConfigError("TEAMROUTER_SECRET_KEY is required outside dev mode")
    path = settings.var_dir / "secret_key"
    if path.exists():
        secret = path.read_text(encoding="utf-8").strip()
    else:
        settings.var_dir.mkdir(parents=True, exist_ok=True)
        secret = secrets.token_urlsafe(48)
        # Written owner-only: it signs every session of this deployment.
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(secret)
    return settings.model_copy(update={"secret_key": SecretStr(secret)})
