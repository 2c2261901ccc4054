"""Identifiers, secret tokens and API keys.

Ids are prefixed and time-sortable (48-bit millisecond time + 80 random bits, Crockford base32), so
newest-first listings and cursors can order by id. Secrets are `secrets` randomness, stored only as
SHA-256 hex.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
KEY_PREFIX = "sk-tr-v1-"
KEY_SECRET_BYTES = 32  # 256 bits after the prefix
TOKEN_BYTES = 24  # 192 bits for email and invitation tokens, session tokens


# Every pair of alphabet characters, indexed by the 10 bits they encode: an id is 13 lookups.
_PAIRS = tuple(a + b for a in _ALPHABET for b in _ALPHABET)


def _sortable() -> str:
    """26 chars: 48 bits of millisecond time then 80 random bits (and 2 zero bits), big-endian.

    Runs several times per request, so it is unrolled by hand (a third of the cost of the
    stdlib's pure-Python base32). The randomness is `os.urandom`, the source `secrets` reads.
    """
    n = ((time.time_ns() // 1_000_000) << 82) | (int.from_bytes(os.urandom(10)) << 2)
    p = _PAIRS
    return (
        f"{p[n >> 120]}{p[(n >> 110) & 1023]}{p[(n >> 100) & 1023]}{p[(n >> 90) & 1023]}{p[(n >> 80) & 1023]}"
        f"{p[(n >> 70) & 1023]}{p[(n >> 60) & 1023]}{p[(n >> 50) & 1023]}{p[(n >> 40) & 1023]}"
        f"{p[(n >> 30) & 1023]}{p[(n >> 20) & 1023]}{p[(n >> 10) & 1023]}{p[n & 1023]}"
    )


def new_id(prefix: str) -> str:
    """`prefix_` + 26 chars: 48 bits of millisecond time then 80 random bits, sortable by time."""
    return f"{prefix}_{_sortable()}"


def new_token() -> str:
    return secrets.token_urlsafe(TOKEN_BYTES)


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode("utf-8")).hexdigest()


def new_api_key() -> str:
    return KEY_PREFIX + secrets.token_hex(KEY_SECRET_BYTES)


def key_label(plaintext: str) -> str:
    """What a person sees of a key after creation: enough to recognise it, not to use it."""
    return f"{plaintext[: len(KEY_PREFIX) + 3]}...{plaintext[-3:]}"


def constant_time_equal(a: str, b: str) -> bool:
    return hmac.compare_digest(a.encode("utf-8"), b.encode("utf-8"))


def new_generation_id() -> str:
    """`gen-` + a time-sortable id, as OpenRouter's generation ids look."""
    return "gen-" + _sortable()
