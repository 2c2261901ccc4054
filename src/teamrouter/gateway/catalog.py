"""The model catalog: providers, models and their priced endpoints, loaded from TOML.

The file format is fixed in API.md ("Catalog TOML"). Everything is validated at load time so a
bad catalog stops the server at start-up with a message naming the file, the entry and the
problem, instead of failing one request at a time. The result is immutable and cheap to share.

Upstream API keys are read from the variables named by ``api_key_env`` through the ``env``
mapping the caller passes in (configuration is the only code that touches ``os.environ``).
"""

from __future__ import annotations

import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from teamrouter.gateway.pricing import PriceError, Prices, parse_price

ProviderKind = Literal["openai", "anthropic", "demo"]
PROVIDER_KINDS: tuple[str, ...] = ("openai", "anthropic", "demo")
# The weight precisions OpenRouter names (the `openrouter` SDK's `Quantization`): what an endpoint
# may declare and a request's `provider.quantizations` may ask for. "unknown" is an endpoint that
# declares none.
QUANTIZATIONS: tuple[str, ...] = (
    "int4", "int8", "fp4", "mxfp4", "nvfp4", "fp6", "fp8", "mxfp8", "fp16", "bf16", "fp32", "unknown",
)  # fmt: skip
DEFAULT_CATALOG = "default_catalog.toml"


class CatalogError(ValueError):
    """The catalog file is missing, unreadable or invalid."""


@dataclass(frozen=True, slots=True)
class Provider:
    """One upstream provider (an API base URL, an adapter kind and a data policy)."""

    slug: str
    name: str
    kind: ProviderKind
    base_url: str
    api_key_env: str | None = None
    # The secret itself: never shown in repr, logs or error messages.
    api_key: str | None = field(default=None, repr=False)
    data_collection: Literal["allow", "deny"] = "allow"
    zdr: bool = False
    connect_timeout: float = 10.0
    # Time allowed until the first byte of the answer; fallback happens only before it.
    first_byte_timeout: float = 60.0
    # Longest silence allowed between two chunks of a stream, and for a whole JSON answer.
    read_timeout: float = 300.0
    # Extra static headers sent upstream (e.g. HTTP-Referer); a tuple keeps Provider hashable.
    headers: tuple[tuple[str, str], ...] = ()
    anthropic_version: str = "2023-06-01"


@dataclass(frozen=True, slots=True)
class Endpoint:
    """A model served by one provider at one price. ``id`` is ``"<model id>@<provider slug>"``."""

    id: str
    model_id: str
    provider: Provider
    upstream_model: str
    prices: Prices
    max_completion_tokens: int
    context_length: int
    position: int  # catalog order, the tie-breaker of every routing sort
    quantization: str = "unknown"  # one of QUANTIZATIONS

    @property
    def provider_slug(self) -> str:
        return self.provider.slug

    def cost(
        self, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0, cache_write_tokens: int = 0
    ) -> int:
        """Real cost in nano-USD (see gateway.pricing)."""
        return self.prices.cost(prompt_tokens, completion_tokens, cached_tokens, cache_write_tokens)

    def worst_case(self, prompt_tokens_estimate: int, max_completion_tokens: int, n: int = 1) -> int:
        """The hold in nano-USD for a request within the given budget."""
        return self.prices.worst_case(prompt_tokens_estimate, max_completion_tokens, n)


@dataclass(frozen=True, slots=True)
class Model:
    """A model id clients ask for, served by one or more endpoints (catalog order)."""

    id: str
    name: str
    context_length: int
    endpoints: tuple[Endpoint, ...]
    description: str = ""
    created: int = 0
    # The model's author allows training other models on its outputs (OpenRouter's "distillable");
    # only the deployment can vouch for that, so a model is not distillable unless the catalog says.
    distillable: bool = False

    @property
    def author(self) -> str:
        return self.id.split("/", 1)[0]


class Catalog:
    """Read-only view of a loaded catalog."""

    __slots__ = ("_endpoints", "_models", "_names", "_providers", "source")

    def __init__(self, providers: tuple[Provider, ...], models: tuple[Model, ...], *, source: str) -> None:
        self.source = source
        self._providers = {p.slug: p for p in providers}
        self._models = {m.id: m for m in models}
        self._endpoints = {e.id: e for m in models for e in m.endpoints}
        # What a request or a setting may call a provider: its slug or display name, in any case.
        self._names = frozenset(name.casefold() for p in providers for name in (p.slug, p.name))

    def providers(self) -> tuple[Provider, ...]:
        return tuple(self._providers.values())

    def provider(self, slug: str) -> Provider | None:
        return self._providers.get(slug)

    def names_a_provider(self, name: str) -> bool:
        return name.casefold() in self._names

    def models(self) -> tuple[Model, ...]:
        return tuple(self._models.values())

    def model(self, model_id: str) -> Model | None:
        return self._models.get(model_id)

    def endpoints_for(self, model_id: str) -> tuple[Endpoint, ...]:
        model = self._models.get(model_id)
        return model.endpoints if model is not None else ()

    def endpoint(self, endpoint_id: str) -> Endpoint | None:
        return self._endpoints.get(endpoint_id)


def load_catalog(path: str | Path | None, *, env: Mapping[str, str]) -> Catalog:
    """Load and validate a catalog; ``None`` loads the built-in demo catalog."""
    if path is None:
        source = f"<built-in {DEFAULT_CATALOG}>"
        text = resources.files("teamrouter.gateway").joinpath(DEFAULT_CATALOG).read_text("utf-8")
    else:
        source = str(path)
        try:
            text = Path(path).read_text("utf-8")
        except OSError as exc:
            raise CatalogError(f"{source}: cannot read catalog: {exc.strerror or exc}") from exc
    return parse_catalog(text, env=env, source=source)


def parse_catalog(text: str, *, env: Mapping[str, str], source: str = "<catalog>") -> Catalog:
    """Validate catalog TOML text; every error names ``source``, the entry and the problem."""
    try:
        data = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise CatalogError(f"{source}: invalid TOML: {exc}") from exc
    return _Loader(source, env).load(data)


# Anthropic bills a (5-minute) prompt-cache write at 1.25x the input price: the default of an
# anthropic endpoint's cache_write_price, so caching never bills below what it costs upstream.
ANTHROPIC_CACHE_WRITE_MULTIPLIER = Decimal("1.25")

_PROVIDER_KEYS = {
    "slug", "name", "kind", "base_url", "api_key_env", "data_collection", "zdr",
    "connect_timeout", "first_byte_timeout", "read_timeout", "headers", "anthropic_version",
}  # fmt: skip
_MODEL_KEYS = {"id", "name", "context_length", "description", "created", "distillable", "endpoints"}
_ENDPOINT_KEYS = {
    "provider", "upstream_model", "prompt_price", "completion_price", "request_price",
    "cached_prompt_price", "cache_write_price", "max_completion_tokens", "context_length", "quantization",
}  # fmt: skip


class _Loader:
    def __init__(self, source: str, env: Mapping[str, str]) -> None:
        self.source = source
        self.env = env

    def fail(self, where: str, problem: str) -> CatalogError:
        return CatalogError(f"{self.source}: {where}: {problem}")

    def load(self, data: dict[str, Any]) -> Catalog:
        unknown = set(data) - {"providers", "models"}
        if unknown:
            raise self.fail("top level", f"unknown key(s) {sorted(unknown)}")
        raw_providers = self.table_list(data.get("providers", []), "providers")
        raw_models = self.table_list(data.get("models", []), "models")
        providers: dict[str, Provider] = {}
        # Requests and org settings name a provider by slug or display name, in any case: two
        # providers answering to one name would both match it, and a setting could not tell them apart.
        called: dict[str, str] = {}
        for i, raw in enumerate(raw_providers):
            provider = self.provider(raw, f"providers[{i}]")
            if provider.slug in providers:
                raise self.fail(f"provider {provider.slug!r}", "duplicate provider slug")
            for name in {provider.slug.casefold(), provider.name.casefold()}:
                if name in called:
                    problem = f"is called {name!r} (in any case) like provider {called[name]!r}: names must differ"
                    raise self.fail(f"provider {provider.slug!r}", problem)
                called[name] = provider.slug
            providers[provider.slug] = provider
        models: dict[str, Model] = {}
        position = 0
        for i, raw in enumerate(raw_models):
            model = self.model(raw, f"models[{i}]", providers, position)
            if model.id in models:
                raise self.fail(f"model {model.id!r}", "duplicate model id")
            models[model.id] = model
            position += len(model.endpoints)
        return Catalog(tuple(providers.values()), tuple(models.values()), source=self.source)

    def table_list(self, value: object, where: str) -> list[dict[str, Any]]:
        if not isinstance(value, list) or not all(isinstance(v, dict) for v in value):
            raise self.fail(where, "must be an array of tables ([[...]])")
        return value

    def check_keys(self, raw: dict[str, Any], allowed: set[str], where: str) -> None:
        unknown = set(raw) - allowed
        if unknown:
            raise self.fail(where, f"unknown field(s) {sorted(unknown)}")

    def string(self, raw: dict[str, Any], key: str, where: str, *, required: bool = True) -> str:
        value = raw.get(key)
        if value is None and not required:
            return ""
        if not isinstance(value, str) or not value.strip():
            raise self.fail(where, f"{key!r} is required and must be a non-empty string")
        return value.strip()

    def integer(self, raw: dict[str, Any], key: str, where: str, *, minimum: int = 1) -> int:
        value = raw.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
            raise self.fail(where, f"{key!r} must be an integer >= {minimum}, got {value!r}")
        return value

    def seconds(self, raw: dict[str, Any], key: str, where: str, default: float) -> float:
        value = raw.get(key, default)
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise self.fail(where, f"{key!r} must be a positive number of seconds")
        return float(value)

    def provider(self, raw: dict[str, Any], where: str) -> Provider:
        slug = self.string(raw, "slug", where)
        where = f"provider {slug!r}"
        self.check_keys(raw, _PROVIDER_KEYS, where)
        kind = self.string(raw, "kind", where)
        if kind not in PROVIDER_KINDS:
            raise self.fail(where, f"unknown provider kind {kind!r} (expected one of {PROVIDER_KINDS})")
        base_url = self.string(raw, "base_url", where, required=kind != "demo")
        if base_url and not base_url.startswith(("http://", "https://")):
            raise self.fail(where, f"base_url must start with http:// or https://, got {base_url!r}")
        data_collection = raw.get("data_collection", "allow")
        if data_collection not in ("allow", "deny"):
            raise self.fail(where, f'data_collection must be "allow" or "deny", got {data_collection!r}')
        zdr = raw.get("zdr", False)
        if not isinstance(zdr, bool):
            raise self.fail(where, f"zdr must be true or false, got {zdr!r}")
        api_key_env = raw.get("api_key_env")
        api_key: str | None = None
        if api_key_env is not None:
            if not isinstance(api_key_env, str) or not api_key_env:
                raise self.fail(where, "api_key_env must be the name of an environment variable")
            api_key = self.env.get(api_key_env)
            if not api_key:
                # Failing here beats a 401 from upstream on every request later.
                raise self.fail(where, f"environment variable {api_key_env} (api_key_env) is not set")
        headers = raw.get("headers", {})
        if not isinstance(headers, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in headers.items()
        ):
            raise self.fail(where, "headers must be a table of strings")
        version = raw.get("anthropic_version", "2023-06-01")
        if not isinstance(version, str):
            raise self.fail(where, "anthropic_version must be a string")
        return Provider(
            slug=slug,
            name=self.string(raw, "name", where, required=False) or slug,
            kind=kind,  # type: ignore[arg-type]  # checked against PROVIDER_KINDS above
            base_url=base_url.rstrip("/"),
            api_key_env=api_key_env,
            api_key=api_key,
            data_collection=data_collection,
            zdr=zdr,
            connect_timeout=self.seconds(raw, "connect_timeout", where, 10.0),
            first_byte_timeout=self.seconds(raw, "first_byte_timeout", where, 60.0),
            read_timeout=self.seconds(raw, "read_timeout", where, 300.0),
            headers=tuple(headers.items()),
            anthropic_version=version,
        )

    def model(self, raw: dict[str, Any], where: str, providers: dict[str, Provider], position: int) -> Model:
        model_id = self.string(raw, "id", where)
        where = f"model {model_id!r}"
        self.check_keys(raw, _MODEL_KEYS, where)
        if "/" not in model_id or model_id.startswith("/") or model_id.endswith("/"):
            raise self.fail(where, 'model id must look like "author/slug"')
        context_length = self.integer(raw, "context_length", where)
        description = raw.get("description", "")
        if not isinstance(description, str):
            raise self.fail(where, "description must be a string")
        created = raw.get("created", 0)
        if isinstance(created, bool) or not isinstance(created, int) or created < 0:
            raise self.fail(where, "created must be a Unix timestamp (integer)")
        distillable = raw.get("distillable", False)
        if not isinstance(distillable, bool):
            raise self.fail(where, f"distillable must be true or false, got {distillable!r}")
        raw_endpoints = self.table_list(raw.get("endpoints", []), f"{where}: endpoints")
        if not raw_endpoints:
            raise self.fail(where, "has no [[models.endpoints]]")
        endpoints: list[Endpoint] = []
        for i, raw_endpoint in enumerate(raw_endpoints):
            endpoint = self.endpoint(
                raw_endpoint,
                f"{where}: endpoints[{i}]",
                model_id,
                context_length,
                providers,
                position + i,
            )
            if any(e.id == endpoint.id for e in endpoints):
                raise self.fail(where, f"provider {endpoint.provider.slug!r} listed twice")
            endpoints.append(endpoint)
        return Model(
            id=model_id,
            name=self.string(raw, "name", where, required=False) or model_id,
            context_length=context_length,
            endpoints=tuple(endpoints),
            description=description,
            created=created,
            distillable=distillable,
        )

    def price(self, raw: dict[str, Any], key: str, where: str, *, required: bool) -> Decimal | None:
        if key not in raw:
            if required:
                raise self.fail(where, f"missing price {key!r}")
            return None
        try:
            return parse_price(raw[key])
        except PriceError as exc:
            raise self.fail(where, f"{key}: {exc}") from None

    def endpoint(
        self,
        raw: dict[str, Any],
        where: str,
        model_id: str,
        model_context: int,
        providers: dict[str, Provider],
        position: int,
    ) -> Endpoint:
        self.check_keys(raw, _ENDPOINT_KEYS, where)
        slug = self.string(raw, "provider", where)
        provider = providers.get(slug)
        if provider is None:
            raise self.fail(where, f"endpoint names unknown provider {slug!r}")
        where = f"{where} (provider {slug!r})"
        prompt = self.price(raw, "prompt_price", where, required=True)
        completion = self.price(raw, "completion_price", where, required=True)
        request = self.price(raw, "request_price", where, required=False)
        cached = self.price(raw, "cached_prompt_price", where, required=False)
        write = self.price(raw, "cache_write_price", where, required=False)
        assert prompt is not None and completion is not None  # required=True
        if write is None and provider.kind == "anthropic":
            write = prompt * ANTHROPIC_CACHE_WRITE_MULTIPLIER
        context_length = self.integer(raw, "context_length", where) if "context_length" in raw else model_context
        # Without an explicit output cap, the context length bounds what a hold must cover.
        max_completion = (
            self.integer(raw, "max_completion_tokens", where) if "max_completion_tokens" in raw else context_length
        )
        quantization = raw.get("quantization", "unknown")
        if quantization not in QUANTIZATIONS:
            raise self.fail(where, f"quantization must be one of {', '.join(QUANTIZATIONS)}, got {quantization!r}")
        return Endpoint(
            id=f"{model_id}@{slug}",
            model_id=model_id,
            provider=provider,
            upstream_model=self.string(raw, "upstream_model", where, required=False) or model_id,
            prices=Prices(prompt, completion, request or Decimal(0), cached, write),
            max_completion_tokens=max_completion,
            context_length=context_length,
            position=position,
            quantization=quantization,
        )
