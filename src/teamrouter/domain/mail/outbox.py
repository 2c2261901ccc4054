"""Mail a service decides to send: recorded in its transaction, sent once that commits.

A rolled-back change mails nobody; a committed one has its mail on record even if the process dies
before sending it; and a request never waits for the mail server, so whether it mailed does not
show in its timing (teamrouter.background says why that matters).
"""

from __future__ import annotations

from teamrouter.domain.mail import store
from teamrouter.runtime import Runtime
from teamrouter.storage.db import UnitOfWork


def mail_after_commit(
    uow: UnitOfWork, rt: Runtime, *, to: str, subject: str, body: str, what: str, topic: str | None = None
) -> None:
    """Record the mail in `uow`, to go out once it commits; `what` names it in logs (never an
    address); `topic` says what it is about, for `cancel_mail`."""
    store.record(uow, to=to, subject=subject, body=body, what=what, now=rt.clock.now(), topic=topic)
    uow.on_commit(rt.mail.wake)


async def cancel_mail(uow: UnitOfWork, rt: Runtime, *, topic: str) -> None:
    """In `uow`'s transaction: the pending mails about `topic` will not go out (what they were
    about has ended: a revoked or replaced invitation's). Not for verification mail: cancelling a
    superseded one here would add a write to sign-up paths that must take alike (the security
    notes); the dispatcher checks its link just before sending instead (accounts.verification_mail)."""
    await store.cancel(uow, topic=topic, now=rt.clock.now())
