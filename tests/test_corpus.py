"""Replays every input under ``tests/corpus/<target>/`` through its fuzz harness's ``check``.

The corpus holds the seeds (``python -m fuzz.seeds``) and every input a fuzz run crashed on
(``python -m fuzz.run`` files them by the SHA-1 of their bytes), so an input that broke an
edge parser once is a regression test from then on. ``check`` is the harness's own
invariant function: the replay asserts exactly what the fuzzer asserted.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest

from fuzz import TARGETS, http_head, observer_codecs, ws_frames

CORPUS = Path(__file__).resolve().parent / "corpus"
CHECKS: dict[str, Callable[[bytes], None]] = {
    "ws_frames": ws_frames.check,
    "observer_codecs": observer_codecs.check,
    "http_head": http_head.check,
}


def corpus_files() -> list[tuple[str, Path]]:
    return [(target, path) for target in TARGETS
            for path in sorted((CORPUS / target).glob("*")) if path.is_file()]


def test_every_target_has_a_check_and_seeds() -> None:
    assert set(CHECKS) == set(TARGETS)
    for target in TARGETS:
        assert any((CORPUS / target).iterdir()), f"no seeds for {target}"


@pytest.mark.parametrize(("target", "path"), corpus_files(),
                         ids=lambda v: v.name[:12] if isinstance(v, Path) else v)
def test_replay(target: str, path: Path) -> None:
    data = path.read_bytes()
    # Files are named by the SHA-1 of their bytes: a renamed or edited input is noticed.
    assert path.name == hashlib.sha1(data).hexdigest()
    CHECKS[target](data)
