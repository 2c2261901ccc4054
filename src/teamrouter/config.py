"""Settings, read once from `TEAMROUTER_*` variables and an optional TOML file, typed, passed down.

This is the only module that reads the process environment. Everything else receives a `Settings`.
Precedence: environment variables over the TOML file (named by `TEAMROUTER_CONFIG`) over defaults.
"""

from __future__ import annotations

import difflib
import os
import secrets
import tomllib
from collections.abc import Mapping
from enum import StrEnum
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, SecretStr, ValidationError, field_validator
from sqlalchemy.exc import ArgumentError

from teamrouter.errors import ConfigError
from teamrouter.storage.urls import async_url

PREFIX = "TEAMROUTER_"
# TEAMROUTER_* variables that are not settings but are read legitimately: the config file's name
# (read here) and the test suite's own (tests/support/databases.py, tests/integration/gateway; CI
# sets them, and the servers the tests start inherit them).
NOT_SETTINGS = frozenset({PREFIX + "CONFIG"})
TEST_PREFIX = PREFIX + "TEST_"
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

    # No inf or nan in any float: an infinite timeout is no timeout, and nan compares false with
    # everything, so each `gt=0` bound would let both through.
    model_config = ConfigDict(extra="forbid", frozen=True, allow_inf_nan=False)

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
    # Outgoing mail (teamrouter.domain.mail.dispatcher): a failed send is tried again after this,
    # then after twice as long each time (at most an hour apart), up to mail_max_attempts attempts
    # in all (the defaults keep trying for about five hours).
    mail_retry_seconds: float = Field(default=30.0, gt=0)
    mail_max_attempts: int = Field(default=12, ge=1, le=1000)

    stripe_api_key: SecretStr | None = None
    stripe_webhook_secret: SecretStr | None = None
    stripe_api_base: str | None = None  # tests point the SDK at a local fake

    # Inference path
    hold_ttl_seconds: int = Field(default=900, ge=10)
    cache_ttl_seconds: float = Field(default=1.0, gt=0)
    key_rate_limit_per_minute: int = Field(default=0, ge=0)  # 0 = unlimited
    max_body_bytes: int = Field(default=4 * 1024 * 1024, ge=1024)
    # The shared upstream client's connect timeout; each provider's own timeouts (connect, first
    # byte, read) are set in the catalog.
    upstream_connect_timeout: float = Field(default=10.0, gt=0)
    # A stream silent this long gets an SSE comment, so idle timeouts (nginx: 60 s) do not cut it
    # while a model thinks; 0 turns it off (teamrouter.gateway.keepalive).
    stream_keepalive_seconds: float = Field(default=15.0, ge=0)
    # How often each process looks for holds past their TTL (their requests' processes died).
    hold_sweep_seconds: float = Field(default=30.0, gt=0)

    # Slow clients (teamrouter.server): a whole request must arrive within the first; a response
    # whose client stopped reading is cut after the second without progress.
    request_read_timeout_seconds: float = Field(default=10.0, gt=0)
    response_write_timeout_seconds: float = Field(default=10.0, gt=0)
    # On SIGTERM, requests still running (long streams) get this long to finish before they are
    # cancelled; without a bound one stream could hold a shutdown for the upstream read timeout.
    shutdown_grace_seconds: int = Field(default=30, ge=0)

    @field_validator("public_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in {"http", "https"} or not parts.hostname:
            raise ValueError(f"must be an http:// or https:// URL, e.g. https://router.example.com, not {value!r}")
        return value.rstrip("/")

    @field_validator("database_url")
    @classmethod
    def _database_url(cls, value: str) -> str:
        if value:
            try:
                async_url(value)
            except ArgumentError as exc:
                # The value is not echoed: it may hold a password.
                raise ValueError("not a database URL: use sqlite:///path or postgresql://user@host/db") from exc
        return value

    @field_validator("smtp_url")
    @classmethod
    def _smtp_url(cls, value: str | None) -> str | None:
        if not value:
            return None  # empty: unset
        parts = urlsplit(value)
        if parts.scheme not in {"smtp", "smtps"} or not parts.hostname:
            raise ValueError("must look like smtp://host:port or smtps://user:password@host:465")
        _port(parts)
        return value

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, value: str | None) -> str | None:
        # Checked whether or not rate limits use it, so a bad URL is found before the day they do.
        if not value:
            return None  # empty: unset
        parts = urlsplit(value)
        if parts.scheme in {"redis", "rediss"} and parts.hostname:
            _port(parts)
            return value
        if parts.scheme == "unix" and parts.path:
            return value
        raise ValueError("must look like redis://host:6379/0, rediss://host:6380/0 or unix:///path/redis.sock")

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
            problems.append("TEAMROUTER_SMTP_URL is required outside dev mode (mail written to files is for dev only)")
        if "public_url" not in self.model_fields_set:
            # Its default names this machine's loopback: every verification and invitation link
            # mailed to a person, and the payment pages' return address, would lead nowhere.
            problems.append(
                "TEAMROUTER_PUBLIC_URL is required outside dev mode: the address people reach this "
                "deployment at (links in mail are built from it), e.g. https://router.example.com"
            )
        return problems


def _port(parts: Any) -> None:
    try:
        parts.port  # noqa: B018  # urlsplit checks the port only when it is read
    except ValueError as exc:
        raise ValueError(f"has an invalid port: {exc}") from exc


def load_settings(environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Read settings from the environment (and the TOML file it names); `overrides` win over both.

    An unknown `TEAMROUTER_*` variable is refused: a misspelt one would otherwise be ignored, and
    the deployment would quietly run on a default (a misspelt database URL: a local SQLite file).
    """
    environ = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    config_path = environ.get(PREFIX + "CONFIG")
    if config_path:
        values.update(_read_toml(Path(config_path)))
    known = set(Settings.model_fields)
    for name, value in environ.items():
        if not name.startswith(PREFIX) or name in NOT_SETTINGS or name.startswith(TEST_PREFIX):
            continue
        field = name[len(PREFIX) :].lower()
        if field not in known:
            raise ConfigError(f"unknown environment variable {name}{_suggestion(name)}")
        values[field] = value
    values.update(overrides)
    try:
        return Settings.model_validate(values)
    except ValidationError as exc:
        details = "; ".join(
            f"{PREFIX}{'.'.join(str(p) for p in err['loc']).upper()}: {_message(err['msg'])}" for err in exc.errors()
        )
        raise ConfigError(f"invalid configuration: {details}") from exc


def _suggestion(name: str) -> str:
    # Compared without the prefix every candidate shares, which would make anything look close.
    names = [field.upper() for field in Settings.model_fields] + [n[len(PREFIX) :] for n in sorted(NOT_SETTINGS)]
    close = difflib.get_close_matches(name[len(PREFIX) :], names, n=1, cutoff=0.6)
    return f" (did you mean {PREFIX}{close[0]}?)" if close else " (not a teamrouter setting)"


def _message(msg: str) -> str:
    # pydantic prefixes what a validator raised; the variable's name already says where it came from.
    return msg.removeprefix("Value error, ")


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
    if not path.exists():
        _create_secret(path)
    try:
        secret = path.read_text(encoding="utf-8").strip()
    except OSError as exc:
        raise ConfigError(f"cannot read the dev secret key {path}: {exc.strerror or exc}") from exc
    if not secret:
        raise ConfigError(f"the dev secret key file {path} is empty; delete it and a new one is generated")
    return settings.model_copy(update={"secret_key": SecretStr(secret)})


def _create_secret(path: Path) -> None:
    """Write a new secret to `path` unless another process gets there first; then keep theirs.

    Several processes sharing ./var start together (dev servers, CLI commands): each writes its
    candidate to a private file, and a hard link publishes it complete or fails because one exists
    already, so no process ever reads a half-written secret or replaces one already in use.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        candidate = path.with_name(f".{path.name}.{os.getpid()}.{secrets.token_hex(4)}")
        # Written owner-only: it signs every session of this deployment.
        fd = os.open(candidate, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(secrets.token_urlsafe(48))
            os.link(candidate, path)
        except FileExistsError:
            pass  # another process published its secret first: everyone uses that one
        finally:
            candidate.unlink(missing_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create the dev secret key {path}: {exc.strerror or exc}") from exc
