"""JSON values as the protocol sees them: kinds, equality, sizes, nesting.

Values are the plain Python objects ``msgspec.json.decode`` returns (``dict``, ``list``,
``str``, ``int``, ``float``, ``bool``, ``None``). Once stored in a topic they are treated as
immutable: a change builds a new container instead of mutating the old one, because frames
that still reference the old value (a subscriber's initial ``set``, a ``set``'s
``old_value``) are rendered later by the shell.
"""

from __future__ import annotations

from typing import Any, Final

import msgspec

MAX_SAFE_INTEGER: Final = 2**53 - 1

encode = msgspec.json.encode
"""Compact JSON, non-ASCII kept, UTF-8 bytes: the protocol's size measure (§0.1)."""

Hashable = Any  # what canonical() returns: nested tuples / frozensets of scalars


def is_integer(value: object) -> bool:
    """A JSON integer: written without fraction or exponent, never a boolean (§0)."""
    return type(value) is int


def is_safe_integer(value: object) -> bool:
    """An integer that JavaScript clients hold exactly: |v| ≤ 2^53 − 1."""
    return type(value) is int and -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER


def is_number(value: object) -> bool:
    t = type(value)
    return t is int or t is float


def json_size(value: object) -> int:
    """Size of ``value`` in compact JSON, UTF-8 bytes."""
    return len(encode(value))


def canonical(value: object) -> Hashable:
    """A hashable key such that two values are JSON-equal exactly when their keys are equal.

    Numbers compare by value (``1`` equals ``1.0``; Python hashes equal numbers equally),
    booleans are their own kind (``true`` is not ``1``), objects compare key by key whatever
    their order. Set topics use these keys to keep membership checks O(1) instead of
    comparing every pair.
    """
    t = type(value)
    if t is str:
        return ("s", value)
    if t is int or t is float:
        return ("n", value)
    if t is bool:
        return ("b", value)
    if value is None:
        return ("z",)
    if t is list:
        return ("a", tuple(canonical(v) for v in value))  # type: ignore[attr-defined]
    if t is dict:
        return ("o", frozenset((k, canonical(v)) for k, v in value.items()))  # type: ignore[attr-defined]
    raise TypeError(f"not a JSON value: {t.__name__}")


def json_equal(a: object, b: object) -> bool:
    """JSON equality of §9.3 (same kind; numbers by value; arrays, objects item by item)."""
    return bool(canonical(a) == canonical(b))


def nesting_exceeds(value: object, limit: int) -> bool:
    """Whether arrays/objects in ``value`` nest deeper than ``limit`` levels.

    Iterative, because the point is to refuse values that would exhaust the recursion
    limit when encoded later from a deeper stack (msgspec recurses in C, counted against
    Python's limit): a value that decodes in the reader might not encode in the writer.
    """
    t = type(value)
    if t is not list and t is not dict:
        return False
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if depth > limit:
            return True
        children = item.values() if type(item) is dict else item
        for child in children:
            ct = type(child)
            if ct is list or ct is dict:
                stack.append((child, depth + 1))
    return False


def frame_too_deep(text: str | bytes, value: object, limit: int) -> bool:
    """Whether a decoded frame nests deeper than ``limit``, cheaply for typical frames.

    A frame with at most ``limit`` opening brackets in its text cannot nest deeper, so only
    frames with many containers pay for the walk.
    """
    if isinstance(text, str):
        brackets = text.count("[") + text.count("{")
    else:
        brackets = text.count(b"[") + text.count(b"{")
    return brackets > limit and nesting_exceeds(value, limit)
