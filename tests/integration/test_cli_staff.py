"""The operator's commands, run as a separate process the way an operator would."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest
from sqlalchemy import select, update
from tests.support.gateway import funded_person

from teamrouter.domain.audit.models import AuditEvent
from teamrouter.domain.credits.models import CreditAccount
from teamrouter.domain.orgs import service as orgs
from teamrouter.domain.orgs.models import Organization
from teamrouter.money import UNITS_PER_USD


@pytest.fixture
def cli(database_url, tmp_path):
    env = {
        **os.environ,
        "TEAMROUTER_DATABASE_URL": database_url,
        "TEAMROUTER_VAR_DIR": str(tmp_path / "var"),
        "TEAMROUTER_ENV": "dev",
    }

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "teamrouter", *args], env=env, capture_output=True, text=True, timeout=60
        )

    return run


async def balance(rt, **owner) -> int:
    async with rt.db.read() as s:
        column = CreditAccount.organization_id if "org" in owner else CreditAccount.user_id
        return int(await s.scalar(select(CreditAccount.balance).where(column == next(iter(owner.values())))))


async def test_staff_commands_move_money_once_and_are_audited(cli, rt):
    who = await funded_person(rt, usd="10")
    org = (await orgs.create_organization(rt, actor=who.actor, name="Acme")).org
    from teamrouter.domain.accounts.models import User

    async with rt.db.read() as s:
        email = await s.scalar(select(User.email).where(User.id == who.user_id))

    moved = cli("staff", "transfer-credits", "--user", email, "--org", org.id, "--amount", "4.5", "--note", "seed")
    assert moved.returncode == 0, moved.stderr
    assert await balance(rt, org=org.id) == 45 * UNITS_PER_USD // 10
    assert await balance(rt, user=who.user_id) == 55 * UNITS_PER_USD // 10

    too_much = cli("staff", "transfer-credits", "--user", email, "--org", org.id, "--amount", "100")
    assert too_much.returncode == 1 and "error:" in too_much.stderr
    assert await balance(rt, org=org.id) == 45 * UNITS_PER_USD // 10

    # The same invoice reference twice credits once, and the second run says so.
    said = []
    for _ in range(2):
        granted = cli("staff", "grant-credits", "--org", org.id, "--amount", "100", "--reference", "INV-7")
        assert granted.returncode == 0, granted.stderr
        said.append(granted.stdout.strip())
    assert said[0] == f"granted $100 to {org.id} (reference INV-7)"
    assert said[1] == f"already granted: reference INV-7 credited $100 to {org.id} before; nothing changed"
    assert await balance(rt, org=org.id) == 1045 * UNITS_PER_USD // 10
    assert cli("staff", "grant-credits", "--org", org.id, "--amount", "-1", "--reference", "X").returncode == 2

    capped = cli("staff", "set-member-cap", "--org", org.id, "--cap", "1")
    assert capped.returncode == 0 and capped.stdout.strip() == f"member cap of {org.id} is now 1; it is full (1 member)"
    capped = cli("staff", "set-member-cap", "--org", org.id, "--cap", "25")
    assert capped.returncode == 0 and capped.stdout.strip() == f"member cap of {org.id} is now 25"
    async with rt.db.read() as s:
        assert await s.scalar(select(Organization.member_cap).where(Organization.id == org.id)) == 25
        actions = set((await s.scalars(select(AuditEvent.action))).all())
    assert len(actions) >= 3

    checked = cli("db", "check-ledger")
    assert checked.returncode == 0 and "consistent" in checked.stdout

    key = cli("keys", "create", "--email", email, "--name", "ci", "--org", org.id, "--management")
    assert key.returncode == 0 and key.stdout.strip().startswith("sk-tr-v1-")


async def test_check_ledger_fails_on_a_tampered_balance(cli, rt):
    who = await funded_person(rt, usd="3")
    async with rt.db.uow() as uow:
        await uow.session.execute(
            update(CreditAccount).where(CreditAccount.id == who.account_id).values(balance=CreditAccount.balance + 1)
        )
    checked = cli("db", "check-ledger")
    assert checked.returncode == 1 and checked.stdout.strip()
