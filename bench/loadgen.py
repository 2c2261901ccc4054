"""A small closed-loop load generator on aiohttp: N workers, each sending the next request as soon as
the previous one is answered, for a fixed time. Reports req/s and latency percentiles; for streams
the latency is the time to the first body byte (TTFB), the number a streaming client feels."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass

import aiohttp


@dataclass
class Result:
    requests: int
    errors: int
    seconds: float
    latencies: list[float]

    @property
    def rps(self) -> float:
        return self.requests / self.seconds

    def percentile(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def run(
    url: str,
    body: bytes,
    headers: dict[str, str],
    *,
    concurrency: int,
    seconds: float,
    stream: bool,
    warmup: float = 0.5,
) -> Result:
    connector = aiohttp.TCPConnector(limit=concurrency, force_close=False)
    latencies: list[float] = []
    errors = 0
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:

        async def one() -> float:
            started = time.perf_counter()
            async with session.post(url, data=body) as response:
                if response.status != 200:
                    raise RuntimeError(f"status {response.status}: {(await response.read())[:200]!r}")
                if stream:
                    first = await response.content.readany()
                    elapsed = time.perf_counter() - started
                    assert first
                    while await response.content.readany():
                        pass
                    return elapsed
                await response.read()
                return time.perf_counter() - started

        async def worker(until: float, record: bool) -> None:
            nonlocal errors
            while time.perf_counter() < until:
                try:
                    latency = await one()
                except Exception:
                    errors += 1
                    if errors > 100:
                        raise
                    continue
                if record:
                    latencies.append(latency)

        await asyncio.gather(*(worker(time.perf_counter() + warmup, False) for _ in range(concurrency)))
        started = time.perf_counter()
        await asyncio.gather(*(worker(started + seconds, True) for _ in range(concurrency)))
        elapsed = time.perf_counter() - started
    return Result(requests=len(latencies), errors=errors, seconds=elapsed, latencies=latencies)
