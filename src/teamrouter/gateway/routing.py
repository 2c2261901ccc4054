"""Choosing endpoints: which provider endpoints may serve a request, and in what order.

Pure functions over the catalog. The request's ``provider`` object follows OpenRouter's
provider routing, field for field as the official `openrouter` SDK sends it:

- ``order``, ``only``, ``ignore``, ``allow_fallbacks``, ``data_collection`` ("allow" | "deny"), ``zdr``;
- ``sort``: "price" | "latency" | "throughput" | "exacto", or an object ``{by, partition}``;
  ``partition = "none"`` ranks the endpoints of every requested model together instead of model by
  model. "exacto" ranks by tool-calling quality on OpenRouter; teamrouter has no such signal, so it
  ranks as the default does (cheapest first).
- ``max_price``: ``prompt`` / ``completion`` in USD per *million* tokens and ``request`` USD per
  request, as in OpenRouter's API (catalog prices are per token); ``image`` and ``audio`` (USD per
  unit) are validated and always met: the catalog prices images and audio as prompt tokens.
- ``quantizations``: only endpoints whose catalog ``quantization`` is listed ("unknown" when the
  catalog says none).
- ``enforce_distillable_text = true``: only models the catalog marks ``distillable``.
- ``preferred_max_latency`` / ``preferred_min_throughput``: soft, see gateway.thresholds.
- ``require_parameters`` is accepted and ignored (the catalog does not list supported parameters).
- ``options`` (provider-specific request options keyed by provider slug) is validated as an object of
  objects and not forwarded: merged into an upstream body, a client's options could override what
  the gateway sets and bills by (``max_tokens``, ``stream``, ``model``).

Organization settings can only tighten what a request may use: ``only`` lists are
intersected, ``ignore`` lists united, "deny" and ZDR win, ``allow_fallbacks = false`` on either
side wins. ``order`` and ``sort`` are preferences, so the request's take precedence. The request's
own filters (``quantizations``, distillable) only remove endpoints, and its soft preferences only
reorder what every filter left.

Provider names in lists match a provider's slug or display name, case-insensitively.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any, Literal, TypeVar

from teamrouter.gateway.catalog import QUANTIZATIONS, Catalog, Endpoint
from teamrouter.gateway.thresholds import PERCENTILES, Cutoffs, preference_tier

Sort = Literal["price", "latency", "throughput", "exacto"]
SORTS: tuple[str, ...] = ("price", "latency", "throughput", "exacto")
Partition = Literal["model", "none"]
PARTITIONS: tuple[str, ...] = ("model", "none")
_PER_MILLION = Decimal(10**6)
_T = TypeVar("_T")


class RoutingError(Exception):
    """Base of routing failures; ``status`` is the HTTP status the API should answer."""

    status = 400


class InvalidRoutingRequest(RoutingError):
    """The ``provider`` object, ``model`` or ``models`` is malformed (names the field)."""

    status = 400

    def __init__(self, field: str, problem: str) -> None:
        super().__init__(f"{field}: {problem}")
        self.field = field
        self.problem = problem


class UnknownModelError(RoutingError):
    """A requested model id is not in the catalog."""

    status = 400

    def __init__(self, model_id: str, field: str = "model") -> None:
        super().__init__(f"{model_id} is not a valid model ID")
        self.model_id = model_id
        self.field = field  # `model`, or `models` for an entry of the fallback list


class NoEndpointsError(RoutingError):
    """Every endpoint of every requested model was excluded; the message says by what."""

    status = 503

    def __init__(self, reasons: Mapping[str, str]) -> None:
        parts = [f"All endpoints for model {m} were excluded by {why}" for m, why in reasons.items()]
        super().__init__("No endpoint available. " + "; ".join(parts) + ".")
        self.reasons = dict(reasons)


@dataclass(frozen=True, slots=True)
class MaxPrice:
    """Price ceilings: prompt/completion in USD per million tokens, request in USD."""

    prompt: Decimal | None = None
    completion: Decimal | None = None
    request: Decimal | None = None


@dataclass(frozen=True, slots=True)
class ProviderPreferences:
    """The parsed ``provider`` object of a request (all fields optional)."""

    order: tuple[str, ...] | None = None
    only: tuple[str, ...] | None = None
    ignore: tuple[str, ...] | None = None
    allow_fallbacks: bool | None = None
    sort: Sort | None = None
    data_collection: Literal["allow", "deny"] | None = None
    zdr: bool | None = None
    max_price: MaxPrice | None = None
    sort_partition: Partition | None = None  # `sort.partition`; "model" (by model) when absent
    quantizations: frozenset[str] | None = None
    enforce_distillable_text: bool | None = None
    preferred_max_latency: Cutoffs | None = None  # seconds
    preferred_min_throughput: Cutoffs | None = None  # tokens per second


@dataclass(frozen=True, slots=True)
class OrgPolicy:
    """What an organization's admins allow (settings ``provider`` + ``privacy``)."""

    order: tuple[str, ...] | None = None
    only: tuple[str, ...] | None = None
    ignore: tuple[str, ...] | None = None
    allow_fallbacks: bool | None = None
    sort: Sort | None = None
    data_collection: Literal["allow", "deny"] = "allow"
    zdr_only: bool = False

    @classmethod
    def from_settings(cls, settings: Mapping[str, object]) -> OrgPolicy:
        """Build from the settings document ``{provider: {...}, privacy: {...}}``."""
        provider = settings.get("provider") or {}
        privacy = settings.get("privacy") or {}
        if not isinstance(provider, Mapping) or not isinstance(privacy, Mapping):
            raise InvalidRoutingRequest("settings", "provider and privacy must be objects")
        prefs = parse_provider_preferences(
            {k: v for k, v in provider.items() if v is not None}, where="settings.provider"
        )
        data_collection = privacy.get("data_collection", "allow") or "allow"
        if data_collection not in ("allow", "deny"):
            raise InvalidRoutingRequest("settings.privacy.data_collection", "must be allow or deny")
        zdr_only = privacy.get("zdr_only", False) or False
        if not isinstance(zdr_only, bool):
            raise InvalidRoutingRequest("settings.privacy.zdr_only", "must be a boolean")
        return cls(
            order=prefs.order,
            only=prefs.only,
            ignore=prefs.ignore,
            allow_fallbacks=prefs.allow_fallbacks,
            sort=prefs.sort,
            data_collection=data_collection,  # type: ignore[arg-type]  # checked above
            zdr_only=zdr_only,
        )


_PREF_FIELDS = {
    "order", "only", "ignore", "allow_fallbacks", "sort", "data_collection", "zdr", "max_price",
    "require_parameters", "quantizations", "enforce_distillable_text", "preferred_max_latency",
    "preferred_min_throughput", "options",
}  # fmt: skip
_MAX_PRICE_FIELDS = ("prompt", "completion", "request", "image", "audio")
MAX_LIST = 100  # longer provider lists are surely a mistake; bounded work per request


def _names(value: object, field: str) -> tuple[str, ...]:
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise InvalidRoutingRequest(field, "must be a list of provider names")
    if len(value) > MAX_LIST:
        raise InvalidRoutingRequest(field, f"at most {MAX_LIST} entries")
    return tuple(value)


def _bool(value: object, field: str) -> bool:
    if not isinstance(value, bool):
        raise InvalidRoutingRequest(field, "must be true or false")
    return value


def _money(value: object, field: str) -> Decimal:
    # OpenRouter's SDKs send numbers or strings; str() of a float gives its shortest decimal.
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        raise InvalidRoutingRequest(field, "must be a number")
    try:
        amount = Decimal(str(value))
    except InvalidOperation:
        raise InvalidRoutingRequest(field, "must be a number") from None
    if not amount.is_finite() or amount < 0:
        raise InvalidRoutingRequest(field, "must be a non-negative number")
    return amount


def _sort(value: object, field: str) -> tuple[Sort | None, Partition | None]:
    """A sort name, or the `openrouter` SDK's ProviderSortConfig ``{by, partition}``."""
    if not isinstance(value, Mapping):
        if value not in SORTS:
            raise InvalidRoutingRequest(field, f"must be one of {', '.join(SORTS)}, or an object {{by, partition}}")
        return value, None  # type: ignore[return-value]  # checked against SORTS
    for key in value:
        if key not in ("by", "partition"):
            raise InvalidRoutingRequest(f"{field}.{key}", "unknown field")
    by, partition = value.get("by"), value.get("partition")
    if by is not None and by not in SORTS:
        raise InvalidRoutingRequest(f"{field}.by", f"must be one of {', '.join(SORTS)}")
    if partition is not None and partition not in PARTITIONS:
        raise InvalidRoutingRequest(f"{field}.partition", 'must be "model" or "none"')
    return by, partition


def _quantizations(value: object, field: str) -> frozenset[str]:
    if not isinstance(value, list):
        raise InvalidRoutingRequest(field, "must be a list of quantization levels")
    if not value:
        # As for `only`: a filter that allows nothing would read as "no provider available" (503).
        raise InvalidRoutingRequest(field, "must not be empty: it would allow no endpoint")
    if len(value) > MAX_LIST:
        raise InvalidRoutingRequest(field, f"at most {MAX_LIST} entries")
    for i, level in enumerate(value):
        if not isinstance(level, str) or level not in QUANTIZATIONS:
            raise InvalidRoutingRequest(f"{field}[{i}]", f"must be one of {', '.join(QUANTIZATIONS)}")
    return frozenset(value)


def _cutoffs(value: object, field: str) -> Cutoffs:
    """A number (p50) or an object of percentile cutoffs, each a number or null."""
    if not isinstance(value, Mapping):
        return Cutoffs(p50=_measure(value, field))
    for key in value:
        if key not in PERCENTILES:
            raise InvalidRoutingRequest(f"{field}.{key}", f"unknown field (expected {', '.join(PERCENTILES)})")
    given: dict[str, Any] = {
        key: _measure(value[key], f"{field}.{key}") for key in PERCENTILES if value.get(key) is not None
    }
    return Cutoffs(**given)


def _measure(value: object, field: str) -> float:
    try:
        number = float(value) if isinstance(value, int | float) and not isinstance(value, bool) else math.nan
    except OverflowError:  # an int too large for a float
        number = math.nan
    if not math.isfinite(number) or number < 0:
        raise InvalidRoutingRequest(field, "must be a non-negative number")
    return number


def _options(value: object, field: str) -> None:
    # Validated for shape only, and dropped (see the module docstring); unknown slugs are allowed,
    # as OpenRouter drops the options of providers that do not serve the request.
    if not isinstance(value, Mapping):
        raise InvalidRoutingRequest(field, "must be an object keyed by provider slug")
    for slug, options in value.items():
        if not isinstance(options, Mapping):
            raise InvalidRoutingRequest(f"{field}.{slug}", "must be an object")


def parse_provider_preferences(value: object, *, where: str = "provider") -> ProviderPreferences:
    """Strictly validate a request's ``provider`` object (``None`` means no preferences)."""
    if value is None:
        return ProviderPreferences()
    if not isinstance(value, Mapping):
        raise InvalidRoutingRequest(where, "must be an object")
    for key in value:
        if key not in _PREF_FIELDS:
            raise InvalidRoutingRequest(f"{where}.{key}", "unknown field")
    get = value.get

    def optional(name: str, parse: Callable[[object, str], _T]) -> _T | None:
        """Field `name` checked by `parse` (which names it in any error), or None when absent."""
        raw = get(name)
        return None if raw is None else parse(raw, f"{where}.{name}")

    optional("require_parameters", _bool)  # accepted, checked and ignored
    optional("options", _options)  # checked and dropped (module docstring)
    sort, partition = optional("sort", _sort) or (None, None)
    data_collection = get("data_collection")
    if data_collection is not None and data_collection not in ("allow", "deny"):
        raise InvalidRoutingRequest(f"{where}.data_collection", 'must be "allow" or "deny"')
    return ProviderPreferences(
        order=optional("order", _names),
        only=optional("only", _names),
        ignore=optional("ignore", _names),
        allow_fallbacks=optional("allow_fallbacks", _bool),
        sort=sort,
        data_collection=data_collection,
        zdr=optional("zdr", _bool),
        max_price=optional("max_price", _max_price),
        sort_partition=partition,
        quantizations=optional("quantizations", _quantizations),
        enforce_distillable_text=optional("enforce_distillable_text", _bool),
        preferred_max_latency=optional("preferred_max_latency", _cutoffs),
        preferred_min_throughput=optional("preferred_min_throughput", _cutoffs),
    )


def _max_price(value: object, field: str) -> MaxPrice:
    if not isinstance(value, Mapping):
        raise InvalidRoutingRequest(field, "must be an object")
    for key in value:
        if key not in _MAX_PRICE_FIELDS:
            raise InvalidRoutingRequest(f"{field}.{key}", "unknown field")
    limits = {key: _money(value[key], f"{field}.{key}") for key in _MAX_PRICE_FIELDS if value.get(key) is not None}
    # image and audio ceilings are always met: no endpoint charges per image or audio unit.
    return MaxPrice(**{k: v for k, v in limits.items() if k in ("prompt", "completion", "request")})


def _matcher(names: Sequence[str]) -> Callable[[Endpoint], bool]:
    wanted = {n.casefold() for n in names}
    return lambda e: e.provider.slug.casefold() in wanted or e.provider.name.casefold() in wanted


def _rank(names: Sequence[str], endpoint: Endpoint) -> int | None:
    for i, name in enumerate(names):
        folded = name.casefold()
        if endpoint.provider.slug.casefold() == folded or endpoint.provider.name.casefold() == folded:
            return i
    return None


def _check_known(catalog: Catalog, prefs: ProviderPreferences) -> None:
    """A provider the request names must exist: a misspelt name in ``only`` would otherwise read as
    "no provider available" (a 503, as if the service were down), and in ``order`` or ``ignore`` it
    would be silently without effect. (The organization's lists are not checked here: a provider
    removed from the catalog after they were saved must not make every request fail.)"""
    if prefs.only is not None and not prefs.only:
        raise InvalidRoutingRequest("provider.only", "must not be empty: it would allow no provider")
    check_provider_names(catalog, order=prefs.order, only=prefs.only, ignore=prefs.ignore)


def check_provider_names(catalog: Catalog, **lists: Sequence[str] | None) -> None:
    """Every name in `lists` (field → names) is a catalog provider's slug or display name, in any
    case; else a 400 naming `provider.<field>` and listing the known slugs. Requests and the
    organization's saved settings both name providers this way."""
    for field, names in lists.items():
        for name in names or ():
            if not catalog.names_a_provider(name):
                slugs = ", ".join(p.slug for p in catalog.providers())
                raise InvalidRoutingRequest(f"provider.{field}", f"unknown provider {name!r} (known: {slugs})")


Filter = tuple[str, Callable[[Endpoint], bool]]


def _filters(prefs: ProviderPreferences, org: OrgPolicy) -> list[Filter]:
    """Each constraint with the words the error message uses when it removes the last one."""
    out: list[Filter] = []
    if prefs.only is not None:
        out.append(("provider.only", _matcher(prefs.only)))
    if org.only is not None:
        out.append(("the organization's allowed providers (only)", _matcher(org.only)))
    if prefs.ignore:
        keep = _matcher(prefs.ignore)
        out.append(("provider.ignore", lambda e: not keep(e)))
    if org.ignore:
        drop = _matcher(org.ignore)
        out.append(("the organization's ignored providers", lambda e: not drop(e)))
    if org.order and org.allow_fallbacks is False:
        # An admin's order without fallbacks means "these providers only": a request's own order
        # (a preference, which otherwise wins) must not reach past it.
        out.append(("the organization's provider order with allow_fallbacks = false", _matcher(org.order)))
    if prefs.data_collection == "deny":
        out.append(('provider.data_collection = "deny"', _denies_collection))
    if org.data_collection == "deny":
        out.append(('the organization\'s privacy setting data_collection = "deny"', _denies_collection))
    if prefs.zdr:
        out.append(("provider.zdr = true", lambda e: e.provider.zdr))
    if org.zdr_only:
        out.append(("the organization's privacy setting zdr_only = true", lambda e: e.provider.zdr))
    if prefs.max_price is not None:
        mp = prefs.max_price
        if mp.prompt is not None:
            limit = mp.prompt
            out.append(("provider.max_price.prompt", lambda e: e.prices.prompt * _PER_MILLION <= limit))
        if mp.completion is not None:
            climit = mp.completion
            out.append(
                (
                    "provider.max_price.completion",
                    lambda e: e.prices.completion * _PER_MILLION <= climit,
                )
            )
        if mp.request is not None:
            rlimit = mp.request
            out.append(("provider.max_price.request", lambda e: e.prices.request <= rlimit))
    if prefs.quantizations is not None:
        levels = prefs.quantizations
        out.append(("provider.quantizations", lambda e: e.quantization in levels))
    return out


def _denies_collection(endpoint: Endpoint) -> bool:
    return endpoint.provider.data_collection == "deny"


def _sort_key(sort: Sort | None, stats: Mapping[str, float] | None) -> Callable[[Endpoint], tuple[Any, ...]]:
    def by_price(e: Endpoint) -> tuple[Decimal, int]:
        return (e.prices.sort_key(), e.position)

    if sort in ("latency", "throughput") and stats:
        sign = 1.0 if sort == "latency" else -1.0  # low latency first, high throughput first

        def by_stat(e: Endpoint) -> tuple[int, float, Decimal, int]:
            observed = stats.get(e.provider.slug)
            # Providers with no observation yet go after measured ones, cheapest first.
            if observed is None:
                return (1, 0.0, *by_price(e))
            return (0, sign * observed, *by_price(e))

        return by_stat
    return by_price  # also "exacto": no tool-calling quality figures here


def route(
    catalog: Catalog,
    *,
    model: str | None,
    models: Sequence[str] | None = None,
    prefs: ProviderPreferences | None = None,
    org: OrgPolicy | None = None,
    stats: Mapping[str, Mapping[str, float]] | None = None,
) -> list[Endpoint]:
    """The endpoints to try, in order: the first that answers wins.

    ``model`` is tried first, then each of ``models`` (OpenRouter's fallback list; when
    ``model`` is missing the list alone is used). ``stats`` maps ``"latency"`` (ms) or
    ``"throughput"`` (tokens/s) to per-provider observations; without them the sort is by price.
    Endpoints that meet the request's preferred latency/throughput go first across all models (as
    on OpenRouter, a fallback model that meets them may be tried before the first model's others).
    """
    prefs = prefs or ProviderPreferences()
    org = org or OrgPolicy()
    wanted: list[str] = []
    for i, name in enumerate(([model] if model is not None else []) + list(models or ())):
        if not isinstance(name, str) or not name:
            raise InvalidRoutingRequest("model" if i == 0 and model else "models", "must be a model id")
        if name not in wanted:
            wanted.append(name)
    if not wanted:
        raise InvalidRoutingRequest("model", "is required")
    if len(wanted) > MAX_LIST:
        raise InvalidRoutingRequest("models", f"at most {MAX_LIST} models")
    for name in wanted:
        if catalog.model(name) is None:
            raise UnknownModelError(name, "model" if name == model else "models")

    _check_known(catalog, prefs)
    filters = _filters(prefs, org)
    sort = prefs.sort or org.sort
    sort_key = _sort_key(sort, stats.get(sort) if stats is not None and sort is not None else None)
    tier = preference_tier(
        max_latency=prefs.preferred_max_latency, min_throughput=prefs.preferred_min_throughput, stats=stats
    )
    # The request's preferences win over the organization's: its own order, or its sort (an org
    # order would otherwise re-rank a request that asked for the cheapest first).
    order = prefs.order if prefs.order is not None else (None if prefs.sort else org.order)
    # An organization's order without fallbacks is a filter above ("these providers only"): within
    # what it leaves, a request orders and falls back as it asked. Taken as the request's own flag as
    # well, it made the request's order a hard list: one naming none of the org's providers found
    # nothing, though the request allowed fallbacks and the org's providers serve the model. With
    # no org order, the org's allow_fallbacks = false means what it says: no falling back at all.
    org_forbids_fallbacks = org.allow_fallbacks is False and not org.order
    allow_fallbacks = prefs.allow_fallbacks is not False and not org_forbids_fallbacks

    result: list[Endpoint] = []
    reasons: dict[str, str] = {}
    for name in wanted:
        served = catalog.model(name)
        if prefs.enforce_distillable_text and served is not None and not served.distillable:
            reasons[name] = "provider.enforce_distillable_text = true (the catalog does not mark it distillable)"
            continue
        candidates = list(catalog.endpoints_for(name))
        for label, keep in filters:
            candidates = [e for e in candidates if keep(e)]
            if not candidates:
                reasons[name] = label
                break
        if not candidates:
            continue
        ranked = sorted(candidates, key=sort_key)
        if order:
            listed = sorted(
                (e for e in ranked if _rank(order, e) is not None),
                key=lambda e: _rank(order, e) or 0,
            )
            rest = [e for e in ranked if _rank(order, e) is None]
            if not allow_fallbacks:
                if not listed:
                    side = "" if prefs.allow_fallbacks is False else "the organization's "
                    reasons[name] = f"provider.order with {side}allow_fallbacks = false"
                    continue
                ranked = listed
            else:
                ranked = listed + rest
        if tier is not None:
            ranked.sort(key=tier)  # stable: within a tier, the order so far
        if not order and not allow_fallbacks:
            ranked = ranked[:1]
        result.extend(ranked)
    if not result:
        raise NoEndpointsError(reasons)
    if prefs.sort_partition == "none":
        # One ranking for all models' endpoints; an order's listed providers still come first.
        ordered = order or ()

        def across_models(e: Endpoint) -> tuple[int, tuple[Any, ...]]:
            rank = _rank(ordered, e)
            return (len(ordered) if rank is None else rank, sort_key(e))

        result.sort(key=across_models)
    if tier is not None:
        result.sort(key=tier)
    return result


_MEASURED = ("latency", "throughput")


class RouteCache:
    """`route` memoised for requests without ``provider`` preferences (nearly all of them).

    `route` is pure over the immutable catalog, and such requests differ only by their model(s)
    and their organization's policy (a value object: a changed setting is a new key). Failures
    are not cached. Bounded: emptied when full, since clients choose the `models` lists.
    """

    def __init__(
        self,
        catalog: Catalog,
        *,
        max_entries: int = 4096,
        stats: Mapping[str, Mapping[str, float]] | None = None,
    ) -> None:
        self.catalog = catalog
        self.max_entries = max_entries
        self.stats = stats  # live figures for sorting by latency or throughput (see gateway.stats)
        self._routes: dict[tuple[str | None, tuple[str, ...], OrgPolicy | None], tuple[Endpoint, ...]] = {}

    def route(
        self,
        *,
        model: str | None,
        models: tuple[str, ...],
        prefs: ProviderPreferences | None,
        org: OrgPolicy | None,
    ) -> tuple[Endpoint, ...]:
        if prefs is not None or (org is not None and org.sort in _MEASURED):
            # Not memoised: preferences vary per request, and measured figures move.
            return tuple(route(self.catalog, model=model, models=models, prefs=prefs, org=org, stats=self.stats))
        key = (model, models, org)
        found = self._routes.get(key)
        if found is None:
            found = tuple(route(self.catalog, model=model, models=models, org=org))
            if len(self._routes) >= self.max_entries:
                self._routes.clear()
            self._routes[key] = found
        return found
