"""Reading client frames: JSON, envelope, type (the "frame" stage of §9.2's check order).

Every failure here is a frame error (``bad_json``, ``bad_frame``, ``unknown_event``); the
connection stays open. Content rules belong to the handlers.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Final

import msgspec

from .values import MAX_SAFE_INTEGER, frame_too_deep

CLIENT_TYPES: Final = frozenset({
    "subscribe", "unsubscribe", "update", "register_service", "unregister_service",
    "request", "response",
})
MAX_TYPE_CHARS: Final = 64
_ECHO_KEYS: Final = ("topic_name", "service_name", "request_id")


@dataclass(frozen=True, slots=True)
class Frame:
    """A well-formed client frame of a known type."""

    type: str
    body: dict[str, Any]


@dataclass(frozen=True, slots=True)
class FrameError:
    code: str
    message: str
    message_type: str | None
    echoes: dict[str, Any] | None = None


def _decode(text: str | bytes, max_nesting: int) -> Any:
    """Decode JSON or raise ``ValueError``.

    msgspec raises ``DecodeError`` for malformed text and lone surrogates,
    ``ValidationError`` for numbers it cannot represent (``1e400``, integers of thousands
    of digits) and ``RecursionError`` for deep nesting; all three are "not JSON we accept".
    Frames nesting deeper than ``max_nesting`` are refused the same way, whatever the
    stack depth of the caller, so that the outcome does not depend on where it is decoded.
    """
    try:
        value = msgspec.json.decode(text)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError) as exc:
        raise ValueError(str(exc)) from None
    if frame_too_deep(text, value, max_nesting):
        raise ValueError(f"JSON nested deeper than {max_nesting} levels")
    return value


def echoes(body: dict[str, Any]) -> dict[str, Any] | None:
    """The content values an ``error`` echoes: strings, and integer ``request_id``s.

    Integers are echoed only within ±(2^53 − 1), the range JavaScript clients hold exactly
    (anything else is answered ``invalid_payload`` anyway).
    """
    out: dict[str, Any] | None = None
    for key in _ECHO_KEYS:
        value = body.get(key)
        if isinstance(value, str) or (
            key == "request_id" and type(value) is int
            and -MAX_SAFE_INTEGER <= value <= MAX_SAFE_INTEGER
        ):
            if out is None:
                out = {}
            out[key] = value
    return out


def parse(text: str | bytes, max_nesting: int) -> Frame | FrameError:
    """One text message → a :class:`Frame` or the :class:`FrameError` to answer."""
    try:
        obj = _decode(text, max_nesting)
    except ValueError as exc:
        return FrameError("bad_json", f"not JSON: {exc}", None)
    if type(obj) is not dict:
        return FrameError("bad_frame", "a frame is a JSON object", None)
    ftype = obj.get("type")
    message_type = ftype if isinstance(ftype, str) else None
    if not isinstance(ftype, str) or not ftype or len(ftype) > MAX_TYPE_CHARS:
        return FrameError("bad_frame", "type must be a string of 1-64 characters",
                          message_type)
    body = obj.get("args")
    if body is None:
        body = obj.get("content")
    if body is None:
        body = {}
    elif type(body) is not dict:
        return FrameError("bad_frame", "args/content must be an object", message_type)
    if ftype not in CLIENT_TYPES:
        return FrameError("unknown_event", f"unknown type {ftype[:64]!r}", message_type,
                          echoes(body))
    return Frame(ftype, body)


def message_type_of(text: str | bytes) -> str | None:
    """The ``type`` of a message that is dropped unprocessed (rate limit), if readable."""
    try:
        obj = msgspec.json.decode(text)
    except (msgspec.DecodeError, msgspec.ValidationError, RecursionError):
        return None
    if type(obj) is dict:
        ftype = obj.get("type")
        if isinstance(ftype, str):
            return ftype
    return None
