"""The outbox's SQL: record a mail, claim a due one, record how its attempt went.

A claim is one guarded UPDATE: it takes the oldest due row and moves its `next_attempt_at` a lease
ahead, so no other sender finds it due until then. PostgreSQL picks the row with
`FOR UPDATE SKIP LOCKED` (concurrent senders take different rows instead of queueing on one) and
re-checks the WHERE after any wait; SQLite writes start with `BEGIN IMMEDIATE`, so claims run one
at a time. Every later update names the attempt it belongs to: a sender whose lease ran out (it
stalled, and another took the row over) changes nothing.
"""

from __future__ import annotations

from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import ColumnElement, delete, func, select, update

from teamrouter.domain.mail.models import MailState, OutgoingMail
from teamrouter.storage.db import Database, UnitOfWork


@dataclass(frozen=True, slots=True)
class Claimed:
    id: int
    to: str
    subject: str
    body: str
    what: str
    topic: str | None
    attempts: int  # including this one


def record(
    uow: UnitOfWork, *, to: str, subject: str, body: str, what: str, now: datetime, topic: str | None = None
) -> None:
    uow.session.add(
        OutgoingMail(
            to_address=to,
            subject=subject,
            body=body,
            what=what,
            topic=topic,
            state=MailState.PENDING,
            attempts=0,
            next_attempt_at=now,
            created_at=now,
        )
    )


async def claim(db: Database, *, now: datetime, lease: timedelta, besides: Collection[int] = ()) -> Claimed | None:
    """Take the oldest due mail for `lease`, counting the attempt; None when nothing is due.

    `besides`: rows the caller is sending already, which it must not take again whatever the clock
    says (a lease is measured on the runtime's clock, which tests move ahead by minutes)."""
    due: tuple[ColumnElement[bool], ...] = (
        OutgoingMail.state == MailState.PENDING,
        OutgoingMail.next_attempt_at <= now,
    )
    if besides:
        due = (*due, OutgoingMail.id.not_in(list(besides)))
    oldest = (
        select(OutgoingMail.id)
        .where(*due)
        .order_by(OutgoingMail.next_attempt_at, OutgoingMail.id)
        .limit(1)
        .with_for_update(skip_locked=True)  # PostgreSQL only; SQLite's writes are serial anyway
        .scalar_subquery()
    )
    async with db.uow() as uow:
        row = (
            await uow.session.execute(
                update(OutgoingMail)
                .where(OutgoingMail.id == oldest, *due)
                .values(attempts=OutgoingMail.attempts + 1, next_attempt_at=now + lease)
                .returning(
                    OutgoingMail.id,
                    OutgoingMail.to_address,
                    OutgoingMail.subject,
                    OutgoingMail.body,
                    OutgoingMail.what,
                    OutgoingMail.topic,
                    OutgoingMail.attempts,
                )
                .execution_options(synchronize_session=False)
            )
        ).first()
    if row is None:
        return None
    return Claimed(id=row[0], to=row[1], subject=row[2], body=row[3], what=row[4], topic=row[5], attempts=row[6])


async def cancel(uow: UnitOfWork, *, topic: str, now: datetime) -> int:
    """Cancel the still pending mails about `topic`, body blanked, in `uow`'s transaction. One a
    sender is delivering at this moment goes out all the same (its mark then finds it cancelled)."""
    done = await uow.session.execute(
        update(OutgoingMail)
        .where(OutgoingMail.topic == topic, OutgoingMail.state == MailState.PENDING)
        .values(state=MailState.CANCELLED, body="", next_attempt_at=now)
        .execution_options(synchronize_session=False)
    )
    return int(done.rowcount or 0)  # type: ignore[attr-defined]


def _ours(mail: Claimed) -> tuple[ColumnElement[bool], ...]:
    return (OutgoingMail.id == mail.id, OutgoingMail.attempts == mail.attempts, OutgoingMail.state == MailState.PENDING)


async def mark_sent(db: Database, mail: Claimed, *, now: datetime) -> bool:
    """The mail went out: keep the row (a delivery record) without its body."""
    async with db.uow() as uow:
        done = await uow.session.execute(
            update(OutgoingMail)
            .where(*_ours(mail))
            .values(state=MailState.SENT, sent_at=now, body="", last_error=None)
            .execution_options(synchronize_session=False)
        )
    return bool(done.rowcount == 1)  # type: ignore[attr-defined]


async def mark_cancelled(db: Database, mail: Claimed, *, now: datetime) -> bool:
    """The mail lost its point before it went out (its link ended): never sent, body blanked."""
    async with db.uow() as uow:
        done = await uow.session.execute(
            update(OutgoingMail)
            .where(*_ours(mail))
            .values(state=MailState.CANCELLED, body="", next_attempt_at=now)
            .execution_options(synchronize_session=False)
        )
    return bool(done.rowcount == 1)  # type: ignore[attr-defined]


async def mark_failed(db: Database, mail: Claimed, *, error: str, retry_at: datetime | None, now: datetime) -> bool:
    """The attempt failed: due again at `retry_at`, or (None) given up for good, body blanked."""
    values: dict[str, object] = {"last_error": error[:200]}
    if retry_at is None:
        values.update(state=MailState.FAILED, body="", next_attempt_at=now)
    else:
        values.update(next_attempt_at=retry_at)
    async with db.uow() as uow:
        done = await uow.session.execute(
            update(OutgoingMail).where(*_ours(mail)).values(**values).execution_options(synchronize_session=False)
        )
    return bool(done.rowcount == 1)  # type: ignore[attr-defined]


async def next_due(db: Database) -> datetime | None:
    """When the earliest pending mail falls due (a claimed one: when its lease runs out)."""
    async with db.read() as session:
        return await session.scalar(
            select(func.min(OutgoingMail.next_attempt_at)).where(OutgoingMail.state == MailState.PENDING)
        )


async def purge(db: Database, *, before: datetime) -> int:
    """Forget sent and failed mails created before `before` (their rows still name an address)."""
    async with db.uow() as uow:
        gone = await uow.session.execute(
            delete(OutgoingMail)
            .where(OutgoingMail.state != MailState.PENDING, OutgoingMail.created_at < before)
            .execution_options(synchronize_session=False)
        )
    return int(gone.rowcount or 0)  # type: ignore[attr-defined]
