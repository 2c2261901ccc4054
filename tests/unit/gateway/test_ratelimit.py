from __future__ import annotations

import pytest

from teamrouter.errors import RateLimited
from teamrouter.gateway.ratelimit import KeyRateLimiter


def test_per_key_limit_refuses_with_retry_after_and_resets_each_minute():
    now = [120.0]
    limiter = KeyRateLimiter(3, clock=lambda: now[0])
    for _ in range(3):
        limiter.count("key_a")
    limiter.count("key_b")  # another key has its own budget
    with pytest.raises(RateLimited) as refused:
        limiter.count("key_a")
    assert refused.value.status == 429 and 1 <= refused.value.metadata["retry_after"] <= 60
    assert refused.value.envelope()["error"]["code"] == 429
    now[0] = 180.5  # next minute
    limiter.count("key_a")


def test_retry_after_rounds_up_to_the_next_window():
    # 0.4 s into the window 120-180: 59.6 s are left. Waiting the advertised 60 s lands at 180.4, in
    # the next window; rounding down to 59 s would land at 179.4, still refused.
    now = [120.4]
    limiter = KeyRateLimiter(1, clock=lambda: now[0])
    limiter.count("key")
    with pytest.raises(RateLimited) as refused:
        limiter.count("key")
    retry_after = refused.value.metadata["retry_after"]
    assert retry_after == 60
    now[0] += retry_after
    limiter.count("key")


def test_zero_means_unlimited():
    limiter = KeyRateLimiter(0)
    for _ in range(1000):
        limiter.count("key")
