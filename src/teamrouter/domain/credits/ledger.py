"""The append-only ledger: one immutable entry per movement, and the cached balance moved with it.

`post_entry` runs inside the caller's unit of work. Its SQL semantics, which the gateway's hot path
re-implements with raw statements on the same tables (stdlib sqlite3 / asyncpg), are exactly:

    -- 1. replay check (no write)
    SELECT * FROM ledger_entry WHERE idempotency_key = :key
        found, same request_fingerprint      -> return that entry, change nothing (no double credit)
        found, different request_fingerprint -> 409 idempotency_key_reused, change nothing
    -- 2. move the cache; the row lock this takes serialises every post to the account on PostgreSQL
    SAVEPOINT post_entry
    UPDATE credit_account SET balance = balance + :amount, updated_at = :now
        WHERE id = :account_id
        [AND balance - held >= -:amount]      -- only with require_available (debits that must be covered)
        RETURNING balance                     -- this is balance_after (SQLite >= 3.35, PostgreSQL)
        no row -> 404 (unknown account) or, when guarded, 402 and nothing changes
    -- 3. the entry itself
    INSERT INTO ledger_entry (id, account_id, amount, kind, idempotency_key, request_fingerprint,
        transaction_id, balance_after, hold_id, generation_id, reference, memo, created_by_user_id,
        created_at) VALUES (...)
        unique violation on idempotency_key (a concurrent twin committed between 1 and 3; possible on
        PostgreSQL READ COMMITTED, never on SQLite whose writes begin with BEGIN IMMEDIATE)
        -> ROLLBACK TO SAVEPOINT post_entry, then step 1 again
    RELEASE SAVEPOINT post_entry

Amounts are signed nano-USD integers: credits > 0, debits < 0. Entries are never updated or deleted;
a mistake is fixed by a new `correction` entry.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError

import teamrouter.storage.models  # noqa: F401  (every table mapped, so foreign keys resolve in any process)
from teamrouter.domain.credits.models import CreditAccount, LedgerEntry
from teamrouter.errors import Conflict, NotFound, PaymentRequired
from teamrouter.ids import new_id
from teamrouter.money import to_usd, to_usd_text
from teamrouter.storage.db import UnitOfWork


class EntryKind(StrEnum):
    PURCHASE = "purchase"
    GRANT = "grant"
    TRANSFER_IN = "transfer_in"
    TRANSFER_OUT = "transfer_out"
    USAGE = "usage"
    REFUND = "refund"
    CORRECTION = "correction"


@dataclass(frozen=True, slots=True)
class Posted:
    entry: LedgerEntry
    created: bool  # False: the idempotency key had already been posted with the same request


def fingerprint(*parts: object) -> str:
    """SHA-256 of what a caller asked for, so a replayed key with a different request is refused."""
    text = "\x1f".join("" if part is None else str(part) for part in parts)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def new_transaction_id() -> str:
    return new_id("txn")


async def find_entry(uow: UnitOfWork, idempotency_key: str) -> LedgerEntry | None:
    found: LedgerEntry | None = await uow.session.scalar(
        select(LedgerEntry).where(LedgerEntry.idempotency_key == idempotency_key)
    )
    return found


def _replayed(entry: LedgerEntry, request_fingerprint: str) -> Posted:
    if entry.request_fingerprint != request_fingerprint:
        raise Conflict(
            "This idempotency key was already used for a different request",
            code="idempotency_key_reused",
        )
    return Posted(entry=entry, created=False)


async def post_entry(
    uow: UnitOfWork,
    *,
    account_id: str,
    amount: int,
    kind: EntryKind | str,
    idempotency_key: str,
    now: datetime,
    request_fingerprint: str | None = None,
    transaction_id: str | None = None,
    hold_id: str | None = None,
    generation_id: str | None = None,
    reference: str | None = None,
    memo: str | None = None,
    created_by_user_id: str | None = None,
    require_available: bool = False,
) -> Posted:
    """Append one entry and move the account's cached balance, atomically (see the module docstring).

    `require_available` makes a debit conditional on `balance - held` covering it (transfers); usage
    settlements are not conditional: the hold already admitted them, and an overrun is still posted.
    """
    if not isinstance(amount, int) or isinstance(amount, bool):
        raise TypeError("ledger amounts are integers (nano-USD)")
    kind = EntryKind(kind)
    request_fingerprint = request_fingerprint or fingerprint(account_id, amount, kind.value)
    existing = await find_entry(uow, idempotency_key)
    if existing is not None:
        return _replayed(existing, request_fingerprint)
    try:
        async with uow.session.begin_nested():
            statement = update(CreditAccount).where(CreditAccount.id == account_id)
            if require_available:
                statement = statement.where(CreditAccount.balance - CreditAccount.held >= -amount)
            balance_after = (
                await uow.session.execute(
                    statement.values(balance=CreditAccount.balance + amount, updated_at=now)
                    .returning(CreditAccount.balance)
                    .execution_options(synchronize_session=False)
                )
            ).scalar_one_or_none()
            if balance_after is None:
                raise await _refusal(uow, account_id, amount, require_available)
            entry = LedgerEntry(
                id=new_id("le"),
                account_id=account_id,
                amount=amount,
                kind=kind.value,
                idempotency_key=idempotency_key,
                request_fingerprint=request_fingerprint,
                transaction_id=transaction_id or new_transaction_id(),
                balance_after=int(balance_after),
                hold_id=hold_id,
                generation_id=generation_id,
                reference=reference,
                memo=memo,
                created_by_user_id=created_by_user_id,
                created_at=now,
            )
            uow.session.add(entry)
            await uow.session.flush()
    except IntegrityError:
        # A concurrent twin won the unique key; the savepoint undid our balance move.
        existing = await find_entry(uow, idempotency_key)
        if existing is None:
            raise
        return _replayed(existing, request_fingerprint)
    return Posted(entry=entry, created=True)


async def _refusal(uow: UnitOfWork, account_id: str, amount: int, guarded: bool) -> Exception:
    row = (
        await uow.session.execute(
            select(CreditAccount.balance, CreditAccount.held).where(CreditAccount.id == account_id)
        )
    ).first()
    if row is None or not guarded:
        return NotFound("Credit account not found", code="account_not_found")
    available = int(row.balance) - int(row.held)
    return PaymentRequired(
        f"Insufficient credits: {to_usd_text(max(available, 0))} available, {to_usd_text(-amount)} needed",
        available=to_usd(available),
        required=to_usd(-amount),
    )
