"""Reading client frames (RFC 6455 §5): a sans-IO parser for a server without extensions.

It replaces ``wsproto``'s reading side on the relay's hot path. A profile of bench W4 put a
quarter of the server's CPU in wsproto's generator-based frame parser (a ``Frame`` and an
event object per frame, a buffer with commit/rollback, a masker object), for frames that
are mostly under 200 bytes. Here one call parses everything a ``recv`` brought and returns
plain ``(opcode, payload)`` tuples.

It enforces what a server must check of its peer, with wsproto's close codes: client
frames are masked, reserved bits and opcodes are unused, control frames are short and
unfragmented, continuations continue something, lengths use their shortest encoding, text
is UTF-8 (1007), close frames carry a valid code and a UTF-8 reason. The message size limit
is checked against each frame's *declared* length, so an oversized message is refused
(1009) before its payload is buffered.

A message of more than ``max_frames`` frames (protocol §2.1: 1,000) is refused with 1009
too. The size limit alone does not bound reassembly: empty continuation frames add nothing
to the size but one list entry each, so a client could grow a message's parts for ever.

Text is validated once per message, after reassembly, not per fragment as wsproto does: a
fragmented message with invalid UTF-8 fails (1007) when its last frame arrives, and
control frames between its fragments are still answered. RFC 6455 §8.1 allows both.
"""

from __future__ import annotations

from typing import Any

CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA
#: The "event" that ends a batch when the peer broke the protocol: payload (code, reason).
FAIL = -1
#: Most frames (the first plus its continuations) one message may have (protocol §2.1).
MAX_FRAMES = 1000

_DATA_OPCODES = frozenset({CONTINUATION, TEXT, BINARY})
_CONTROL_OPCODES = frozenset({CLOSE, PING, PONG})
#: Close codes a peer may send (§7.4): the defined ones that are not local-only, and the
#: ranges for libraries (3000-3999) and applications (4000-4999).
_PEER_CLOSE_CODES = frozenset({1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012,
                               1013})
_XOR = [bytes(a ^ b for a in range(256)) for b in range(256)]
_SMALL = 512  # below this, unmasking through one big int is faster than four translates


class FrameError(Exception):
    """The peer broke RFC 6455; ``code`` is the close code to answer with."""

    def __init__(self, code: int, reason: str) -> None:
        super().__init__(reason)
        self.code = code
        self.reason = reason


def unmask(payload: bytes | bytearray | memoryview, key: bytes | bytearray) -> bytes:
    """``payload`` XOR the repeated 4-byte masking ``key`` (§5.3)."""
    n = len(payload)
    if n <= _SMALL:
        stream = (bytes(key) * ((n >> 2) + 1))[:n]
        return (int.from_bytes(payload, "little") ^ int.from_bytes(stream, "little")).to_bytes(
            n, "little")
    data = bytearray(payload)
    for i in range(4):
        data[i::4] = data[i::4].translate(_XOR[key[i]])
    return bytes(data)


class FrameReader:
    """Turns client bytes into complete messages and control frames.

    ``feed`` returns ``(opcode, payload)`` pairs in order: ``TEXT`` with a ``str``,
    ``BINARY``/``PING``/``PONG`` with ``bytes``, ``CLOSE`` with ``(code, reason)`` (1005
    when the frame had no code). A protocol violation ends the batch with
    ``(FAIL, (code, reason))``; after a close or a failure nothing more is parsed.
    """

    __slots__ = ("_buf", "_done", "_opcode", "_parts", "_size", "max_frames", "max_size")

    def __init__(self, max_size: int, pending: bytes = b"", max_frames: int = MAX_FRAMES
                 ) -> None:
        self.max_size = max_size
        self.max_frames = max_frames
        # Bytes not yet parsed (at most one partial frame); at first, what came in with
        # the handshake (``feed(b"")`` parses it).
        self._buf = bytearray(pending)
        self._opcode = 0  # opcode of the fragmented message in progress (0: none)
        # Its payloads so far, one entry per frame even when empty: ``len(_parts)`` is the
        # frame count that ``max_frames`` bounds, so no counter is kept besides.
        self._parts: list[bytes] = []
        self._size = 0  # their total length
        self._done = False

    @property
    def buffered(self) -> int:
        """Bytes held back: part of a frame, or fragments of an unfinished message."""
        return len(self._buf) + self._size + (1 if self._opcode else 0)

    def feed(self, data: bytes) -> list[tuple[int, Any]]:
        if self._done:
            return []
        buf: bytes | bytearray
        if self._buf:
            self._buf += data
            buf = self._buf
        else:
            buf = data
        out: list[tuple[int, Any]] = []
        try:
            pos = self._parse(buf, out)
        except FrameError as exc:
            out.append((FAIL, (exc.code, exc.reason)))
            self._finish()
            return out
        if self._done:
            self._finish()
        elif pos == len(buf):
            if self._buf:
                self._buf = bytearray()
        elif buf is self._buf:
            if pos:
                del buf[:pos]
        else:
            self._buf = bytearray(buf[pos:])
        return out

    def _finish(self) -> None:
        """Nothing more will be parsed: drop every byte held, including the fragments of an
        unfinished message, since the connection may linger for seconds in its close."""
        self._done = True
        self._buf = bytearray()
        self._opcode, self._parts, self._size = 0, [], 0

    def _parse(self, buf: bytes | bytearray, out: list[tuple[int, Any]]) -> int:
        """Parse every complete frame of ``buf``; returns where the first incomplete begins."""
        pos, end = 0, len(buf)
        while end - pos >= 2:
            b0, b1 = buf[pos], buf[pos + 1]
            opcode = b0 & 0x0F
            fin = b0 & 0x80
            if b0 & 0x70:
                raise FrameError(1002, "reserved bit set")
            if not b1 & 0x80:
                raise FrameError(1002, "unmasked client frame")
            n = b1 & 0x7F
            head = pos + 2
            if opcode in _CONTROL_OPCODES:
                if not fin:
                    raise FrameError(1002, "fragmented control frame")
                if n > 125:
                    raise FrameError(1002, "control frame longer than 125 bytes")
            elif opcode not in _DATA_OPCODES:
                raise FrameError(1002, f"reserved opcode {opcode:#x}")
            elif n == 126:
                if end - head < 2:
                    break
                n = (buf[head] << 8) | buf[head + 1]
                if n < 126:
                    raise FrameError(1002, "length not in its shortest form")
                head += 2
            elif n == 127:
                if end - head < 8:
                    break
                n = int.from_bytes(buf[head:head + 8], "big")
                if n >> 63:
                    raise FrameError(1002, "length with the most significant bit set")
                if n < 0x10000:
                    raise FrameError(1002, "length not in its shortest form")
                head += 8
            if opcode in _DATA_OPCODES:
                self._check_data(opcode, n)
            stop = head + 4 + n
            if stop > end:
                break
            payload = unmask(buf[head + 4:stop], buf[head:head + 4]) if n else b""
            pos = stop
            if opcode >= CLOSE:
                if opcode == CLOSE:
                    out.append((CLOSE, close_payload(payload)))
                    self._done = True
                    return pos
                out.append((opcode, payload))
            elif fin:
                if self._opcode:
                    parts = self._parts
                    parts.append(payload)
                    payload = b"".join(parts)
                    opcode = self._opcode
                    self._opcode, self._parts, self._size = 0, [], 0
                if opcode == TEXT:
                    try:
                        out.append((TEXT, payload.decode("utf-8")))
                    except UnicodeDecodeError:
                        raise FrameError(1007, "text is not UTF-8") from None
                else:
                    out.append((BINARY, payload))
            else:
                if not self._opcode:
                    self._opcode = opcode
                self._parts.append(payload)
                self._size += n
        return pos

    def _check_data(self, opcode: int, n: int) -> None:
        """Judge a data frame from its header alone, so a refused frame is never buffered."""
        if opcode == CONTINUATION:
            if not self._opcode:
                raise FrameError(1002, "continuation of nothing")
            if len(self._parts) >= self.max_frames:
                raise FrameError(1009, f"message of more than {self.max_frames} frames")
        elif self._opcode:
            raise FrameError(1002, "new message inside a fragmented one")
        if self._size + n > self.max_size:
            raise FrameError(1009, "message too big")


def close_payload(payload: bytes) -> tuple[int, str]:
    """The (code, reason) of a peer's close frame (§5.5.1, §7.4)."""
    if not payload:
        return 1005, ""
    if len(payload) == 1:
        raise FrameError(1002, "close frame with a 1-byte payload")
    code = (payload[0] << 8) | payload[1]
    if code not in _PEER_CLOSE_CODES and not 3000 <= code <= 4999:
        raise FrameError(1002, f"close code {code} may not be sent")
    try:
        return code, payload[2:].decode("utf-8")
    except UnicodeDecodeError:
        raise FrameError(1007, "close reason is not UTF-8") from None
