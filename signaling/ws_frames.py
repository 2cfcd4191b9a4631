"""The ``/ws`` dialect's frames (protocol §7): parsing, texts, names and room ids.

Pure functions and constants, no state: :mod:`signaling.ws_rooms` holds the rooms and
applies the rules; the transport uses :func:`peek_type`, :func:`type_label` and
:func:`rate_limited_frame` for messages the rate limiter drops.
"""

from __future__ import annotations

import json
import re
import secrets
import string
from typing import Any, Final

from signaling.rules import utf8_size

Frame = dict[str, Any]
Outgoing = tuple[int, Frame]

ROOM_ID_ALPHABET: Final = string.ascii_lowercase + string.digits
#: As in the seed, whose UI has four PIN boxes (§7, version 2).
ROOM_ID_LENGTH: Final = 4
ROOM_ID_RE: Final = re.compile(rf"[a-z0-9]{{{ROOM_ID_LENGTH}}}")
MAX_USERNAME_CHARS: Final = 30

MESSAGE_TYPES: Final[frozenset[str]] = frozenset(
    {
        "CREATE_ROOM",
        "JOIN_ROOM",
        "LEAVE_ROOM",
        "REQUEST_SHARING",
        "ALLOW_SHARING",
        "STOP_SHARING",
        "RCP_OFFER",
        "RCP_ANSWER",
        "ICE_CANDIDATE",
    }
)
"""Client message types of §7; anything else is ``Unknown message type``."""

ROOMLESS_TYPES: Final = frozenset({"CREATE_ROOM", "JOIN_ROOM"})

# Exact error texts of §7.
INVALID_JSON: Final = "Invalid JSON"
NOT_OBJECT: Final = "Message must be a JSON object"
TYPE_REQUIRED: Final = "Message type is required"
BINARY: Final = "Binary frames are not supported"
JOIN_FIRST: Final = "You must join a room first"
USERNAME_MISSING: Final = "Username missing"
USERNAME_INVALID: Final = "Invalid username"
USERNAME_TAKEN: Final = "Username already exists in this room"
ROOM_ID_REQUIRED: Final = "Room ID is required"
ROOM_NOT_FOUND: Final = "Room with given ID not found"
TOO_MANY_FAILURES: Final = "Too many failed attempts; wait a minute"
USER_NOT_FOUND: Final = "User not found"
ONLY_HOST_ALLOWS: Final = "Only the host can allow sharing"
ONLY_HOST_ANSWERS: Final = "Only the host can send an answer"
HOST_CANNOT_REQUEST: Final = "The host cannot request sharing"
HOST_CANNOT_OFFER: Final = "The host cannot send an offer"
HOST_LEFT: Final = "The host has left the room"
INVALID_SDP: Final = "Invalid SDP"
INVALID_CANDIDATE: Final = "Invalid ICE candidate"
RATE_LIMITED: Final = "Rate limit exceeded"


def error(message: str) -> Frame:
    return {"type": "ERROR", "message": message}


def invalid_room(message: str) -> Frame:
    return {"type": "INVALID_ROOM_ID", "message": message}


def rate_limited_frame() -> Frame:
    """The frame a rate-limited ``/ws`` connection receives (at most once per second, §2.2)."""
    return error(RATE_LIMITED)


def _reject_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def _parse_float(text: str) -> float:
    # ``1e400`` would become ``inf`` and could never be re-encoded as JSON; RFC 8259 lets an
    # implementation limit the range of numbers, so such text is treated as invalid.
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError("number out of range")
    return value


def loads(text: str) -> Any:
    """Strict JSON: no ``NaN``/``Infinity``, duplicate keys resolved last-wins (§0)."""
    return json.loads(text, parse_constant=_reject_constant, parse_float=_parse_float)


def peek_type(text: str | bytes | None) -> str | None:
    """The ``type`` of a message if it is a readable JSON object with a string ``type``.

    Used for messages dropped by the rate limiter (read only for their name, §2.2). The value
    is client-controlled: label metrics with :func:`type_label` instead.
    """
    if not isinstance(text, str):
        return None
    try:
        message = loads(text)
    except (ValueError, RecursionError):
        return None
    if isinstance(message, dict):
        kind = message.get("type")
        if isinstance(kind, str):
            return kind
    return None


def type_label(text: str | bytes | None) -> str:
    """A bounded-cardinality metrics label: a known type, ``"unknown"`` or ``"invalid"``."""
    kind = peek_type(text)
    if kind is None:
        return "invalid"
    return kind if kind in MESSAGE_TYPES else "unknown"


def new_room_id() -> str:
    """Four CSPRNG characters from ``[a-z0-9]`` (the seed's PIN; 36⁴ ≈ 1.7·10⁶ ids).

    So few ids are guessable by enumeration: failed joins are limited per IP (§7, §4.3).
    """
    return "".join(secrets.choice(ROOM_ID_ALPHABET) for _ in range(ROOM_ID_LENGTH))


def normalise_room_id(raw: object) -> str | None:
    """A client's room id trimmed and lowercased, or None when missing, not a string or
    empty after trimming (``Room ID is required``)."""
    if not isinstance(raw, str) or not raw.strip():
        return None
    return raw.strip().lower()


def printable_for_echo(text: str) -> str:
    # Lone surrogates cannot be sent in a UTF-8 text frame; escape them in echoed text.
    if utf8_size(text) is None:
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
    return text


def check_username(message: Frame) -> str | Frame:
    """Return the trimmed valid name or the ``INVALID_USERNAME`` frame to send."""
    raw = message.get("username")
    if raw is None:
        return {"type": "INVALID_USERNAME", "message": USERNAME_MISSING}
    if not isinstance(raw, str):
        return {"type": "INVALID_USERNAME", "message": USERNAME_INVALID}
    name = raw.strip()
    if not 1 <= len(name) <= MAX_USERNAME_CHARS or not name.isprintable():
        return {"type": "INVALID_USERNAME", "message": USERNAME_INVALID}
    return name
