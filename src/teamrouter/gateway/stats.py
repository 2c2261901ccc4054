"""Recent latency and throughput per provider, from this process's own answers: what a request's
`provider.sort` of "latency" or "throughput" ranks by (OpenRouter ranks by the same two figures), and
what `provider.preferred_max_latency` / `preferred_min_throughput` are held to (gateway.thresholds).

Each figure is an exponentially weighted mean, so a provider that slows down moves down within a
few answers. A provider with no answers yet has no figure, and routing places it after the measured
ones, cheapest first. Figures are per process: several workers each learn from their own traffic,
which needs no coordination and converges as quickly.
"""

from __future__ import annotations

from collections.abc import Mapping

# Weight of the newest answer in the running mean.
ALPHA = 0.2


class ProviderStats:
    def __init__(self) -> None:
        self._latency: dict[str, float] = {}  # ms from arrival to the upstream's first byte
        self._throughput: dict[str, float] = {}  # completion tokens per second of generation

    def observe(self, provider: str, *, latency_ms: int, tokens: int, generation_ms: int) -> None:
        """One complete answer (a failed or cancelled one says nothing about the provider's speed)."""
        _update(self._latency, provider, float(latency_ms))
        # A streamed answer's generation time starts at its first byte; a JSON answer arrives whole,
        # so its tokens are spread over the whole wait.
        seconds = (generation_ms if generation_ms > 0 else latency_ms) / 1000
        if tokens > 0 and seconds > 0:
            _update(self._throughput, provider, tokens / seconds)

    def for_sort(self) -> Mapping[str, Mapping[str, float]]:
        return {"latency": self._latency, "throughput": self._throughput}


def _update(means: dict[str, float], provider: str, value: float) -> None:
    previous = means.get(provider)
    means[provider] = value if previous is None else previous + ALPHA * (value - previous)
