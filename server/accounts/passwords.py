"""Password hashing with argon2id (``argon2-cffi``'s PasswordHasher, its default parameters).

Hashing is deliberately slow (tens of milliseconds, 64 MiB): the async callers run these
functions in a worker thread (``asyncio.to_thread``) so the event loop never waits on them.
"""

from __future__ import annotations

from functools import cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_hasher = PasswordHasher()


# Verified against when the username is unknown, so that an unknown name takes as long as a
# wrong password (no way to learn which usernames exist from the time taken).
@cache
def _dummy() -> str:
    return _hasher.hash("not a password of anyone")


def hash_password(password: str) -> str:
    return _hasher.hash(password)


def verify_password(stored: str | None, password: str) -> tuple[bool, str | None]:
    """(whether ``password`` matches ``stored``, a new hash to store if the hasher's parameters
    changed since ``stored`` was made). ``stored`` None (no such account, or one without a
    password) costs the same time and never matches."""
    try:
        _hasher.verify(stored or _dummy(), password)
    except (VerificationError, InvalidHashError):
        return False, None
    if stored is None:
        return False, None
    return True, (_hasher.hash(password) if _hasher.check_needs_rehash(stored) else None)
