"""Routing: candidate endpoints and their order under request and organization constraints."""

from __future__ import annotations

from decimal import Decimal

import orjson
import pytest

from teamrouter.gateway.catalog import Catalog, Endpoint, parse_catalog
from teamrouter.gateway.routing import (
    InvalidRoutingRequest,
    MaxPrice,
    NoEndpointsError,
    OrgPolicy,
    ProviderPreferences,
    RouteCache,
    UnknownModelError,
    parse_provider_preferences,
    route,
)
from teamrouter.gateway.thresholds import Cutoffs

# Providers: cheap (collects data), mid (deny, no zdr), safe (deny + zdr), pricey (deny + zdr),
# idle (serves no model). x/chat's endpoints: pricey fp16, mid fp8, cheap int4, safe undeclared
# ("unknown"); only x/backup is distillable.
CATALOG = """
[[providers]]
slug = "idle"
kind = "openai"
base_url = "http://idle/v1"

[[providers]]
slug = "cheap"
name = "Cheap AI"
kind = "openai"
base_url = "http://cheap/v1"
data_collection = "allow"

[[providers]]
slug = "mid"
kind = "openai"
base_url = "http://mid/v1"
data_collection = "deny"

[[providers]]
slug = "safe"
kind = "anthropic"
base_url = "http://safe/v1"
data_collection = "deny"
zdr = true

[[providers]]
slug = "pricey"
kind = "openai"
base_url = "http://pricey/v1"
data_collection = "deny"
zdr = true

[[models]]
id = "x/chat"
context_length = 1000

[[models.endpoints]]
provider = "pricey"
prompt_price = "0.000010"
completion_price = "0.000030"
quantization = "fp16"

[[models.endpoints]]
provider = "mid"
prompt_price = "0.000002"
completion_price = "0.000004"
quantization = "fp8"

[[models.endpoints]]
provider = "cheap"
prompt_price = "0.000001"
completion_price = "0.000002"
quantization = "int4"

[[models.endpoints]]
provider = "safe"
prompt_price = "0.000003"
completion_price = "0.000003"
request_price = "0.01"

[[models]]
id = "x/backup"
context_length = 1000
distillable = true

[[models.endpoints]]
provider = "safe"
prompt_price = "0.000001"
completion_price = "0.000001"

[[models]]
id = "x/tie"
context_length = 1000

[[models.endpoints]]
provider = "mid"
prompt_price = "0.000001"
completion_price = "0.000001"

[[models.endpoints]]
provider = "cheap"
prompt_price = "0.000001"
completion_price = "0.000001"
"""


@pytest.fixture(scope="module")
def catalog() -> Catalog:
    return parse_catalog(CATALOG, env={})


def names(endpoints: list[Endpoint]) -> list[str]:
    return [e.id for e in endpoints]


def slugs(endpoints: list[Endpoint]) -> list[str]:
    return [e.provider.slug for e in endpoints]


def go(catalog: Catalog, provider: object = None, *, org: OrgPolicy | None = None, **kw: object) -> list[str]:
    kw.setdefault("model", "x/chat")
    return slugs(route(catalog, prefs=parse_provider_preferences(provider), org=org, **kw))  # type: ignore[arg-type]


def test_default_is_cheapest_first(catalog: Catalog) -> None:
    # Per million tokens, prompt + completion + the request price spread over a 1,000-token
    # reference request: cheap 3, mid 6, safe 6 + 10 000 (its $0.01 a request), pricey 40.
    assert go(catalog) == ["cheap", "mid", "safe", "pricey"]


def test_a_per_request_fee_counts_in_cheapest_first() -> None:
    # "fee" is cheaper per token but charges $0.01 a request: for a 1,000-token reference request
    # it costs ~$0.0102, "mid" $0.006.
    fees = parse_catalog(
        CATALOG
        + """
[[models]]
id = "x/fee"
context_length = 1000

[[models.endpoints]]
provider = "cheap"
prompt_price = "0.0000001"
completion_price = "0.0000001"
request_price = "0.01"

[[models.endpoints]]
provider = "mid"
prompt_price = "0.000002"
completion_price = "0.000004"
""",
        env={},
    )
    assert go(fees, model="x/fee") == ["mid", "cheap"]
    assert go(fees, {"sort": "price"}, model="x/fee") == ["mid", "cheap"]


def test_price_ties_keep_catalog_order(catalog: Catalog) -> None:
    assert go(catalog, model="x/tie") == ["mid", "cheap"]


def test_order_puts_listed_providers_first_then_the_rest_by_price(catalog: Catalog) -> None:
    assert go(catalog, {"order": ["pricey", "safe"]}) == ["pricey", "safe", "cheap", "mid"]


def test_order_matches_display_name_case_insensitively(catalog: Catalog) -> None:
    assert go(catalog, {"order": ["cheap ai"]})[0] == "cheap"
    assert go(catalog, {"order": ["PRICEY"]})[0] == "pricey"


def test_order_without_fallbacks_uses_only_listed(catalog: Catalog) -> None:
    assert go(catalog, {"order": ["safe", "mid"], "allow_fallbacks": False}) == ["safe", "mid"]


def test_no_fallbacks_without_order_is_the_single_best(catalog: Catalog) -> None:
    assert go(catalog, {"allow_fallbacks": False}) == ["cheap"]


def test_only_and_ignore(catalog: Catalog) -> None:
    assert go(catalog, {"only": ["pricey", "mid"]}) == ["mid", "pricey"]
    assert go(catalog, {"ignore": ["cheap", "mid"]}) == ["safe", "pricey"]


def test_privacy_filters(catalog: Catalog) -> None:
    assert go(catalog, {"data_collection": "deny"}) == ["mid", "safe", "pricey"]
    assert go(catalog, {"zdr": True}) == ["safe", "pricey"]
    assert go(catalog, {"data_collection": "allow", "zdr": False}) == ["cheap", "mid", "safe", "pricey"]


def test_max_price_is_per_million_tokens(catalog: Catalog) -> None:
    # $2 per million prompt tokens = 0.000002 per token: cheap and mid qualify.
    assert go(catalog, {"max_price": {"prompt": 2}}) == ["cheap", "mid"]
    assert go(catalog, {"max_price": {"completion": "3"}}) == ["cheap", "safe"]
    assert go(catalog, {"max_price": {"request": 0.001}}) == ["cheap", "mid", "pricey"]
    with pytest.raises(NoEndpointsError, match=r"model x/chat were excluded by provider.max_price.prompt"):
        go(catalog, {"max_price": {"prompt": 0.5}})


def test_sort_by_latency_and_throughput_with_stats(catalog: Catalog) -> None:
    stats = {"latency": {"pricey": 100.0, "mid": 300.0}, "throughput": {"safe": 50.0, "mid": 80.0}}
    # Measured first (fastest first), then unmeasured by price.
    assert go(catalog, {"sort": "latency"}, stats=stats) == ["pricey", "mid", "cheap", "safe"]
    assert go(catalog, {"sort": "throughput"}, stats=stats) == ["mid", "safe", "cheap", "pricey"]
    # Without observations the sort falls back to price.
    assert go(catalog, {"sort": "latency"}) == ["cheap", "mid", "safe", "pricey"]


def test_org_can_only_tighten(catalog: Catalog) -> None:
    org = OrgPolicy(only=("mid", "safe", "pricey"), ignore=("pricey",))
    # Request asks for cheap+mid+pricey; intersection with org's only is mid (pricey ignored by org).
    assert go(catalog, {"only": ["cheap", "mid", "pricey"]}, org=org) == ["mid"]
    # A request cannot undo the org's privacy: "allow" loses to the org's "deny" / ZDR.
    strict = OrgPolicy(data_collection="deny", zdr_only=True)
    assert go(catalog, {"data_collection": "allow", "zdr": False}, org=strict) == ["safe", "pricey"]
    # allow_fallbacks = false on the org side wins over a request's true.
    assert go(catalog, {"allow_fallbacks": True}, org=OrgPolicy(allow_fallbacks=False)) == ["cheap"]
    # Org order and sort are defaults the request may override.
    assert go(catalog, org=OrgPolicy(order=("pricey",))) == ["pricey", "cheap", "mid", "safe"]
    assert go(catalog, {"order": ["mid"]}, org=OrgPolicy(order=("pricey",)))[0] == "mid"


def test_org_policy_from_settings(catalog: Catalog) -> None:
    org = OrgPolicy.from_settings(
        {
            "provider": {
                "order": None,
                "only": None,
                "ignore": ["cheap"],
                "sort": "price",
                "allow_fallbacks": True,
            },
            "privacy": {"data_collection": "deny", "zdr_only": False},
        }
    )
    assert org.ignore == ("cheap",) and org.data_collection == "deny"
    assert go(catalog, org=org) == ["mid", "safe", "pricey"]
    with pytest.raises(InvalidRoutingRequest, match=r"settings\.privacy\.data_collection"):
        OrgPolicy.from_settings({"privacy": {"data_collection": "sometimes"}})


def test_models_fallback_list(catalog: Catalog) -> None:
    got = route(catalog, model="x/chat", models=["x/backup"], prefs=parse_provider_preferences({"only": ["safe"]}))
    assert names(got) == ["x/chat@safe", "x/backup@safe"]
    # The first model may be excluded entirely; the fallback model still serves.
    got = route(catalog, model="x/tie", models=["x/backup"], prefs=parse_provider_preferences({"zdr": True}))
    assert names(got) == ["x/backup@safe"]
    # `models` alone (no `model`) is allowed, duplicates are dropped.
    assert names(route(catalog, model=None, models=["x/backup", "x/backup"])) == ["x/backup@safe"]


@pytest.mark.parametrize(
    ("provider", "org", "why"),
    [
        ({"ignore": ["cheap", "mid", "safe", "pricey"]}, None, "provider.ignore"),
        ({"only": ["idle"]}, None, "provider.only"),
        ({"only": ["cheap"]}, OrgPolicy(only=("mid",)), "the organization's allowed providers"),
        (None, OrgPolicy(ignore=("cheap", "mid", "safe", "pricey")), "the organization's ignored providers"),
        ({"only": ["cheap"], "data_collection": "deny"}, None, 'provider.data_collection = "deny"'),
        (
            {"only": ["cheap"]},
            OrgPolicy(data_collection="deny"),
            'the organization\'s privacy setting data_collection = "deny"',
        ),
        ({"only": ["mid"], "zdr": True}, None, "provider.zdr = true"),
        ({"only": ["mid"]}, OrgPolicy(zdr_only=True), "the organization's privacy setting zdr_only = true"),
        (
            {"order": ["idle"], "allow_fallbacks": False},
            None,
            "provider.order with allow_fallbacks = false",
        ),
    ],
)
def test_errors_say_which_constraint_removed_the_candidates(
    catalog: Catalog, provider: object, org: OrgPolicy | None, why: str
) -> None:
    with pytest.raises(NoEndpointsError) as info:
        go(catalog, provider, org=org)
    assert f"All endpoints for model x/chat were excluded by {why}" in str(info.value)
    assert info.value.status == 503


def test_an_org_order_without_fallbacks_confines_requests_to_it(catalog: Catalog) -> None:
    org = OrgPolicy(order=("safe",), allow_fallbacks=False)
    assert go(catalog, None, org=org) == ["safe"]
    # The request's own order is a preference: it re-ranks, but cannot reach past the org's list.
    assert go(catalog, {"order": ["cheap", "safe"]}, org=org) == ["safe"]
    # Nor does an order naming none of the org's providers leave nothing, when the request allows
    # fallbacks: the org's list is what it falls back to, in the request's order where it has one.
    assert go(catalog, {"order": ["cheap"]}, org=org) == ["safe"]
    wider = OrgPolicy(order=("safe", "pricey"), allow_fallbacks=False)
    assert go(catalog, {"order": ["pricey"]}, org=wider) == ["pricey", "safe"]
    assert go(catalog, {"order": ["pricey"], "allow_fallbacks": False}, org=wider) == ["pricey"]
    with pytest.raises(NoEndpointsError) as info:
        go(catalog, {"order": ["cheap"], "allow_fallbacks": False}, org=org)
    assert "provider.order with allow_fallbacks = false" in str(info.value)
    with pytest.raises(NoEndpointsError) as info:
        go(catalog, {"only": ["cheap"]}, org=org)
    assert "the organization's provider order with allow_fallbacks = false" in str(info.value)
    with pytest.raises(NoEndpointsError) as info:
        go(catalog, {"order": ["idle"]}, org=OrgPolicy(allow_fallbacks=False))
    assert "provider.order with the organization's allow_fallbacks = false" in str(info.value)


def test_a_requests_sort_wins_over_the_orgs_order(catalog: Catalog) -> None:
    org = OrgPolicy(order=("pricey",))
    assert go(catalog, None, org=org)[0] == "pricey"
    assert go(catalog, {"sort": "price"}, org=org)[0] == "cheap"


def test_error_lists_every_model(catalog: Catalog) -> None:
    with pytest.raises(NoEndpointsError) as info:
        route(
            catalog,
            model="x/chat",
            models=["x/backup"],
            prefs=parse_provider_preferences({"only": ["idle"]}),
        )
    assert info.value.reasons == {"x/chat": "provider.only", "x/backup": "provider.only"}


@pytest.mark.parametrize(
    ("provider", "field", "words"),
    [
        ({"only": ["nobody"]}, "provider.only", "unknown provider 'nobody'"),
        ({"order": ["cheap", "nobody"]}, "provider.order", "unknown provider 'nobody'"),
        ({"ignore": ["nobody"]}, "provider.ignore", "unknown provider 'nobody'"),
        ({"only": []}, "provider.only", "must not be empty"),
    ],
)
def test_a_provider_the_request_names_must_exist(catalog: Catalog, provider: object, field: str, words: str) -> None:
    # A typo is the client's to fix (400 naming the field), not "no provider available" (503).
    with pytest.raises(InvalidRoutingRequest) as info:
        go(catalog, provider)
    assert info.value.field == field and words in str(info.value)


def test_providers_are_named_by_slug_or_display_name_in_any_case(catalog: Catalog) -> None:
    assert go(catalog, {"only": ["cheap ai", "MID"]}) == ["cheap", "mid"]


def test_unknown_model(catalog: Catalog) -> None:
    with pytest.raises(UnknownModelError, match="nope/model is not a valid model ID"):
        route(catalog, model="x/chat", models=["nope/model"])
    with pytest.raises(InvalidRoutingRequest, match="model"):
        route(catalog, model=None)


@pytest.mark.parametrize(
    ("provider", "field"),
    [
        ([], "provider"),
        ({"orderr": ["a"]}, "provider.orderr"),
        ({"order": "cheap"}, "provider.order"),
        ({"only": [1]}, "provider.only"),
        ({"ignore": [""]}, "provider.ignore"),
        ({"allow_fallbacks": "no"}, "provider.allow_fallbacks"),
        ({"sort": "fastest"}, "provider.sort"),
        ({"data_collection": "maybe"}, "provider.data_collection"),
        ({"zdr": 1}, "provider.zdr"),
        ({"max_price": 5}, "provider.max_price"),
        ({"max_price": {"prompt": -1}}, "provider.max_price.prompt"),
        ({"max_price": {"prompt": "lots"}}, "provider.max_price.prompt"),
        ({"max_price": {"tokens": 1}}, "provider.max_price.tokens"),
        ({"require_parameters": "yes"}, "provider.require_parameters"),
        ({"only": ["a"] * 101}, "provider.only"),
    ],
)
def test_provider_object_is_validated_strictly(provider: object, field: str) -> None:
    with pytest.raises(InvalidRoutingRequest) as info:
        parse_provider_preferences(provider)
    assert info.value.field == field
    assert str(info.value).startswith(field + ":")


def test_known_openrouter_extras_are_accepted() -> None:
    prefs = parse_provider_preferences({"require_parameters": True, "max_price": {"image": 1, "audio": 1}})
    assert prefs.max_price is not None and prefs.max_price.prompt is None


def test_route_cache_answers_as_route_does(catalog: Catalog) -> None:
    cache = RouteCache(catalog, max_entries=2)
    org = OrgPolicy(data_collection="deny")
    cases: list[tuple[str | None, tuple[str, ...], OrgPolicy | None]] = [
        ("x/chat", (), None),
        ("x/chat", (), org),
        ("x/tie", ("x/backup",), None),
        (None, ("x/backup",), OrgPolicy(data_collection="deny")),  # an equal policy is the same key
    ]
    for _ in range(2):  # the second round is served from the cache (emptied once when full)
        for model, models, policy in cases:
            expected = route(catalog, model=model, models=models, org=policy)
            assert list(cache.route(model=model, models=models, prefs=None, org=policy)) == expected
    prefs = parse_provider_preferences({"only": ["safe"]})
    assert names(list(cache.route(model="x/chat", models=(), prefs=prefs, org=None))) == ["x/chat@safe"]
    assert len(cache._routes) <= 2
    for _ in range(2):  # failures are not cached
        with pytest.raises(UnknownModelError):
            cache.route(model="nope/model", models=(), prefs=None, org=None)
        with pytest.raises(NoEndpointsError):
            cache.route(model="x/chat", models=(), prefs=None, org=OrgPolicy(only=("nobody",)))


# -- every field the official `openrouter` SDK can send -------------------------------------------


def sdk_wire(**fields: object) -> object:
    """A `provider` object exactly as the `openrouter` SDK puts it on the wire."""
    from openrouter import components, utils

    return orjson.loads(utils.marshal_json(components.ProviderPreferences(**fields), components.ProviderPreferences))


def test_the_sdks_provider_object_is_accepted_whole() -> None:
    from openrouter import components

    wire = sdk_wire(
        order=["mid"],
        only=["mid", "safe"],
        ignore=["cheap"],
        allow_fallbacks=True,
        require_parameters=False,
        data_collection="deny",
        zdr=False,
        enforce_distillable_text=False,
        quantizations=["fp8", "unknown"],
        sort=components.ProviderSortConfig(by="latency", partition="none"),
        preferred_max_latency=components.PercentileLatencyCutoffs(p50=1.5, p90=3),
        preferred_min_throughput=50,
        max_price=components.MaxPrice(prompt="5", completion="10", request="0.1", image="0.01", audio="0.02"),
        options={"fireworks": {"a": 1}, "openai": {"b": {"c": 2}}},
    )
    prefs = parse_provider_preferences(wire)
    assert prefs.quantizations == {"fp8", "unknown"} and prefs.enforce_distillable_text is False
    assert (prefs.sort, prefs.sort_partition) == ("latency", "none")
    assert prefs.preferred_max_latency == Cutoffs(p50=1.5, p90=3.0)
    assert prefs.preferred_min_throughput == Cutoffs(p50=50.0)
    assert prefs.max_price == MaxPrice(prompt=Decimal(5), completion=Decimal(10), request=Decimal("0.1"))
    # Explicit nulls (the SDK sends them for nullable fields set to None) mean "not given".
    nulls = sdk_wire(quantizations=None, preferred_max_latency=None, enforce_distillable_text=None, sort=None)
    assert parse_provider_preferences(nulls) == ProviderPreferences()


def test_quantizations_keep_only_the_listed_levels(catalog: Catalog) -> None:
    assert go(catalog, {"quantizations": ["fp8", "fp16"]}) == ["mid", "pricey"]
    # An endpoint the catalog gives no quantization is "unknown".
    assert go(catalog, {"quantizations": ["unknown", "int4"]}) == ["cheap", "safe"]
    with pytest.raises(NoEndpointsError) as info:
        go(catalog, {"quantizations": ["fp4", "bf16"]})
    assert "All endpoints for model x/chat were excluded by provider.quantizations" in str(info.value)
    # Other models: the default is "unknown" for all of x/backup's endpoints.
    assert go(catalog, {"quantizations": ["unknown"]}, model="x/backup") == ["safe"]


def test_enforce_distillable_text_keeps_only_models_the_catalog_marks(catalog: Catalog) -> None:
    assert go(catalog, {"enforce_distillable_text": False}) == ["cheap", "mid", "safe", "pricey"]
    got = route(
        catalog,
        model="x/chat",
        models=["x/backup"],
        prefs=parse_provider_preferences({"enforce_distillable_text": True}),
    )
    assert names(got) == ["x/backup@safe"]
    with pytest.raises(NoEndpointsError) as info:
        go(catalog, {"enforce_distillable_text": True})
    assert "model x/chat were excluded by provider.enforce_distillable_text = true" in str(info.value)


LATENCY_MS = {"cheap": 900.0, "mid": 100.0, "pricey": 300.0}  # safe unmeasured
THROUGHPUT = {"cheap": 10.0, "mid": 80.0, "safe": 50.0}  # pricey unmeasured
STATS = {"latency": LATENCY_MS, "throughput": THROUGHPUT}


def test_preferred_max_latency_puts_endpoints_that_meet_it_first_and_excludes_none(catalog: Catalog) -> None:
    # Seconds, p50 for a bare number: mid and pricey meet 0.5 s, safe is unmeasured, cheap misses.
    assert go(catalog, {"preferred_max_latency": 0.5}, stats=STATS) == ["mid", "pricey", "safe", "cheap"]
    # Against running means every cutoff given applies, so the tightest (0.2 s) decides.
    cutoffs = {"preferred_max_latency": {"p50": 1, "p90": 0.2, "p99": None}}
    assert go(catalog, cutoffs, stats=STATS) == ["mid", "safe", "cheap", "pricey"]
    # Nothing measured: every endpoint is equally unknown, the order is the usual one.
    assert go(catalog, {"preferred_max_latency": 0.5}) == ["cheap", "mid", "safe", "pricey"]
    # Nobody meets it: still every endpoint, cheapest first.
    assert go(catalog, {"preferred_max_latency": 0.001}, stats=STATS) == ["safe", "cheap", "mid", "pricey"]


def test_preferred_min_throughput_and_both_together(catalog: Catalog) -> None:
    assert go(catalog, {"preferred_min_throughput": 40}, stats=STATS) == ["mid", "safe", "pricey", "cheap"]
    assert go(catalog, {"preferred_min_throughput": {"p50": 20, "p75": 60}}, stats=STATS) == [
        "mid",
        "pricey",
        "cheap",
        "safe",
    ]
    # Both: mid meets both; pricey meets latency and is unmeasured for throughput; safe is the
    # reverse; cheap misses both.
    both = {"preferred_max_latency": 0.5, "preferred_min_throughput": 40}
    assert go(catalog, both, stats=STATS) == ["mid", "safe", "pricey", "cheap"]


def test_preferred_thresholds_may_put_a_fallback_model_first(catalog: Catalog) -> None:
    # As on OpenRouter: a fallback model's endpoint that meets the threshold goes before the first
    # model's endpoints that miss it.
    stats = {"latency": {"mid": 900.0, "cheap": 900.0, "safe": 100.0}}
    prefs = parse_provider_preferences({"preferred_max_latency": 0.5})
    got = route(catalog, model="x/tie", models=["x/backup"], prefs=prefs, stats=stats)
    assert names(got) == ["x/backup@safe", "x/tie@mid", "x/tie@cheap"]


def test_preferred_thresholds_never_widen_what_is_allowed(catalog: Catalog) -> None:
    fast_cheap = {"latency": {"cheap": 50.0, "mid": 900.0, "safe": 900.0, "pricey": 900.0}}
    prefer = {"preferred_max_latency": 0.1}
    # With fallbacks off, still one endpoint: the one that meets the preference.
    assert go(catalog, {**prefer, "allow_fallbacks": False}, stats=fast_cheap) == ["cheap"]
    # An organization's confinement and privacy settings hold whatever the request prefers.
    confined = OrgPolicy(order=("safe", "pricey"), allow_fallbacks=False)
    assert go(catalog, prefer, org=confined, stats=fast_cheap) == ["safe", "pricey"]
    assert go(catalog, prefer, org=OrgPolicy(data_collection="deny"), stats=fast_cheap) == ["mid", "safe", "pricey"]
    assert go(catalog, {**prefer, "quantizations": ["fp8", "fp16"]}, stats=fast_cheap) == ["mid", "pricey"]


def test_quantizations_and_distillable_only_narrow_an_organizations_choice(catalog: Catalog) -> None:
    assert go(catalog, {"quantizations": ["fp8", "int4"]}, org=OrgPolicy(ignore=("mid",))) == ["cheap"]
    with pytest.raises(NoEndpointsError):
        go(catalog, {"quantizations": ["int4"]}, org=OrgPolicy(data_collection="deny"))
    assert go(catalog, {"quantizations": ["fp16"]}, org=OrgPolicy(only=("mid", "pricey"))) == ["pricey"]


def test_route_cache_applies_thresholds_to_live_figures(catalog: Catalog) -> None:
    latency: dict[str, float] = {}
    cache = RouteCache(catalog, stats={"latency": latency, "throughput": {}})
    prefs = parse_provider_preferences({"preferred_max_latency": 0.5})
    first = [e.provider.slug for e in cache.route(model="x/chat", models=(), prefs=prefs, org=None)]
    assert first == ["cheap", "mid", "safe", "pricey"]
    latency.update(cheap=900.0, pricey=100.0)
    moved = [e.provider.slug for e in cache.route(model="x/chat", models=(), prefs=prefs, org=None)]
    assert moved == ["pricey", "mid", "safe", "cheap"]


def test_sort_may_be_an_object_with_by_and_partition(catalog: Catalog) -> None:
    stats = {"latency": {"pricey": 100.0, "mid": 300.0}}
    assert go(catalog, {"sort": {"by": "latency"}}, stats=stats) == go(catalog, {"sort": "latency"}, stats=stats)
    assert go(catalog, {"sort": {"by": "price", "partition": "model"}}) == ["cheap", "mid", "safe", "pricey"]
    # "exacto" ranks by tool-calling quality on OpenRouter; without such figures, as the default.
    assert go(catalog, {"sort": "exacto"}) == ["cheap", "mid", "safe", "pricey"]


def test_partition_none_ranks_every_models_endpoints_together(catalog: Catalog) -> None:
    # x/backup@safe costs $2 per million reference tokens, less than any x/chat endpoint.
    grouped = route(catalog, model="x/chat", models=["x/backup"])
    assert names(grouped)[-1] == "x/backup@safe"
    prefs = parse_provider_preferences({"sort": {"by": "price", "partition": "none"}})
    together = route(catalog, model="x/chat", models=["x/backup"], prefs=prefs)
    assert names(together) == ["x/backup@safe", "x/chat@cheap", "x/chat@mid", "x/chat@safe", "x/chat@pricey"]
    # An order still comes first, across models too.
    prefs = parse_provider_preferences({"order": ["pricey"], "sort": {"partition": "none"}})
    assert names(route(catalog, model="x/chat", models=["x/backup"], prefs=prefs))[:2] == [
        "x/chat@pricey",
        "x/backup@safe",
    ]


@pytest.mark.parametrize(
    ("provider", "field", "words"),
    [
        ({"quantizations": "fp8"}, "provider.quantizations", "must be a list"),
        ({"quantizations": []}, "provider.quantizations", "must not be empty"),
        ({"quantizations": ["fp8", "fp7"]}, "provider.quantizations[1]", "must be one of int4, int8"),
        ({"quantizations": ["FP8"]}, "provider.quantizations[0]", "must be one of"),
        ({"quantizations": [8]}, "provider.quantizations[0]", "must be one of"),
        ({"enforce_distillable_text": "yes"}, "provider.enforce_distillable_text", "true or false"),
        ({"preferred_max_latency": "fast"}, "provider.preferred_max_latency", "non-negative number"),
        ({"preferred_max_latency": -1}, "provider.preferred_max_latency", "non-negative number"),
        ({"preferred_max_latency": True}, "provider.preferred_max_latency", "non-negative number"),
        ({"preferred_max_latency": {"p95": 1}}, "provider.preferred_max_latency.p95", "unknown field"),
        ({"preferred_max_latency": {"p50": "1"}}, "provider.preferred_max_latency.p50", "non-negative number"),
        ({"preferred_min_throughput": [50]}, "provider.preferred_min_throughput", "non-negative number"),
        ({"preferred_min_throughput": {"p99": -5}}, "provider.preferred_min_throughput.p99", "non-negative"),
        ({"options": []}, "provider.options", "object keyed by provider slug"),
        ({"options": {"openai": 1}}, "provider.options.openai", "must be an object"),
        ({"sort": {"by": "fastest"}}, "provider.sort.by", "must be one of"),
        ({"sort": {"partition": "all"}}, "provider.sort.partition", 'must be "model" or "none"'),
        ({"sort": {"order": "price"}}, "provider.sort.order", "unknown field"),
        ({"max_price": {"image": "lots"}}, "provider.max_price.image", "must be a number"),
        ({"max_price": {"audio": -1}}, "provider.max_price.audio", "non-negative"),
    ],
)
def test_new_provider_fields_are_validated_strictly(provider: object, field: str, words: str) -> None:
    with pytest.raises(InvalidRoutingRequest) as info:
        parse_provider_preferences(provider)
    assert info.value.field == field and words in info.value.problem
    assert str(info.value).startswith(field + ":")
