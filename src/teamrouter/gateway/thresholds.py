"""Soft performance preferences: a request's `provider.preferred_max_latency` (seconds) and
`provider.preferred_min_throughput` (tokens per second), each a number (OpenRouter's p50) or an
object of percentile cutoffs (`p50`, `p75`, `p90`, `p99`).

They only reorder: routing tries the endpoints that meet every cutoff first, then those whose
provider this process has not measured yet, then those measured to miss one. Nothing is excluded,
so they can never widen or narrow what the request and its organization allow.

The figures are the running means of gateway.stats, not percentiles: the mean stands in for every
percentile, so of the cutoffs given the tightest decides (the lowest latency, the highest
throughput). For a p90 or p99 cutoff that is lenient — a provider's tail is slower than its mean —
which is the safe side for a preference that never excludes. An unmeasured provider goes between
the two measured groups: ahead of one known to miss (it may well meet it) and behind one known to
meet it; put last, it would never be tried and so never measured.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass

from teamrouter.gateway.catalog import Endpoint

PERCENTILES: tuple[str, ...] = ("p50", "p75", "p90", "p99")
MEETS, UNMEASURED, MISSES = 0, 1, 2


@dataclass(frozen=True, slots=True)
class Cutoffs:
    """Percentile cutoffs; a bare number in the request is p50's."""

    p50: float | None = None
    p75: float | None = None
    p90: float | None = None
    p99: float | None = None

    def given(self) -> tuple[float, ...]:
        return tuple(v for v in (self.p50, self.p75, self.p90, self.p99) if v is not None)


def preference_tier(
    *,
    max_latency: Cutoffs | None,
    min_throughput: Cutoffs | None,
    stats: Mapping[str, Mapping[str, float]] | None,
) -> Callable[[Endpoint], int] | None:
    """A sort key ranking endpoints MEETS < UNMEASURED < MISSES, or None without preferences.
    `stats` holds "latency" in milliseconds and "throughput" in tokens per second, per provider."""
    checks: list[tuple[Mapping[str, float], Callable[[float], bool]]] = []
    figures = stats or {}
    latencies = max_latency.given() if max_latency is not None else ()
    if latencies:
        ceiling_ms = min(latencies) * 1000
        checks.append((figures.get("latency", {}), lambda ms: ms <= ceiling_ms))
    throughputs = min_throughput.given() if min_throughput is not None else ()
    if throughputs:
        floor = max(throughputs)
        checks.append((figures.get("throughput", {}), lambda rate: rate >= floor))
    if not checks:
        return None

    def tier(endpoint: Endpoint) -> int:
        worst = MEETS
        for measured, meets in checks:
            observed = measured.get(endpoint.provider.slug)
            if observed is None:
                worst = UNMEASURED
            elif not meets(observed):
                return MISSES
        return worst

    return tier
