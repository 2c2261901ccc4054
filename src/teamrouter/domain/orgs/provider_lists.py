"""An organization's provider lists (`order`, `only`, `ignore`) as a settings PATCH leaves them:
stored by the catalog's slug, consistent with each other, and leaving the org some provider.

Decided with the gateway's own routing (`gateway.routing.route`), so a list is refused for exactly
what a request would meet. The shapes and the merge are `settings`'s.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from teamrouter.errors import bad_field
from teamrouter.gateway.catalog import Catalog
from teamrouter.gateway.routing import InvalidRoutingRequest, NoEndpointsError, OrgPolicy, check_provider_names, route

if TYPE_CHECKING:
    from teamrouter.domain.orgs.settings import OrgSettings, ProviderPatch, ProviderSettings

_LISTS = ("order", "only", "ignore")


def _providers_by_name(catalog: Catalog) -> dict[str, str]:
    """Every way the gateway matches a provider (slug or display name, casefolded) → its slug: one,
    for a catalog refuses two providers answering to one name (gateway.catalog)."""
    return {name.casefold(): p.slug for p in catalog.providers() for name in (p.slug, p.name)}


def slug_lists(sent: ProviderPatch, catalog: Catalog) -> dict[str, list[str]]:
    """The lists `sent` names, each provider by its slug; a 400 for an unknown name, a provider
    listed twice (under one name or two), or an empty `only`."""
    given = {field: getattr(sent, field) for field in _LISTS if field in sent.model_fields_set}
    try:
        check_provider_names(catalog, **given)
    except InvalidRoutingRequest as exc:
        raise bad_field(exc.field, exc.problem) from exc
    by_name = _providers_by_name(catalog)
    out: dict[str, list[str]] = {}
    for field, names in given.items():
        if names is None:  # `only: null`: no allow-list
            continue
        if field == "only" and not names:
            # OpenRouter's `only` lists the providers allowed, and the gateway reads an empty one so:
            # it would allow none. A request's `provider.only: []` is refused the same way.
            raise bad_field("provider.only", "must not be empty: it would allow no provider (null means no allow-list)")
        slugs: list[str] = []
        for name in names:
            slug = by_name[name.casefold()]
            if slug in slugs:
                # Refused, not de-duplicated: a second entry for one provider is more likely a typo
                # for another provider than something meant, and order would depend on which stays.
                first = names[slugs.index(slug)]
                same = f"{name!r} is listed twice" if first == name else f"{first!r} and {name!r} are both {slug!r}"
                raise bad_field(f"provider.{field}", f"{same}: name each provider once")
            slugs.append(slug)
        out[field] = slugs
    return out


def check_consistent(merged: ProviderSettings, sent: set[str], catalog: Catalog) -> None:
    """A provider both allowed (`only`) or preferred (`order`) and ignored, or preferred outside the
    allow-list, could never be used: a 400 naming the list sent. Lists kept from before may hold
    names stored by an older version (display names, providers gone from the catalog): compared by
    slug where the catalog knows the name."""
    by_name = _providers_by_name(catalog)

    def slug(name: str) -> str:
        return by_name.get(name.casefold(), name.casefold())

    order, ignore = [slug(n) for n in merged.order], {slug(n) for n in merged.ignore}
    only = None if merged.only is None else {slug(n) for n in merged.only}
    outside = [s for s in order if s not in only] if only is not None else []
    clashes = [
        ("only", "ignore", [s for s in only or () if s in ignore], "is in both provider.only and provider.ignore"),
        ("order", "ignore", [s for s in order if s in ignore], "is in both provider.order and provider.ignore"),
        ("order", "only", outside, "is in provider.order but not in provider.only"),
    ]
    for listed, other, clash, problem in clashes:
        if clash and (listed in sent or other in sent):
            field = other if other in sent else listed
            raise bad_field(f"provider.{field}", f"{clash[0]!r} {problem}: it could never be used")


def check_leaves_a_provider(merged: OrgSettings, sent: set[str], catalog: Catalog) -> None:
    """A 400 when the provider lists leave no provider that can serve any model of the catalog (every
    request would get a 503), naming the first list that empties it. Decided by the gateway's own
    routing, so it means what a request would meet. Privacy settings that alone leave nothing are
    left alone: refusing `zdr_only` or `data_collection: "deny"` would keep data flowing to the
    providers the organization means to rule out, and a 503 is then the right answer."""
    privacy = merged.privacy.model_dump()
    if _unserved(catalog, {"privacy": privacy}) is not None:
        return
    p = merged.provider
    steps: list[tuple[str, dict[str, Any]]] = [
        ("only", {"only": p.only}),
        ("ignore", {"only": p.only, "ignore": p.ignore}),
        ("order", {"only": p.only, "ignore": p.ignore, "order": p.order, "allow_fallbacks": p.allow_fallbacks}),
    ]
    for field, provider in steps:
        why = _unserved(catalog, {"provider": provider, "privacy": privacy})
        if why is None:
            continue
        if field == "order" and "order" not in sent and "allow_fallbacks" in sent:
            field = "allow_fallbacks"  # the order was there before: turning fallbacks off emptied it
        problem = f"leaves no provider to serve any model of the catalog, so every request would get a 503 ({why})"
        raise bad_field(f"provider.{field}", problem)


def served_before(catalog: Catalog, current: OrgSettings) -> bool:
    try:
        return _unserved(catalog, current.model_dump()) is None
    except InvalidRoutingRequest:  # stored by an older version in a shape routing no longer reads
        return False


def _unserved(catalog: Catalog, settings: dict[str, Any]) -> str | None:
    """None when a request for some model of the catalog could be routed under these organization
    settings; else the gateway's reasons why not."""
    policy = OrgPolicy.from_settings(settings)
    reasons: list[str] = []
    for model in catalog.models():
        try:
            route(catalog, model=model.id, org=policy)
        except NoEndpointsError as exc:
            reasons += [why for why in exc.reasons.values() if why not in reasons]
        else:
            return None
    return "excluded by " + "; ".join(reasons) if reasons else "the catalog lists no model"
