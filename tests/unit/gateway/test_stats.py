"""What `provider.sort` = latency / throughput ranks by: running means of this process's answers."""

from __future__ import annotations

import pytest

from teamrouter.gateway.catalog import parse_catalog
from teamrouter.gateway.routing import OrgPolicy, RouteCache, parse_provider_preferences
from teamrouter.gateway.stats import ALPHA, ProviderStats

CATALOG = """
[[providers]]
slug = "quick"
kind = "openai"
base_url = "http://quick/v1"

[[providers]]
slug = "cheap"
kind = "openai"
base_url = "http://cheap/v1"

[[models]]
id = "x/chat"
context_length = 1000
[[models.endpoints]]
provider = "quick"
prompt_price = "0.000002"
completion_price = "0.000002"
[[models.endpoints]]
provider = "cheap"
prompt_price = "0.000001"
completion_price = "0.000001"
"""


def test_running_means_follow_the_newest_answers() -> None:
    stats = ProviderStats()
    stats.observe("a", latency_ms=100, tokens=50, generation_ms=500)  # a stream: 100 tokens/s
    assert stats.for_sort() == {"latency": {"a": 100.0}, "throughput": {"a": 100.0}}
    stats.observe("a", latency_ms=200, tokens=10, generation_ms=0)  # a JSON answer: 10 tokens in 0.2 s
    assert stats.for_sort()["latency"]["a"] == pytest.approx(100 + ALPHA * 100)
    assert stats.for_sort()["throughput"]["a"] == pytest.approx(100 + ALPHA * (50 - 100))
    stats.observe("b", latency_ms=30, tokens=0, generation_ms=0)  # no tokens: no throughput figure
    assert "b" in stats.for_sort()["latency"] and "b" not in stats.for_sort()["throughput"]


def test_routes_sorted_by_measured_figures_follow_them_as_they_move() -> None:
    stats = ProviderStats()
    routes = RouteCache(parse_catalog(CATALOG, env={}), stats=stats.for_sort())

    def first(prefs: object = None, org: OrgPolicy | None = None) -> str:
        chosen = routes.route(
            model="x/chat", models=(), prefs=parse_provider_preferences(prefs) if prefs else None, org=org
        )
        return chosen[0].provider.slug

    assert first({"sort": "latency"}) == "cheap"  # nothing measured yet: cheapest first
    stats.observe("quick", latency_ms=20, tokens=100, generation_ms=100)
    stats.observe("cheap", latency_ms=900, tokens=100, generation_ms=2000)
    assert first({"sort": "latency"}) == "quick" and first({"sort": "throughput"}) == "quick"
    assert first(org=OrgPolicy(sort="latency")) == "quick"  # an org's sort too, never memoised
    assert first() == "cheap"  # the default stays cheapest first
    for _ in range(20):  # quick slows down
        stats.observe("quick", latency_ms=5000, tokens=100, generation_ms=10000)
    assert first({"sort": "latency"}) == "cheap" and first(org=OrgPolicy(sort="latency")) == "cheap"
