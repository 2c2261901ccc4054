"""Credit accounts, the append-only ledger, two-phase holds and payments. All amounts: nano-USD ints."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, ForeignKey, Index, String
from sqlalchemy.orm import Mapped, mapped_column

from teamrouter.storage.base import HOT_TABLE, Base, Money


class CreditAccount(Base):
    """One per personal account and per org. balance and held are caches of the ledger and holds."""

    __tablename__ = "credit_account"
    __table_args__ = (
        CheckConstraint("held >= 0", name="held_nonnegative"),
        CheckConstraint("(user_id IS NULL) <> (organization_id IS NULL)", name="one_owner"),
        HOT_TABLE,
    )

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    user_id: Mapped[str | None] = mapped_column(ForeignKey("user_account.id", ondelete="CASCADE"), unique=True)
    organization_id: Mapped[str | None] = mapped_column(ForeignKey("organization.id", ondelete="CASCADE"), unique=True)
    balance: Mapped[int] = mapped_column(Money, default=0)
    held: Mapped[int] = mapped_column(Money, default=0)
    created_at: Mapped[datetime]
    updated_at: Mapped[datetime]


class LedgerEntry(Base):
    """An immutable movement. Mistakes are fixed by a new reversing entry, never an UPDATE."""

    __tablename__ = "ledger_entry"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("credit_account.id"))
    amount: Mapped[int] = mapped_column(Money)  # signed: credits > 0, debits < 0
    kind: Mapped[str] = mapped_column(String(24))  # purchase grant transfer_in transfer_out usage refund correction
    idempotency_key: Mapped[str] = mapped_column(String(200), unique=True)
    # SHA-256 of what the caller asked for, so a replayed key with a different body is refused.
    request_fingerprint: Mapped[str | None] = mapped_column(String(64))
    transaction_id: Mapped[str] = mapped_column(String(40), index=True)  # groups the legs of a transfer
    balance_after: Mapped[int] = mapped_column(Money)
    # Not indexed: only the ledger checker reads these, and it scans.
    hold_id: Mapped[str | None] = mapped_column(String(40))
    generation_id: Mapped[str | None] = mapped_column(String(64))
    reference: Mapped[str | None] = mapped_column(String(200))
    memo: Mapped[str | None] = mapped_column(String(500))
    created_by_user_id: Mapped[str | None] = mapped_column(ForeignKey("user_account.id", ondelete="SET NULL"))
    created_at: Mapped[datetime]


class Hold(Base):
    """A reservation against an account (and optionally a key's limit). Resolves exactly once."""

    __tablename__ = "credit_hold"
    __table_args__ = (CheckConstraint("amount >= 0", name="amount_nonnegative"), HOT_TABLE)

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("credit_account.id"))
    key_id: Mapped[str | None] = mapped_column(ForeignKey("api_key.id"))
    amount: Mapped[int] = mapped_column(Money)
    status: Mapped[str] = mapped_column(String(16), default="open")  # open posted voided expired
    idempotency_key: Mapped[str] = mapped_column(String(200), unique=True)
    generation_id: Mapped[str | None] = mapped_column(String(64))
    posted_amount: Mapped[int | None] = mapped_column(Money)
    created_at: Mapped[datetime]
    expires_at: Mapped[datetime]
    resolved_at: Mapped[datetime | None]


class Payment(Base):
    """A purchase through a payment backend (Stripe checkout, manual invoice, dev)."""

    __tablename__ = "payment"

    id: Mapped[str] = mapped_column(String(40), primary_key=True)
    account_id: Mapped[str] = mapped_column(ForeignKey("credit_account.id"), index=True)
    backend: Mapped[str] = mapped_column(String(16))
    external_id: Mapped[str | None] = mapped_column(String(200), unique=True)
    amount: Mapped[int] = mapped_column(Money)
    status: Mapped[str] = mapped_column(String(16))  # pending completed failed
    reference: Mapped[str | None] = mapped_column(String(200))
    created_by_user_id: Mapped[str | None] = mapped_column(ForeignKey("user_account.id", ondelete="SET NULL"))
    created_at: Mapped[datetime]
    completed_at: Mapped[datetime | None]


Index("ix_ledger_entry_account_created", LedgerEntry.account_id, LedgerEntry.created_at)
# The sweeper's index: open holds by expiry, and only those. Every request inserts a hold here and
# resolves it moments later, which (partial) removes its entry rather than moving it to the
# resolved holds' end of a (status, expires_at) index that grew with every hold ever made; the index
# stays as small as the number of requests in flight. Hot statements find holds by id instead.
Index(
    "ix_credit_hold_open",
    Hold.expires_at,
    sqlite_where=Hold.status == "open",
    postgresql_where=Hold.status == "open",
)
# Deliberately no (account_id, status) index: every request writes this table twice, and only the
# ledger checker (which scans) asks for an account's holds.
