"""Hand-made WebSocket client framing and observer packets (no protocol library in the loop).

Client frames are masked as RFC 6455 requires, with the constant key ``00 00 00 00``: the
payload then goes out unchanged, so building a frame is one header plus a concatenation.
Server frames are parsed by ``FrameParser`` (complete frames only, FIN reassembly, control
frames) or merely *counted* by ``count_spanning`` when a receiver only needs throughput.

Two framings of the observer protocol share one interface (``Framing``): Socket.IO v5 over
Engine.IO v4 (``42["event",data]``) and the plain JSON framing
(``{"event":..,"data":..,"ref":..}``).
"""

from __future__ import annotations

import base64
import os
import struct
from collections.abc import Callable

_ZERO_KEY = b"\x00\x00\x00\x00"
_pack_short = struct.Struct("!BBH").pack
_pack_long = struct.Struct("!BBQ").pack
_unpack_short = struct.Struct("!H").unpack_from
_unpack_long = struct.Struct("!Q").unpack_from

OP_CONT, OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


def client_frame(payload: bytes, opcode: int = OP_TEXT) -> bytes:
    """One final, masked (zero key) client frame."""
    n = len(payload)
    first = 0x80 | opcode
    if n < 126:
        return bytes((first, 0x80 | n)) + _ZERO_KEY + payload
    if n < 65536:
        return _pack_short(first, 0x80 | 126, n) + _ZERO_KEY + payload
    return _pack_long(first, 0x80 | 127, n) + _ZERO_KEY + payload


def close_frame(code: int = 1000) -> bytes:
    return client_frame(struct.pack("!H", code), OP_CLOSE)


def upgrade_request(host: str, port: int, path: str) -> bytes:
    key = base64.b64encode(os.urandom(16)).decode()
    return (
        f"GET {path} HTTP/1.1\r\nHost: {host}:{port}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
    ).encode()


class FrameParser:
    """Incremental parser of unmasked server frames.

    ``on_message(payload)`` gets each complete text/binary message, ``on_control(opcode,
    payload)`` each ping/pong/close frame.
    """

    __slots__ = ("_buf", "_frag", "on_control", "on_message")

    def __init__(self, on_message: Callable[[bytes], None],
                 on_control: Callable[[int, bytes], None]) -> None:
        self._buf = b""
        self._frag: list[bytes] = []
        self.on_message = on_message
        self.on_control = on_control

    def take_buffer(self) -> bytes:
        """Hand over unparsed bytes (when switching a connection to counting)."""
        buf, self._buf = self._buf, b""
        return buf

    def feed(self, data: bytes) -> None:
        buf = self._buf + data if self._buf else data
        pos = 0
        end = len(buf)
        while end - pos >= 2:
            b0 = buf[pos]
            n = buf[pos + 1] & 0x7F
            head = 2
            if n == 126:
                if end - pos < 4:
                    break
                n = _unpack_short(buf, pos + 2)[0]
                head = 4
            elif n == 127:
                if end - pos < 10:
                    break
                n = _unpack_long(buf, pos + 2)[0]
                head = 10
            stop = pos + head + n
            if stop > end:
                break
            payload = buf[pos + head:stop]
            pos = stop
            opcode = b0 & 0x0F
            if opcode >= 0x8:
                self.on_control(opcode, payload)
            elif b0 & 0x80:
                if self._frag:
                    self._frag.append(payload)
                    payload = b"".join(self._frag)
                    self._frag = []
                self.on_message(payload)
            else:
                self._frag.append(payload)
        self._buf = buf[pos:] if pos < end else b""


def count_spanning(tail: bytes, data: bytes, pattern: bytes) -> tuple[int, bytes]:
    """Occurrences of ``pattern`` in ``tail + data`` not already counted in ``tail``.

    ``tail`` is the previous chunk's last ``len(pattern) - 1`` bytes (too short to hold a match
    itself), so matches spanning the chunk boundary are found without copying ``data``.
    """
    k = len(pattern) - 1
    n = data.count(pattern)
    if tail:
        n += (tail + data[:k]).count(pattern)
    return n, (data[-k:] if len(data) >= k else (tail + data)[-k:])


class Framing:
    """How observer events are written and recognised on one endpoint."""

    name = ""
    path = ""

    def event(self, event: str, data: bytes, ack: int | None = None) -> bytes:
        raise NotImplementedError

    def event_name(self, message: bytes) -> bytes | None:
        """The event name of a server message (``b"ack"`` for acknowledgements)."""
        raise NotImplementedError

    def pattern(self, event: str) -> bytes:
        """Bytes that start every server message carrying ``event`` (for counting)."""
        raise NotImplementedError


class SocketIOFraming(Framing):
    """Socket.IO v5 / Engine.IO v4, WebSocket transport only."""

    name = "socketio"
    path = "/socket.io/?EIO=4&transport=websocket"
    PING = b"2"
    PONG = client_frame(b"3")
    CONNECT = client_frame(b"40")

    def event(self, event: str, data: bytes, ack: int | None = None) -> bytes:
        head = b'42["' if ack is None else b"42" + str(ack).encode() + b'["'
        return client_frame(head + event.encode() + b'",' + data + b"]")

    def event_name(self, message: bytes) -> bytes | None:
        if message.startswith(b'42["'):
            return message[4:message.index(b'"', 4)]
        if message.startswith(b"43"):
            return b"ack"
        return None

    @staticmethod
    def event_data(message: bytes) -> bytes:
        """The JSON of the first argument of a ``42["event",data]`` message."""
        start = message.index(b'",', 4) + 2
        return message[start:-1]

    def pattern(self, event: str) -> bytes:
        return b'42["' + event.encode() + b'"'


class PlainFraming(Framing):
    """The plain JSON framing on ``/observer`` (protocol §3.1)."""

    name = "plain"
    path = "/observer"

    def event(self, event: str, data: bytes, ack: int | None = None) -> bytes:
        tail = b"}" if ack is None else b',"ref":' + str(ack).encode() + b"}"
        return client_frame(b'{"event":"' + event.encode() + b'","data":' + data + tail)

    def event_name(self, message: bytes) -> bytes | None:
        i = message.find(b'"event":"')
        if i < 0:
            return None
        i += 9
        return message[i:message.index(b'"', i)]

    def pattern(self, event: str) -> bytes:
        return b'{"event":"' + event.encode() + b'"'


SOCKETIO = SocketIOFraming()
PLAIN = PlainFraming()
FRAMINGS: dict[str, Framing] = {"socketio": SOCKETIO, "plain": PLAIN}
