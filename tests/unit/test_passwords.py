"""Password hashing policy: argon2id at OWASP's minimum cost, and the strength rules."""

from __future__ import annotations

import pytest

from teamrouter.domain.accounts.passwords import Passwords, password_problem


async def test_production_hasher_is_argon2id_19_mib_t2():
    hashed = await Passwords().hash("a sufficiently long passphrase")
    assert hashed.startswith("$argon2id$v=19$m=19456,t=2,p=1$")
    assert await Passwords().verify(hashed, "a sufficiently long passphrase")
    assert not await Passwords().verify(hashed, "a different passphrase")
    assert not await Passwords().verify(None, "anything at all")  # unknown account: same work, refused


@pytest.mark.parametrize(
    ("password", "problem"),
    [
        ("short", "at least 10"),
        ("x" * 300, "at most 256"),
        ("aaaaaaaaaaaa", "different characters"),
        ("password123", "common"),
        ("ada.lovelace-rocks", "must not contain the name part of your email address (before the @)"),
        ("ADA.LOVELACE rocks", "name part of your email address"),
    ],
)
def test_weak_passwords_say_why(password, problem):
    found = password_problem(password, email="ada.lovelace@example.com")
    assert found is not None and problem in found


def test_the_email_rule_is_about_the_name_part_of_the_address():
    # The tester's case: the address's whole text is not in the password, its name part is.
    found = password_problem("crlf long passphrase", email="crlf@example.com")
    assert found == "must not contain the name part of your email address (before the @)"
    assert password_problem("example.com passphrase", email="crlf@example.com") is None  # the domain is not
    assert password_problem("bob's long passphrase", email="bob@example.com") is None  # under 4 characters


def test_good_password_passes():
    assert password_problem("correct horse battery staple", email="ada@example.com") is None
