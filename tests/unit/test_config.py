"""Settings: read once from TEAMROUTER_* and an optional TOML file; unsafe secrets refused outside dev."""

from __future__ import annotations

import pytest

from teamrouter.config import PaymentsBackend, load_settings, resolve_secret
from teamrouter.errors import ConfigError

GOOD_SECRET = "s" * 48


def test_defaults_are_production_with_manual_payments():
    settings = load_settings({})
    assert settings.env.value == "production"
    assert settings.effective_payments is PaymentsBackend.MANUAL
    assert settings.max_org_members == 10
    assert settings.effective_database_url.startswith("sqlite:///")


def test_environment_overrides_toml_which_overrides_defaults(tmp_path):
    config = tmp_path / "teamrouter.toml"
    config.write_text('max_org_members = 25\npublic_url = "https://router.example/"\nTEAMROUTER_ENV = "dev"\n')
    settings = load_settings({"TEAMROUTER_CONFIG": str(config), "TEAMROUTER_MAX_ORG_MEMBERS": "12"})
    assert settings.max_org_members == 12
    assert settings.public_url == "https://router.example"
    assert settings.secure_cookies
    assert settings.is_dev


def test_unknown_toml_keys_and_bad_values_are_named(tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text("max_org_memberz = 3\n")
    with pytest.raises(ConfigError, match="max_org_memberz"):
        load_settings({"TEAMROUTER_CONFIG": str(config)})
    with pytest.raises(ConfigError, match="TEAMROUTER_MAX_ORG_MEMBERS"):
        load_settings({"TEAMROUTER_MAX_ORG_MEMBERS": "lots"})
    with pytest.raises(ConfigError, match="cannot read"):
        load_settings({"TEAMROUTER_CONFIG": str(tmp_path / "missing.toml")})


@pytest.mark.parametrize("secret", ["", "changeme", "secret", "short-but-random-ish"])
def test_production_refuses_missing_or_placeholder_secrets(secret):
    env = {"TEAMROUTER_SMTP_URL": "smtp://127.0.0.1:25"}
    if secret:
        env["TEAMROUTER_SECRET_KEY"] = secret
    problems = load_settings(env).problems_for_serving()
    assert any("TEAMROUTER_SECRET_KEY" in p for p in problems)


def test_production_refuses_dev_payments_and_missing_smtp():
    settings = load_settings({"TEAMROUTER_SECRET_KEY": GOOD_SECRET, "TEAMROUTER_PAYMENTS": "dev"})
    problems = " ".join(settings.problems_for_serving())
    assert "TEAMROUTER_PAYMENTS=dev" in problems and "TEAMROUTER_SMTP_URL" in problems
    ok = load_settings(
        {
            "TEAMROUTER_SECRET_KEY": GOOD_SECRET,
            "TEAMROUTER_SMTP_URL": "smtp://127.0.0.1:25",
            "TEAMROUTER_PUBLIC_URL": "https://router.example",
        }
    )
    assert ok.problems_for_serving() == []


def test_production_needs_the_public_url_that_mail_links_are_built_from():
    settings = load_settings({"TEAMROUTER_SECRET_KEY": GOOD_SECRET, "TEAMROUTER_SMTP_URL": "smtp://127.0.0.1:25"})
    assert settings.public_url == "http://127.0.0.1:8080"  # the default: this machine's loopback
    assert [p for p in settings.problems_for_serving() if "TEAMROUTER_PUBLIC_URL" in p]
    assert load_settings({"TEAMROUTER_ENV": "dev"}).problems_for_serving() == []


def test_dev_generates_one_secret_and_keeps_it(tmp_path):
    settings = load_settings({"TEAMROUTER_ENV": "dev", "TEAMROUTER_VAR_DIR": str(tmp_path)})
    first = resolve_secret(settings).secret_key
    second = resolve_secret(settings).secret_key
    assert first is not None and second is not None
    assert first.get_secret_value() == second.get_secret_value()
    assert len(first.get_secret_value()) >= 48
    assert (tmp_path / "secret_key").stat().st_mode & 0o077 == 0
    assert "**" in repr(first)  # never printed by accident


def test_production_without_secret_cannot_resolve_one(tmp_path):
    with pytest.raises(ConfigError):
        resolve_secret(load_settings({"TEAMROUTER_VAR_DIR": str(tmp_path)}))
