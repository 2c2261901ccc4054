"""Password hashing (argon2id, 19 MiB, t=2 — OWASP's minimum) and the strength policy.

Hashing runs in a worker thread: it costs tens of milliseconds by design, and the event loop must
keep serving other requests meanwhile.
"""

from __future__ import annotations

import asyncio

from argon2 import PasswordHasher, Type
from argon2.exceptions import InvalidHashError, VerificationError

MIN_LENGTH = 10
LOCAL_PART_MIN = 4
MAX_LENGTH = 256  # argon2 has no limit; this bounds the work an anonymous caller can ask for
COMMON = frozenset(
    {
        "password",
        "password1",
        "password12",
        "password123",
        "1234567890",
        "12345678910",
        "qwertyuiop",
        "qwerty1234",
        "iloveyou12",
        "letmein123",
        "welcome123",
        "admin12345",
        "teamrouter",
        "changeme12",
        "abcdefghij",
        "0987654321",
        "1111111111",
        "passw0rd12",
        "football12",
        "monkey1234",
    }
)


def password_problem(password: str, *, email: str) -> str | None:
    """Why a password is too weak, or None. The message is shown to the person."""
    if len(password) < MIN_LENGTH:
        return f"must be at least {MIN_LENGTH} characters"
    if len(password) > MAX_LENGTH:
        return f"must be at most {MAX_LENGTH} characters"
    if len(set(password)) < 4:
        return "uses too few different characters"
    if password.lower() in COMMON:
        return "is one of the most common passwords"
    # The part before the @ is what people reuse ("ada.lovelace2024"); shorter ones ("al") are too
    # likely to occur by chance in a good passphrase to refuse.
    local = email.split("@", 1)[0].lower()
    if len(local) >= LOCAL_PART_MIN and local in password.lower():
        return "must not contain the name part of your email address (before the @)"
    return None


class Passwords:
    def __init__(self, *, time_cost: int = 2, memory_cost_kib: int = 19 * 1024, parallelism: int = 1) -> None:
        self._hasher = PasswordHasher(
            time_cost=time_cost, memory_cost=memory_cost_kib, parallelism=parallelism, type=Type.ID
        )
        # Verified against when the email is unknown, so both paths cost one argon2 verification.
        self._dummy = self._hasher.hash("teamrouter-dummy-password-for-timing")

    async def hash(self, password: str) -> str:
        return await asyncio.to_thread(self._hasher.hash, password)

    async def verify(self, password_hash: str | None, password: str) -> bool:
        return await asyncio.to_thread(self._verify, password_hash, password)

    def _verify(self, password_hash: str | None, password: str) -> bool:
        try:
            return self._hasher.verify(password_hash or self._dummy, password) and password_hash is not None
        except (VerificationError, InvalidHashError):
            return False
