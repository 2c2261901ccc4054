"""Activity benchmark: load N generation rows (default 1,000,000, a year of an org's traffic) and
their hourly rollups into a fresh database, then time the feed's first page, filtered pages, the
daily `/activity`, a 30-day analytics query and a full CSV export, through the real services.

    python -m bench.activity_bench [--rows N] [--db sqlite|postgres] [--pg-url URL] [--repeat 5]

People, the org and keys are made through the services; the bulk rows are loaded directly
(`executemany` on SQLite, `COPY` on PostgreSQL) exactly as settlement would write them, hour by
hour, so memory stays flat. The database is thrown away afterwards.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sqlite3
import statistics
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import datetime, timedelta
from functools import partial
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.engine import make_url

from teamrouter.config import load_settings
from teamrouter.domain.accounts import service as accounts
from teamrouter.domain.activity import analytics, daily, export, feed
from teamrouter.domain.activity.schemas import AnalyticsQuery, TimeRange
from teamrouter.domain.actor import Actor
from teamrouter.domain.credits.models import CreditAccount
from teamrouter.domain.keys import service as keys
from teamrouter.domain.orgs import service as orgs
from teamrouter.domain.orgs.models import Membership
from teamrouter.domain.roles import Role
from teamrouter.gateway.setup import provider_name
from teamrouter.ids import new_id
from teamrouter.runtime import Runtime, build_runtime
from teamrouter.storage import migrate

DEFAULT_PG = "postgresql://postgres@127.0.0.1:5432/postgres"
MODELS = [  # (model, providers, USD per prompt token in nano-USD, per completion token), with weights
    ("openai/gpt-4o-mini", ("openai", "azure"), 150, 600, 30),
    ("openai/gpt-4o", ("openai", "azure"), 2500, 10000, 10),
    ("anthropic/claude-sonnet", ("anthropic", "bedrock"), 3000, 15000, 15),
    ("anthropic/claude-haiku", ("anthropic",), 800, 4000, 15),
    ("google/gemini-flash", ("google",), 75, 300, 12),
    ("meta/llama-70b", ("together", "fireworks", "groq"), 600, 600, 8),
    ("mistral/large", ("mistral",), 2000, 6000, 5),
    ("deepseek/chat", ("deepseek", "together"), 270, 1100, 5),
]
GEN_COLUMNS = (
    "id", "created_at", "account_id", "organization_id", "key_id", "key_hash", "user_id", "hold_id", "model",
    "provider", "endpoint_id", "upstream_model", "tokens_prompt", "tokens_completion", "tokens_reasoning",
    "tokens_cached", "cost", "latency_ms", "generation_time_ms", "finish_reason", "streamed", "cancelled",
    "usage_estimated", "status_code", "external_user", "app_referer", "app_title",
)  # fmt: skip
ROLLUP_COLUMNS = (
    "hour", "account_id", "key_id", "user_id", "model", "provider", "requests",
    "tokens_prompt", "tokens_completion", "tokens_reasoning", "tokens_cached", "cost",
)  # fmt: skip


@dataclass(frozen=True)
class BenchKey:
    id: str
    hash: str
    user_id: str


@dataclass(frozen=True)
class Seed:
    org_id: str
    account_id: str
    admin: Actor
    member: Actor
    keys: list[BenchKey]


# ---------------------------------------------------------------- database


async def fresh_database(kind: str, pg_url: str, tmp: Path) -> tuple[str, Callable[[], Awaitable[None]]]:
    if kind == "sqlite":
        url = f"sqlite:///{tmp / 'bench.db'}"
        migrate.upgrade(url)

        async def nothing() -> None:
            return None

        return url, nothing
    import asyncpg

    admin = make_url(pg_url)
    name = f"trbench_{uuid.uuid4().hex[:8]}"
    raw_admin = admin.set(drivername="postgresql").render_as_string(hide_password=False)
    conn = await asyncpg.connect(raw_admin)
    await conn.execute(f'CREATE DATABASE "{name}"')
    await conn.close()
    url = admin.set(database=name).render_as_string(hide_password=False)
    migrate.upgrade(url)

    async def drop() -> None:
        c = await asyncpg.connect(raw_admin)
        await c.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        await c.close()

    return url, drop


async def seed_people(rt: Runtime, n_people: int = 10, n_keys: int = 24) -> Seed:
    people = [
        await accounts.create_user(
            rt, email=f"p{i}-{new_id('b')}@example.com", password="bench password 1", name=f"P{i}"
        )
        for i in range(n_people)
    ]
    admin = Actor(user_id=people[0].id, email_verified=True)
    view = await orgs.create_organization(rt, actor=admin, name="Bench Co")
    org_id = view.org.id
    now = rt.clock.now()
    async with rt.db.uow() as uow:
        for p in people[1:]:
            uow.session.add(
                Membership(
                    id=new_id("mem"),
                    organization_id=org_id,
                    user_id=p.id,
                    role="member",
                    created_at=now,
                    updated_at=now,
                )
            )
        account_id = await uow.session.scalar(select(CreditAccount.id).where(CreditAccount.organization_id == org_id))
    assert account_id is not None
    made: list[BenchKey] = []
    for i in range(n_keys):
        owner = people[i % n_people]
        role = Role.ADMIN if owner is people[0] else Role.MEMBER
        actor = Actor(user_id=owner.id, email_verified=True, organization_id=org_id, role=role)
        created = await keys.create_key(rt, actor=actor, name=f"key {i}")
        made.append(BenchKey(id=created.key.id, hash=created.key.hash, user_id=owner.id))
    return Seed(
        org_id=org_id,
        account_id=account_id,
        admin=Actor(user_id=people[0].id, email_verified=True, organization_id=org_id, role=Role.ADMIN),
        member=Actor(user_id=people[1].id, email_verified=True, organization_id=org_id, role=Role.MEMBER),
        keys=made,
    )


def hours_of_rows(
    seed: Seed, rows: int, end: datetime
) -> Iterator[tuple[list[tuple[Any, ...]], list[tuple[Any, ...]]]]:
    """(generation rows, rollup rows) for each hour of the year before `end`, deterministic."""
    rng = random.Random(42)
    hours = 24 * 365
    start = end - timedelta(hours=hours)
    weights = [m[4] for m in MODELS]
    key_weights = [1.0 / (i + 1) for i in range(len(seed.keys))]  # a few busy keys, a long tail
    made = 0
    for h in range(hours):
        hour = start + timedelta(hours=h)
        count = (rows * (h + 1)) // hours - made
        made += count
        gens: list[tuple[Any, ...]] = []
        roll: dict[tuple[str, str, str, str], list[int]] = {}
        for i in range(count):
            model, providers, p_price, c_price, _ = rng.choices(MODELS, weights)[0]
            provider = providers[rng.randrange(len(providers))]
            key = rng.choices(seed.keys, key_weights)[0]
            prompt, completion = rng.randint(20, 4000), rng.randint(1, 1200)
            cost = prompt * p_price // 1000 + completion * c_price // 1000
            at = hour + timedelta(seconds=rng.randrange(3600), microseconds=rng.randrange(1_000_000))
            gens.append(
                (
                    f"gen-b{h:05d}{i:06d}", at, seed.account_id, seed.org_id, key.id, key.hash, key.user_id, None,
                    model, provider, f"{model}@{provider}", model.split("/")[1], prompt, completion, 0, 0, cost,
                    rng.randint(80, 900), rng.randint(100, 9000), "stop", i % 2 == 0, False, False, 200,
                    None, None, "bench",
                )
            )  # fmt: skip
            slot = roll.setdefault((key.id, key.user_id, model, provider), [0, 0, 0, 0, 0, 0])
            for j, v in enumerate((1, prompt, completion, 0, 0, cost)):
                slot[j] += v
        rollups = [(hour, seed.account_id, *k, *v) for k, v in roll.items()]
        yield gens, rollups


def _ts(value: datetime) -> str:
    return value.strftime("%Y-%m-%d %H:%M:%S.%f")


async def load(url: str, seed: Seed, rows: int, end: datetime) -> tuple[int, int]:
    n_gen = n_roll = 0
    if url.startswith("sqlite"):
        conn = sqlite3.connect(make_url(url).database or "")
        conn.execute("PRAGMA synchronous=OFF")
        gen_sql = f"INSERT INTO generation ({','.join(GEN_COLUMNS)}) VALUES ({','.join('?' * len(GEN_COLUMNS))})"
        roll_sql = (
            f"INSERT INTO usage_rollup ({','.join(ROLLUP_COLUMNS)}) VALUES ({','.join('?' * len(ROLLUP_COLUMNS))})"
        )
        for gens, rollups in hours_of_rows(seed, rows, end):
            conn.executemany(gen_sql, [(r[0], _ts(r[1]), *r[2:]) for r in gens])
            conn.executemany(roll_sql, [(_ts(r[0]), *r[1:]) for r in rollups])
            n_gen += len(gens)
            n_roll += len(rollups)
        conn.commit()
        conn.execute("ANALYZE")
        conn.close()
        return n_gen, n_roll
    import asyncpg

    pg = await asyncpg.connect(make_url(url).set(drivername="postgresql").render_as_string(hide_password=False))
    try:
        gen_batch: list[tuple[Any, ...]] = []
        roll_batch: list[tuple[Any, ...]] = []
        for gens, rollups in hours_of_rows(seed, rows, end):
            gen_batch += gens
            roll_batch += rollups
            if len(gen_batch) >= 100_000:
                await pg.copy_records_to_table("generation", records=gen_batch, columns=GEN_COLUMNS)
                await pg.copy_records_to_table("usage_rollup", records=roll_batch, columns=ROLLUP_COLUMNS)
                n_gen, n_roll = n_gen + len(gen_batch), n_roll + len(roll_batch)
                gen_batch, roll_batch = [], []
        if gen_batch:
            await pg.copy_records_to_table("generation", records=gen_batch, columns=GEN_COLUMNS)
            await pg.copy_records_to_table("usage_rollup", records=roll_batch, columns=ROLLUP_COLUMNS)
            n_gen, n_roll = n_gen + len(gen_batch), n_roll + len(roll_batch)
        await pg.execute("ANALYZE generation; ANALYZE usage_rollup")
    finally:
        await pg.close()
    return n_gen, n_roll


# ---------------------------------------------------------------- timings


async def timed(repeat: int, work: Callable[[], Awaitable[Any]]) -> tuple[float, float, Any]:
    """(median ms, best ms, last result)."""
    times: list[float] = []
    result: Any = None
    for _ in range(repeat):
        started = time.perf_counter()
        result = await work()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), min(times), result


async def run(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory(prefix="trbench-") as tmp_name:
        tmp = Path(tmp_name)
        url, drop = await fresh_database(args.db, args.pg_url, tmp)
        settings = load_settings({}, env="dev", database_url=url, var_dir=str(tmp / "var"), secret_key="b" * 48)
        rt = build_runtime(settings)
        try:
            await measure(rt, url, args)
        finally:
            await rt.close()
            await drop()


async def measure(rt: Runtime, url: str, args: argparse.Namespace) -> None:
    seed = await seed_people(rt)
    end = rt.clock.now().replace(minute=0, second=0, microsecond=0)
    started = time.perf_counter()
    n_gen, n_roll = await load(url, seed, args.rows, end)
    load_s = time.perf_counter() - started
    print(f"{args.db}: loaded {n_gen:,} generations and {n_roll:,} rollup rows in {load_s:.1f} s")

    admin, member = seed.admin, seed.member
    busy, quiet = seed.keys[0], seed.keys[-1]
    thirty = AnalyticsQuery(
        metrics=["total_usage", "request_count", "tokens_prompt", "tokens_completion"],
        dimensions=["model", "user"],
        granularity="day",
        time_range=TimeRange(start=end - timedelta(days=30), end=end),
    )
    year = thirty.model_copy(
        update={
            "dimensions": ["api_key"],
            "granularity": "month",
            "time_range": TimeRange(start=end - timedelta(days=365), end=end),
        }
    )

    names = partial(provider_name, rt)  # as the API's routes resolve display names

    async def first_page() -> int:
        return len((await feed.list_generations(rt, actor=admin, limit=50)).rows)

    async def key_model_page() -> int:
        page = await feed.list_generations(rt, actor=admin, api_key_hash=quiet.hash, model="mistral/large", limit=50)
        return len(page.rows)

    async def member_page() -> int:
        page = await feed.list_generations(rt, actor=admin, user_id=member.user_id, limit=50)
        return len(page.rows)

    async def deep_page() -> int:
        page = await feed.list_generations(rt, actor=admin, until=end - timedelta(days=200), limit=50)
        return len(page.rows)

    async def daily_rows() -> int:
        return len(await daily.daily_activity(rt, actor=admin))

    async def analytics_30() -> int:
        return int(
            (await analytics.query_analytics(rt, actor=admin, query=thirty, provider_name=names))["metadata"][
                "row_count"
            ]
        )

    async def analytics_year() -> int:
        return int(
            (await analytics.query_analytics(rt, actor=admin, query=year, provider_name=names))["metadata"]["row_count"]
        )

    async def export_all() -> int:
        scope, filters = await feed.open_export(rt, actor=admin)
        size = 0
        async for chunk in export.csv_chunks(rt, scope, filters, provider_name=names):
            size += len(chunk)
        return size

    async def export_key() -> int:
        scope, filters = await feed.open_export(rt, actor=admin, api_key_hash=busy.hash)
        size = 0
        async for chunk in export.csv_chunks(rt, scope, filters, provider_name=names):
            size += len(chunk)
        return size

    cases: list[tuple[str, Callable[[], Awaitable[Any]], int, str]] = [
        ("feed: first page (50)", first_page, args.repeat, "rows"),
        ("feed: key + model filter (rare)", key_model_page, args.repeat, "rows"),
        ("feed: member filter", member_page, args.repeat, "rows"),
        ("feed: page 200 days back (until=)", deep_page, args.repeat, "rows"),
        ("GET /activity (30 days, rollups)", daily_rows, args.repeat, "rows"),
        ("analytics: 30 days x day x model,user", analytics_30, args.repeat, "rows"),
        ("analytics: 365 days x month x key", analytics_year, args.repeat, "rows"),
        ("export: one busy key (CSV)", export_key, 1, "bytes"),
        ("export: everything (CSV)", export_all, 1, "bytes"),
    ]
    print(f"{'operation':40} {'median ms':>10} {'best ms':>10}  result")
    for label, work, repeat, unit in cases:
        median, best, result = await timed(repeat, work)
        print(f"{label:40} {median:10.1f} {best:10.1f}  {result:,} {unit}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--db", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--pg-url", default=DEFAULT_PG, help="an admin URL; a throw-away database is created")
    parser.add_argument("--repeat", type=int, default=5)
    asyncio.run(run(parser.parse_args()))


if __name__ == "__main__":
    main()
