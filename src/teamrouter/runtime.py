"""The composition root: everything a request needs, built once per process and passed down."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from teamrouter.background import Background
from teamrouter.clock import Clock, SystemClock
from teamrouter.config import Settings, resolve_secret
from teamrouter.domain.accounts import verification_mail
from teamrouter.domain.accounts.passwords import Passwords
from teamrouter.domain.mail.dispatcher import MailDispatcher
from teamrouter.mailer import Mailer, OutboxMailer, SmtpMailer
from teamrouter.storage.db import Database


@dataclass
class Runtime:
    settings: Settings
    db: Database
    clock: Clock
    mailer: Mailer
    passwords: Passwords
    secret: bytes
    # What requests hand off to run after their answer (mail above all: see background).
    background: Background = field(default_factory=Background)
    # Filled by the parts that need them (gateway, caches) at start-up.
    extras: dict[str, Any] = field(default_factory=dict)
    # Sends the mail outbox (its senders run in `background`); reads this runtime's parts at each
    # use, so a mailer or clock swapped in later is the one it uses.
    mail: MailDispatcher = field(init=False)

    def __post_init__(self) -> None:
        # A verification mail whose link a later sign-up ended is dropped when its turn comes.
        self.mail = MailDispatcher(self, link_checks={verification_mail.TOPIC_KIND: verification_mail.link_is_live})

    async def close(self) -> None:
        await self.mail.stop()  # claims nothing more; what it is sending drains with the queue
        await self.background.close()  # before the database, which queued work may still need
        await self.db.dispose()


def build_runtime(
    settings: Settings,
    *,
    clock: Clock | None = None,
    mailer: Mailer | None = None,
    passwords: Passwords | None = None,
) -> Runtime:
    settings = resolve_secret(settings)
    assert settings.secret_key is not None  # resolve_secret guarantees it
    if mailer is None:
        if settings.smtp_url:
            mailer = SmtpMailer(settings.smtp_url, settings.email_from)
        else:
            mailer = OutboxMailer(settings.outbox_dir, settings.email_from)
    return Runtime(
        settings=settings,
        db=Database(settings.effective_database_url),
        clock=clock or SystemClock(),
        mailer=mailer,
        passwords=passwords or Passwords(),
        secret=settings.secret_key.get_secret_value().encode("utf-8"),
    )
