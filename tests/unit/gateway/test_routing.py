"""Routing: candidate endpoints and their order under request and organization constraints."""

from __future__ import annotations

import pytest

from teamrouter.gateway.catalog import Catalog, Endpoint, parse_catalog
from teamrouter.gateway.routing import (
    InvalidRoutingRequest,
    NoEndpointsError,
    OrgPolicy,
    RouteCache,
    UnknownModelError,
    parse_provider_preferences,
    route,
)

# Providers: cheap (collects data), mid (deny, no zdr), safe (deny + zdr), pricey (deny + zdr),
# idle (serves no model).
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

[[models.endpoints]]
provider = "mid"
prompt_price = "0.000002"
completion_price = "0.000004"

[[models.endpoints]]
provider = "cheap"
prompt_price = "0.000001"
completion_price = "0.000002"

[[models.endpoints]]
provider = "safe"
prompt_price = "0.000003"
completion_price = "0.000003"
request_price = "0.01"

[[models]]
id = "x/backup"
context_length = 1000

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
