"""Concurrent string edits: carrying an ``insert``/``delete`` through later changes (§9.3).

A client edits a string topic against the version it has seen. By the time its change is
handled, other changes may have been applied; the change is then transformed through each
of them, in order, by the table of §9.3, so that it applies to the current text. Positions
and lengths count code points (Python ``str`` indexing).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Final, Literal

EditKind = Literal["set", "insert", "delete"]
SET: Final = "set"
INSERT: Final = "insert"
DELETE: Final = "delete"


@dataclass(frozen=True, slots=True)
class Edit:
    """An applied string change, as recorded in the topic's history.

    ``version`` is the topic's version after it; ``length`` the number of code points
    inserted or deleted. Only an insertion keeps its ``text``: an incoming delete whose range
    it falls into deletes it too, whereas an applied delete matters only by its position and
    length, so history holds no deleted text (``set`` holds nothing: nothing is carried
    through it).
    """

    version: int
    kind: EditKind
    position: int = 0
    length: int = 0
    text: str = ""


def transform_insert(position: int, edits: list[Edit]) -> int:
    """The position of an incoming ``insert`` after ``edits`` (none of them a ``set``).

    An insertion at the same position as an earlier applied one stays in front of it.
    """
    p = position
    for e in edits:
        q = e.position
        if e.kind == INSERT:
            if q < p:
                p += e.length
        elif q < p:  # delete
            p -= min(e.length, p - q)
    return p


def transform_delete(position: int, deletion: str, edits: list[Edit]) -> tuple[int, str]:
    """Position and deletion of an incoming ``delete`` after ``edits``.

    Text inserted strictly inside the range is deleted too (the deletion grows); text that
    another delete already removed is dropped from the deletion (it may become empty and
    still applies, so that its ``id`` is confirmed to its sender).
    """
    p, d = position, deletion
    for e in edits:
        q = e.position
        if e.kind == INSERT:
            if q <= p:
                p += e.length
            elif q < p + len(d):
                d = d[: q - p] + e.text + d[q - p :]
        else:  # delete of e.length code points at q
            end = q + e.length
            lo, hi = max(p, q), min(p + len(d), end)
            if lo < hi:
                d = d[: lo - p] + d[hi - p :]
            if q < p:
                p -= min(e.length, p - q)
    return p, d


def edits_since(history: Iterable[Edit], topic_version: int) -> list[Edit] | None:
    """The edits applied after ``topic_version``, or ``None`` if a ``set`` is among them.

    The caller has already checked that the history reaches back to ``topic_version``.
    """
    out = [e for e in history if e.version > topic_version]
    for e in out:
        if e.kind == SET:
            return None
    return out
