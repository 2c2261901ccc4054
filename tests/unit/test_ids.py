"""Ids: the hand-unrolled encoder is exactly RFC 4648 base32 in Crockford's alphabet, sortable by time."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

from teamrouter import ids

_TO_CROCKFORD = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", b"0123456789abcdefghjkmnpqrstvwxyz")


def reference(ms: int, random: bytes) -> str:
    """The original definition: base32 of 6 time bytes + 10 random bytes, first 26 chars."""
    return base64.b32encode(ms.to_bytes(6, "big") + random)[:26].translate(_TO_CROCKFORD).decode()


@given(ms=st.integers(0, 2**48 - 1), random=st.binary(min_size=10, max_size=10))
def test_encoding_matches_base32_reference(ms: int, random: bytes) -> None:
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ids.time, "time_ns", lambda: ms * 1_000_000 + 999_999)
        mp.setattr(ids.os, "urandom", lambda n: random[:n])
        assert ids.new_id("hold") == "hold_" + reference(ms, random)
        assert ids.new_generation_id() == "gen-" + reference(ms, random)


def test_ids_sort_by_time_and_differ() -> None:
    made = [ids.new_id("x") for _ in range(1000)]
    assert len(set(made)) == len(made)
    assert all(len(i) == 28 for i in made)
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr(ids.time, "time_ns", lambda: 10**18)
        earlier = ids.new_id("x")
        mp.setattr(ids.time, "time_ns", lambda: 10**18 + 1_000_000)
        later = ids.new_id("x")
    assert earlier < later
