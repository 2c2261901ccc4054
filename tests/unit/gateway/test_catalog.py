"""Catalog loading: the built-in demo catalog, the TOML format, and one clear error per mistake."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path

import pytest

from teamrouter.gateway.catalog import Catalog, CatalogError, load_catalog, parse_catalog

GOOD = """
[[providers]]
slug = "acme"
name = "Acme AI"
kind = "openai"
base_url = "http://127.0.0.1:9100/v1/"
api_key_env = "ACME_API_KEY"
data_collection = "deny"
zdr = true

[[providers]]
slug = "claude"
name = "Anthropic"
kind = "anthropic"
base_url = "https://api.anthropic.com/v1"
api_key_env = "ANTHROPIC_KEY"
first_byte_timeout = 5

[[models]]
id = "acme/fast-chat"
name = "Acme Fast Chat"
context_length = 32768

[[models.endpoints]]
provider = "acme"
upstream_model = "fast-chat-v2"
prompt_price = "0.0000005"
completion_price = "0.0000015"
request_price = "0"
max_completion_tokens = 4096

[[models.endpoints]]
provider = "claude"
upstream_model = "claude-fast"
prompt_price = "0.000001"
completion_price = "0.000002"
cached_prompt_price = "0.0000001"

[[models]]
id = "acme/other"
name = "Other"
context_length = 1000

[[models.endpoints]]
provider = "acme"
prompt_price = "0"
completion_price = "0"
"""

ENV = {"ACME_API_KEY": "sk-acme-secret", "ANTHROPIC_KEY": "sk-ant-secret"}


def test_builtin_demo_catalog() -> None:
    catalog = load_catalog(None, env={})
    assert [m.id for m in catalog.models()] == ["demo/echo", "demo/echo-pro"]
    (demo,) = catalog.providers()
    assert (demo.slug, demo.kind, demo.data_collection, demo.zdr) == ("demo", "demo", "deny", True)
    echo, pro = (catalog.endpoints_for(m.id)[0] for m in catalog.models())
    assert echo.prices.prompt > 0 and echo.prices.completion > 0
    assert pro.prices.prompt > echo.prices.prompt and pro.prices.completion > echo.prices.completion
    assert echo.cost(1000, 1000) > 0


def test_good_catalog_loads_in_order_with_keys_from_env(tmp_path: Path) -> None:
    path = tmp_path / "catalog.toml"
    path.write_text(GOOD)
    catalog = load_catalog(path, env=ENV)
    assert [m.id for m in catalog.models()] == ["acme/fast-chat", "acme/other"]
    acme = catalog.provider("acme")
    assert acme is not None
    assert acme.api_key == "sk-acme-secret"
    assert acme.base_url == "http://127.0.0.1:9100/v1"  # trailing slash dropped
    assert "sk-acme-secret" not in repr(acme)
    first, second = catalog.endpoints_for("acme/fast-chat")
    assert first.id == "acme/fast-chat@acme" and first.provider_slug == "acme"
    assert first.upstream_model == "fast-chat-v2"
    assert first.max_completion_tokens == 4096
    assert first.prices.prompt == Decimal("0.0000005")
    assert second.provider.kind == "anthropic" and second.provider.first_byte_timeout == 5.0
    assert second.max_completion_tokens == 32768  # defaults to the context length
    assert second.cost(1000, 0, cached_tokens=1000) == 100_000
    # Cache writes: an anthropic endpoint defaults to Anthropic's 1.25x; others to the prompt price.
    assert second.prices.cache_write == Decimal("0.00000125") and first.prices.cache_write is None
    assert second.cost(1000, 0, cache_write_tokens=1000) == 1_250_000
    explicit = load_catalog_text(GOOD.replace('cached_prompt_price = "0.0000001"', 'cache_write_price = "0.000002"'))
    assert explicit.endpoints_for("acme/fast-chat")[1].prices.cache_write == Decimal("0.000002")
    other = catalog.endpoints_for("acme/other")[0]
    assert other.upstream_model == "acme/other"  # defaults to the model id
    assert catalog.endpoint("acme/fast-chat@claude") is second
    assert catalog.model("nope") is None and catalog.endpoints_for("nope") == ()


def load_catalog_text(text: str) -> Catalog:
    return parse_catalog(text, env=ENV)


def test_quantization_and_distillable_are_optional() -> None:
    marked = replace("max_completion_tokens = 4096", 'max_completion_tokens = 4096\nquantization = "bf16"')
    catalog = load_catalog_text(replace("context_length = 1000", "context_length = 1000\ndistillable = true", marked))
    fast, other = catalog.models()
    assert [e.quantization for e in fast.endpoints] == ["bf16", "unknown"]
    assert (fast.distillable, other.distillable) == (False, True)


def test_missing_file_is_a_catalog_error(tmp_path: Path) -> None:
    with pytest.raises(CatalogError, match=r"missing\.toml"):
        load_catalog(tmp_path / "missing.toml", env={})


def replace(old: str, new: str, text: str = GOOD) -> str:
    assert old in text
    return text.replace(old, new, 1)


BAD = [
    ("invalid toml", "[[providers]\n", "invalid TOML"),
    (
        "unknown kind",
        replace('kind = "openai"', 'kind = "gemini"'),
        r"provider 'acme'.*unknown provider kind 'gemini'",
    ),
    (
        "missing price",
        replace('completion_price = "0.0000015"\n', ""),
        r"model 'acme/fast-chat'.*provider 'acme'.*missing price 'completion_price'",
    ),
    (
        "float price",
        replace('prompt_price = "0.0000005"', "prompt_price = 0.0000005"),
        r"model 'acme/fast-chat'.*prompt_price.*decimal string",
    ),
    (
        "not a decimal",
        replace('prompt_price = "0.0000005"', 'prompt_price = "cheap"'),
        r"prompt_price: price 'cheap' is not an exact decimal",
    ),
    (
        "negative price",
        replace('request_price = "0"', 'request_price = "-0.01"'),
        r"request_price: price '-0.01' is negative",
    ),
    (
        "duplicate model",
        replace('id = "acme/other"', 'id = "acme/fast-chat"'),
        r"model 'acme/fast-chat': duplicate model id",
    ),
    (
        "duplicate provider",
        replace('slug = "claude"', 'slug = "acme"'),
        r"provider 'acme': duplicate provider slug",
    ),
    (
        "display name like another provider's slug",
        replace('name = "Anthropic"', 'name = "ACME"'),
        r"provider 'claude': is called 'acme' \(in any case\) like provider 'acme'",
    ),
    (
        "display names alike in another case",
        replace('name = "Anthropic"', 'name = "acme ai"'),
        r"provider 'claude': is called 'acme ai' \(in any case\) like provider 'acme'",
    ),
    (
        "unknown provider",
        replace('provider = "claude"', 'provider = "nobody"'),
        r"model 'acme/fast-chat'.*endpoint names unknown provider 'nobody'",
    ),
    (
        "provider twice in a model",
        replace('provider = "claude"', 'provider = "acme"'),
        r"provider 'acme' listed twice",
    ),
    ("unknown field", replace("zdr = true", "zdr = true\nzdrr = 1"), r"provider 'acme'.*unknown field.*zdrr"),
    ("bad data policy", replace('data_collection = "deny"', 'data_collection = "never"'), "data_collection"),
    ("bad zdr", replace("zdr = true", 'zdr = "yes"'), "zdr must be true or false"),
    ("bad url", replace('base_url = "http://127.0.0.1:9100/v1/"', 'base_url = "ftp://x"'), "base_url"),
    ("no endpoints", GOOD.split("[[models]]")[0] + '[[models]]\nid = "a/b"\ncontext_length = 5\n', "a/b.*no"),
    ("bad model id", replace('id = "acme/other"', 'id = "other"'), "author/slug"),
    ("bad context", replace("context_length = 1000", "context_length = 0"), "context_length"),
    (
        "bad max tokens",
        replace("max_completion_tokens = 4096", "max_completion_tokens = -4"),
        "max_completion_tokens",
    ),
    (
        "unknown quantization",
        replace("max_completion_tokens = 4096", 'max_completion_tokens = 4096\nquantization = "q4_k_m"'),
        r"model 'acme/fast-chat'.*provider 'acme'.*quantization must be one of int4, .*unknown, got 'q4_k_m'",
    ),
    (
        "quantization not a string",
        replace("max_completion_tokens = 4096", "max_completion_tokens = 4096\nquantization = 8"),
        r"provider 'acme'.*quantization must be one of .*got 8",
    ),
    (
        "bad distillable",
        replace("context_length = 1000", 'context_length = 1000\ndistillable = "yes"'),
        r"model 'acme/other': distillable must be true or false",
    ),
]


@pytest.mark.parametrize(("text", "pattern"), [(t, p) for _, t, p in BAD], ids=[n for n, _, _ in BAD])
def test_invalid_catalogs_name_file_entry_and_problem(text: str, pattern: str) -> None:
    with pytest.raises(CatalogError, match=pattern) as info:
        parse_catalog(text, env=ENV, source="/etc/teamrouter/catalog.toml")
    assert str(info.value).startswith("/etc/teamrouter/catalog.toml: ")


def test_missing_api_key_variable_is_named_without_leaking_others() -> None:
    with pytest.raises(CatalogError, match=r"provider 'claude'.*ANTHROPIC_KEY.*not set") as info:
        parse_catalog(GOOD, env={"ACME_API_KEY": "sk-acme-secret"})
    assert "sk-acme-secret" not in str(info.value)
