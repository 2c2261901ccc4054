"""Identifiers, secret tokens and API keys.

Ids are prefixed and time-sortable (48-bit millisecond time + 80 random bits, Crockford base32), so
newest-first listings and cursors can order by id. Secrets are `secrets` randomness, stored only as
SHA-256 hex.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
import time

_ALPHABET = "0123456789abcdefghjkmnpqrstvwxyz"
KEY_PREFIX = "sk-tr-v1-"
KEY_SECRET_BYTES = 32  # 256 bits after the prefix
TOKEN_BYTES = 24  # 192 bits for email and invitation tokens, session tokens


# RFC 4648 base32 → Crockford's lower-case alphabet, index for index, so byte order = text order.
_TO_CROCKFORD = bytes.maketrans(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567", _ALPHABET.encode())


def new_id(prefix: str) -> str:
    """`prefix_` + 26 chars: 48 bits of millisecond time then 80 random bits, sortable by time.

    Made with the C base32 encoder (it runs on every request several times).
    """
    raw = (time.time_ns() // 1_000_000).to_bytes(6, "big") + secrets.token_bytes(10)
    return f"{prefix}_{base64.b32encode(raw)[:26].translate(_TO_CROCKFORD).decode()}"


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
    return "gen-" + new_id("g")[2:]
