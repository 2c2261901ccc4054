"""Send what the outbox holds: soon after a commit, again after a failure, after a crash.

A commit that recorded mail wakes the dispatcher, which claims due rows one at a time (several
processes and machines can share one outbox: teamrouter.domain.mail.store) and sends each from the
runtime's background queue, at most `CONCURRENCY` at once, so the mail goes out milliseconds after
the answer without the request waiting for it (teamrouter.background says why that matters). A
failed attempt is due again after `mail_retry_seconds`, twice as long after each further failure
(at most `MAX_RETRY_DELAY` apart), and the mail is given up after `mail_max_attempts` attempts,
or at once when the mail server refuses it for good (a 5xx reply: `mailer.is_permanent_refusal`):
logged, and kept (without its body) as a `failed` row. A mail whose topic has a link check (its
link may have ended since it was recorded: a superseded verification link) is checked just before
it is sent, and cancelled if its link no longer works. A ticker sleeps until the next row falls
due (a retry, or a claim whose process died and whose lease runs out) and wakes the senders then;
started with the app, it also finds what a process killed earlier left behind.

Delivery is at least once: a process that dies after the mail server took a mail but before the
row says so sends it again when the lease runs out, a lease that is far longer than a send.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Protocol

from teamrouter.background import Background
from teamrouter.clock import Clock
from teamrouter.config import Settings
from teamrouter.domain.mail import store
from teamrouter.domain.mail.models import topic_parts
from teamrouter.domain.mail.store import Claimed
from teamrouter.mailer import SMTP_TIMEOUT_SECONDS, Mailer, describe_send_failure, is_permanent_refusal
from teamrouter.storage.db import Database, describe_failure

log = logging.getLogger(__name__)

CONCURRENCY = 4  # SMTP conversations per process at once
# One attempt's bound: the SMTP client's timeout applies to each step of the conversation.
SEND_SECONDS = 3 * SMTP_TIMEOUT_SECONDS
# How long a claim keeps other senders off a row: a sender alive finishes its attempt well within
# it; one that died leaves the row due again when it runs out.
LEASE = timedelta(seconds=2 * SEND_SECONDS)
MAX_RETRY_DELAY = timedelta(hours=1)
POLL_SECONDS = 30.0  # the ticker looks again at least this often (mail other processes recorded)
TICK_FLOOR_SECONDS = 0.25  # while more is due than the senders can take, look no more often
# Sent and failed rows are kept this long (to see what went out), then deleted: they name an address.
RETENTION = timedelta(days=30)
PURGE_EVERY_SECONDS = 3600.0


class MailHost(Protocol):
    """What the dispatcher uses from its runtime, read at each use (tests swap the mailer, the clock)."""

    settings: Settings
    db: Database
    clock: Clock
    mailer: Mailer
    background: Background


class LinkCheck(Protocol):
    """Whether the link in a mail about `subject` (its topic after the kind) still works `now`."""

    async def __call__(self, db: Database, subject: str, /, *, now: datetime) -> bool: ...


def retry_delay(attempts: int, *, first_seconds: float) -> timedelta:
    """How long after its `attempts`-th failed attempt a mail is tried again."""
    return min(timedelta(seconds=first_seconds * 2 ** min(attempts - 1, 30)), MAX_RETRY_DELAY)


class MailDispatcher:
    def __init__(
        self, host: MailHost, *, concurrency: int = CONCURRENCY, link_checks: Mapping[str, LinkCheck] | None = None
    ) -> None:
        self._host = host
        self._concurrency = concurrency
        # By topic kind ("verification" in "verification:<token id>"), from the domain that owns
        # the links: this package knows mail, not what makes a link live.
        self._link_checks = dict(link_checks or {})
        self._active = 0  # senders queued or running; one stops when it finds nothing due
        self._wakes = 0  # counts wake-ups, so a sender finding nothing knows whether to look again
        self._sending: set[int] = set()  # rows this process's senders hold
        self._stopping = False
        self._ticker: asyncio.Task[None] | None = None
        self._reschedule = asyncio.Event()  # a retry was scheduled: the ticker's sleep may be too long
        self._purged_at: float | None = None
        self._reading_failed = False  # the ticker logs a database outage once, not every poll

    def start(self) -> None:
        """Send what is due now, then keep watching (the app's start-up: mail a dead process left)."""
        self.wake()

    def wake(self) -> None:
        """Something may be due (a commit recorded mail): look now. Never waits."""
        if self._stopping:
            return
        self._wakes += 1
        if self._ticker is None or self._ticker.done():
            self._ticker = asyncio.get_running_loop().create_task(self._tick(), name="mail-ticker")
        self._spawn()

    async def stop(self) -> None:
        """Claim nothing more (shutdown). Mail being sent finishes in the background queue's drain;
        mail not yet claimed stays in the outbox for the next process."""
        self._stopping = True
        if self._ticker is not None:
            self._ticker.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._ticker
            self._ticker = None

    def _spawn(self) -> None:
        if self._active >= self._concurrency:
            return  # the senders running look again before they stop (see `_wakes`)
        self._active += 1
        if not self._host.background.put(self._send_due, what="mail"):
            self._active -= 1  # the queue is full: the ticker wakes us again

    async def _send_due(self) -> None:
        try:
            while not self._stopping:
                seen = self._wakes
                host = self._host
                try:
                    mail = await store.claim(host.db, now=host.clock.now(), lease=LEASE, besides=self._sending)
                except Exception as exc:  # the database is down: the ticker wakes us again
                    log.warning("mail outbox: no claim (%s)", describe_failure(exc))
                    return
                if mail is None:
                    if seen == self._wakes:
                        return
                    continue  # woken while looking: what woke us may have committed after the look
                self._spawn()  # more may be due: another sender looks meanwhile
                self._sending.add(mail.id)
                try:
                    if mail.attempts > host.settings.mail_max_attempts:
                        # Its senders died mid-attempt every time (a mail that kills its process?).
                        await self._give_up(mail, "claimed too often, never finished")
                    else:
                        await self._deliver(mail)
                finally:
                    self._sending.discard(mail.id)
        finally:
            self._active -= 1

    async def _deliver(self, mail: Claimed) -> None:
        host = self._host
        if not await self._link_works(mail):
            await self._cancel(mail)
            return
        try:
            async with asyncio.timeout(SEND_SECONDS):
                await host.mailer.send(to=mail.to, subject=mail.subject, body=mail.body)
        except Exception as exc:
            await self._attempt_failed(mail, describe_send_failure(exc), permanent=is_permanent_refusal(exc))
            return
        try:
            recorded = await store.mark_sent(host.db, mail, now=host.clock.now())
        except Exception as exc:
            log.warning("%s went out, not marked sent (%s): may go out again", mail.what, describe_failure(exc))
            return
        if not recorded:
            log.warning("%s went out after its claim ran out: may have gone out twice", mail.what)

    async def _link_works(self, mail: Claimed) -> bool:
        """The mail's link still works, or it has none that can end (no check for its topic)."""
        kind, subject = topic_parts(mail.topic)
        check = self._link_checks.get(kind)
        if check is None:
            return True
        host = self._host
        try:
            # Bounded like the send: a hung read must not outlast the claim (the mail could then
            # go out twice).
            async with asyncio.timeout(SEND_SECONDS):
                return await check(host.db, subject, now=host.clock.now())
        except Exception as exc:
            # Send it, as before there was a check: a dead link costs a click, a live one held back
            # could be the only one the person gets.
            log.warning("%s: its link could not be checked (%s); sending it", mail.what, describe_failure(exc))
            return True

    async def _cancel(self, mail: Claimed) -> None:
        host = self._host
        try:
            await store.mark_cancelled(host.db, mail, now=host.clock.now())
        except Exception as exc:
            log.warning(
                "%s not sent: its link no longer works; nor cancelled (%s): checked again when its claim runs out",
                mail.what,
                describe_failure(exc),
            )
            return
        # No address, no link: what the mail is and its row, as the other lines.
        log.info("%s not sent: its link no longer works; outgoing_mail row %d is marked cancelled", mail.what, mail.id)

    async def _attempt_failed(self, mail: Claimed, reason: str, *, permanent: bool = False) -> None:
        host = self._host
        if permanent or mail.attempts >= host.settings.mail_max_attempts:
            await self._give_up(mail, reason)
            return
        delay = retry_delay(mail.attempts, first_seconds=host.settings.mail_retry_seconds)
        now = host.clock.now()
        try:
            await store.mark_failed(host.db, mail, error=reason, retry_at=now + delay, now=now)
        except Exception as exc:
            log.warning(
                "%s not sent (%s), nor its retry recorded (%s): tried again when its claim runs out",
                mail.what,
                reason,
                describe_failure(exc),
            )
            return
        log.warning(
            "%s not sent (attempt %d of %d: %s); next attempt in %gs",
            mail.what,
            mail.attempts,
            host.settings.mail_max_attempts,
            reason,
            delay.total_seconds(),
        )
        self._reschedule.set()

    async def _give_up(self, mail: Claimed, reason: str) -> None:
        host = self._host
        try:
            await store.mark_failed(host.db, mail, error=reason, retry_at=None, now=host.clock.now())
        except Exception as exc:
            log.warning("%s not sent (%s), nor given up (%s)", mail.what, reason, describe_failure(exc))
            return
        log.warning(
            "%s given up after %d %s (%s): outgoing_mail row %d is marked failed",
            mail.what,
            mail.attempts,
            "attempt" if mail.attempts == 1 else "attempts",
            reason,
            mail.id,
        )

    async def _tick(self) -> None:
        while not self._stopping:
            self._reschedule.clear()
            due_in = await self._seconds_to_next_due()
            wait = POLL_SECONDS if due_in is None else min(max(due_in, TICK_FLOOR_SECONDS), POLL_SECONDS)
            try:
                async with asyncio.timeout(wait):
                    await self._reschedule.wait()  # a retry may now fall due before `wait` is up
            except TimeoutError:
                # Only when something has fallen due: a claim is a write (SQLite: the write lock),
                # an idle outbox costs each process one read per poll and no more.
                if due_in is not None and due_in <= wait:
                    self.wake()

    async def _seconds_to_next_due(self) -> float | None:
        """Seconds until the next pending mail falls due; None when none is pending (or unreadable)."""
        host = self._host
        try:
            due = await store.next_due(host.db)
            await self._purge_now_and_then()
        except Exception as exc:
            if not self._reading_failed:
                log.warning("mail outbox unreadable, looking again every %gs: %s", POLL_SECONDS, describe_failure(exc))
            self._reading_failed = True
            return None
        if self._reading_failed:
            log.warning("mail outbox readable again")
            self._reading_failed = False
        return None if due is None else (due - host.clock.now()).total_seconds()

    async def _purge_now_and_then(self) -> None:
        if self._purged_at is not None and time.monotonic() - self._purged_at < PURGE_EVERY_SECONDS:
            return
        self._purged_at = time.monotonic()
        await store.purge(self._host.db, before=self._host.clock.now() - RETENTION)
