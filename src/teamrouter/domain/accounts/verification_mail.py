"""Whether a verification mail's link still works when its turn to be sent comes.

A verification mail is recorded with its sign-up and goes out after the commit, or hours later when
the mail server is down. Meanwhile its link may have ended: a new sign-up for the same unconfirmed
address takes the account over and ends every earlier link (service._restart_pending_sign_up), or
the link expired. Such a mail is dropped when its turn comes, not when its link ends: cancelling it
then would add a write to the sign-up that takes over, which must cost what any sign-up costs (else
its timing tells whether the address has an account: the README's security notes). So the mail's
topic names its token by id, and the mail dispatcher asks `link_is_live` just before sending it:
one read by primary key, for verification mail only.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import select

from teamrouter.domain.accounts.models import EmailToken
from teamrouter.domain.mail.models import topic as mail_topic
from teamrouter.storage.db import Database

TOPIC_KIND = "verification"


def topic(token_id: str) -> str:
    """The outbox topic of the mail carrying the link of token `token_id` (an id, not the token)."""
    return mail_topic(TOPIC_KIND, token_id)


async def link_is_live(db: Database, token_id: str, *, now: datetime) -> bool:
    """The token is there, unused and unexpired: the link would still verify the address."""
    async with db.read() as session:
        found = await session.scalar(
            select(EmailToken.id).where(
                EmailToken.id == token_id, EmailToken.used_at.is_(None), EmailToken.expires_at > now
            )
        )
    return found is not None
