"""Mail a service decides to send: recorded in its transaction, sent once that commits.

A rolled-back change mails nobody; a committed one has its mail on record even if the process dies
before sending it; and a request never waits for the mail server, so whether it mailed does not
show in its timing (teamrouter.background says why that matters).
"""

from __future__ import annotations

from teamrouter.domain.mail import store
from teamrouter.runtime import Runtime
from teamrouter.storage.db import UnitOfWork


def mail_after_commit(uow: UnitOfWork, rt: Runtime, *, to: str, subject: str, body: str, what: str) -> None:
    """Record the mail in `uow`, to go out once it commits; `what` names it in logs (never an address)."""
    store.record(uow, to=to, subject=subject, body=body, what=what, now=rt.clock.now())
    uow.on_commit(rt.mail.wake)
