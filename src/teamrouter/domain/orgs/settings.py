"""Organization settings and billing details: typed shapes, defaults, strict partial updates.

Both live as JSON on the organization row. Reading always goes through `org_settings` /
`org_billing`, which fill defaults and tolerate rows written by older versions, so callers (the
gateway above all) get a complete typed object. Writing goes through `merge_settings` /
`merge_billing`: the PATCH body (already validated, unknown fields refused) is merged field by field
into the current value, nested objects included, and the result validated again as a whole.

Provider lists sent in a PATCH are checked against the catalog and stored as the providers' slugs,
so what GET shows is what the gateway matches (it matches a slug or a display name, in any case).
Settings that contradict themselves or cannot work are refused with a 400 naming the field, rather
than found out as 503s on every request: an empty `only` (null is "no allow-list"), a provider named
twice in a list, a provider in `only` or `order` that `ignore` also lists, one in `order` outside
`only`, and lists that leave no provider able to serve any model of the catalog.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    StrictBool,
    StringConstraints,
    field_validator,
)

from teamrouter.domain.names import checked_name, shows_something
from teamrouter.domain.orgs import provider_lists
from teamrouter.domain.orgs.models import Organization
from teamrouter.gateway.catalog import Catalog

M = TypeVar("M", bound=BaseModel)

ProviderSlug = Annotated[str, StringConstraints(min_length=1, max_length=100, strip_whitespace=True)]
SlugList = Annotated[list[ProviderSlug], Field(max_length=50)]
Sort = Literal["price", "latency", "throughput"]
DataCollection = Literal["allow", "deny"]
Visibility = Literal["all", "own"]
ExitKeys = Literal["disable", "keep"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ProviderSettings(_Strict):
    order: SlugList = Field(default_factory=list)
    only: SlugList | None = None
    ignore: SlugList = Field(default_factory=list)
    sort: Sort | None = None
    allow_fallbacks: StrictBool = True


class PrivacySettings(_Strict):
    data_collection: DataCollection = "allow"
    zdr_only: StrictBool = False


class OrgSettings(_Strict):
    """What the gateway reads for an org. Org settings can only tighten what a request may use."""

    provider: ProviderSettings = Field(default_factory=ProviderSettings)
    privacy: PrivacySettings = Field(default_factory=PrivacySettings)
    activity_visibility: Visibility = "all"
    member_exit_keys: ExitKeys = "disable"
    # OpenRouter's "filtered model catalog": /models lists only what these settings allow.
    filtered_model_catalog: StrictBool = False


# PATCH bodies: the same field types (so null where null is not allowed is a 400), every field
# optional by default; `model_fields_set` tells which ones the caller sent.


class ProviderPatch(_Strict):
    order: SlugList = Field(default_factory=list)
    only: SlugList | None = None
    ignore: SlugList = Field(default_factory=list)
    sort: Sort | None = None
    allow_fallbacks: StrictBool = True


class PrivacyPatch(_Strict):
    data_collection: DataCollection = "allow"
    zdr_only: StrictBool = False


class SettingsPatch(_Strict):
    provider: ProviderPatch = Field(default_factory=ProviderPatch)
    privacy: PrivacyPatch = Field(default_factory=PrivacyPatch)
    activity_visibility: Visibility = "all"
    member_exit_keys: ExitKeys = "disable"
    filtered_model_catalog: StrictBool = False


def _plain_emails(value: Any) -> Any:
    # A contact may be given as a bare address: "a@example.com" == {"email": "a@example.com"}.
    if isinstance(value, list):
        return [{"email": item} if isinstance(item, str) else item for item in value]
    return value


def _one_line(value: str | None) -> str | None:
    # Billing text goes onto invoices, into mail to the billing contacts and into CSVs: the names
    # rule (teamrouter.domain.names) applies to what is written, surrounding whitespace dropped as
    # for names. Checked on what a PATCH sends only: a stored value read back must never fail, or
    # the org's billing would read as empty.
    return None if value is None else checked_name(value) or None  # text that shows nothing is none


def _lines(value: str | None) -> str | None:
    # An address has lines, ended by LF or CRLF; every other line break (a lone CR, VT, NEL,
    # U+2028, …) is refused within a line, as in a name.
    if value is None or not shows_something(value):
        return None
    lines = [checked_name(line) for line in value.replace("\r\n", "\n").strip().split("\n")]
    return "\n".join(lines)


# Stripped before a field's max_length is checked, as names are: "  Acme  " is "Acme" in length too.
OneLine = Annotated[str | None, StringConstraints(strip_whitespace=True), AfterValidator(_one_line)]
Lines = Annotated[str | None, StringConstraints(strip_whitespace=True), AfterValidator(_lines)]


class BillingContact(_Strict):
    email: EmailStr = Field(max_length=320)
    name: str | None = Field(default=None, max_length=200)


class BillingContactPatch(_Strict):
    email: EmailStr = Field(max_length=320)
    name: OneLine = Field(default=None, max_length=200)


class Invoicing(_Strict):
    company_name: str | None = Field(default=None, max_length=200)
    address: str | None = Field(default=None, max_length=1000)
    tax_id: str | None = Field(default=None, max_length=64)


class OrgBilling(_Strict):
    billing_email: EmailStr | None = Field(default=None, max_length=320)
    contacts: list[BillingContact] = Field(default_factory=list, max_length=20)
    invoicing: Invoicing = Field(default_factory=Invoicing)

    _contacts = field_validator("contacts", mode="before")(_plain_emails)


class InvoicingPatch(_Strict):
    company_name: OneLine = Field(default=None, max_length=200)
    address: Lines = Field(default=None, max_length=1000)
    tax_id: OneLine = Field(default=None, max_length=64)


class BillingPatch(_Strict):
    billing_email: EmailStr | None = Field(default=None, max_length=320)
    contacts: list[BillingContactPatch] = Field(default_factory=list, max_length=20)
    invoicing: InvoicingPatch = Field(default_factory=InvoicingPatch)

    _contacts = field_validator("contacts", mode="before")(_plain_emails)


def org_settings(org: Organization) -> OrgSettings:
    """The complete, typed settings of an org (defaults for whatever is not stored). Pure."""
    return _tolerant(OrgSettings, org.settings)


def org_billing(org: Organization) -> OrgBilling:
    return _tolerant(OrgBilling, org.billing)


def merge_settings(current: OrgSettings, patch: SettingsPatch, *, catalog: Catalog) -> OrgSettings:
    """`current` with the fields `patch` sent. Provider lists sent are checked against `catalog` and
    stored by slug; a change to the lists or to `allow_fallbacks` must leave the org a provider."""
    if "provider" not in patch.model_fields_set:
        return OrgSettings.model_validate(_merge(current.model_dump(), patch))
    sent = patch.provider.model_fields_set
    provider = patch.provider.model_copy(update=provider_lists.slug_lists(patch.provider, catalog))
    merged = OrgSettings.model_validate(_merge(current.model_dump(), patch.model_copy(update={"provider": provider})))
    provider_lists.check_consistent(merged.provider, sent, catalog)
    # Refused only when this change is what leaves nothing: settings that already left nothing (a
    # privacy setting made so since, which is never refused) must not block an unrelated change.
    if sent & {"order", "only", "ignore", "allow_fallbacks"} and provider_lists.served_before(catalog, current):
        provider_lists.check_leaves_a_provider(merged, sent, catalog)
    return merged


def merge_billing(current: OrgBilling, patch: BillingPatch) -> OrgBilling:
    return OrgBilling.model_validate(_merge(current.model_dump(), patch))


def settings_public(settings: OrgSettings) -> dict[str, Any]:
    return settings.model_dump(mode="json")


def billing_public(billing: OrgBilling) -> dict[str, Any]:
    return billing.model_dump(mode="json")


def _merge(current: dict[str, Any], patch: BaseModel) -> dict[str, Any]:
    """Overlay only the fields the caller sent; nested objects are merged, not replaced."""
    merged = dict(current)
    for name in patch.model_fields_set:
        value = getattr(patch, name)
        if isinstance(value, BaseModel):
            merged[name] = _merge(dict(current.get(name) or {}), value)
        elif isinstance(value, list):
            merged[name] = [item.model_dump() if isinstance(item, BaseModel) else item for item in value]
        else:
            merged[name] = value
    return merged


def _tolerant(model: type[M], stored: dict[str, Any] | None) -> M:
    """Validate stored JSON; a stored value that no longer validates falls back to its default, so a
    bad row can never take the gateway down (writes are validated, so this is belt and braces)."""
    data = dict(stored or {})
    try:
        return model.model_validate(data)
    except ValueError:
        kept: dict[str, Any] = {}
        for name, value in data.items():
            if name in model.model_fields:
                try:
                    model.model_validate({name: value})
                except ValueError:
                    continue
                kept[name] = value
        return model.model_validate(kept)
