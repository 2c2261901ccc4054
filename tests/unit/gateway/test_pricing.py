"""Exact integer pricing (nano-USD), holds that cover real costs, and the prompt estimate."""

from __future__ import annotations

import math
from decimal import Decimal
from fractions import Fraction

import pytest
from hypothesis import given
from hypothesis import strategies as st

from teamrouter.gateway.pricing import (
    PriceError,
    Prices,
    clamp_max_tokens,
    estimate_completion_prompt_tokens,
    estimate_prompt_tokens,
    estimate_text_tokens,
    parse_price,
)


def prices(prompt: str, completion: str, request: str = "0", cached: str | None = None) -> Prices:
    return Prices(Decimal(prompt), Decimal(completion), Decimal(request), None if cached is None else Decimal(cached))


# (prompt price, completion price, request price, cached price, prompt, completion, cached, nano-USD)
GOLDEN = [
    ("0.0000005", "0.0000015", "0", None, 1000, 500, 0, 500_000 + 750_000),
    ("0.0000005", "0.0000015", "0", None, 0, 0, 0, 0),
    ("0.0000005", "0.0000015", "0.001", None, 0, 0, 0, 1_000_000),
    ("0.0000005", "0.0000015", "0.001", None, 10, 1, 0, 1_000_000 + 5_000 + 1_500),
    # 37.5 nano per token: 1 token is 37.5 -> rounded up once to 38; 2 tokens are exactly 75.
    ("0.0000000375", "0", "0", None, 1, 0, 0, 38),
    ("0.0000000375", "0", "0", None, 2, 0, 0, 75),
    # Sub-nano parts add up exactly before the single rounding: 3 * 0.4 + 3 * 0.4 = 2.4 -> 3.
    ("0.0000000004", "0.0000000004", "0", None, 3, 3, 0, 3),
    # Cached tokens (part of prompt) at the cached price: 600 * 500 + 400 * 50 + 100 * 1500.
    ("0.0000005", "0.0000015", "0", "0.00000005", 1000, 100, 400, 300_000 + 20_000 + 150_000),
    # Without a cached price, cached tokens cost the prompt price.
    ("0.0000005", "0.0000015", "0", None, 1000, 100, 400, 500_000 + 150_000),
    # More cached than prompt tokens is clamped to the prompt.
    ("0.0000005", "0", "0", "0", 10, 0, 50, 0),
    # n = 3 choices of 100 tokens: OpenAI usage already sums them (300).
    ("0.0000005", "0.0000015", "0", None, 20, 300, 0, 10_000 + 450_000),
    # $15 / $75 per million, a long answer.
    ("0.000015", "0.000075", "0", None, 12_345, 6_789, 0, 185_175_000 + 509_175_000),
]


@pytest.mark.parametrize(("p", "c", "r", "cp", "pt", "ct", "cached", "expected"), GOLDEN)
def test_cost_golden_table(
    p: str, c: str, r: str, cp: str | None, pt: int, ct: int, cached: int, expected: int
) -> None:
    cost = prices(p, c, r, cp).cost(pt, ct, cached)
    assert cost == expected
    assert isinstance(cost, int)


def test_worst_case_multiplies_completion_by_n_and_adds_request() -> None:
    p = prices("0.0000005", "0.0000015", "0.001")
    assert p.worst_case(100, 200) == 50_000 + 300_000 + 1_000_000
    assert p.worst_case(100, 200, n=3) == 50_000 + 900_000 + 1_000_000
    with pytest.raises(ValueError):
        p.worst_case(100, 200, n=0)


def test_worst_case_uses_the_higher_of_prompt_and_cached_price() -> None:
    odd = prices("0.000001", "0", cached="0.000002")
    assert odd.worst_case(10, 0) == 20_000
    assert odd.cost(10, 0, cached_tokens=10) == 20_000


def test_negative_tokens_are_refused() -> None:
    with pytest.raises(ValueError):
        prices("0.000001", "0.000001").cost(-1, 0)


def test_affordable_completion_tokens() -> None:
    p = prices("0.000001", "0.000002")  # 1000 and 2000 nano per token
    assert p.affordable_completion_tokens(10, 10_000 + 2_000 * 7 + 1999) == 7
    assert p.affordable_completion_tokens(10, 9_999) == 0
    assert p.affordable_completion_tokens(10, 10_000 + 2_000 * 8, n=2) == 4


@pytest.mark.parametrize("bad", [0.5, "abc", "NaN", "Infinity", "-0.1", True, None, [1]])
def test_parse_price_refuses_inexact_or_negative(bad: object) -> None:
    with pytest.raises(PriceError):
        parse_price(bad)


def test_parse_price_accepts_strings_and_integers() -> None:
    assert parse_price("0.0000005") == Decimal("0.0000005")
    assert parse_price(" 1 ") == Decimal(1)
    assert parse_price(0) == Decimal(0)


def test_openrouter_pricing_strings_have_no_exponent() -> None:
    shown = prices("0.0000005", "0.0000015", "0", "0.00000005").as_openrouter()
    assert shown == {
        "prompt": "0.0000005",
        "completion": "0.0000015",
        "request": "0",
        "input_cache_read": "0.00000005",
    }


def test_clamp_max_tokens() -> None:
    assert clamp_max_tokens(None, cap=4096) == 4096
    assert clamp_max_tokens(100, cap=4096) == 100
    assert clamp_max_tokens(10**12, cap=4096) == 4096
    with pytest.raises(ValueError):
        clamp_max_tokens(0, cap=4096)


def test_estimates() -> None:
    assert estimate_text_tokens("") == 0
    assert estimate_text_tokens("abc") == 1
    assert estimate_text_tokens("abcd") == 2
    assert estimate_text_tokens("é") == 1  # 2 bytes
    assert estimate_text_tokens("日本語") == 3  # 9 bytes
    one = estimate_prompt_tokens([{"role": "user", "content": "hello world!"}])
    assert one == 3 + 4 + 4
    parts = estimate_prompt_tokens(
        [
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "hello world!"},
                    {"type": "image_url", "image_url": {"url": "data:" + "A" * 10**6}},
                ],
            }
        ]
    )
    assert parts == one + 1600  # an image is a flat 1,600 tokens, not its base64 size
    with_tools = estimate_prompt_tokens([{"role": "user", "content": "hello world!"}], tools=[{"type": "function"}])
    assert with_tools > one
    assert estimate_completion_prompt_tokens("abcdef") == 3 + 2


def test_estimate_over_estimates_english() -> None:
    # ~4.5 bytes per token for English prose with a BPE tokenizer; the estimate must be above.
    text = "The quick brown fox jumps over the lazy dog. " * 20
    assert estimate_text_tokens(text) >= len(text) / 4


price_text = st.decimals(min_value=0, max_value=Decimal("0.001"), places=12).map(str)


@given(
    p=price_text,
    c=price_text,
    r=price_text,
    cached_price=st.one_of(st.none(), price_text),
    estimate=st.integers(0, 2_000_000),
    max_tokens=st.integers(1, 200_000),
    n=st.integers(1, 8),
    data=st.data(),
)
def test_real_cost_never_exceeds_the_hold(
    p: str,
    c: str,
    r: str,
    cached_price: str | None,
    estimate: int,
    max_tokens: int,
    n: int,
    data: st.DataObject,
) -> None:
    pr = prices(p, c, r, cached_price)
    prompt = data.draw(st.integers(0, estimate))
    completion = data.draw(st.integers(0, max_tokens * n))
    cached = data.draw(st.integers(0, prompt))
    assert pr.cost(prompt, completion, cached) <= pr.worst_case(estimate, max_tokens, n)
    # And the hold itself is never more than one nano-USD above the exact worst case.
    exact = (
        Decimal(estimate) * max(pr.prompt, pr.cached_prompt or 0) + Decimal(n * max_tokens) * pr.completion + pr.request
    )
    assert pr.worst_case(estimate, max_tokens, n) - exact * 10**9 < 1


@given(
    p=price_text,
    c=price_text,
    r=price_text,
    cached_price=st.one_of(st.none(), price_text),
    prompt=st.integers(0, 2_000_000),
    completion=st.integers(0, 1_000_000),
    cached=st.integers(-10, 2_100_000),
    n=st.integers(1, 8),
    available=st.integers(0, 10**15),
)
def test_integer_arithmetic_equals_exact_fractions(
    p: str,
    c: str,
    r: str,
    cached_price: str | None,
    prompt: int,
    completion: int,
    cached: int,
    n: int,
    available: int,
) -> None:
    # The reference: the exact rational sums, rounded up (or down) once.
    pr = prices(p, c, r, cached_price)
    nano = {k: Fraction(Decimal(v)) * 10**9 for k, v in {"p": p, "c": c, "r": r, "cp": cached_price or p}.items()}
    clamped = min(max(cached, 0), prompt)
    exact_cost = (prompt - clamped) * nano["p"] + clamped * nano["cp"] + completion * nano["c"] + nano["r"]
    assert pr.cost(prompt, completion, cached) == math.ceil(exact_cost)
    worst_prompt = max(nano["p"], nano["cp"])
    exact_hold = prompt * worst_prompt + n * completion * nano["c"] + nano["r"]
    assert pr.worst_case(prompt, completion, n) == math.ceil(exact_hold)
    left = available - prompt * worst_prompt - nano["r"]
    expected = 0 if left < 0 else 2**62 if nano["c"] == 0 else math.floor(left / (nano["c"] * n))
    assert pr.affordable_completion_tokens(prompt, available, n) == expected


def test_cache_writes_bill_at_their_price_and_the_hold_covers_them() -> None:
    # Anthropic: a 5-minute cache write at 1.25x the prompt price, a read at 0.1x.
    p = Prices(Decimal("0.000003"), Decimal("0.000015"), Decimal(0), Decimal("0.0000003"), Decimal("0.00000375"))
    # 100 plain + 1000 read + 200 written prompt tokens, 10 completion tokens.
    assert p.cost(1300, 10, cached_tokens=1000, cache_write_tokens=200) == 300_000 + 300_000 + 750_000 + 150_000
    # Writes never count twice, nor beyond the prompt.
    assert p.cost(100, 0, cached_tokens=80, cache_write_tokens=500) == 80 * 300 + 20 * 3750
    assert p.worst_case(1000, 0) == 1000 * 3750  # every prompt token might be a write
    assert p.as_openrouter()["input_cache_write"] == "0.00000375"
