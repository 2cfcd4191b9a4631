"""Server-side WebSocket frame building (RFC 6455 §5.2).

Server frames are never masked, so one event's frame is the same bytes for every
connection: building it here once, instead of through a per-connection protocol object,
is what lets a broadcast cost one encode plus a memcpy per recipient.
"""

from __future__ import annotations

import base64
import hashlib
import struct

_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
_pack_short = struct.Struct("!BBH").pack
_pack_long = struct.Struct("!BBQ").pack


def _frame(opcode: int, payload: bytes) -> bytes:
    n = len(payload)
    first = 0x80 | opcode
    if n < 126:
        return bytes((first, n)) + payload
    if n < 65536:
        return _pack_short(first, 126, n) + payload
    return _pack_long(first, 127, n) + payload


def text_frame(payload: bytes) -> bytes:
    return _frame(0x1, payload)


def binary_frame(payload: bytes) -> bytes:
    """No endpoint sends binary messages; the conformance echo server does."""
    return _frame(0x2, payload)


def close_frame(code: int, reason: str) -> bytes:
    return _frame(0x8, struct.pack("!H", code) + reason.encode("utf-8")[:120])


def ping_frame(payload: bytes = b"") -> bytes:
    return _frame(0x9, payload)


def pong_frame(payload: bytes = b"") -> bytes:
    return _frame(0xA, payload)


def accept_key(key: str) -> str:
    digest = hashlib.sha1(key.encode("ascii") + _GUID).digest()
    return base64.b64encode(digest).decode("ascii")


def ws_payloads(frames: bytes) -> list[bytes]:
    """The payloads of server frames built here (unmasked, complete, back to back).

    A long-polling session queues the same encoded frames a WebSocket session gets (one
    encode per event for every recipient); its ``GET`` answers with their payloads.
    """
    out = []
    pos, end = 0, len(frames)
    while pos < end:
        n = frames[pos + 1] & 0x7F
        head = pos + 2
        if n == 126:
            n = int.from_bytes(frames[head:head + 2], "big")
            head += 2
        elif n == 127:
            n = int.from_bytes(frames[head:head + 8], "big")
            head += 8
        out.append(frames[head:head + n])
        pos = head + n
    return out
