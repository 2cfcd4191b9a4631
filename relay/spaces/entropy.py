"""Where every random value of a space comes from.

A space must be replayable: the shell logs each command with the time and an entropy seed
and, after a crash, replays the log on another node, which has to rebuild exactly the same
ids and frames. So the core never calls ``secrets``, ``random`` or ``uuid.uuid4`` itself;
every random value is drawn from the :class:`Entropy` the caller passes in.
"""

from __future__ import annotations

import hashlib
import secrets
from typing import Protocol


class Entropy(Protocol):
    """A source of random values (the shell picks a real or a replayable one)."""

    def token_bytes(self, n: int) -> bytes:
        """``n`` random bytes."""
        ...

    def below(self, bound: int) -> int:
        """A uniform integer in ``[0, bound)``."""
        ...


class SystemEntropy:
    """The operating system's CSPRNG (``secrets``): for live spaces and tests."""

    __slots__ = ()

    def token_bytes(self, n: int) -> bytes:
        return secrets.token_bytes(n)

    def below(self, bound: int) -> int:
        return secrets.randbelow(bound)


class SeededEntropy:
    """A deterministic stream (SHA-256 in counter mode) for replay and tests.

    Two instances with the same seed produce the same values in the same order, on any
    machine and Python version, which ``random.Random`` does not promise for every method.
    """

    __slots__ = ("_buffer", "_counter", "_seed")

    def __init__(self, seed: bytes | str | int) -> None:
        if isinstance(seed, int):
            seed = str(seed)
        if isinstance(seed, str):
            seed = seed.encode()
        self._seed = seed
        self._counter = 0
        self._buffer = b""

    def token_bytes(self, n: int) -> bytes:
        while len(self._buffer) < n:
            block = hashlib.sha256(self._seed + self._counter.to_bytes(8, "big")).digest()
            self._counter += 1
            self._buffer += block
        out, self._buffer = self._buffer[:n], self._buffer[n:]
        return out

    def below(self, bound: int) -> int:
        if bound <= 0:
            raise ValueError("bound must be positive")
        # Rejection sampling over enough bits keeps the result exactly uniform.
        nbytes = (bound.bit_length() + 7) // 8 + 1
        limit = (256**nbytes // bound) * bound
        while True:
            value = int.from_bytes(self.token_bytes(nbytes), "big")
            if value < limit:
                return value % bound


def uuid4(entropy: Entropy) -> str:
    """A version-4 UUID (lowercase, hyphenated) built from 16 bytes of ``entropy``."""
    raw = bytearray(entropy.token_bytes(16))
    raw[6] = (raw[6] & 0x0F) | 0x40
    raw[8] = (raw[8] & 0x3F) | 0x80
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
