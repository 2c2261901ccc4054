"""The official `openai` and `openrouter` SDKs, changed only in their base URL, complete chat
requests (JSON and SSE) through a real teamrouter process to a fake OpenAI-compatible upstream and
to a fake Anthropic upstream; pool, key usage, GET /generation and the activity row show the cost."""

from __future__ import annotations

import warnings

import httpx
import openai
import pytest
from sqlalchemy import select
from tests.support.gateway import funded_person, script
from tests.support.sdk import openrouter

from teamrouter.domain.activity.models import Generation
from teamrouter.domain.credits.models import CreditAccount
from teamrouter.money import UNITS_PER_USD

pytestmark = pytest.mark.db

USAGE = {"prompt_tokens": 100, "completion_tokens": 50}
COST_CHAT = 100 * 1_000 + 50 * 2_000  # nano-USD at $1/M prompt, $2/M completion
COST_CLAUDE = 100 * 3_000 + 50 * 15_000


async def balance(rt, account_id: str) -> tuple[int, int]:
    async with rt.db.read() as s:
        row = await s.get_one(CreditAccount, account_id)
        return row.balance, row.held


async def generation(rt, gen_id: str) -> Generation:
    async with rt.db.read() as s:
        row = await s.scalar(select(Generation).where(Generation.id == gen_id))
    assert row is not None
    return row


@pytest.mark.parametrize(("model", "cost"), [("test/chat", COST_CHAT), ("test/claude", COST_CLAUDE)])
async def test_openai_sdk_non_streaming(sdk, gateway, gw_rt, fake, model, cost):
    who = await funded_person(gw_rt, usd="1")
    before, _ = await balance(gw_rt, who.account_id)
    client = sdk(who.key)
    content = script(content="Hello there friend", usage=USAGE)
    raw = client.chat.completions.with_raw_response.create(
        model=model, messages=[{"role": "user", "content": content}], max_tokens=200, user="end-user-7"
    )
    result = raw.parse()
    assert raw.headers["x-generation-id"] == result.id and result.id.startswith("gen-")
    assert result.model == model
    assert result.choices[0].message.content == "Hello there friend"
    assert result.usage.prompt_tokens == 100 and result.usage.completion_tokens == 50
    assert result.usage.model_extra["cost"] == pytest.approx(cost / UNITS_PER_USD)

    after, held = await balance(gw_rt, who.account_id)
    assert before - after == cost and held == 0
    row = await generation(gw_rt, result.id)
    assert (row.cost, row.tokens_prompt, row.tokens_completion, row.streamed) == (cost, 100, 50, False)
    assert row.external_user == "end-user-7" and row.key_hash == who.key_hash and row.user_id == who.user_id

    r = httpx.get(
        f"{gateway.base_url}/api/v1/generation",
        params={"id": result.id},
        headers={"Authorization": f"Bearer {who.key}"},
    )
    assert r.status_code == 200 and r.json()["data"]["total_cost"] == pytest.approx(cost / UNITS_PER_USD)
    # The provider's display name, as the answer's `provider` and the endpoints listing give it.
    assert r.json()["data"]["provider_name"] == result.model_extra["provider"]
    key = httpx.get(f"{gateway.base_url}/api/v1/key", headers={"Authorization": f"Bearer {who.key}"}).json()["data"]
    assert key["usage"] == pytest.approx(cost / UNITS_PER_USD)
    assert key["usage_daily"] == pytest.approx(cost / UNITS_PER_USD)


@pytest.mark.parametrize(("model", "cost"), [("test/chat", COST_CHAT), ("test/claude", COST_CLAUDE)])
async def test_openai_sdk_streaming_ends_with_a_usage_chunk_carrying_cost(sdk, gateway, gw_rt, model, cost):
    who = await funded_person(gw_rt, usd="1")
    before, _ = await balance(gw_rt, who.account_id)
    stream = sdk(who.key).chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": script(content="one two three four", chunks=4, usage=USAGE)}],
        max_tokens=200,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text == "one two three four"
    last = chunks[-1]
    assert last.choices == [] and last.usage is not None
    assert last.usage.model_extra["cost"] == pytest.approx(cost / UNITS_PER_USD)
    assert len({c.id for c in chunks}) == 1 and chunks[0].id.startswith("gen-")
    # Every chunk names the provider that answered, as OpenRouter's do and the JSON answer does.
    assert len({c.model_extra["provider"] for c in chunks}) == 1 and chunks[0].model_extra["provider"]
    after, held = await balance(gw_rt, who.account_id)
    assert before - after == cost and held == 0
    row = await generation(gw_rt, chunks[0].id)
    assert row.streamed and row.cost == cost and not row.usage_estimated


async def test_openrouter_sdk_chat_both_ways(gateway, gw_rt):
    who = await funded_person(gw_rt, usd="1")
    before, _ = await balance(gw_rt, who.account_id)
    with (
        warnings.catch_warnings(),
        openrouter(who.key, gateway.base_url) as client,
    ):
        warnings.simplefilter("ignore", DeprecationWarning)
        result = client.chat.send(
            model="test/chat",
            messages=[{"role": "user", "content": script(content="hi there", usage=USAGE)}],
            max_tokens=100,
        )
        assert result.id.startswith("gen-") and result.usage.cost == pytest.approx(COST_CHAT / UNITS_PER_USD)
        with client.chat.send(
            model="test/chat",
            messages=[{"role": "user", "content": script(content="a b c", chunks=3, usage=USAGE)}],
            max_tokens=100,
            stream=True,
        ) as stream:
            events = list(stream)
    assert "".join(e.choices[0].delta.content or "" for e in events if e.choices) == "a b c"
    assert events[-1].usage.cost == pytest.approx(COST_CHAT / UNITS_PER_USD)
    after, _ = await balance(gw_rt, who.account_id)
    assert before - after == 2 * COST_CHAT


async def test_demo_model_answers_offline_and_bills(sdk, gateway, gw_rt):
    who = await funded_person(gw_rt, usd="1")
    result = sdk(who.key).chat.completions.create(
        model="demo/echo", messages=[{"role": "user", "content": "ping"}], max_tokens=50
    )
    assert "[teamrouter demo]" in result.choices[0].message.content
    assert result.usage.model_extra["cost"] > 0


@pytest.mark.parametrize("stream", [False, True])
async def test_the_demo_model_refuses_a_prompt_longer_than_its_context_as_a_real_one_would(sdk, gw_rt, stream):
    who = await funded_person(gw_rt, usd="1")
    before = await balance(gw_rt, who.account_id)
    long = "word " * 5_000  # 25,000 bytes: ~8,340 tokens by the demo's count (3 bytes a token), over 8,192
    with pytest.raises(openai.BadRequestError) as refused:
        sdk(who.key).chat.completions.create(
            model="demo/echo", messages=[{"role": "user", "content": long}], max_tokens=5, stream=stream
        )
    assert "maximum context length is 8192 tokens" in refused.value.message
    # OpenAI's code for it, which clients act on, is the error's code (the upstream's too).
    metadata = refused.value.body["metadata"]  # type: ignore[index]
    assert metadata == {"code": "context_length_exceeded", "upstream_code": "context_length_exceeded"}
    assert await balance(gw_rt, who.account_id) == before  # nothing billed, nothing held
    half = long[: len(long) // 2]
    answer = sdk(who.key).chat.completions.create(
        model="demo/echo", messages=[{"role": "user", "content": half}], max_tokens=5
    )
    assert 4_000 < answer.usage.prompt_tokens < 8_192


async def test_legacy_text_completions(sdk, gateway, gw_rt):
    who = await funded_person(gw_rt, usd="1")
    result = sdk(who.key).completions.create(
        model="test/chat", prompt=script(content="legacy text", usage=USAGE), max_tokens=100, logprobs=2
    )  # a text completion's logprobs is a count (a chat's, a switch)
    assert result.choices[0].text == "legacy text"
    assert result.usage.model_extra["cost"] == pytest.approx(COST_CHAT / UNITS_PER_USD)


@pytest.mark.parametrize("stream", [False, True])
async def test_anthropic_prompt_cache_reads_and_writes_bill_at_their_prices(sdk, gw_rt, stream):
    # 100 prompt tokens, of which 30 read from the cache and 50 written to it (test/claude: $3/M
    # prompt, no cached price so reads at the prompt price, writes at Anthropic's 1.25x by default).
    who = await funded_person(gw_rt, usd="1")
    usage = {"prompt_tokens": 100, "completion_tokens": 10, "cached_tokens": 30, "cache_write_tokens": 50}
    messages = [
        {
            "role": "user",
            "content": [{"type": "text", "text": script(usage=usage), "cache_control": {"type": "ephemeral"}}],
        }
    ]
    before, _ = await balance(gw_rt, who.account_id)
    answer = (
        sdk(who.key).chat.completions.create(
            model="test/claude", messages=messages, max_tokens=20, stream=stream, stream_options={"include_usage": True}
        )
        if stream
        else sdk(who.key).chat.completions.create(model="test/claude", messages=messages, max_tokens=20)
    )
    last = list(answer)[-1] if stream else answer
    expected = (20 + 30) * 3_000 + 50 * 3_750 + 10 * 15_000
    assert last.usage.model_extra["cost"] == pytest.approx(expected / UNITS_PER_USD)
    assert last.usage.prompt_tokens_details.cached_tokens == 30
    after, held = await balance(gw_rt, who.account_id)
    assert before - after == expected and held == 0
