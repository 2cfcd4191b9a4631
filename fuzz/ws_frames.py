"""Fuzz harness (a): the client frame reader, ``relay.transport.wsread.FrameReader``.

Input layout: the first byte is control, the rest is the byte stream a client sends.
Control bits: ``0x3F`` the read size (its value squared; 0: everything in one read),
``0x40`` the first read arrives with the handshake (``pending``, parsed by ``feed(b"")``),
``0x80`` a message limit of 125 bytes instead of 4096 (so that 1009 is reachable).

Invariants: ``feed`` never raises; every item is one of the documented ``(opcode, payload)``
shapes; only ``FAIL`` signals an error, with a close code the reader documents; ``CLOSE``
and ``FAIL`` end their batch and nothing is returned after them; messages respect the size
limit; the bytes held back stay bounded; and how the stream is cut into reads changes
nothing (the same items, in the same order, as one read of everything).
"""

from __future__ import annotations

from typing import Any

from relay.transport.wsread import (
    BINARY,
    CLOSE,
    FAIL,
    PING,
    PONG,
    TEXT,
    FrameReader,
)

from .common import fuzz_main, split

#: Close codes a peer may send (RFC 6455 §7.4.1 minus the local-only ones) besides 3000-4999.
PEER_CODES = frozenset({1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012, 1013})
#: The reader's own failure codes: protocol error, invalid UTF-8, message too big.
FAIL_CODES = frozenset({1002, 1007, 1009})
#: Longest frame head: 2 bytes, 8 of extended length, 4 of mask.
MAX_HEAD = 14


def check_item(item: Any, max_size: int) -> None:
    """One ``(opcode, payload)`` item is of a documented shape."""
    assert isinstance(item, tuple) and len(item) == 2, item
    opcode, payload = item
    if opcode == TEXT:
        assert isinstance(payload, str)
        assert len(payload.encode("utf-8")) <= max_size
    elif opcode == BINARY:
        assert isinstance(payload, bytes) and len(payload) <= max_size
    elif opcode in (PING, PONG):
        assert isinstance(payload, bytes) and len(payload) <= 125
    elif opcode == CLOSE:
        code, reason = payload
        assert isinstance(reason, str)
        if code == 1005:
            assert reason == ""
        else:
            assert code in PEER_CODES or 3000 <= code <= 4999, code
            assert len(reason.encode("utf-8")) <= 123
    else:
        assert opcode == FAIL, f"unknown opcode {opcode!r}"
        code, reason = payload
        assert code in FAIL_CODES, code
        assert isinstance(reason, str) and reason


def read_all(pieces: list[bytes], max_size: int, pending: bool) -> list[Any]:
    """Every item of ``pieces`` fed in order, checking each batch as it comes."""
    if pending and pieces:
        reader = FrameReader(max_size, pieces[0])
        batches = [b"", *pieces[1:]]
    else:
        reader = FrameReader(max_size)
        batches = pieces
    items: list[Any] = []
    ended = False
    for piece in batches:
        out = reader.feed(piece)
        assert isinstance(out, list)
        if ended:
            assert out == [], "items after CLOSE/FAIL"
            continue
        for i, item in enumerate(out):
            check_item(item, max_size)
            if item[0] in (CLOSE, FAIL):
                assert i == len(out) - 1, "CLOSE/FAIL must end the batch"
                ended = True
        items += out
        # Held back: one partial frame (its payload within what the limit still allows,
        # or a control frame) plus the fragments of one unfinished message.
        assert reader.buffered <= max_size + MAX_HEAD + 125 + 1, reader.buffered
    if ended:
        assert reader.feed(b"\x81\x80\x00\x00\x00\x00") == []
    return items


def check(data: bytes) -> None:
    if not data:
        return
    control, stream = data[0], data[1:]
    max_size = 125 if control & 0x80 else 4096
    pending = bool(control & 0x40)
    whole = read_all([stream], max_size, pending=False)
    pieces = read_all(split(stream, (control & 0x3F) ** 2), max_size, pending)
    assert pieces == whole, "the reads' boundaries changed the result"


def main() -> None:
    fuzz_main(check)


if __name__ == "__main__":
    main()
