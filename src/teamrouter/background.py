"""Work a request hands off so that its answer does not wait for it: mail, mostly.

A request that waits for the mail server answers later when it sent a mail than when it did not,
and whether it sent one can say whether an address has an account (resend-verification mails only
unverified accounts): with a mail server taking a second, its timing was an account oracle
(TESTPLAN D34). Queued here, the work runs in tasks the runtime owns, at most `CONCURRENCY` at once
per process (a burst waits its turn instead of opening hundreds of SMTP conversations). `close()`,
run by the app's lifespan at shutdown, gives what is queued `DRAIN_SECONDS` to finish. The queue
lives in memory: a process killed outright loses what it had not done yet. Mail itself is not lost
so: it is recorded in the outbox with the change that causes it, and this queue only runs its
senders (teamrouter.domain.mail.dispatcher). What a kill can lose is a resend-verification job
queued before its writes, which the person can simply ask for again.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from teamrouter.mailer import SMTP_TIMEOUT_SECONDS

log = logging.getLogger(__name__)

Job = Callable[[], Awaitable[None]]

CONCURRENCY = 4
MAX_WAITING = 1_000  # a bound on memory when the mail server is down or slower than the requests
# At shutdown, the whole queue gets this long: a mail already started gets its whole chance (the
# SMTP client's own timeout); mail still waiting behind it may not.
DRAIN_SECONDS = SMTP_TIMEOUT_SECONDS


@dataclass(frozen=True, slots=True)
class _Queued:
    job: Job
    what: str  # for the log, when it fails: never an address or a token
    once: str | None  # while a job with this key waits or runs, another is not queued


class Background:
    def __init__(
        self, *, concurrency: int = CONCURRENCY, max_waiting: int = MAX_WAITING, drain_seconds: float = DRAIN_SECONDS
    ) -> None:
        self._drain_seconds = drain_seconds
        self._waiting: deque[_Queued] = deque()
        self._concurrency = concurrency
        self._max_waiting = max_waiting
        self._active = 0  # workers running; a worker stops when it finds the queue empty
        self._workers: set[asyncio.Task[None]] = set()
        self._once: set[str] = set()  # keys of jobs waiting or running

    def put(self, job: Job, *, what: str, once: str | None = None) -> bool:
        """Queue one job; never waits (called on the event loop, in a request or after a commit).

        With `once`, nothing is queued while a job with the same key waits or runs: repeated
        requests for the same thing (resend to one address) take one place, not one each.
        False when nothing was queued (a job with that key waits, or the queue is full)."""
        if once is not None and once in self._once:
            return False
        if len(self._waiting) >= self._max_waiting:
            log.error("background queue full (%d waiting): dropped %s", len(self._waiting), what)
            return False
        if once is not None:
            self._once.add(once)
        self._waiting.append(_Queued(job, what, once))
        if self._active < self._concurrency:
            self._active += 1
            worker = asyncio.get_running_loop().create_task(self._work(), name="background")
            self._workers.add(worker)
            worker.add_done_callback(self._workers.discard)
        return True

    async def _work(self) -> None:
        try:
            while self._waiting:
                queued = self._waiting.popleft()
                try:
                    await queued.job()
                except Exception:  # one failure must not stop the others
                    log.exception("background work failed: %s", queued.what)
                finally:
                    if queued.once is not None:
                        self._once.discard(queued.once)
        finally:
            # No await between the empty check and this: `put` never counts a worker that is
            # about to stop as one that will take its job.
            self._active -= 1

    async def idle(self) -> None:
        """Wait until every job queued so far (and any it queued in turn) has run."""
        while self._workers:
            await asyncio.wait(set(self._workers))

    async def close(self) -> None:
        """Let queued work finish for up to `drain_seconds`, then stop it (shutdown)."""
        try:
            await asyncio.wait_for(self.idle(), self._drain_seconds)
        except TimeoutError:
            unfinished = len(self._waiting) + self._active
            self._waiting.clear()
            self._once.clear()
            for worker in list(self._workers):
                worker.cancel()
            await asyncio.gather(*self._workers, return_exceptions=True)
            log.warning("stopped with %d background job(s) unfinished (mail not sent)", unfinished)
