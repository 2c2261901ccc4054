"""`make bench`: teamrouter against the same fake upstream called directly, in one run.

For each database (SQLite, and PostgreSQL when it answers) it starts the fake upstream and one
`teamrouter serve` worker with keys, holds, settlement and activity rows all on, then alternates
direct and proxied runs: JSON and streaming, concurrency 1 and 32. It prints a Markdown table with
req/s, p50/p99 (time to first byte for streams), the ratios to direct, and the gateway's own CPU per
request read from /proc — the figure that carries to other machines. A bare pass-through proxy
(bench/bare_proxy.py: Starlette + aiohttp, no auth, no accounting) runs in the same alternation as
the floor any Python gateway pays on this machine.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import asyncpg
from sqlalchemy.engine import make_url
from tests.support.databases import DEFAULT_PG
from tests.support.gateway import FakeUpstreamProcess, funded_person, start_gateway
from tests.support.smtp import free_port

from bench.loadgen import Result, run
from bench.store_floor import postgres_floor
from teamrouter.config import load_settings
from teamrouter.runtime import build_runtime
from teamrouter.storage import migrate

CONTENT = "The quick brown fox jumps over the lazy dog again and again"


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def body(model: str, stream: bool) -> bytes:
    payload = {
        "model": model,
        "messages": [{"role": "user", "content": "Say something."}],
        "max_tokens": 64,
        "stream": stream,
    }
    if stream:
        payload["stream_options"] = {"include_usage": True}
    return json.dumps(payload).encode()


async def bench_backend(
    name: str, database_url: str, fake: FakeUpstreamProcess, seconds: float, rounds: int
) -> list[str]:
    tmp = Path(tempfile.mkdtemp(prefix=f"bench-{name}-"))
    migrate.upgrade(database_url)
    rt = build_runtime(
        load_settings({}, env="dev", database_url=database_url, var_dir=str(tmp / "rt"), secret_key="b" * 48)
    )
    who = await funded_person(rt, usd="100000")
    await rt.close()
    # The fake answers every request with 8 chunks of content and a usage chunk.
    import httpx

    httpx.post(f"{fake.url}/_script", json={"script": {"content": CONTENT, "chunks": 8}}).raise_for_status()
    server = start_gateway(tmp, database_url, fake.url, workers=1)
    bare_port = free_port()
    bare = subprocess.Popen(
        [sys.executable, "-m", "bench.bare_proxy", "--upstream", fake.url, "--port", str(bare_port)]
    )
    _wait_for_port(bare_port)
    rows = []
    try:
        for stream in (False, True):
            for concurrency in (1, 32):
                json_headers = {"content-type": "application/json"}
                targets = {
                    "direct": (f"{fake.url}/v1/chat/completions", "fake-chat", json_headers, None),
                    "bare": (f"http://127.0.0.1:{bare_port}/v1/chat/completions", "fake-chat", json_headers, bare.pid),
                    "proxied": (
                        f"{server.base_url}/api/v1/chat/completions",
                        "test/chat",
                        {**json_headers, "authorization": f"Bearer {who.key}"},
                        server.proc.pid,  # type: ignore[union-attr]
                    ),
                }
                results: dict[str, list[Result]] = {target: [] for target in targets}
                cpus = dict.fromkeys(targets, 0.0)
                for _ in range(rounds):  # alternate, so drift on a shared machine hits all alike
                    for target, (url, model, headers, pid) in targets.items():
                        before = cpu_seconds(pid) if pid else 0.0
                        results[target].append(
                            await run(
                                url,
                                body(model, stream),
                                headers,
                                concurrency=concurrency,
                                seconds=seconds,
                                stream=stream,
                            )
                        )
                        cpus[target] += (cpu_seconds(pid) - before) if pid else 0.0
                direct, floor, proxied = results["direct"], results["bare"], results["proxied"]
                bare_cpu, cpu = cpus["bare"], cpus["proxied"]
                d = _merge(direct)
                b = _merge(floor)
                p = _merge(proxied)
                rows.append(
                    f"| {name} | {'stream' if stream else 'json'} | {concurrency} | {d.rps:,.0f} | {b.rps:,.0f} "
                    f"| {p.rps:,.0f} | {b.rps / d.rps:.0%} | {p.rps / d.rps:.0%} "
                    f"| {(b.percentile(0.5) - d.percentile(0.5)) * 1000:+.2f} "
                    f"| {(p.percentile(0.5) - d.percentile(0.5)) * 1000:+.2f} "
                    f"| {d.percentile(0.99) * 1000:.2f} | {p.percentile(0.99) * 1000:.2f} "
                    f"| {bare_cpu / max(b.requests, 1) * 1000:.2f} | {cpu / max(p.requests, 1) * 1000:.2f} "
                    f"| {p.errors} |"
                )
                print(rows[-1], flush=True)
    finally:
        server.stop()
        bare.terminate()
        bare.wait(timeout=10)
    return rows


def _wait_for_port(port: int, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listening on port {port}")


def _merge(results: list[Result]) -> Result:
    return Result(
        requests=sum(r.requests for r in results),
        errors=sum(r.errors for r in results),
        seconds=sum(r.seconds for r in results),
        latencies=[x for r in results for x in r.latencies],
    )


async def _postgres_floor(url: str) -> str:
    rt = build_runtime(
        load_settings(
            {}, env="dev", database_url=url, var_dir=tempfile.mkdtemp(prefix="bench-floor-"), secret_key="b" * 48
        )
    )
    try:
        who = await funded_person(rt, usd="100")
    finally:
        await rt.close()
    return await postgres_floor(url, who)


async def _admin(url: str, statement: str) -> None:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(statement)
    finally:
        await conn.close()


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seconds", type=float, default=4.0, help="length of each measured run")
    parser.add_argument("--rounds", type=int, default=2, help="direct/proxied alternations per cell")
    parser.add_argument("--backends", default="sqlite,postgres")
    args = parser.parse_args()
    header = (
        "| db | mode | conc | direct req/s | bare proxy req/s | teamrouter req/s | bare share | tr share "
        "| bare added p50 ms | tr added p50 ms | direct p99 ms | tr p99 ms | bare CPU ms/req | tr CPU ms/req "
        "| errors |\n|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"
    )
    print(header, flush=True)
    fake = FakeUpstreamProcess(uvloop=True)
    rows: list[str] = []
    try:
        if "sqlite" in args.backends:
            tmp = Path(tempfile.mkdtemp(prefix="bench-db-"))
            rows += await bench_backend("sqlite", f"sqlite:///{tmp}/bench.db", fake, args.seconds, args.rounds)
        if "postgres" in args.backends:
            admin = os.environ.get("TEAMROUTER_TEST_POSTGRES_URL", DEFAULT_PG)
            name = f"trbench_{os.getpid()}"
            try:
                await _admin(admin, f'CREATE DATABASE "{name}"')
            except OSError as exc:
                print(f"(PostgreSQL not reachable: {exc}; skipped)")
            else:
                try:
                    url = make_url(admin).set(database=name).render_as_string(hide_password=False)
                    rows += await bench_backend("postgres", url, fake, args.seconds, args.rounds)
                    print(f"\n{await _postgres_floor(url)}", flush=True)
                finally:
                    await _admin(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        fake.stop()


if __name__ == "__main__":
    asyncio.run(main())
