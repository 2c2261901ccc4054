"""What an operator meets when a command is given a bad value or a bad database: one line naming the
option or the setting, a non-zero status, no traceback, nothing written."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from sqlalchemy import func, select
from tests.conftest import PASSWORD
from tests.support.databases import backend
from tests.support.gateway import funded_person

from teamrouter.domain.accounts.models import User
from teamrouter.domain.credits import service as credits
from teamrouter.domain.orgs import service as orgs
from teamrouter.errors import BadRequest
from teamrouter.money import MAX_AMOUNT_UNITS


def _one_line_error(result: subprocess.CompletedProcess[str]) -> str:
    assert "Traceback" not in result.stderr, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.stderr
    return lines[0]


@pytest.fixture
def cli(database_url, tmp_path):
    env = {
        **os.environ,
        "TEAMROUTER_DATABASE_URL": database_url,
        "TEAMROUTER_VAR_DIR": str(tmp_path / "var"),
        "TEAMROUTER_ENV": "dev",
    }

    def run(*args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "teamrouter", *args],
            env={**env, **extra},
            capture_output=True,
            text=True,
            timeout=60,
        )

    return run


async def test_amounts_past_the_per_operation_cap_are_refused(cli, rt):
    who = await funded_person(rt, usd="10")
    org = (await orgs.create_organization(rt, actor=who.actor, name="Capped")).org
    async with rt.db.read() as s:
        email = await s.scalar(select(User.email).where(User.id == who.user_id))

    for amount in ("9000000000", "1e999999"):
        granted = cli("staff", "grant-credits", "--org", org.id, "--amount", amount, "--reference", f"R-{amount}")
        assert granted.returncode == 2
        assert "--amount" in _one_line_error(granted)
    moved = cli("staff", "transfer-credits", "--user", email, "--org", org.id, "--amount", "9000000000")
    assert moved.returncode == 2 and "--amount" in _one_line_error(moved)
    assert cli("staff", "grant-credits", "--org", org.id, "--amount", "1000000", "--reference", "MAX").returncode == 0

    # The service refuses too, whoever calls it.
    with pytest.raises(BadRequest, match="amount"):
        await credits.grant_credits(rt, actor=None, organization_id=org.id, amount=MAX_AMOUNT_UNITS + 1, reference="S")
    with pytest.raises(BadRequest, match="amount"):
        await credits.transfer_personal_to_org(
            rt, actor=None, user_id=who.user_id, organization_id=org.id, amount=MAX_AMOUNT_UNITS + 1
        )
    assert (await credits.get_credits(rt, actor=who.actor)).balance == 10 * 10**9


async def test_key_limits_and_emails_are_checked_as_the_api_checks_them(cli, rt):
    made = cli("users", "create", "--email", "first@example.com", "--password", PASSWORD)
    assert made.returncode == 0, made.stderr
    for limit in ("nan", "inf"):
        key = cli("keys", "create", "--email", "first@example.com", "--name", "k", "--limit", limit)
        assert key.returncode == 2 and "--limit" in _one_line_error(key)

    for email in ("", "a b@@"):
        bad = cli("users", "create", "--email", email, "--password", PASSWORD)
        assert bad.returncode == 1 and "email" in _one_line_error(bad)
    async with rt.db.read() as s:
        assert await s.scalar(select(func.count()).select_from(User)) == 1

    # Migrating in passing is not news: no Alembic lines around the new id.
    again = cli("users", "create", "--email", "second@example.com", "--password", PASSWORD)
    assert again.returncode == 0 and again.stderr == "", again.stderr


def _bad_databases(tmp_path) -> list[tuple[str, str]]:
    # A path no one can create, root included (a file where a directory should be).
    not_a_directory = tmp_path / "a-file"
    not_a_directory.write_text("")
    cases = [
        ("garbage", "garbage"),
        ("mysql://root@127.0.0.1/teamrouter", "mysql"),
        ("postgresql://postgres:hunter2@127.0.0.1:1/teamrouter", "wrong port"),
        (f"sqlite:///{not_a_directory}/sub/teamrouter.db", "uncreatable sqlite path"),
    ]
    if backend() == "postgres":
        from sqlalchemy.engine import make_url
        from tests.support.databases import postgres_url

        missing = make_url(postgres_url()).set(database="trfix_no_such_database")
        cases.append((missing.render_as_string(hide_password=False), "missing database"))
    return cases


def test_a_bad_database_url_is_one_line_naming_the_setting(cli, tmp_path):
    # Every kind of bad URL through the migration path; the operational commands (which check the
    # database before they start) with the two kinds that get past the settings.
    runs = [(["db", "upgrade"], url, what) for url, what in _bad_databases(tmp_path)]
    for url, what in _bad_databases(tmp_path)[2:4]:
        runs.append((["db", "check-ledger"], url, what))
        runs.append((["staff", "set-member-cap", "--org", "o", "--cap", "3"], url, what))
    for command, url, what in runs:
        result = cli(*command, TEAMROUTER_DATABASE_URL=url)
        assert result.returncode in (1, 2), (command, what, result.stderr)
        line = _one_line_error(result)
        assert "TEAMROUTER_DATABASE_URL" in line, (command, what, line)
        assert "hunter2" not in line


def test_commands_on_an_unmigrated_database_say_so(cli, tmp_path):
    empty = f"sqlite:///{tmp_path / 'empty.db'}"
    result = cli("db", "check-ledger", TEAMROUTER_DATABASE_URL=empty)
    assert result.returncode == 1
    assert "teamrouter db upgrade" in _one_line_error(result)


async def test_users_create_words_the_password_and_name_rules_as_sign_up_does(cli, rt):
    weak = cli("users", "create", "--email", "crlf@example.com", "--password", "crlf long passphrase")
    assert weak.returncode == 1
    assert _one_line_error(weak) == (
        "error: password: Password must not contain the name part of your email address (before the @)"
    )
    broken = cli("users", "create", "--email", "lf@example.com", "--password", PASSWORD, "--name", "Line\nBreak")
    assert broken.returncode == 1
    assert _one_line_error(broken) == "error: name: must not contain line breaks (found U+000A)"
    async with rt.db.read() as s:
        assert await s.scalar(select(func.count()).select_from(User)) == 0
