"""Plain JSON framing of the observer protocol on ``/observer`` (§3.1).

``decode`` and ``peek`` are total: every ``str`` maps to ``Incoming`` or a ``BadFrame`` with
``bad_json``/``bad_frame`` (never an exception), which ``tests/test_codec_props.py`` and the
``fuzz/`` harness check. JSON nested deeper than the decoder can follow is ``bad_json``
("JSON nested too deeply"); an integer ``ref`` beyond ±(2**53-1) is ``bad_frame`` because a JS
client could not read the echoed value back exactly.
"""

from __future__ import annotations

from typing import Any

import msgspec

from relay.core.errors import EventError
from relay.core.outgoing import Outgoing, encode_json

from .base import JSON_ERRORS, MAX_SAFE_INTEGER, BadFrame, Inbound, Incoming, Ref, json_error
from .wsframe import text_frame

assert MAX_SAFE_INTEGER == 9_007_199_254_740_991  # the literal in valid_ref

_decode = msgspec.json.decode
_OK = b'"data":{"ok":true}}'
_NOT_JSON = "the frame is not valid JSON"


def valid_event(value: object) -> str | None:
    if isinstance(value, str) and 0 < len(value) <= 64:
        return value
    return None


def valid_ref(value: object) -> tuple[bool, Ref | None]:
    """(ok, ref); ``null`` counts as absent (Appendix C).

    ``type(...) is int`` keeps ``true``/``false`` (Python bools) and floats out; integers
    beyond ±(2**53-1) are refused like a ref of the wrong type.
    """
    if value is None:
        return True, None
    if type(value) is int:
        # ±MAX_SAFE_INTEGER written out: constants cost nothing on this per-frame path.
        if -9_007_199_254_740_991 <= value <= 9_007_199_254_740_991:
            return True, value
        return False, None
    if isinstance(value, str) and 0 < len(value) <= 64:
        return True, value
    return False, None


class PlainCodec:
    __slots__ = ()

    endpoint = "observer"
    connected = True  # no handshake: events flow at once

    def open_packet(self, upgrades: bool = False) -> bytes | None:
        return None

    def ping_frame(self) -> bytes | None:
        return None

    def session_ids(self) -> tuple[str | None, str | None]:
        return None, None

    def costs_token(self, message: str) -> bool:
        return True

    def decode(self, message: str) -> list[Inbound]:
        try:
            frame: Any = _decode(message)
        except JSON_ERRORS as exc:
            return [BadFrame("bad_json", json_error(exc, _NOT_JSON))]
        if not isinstance(frame, dict):
            return [BadFrame("bad_frame", "a frame must be a JSON object")]
        event = valid_event(frame.get("event"))
        ok, ref = valid_ref(frame.get("ref"))
        if event is None:
            return [BadFrame("bad_frame", "'event' must be a non-empty string of at most 64 "
                             "characters", None, ref if ok else None)]
        if not ok:
            return [BadFrame("bad_frame", "'ref' must be an integer or a string of 1-64 "
                             "characters", event, None)]
        data = frame.get("data", {}) if "data" in frame else {}
        return [Incoming(event, data, ref)]

    def peek(self, message: str) -> tuple[str | None, Ref | None]:
        try:
            frame: Any = _decode(message)
        except JSON_ERRORS:
            return None, None
        if not isinstance(frame, dict):
            return None, None
        ok, ref = valid_ref(frame.get("ref"))
        return valid_event(frame.get("event")), ref if ok else None

    def binary(self) -> list[Inbound]:
        return [BadFrame("bad_frame", "binary messages are not supported")]

    def event_frame(self, out: Outgoing, seq: int | None) -> bytes:
        if seq is None:
            frame = out.cached("plain")
            if frame is None:
                frame = out.remember("plain", text_frame(
                    b'{"event":' + out.event_json + b',"data":' + out.payload + b"}"))
            return frame
        return text_frame(
            b'{"event":' + out.event_json + b',"data":' + out.payload
            + b',"seq":' + str(seq).encode() + b"}"
        )

    def ack_frame(self, ref: Ref, error: EventError | None) -> bytes:
        head = b'{"event":"ack","ref":' + encode_json(ref) + b","
        if error is None:
            return text_frame(head + _OK)
        body = encode_json({"ok": False, "error": {"code": error.code, "message": error.message}})
        return text_frame(head + b'"data":' + body + b"}")

    def error_frame(self, code: str, message: str, event: str | None, ref: Ref | None) -> bytes:
        frame: dict[str, Any] = {
            "event": "error", "data": {"code": code, "message": message, "event": event},
        }
        if ref is not None:
            frame["ref"] = ref
        return text_frame(encode_json(frame))

    def close_preamble(self, code: int) -> bytes:
        return b""
