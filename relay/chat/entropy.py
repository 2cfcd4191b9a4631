"""Where the directory's random ids come from.

The directory never reads ``secrets`` or ``random`` itself: every draw goes through the
``Entropy`` it is handed with each command. In production the shell passes
``SystemEntropy`` (the OS CSPRNG) or, when it replicates the directory by logging commands,
a ``SeededEntropy`` built from a CSPRNG-drawn seed that it logs with the command; replaying
the command with the same seed on another node draws exactly the same ids.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from typing import Protocol

#: A user id is base64url of this many bytes: 15 bytes are exactly 20 characters, no padding.
USER_ID_BYTES = 15
#: Group ids are drawn uniformly from [0, 10**10) and written with 10 digits (leading zeros kept).
GROUP_ID_SPACE = 10**10


class Entropy(Protocol):
    """The only source of randomness the directory uses."""

    def token_bytes(self, n: int) -> bytes:
        """``n`` uniformly random bytes."""
        ...

    def below(self, bound: int) -> int:
        """A uniformly random integer in ``[0, bound)``; ``bound`` is positive."""
        ...


class SystemEntropy:
    """The OS CSPRNG (``secrets``): what a single node without a command log uses."""

    __slots__ = ()

    def token_bytes(self, n: int) -> bytes:
        return secrets.token_bytes(n)

    def below(self, bound: int) -> int:
        return secrets.randbelow(bound)


class SeededEntropy:
    """A deterministic stream: HMAC-SHA256 of a secret seed in counter mode.

    Unpredictable to anyone who does not know the seed (so ids stay unguessable when the seed
    is drawn from a CSPRNG), and identical on every replay of the same seed.
    """

    __slots__ = ("_buffer", "_counter", "_seed")

    def __init__(self, seed: bytes) -> None:
        self._seed = seed
        self._counter = 0
        self._buffer = b""

    def token_bytes(self, n: int) -> bytes:
        while len(self._buffer) < n:
            self._counter += 1
            block = hmac.new(self._seed, self._counter.to_bytes(8, "big"), hashlib.sha256)
            self._buffer += block.digest()
        out, self._buffer = self._buffer[:n], self._buffer[n:]
        return out

    def below(self, bound: int) -> int:
        if bound <= 0:
            raise ValueError("bound must be positive")
        # Rejection sampling over the smallest power of two >= bound keeps the draw uniform
        # and needs fewer than two tries on average.
        bits = (bound - 1).bit_length()
        size = (bits + 7) // 8
        mask = (1 << bits) - 1
        while True:
            value = int.from_bytes(self.token_bytes(size), "big") & mask
            if value < bound:
                return value


def user_id_from(entropy: Entropy) -> str:
    """One candidate user id: 20 characters from ``[A-Za-z0-9_-]``."""
    raw = entropy.token_bytes(USER_ID_BYTES)
    if len(raw) != USER_ID_BYTES:
        raise ValueError("Entropy.token_bytes returned the wrong number of bytes")
    return base64.urlsafe_b64encode(raw).decode("ascii")


def group_id_from(entropy: Entropy) -> str:
    """One candidate group id: 10 decimal digits, uniform, a leading zero possible."""
    value = entropy.below(GROUP_ID_SPACE)
    if not 0 <= value < GROUP_ID_SPACE:
        raise ValueError("Entropy.below returned a value out of range")
    return f"{value:010d}"
