"""Exact request pricing in integer nano-USD, and the prompt-token estimate used for holds.

Catalog prices are exact decimal strings in USD per token. They are kept as ``Decimal`` (for
display) and, for arithmetic, as exact nano-USD per token: integer numerators over one common
denominator per endpoint, since a price such as ``"0.0000000375"`` is 37.5 nano-USD per token,
which no integer unit would hold exactly.
A cost is the exact sum of all parts, rounded UP once at the end, so no request is ever
under-billed by rounding and no float ever touches money.

Cost of one generation (OpenAI usage semantics: ``prompt_tokens`` includes cached tokens)::

    ceil((prompt - cached - written) * prompt_price
         + cached * cached_prompt_price      # prompt_price when the catalog gives none
         + written * cache_write_price       # cache writes (Anthropic's cost more); prompt_price by default
         + completion * completion_price     # completion already sums all n choices
         + request_price)
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from fractions import Fraction

NANO_PER_USD = 10**9
TOKENS_PER_MILLION = 10**6

# The estimate: one token per 3 UTF-8 bytes of text. Real BPE tokenizers average ~4 bytes per
# token on English and ~3 on code or CJK, so this over-estimates in the common case; the
# overheads cover the chat template tokens each message adds (OpenAI documents 3-4).
BYTES_PER_TOKEN = 3
MESSAGE_OVERHEAD_TOKENS = 4
REQUEST_OVERHEAD_TOKENS = 3
# An image costs at most ~1,600 tokens on the providers we know (Anthropic: ~1.15 MP / 750);
# counting its base64 bytes instead would turn a 1 MB image into a 330k-token hold.
IMAGE_TOKENS = 1600


class PriceError(ValueError):
    """A price that is not an exact, finite, non-negative decimal."""


def parse_price(value: object) -> Decimal:
    """Parse a catalog price: a decimal string (or an integer), never a float.

    Floats are refused because ``0.1`` in TOML is already inexact before we see it.
    """
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise PriceError(f'price must be a decimal string such as "0.0000005", got {value!r}')
    try:
        price = Decimal(value) if isinstance(value, int) else Decimal(value.strip())
    except InvalidOperation:
        raise PriceError(f"price {value!r} is not an exact decimal") from None
    if not price.is_finite():
        raise PriceError(f"price {value!r} is not finite")
    if price < 0:
        raise PriceError(f"price {value!r} is negative")
    return price


def usd_to_nano(usd: Decimal) -> Fraction:
    """Exact nano-USD for an exact USD decimal (possibly fractional nano-USD)."""
    return Fraction(usd) * NANO_PER_USD


def format_usd(usd: Decimal) -> str:
    """A plain decimal string without exponent, as OpenRouter's `pricing` fields are."""
    text = format(usd.normalize(), "f")
    return text if text != "-0" else "0"


# The size of the request the default "cheapest first" order compares endpoints on.
SORT_REFERENCE_TOKENS = 1000


@dataclass(frozen=True, slots=True)
class Prices:
    """One endpoint's prices, USD per token (per request for ``request``)."""

    prompt: Decimal
    completion: Decimal
    request: Decimal = Decimal(0)
    cached_prompt: Decimal | None = None
    cache_write: Decimal | None = None
    # Exact nano-USD per token as integer numerators over one common denominator, derived once:
    # the hot path (a hold and a settlement per request) then does integer arithmetic only,
    # which is exact like Fraction arithmetic but without its per-operation gcd and allocation.
    _den: int = field(init=False, repr=False, compare=False)
    _prompt_num: int = field(init=False, repr=False, compare=False)
    _completion_num: int = field(init=False, repr=False, compare=False)
    _request_num: int = field(init=False, repr=False, compare=False)
    _cached_num: int = field(init=False, repr=False, compare=False)
    _write_num: int = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("prompt", "completion", "request"):
            if getattr(self, name) < 0:
                raise PriceError(f"{name} price is negative")
        for name, price in (("cached_prompt", self.cached_prompt), ("cache_write", self.cache_write)):
            if price is not None and price < 0:
                raise PriceError(f"{name} price is negative")
        cached = self.prompt if self.cached_prompt is None else self.cached_prompt
        write = self.prompt if self.cache_write is None else self.cache_write
        exact = [usd_to_nano(price) for price in (self.prompt, self.completion, self.request, cached, write)]
        den = math.lcm(*(f.denominator for f in exact))
        object.__setattr__(self, "_den", den)
        names = ("_prompt_num", "_completion_num", "_request_num", "_cached_num", "_write_num")
        for name, value in zip(names, exact, strict=True):
            object.__setattr__(self, name, value.numerator * (den // value.denominator))

    def cost(
        self, prompt_tokens: int, completion_tokens: int, cached_tokens: int = 0, cache_write_tokens: int = 0
    ) -> int:
        """Real cost in nano-USD of one generation, rounded up once.

        ``cached_tokens`` is the part of ``prompt_tokens`` read from the provider's cache and
        ``cache_write_tokens`` the part written to it; both are clamped within ``prompt_tokens``
        so a confused upstream cannot bill tokens twice.
        """
        _check_tokens(prompt_tokens=prompt_tokens, completion_tokens=completion_tokens)
        cached = min(max(cached_tokens, 0), prompt_tokens)
        written = min(max(cache_write_tokens, 0), prompt_tokens - cached)
        scaled = (
            (prompt_tokens - cached - written) * self._prompt_num
            + cached * self._cached_num
            + written * self._write_num
            + completion_tokens * self._completion_num
            + self._request_num
        )
        return -(-scaled // self._den)  # ceil, exactly: the sum is over one denominator

    def worst_case(self, prompt_tokens_estimate: int, max_completion_tokens: int, n: int = 1) -> int:
        """The hold: the most `cost` can be if the prompt is at most the estimate and each of
        the ``n`` choices honours ``max_completion_tokens``."""
        _check_tokens(prompt_tokens=prompt_tokens_estimate, completion_tokens=max_completion_tokens)
        if n < 1:
            raise ValueError("n must be >= 1")
        # Any prompt token may be a cache read or write: the hold covers the dearest of the three.
        prompt_num = max(self._prompt_num, self._cached_num, self._write_num)
        scaled = (
            prompt_tokens_estimate * prompt_num + n * max_completion_tokens * self._completion_num + self._request_num
        )
        return -(-scaled // self._den)

    def affordable_completion_tokens(self, prompt_tokens_estimate: int, available_nano: int, n: int = 1) -> int:
        """How many completion tokens (per choice) `available_nano` pays for after the prompt
        and request price; 0 when not even the prompt fits. Used for the 402 message."""
        prompt_num = max(self._prompt_num, self._cached_num, self._write_num)
        left = available_nano * self._den - prompt_tokens_estimate * prompt_num - self._request_num
        if left < 0:
            return 0
        if self._completion_num == 0:
            return 2**62  # free completions: anything is affordable
        return left // (self._completion_num * n)

    def sort_key(self) -> Decimal:
        """Default routing order: cheapest for a reference request of SORT_REFERENCE_TOKENS prompt
        and as many completion tokens, per-request price included (per token prices alone sent a
        short request to an endpoint with a fixed fee hundreds of times dearer). A fixed reference
        keeps routing a function of the catalog alone: predictable, and the same for every request."""
        return self.prompt + self.completion + self.request / SORT_REFERENCE_TOKENS

    def as_openrouter(self) -> dict[str, str]:
        """The `pricing` object of GET /models: strings, USD per token."""
        out = {
            "prompt": format_usd(self.prompt),
            "completion": format_usd(self.completion),
            "request": format_usd(self.request),
        }
        if self.cached_prompt is not None:
            out["input_cache_read"] = format_usd(self.cached_prompt)
        if self.cache_write is not None:
            out["input_cache_write"] = format_usd(self.cache_write)
        return out


def _check_tokens(*, prompt_tokens: int, completion_tokens: int) -> None:
    if prompt_tokens < 0 or completion_tokens < 0:
        raise ValueError("token counts must be >= 0")


def clamp_max_tokens(requested: int | None, *, cap: int) -> int:
    """The completion budget actually held and sent upstream.

    No ``max_tokens`` means the endpoint's output cap (never "the whole balance"); an absurd one
    is clamped to the cap, so a hold never exceeds what the endpoint can produce.
    """
    if cap < 1:
        raise ValueError("cap must be >= 1")
    if requested is None:
        return cap
    if requested < 1:
        raise ValueError("max_tokens must be >= 1")
    return min(requested, cap)


def estimate_text_tokens(text: str) -> int:
    """Tokens of a plain text: ceil(UTF-8 bytes / 3)."""
    # An ASCII str knows it is ASCII (O(1)) and then has one byte per character: no copy to count.
    size = len(text) if text.isascii() else len(text.encode("utf-8"))
    return -(-size // BYTES_PER_TOKEN)


def _content_tokens(content: object) -> int:
    if content is None:
        return 0
    if isinstance(content, str):
        return estimate_text_tokens(content)
    if isinstance(content, Sequence):
        total = 0
        for part in content:
            if isinstance(part, Mapping):
                kind = part.get("type")
                if kind == "text" and isinstance(part.get("text"), str):
                    total += estimate_text_tokens(part["text"])
                elif kind in ("image_url", "image", "input_image"):
                    total += IMAGE_TOKENS
                else:
                    total += _json_tokens(part)
            else:
                total += _content_tokens(part)
        return total
    return _json_tokens(content)


def _json_tokens(value: object) -> int:
    return estimate_text_tokens(json.dumps(value, ensure_ascii=False, separators=(",", ":")))


def estimate_prompt_tokens(messages: Iterable[Mapping[str, object]], *, tools: object = None) -> int:
    """A cheap, deterministic, usually pessimistic estimate of a chat prompt's tokens.

    Per message: text bytes / 3 (rounded up) + 4 template tokens; tool calls and other
    non-text parts count their compact JSON; images a fixed 1,600; plus 3 per request and the
    JSON of ``tools``. Not a guarantee — a prompt of rare symbols can tokenize worse — but an
    under-estimate only means a settlement slightly above the hold, which settlement allows.
    """
    total = REQUEST_OVERHEAD_TOKENS
    for message in messages:
        total += MESSAGE_OVERHEAD_TOKENS + _content_tokens(message.get("content"))
        name = message.get("name")
        if isinstance(name, str):
            total += estimate_text_tokens(name)
        tool_calls = message.get("tool_calls")
        if tool_calls:
            total += _json_tokens(tool_calls)
    if tools:
        total += _json_tokens(tools)
    return total


def estimate_completion_prompt_tokens(prompt: object) -> int:
    """Estimate for the legacy /completions ``prompt`` (a string or a list of strings)."""
    if isinstance(prompt, str):
        return REQUEST_OVERHEAD_TOKENS + estimate_text_tokens(prompt)
    if isinstance(prompt, Sequence):
        return REQUEST_OVERHEAD_TOKENS + sum(_content_tokens(p) for p in prompt)
    return REQUEST_OVERHEAD_TOKENS + _json_tokens(prompt)
