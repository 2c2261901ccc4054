"""A per-address limit on the mails anyone can trigger without signing in.

Sign-up and resend-verification mail an address on the word of an anonymous caller; without a limit
anyone could flood a mailbox through the deployment's mail server. Each address gets at most one
such mail per `MIN_INTERVAL` and `PER_WINDOW` per `WINDOW` (a fixed window opened by the first mail).
One exception: a sign-up that takes over an unconfirmed account ends its links, so its new link goes
out at once (a double click must not leave a dead link only); such a mail pushes the next one's
earliest time a further interval out, so the exception serves once per interval, not in bursts.
The count lives in the database, so it holds across processes and restarts, and is taken with one
guarded UPDATE, so concurrent requests cannot both pass. Callers stay silent when refused: the
answer must not differ from a mail sent (no account oracle).

Rows are keyed by an HMAC of the address under the deployment's secret (not a bare hash a dictionary
reverses) and are written only for addresses that have an account, so probing stores nothing.
"""

from __future__ import annotations

import hashlib
import hmac
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import case, literal, or_, update

from teamrouter.domain.accounts.models import MailThrottle
from teamrouter.storage.base import UTCDateTime
from teamrouter.storage.db import UnitOfWork
from teamrouter.storage.upsert import insert_for

MIN_INTERVAL = timedelta(minutes=1)
WINDOW = timedelta(hours=1)
PER_WINDOW = 5


def address_hash(secret: bytes, email: str) -> str:
    return hmac.new(secret, b"mail-throttle:" + email.encode(), hashlib.sha256).hexdigest()


async def take_mail_slot(uow: UnitOfWork, *, secret: bytes, email: str, now: datetime, replacing: bool = False) -> bool:
    """Count one mail to `email` (already normalized) if the limit allows it; False if it does not.

    `replacing`: the mail replaces links the same request has just ended. It may go before the
    interval is up, once: it sets `last_sent_at` an interval ahead, which the next mail (replacing
    or not) must wait out. The hourly cap bounds it like any other."""
    key = address_hash(secret, email)
    interval = timedelta(0) if replacing else MIN_INTERVAL
    table: Any = MailThrottle.__table__
    await uow.session.execute(
        insert_for(uow.dialect, table)
        .values(address_hash=key, window_started_at=now, sent_in_window=0, last_sent_at=None)
        .on_conflict_do_nothing(index_elements=[table.c.address_hash])
    )
    window_over = MailThrottle.window_started_at <= now - WINDOW
    at_now = literal(now, UTCDateTime())
    taken = await uow.session.execute(
        update(MailThrottle)
        .where(
            MailThrottle.address_hash == key,
            or_(MailThrottle.last_sent_at.is_(None), MailThrottle.last_sent_at <= now - interval),
            or_(window_over, MailThrottle.sent_in_window < PER_WINDOW),
        )
        .values(
            sent_in_window=case((window_over, 1), else_=MailThrottle.sent_in_window + 1),
            window_started_at=case((window_over, at_now), else_=MailThrottle.window_started_at),
            last_sent_at=now + (MIN_INTERVAL if replacing else timedelta(0)),
        )
        .execution_options(synchronize_session=False)
    )
    return bool(taken.rowcount == 1)  # type: ignore[attr-defined]
