"""Credit verbs for people and staff: balances, the ledger, purchases, grants and transfers.

Authorization happens where the account is found: the actor's context decides which account is
read or topped up, and the scope (billing:read / billing:manage) is checked in the same step.
Staff verbs accept `actor=None` for the CLI operator (audited with no actor).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import case, func, select
from sqlalchemy.exc import IntegrityError

from teamrouter.domain.accounts.models import User
from teamrouter.domain.actor import Actor
from teamrouter.domain.audit import service as audit
from teamrouter.domain.credits.accounts import context_account_id, org_account, personal_account
from teamrouter.domain.credits.ledger import (
    EntryKind,
    find_entry,
    fingerprint,
    new_transaction_id,
    post_entry,
)
from teamrouter.domain.credits.models import CreditAccount, LedgerEntry, Payment
from teamrouter.domain.credits.payments import backend_for
from teamrouter.domain.credits.payments.base import (
    CheckoutResult,
    CheckoutTarget,
    PaymentStatus,
    complete_payment,
    payment_entry_key,
)
from teamrouter.domain.orgs.models import Membership, Organization
from teamrouter.domain.roles import Scope
from teamrouter.errors import Conflict, Forbidden, NotFound, bad_field
from teamrouter.ids import new_id
from teamrouter.money import MAX_AMOUNT_UNITS, MAX_AMOUNT_USD, to_usd_str
from teamrouter.runtime import Runtime

MAX_PAGE = 200


@dataclass(frozen=True, slots=True)
class CreditTotals:
    total_credits: int  # everything that is not usage, net (so credits - usage = balance)
    total_usage: int  # usage debits, as a positive number
    balance: int
    held: int


@dataclass(frozen=True, slots=True)
class TransferResult:
    transaction_id: str
    amount: int
    personal_balance: int
    organization_balance: int
    created: bool


@dataclass(frozen=True, slots=True)
class GrantResult:
    payment_id: str
    entry_id: str
    amount: int
    balance_after: int
    created: bool


def _check_amount(amount: int) -> None:
    # Here, not only in the HTTP schema, so the CLI and any other caller get the same bounds; past
    # the cap a balance could also overflow its 64-bit column.
    if amount <= 0:
        raise bad_field("amount", "must be greater than zero")
    if amount > MAX_AMOUNT_UNITS:
        raise bad_field("amount", f"must be at most {MAX_AMOUNT_USD} USD per operation")


def _require_staff(actor: Actor | None) -> None:
    if actor is not None and not actor.is_staff:
        raise Forbidden("Only deployment staff may do this", code="staff_only")


async def get_credits(rt: Runtime, *, actor: Actor) -> CreditTotals:
    """OpenRouter's `GET /credits` for the actor's context."""
    actor.require(Scope.BILLING_READ, "Only admins see the organization's credits")
    async with rt.db.read() as session:
        account_id = await context_account_id(session, actor)
        if account_id is None:
            return CreditTotals(0, 0, 0, 0)
        account = await session.get_one(CreditAccount, account_id)
        is_usage = LedgerEntry.kind == EntryKind.USAGE.value
        row = (
            await session.execute(
                select(
                    func.coalesce(func.sum(case((is_usage, 0), else_=LedgerEntry.amount)), 0),
                    func.coalesce(func.sum(case((is_usage, -LedgerEntry.amount), else_=0)), 0),
                ).where(LedgerEntry.account_id == account_id)
            )
        ).one()
    return CreditTotals(int(row[0]), int(row[1]), account.balance, account.held)


async def list_ledger(
    rt: Runtime, *, actor: Actor, limit: int = 50, cursor: str | None = None
) -> tuple[list[LedgerEntry], str | None]:
    """Entries of the context's account, newest first. The cursor is the last id seen (ids sort by time)."""
    actor.require(Scope.BILLING_READ, "Only admins see the organization's ledger")
    limit = max(1, min(limit, MAX_PAGE))
    async with rt.db.read() as session:
        account_id = await context_account_id(session, actor)
        if account_id is None:
            return [], None
        query = select(LedgerEntry).where(LedgerEntry.account_id == account_id)
        if cursor:
            query = query.where(LedgerEntry.id < cursor)
        rows = list(await session.scalars(query.order_by(LedgerEntry.id.desc()).limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (rows[-1].id if more and rows else None)


async def list_payments(
    rt: Runtime, *, actor: Actor, limit: int = 50, cursor: str | None = None
) -> tuple[list[Payment], str | None]:
    """Purchases and recorded invoices of the context's account (admins / the person), newest first."""
    actor.require(Scope.BILLING_READ, "Only admins see the organization's payments")
    limit = max(1, min(limit, MAX_PAGE))
    async with rt.db.read() as session:
        account_id = await context_account_id(session, actor)
        if account_id is None:
            return [], None
        query = select(Payment).where(Payment.account_id == account_id)
        if cursor:
            query = query.where(Payment.id < cursor)
        rows = list(await session.scalars(query.order_by(Payment.id.desc()).limit(limit + 1)))
    more = len(rows) > limit
    rows = rows[:limit]
    return rows, (rows[-1].id if more and rows else None)


async def start_checkout(rt: Runtime, *, actor: Actor, amount: int) -> CheckoutResult:
    """Buy credits for the context: the person themself, or an org admin for the org's pool."""
    actor.require(Scope.BILLING_MANAGE, "Only admins buy credits for the organization")
    now = rt.clock.now()
    if actor.organization_id is None:
        async with rt.db.read() as session:
            account_id = (await personal_account(session, actor.user_id)).id
    else:
        async with rt.db.uow() as uow:
            account_id = (await org_account(uow, actor.organization_id, now)).id
    target = CheckoutTarget(account_id=account_id, organization_id=actor.organization_id, actor=actor)
    return await backend_for(rt.settings).checkout(rt, target=target, amount=amount)


async def grant_credits(
    rt: Runtime, *, actor: Actor | None, organization_id: str, amount: int, reference: str
) -> GrantResult:
    """Staff record an invoice paid off-line. Idempotent on `reference`: the same reference with the
    same org and amount returns the original grant; with anything different it is a 409."""
    _require_staff(actor)
    reference = reference.strip()
    if not reference:
        raise bad_field("reference", "must not be empty")
    _check_amount(amount)
    try:
        return await _grant_once(rt, actor=actor, organization_id=organization_id, amount=amount, reference=reference)
    except IntegrityError:
        # A concurrent grant with the same reference committed first (PostgreSQL): now a replay.
        return await _grant_once(rt, actor=actor, organization_id=organization_id, amount=amount, reference=reference)


async def _grant_once(
    rt: Runtime, *, actor: Actor | None, organization_id: str, amount: int, reference: str
) -> GrantResult:
    now = rt.clock.now()
    external_id = f"manual:{reference}"
    key = f"grant:{reference}"
    request = fingerprint(organization_id, amount, EntryKind.GRANT.value)
    async with rt.db.uow() as uow:
        # Replays are answered before anything is written (and before the org lookup can differ).
        previous = await find_entry(uow, key)
        if previous is not None:
            if previous.request_fingerprint != request:
                raise Conflict("This reference was already recorded for a different grant", code="reference_reused")
            payment_id = await uow.session.scalar(select(Payment.id).where(Payment.external_id == external_id))
            return GrantResult(payment_id or "", previous.id, previous.amount, previous.balance_after, False)
        if await uow.session.get(Organization, organization_id) is None:
            raise NotFound("Organization not found", code="organization_not_found")
        account = await org_account(uow, organization_id, now)
        payment = Payment(
            id=new_id("pay"),
            account_id=account.id,
            backend="manual",
            external_id=external_id,
            amount=amount,
            status=PaymentStatus.PENDING,
            reference=reference,
            created_by_user_id=actor.user_id if actor else None,
            created_at=now,
        )
        uow.session.add(payment)
        await uow.session.flush()
        # complete_payment keys the entry `payment:<id>`; the grant key below is what makes the
        # reference idempotent, so post the grant entry ourselves under it.
        posted = await post_entry(
            uow,
            account_id=account.id,
            amount=amount,
            kind=EntryKind.GRANT,
            idempotency_key=key,
            request_fingerprint=request,
            now=now,
            reference=reference,
            memo="invoice paid off-line",
            created_by_user_id=actor.user_id if actor else None,
        )
        payment.status = PaymentStatus.COMPLETED
        payment.completed_at = now
        audit.record(
            uow,
            actor=actor,
            clock=rt.clock,
            action="credits.grant",
            target_type="credit_account",
            target_id=account.id,
            organization_id=organization_id,
            after={
                "amount": to_usd_str(amount),
                "reference": reference,
                "payment_id": payment.id,
                "balance_after": to_usd_str(posted.entry.balance_after),
            },
        )
    return GrantResult(payment.id, posted.entry.id, amount, posted.entry.balance_after, True)


async def transfer_personal_to_org(
    rt: Runtime,
    *,
    actor: Actor | None,
    user_id: str,
    organization_id: str,
    amount: int,
    note: str = "",
    idempotency_key: str | None = None,
) -> TransferResult:
    """Move credits from a member's personal balance to the org's pool: one transaction, two entries.

    Refused with 402 when the personal available balance (balance - held) does not cover it, with a
    400 naming `organization_id` when the person is not a member. Audited.
    """
    _require_staff(actor)
    _check_amount(amount)
    now = rt.clock.now()
    request = fingerprint(user_id, organization_id, amount)
    base_key = f"transfer:{idempotency_key}" if idempotency_key else None
    async with rt.db.uow() as uow:
        if base_key is not None:
            previous = await find_entry(uow, f"{base_key}:out")
            if previous is not None:
                if previous.request_fingerprint != request:
                    raise Conflict(
                        "This idempotency key was already used for a different transfer",
                        code="idempotency_key_reused",
                    )
                return await _replayed_transfer(uow.session, previous, amount)
        if await uow.session.get(User, user_id) is None:
            raise NotFound("User not found", code="user_not_found")
        if await uow.session.get(Organization, organization_id) is None:
            raise NotFound("Organization not found", code="organization_not_found")
        member = await uow.session.scalar(
            select(Membership.id).where(Membership.organization_id == organization_id, Membership.user_id == user_id)
        )
        if member is None:
            raise bad_field("organization_id", "the person is not a member of this organization")
        personal = await personal_account(uow.session, user_id)
        pool = await org_account(uow, organization_id, now)
        txn = new_transaction_id()
        key = base_key or f"transfer:{txn}"
        legs = [
            (personal.id, -amount, EntryKind.TRANSFER_OUT, f"{key}:out"),
            (pool.id, amount, EntryKind.TRANSFER_IN, f"{key}:in"),
        ]
        results: dict[str, int] = {}
        # Lock the two accounts in id order, whatever the direction, so transfers cannot deadlock.
        for account_id, delta, kind, entry_key in sorted(legs, key=lambda leg: leg[0]):
            posted = await post_entry(
                uow,
                account_id=account_id,
                amount=delta,
                kind=kind,
                idempotency_key=entry_key,
                request_fingerprint=request,
                now=now,
                transaction_id=txn,
                memo=note[:500] or None,
                created_by_user_id=actor.user_id if actor else None,
                require_available=delta < 0,
            )
            results[account_id] = posted.entry.balance_after
        audit.record(
            uow,
            actor=actor,
            clock=rt.clock,
            action="credits.transfer",
            target_type="credit_account",
            target_id=pool.id,
            organization_id=organization_id,
            after={
                "from_user_id": user_id,
                "amount": to_usd_str(amount),
                "transaction_id": txn,
                "note": note[:500],
            },
        )
    return TransferResult(txn, amount, results[personal.id], results[pool.id], True)


async def _replayed_transfer(session: Any, out_leg: LedgerEntry, amount: int) -> TransferResult:
    in_leg = await session.scalar(
        select(LedgerEntry).where(LedgerEntry.transaction_id == out_leg.transaction_id, LedgerEntry.id != out_leg.id)
    )
    return TransferResult(
        out_leg.transaction_id,
        amount,
        out_leg.balance_after,
        in_leg.balance_after if in_leg is not None else 0,
        False,
    )


async def add_credits(
    rt: Runtime,
    *,
    account_id: str,
    amount: int,
    idempotency_key: str,
    actor: Actor | None = None,
    kind: EntryKind = EntryKind.GRANT,
    memo: str | None = None,
) -> LedgerEntry:
    """Credit an account directly (tests, seeding, corrections by staff tooling). Idempotent on key."""
    _require_staff(actor)
    now = rt.clock.now()
    async with rt.db.uow() as uow:
        posted = await post_entry(
            uow,
            account_id=account_id,
            amount=amount,
            kind=kind,
            idempotency_key=idempotency_key,
            now=now,
            memo=memo,
            created_by_user_id=actor.user_id if actor else None,
        )
        if posted.created:
            organization_id = await uow.session.scalar(
                select(CreditAccount.organization_id).where(CreditAccount.id == account_id)
            )
            audit.record(
                uow,
                actor=actor,
                clock=rt.clock,
                action=f"credits.{EntryKind(kind).value}",
                target_type="credit_account",
                target_id=account_id,
                organization_id=organization_id,
                after={"amount": to_usd_str(amount), "balance_after": to_usd_str(posted.entry.balance_after)},
            )
    return posted.entry


__all__ = [
    "CreditTotals",
    "GrantResult",
    "TransferResult",
    "add_credits",
    "complete_payment",
    "get_credits",
    "grant_credits",
    "list_ledger",
    "list_payments",
    "payment_entry_key",
    "start_checkout",
    "transfer_personal_to_org",
]
