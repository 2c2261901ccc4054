"""Money-test helpers: seed orgs, keys and balances straight into the database, and `check_ledger`.

Every money test (in any area) ends with `await check_ledger(rt)`, which fails the test with the list
of broken invariants (TESTPLAN I1–I6).
"""

from __future__ import annotations

from datetime import date, datetime
from typing import Any

from sqlalchemy import select, update

from teamrouter.domain.credits.checker import ALL_INVARIANTS
from teamrouter.domain.credits.checker import check_ledger as run_checker
from teamrouter.domain.credits.ledger import EntryKind
from teamrouter.domain.credits.models import CreditAccount
from teamrouter.domain.credits.service import add_credits
from teamrouter.domain.keys.models import ApiKey
from teamrouter.domain.orgs.models import Membership, Organization
from teamrouter.ids import hash_token, new_api_key, new_id
from teamrouter.runtime import Runtime


async def check_ledger(rt: Runtime, *, invariants: frozenset[str] = ALL_INVARIANTS) -> None:
    problems = await run_checker(rt, invariants=invariants)
    assert problems == [], "ledger checker:\n" + "\n".join(problems)


async def make_org(
    rt: Runtime, *, name: str = "Acme", admins: tuple[str, ...] = (), members: tuple[str, ...] = ()
) -> str:
    """An org with its credit pool and the given memberships (user ids), bypassing the orgs service."""
    now = rt.clock.now()
    org_id = new_id("org")
    async with rt.db.uow() as uow:
        uow.session.add(
            Organization(
                id=org_id,
                name=name,
                member_count=len(admins) + len(members),
                settings={},
                billing={},
                created_at=now,
                updated_at=now,
            )
        )
        await uow.session.flush()
        uow.session.add(CreditAccount(id=new_id("acct"), organization_id=org_id, created_at=now, updated_at=now))
        for role, people in (("admin", admins), ("member", members)):
            for user_id in people:
                uow.session.add(
                    Membership(
                        id=new_id("mem"),
                        organization_id=org_id,
                        user_id=user_id,
                        role=role,
                        created_at=now,
                        updated_at=now,
                    )
                )
    return org_id


async def set_context(person: Any, org_id: str | None) -> None:
    r = await person.call("PUT", "/me/context", json={"organization_id": org_id})
    assert r.status_code == 200, r.text


async def make_user_account(rt: Runtime) -> tuple[str, str]:
    """(user_id, personal account id) of a fresh person, without HTTP."""
    from teamrouter.domain.accounts import service as accounts
    from tests.conftest import PASSWORD

    user = await accounts.create_user(rt, email=f"{new_id('u')}@example.com", password=PASSWORD, verified=True)
    return user.id, await account_of(rt, user_id=user.id)


async def account_of(rt: Runtime, *, user_id: str | None = None, organization_id: str | None = None) -> str:
    async with rt.db.read() as s:
        query = select(CreditAccount.id)
        query = (
            query.where(CreditAccount.user_id == user_id)
            if user_id
            else query.where(CreditAccount.organization_id == organization_id)
        )
        found = await s.scalar(query)
    assert found is not None
    return found


async def make_key(
    rt: Runtime,
    *,
    account_id: str,
    creator_user_id: str,
    organization_id: str | None = None,
    limit: int | None = None,
    limit_reset: str | None = None,
) -> str:
    """An inference key row billing `account_id` (the keys service is another area's); returns its id."""
    now = rt.clock.now()
    key_id = new_id("key")
    plaintext = new_api_key()
    async with rt.db.uow() as uow:
        uow.session.add(
            ApiKey(
                id=key_id,
                hash=hash_token(plaintext),
                label="sk-tr-v1-abc...xyz",
                name="test key",
                organization_id=organization_id,
                account_id=account_id,
                creator_user_id=creator_user_id,
                spend_limit=limit,
                limit_reset=limit_reset,
                created_at=now,
                updated_at=now,
            )
        )
    return key_id


async def set_key_limit(rt: Runtime, key_id: str, *, limit: int | None, limit_reset: str | None) -> None:
    async with rt.db.uow() as uow:
        await uow.session.execute(
            update(ApiKey).where(ApiKey.id == key_id).values(spend_limit=limit, limit_reset=limit_reset)
        )


async def top_up(rt: Runtime, account_id: str, amount: int, *, key: str | None = None) -> None:
    await add_credits(
        rt, account_id=account_id, amount=amount, idempotency_key=key or new_id("topup"), kind=EntryKind.GRANT
    )


async def balance(rt: Runtime, account_id: str) -> tuple[int, int]:
    async with rt.db.read() as s:
        account = await s.get_one(CreditAccount, account_id)
        return account.balance, account.held


async def key_row(rt: Runtime, key_id: str) -> ApiKey:
    async with rt.db.read() as s:
        return await s.get_one(ApiKey, key_id)


def day(value: datetime) -> date:
    return value.date()
