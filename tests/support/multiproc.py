"""Worker processes for cross-process money tests (TESTPLAN A1/A2).

`run_reserve_workers(...)` starts N `python -m tests.support.multiproc` processes against the same
database; each waits for a common start time, fires its share of reserves concurrently (asyncio),
then settles every hold it won, and reports counts as JSON on stdout. Any error other than a 402 is
reported (so "database is locked" fails the test).
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def run_reserve_workers(
    *,
    database_url: str,
    account_id: str,
    key_ids: list[str],
    amount: int,
    total: int,
    processes: int,
    settle: bool = True,
    timeout: float = 120.0,
) -> list[dict[str, Any]]:
    start_at = time.time() + 1.5  # every process is up and connected before the first reserve
    share, extra = divmod(total, processes)
    procs = []
    for index in range(processes):
        job = {
            "database_url": database_url,
            "account_id": account_id,
            "key_ids": key_ids,
            "amount": amount,
            "count": share + (1 if index < extra else 0),
            "start_at": start_at,
            "settle": settle,
            "index": index,
        }
        proc = subprocess.Popen(
            [sys.executable, "-m", "tests.support.multiproc", json.dumps(job)],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": f"{ROOT}:{ROOT / 'src'}"},
        )
        procs.append(proc)
    results = []
    try:
        for proc in procs:
            out, err = proc.communicate(timeout=timeout)
            assert proc.returncode == 0, err.decode(errors="replace")
            results.append(json.loads(out.decode().strip().splitlines()[-1]))
    finally:
        for proc in procs:  # only ever our own children, by handle
            if proc.poll() is None:
                proc.kill()
                proc.communicate()
    return results


async def _worker(job: dict[str, Any]) -> dict[str, Any]:
    from teamrouter.clock import SystemClock
    from teamrouter.config import load_settings
    from teamrouter.domain.accounts.passwords import Passwords
    from teamrouter.domain.credits import holds
    from teamrouter.errors import PaymentRequired
    from teamrouter.mailer import OutboxMailer
    from teamrouter.runtime import Runtime
    from teamrouter.storage.db import Database

    settings = load_settings({}, env="dev", database_url=job["database_url"], secret_key="w" * 40, var_dir="/tmp")
    rt = Runtime(
        settings=settings,
        db=Database(job["database_url"], pool_size=4),
        clock=SystemClock(),
        mailer=OutboxMailer(Path("/tmp/outbox-unused"), "x@example.com"),
        passwords=Passwords(),
        secret=b"w" * 40,
    )
    errors: list[str] = []
    refused = 0
    won: list[str] = []

    async def one(n: int) -> None:
        nonlocal refused
        key_ids = job["key_ids"]
        key_id = key_ids[n % len(key_ids)] if key_ids else None
        try:
            hold = await holds.reserve(
                rt,
                account_id=job["account_id"],
                amount=job["amount"],
                idempotency_key=f"w{job['index']}-{n}-{uuid.uuid4().hex}",
                key_id=key_id,
            )
            won.append(hold.id)
        except PaymentRequired:
            refused += 1
        except Exception as exc:
            errors.append(f"{type(exc).__name__}: {exc}")

    try:
        async with rt.db.read() as session:  # warm the pool before the start line
            from sqlalchemy import text

            await session.execute(text("SELECT 1"))
        await asyncio.sleep(max(0.0, job["start_at"] - time.time()))
        await asyncio.gather(*(one(n) for n in range(job["count"])))
        settled = 0
        if job["settle"]:

            async def settle(hold_id: str) -> None:
                nonlocal settled
                try:
                    result = await holds.settle(rt, hold_id=hold_id, actual=job["amount"])
                    settled += int(result.applied)
                except Exception as exc:
                    errors.append(f"settle {type(exc).__name__}: {exc}")

            await asyncio.gather(*(settle(h) for h in won))
    finally:
        await rt.close()
    return {"ok": len(won), "refused": refused, "errors": errors, "settled": settled, "holds": won}


def main() -> None:
    job = json.loads(sys.argv[1])
    result = asyncio.run(_worker(job))
    print(json.dumps(result))


if __name__ == "__main__":
    main()
