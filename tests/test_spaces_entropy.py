"""Entropy: the only source of randomness of a space, replayable when seeded."""

from __future__ import annotations

import re
import uuid
from collections import Counter

from relay.spaces.entropy import Entropy, SeededEntropy, SystemEntropy, uuid4

UUID4 = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")


def test_uuid4_from_entropy() -> None:
    for source in (SystemEntropy(), SeededEntropy(1)):
        for _ in range(200):
            text = uuid4(source)
            assert UUID4.fullmatch(text)
            assert uuid.UUID(text).version == 4


def test_seeded_entropy_is_deterministic() -> None:
    a, b = SeededEntropy("seed"), SeededEntropy("seed")
    assert [a.token_bytes(n) for n in (1, 5, 40, 3)] == [b.token_bytes(n) for n in (1, 5, 40, 3)]
    assert [a.below(7) for _ in range(50)] == [b.below(7) for _ in range(50)]
    assert SeededEntropy(1).token_bytes(32) != SeededEntropy(2).token_bytes(32)
    assert SeededEntropy(5).token_bytes(8) == SeededEntropy("5").token_bytes(8)


def test_below_is_in_range_and_roughly_uniform() -> None:
    source: Entropy = SeededEntropy(3)
    counts = Counter(source.below(6) for _ in range(6000))
    assert set(counts) == set(range(6))
    assert all(800 < c < 1200 for c in counts.values())
    assert {SystemEntropy().below(3) for _ in range(200)} == {0, 1, 2}
    assert SeededEntropy(0).below(1) == 0
    big = 10**30
    assert 0 <= SeededEntropy(0).below(big) < big
