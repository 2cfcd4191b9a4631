"""Identifiers and secrets, all drawn from a CSPRNG so that none can be guessed."""

from __future__ import annotations

import base64
import hmac
import secrets


def new_room_id() -> int:
    """An 8-digit room id, uniform over 10000000–99999999 (never sequential)."""
    return 10_000_000 + secrets.randbelow(90_000_000)


def new_token() -> str:
    """16 random bytes as unpadded base64url (22 characters)."""
    return base64.urlsafe_b64encode(secrets.token_bytes(16)).rstrip(b"=").decode("ascii")


def guest_name() -> str:
    """Default student name: ``Guest`` plus ten random decimal digits."""
    return "Guest" + "".join(secrets.choice("0123456789") for _ in range(10))


def same_secret(given: object, expected: str) -> bool:
    """Constant-time comparison that tolerates non-string input."""
    if not isinstance(given, str):
        return False
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))
