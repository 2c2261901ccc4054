"""`make soak` (TESTPLAN D36): a long mixed load against a real multi-worker `teamrouter serve`.

    python -m bench.soak --minutes 30 --workers 4 --backend sqlite|postgres --clients 24 [--seconds N]

The fake upstream runs in its own process; one funded person has a key on a large balance and keys
with a small spend limit ($0.005, a fresh one every 30 s, so 402s happen all along). `--clients`
closed loops send, for the whole run: 70% streams (some dropped by the client at a random event,
some with a scripted upstream fault mid-stream: a reset or an in-stream error), the rest JSON, with
max_tokens varied. Every request runs its own script (chunks, delay per chunk) through the
FAKE-SCRIPT marker.

Failures: any 5xx, any status other than 200 (and 402 on the limited key), a client-side error, a
stream that ends without [DONE], or an error event the script did not ask for.

Every `--sample-seconds` (~30 s on a long run) it reads RSS and open file descriptors of the server
process and each of its children from /proc. Flat means, for each process, between the first sample
after the warm-up (10% of the run) and the last sample under load: RSS grew by less than 20% and
less than 50 MB, and open fds by at most 20; and no worker was replaced.

Quiesce: the clients stop starting requests and finish the one in flight; then, with the server
still up, open holds, credit_account.held and api_key.held must all reach 0 (within 30 s), no hold
may have expired (the sweeper only expires holds nobody settled: a leak), and the ledger checker
(I1–I6) must be green. Prints a report and exits 1 on any failure.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
from sqlalchemy import func, select
from sqlalchemy.engine import make_url
from tests.support.databases import DEFAULT_PG
from tests.support.gateway import FakeUpstreamProcess, Funded, add_key, funded_person, script, start_gateway

from bench.run import _admin
from teamrouter.config import load_settings
from teamrouter.domain.credits.checker import check_ledger
from teamrouter.domain.credits.models import CreditAccount, Hold
from teamrouter.domain.keys.models import ApiKey
from teamrouter.runtime import Runtime, build_runtime
from teamrouter.storage import migrate

# The bounds for "flat" (see the module docstring); generous on purpose: they catch a leak per
# request over a long run, not the caches and pools a fresh process fills in its first minutes.
RSS_GROWTH_FRACTION = 0.20
RSS_GROWTH_BYTES = 50 * 1024 * 1024
FD_GROWTH = 20
WARMUP_FRACTION = 0.10
QUIESCE_SECONDS = 30.0
MAX_TOKENS = (8, 16, 64, 256, 1000)
LIMITED_KEY_USD = "0.005"  # a few concurrent max_tokens=1000 holds ($0.002 each) already exceed it
LIMITED_KEY_SECONDS = 30.0  # a fresh small-limit key this often: its limit is reached all run long
FAILURE_EXAMPLES = 20


@dataclass(frozen=True)
class Plan:
    """One request: what to send and what the client will do with the answer."""

    stream: bool
    limited: bool
    max_tokens: int
    chunks: int
    chunk_delay_ms: int
    fault: str | None  # "reset_after_chunks" | "stream_error_after_chunks" (streams only)
    fault_at: int
    disconnect_after: int | None  # close the connection after this many SSE events

    def body(self) -> bytes:
        fields: dict[str, Any] = {"chunks": self.chunks, "chunk_delay_ms": self.chunk_delay_ms}
        if self.fault is not None:
            fields[self.fault] = self.fault_at
        payload: dict[str, Any] = {
            "model": "test/chat",
            "messages": [{"role": "user", "content": "Say something.\n" + script(**fields)}],
            "max_tokens": self.max_tokens,
            "stream": self.stream,
        }
        if self.stream:
            payload["stream_options"] = {"include_usage": True}
        return json.dumps(payload).encode()


@dataclass
class Shares:
    stream: float
    disconnect: float  # of streams
    fault: float  # of streams
    limited: float


def plan(rng: random.Random, shares: Shares) -> Plan:
    stream = rng.random() < shares.stream
    max_tokens = rng.choice(MAX_TOKENS)
    chunks = rng.randint(4, 16)
    # Content events the upstream will send: the script's chunks, cut at max_tokens.
    sent = min(chunks, max_tokens)
    fault = None
    if stream and rng.random() < shares.fault:
        fault = rng.choice(("reset_after_chunks", "stream_error_after_chunks"))
    disconnect = rng.randint(1, sent) if stream and rng.random() < shares.disconnect else None
    return Plan(
        stream=stream,
        limited=rng.random() < shares.limited,
        max_tokens=max_tokens,
        chunks=chunks,
        chunk_delay_ms=rng.choice((0, 5, 20, 50)),
        fault=fault,
        fault_at=rng.randint(1, sent - 1),
        disconnect_after=disconnect,
    )


@dataclass
class Keys:
    funded: str
    limited: str
    limited_made: int = 1


async def renew_limited(rt: Runtime, who: Funded, keys: Keys) -> None:
    """Spent, a limited key only ever answers 402; a new one keeps requests meeting the limit."""
    while True:
        await asyncio.sleep(LIMITED_KEY_SECONDS)
        keys.limited = await add_key(rt, who, limit=LIMITED_KEY_USD)
        keys.limited_made += 1


@dataclass
class Tally:
    outcomes: Counter[str] = field(default_factory=Counter)
    failures: Counter[str] = field(default_factory=Counter)
    latencies: dict[str, list[float]] = field(default_factory=lambda: {"json": [], "stream ttfb": []})

    def fail(self, what: str) -> None:
        self.failures[what[:240]] += 1

    @property
    def requests(self) -> int:
        return sum(self.outcomes.values()) + sum(self.failures.values())


async def one(session: aiohttp.ClientSession, url: str, keys: Keys, p: Plan, tally: Tally) -> None:
    headers = {
        "content-type": "application/json",
        "authorization": f"Bearer {keys.limited if p.limited else keys.funded}",
    }
    kind = "stream" if p.stream else "json"
    started = time.perf_counter()
    async with session.post(url, data=p.body(), headers=headers) as response:
        if response.status != 200:
            text = (await response.read())[:200].decode(errors="replace")
            if response.status == 402 and p.limited:
                tally.outcomes[f"{kind} 402 (limited key)"] += 1
            else:
                tally.fail(f"{kind} {response.status} ({'limited' if p.limited else 'funded'} key): {text}")
            return
        if not p.stream:
            answer = await response.json()
            tally.latencies["json"].append(time.perf_counter() - started)
            if answer.get("choices") and answer.get("usage"):
                tally.outcomes["json 200"] += 1
            else:
                tally.fail(f"json 200 without choices or usage: {sorted(answer)}")
            return
        await read_stream(response, p, started, tally)


async def read_stream(response: aiohttp.ClientResponse, p: Plan, started: float, tally: Tally) -> None:
    events = errors = 0
    done = usage = False
    while line := await response.content.readline():
        if not line.startswith(b"data:"):
            continue  # blank separators and SSE comments
        if events == 0:
            tally.latencies["stream ttfb"].append(time.perf_counter() - started)
        events += 1
        data = line[5:].strip()
        if data == b"[DONE]":
            done = True
            continue
        event = json.loads(data)
        errors += "error" in event
        usage = usage or bool(event.get("usage"))
        if p.disconnect_after is not None and events >= p.disconnect_after:
            response.close()  # drops the connection mid-stream, as a client that goes away
            tally.outcomes["stream dropped by the client"] += 1
            return
    if not done or not usage:
        tally.fail(f"stream ended without {'[DONE]' if not done else 'a usage chunk'} (fault {p.fault})")
    elif errors and p.fault is None:
        tally.fail("stream with an error event no script asked for")
    elif p.fault is not None and not errors:
        tally.fail(f"stream with a scripted {p.fault} ended without an error event")
    else:
        tally.outcomes["stream 200, scripted upstream fault" if p.fault else "stream 200"] += 1


async def client(
    index: int,
    session: aiohttp.ClientSession,
    url: str,
    keys: Keys,
    shares: Shares,
    stop: asyncio.Event,
    tally: Tally,
    seed: int,
) -> None:
    rng = random.Random(seed * 1000 + index)
    while not stop.is_set():
        p = plan(rng, shares)
        try:
            await one(session, url, keys, p, tally)
        except (aiohttp.ClientError, TimeoutError, ValueError) as exc:
            tally.fail(f"client error ({'stream' if p.stream else 'json'}): {type(exc).__name__}: {exc}")


# -- /proc sampling ------------------------------------------------------------------------------


@dataclass(frozen=True)
class ProcStat:
    role: str  # "server" (the uvicorn supervisor), "worker", or "helper" (multiprocessing's tracker)
    rss: int  # bytes
    fds: int


@dataclass(frozen=True)
class Sample:
    at: float  # seconds since the load started
    procs: dict[int, ProcStat]


def children(pid: int) -> list[int]:
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry}/stat").read_text()
        except OSError:
            continue  # exited meanwhile
        if int(stat.rsplit(")", 1)[1].split()[1]) == pid:
            found.append(int(entry))
    return sorted(found)


def proc_stat(pid: int, role: str) -> ProcStat | None:
    try:
        status = Path(f"/proc/{pid}/status").read_text()
        fds = len(os.listdir(f"/proc/{pid}/fd"))
        if role != "server" and b"resource_tracker" in Path(f"/proc/{pid}/cmdline").read_bytes():
            role = "helper"
    except OSError:
        return None
    rss = next(int(line.split()[1]) * 1024 for line in status.splitlines() if line.startswith("VmRSS:"))
    return ProcStat(role=role, rss=rss, fds=fds)


def sample(server_pid: int, at: float) -> Sample:
    procs = {}
    for pid, role in [(server_pid, "server"), *((child, "worker") for child in children(server_pid))]:
        stat = proc_stat(pid, role)
        if stat is not None:
            procs[pid] = stat
    return Sample(at=at, procs=procs)


async def sampler(server_pid: int, every: float, started: float, stop: asyncio.Event, into: list[Sample]) -> None:
    while not stop.is_set():
        into.append(sample(server_pid, time.monotonic() - started))
        try:
            await asyncio.wait_for(stop.wait(), timeout=every)
        except TimeoutError:
            pass


def flatness(samples: list[Sample], warmup: float) -> list[str]:
    """What is not flat between the first sample after the warm-up and the last one under load."""
    first = next((s for s in samples if s.at >= warmup), samples[-1])
    last = samples[-1]
    problems = []
    # Over every sample, warm-up included: a worker that died early and was replaced is a failure too.
    ever = {pid for s in samples for pid, p in s.procs.items() if p.role == "worker"}
    now = {pid for pid, p in last.procs.items() if p.role == "worker"}
    if ever != now:
        problems.append(f"workers changed during the run: {sorted(ever - now)} gone, now {sorted(now)}")
    for pid in sorted(first.procs.keys() & last.procs.keys()):
        a, b = first.procs[pid], last.procs[pid]
        grew = b.rss - a.rss
        if grew > RSS_GROWTH_FRACTION * a.rss or grew > RSS_GROWTH_BYTES:
            problems.append(
                f"{a.role} {pid}: RSS {a.rss / 2**20:.1f} -> {b.rss / 2**20:.1f} MB between "
                f"t={first.at:.0f}s and t={last.at:.0f}s (bound +{RSS_GROWTH_FRACTION:.0%} and "
                f"+{RSS_GROWTH_BYTES // 2**20} MB)"
            )
        if b.fds - a.fds > FD_GROWTH:
            problems.append(f"{a.role} {pid}: open fds {a.fds} -> {b.fds} (bound +{FD_GROWTH})")
    return problems


def series(samples: list[Sample]) -> list[str]:
    pids = sorted({pid for s in samples for pid in s.procs}, key=lambda pid: (samples[0].procs.get(pid) is None, pid))
    roles = {pid: p.role for s in samples for pid, p in s.procs.items()}
    head = "| t (s) | " + " | ".join(f"{roles[pid]} {pid} MB / fds" for pid in pids) + " | total MB / fds |"
    rows = [head, "|" + "---|" * (len(pids) + 2)]
    for s in samples:
        cells = [f"{s.procs[pid].rss / 2**20:.1f} / {s.procs[pid].fds}" if pid in s.procs else "-" for pid in pids]
        total_rss = sum(p.rss for p in s.procs.values()) / 2**20
        total_fds = sum(p.fds for p in s.procs.values())
        rows.append(f"| {s.at:.0f} | " + " | ".join(cells) + f" | {total_rss:.1f} / {total_fds} |")
    return rows


# -- quiesce ---------------------------------------------------------------------------------------


async def held(rt: Runtime) -> tuple[int, int, int, int]:
    """(open holds, their sum, sum of credit_account.held, sum of api_key.held)."""
    async with rt.db.read() as session:
        open_holds = select(func.count(), func.coalesce(func.sum(Hold.amount), 0)).where(Hold.status == "open")
        count, amount = (await session.execute(open_holds)).one()
        accounts = await session.scalar(select(func.coalesce(func.sum(CreditAccount.held), 0)))
        keys = await session.scalar(select(func.coalesce(func.sum(ApiKey.held), 0)))
    return int(count), int(amount), int(accounts or 0), int(keys or 0)


async def hold_statuses(rt: Runtime) -> dict[str, int]:
    async with rt.db.read() as session:
        rows = (await session.execute(select(Hold.status, func.count()).group_by(Hold.status))).all()
    return {str(status): int(n) for status, n in rows}


async def quiesce(rt: Runtime) -> tuple[list[str], list[str]]:
    """(report lines, problems) once nothing should be in flight any more."""
    started = time.monotonic()
    state = await held(rt)
    while any(state) and time.monotonic() - started < QUIESCE_SECONDS:
        await asyncio.sleep(0.25)
        state = await held(rt)
    waited = time.monotonic() - started
    statuses = await hold_statuses(rt)
    lines = [
        f"after quiesce ({waited:.1f} s): open holds {state[0]} (sum {state[1]}), credit_account.held {state[2]}, "
        f"api_key.held {state[3]}; holds by status {dict(sorted(statuses.items()))}"
    ]
    problems = []
    if any(state):
        problems.append(f"still held {QUIESCE_SECONDS:.0f} s after the clients stopped: {state}")
    if statuses.get("expired"):
        problems.append(f"{statuses['expired']} hold(s) expired: left for the sweeper instead of settled or voided")
    ledger = await check_ledger(rt)
    lines.append("ledger checker (I1–I6): " + ("green" if not ledger else f"{len(ledger)} problem(s)"))
    problems += [f"ledger: {p}" for p in ledger[:FAILURE_EXAMPLES]]
    return lines, problems


# -- the run -----------------------------------------------------------------------------------------


@dataclass
class Options:
    seconds: float
    workers: int
    clients: int
    sample_seconds: float
    seed: int
    shares: Shares


async def soak(database_url: str, fake: FakeUpstreamProcess, tmp: Path, opts: Options) -> tuple[list[str], bool]:
    migrate.upgrade(database_url)
    rt = build_runtime(
        load_settings({}, env="dev", database_url=database_url, var_dir=str(tmp / "rt"), secret_key="s" * 48)
    )
    try:
        who = await funded_person(rt, usd="100000")
        keys = Keys(funded=who.key, limited=await add_key(rt, who, limit=LIMITED_KEY_USD))
        server = start_gateway(tmp, database_url, fake.url, workers=opts.workers)
        try:
            assert server.proc is not None
            started = time.monotonic()
            renewer = asyncio.create_task(renew_limited(rt, who, keys))
            try:
                tally, samples = await load(server.base_url, server.proc.pid, keys, opts, started)
            finally:
                renewer.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await renewer
            elapsed = time.monotonic() - started
            lines, problems = await quiesce(rt)
            after = sample(server.proc.pid, time.monotonic() - started)
            log_lines = server_log_problems(server.log())
        finally:
            server.stop()
    finally:
        await rt.close()
    report = summary(tally, elapsed, opts)
    report.insert(
        2, f"small-limit keys (${LIMITED_KEY_USD}, a new one every {LIMITED_KEY_SECONDS:.0f} s): {keys.limited_made}"
    )
    report += [*series([*samples, after]), "(the last row is after quiesce; the flatness check ends before it)"]
    report += lines + log_lines
    if tally.requests == 0:
        problems.append("no request completed")
    problems += [f"{n} x {what}" for what, n in tally.failures.most_common(FAILURE_EXAMPLES)]
    problems += flatness(samples, WARMUP_FRACTION * opts.seconds)
    report.append("verdict: " + ("PASS" if not problems else "FAIL"))
    report += [f"  - {p}" for p in problems]
    return report, bool(problems)


async def load(base_url: str, server_pid: int, keys: Keys, opts: Options, started: float) -> tuple[Tally, list[Sample]]:
    tally = Tally()
    samples: list[Sample] = []
    stop_clients, stop_sampler = asyncio.Event(), asyncio.Event()
    url = f"{base_url}/api/v1/chat/completions"
    connector = aiohttp.TCPConnector(limit=opts.clients)
    timeout = aiohttp.ClientTimeout(total=120)  # a hung request is a failure, not a hung soak
    async with aiohttp.ClientSession(connector=connector, timeout=timeout) as session:
        watcher = asyncio.create_task(sampler(server_pid, opts.sample_seconds, started, stop_sampler, samples))
        clients = [
            asyncio.create_task(client(i, session, url, keys, opts.shares, stop_clients, tally, opts.seed))
            for i in range(opts.clients)
        ]
        await asyncio.sleep(opts.seconds)
        stop_sampler.set()
        await watcher
        samples.append(sample(server_pid, time.monotonic() - started))  # the last one under load
        stop_clients.set()
        await asyncio.gather(*clients)  # each finishes the request it has in flight
    return tally, samples


def server_log_problems(log: str) -> list[str]:
    """Tracebacks and ERROR lines the server logged: reported, since a soak is where they show."""
    bad = [line for line in log.splitlines() if "Traceback" in line or " ERROR " in line or line.startswith("ERROR")]
    if not bad:
        return ["server log: no tracebacks or ERROR lines"]
    return [f"server log: {len(bad)} traceback/ERROR line(s), first ones:", *(f"    {line}" for line in bad[:5])]


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def summary(tally: Tally, elapsed: float, opts: Options) -> list[str]:
    lines = [
        f"soak: {opts.seconds:.0f} s of load, {opts.workers} workers, {opts.clients} clients, seed {opts.seed}",
        f"requests: {tally.requests} in {elapsed:.1f} s = {tally.requests / elapsed:.1f} req/s",
    ]
    lines += [f"  {n:>8}  {what}" for what, n in sorted(tally.outcomes.items())]
    lines += [f"  {n:>8}  FAILED: {what}" for what, n in tally.failures.most_common(FAILURE_EXAMPLES)]
    for name, values in tally.latencies.items():
        lines.append(
            f"latency {name}: p50 {percentile(values, 0.5) * 1000:.1f} ms, p99 {percentile(values, 0.99) * 1000:.1f} ms"
            f" (n={len(values)})"
        )
    lines.append(
        f"flat bounds per process, first sample after t={WARMUP_FRACTION * opts.seconds:.0f}s vs the last under load:"
        f" RSS +{RSS_GROWTH_FRACTION:.0%} and +{RSS_GROWTH_BYTES // 2**20} MB, fds +{FD_GROWTH}"
    )
    return lines


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--seconds", type=float, default=None, help="overrides --minutes (smoke runs)")
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--backend", choices=("sqlite", "postgres"), default="sqlite")
    parser.add_argument("--clients", type=int, default=24)
    parser.add_argument("--sample-seconds", type=float, default=None, help="default: ~30 s, or 1/12 of a short run")
    parser.add_argument("--seed", type=int, default=int(time.time()))
    parser.add_argument("--stream-share", type=float, default=0.7)
    parser.add_argument("--disconnect-share", type=float, default=0.15, help="of streams")
    parser.add_argument("--fault-share", type=float, default=0.03, help="of streams")
    parser.add_argument("--limited-share", type=float, default=0.1, help="requests on the small-limit key")
    args = parser.parse_args()
    seconds = args.seconds if args.seconds is not None else args.minutes * 60
    opts = Options(
        seconds=seconds,
        workers=args.workers,
        clients=args.clients,
        sample_seconds=args.sample_seconds or min(30.0, max(1.0, seconds / 12)),
        seed=args.seed,
        shares=Shares(args.stream_share, args.disconnect_share, args.fault_share, args.limited_share),
    )
    tmp = Path(tempfile.mkdtemp(prefix=f"soak-{args.backend}-"))
    fake = FakeUpstreamProcess(uvloop=True)
    try:
        if args.backend == "sqlite":
            report, failed = await soak(f"sqlite:///{tmp}/soak.db", fake, tmp, opts)
        else:
            admin = os.environ.get("TEAMROUTER_TEST_POSTGRES_URL", DEFAULT_PG)
            name = f"trsoak_{os.getpid()}"
            await _admin(admin, f'CREATE DATABASE "{name}"')
            try:
                url = make_url(admin).set(database=name).render_as_string(hide_password=False)
                report, failed = await soak(url, fake, tmp, opts)
            finally:
                await _admin(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        fake.stop()
    print(f"backend: {args.backend}")
    print("\n".join(report), flush=True)
    if failed:
        print(f"(server log and database kept in {tmp})")
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
