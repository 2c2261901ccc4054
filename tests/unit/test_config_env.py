"""Settings refuse what an operator would otherwise discover only in production: misspelt
TEAMROUTER_* variables, malformed URLs, non-finite durations; and the dev secret survives a race."""

from __future__ import annotations

import multiprocessing

import pytest

from teamrouter.config import load_settings, resolve_secret
from teamrouter.errors import ConfigError


def test_a_misspelt_variable_is_refused_with_the_closest_name():
    with pytest.raises(ConfigError) as refused:
        load_settings({"TEAMROUTER_DATABSE_URL": "postgresql://db.internal/teamrouter"})
    assert str(refused.value) == (
        "unknown environment variable TEAMROUTER_DATABSE_URL (did you mean TEAMROUTER_DATABASE_URL?)"
    )
    with pytest.raises(ConfigError, match=r"TEAMROUTER_SMTP \(did you mean TEAMROUTER_SMTP_URL\?\)"):
        load_settings({"TEAMROUTER_SMTP": "smtp://mail:25"})
    with pytest.raises(ConfigError, match=r"TEAMROUTER_WHATEVER \(not a teamrouter setting\)"):
        load_settings({"TEAMROUTER_WHATEVER": "1"})


def test_variables_read_elsewhere_are_allowed(tmp_path):
    config = tmp_path / "teamrouter.toml"
    config.write_text("max_org_members = 7\n")
    settings = load_settings(
        {
            "TEAMROUTER_CONFIG": str(config),
            # The test suite's own (tests/support/databases.py, gateway tests); CI sets them and the
            # servers the tests start inherit them.
            "TEAMROUTER_TEST_DB": "postgres",
            "TEAMROUTER_TEST_POSTGRES_URL": "postgresql://postgres@127.0.0.1:5432/test",
            "TEAMROUTER_TEST_REDIS_URL": "redis://127.0.0.1:6379/15",
            "OTHER_PROGRAM_SETTING": "x",
        }
    )
    assert settings.max_org_members == 7


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("TEAMROUTER_DATABASE_URL", "garbage"),
        ("TEAMROUTER_DATABASE_URL", "mysql://root@db/teamrouter"),
        ("TEAMROUTER_REDIS_URL", "localhost:6379"),
        ("TEAMROUTER_REDIS_URL", "redis://cache:99999/0"),
        ("TEAMROUTER_SMTP_URL", "mail.internal:25"),
        ("TEAMROUTER_PUBLIC_URL", "not-a-url"),
        ("TEAMROUTER_CACHE_TTL_SECONDS", "inf"),
        ("TEAMROUTER_HOLD_SWEEP_SECONDS", "nan"),
        ("TEAMROUTER_REQUEST_READ_TIMEOUT_SECONDS", "Infinity"),
        ("TEAMROUTER_SHUTDOWN_GRACE_SECONDS", "-1"),
    ],
)
def test_malformed_values_are_refused_naming_the_variable(name, value):
    with pytest.raises(ConfigError) as refused:
        load_settings({name: value})
    message = str(refused.value)
    assert name in message and "\n" not in message


def test_a_database_url_that_is_refused_is_not_echoed():
    with pytest.raises(ConfigError) as refused:
        load_settings({"TEAMROUTER_DATABASE_URL": "postgres//admin:hunter2@db"})
    assert "hunter2" not in str(refused.value)


def test_good_urls_and_empty_ones_are_accepted():
    settings = load_settings(
        {
            "TEAMROUTER_DATABASE_URL": "postgresql://app:p%40ss@db.internal:5432/teamrouter",
            "TEAMROUTER_REDIS_URL": "rediss://:secret@cache.internal:6380/0",
            "TEAMROUTER_SMTP_URL": "smtps://user:pass@mail.internal:465",
            "TEAMROUTER_PUBLIC_URL": "https://router.example.com/",
            "TEAMROUTER_SHUTDOWN_GRACE_SECONDS": "5",
        }
    )
    assert settings.public_url == "https://router.example.com"
    assert settings.shutdown_grace_seconds == 5
    unset = load_settings({"TEAMROUTER_SMTP_URL": "", "TEAMROUTER_REDIS_URL": ""})
    assert unset.smtp_url is None and unset.redis_url is None
    assert load_settings({}).shutdown_grace_seconds == 30


def _resolve(var_dir: str, start: multiprocessing.synchronize.Barrier, results: multiprocessing.Queue) -> None:
    start.wait()
    try:
        secret = resolve_secret(load_settings({"TEAMROUTER_ENV": "dev", "TEAMROUTER_VAR_DIR": var_dir})).secret_key
        results.put(secret.get_secret_value() if secret else "none")
    except Exception as exc:  # reported to the test, which names it
        results.put(f"{type(exc).__name__}: {exc}")


@pytest.mark.parametrize("attempt", range(6))  # the race is lost only now and then
def test_processes_sharing_var_agree_on_one_dev_secret(tmp_path, attempt):
    var_dir = str(tmp_path / f"var{attempt}")
    context = multiprocessing.get_context("fork")
    start = context.Barrier(6)
    results: multiprocessing.Queue = context.Queue()
    processes = [context.Process(target=_resolve, args=(var_dir, start, results)) for _ in range(6)]
    for process in processes:
        process.start()
    for process in processes:
        process.join(timeout=30)
    secrets = {results.get(timeout=5) for _ in processes}
    assert len(secrets) == 1, secrets
    assert len(secrets.pop()) >= 48
    assert sorted(p.name for p in (tmp_path / f"var{attempt}").iterdir()) == ["secret_key"]  # no leftovers
