"""The official `openrouter` SDK's whole `provider` object through a real teamrouter process:
`quantizations` against the catalog's endpoint `quantization`, `enforce_distillable_text`, `sort`
as an object, `max_price.image`, `options` (accepted, never forwarded), and `preferred_max_latency` /
`preferred_min_throughput` reordering by what one gateway process measured. Bad values are a 400
naming the field, before any hold."""

from __future__ import annotations

import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import pytest
from openrouter import OpenRouter, errors
from tests.support.gateway import FakeUpstreamProcess, funded_person, script, start_gateway
from tests.support.sdk import openrouter

from teamrouter.domain.credits.models import CreditAccount

pytestmark = pytest.mark.db

USAGE = {"prompt_tokens": 10, "completion_tokens": 5}
PLAIN = "hi"  # no script of its own: answered as the fake upstream was told per upstream model


@contextmanager
def openrouter_sdk(base_url: str, key: str) -> Iterator[OpenRouter]:
    with (
        warnings.catch_warnings(),
        openrouter(key, base_url) as client,
    ):
        warnings.simplefilter("ignore", DeprecationWarning)
        yield client


def ask(
    client: OpenRouter, provider: dict[str, object], *, model: str = "test/chat", content: str = "", **kw: object
) -> str:
    """Which provider answered (its display name, from the generation's metadata: the SDK's chat
    result does not keep OpenRouter's `provider` field)."""
    result = client.chat.send(
        model=model,
        messages=[{"role": "user", "content": content or script(content="ok", usage=USAGE)}],
        max_tokens=20,
        provider=provider,  # type: ignore[arg-type]  # the SDK's TypedDict, as callers write it
        **kw,  # type: ignore[arg-type]
    )
    return served_by(client, result.id)


def served_by(client: OpenRouter, generation_id: str) -> str:
    name: str = client.generations.get_generation(id=generation_id).data.provider_name
    return name


async def balance(rt, account_id: str) -> tuple[int, int]:
    async with rt.db.read() as s:
        row = await s.get_one(CreditAccount, account_id)
        return row.balance, row.held


async def test_every_field_the_sdk_sends_is_accepted_and_quantizations_filter(gateway, gw_rt, fake):
    who = await funded_person(gw_rt, usd="1")
    marker = uuid.uuid4().hex
    everything = {
        "quantizations": ["fp8", "bf16"],
        "enforce_distillable_text": False,
        "preferred_max_latency": {"p50": 30, "p90": 60},
        "preferred_min_throughput": 0.5,
        "sort": {"by": "price", "partition": "model"},
        "max_price": {"prompt": "5", "completion": "5", "image": "0.01", "audio": "0.01"},
        # Provider options are dropped: never a way around what the gateway sends and bills by.
        "options": {"fake": {"max_tokens": 100_000}, "fireworks": {"anything": True}},
        "require_parameters": False,
        "data_collection": "allow",
        "zdr": False,
        "allow_fallbacks": True,
    }
    with openrouter_sdk(gateway.base_url, who.key) as client:
        result = client.chat.send(
            model="test/chat",
            messages=[{"role": "user", "content": script(content=marker, usage=USAGE)}],
            max_tokens=20,
            provider=everything,  # type: ignore[arg-type]
        )
        assert result.choices[0].message.content == marker
        assert served_by(client, result.id) == "Fake AI"  # the fp8 endpoint
        (call,) = [c for c in fake.calls() if c["script"] and c["script"].get("content") == marker]
        assert call["model"] == "fake-chat" and call["max_tokens"] == 20

        # The pricier endpoint declares no quantization: "unknown" selects it alone.
        assert ask(client, {"quantizations": ["unknown"]}) == "Fake Backup"
        assert ask(client, {"quantizations": ["fp8", "unknown"]}) == "Fake AI"
        # As a sort object, "none" ranks the fallback model's endpoints with the first model's.
        assert ask(client, {"sort": {"by": "price", "partition": "none"}}, models=["demo/echo"]) == "teamrouter demo"
        assert ask(client, {"sort": "exacto"}) == "Fake AI"

        # Nothing left: the existing 503 naming the constraint, and no money held or spent.
        before = await balance(gw_rt, who.account_id)
        with pytest.raises(errors.OpenRouterError) as info:
            ask(client, {"quantizations": ["int4"]})
        assert info.value.status_code == 503
        assert "All endpoints for model test/chat were excluded by provider.quantizations" in info.value.body
        assert await balance(gw_rt, who.account_id) == before


async def test_enforce_distillable_text_uses_only_models_marked_distillable(gateway, gw_rt):
    who = await funded_person(gw_rt, usd="1")
    with openrouter_sdk(gateway.base_url, who.key) as client:
        # test/chat is not marked distillable; the fallback test/claude is.
        assert ask(client, {"enforce_distillable_text": True}, models=["test/claude"]) == "Fake Anthropic"
        with pytest.raises(errors.OpenRouterError) as info:
            ask(client, {"enforce_distillable_text": True})
        assert info.value.status_code == 503 and "provider.enforce_distillable_text = true" in info.value.body


@pytest.mark.parametrize(
    ("provider", "field", "words"),
    [
        ({"quantizations": ["fp8", "fp7"]}, "provider.quantizations[1]", "must be one of int4, int8"),
        ({"preferred_max_latency": {"p95": 1}}, "provider.preferred_max_latency.p95", "unknown field (expected p50"),
        ({"preferred_min_throughput": "fast"}, "provider.preferred_min_throughput", "must be a non-negative number"),
        ({"options": {"fake": "max_tokens=5"}}, "provider.options.fake", "must be an object"),
        ({"sort": {"by": "cheapest"}}, "provider.sort.by", "must be one of price"),
        ({"max_price": {"image": "free"}}, "provider.max_price.image", "must be a number"),
    ],
)
async def test_bad_values_are_a_400_naming_the_field_before_any_hold(gateway, gw_rt, provider, field, words):
    who = await funded_person(gw_rt, usd="1")
    before = await balance(gw_rt, who.account_id)
    r = httpx.post(
        f"{gateway.base_url}/api/v1/chat/completions",
        json={"model": "test/chat", "messages": [{"role": "user", "content": "hi"}], "provider": provider},
        headers={"Authorization": f"Bearer {who.key}"},
        timeout=30,
    )
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["code"] == 400 and error["message"].startswith(f"{field}: {words}")
    assert error["metadata"]["field"] == field
    assert await balance(gw_rt, who.account_id) == before


async def test_preferred_latency_and_throughput_reorder_by_measured_figures(gw_database, gw_rt, tmp_path):
    # One worker, so the process that answers is the one that measured.
    fake = FakeUpstreamProcess()
    server = start_gateway(tmp_path, gw_database, fake.url, workers=1)
    try:
        # test/chat: "fake" (Fake AI) is the cheaper endpoint and answers a second late; "fakeb" at
        # once (its latency, counted from the request's arrival, stays far below 0.5 s even on a
        # busy machine).
        fake.set_script({"first_byte_delay_ms": 1000, "chunks": 3}, model="fake-chat")
        who = await funded_person(gw_rt, usd="1")
        with openrouter_sdk(server.base_url, who.key) as client:
            # Nothing measured yet: every endpoint is equally unknown, so cheapest first.
            assert ask(client, {"preferred_max_latency": 0.5}, content=PLAIN) == "Fake AI"
            assert ask(client, {"order": ["fakeb"]}, content=PLAIN) == "Fake Backup"  # now both are measured
            # Fake AI misses 0.5 s at p50, so the pricier Fake Backup goes first ...
            assert ask(client, {"preferred_max_latency": 0.5}, content=PLAIN) == "Fake Backup"
            assert ask(client, {"preferred_max_latency": {"p50": 5, "p90": 0.5}}, content=PLAIN) == "Fake Backup"
            # ... while thresholds both meet leave the cheapest first (Fake AI's throughput is measured
            # over its slow second; a JSON answer within the same millisecond may leave Fake Backup's
            # unmeasured, which still ranks behind one that meets).
            assert (
                ask(client, {"preferred_max_latency": 5, "preferred_min_throughput": 0.01}, content=PLAIN) == "Fake AI"
            )
            # An endpoint that misses is deprioritised, not excluded: it answers when the other fails.
            fake.set_script({"status": 503}, model="fake-chat-backup")
            assert ask(client, {"preferred_max_latency": 0.5}, content=PLAIN) == "Fake AI"
    finally:
        server.stop()
        fake.stop()
