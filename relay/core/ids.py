"""Identifiers and secrets, all drawn from a CSPRNG so that none can be guessed.

The core draws them through an ``Entropy`` object: ``SecureEntropy`` reads the OS CSPRNG;
``SeededEntropy`` expands one CSPRNG-drawn seed with HMAC-SHA256, so that a command
replayed from a durable log (scale-out) reproduces exactly the same ids and tokens.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from typing import Protocol


def new_room_id() -> int:
    """An 8-digit room id, uniform over 10000000–99999999 (never sequential)."""
    return 10_000_000 + secrets.randbelow(90_000_000)


def new_token() -> str:
    """16 random bytes as unpadded base64url (22 characters)."""
    return base64.urlsafe_b64encode(secrets.token_bytes(16)).rstrip(b"=").decode("ascii")


def guest_name() -> str:
    """Default student name: ``Guest`` plus ten random decimal digits."""
    return "Guest" + "".join(secrets.choice("0123456789") for _ in range(10))


class Entropy(Protocol):
    def room_id(self) -> int: ...

    def token(self) -> str: ...

    def guest_name(self) -> str: ...


class SecureEntropy:
    def room_id(self) -> int:
        return new_room_id()

    def token(self) -> str:
        return new_token()

    def guest_name(self) -> str:
        return guest_name()


class SeededEntropy:
    """A deterministic stream keyed by a secret seed (HMAC-SHA256 in counter mode)."""

    def __init__(self, seed: bytes) -> None:
        self._seed = seed
        self._counter = 0

    def _bytes(self, n: int) -> bytes:
        out = b""
        while len(out) < n:
            self._counter += 1
            out += hmac.new(self._seed, self._counter.to_bytes(8, "big"), hashlib.sha256).digest()
        return out[:n]

    def _below(self, bound: int) -> int:
        # Rejection sampling keeps the draw uniform.
        limit = (1 << 64) - (1 << 64) % bound
        while True:
            value = int.from_bytes(self._bytes(8), "big")
            if value < limit:
                return value % bound

    def room_id(self) -> int:
        return 10_000_000 + self._below(90_000_000)

    def token(self) -> str:
        return base64.urlsafe_b64encode(self._bytes(16)).rstrip(b"=").decode("ascii")

    def guest_name(self) -> str:
        return "Guest" + "".join(str(self._below(10)) for _ in range(10))


def same_secret(given: object, expected: str) -> bool:
    """Constant-time comparison that tolerates non-string input."""
    if not isinstance(given, str):
        return False
    return hmac.compare_digest(given.encode("utf-8"), expected.encode("utf-8"))
