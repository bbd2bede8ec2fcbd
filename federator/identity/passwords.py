"""Password hashing with argon2id (argon2-cffi's defaults, its recommended parameters).

Passwords are only ever hashed or verified here; nothing logs or returns them.
"""

from __future__ import annotations

from functools import cache

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError

_HASHER = PasswordHasher()


@cache
def _decoy() -> str:
    # Verified against when the user does not exist, so an unknown name costs as much time
    # as a wrong password and the answers cannot be told apart by timing.
    return _HASHER.hash("federator-decoy-password")


def hash_password(password: str) -> str:
    """An argon2id hash of ``password``, with a random salt, in the PHC string format."""
    return _HASHER.hash(password)


def verify_password(password_hash: str | None, password: str) -> bool:
    """Whether ``password`` matches ``password_hash``; None (no such user) never matches
    but takes as long."""
    try:
        return _HASHER.verify(password_hash or _decoy(), password) and password_hash is not None
    except (VerificationError, InvalidHashError):
        return False
