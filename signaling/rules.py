"""WebRTC relay rules for observer rooms (protocol §6.8), without any I/O.

The server relays signaling only between the host and one student; it keeps no WebRTC state.
Everything the rules need about the room comes in as arguments (ids and two predicates), so
the same function serves the in-memory and the Redis-backed room store and is trivially
testable. Checks follow the global order of §0.1: role → payload → state.

The size helpers (:func:`utf8_size`, :func:`compact_json_size`) are shared with the ``/ws``
dialect, which has the same limits (§7).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Final

__all__ = [
    "MAX_CANDIDATE_BYTES",
    "MAX_SDP_BYTES",
    "RTC_EVENTS",
    "RtcError",
    "candidate_ok",
    "compact_json_size",
    "is_integer",
    "route_rtc",
    "utf8_size",
    "validate_config_request",
]

MAX_SDP_BYTES: Final = 64 * 1024
"""Largest ``sdp`` in UTF-8 bytes (§6.8, §7)."""

MAX_CANDIDATE_BYTES: Final = 4 * 1024
"""Largest compact JSON encoding of a ``candidate`` in UTF-8 bytes (§6.8, §7)."""

RTC_EVENTS: Final[tuple[str, ...]] = (
    "rtc/request",
    "rtc/allow",
    "rtc/offer",
    "rtc/answer",
    "rtc/ice",
    "rtc/stop",
)
"""The six relayed client events. ``rtc/config`` is not relayed and is not listed here."""

# Keys of the base payload forwarded for each event, in forwarding order.
_BASE_KEYS: Final[dict[str, tuple[str, ...]]] = {
    "rtc/request": (),
    "rtc/allow": (),
    "rtc/offer": ("sdp",),
    "rtc/answer": ("sdp",),
    "rtc/ice": ("candidate",),
    "rtc/stop": (),
}


class RtcError(Exception):
    """A rejected relay event; ``code`` is the §3.4 error code sent back to the sender only."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


def is_integer(value: object) -> bool:
    """True for a JSON integer; ``bool`` is an ``int`` subclass in Python but never counts (§0)."""
    return isinstance(value, int) and not isinstance(value, bool)


def utf8_size(text: str) -> int | None:
    """UTF-8 length of ``text``, or ``None`` if it holds a lone surrogate.

    JSON ``\\ud800`` escapes decode to strings that have no UTF-8 encoding; such a value could
    not be forwarded on a text frame, so callers treat ``None`` as an invalid value.
    """
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError:
        return None


def compact_json_size(value: object) -> int | None:
    """Size in UTF-8 bytes of the compact JSON encoding of ``value`` (§0.1), or ``None``.

    ``None`` means the value cannot be encoded as JSON text (non-finite floats, lone
    surrogates, non-JSON types, absurd nesting) and therefore cannot be relayed either.
    """
    try:
        encoded = json.dumps(value, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError, RecursionError):
        return None
    return utf8_size(encoded)


def candidate_ok(candidate: object) -> bool | None:
    """Check an ICE ``candidate``: ``True`` if valid, ``False`` if the wrong type or not
    encodable, ``None`` if well-typed but its compact JSON is over 4 KiB.

    The tri-state lets the observer rules tell ``invalid_payload`` from ``too_large`` while the
    ``/ws`` dialect maps both to one message.
    """
    if not isinstance(candidate, dict | str):
        return False
    size = compact_json_size(candidate)
    if size is None:
        return False
    return True if size <= MAX_CANDIDATE_BYTES else None


def _check_room_id_type(data: dict[str, Any]) -> None:
    if "room_id" in data and not is_integer(data["room_id"]):
        raise RtcError("invalid_payload", "room_id must be an integer")


def _check_room_id_value(data: dict[str, Any], room_id: int | None) -> None:
    if room_id is not None and "room_id" in data and data["room_id"] != room_id:
        raise RtcError("forbidden", "room_id does not match your room")


def validate_config_request(data: object, *, room_id: int | None = None) -> None:
    """Validate an ``rtc/config`` request (any participant; the payload carries nothing).

    Only the generic rules apply: an object payload and, if present, an integer ``room_id``
    equal to the sender's room (checked only when ``room_id`` is given).
    """
    if not isinstance(data, dict):
        raise RtcError("invalid_payload", "payload must be an object")
    _check_room_id_type(data)
    _check_room_id_value(data, room_id)


def route_rtc(
    event: str,
    data: object,
    *,
    sender_id: int,
    host_id: int,
    is_student: Callable[[int], bool],
    is_online: Callable[[int], bool],
    room_id: int | None = None,
) -> tuple[int, dict[str, Any]]:
    """Decide where a relay event goes: return ``(target user id, payload to forward)``.

    Raises :class:`RtcError` on the first failed check in the order role → payload → state.
    ``is_student`` must be false for the host and for removed or unknown ids; ``is_online``
    says whether a participant has a bound connection. When ``room_id`` (the sender's room) is
    given, a payload ``room_id`` that differs from it is ``forbidden``; otherwise the caller
    does that comparison. The forwarded payload has exactly the base keys of the event, plus
    ``user_id`` = sender when it goes to the host, so nothing else the sender put in reaches
    the peer.
    """
    base_keys = _BASE_KEYS.get(event)
    if base_keys is None:
        raise ValueError(f"not a relayed WebRTC event: {event!r}")
    from_host = sender_id == host_id

    # Role.
    if event == "rtc/request" and from_host:
        raise RtcError("not_student", "only students can request a WebRTC session")
    if event == "rtc/allow" and not from_host:
        raise RtcError("not_host", "only the host can allow a WebRTC session")

    # Payload.
    if not isinstance(data, dict):
        raise RtcError("invalid_payload", "payload must be an object")
    _check_room_id_type(data)
    has_target = "user_id" in data
    target = data.get("user_id")
    if has_target and not is_integer(target):
        raise RtcError("invalid_payload", "user_id must be an integer")
    if from_host and not has_target:
        raise RtcError("invalid_payload", "user_id is required")
    if "sdp" in base_keys:
        sdp = data.get("sdp")
        if not isinstance(sdp, str) or not sdp:
            raise RtcError("invalid_payload", "sdp must be a non-empty string")
        size = utf8_size(sdp)
        if size is None:
            raise RtcError("invalid_payload", "sdp is not valid Unicode")
        if size > MAX_SDP_BYTES:
            raise RtcError("too_large", "sdp is larger than 64 KiB")
    if "candidate" in base_keys:
        if "candidate" not in data:
            raise RtcError("invalid_payload", "candidate is required")
        verdict = candidate_ok(data["candidate"])
        if verdict is False:
            raise RtcError("invalid_payload", "candidate must be an object or a string")
        if verdict is None:
            raise RtcError("too_large", "candidate is larger than 4 KiB")

    # State.
    _check_room_id_value(data, room_id)
    payload: dict[str, Any] = {key: data[key] for key in base_keys}
    if from_host:
        assert isinstance(target, int)
        if not is_student(target):
            raise RtcError("user_not_found", "user_id does not name a student of this room")
        destination = target
    else:
        if has_target and target != host_id:
            raise RtcError("forbidden", "students may only signal the host")
        destination = host_id
        payload["user_id"] = sender_id
    if not is_online(destination):
        raise RtcError("peer_offline", "the peer is offline")
    return destination, payload
