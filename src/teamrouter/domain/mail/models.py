"""The outbox table: one row per mail a committed change decided to send."""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum

from sqlalchemy import BigInteger, Index, Integer, String, Text
from sqlalchemy.orm import Mapped, mapped_column

from teamrouter.storage.base import Base

BIG_SERIAL = BigInteger().with_variant(Integer(), "sqlite")  # SQLite auto-numbers only INTEGER PRIMARY KEY


def topic(kind: str, subject: str) -> str:
    """An outbox topic (`OutgoingMail.topic`): what a mail is about, "<kind>:<subject id>"."""
    return f"{kind}:{subject}"


def topic_parts(value: str | None) -> tuple[str, str]:
    """A topic's kind and subject id ("" and "" for a mail without one)."""
    kind, _, subject = (value or "").partition(":")
    return kind, subject


class MailState(StrEnum):
    PENDING = "pending"  # waiting for its next attempt, or claimed by a sender until next_attempt_at
    SENT = "sent"
    FAILED = "failed"  # gave up after the last attempt
    CANCELLED = "cancelled"  # what it was about ended before it went out (a revoked invitation, a dead link)


class OutgoingMail(Base):
    """A mail to send. The body (which may hold a one-time link) is blanked once sent or given up.

    `next_attempt_at` is also the claim: a sender that takes a row moves it a lease ahead, so a
    sender that dies leaves a row that falls due again when the lease runs out. `attempts` counts
    claims and tells a sender whether the row is still the one it claimed.
    """

    __tablename__ = "outgoing_mail"

    # An integer sequence, not a random id: mails due at the same moment go out in the order they
    # were recorded (a replaced invitation's mail before its replacement's).
    id: Mapped[int] = mapped_column(BIG_SERIAL, primary_key=True, autoincrement=True)
    to_address: Mapped[str] = mapped_column(String(320))
    subject: Mapped[str] = mapped_column(Text)
    body: Mapped[str] = mapped_column(Text)
    what: Mapped[str] = mapped_column(String(64))  # names the mail in logs: never an address or a token
    # What the mail is about, "<kind>:<id>", so that it can be dropped once pointless while still
    # pending: "invitation:<id>" is cancelled by the change that ends the invitation (revoked or
    # replaced); "verification:<email token id>" is checked by the dispatcher just before sending,
    # since sign-up may not pay for a cancelling write (accounts.verification_mail). None: the rest.
    topic: Mapped[str | None] = mapped_column(String(100))
    state: Mapped[str] = mapped_column(String(16), default=MailState.PENDING)
    attempts: Mapped[int] = mapped_column(default=0)
    next_attempt_at: Mapped[datetime]
    last_error: Mapped[str | None] = mapped_column(String(200))  # the error's kind and SMTP code only
    created_at: Mapped[datetime]
    sent_at: Mapped[datetime | None]


# What a sender looks for: pending rows by due time.
Index("ix_outgoing_mail_due", OutgoingMail.state, OutgoingMail.next_attempt_at)
