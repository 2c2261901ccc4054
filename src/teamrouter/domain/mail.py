"""Mail a service decides to send: once its transaction commits, and after the answer.

A rolled-back change mails nobody, and a request never waits for the mail server, so whether it
mailed does not show in its timing (teamrouter.background says why that matters).
"""

from __future__ import annotations

import functools

from teamrouter.runtime import Runtime
from teamrouter.storage.db import UnitOfWork


def mail_after_commit(uow: UnitOfWork, rt: Runtime, *, to: str, subject: str, body: str, what: str) -> None:
    """Queue the mail for when `uow` commits; `what` names it in the log (never an address)."""
    rt.background.after_commit(uow, functools.partial(rt.mailer.send, to=to, subject=subject, body=body), what=what)
