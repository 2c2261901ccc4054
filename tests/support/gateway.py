"""A real gateway to test against: the fake upstream as its own process, a catalog pointing at it,
`teamrouter serve` as another process, and accounts/keys seeded through the real services."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import select

from teamrouter.domain.actor import Actor
from teamrouter.domain.credits.ledger import EntryKind
from teamrouter.domain.credits.models import CreditAccount
from teamrouter.domain.credits.service import add_credits
from teamrouter.domain.keys import service as keys
from teamrouter.domain.roles import Role
from teamrouter.gateway.store.base import GenerationRecord
from teamrouter.ids import new_generation_id, new_id
from teamrouter.money import UNITS_PER_USD, usd_to_units
from teamrouter.runtime import Runtime
from tests.support.server import ServerProcess

CATALOG = """
[[providers]]
slug = "fake"
name = "Fake AI"
kind = "openai"
base_url = "{url}/v1"
data_collection = "deny"
zdr = true

[[providers]]
slug = "fakeb"
name = "Fake Backup"
kind = "openai"
base_url = "{url}/v1"
data_collection = "allow"
zdr = false

[[providers]]
slug = "claude"
name = "Fake Anthropic"
kind = "anthropic"
base_url = "{url}/v1"
data_collection = "deny"

[[providers]]
slug = "slow"
name = "Slow AI"
kind = "openai"
base_url = "{url}/v1"
first_byte_timeout = 1.5

[[providers]]
slug = "dead"
name = "Dead AI"
kind = "openai"
base_url = "http://127.0.0.1:9/v1"
connect_timeout = 2

[[providers]]
slug = "demo"
name = "teamrouter demo"
kind = "demo"
base_url = "http://demo.invalid"

# $1 per million prompt tokens, $2 per million completion tokens.
[[models]]
id = "test/chat"
name = "Test Chat"
context_length = 32768
[[models.endpoints]]
provider = "fake"
upstream_model = "fake-chat"
prompt_price = "0.000001"
completion_price = "0.000002"
max_completion_tokens = 1000
quantization = "fp8"  # fakeb declares none: "unknown"
[[models.endpoints]]
provider = "fakeb"
upstream_model = "fake-chat-backup"
prompt_price = "0.000002"
completion_price = "0.000004"
max_completion_tokens = 1000

# Exactly one cent per request, nothing per token (TESTPLAN A1).
[[models]]
id = "test/cent"
name = "Test Cent"
context_length = 8192
[[models.endpoints]]
provider = "fake"
upstream_model = "fake-cent"
prompt_price = "0"
completion_price = "0"
request_price = "0.01"
max_completion_tokens = 100

[[models]]
id = "test/claude"
name = "Test Claude"
context_length = 200000
distillable = true
[[models.endpoints]]
provider = "claude"
upstream_model = "claude-fake"
prompt_price = "0.000003"
completion_price = "0.000015"
max_completion_tokens = 4096

# Cheapest first: a refused connection, then a timeout, then a working endpoint (TESTPLAN C16).
[[models]]
id = "test/fallback"
name = "Test Fallback"
context_length = 8192
[[models.endpoints]]
provider = "dead"
upstream_model = "dead-model"
prompt_price = "0.0000001"
completion_price = "0.0000001"
max_completion_tokens = 500
[[models.endpoints]]
provider = "slow"
upstream_model = "slow-model"
prompt_price = "0.0000002"
completion_price = "0.0000002"
max_completion_tokens = 500
[[models.endpoints]]
provider = "fake"
upstream_model = "working-model"
prompt_price = "0.000001"
completion_price = "0.000002"
max_completion_tokens = 500

[[models]]
id = "demo/echo"
name = "Demo Echo"
context_length = 8192
[[models.endpoints]]
provider = "demo"
upstream_model = "echo"
prompt_price = "0.0000001"
completion_price = "0.0000002"
max_completion_tokens = 1024
"""


class FakeUpstreamProcess:
    """`python -m tests.fakes.upstream` in its own process, so load tests don't share our GIL."""

    def __init__(self, *, uvloop: bool = False) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "tests.fakes.upstream", "--port", "0", *(["--uvloop"] if uvloop else [])],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            cwd=Path(__file__).resolve().parents[2],
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline().strip()
        assert line.startswith("READY "), line
        self.url = line.split(" ", 1)[1]

    def calls(self) -> list[dict[str, Any]]:
        calls: list[dict[str, Any]] = httpx.get(f"{self.url}/_calls", timeout=10).json()["calls"]
        return calls

    def reset(self) -> None:
        httpx.post(f"{self.url}/_reset", timeout=10)

    def set_script(self, script: dict[str, Any] | None, *, model: str) -> None:
        """Script every answer for one upstream model (so one endpoint of a model can fail)."""
        r = httpx.post(f"{self.url}/_script", json={"script": script, "model": model}, timeout=10)
        r.raise_for_status()

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=10)
        if self.proc.stdout is not None:
            self.proc.stdout.close()


def script(**fields: Any) -> str:
    """A message line that scripts the fake upstream's answer to this request."""
    import json

    return "FAKE-SCRIPT: " + json.dumps(fields)


@dataclass
class Funded:
    user_id: str
    account_id: str
    key: str  # plaintext
    key_hash: str
    key_id: str
    actor: Actor


async def funded_person(
    rt: Runtime, *, usd: str, limit: str | None = None, limit_reset: str | None = None, org_id: str | None = None
) -> Funded:
    """A verified person with a funded personal account (or org pool) and one inference key."""
    from teamrouter.domain.accounts import service as accounts
    from tests.conftest import PASSWORD

    user = await accounts.create_user(rt, email=f"{new_id('p')}@example.com", password=PASSWORD, verified=True)
    actor = Actor(user_id=user.id, email_verified=True, organization_id=org_id, role=Role.ADMIN if org_id else None)
    async with rt.db.read() as session:
        owner = CreditAccount.organization_id == org_id if org_id else CreditAccount.user_id == user.id
        account_id = await session.scalar(select(CreditAccount.id).where(owner))
    assert account_id is not None
    if Decimal(usd) > 0:
        await add_credits(
            rt, account_id=account_id, amount=usd_to_units(usd), idempotency_key=new_id("seed"), kind=EntryKind.GRANT
        )
    created = await keys.create_key(
        rt,
        actor=actor,
        name="gateway test",
        limit=Decimal(limit) if limit is not None else None,
        limit_reset=limit_reset,
    )
    return Funded(
        user_id=user.id,
        account_id=account_id,
        key=created.plaintext,
        key_hash=created.key.hash,
        key_id=created.key.id,
        actor=actor,
    )


async def make_team(rt: Runtime) -> tuple[Funded, Actor, Any, str, str, str]:
    """An org with a funded pool, its admin (also personally funded) and a member with an inference
    key: (admin, admin actor in the org, org, pool account id, member id, member key).

    The invitation's mail leaves `rt`'s mail dispatcher at work: it writes the outbox now and later
    (its ticker looks again once the mail falls due), in write transactions. While `rt` lives, call
    servers on its database with async clients: a blocking call stops this loop, and a transaction
    caught between its BEGIN and COMMIT then holds SQLite's write lock until the server's own writes
    give up waiting (a 503 or a client timeout after 30 s, seen under load)."""
    from teamrouter.domain.accounts import service as accounts
    from teamrouter.domain.orgs import invitations
    from teamrouter.domain.orgs import service as orgs
    from tests.conftest import PASSWORD
    from tests.support.orgs import invite_token

    admin = await funded_person(rt, usd="5")  # a personal balance that must stay untouched
    org = (await orgs.create_organization(rt, actor=admin.actor, name="Team")).org
    async with rt.db.read() as s:
        pool = await s.scalar(select(CreditAccount.id).where(CreditAccount.organization_id == org.id))
    await add_credits(rt, account_id=pool, amount=UNITS_PER_USD, idempotency_key=new_id("seed"), kind=EntryKind.GRANT)
    email = f"{new_id('m')}@example.com"
    member = await accounts.create_user(rt, email=email, password=PASSWORD, verified=True)
    token = await invite_token(rt, admin_id=admin.user_id, org_id=org.id, email=email)
    member_actor = Actor(user_id=member.id, email_verified=True)
    await invitations.accept_invitation(rt, actor=member_actor, token=token)
    in_org = Actor(user_id=member.id, email_verified=True, organization_id=org.id, role=Role.MEMBER)
    member_key = (await keys.create_key(rt, actor=in_org, name="member key")).plaintext
    admin_actor = Actor(user_id=admin.user_id, email_verified=True, organization_id=org.id, role=Role.ADMIN)
    return admin, admin_actor, org, pool, member.id, member_key


async def add_key(rt: Runtime, funded: Funded, *, limit: str | None = None) -> str:
    created = await keys.create_key(
        rt, actor=funded.actor, name="another", limit=Decimal(limit) if limit is not None else None
    )
    return created.plaintext


def start_gateway(tmp: Path, database_url: str, fake_url: str, *, workers: int = 1, **env: str) -> ServerProcess:
    catalog = tmp / "catalog.toml"
    catalog.write_text(CATALOG.format(url=fake_url))
    server = ServerProcess(
        {
            "TEAMROUTER_ENV": "dev",
            "TEAMROUTER_DATABASE_URL": database_url,
            "TEAMROUTER_VAR_DIR": str(tmp / "var"),
            "TEAMROUTER_CATALOG": str(catalog),
            "TEAMROUTER_SECRET_KEY": "gateway-tests-" + "k" * 40,
            **env,
        },
        workers=workers,
        cwd=tmp,
    )
    server.start()
    return server


def record_for(who: Funded, at: datetime, cost: int) -> GenerationRecord:
    """An activity row for a settlement of `cost` by `who`'s key at `at` (store tests, the bench)."""
    return GenerationRecord(
        id=new_generation_id(),
        created_at=at,
        account_id=who.account_id,
        organization_id=None,
        key_id=who.key_id,
        key_hash=who.key_hash,
        user_id=who.user_id,
        model="m/x",
        provider="p",
        endpoint_id="m/x@p",
        upstream_model="x",
        tokens_prompt=1,
        tokens_completion=1,
        cost=cost,
    )
