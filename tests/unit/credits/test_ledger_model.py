"""TESTPLAN A5: a Hypothesis state machine drives the real ledger (SQLite or PostgreSQL) and a pure-Python
reference model side by side — top-up, reserve, settle ≤ / > hold, void, expire, duplicate settle,
key-limit change, window rollover on a frozen clock — and they must agree after every step.
Replay a failure with the printed `@reproduce_failure` blob or `--hypothesis-seed`."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any, ClassVar

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule, run_state_machine_as_test
from sqlalchemy import update

from teamrouter.clock import FrozenClock
from teamrouter.config import load_settings
from teamrouter.domain.accounts.models import User
from teamrouter.domain.credits import holds
from teamrouter.domain.credits.checker import check_ledger
from teamrouter.domain.credits.ledger import EntryKind, post_entry
from teamrouter.domain.credits.models import CreditAccount, Hold
from teamrouter.domain.credits.windows import key_usage, limit_remaining, window_starts
from teamrouter.domain.keys.models import ApiKey
from teamrouter.errors import KeyLimitReached, PaymentRequired
from teamrouter.ids import new_id
from teamrouter.runtime import Runtime, build_runtime

CENT = 10_000_000
TTL = timedelta(hours=1)
START = datetime(2025, 1, 5, 22, 0, tzinfo=UTC)  # a Sunday evening: day, week and month roll over soon


@dataclass
class ModelHold:
    id: str
    amount: int
    keyed: bool
    expires_at: datetime
    status: str = "open"
    posted: int | None = None


@dataclass
class Model:
    """The ledger's rules in a dozen lines of plain Python."""

    balance: int = 0
    held: int = 0
    limit: int | None = None
    reset: str | None = None
    usage: int = 0
    windows: dict[str, tuple[date | None, int]] = field(
        default_factory=lambda: {"day": (None, 0), "week": (None, 0), "month": (None, 0)}
    )
    key_held: int = 0
    holds: list[ModelHold] = field(default_factory=list)

    def window_usage(self, now: datetime) -> dict[str, int]:
        s = window_starts(now)
        current = {"day": s.day, "week": s.week, "month": s.month}
        value = {name: (v if start == current[name] else 0) for name, (start, v) in self.windows.items()}
        return {
            "usage": self.usage,
            "usage_daily": value["day"],
            "usage_weekly": value["week"],
            "usage_monthly": value["month"],
        }

    def spend(self, now: datetime) -> int:
        u = self.window_usage(now)
        return {"daily": u["usage_daily"], "weekly": u["usage_weekly"], "monthly": u["usage_monthly"]}.get(
            self.reset or "", u["usage"]
        )

    def bill(self, hold: ModelHold, actual: int, now: datetime) -> None:
        if actual == 0:
            return
        self.balance -= actual
        if hold.keyed:
            self.usage += actual
            s = window_starts(now)
            for name, start in (("day", s.day), ("week", s.week), ("month", s.month)):
                old_start, value = self.windows[name]
                self.windows[name] = (start, value + actual if old_start == start else actual)

    def release(self, hold: ModelHold) -> None:
        self.held -= hold.amount
        if hold.keyed:
            self.key_held -= hold.amount


class LedgerMachine(RuleBasedStateMachine):
    harness: ClassVar[dict[str, Any]] = {}

    def __init__(self) -> None:
        super().__init__()
        self.loop: asyncio.AbstractEventLoop = self.harness["loop"]
        self.rt: Runtime = self.harness["rt"]
        self.clock: FrozenClock = self.harness["clock"]
        self.clock.set(START)  # every example (and every replay while shrinking) starts at the same time
        self.model = Model()
        self.account_id, self.key_id = self.run(self._setup())
        self.counter = 0

    def run(self, coro: Any) -> Any:
        return self.loop.run_until_complete(coro)

    async def _setup(self) -> tuple[str, str]:
        now = self.clock.now()
        user_id, account_id, key_id = new_id("user"), new_id("acct"), new_id("key")
        async with self.rt.db.uow() as uow:
            uow.session.add(
                User(id=user_id, email=f"{user_id}@example.com", password_hash="x", created_at=now, updated_at=now)
            )
            await uow.session.flush()
            uow.session.add(CreditAccount(id=account_id, user_id=user_id, created_at=now, updated_at=now))
            await uow.session.flush()
            uow.session.add(
                ApiKey(
                    id=key_id,
                    hash=new_id("h"),
                    label="l",
                    name="model",
                    account_id=account_id,
                    creator_user_id=user_id,
                    created_at=now,
                    updated_at=now,
                )
            )
        return account_id, key_id

    def pick(self, index: int) -> ModelHold:
        return self.model.holds[index % len(self.model.holds)]

    @rule(cents=st.integers(1, 300))
    def top_up(self, cents: int) -> None:
        self.counter += 1

        async def go() -> None:
            async with self.rt.db.uow() as uow:
                await post_entry(
                    uow,
                    account_id=self.account_id,
                    amount=cents * CENT,
                    kind=EntryKind.GRANT,
                    idempotency_key=f"{self.account_id}:top:{self.counter}",
                    now=self.clock.now(),
                )

        self.run(go())
        self.model.balance += cents * CENT

    @rule(cents=st.integers(0, 120), keyed=st.booleans())
    def reserve(self, cents: int, keyed: bool) -> None:
        amount, m, now = cents * CENT, self.model, self.clock.now()
        pool_ok = m.balance - m.held >= amount
        key_ok = not keyed or m.limit is None or m.limit - m.spend(now) - m.key_held >= amount
        self.counter += 1
        try:
            hold = self.run(
                holds.reserve(
                    self.rt,
                    account_id=self.account_id,
                    amount=amount,
                    idempotency_key=f"{self.account_id}:r:{self.counter}",
                    key_id=self.key_id if keyed else None,
                    ttl=TTL,
                )
            )
        except KeyLimitReached:
            assert pool_ok and not key_ok
            return
        except PaymentRequired:
            assert not pool_ok
            return
        assert pool_ok and key_ok
        m.holds.append(ModelHold(hold.id, amount, keyed, now + TTL))
        m.held += amount
        if keyed:
            m.key_held += amount

    @rule(cents=st.integers(1, 60), keyed=st.booleans(), fraction=st.integers(0, 100))
    def charge(self, cents: int, keyed: bool, fraction: int) -> None:
        """The gateway's common path: reserve, then settle at most the hold right away."""
        before = len(self.model.holds)
        self.reserve(cents, keyed)
        if len(self.model.holds) > before:
            self.settle(len(self.model.holds) - 1, False, fraction)

    @precondition(lambda self: self.model.holds)
    @rule(index=st.integers(0, 1000), over=st.booleans(), fraction=st.integers(0, 100))
    def settle(self, index: int, over: bool, fraction: int) -> None:
        # Any hold, resolved or not: settling a resolved hold is the duplicate-settle case.
        hold = self.pick(index)
        actual = hold.amount * (100 + fraction * 2) // 100 + CENT if over else hold.amount * fraction // 100
        result = self.run(holds.settle(self.rt, hold_id=hold.id, actual=actual))
        now = self.clock.now()
        if hold.status == "open":
            assert result.applied and result.status == "posted"
            hold.status, hold.posted = "posted", actual
            self.model.release(hold)
            self.model.bill(hold, actual, now)
        elif hold.status == "expired" and hold.posted is None:
            assert result.applied and result.status == "expired"  # late settlement: billed once
            hold.posted = actual
            self.model.bill(hold, actual, now)
        else:
            assert not result.applied and result.status == hold.status

    @precondition(lambda self: self.model.holds)
    @rule(index=st.integers(0, 1000))
    def void(self, index: int) -> None:
        hold = self.pick(index)
        result = self.run(holds.void(self.rt, hold_id=hold.id))
        assert result.applied == (hold.status == "open")
        if hold.status == "open":
            hold.status = "voided"
            self.model.release(hold)

    @rule()
    def sweep(self) -> None:
        now = self.clock.now()
        self.run(holds.expire_holds(self.rt, now=now))  # other examples' holds may expire too
        for hold in self.model.holds:
            if hold.status == "open" and hold.expires_at <= now:
                hold.status = "expired"
                self.model.release(hold)

    @rule(
        step=st.sampled_from(
            [timedelta(minutes=20), timedelta(hours=5), timedelta(days=1), timedelta(days=6), timedelta(days=31)]
        )
    )
    def advance_clock(self, step: timedelta) -> None:
        self.clock.advance(step)

    @rule(cents=st.one_of(st.none(), st.integers(0, 300)), reset=st.sampled_from([None, "daily", "weekly", "monthly"]))
    def change_key_limit(self, cents: int | None, reset: str | None) -> None:
        limit = None if cents is None else cents * CENT

        async def go() -> None:
            async with self.rt.db.uow() as uow:
                await uow.session.execute(
                    update(ApiKey).where(ApiKey.id == self.key_id).values(spend_limit=limit, limit_reset=reset)
                )

        self.run(go())
        self.model.limit, self.model.reset = limit, reset

    @invariant()
    def database_equals_model(self) -> None:
        async def read() -> tuple[CreditAccount, ApiKey, dict[str, tuple[str, int | None]]]:
            async with self.rt.db.read() as s:
                account = await s.get_one(CreditAccount, self.account_id)
                key = await s.get_one(ApiKey, self.key_id)
                rows = (await s.execute(_holds_of(self.account_id))).all()
            return account, key, {r.id: (r.status, r.posted_amount) for r in rows}

        account, key, stored = self.run(read())
        now, m = self.clock.now(), self.model
        assert (account.balance, account.held) == (m.balance, m.held)
        assert key.held == m.key_held
        assert key_usage(key, now) == m.window_usage(now)
        expected_remaining = None if m.limit is None else max(0, m.limit - m.spend(now) - m.key_held)
        assert limit_remaining(key, now) == expected_remaining
        assert stored == {h.id: (h.status, h.posted) for h in m.holds}

    def teardown(self) -> None:
        problems = self.run(check_ledger(self.rt, invariants=frozenset({"I1", "I2", "I3", "I4"})))
        assert problems == [], problems


def _holds_of(account_id: str) -> Any:
    from sqlalchemy import select

    return select(Hold.id, Hold.status, Hold.posted_amount).where(Hold.account_id == account_id)


def test_a5_ledger_matches_reference_model(database_url: str, tmp_path: Any) -> None:
    loop = asyncio.new_event_loop()
    clock = FrozenClock(START)
    config = load_settings({}, env="dev", database_url=database_url, secret_key="m" * 40, var_dir=str(tmp_path))
    rt = build_runtime(config, clock=clock)
    LedgerMachine.harness = {"loop": loop, "rt": rt, "clock": clock}
    try:
        run_state_machine_as_test(
            LedgerMachine,
            settings=settings(
                max_examples=30,
                stateful_step_count=25,
                deadline=None,
                suppress_health_check=list(HealthCheck),
                database=None,
            ),
        )
    finally:
        LedgerMachine.harness = {}
        loop.run_until_complete(rt.close())
        loop.close()
