"""The relay's client-frame reader (``relay.transport.wsread``), frame by frame.

Frames are made by wsproto's *client* side (random masking keys, fragmentation) and by
hand for what a correct client never sends; every violation must end the batch with the
close code RFC 6455 and wsproto give it.
"""

from __future__ import annotations

import os
import random
import struct

import pytest
from wsproto.frame_protocol import FrameProtocol, Opcode

from relay.transport.wsread import (
    BINARY,
    CLOSE,
    CONTINUATION,
    FAIL,
    MAX_FRAMES,
    PING,
    PONG,
    TEXT,
    FrameReader,
    unmask,
)

LIMIT = 1 << 20


def client_frame(opcode: int, payload: bytes, *, fin: bool = True, rsv: int = 0,
                 mask: bytes | None = b"\x37\xfa\x21\x3d", length_bytes: int | None = None,
                 ) -> bytes:
    """One client frame, with full control over what a correct client would never do."""
    n = len(payload)
    if length_bytes is None:
        length_bytes = 0 if n < 126 else 2 if n < 65536 else 8
    mask_bit = 0x80 if mask is not None else 0
    if length_bytes == 0:
        head = bytes([mask_bit | n])
    elif length_bytes == 2:
        head = bytes([mask_bit | 126]) + struct.pack("!H", n)
    else:
        head = bytes([mask_bit | 127]) + struct.pack("!Q", n)
    first = (0x80 if fin else 0) | rsv | opcode
    body = payload if mask is None else mask + unmask(payload, mask)
    return bytes([first]) + head + body


def feed_all(data: bytes, *, limit: int = LIMIT, chunks: list[int] | None = None
             ) -> list[tuple[int, object]]:
    reader = FrameReader(limit)
    if chunks is None:
        return reader.feed(data)
    out: list[tuple[int, object]] = []
    pos = 0
    for size in chunks:
        out += reader.feed(data[pos:pos + size])
        pos += size
    out += reader.feed(data[pos:])
    assert reader.buffered == 0 or out[-1][0] in (FAIL, CLOSE)
    return out


@pytest.mark.parametrize("n", [0, 1, 3, 4, 5, 125, 126, 511, 512, 513, 4096, 65535, 65536,
                               200 * 1024])
def test_unmask_matches_the_definition(n: int) -> None:
    payload, key = os.urandom(n), os.urandom(4)
    assert unmask(payload, key) == bytes(b ^ key[i % 4] for i, b in enumerate(payload))


def test_wsproto_client_frames_in_every_split() -> None:
    """Messages of every length class, fragmented or not, pings and a close, cut at random
    points (including inside headers and masking keys), come out whole and in order."""
    rng = random.Random(7)
    client = FrameProtocol(client=True, extensions=[])
    expected: list[tuple[int, object]] = []
    wire = b""
    for i in range(60):
        size = rng.choice([0, 1, 60, 125, 126, 1000, 65535, 65536, 70000])
        if i % 3 == 0:
            text = "".join(rng.choice("aé€😀{}\"") for _ in range(size // 4 + 1))
            data = text.encode()
            cut = [0, len(data) // 3, len(data)]
            # fragment on byte boundaries that may split a code point
            wire += client.send_data(data[cut[0]:cut[1]], fin=False)
            wire += bytes(client.send_data(data[cut[1]:cut[2]], fin=True))
            expected.append((TEXT, text))
            # wsproto sends bytes fragments with the BINARY opcode; re-mark them as TEXT
        elif i % 3 == 1:
            text = "x" * size
            wire += client.send_data(text, fin=True)
            expected.append((TEXT, text))
        else:
            blob = os.urandom(size)
            wire += client.send_data(blob, fin=True)
            expected.append((BINARY, blob))
        if i % 7 == 0:
            wire += client.ping(b"p%d" % i)
            expected.append((PING, b"p%d" % i))
    wire += client.close(1000, "bye")
    expected.append((CLOSE, (1000, "bye")))
    # wsproto's send_data(bytes) makes BINARY frames: rebuild the fragmented texts' first
    # frames as TEXT by parsing with the expectation in mind.
    fixed = _retag_fragmented_text(wire)
    whole = feed_all(fixed)
    assert whole == expected
    for _ in range(20):
        points = sorted(rng.sample(range(1, len(fixed)), 40))
        chunks = [b - a for a, b in zip([0, *points], points, strict=False)]
        assert feed_all(fixed, chunks=chunks) == expected
    assert feed_all(fixed, chunks=[1] * 3000) == expected


def _retag_fragmented_text(wire: bytes) -> bytes:
    """Turn each BINARY frame without FIN (a fragmented text's start) into TEXT."""
    out = bytearray()
    pos = 0
    while pos < len(wire):
        b0, b1 = wire[pos], wire[pos + 1]
        n, head = b1 & 0x7F, 2
        if n == 126:
            n, head = struct.unpack("!H", wire[pos + 2:pos + 4])[0], 4
        elif n == 127:
            n, head = struct.unpack("!Q", wire[pos + 2:pos + 10])[0], 10
        frame = bytearray(wire[pos:pos + head + 4 + n])
        if b0 & 0x0F == Opcode.BINARY and not b0 & 0x80:
            frame[0] = (b0 & 0xF0) | Opcode.TEXT
        out += frame
        pos += head + 4 + n
    return bytes(out)


def test_control_frames_between_fragments() -> None:
    data = (client_frame(TEXT, b'{"a":', fin=False) + client_frame(PING, b"hi")
            + client_frame(PONG, b"") + client_frame(0, b"1}"))
    assert feed_all(data) == [(PING, b"hi"), (PONG, b""), (TEXT, '{"a":1}')]


def test_nothing_is_parsed_after_a_close() -> None:
    reader = FrameReader(LIMIT)
    out = reader.feed(client_frame(CLOSE, struct.pack("!H", 1001)) + client_frame(TEXT, b"x"))
    assert out == [(CLOSE, (1001, ""))]
    assert reader.feed(client_frame(TEXT, b"y")) == []


def test_empty_close_is_1005_and_frames_before_a_failure_come_first() -> None:
    assert feed_all(client_frame(CLOSE, b"")) == [(CLOSE, (1005, ""))]
    out = feed_all(client_frame(TEXT, b"ok") + client_frame(TEXT, b"x", rsv=0x40))
    assert out == [(TEXT, "ok"), (FAIL, (1002, "reserved bit set"))]


@pytest.mark.parametrize(("frame", "code"), [
    (client_frame(TEXT, b"x", mask=None), 1002),  # unmasked
    (client_frame(TEXT, b"x", rsv=0x40), 1002),
    (client_frame(TEXT, b"x", rsv=0x20), 1002),
    (client_frame(TEXT, b"x", rsv=0x10), 1002),
    (client_frame(0x3, b"x"), 1002),  # reserved data opcode
    (client_frame(0xB, b"x"), 1002),  # reserved control opcode
    (client_frame(PING, b"x", fin=False), 1002),  # fragmented control frame
    (client_frame(PING, b"x" * 126, length_bytes=2), 1002),  # control frame too long
    (client_frame(0, b"x"), 1002),  # continuation of nothing
    (client_frame(TEXT, b"a", fin=False) + client_frame(TEXT, b"b"), 1002),  # no continuation
    (client_frame(TEXT, b"x" * 10, length_bytes=2), 1002),  # length not shortest
    (client_frame(TEXT, b"x" * 200, length_bytes=8), 1002),
    (b"\x81\xff" + (1 << 63 | 70000).to_bytes(8, "big") + b"\0\0\0\0", 1002),  # MSB set
    (client_frame(TEXT, b"\xff"), 1007),
    (client_frame(TEXT, b"\xe2\x82", fin=False) + client_frame(0, b"x"), 1007),  # cut char
    (client_frame(CLOSE, b"\x03"), 1002),  # 1-byte close payload
    (client_frame(CLOSE, struct.pack("!H", 999)), 1002),
    (client_frame(CLOSE, struct.pack("!H", 1005)), 1002),  # local-only codes
    (client_frame(CLOSE, struct.pack("!H", 1006)), 1002),
    (client_frame(CLOSE, struct.pack("!H", 1015)), 1002),
    (client_frame(CLOSE, struct.pack("!H", 1004)), 1002),  # reserved, undefined
    (client_frame(CLOSE, struct.pack("!H", 2999)), 1002),
    (client_frame(CLOSE, struct.pack("!H", 5000)), 1002),
    (client_frame(CLOSE, struct.pack("!H", 1000) + b"\xff"), 1007),
])
def test_violations_end_the_batch_with_their_close_code(frame: bytes, code: int) -> None:
    out = feed_all(frame)
    assert out[-1][0] == FAIL and out[-1][1][0] == code, out  # type: ignore[index]
    assert all(op != FAIL for op, _ in out[:-1])


@pytest.mark.parametrize("code", [1000, 1001, 1002, 1003, 1007, 1008, 1009, 1010, 1011, 1012,
                                  1013, 3000, 3999, 4000, 4999])
def test_close_codes_a_peer_may_send(code: int) -> None:
    frame = client_frame(CLOSE, struct.pack("!H", code) + "é".encode())
    assert feed_all(frame) == [(CLOSE, (code, "é"))]


def test_size_limit_is_checked_on_the_declared_length() -> None:
    """A message over the limit is refused from its header, before its payload arrives;
    fragments count together; exactly the limit passes."""
    reader = FrameReader(1000)
    header = client_frame(TEXT, b"x" * 1001)[:8]  # 2 + 2 length bytes + 4 mask bytes
    assert reader.feed(header) == [(FAIL, (1009, "message too big"))]
    assert feed_all(client_frame(TEXT, b"x" * 1000), limit=1000) == [(TEXT, "x" * 1000)]
    split = client_frame(TEXT, b"x" * 600, fin=False) + client_frame(0, b"y" * 401)
    assert feed_all(split, limit=1000)[-1] == (FAIL, (1009, "message too big"))
    split = client_frame(TEXT, b"x" * 600, fin=False) + client_frame(0, b"y" * 400)
    assert feed_all(split, limit=1000) == [(TEXT, "x" * 600 + "y" * 400)]


def test_buffered_counts_partial_frames_and_unfinished_messages() -> None:
    reader = FrameReader(LIMIT)
    frame = client_frame(TEXT, b"hello")
    assert reader.feed(frame[:4]) == []
    assert reader.buffered == 4
    assert reader.feed(frame[4:]) == [(TEXT, "hello")]
    assert reader.buffered == 0
    assert reader.feed(client_frame(TEXT, b"", fin=False)) == []
    assert reader.buffered > 0  # a message has begun, though no byte of it is held
    assert reader.feed(client_frame(0, b"!")) == [(TEXT, "!")]
    assert reader.buffered == 0


def test_pending_handshake_bytes_are_parsed_first() -> None:
    reader = FrameReader(LIMIT, client_frame(TEXT, b"early") + b"\x81")
    assert reader.feed(b"") == [(TEXT, "early")]
    assert reader.buffered == 1


def fragmented(opcode: int, parts: list[bytes]) -> bytes:
    """One message cut into ``len(parts)`` frames: ``opcode`` first, continuations after."""
    last = len(parts) - 1
    return b"".join(client_frame(opcode if i == 0 else CONTINUATION, part, fin=i == last)
                    for i, part in enumerate(parts))


@pytest.mark.parametrize("opcode", [TEXT, BINARY])
def test_a_message_of_exactly_max_frames_frames_passes(opcode: int) -> None:
    parts = [b""] * (MAX_FRAMES - 1) + [b"z"]
    expected = "z" if opcode == TEXT else b"z"
    assert feed_all(fragmented(opcode, parts)) == [(opcode, expected)]
    # Back to back: the count starts again with each message.
    assert feed_all(fragmented(opcode, parts) * 2) == [(opcode, expected)] * 2


@pytest.mark.parametrize("opcode", [TEXT, BINARY])
def test_one_frame_more_fails_with_1009_when_its_header_arrives(opcode: int) -> None:
    """Empty continuations add nothing to the size, so only the frame count stops them."""
    reader = FrameReader(LIMIT)
    body = fragmented(opcode, [b""] * MAX_FRAMES + [b"z"])
    head, last = body[:-7], body[-7:]  # the last frame: 2 header + 4 key + 1 payload bytes
    assert reader.feed(head) == []
    assert reader.feed(last[:2]) == [(FAIL, (1009, f"message of more than {MAX_FRAMES} frames"))]
    assert reader.feed(last[2:] + client_frame(TEXT, b"after")) == []
    assert reader.buffered == 0


def test_an_endless_stream_of_empty_continuations_is_cut_off() -> None:
    """Whatever the chunking, the frame after the limit fails and nothing is held."""
    reader = FrameReader(LIMIT)
    empty = client_frame(CONTINUATION, b"", fin=False)
    out = reader.feed(client_frame(BINARY, b"a", fin=False))
    for _ in range(3 * MAX_FRAMES):
        out += reader.feed(empty)
    assert out == [(FAIL, (1009, f"message of more than {MAX_FRAMES} frames"))]
    assert reader.buffered == 0


def test_control_frames_between_fragments_do_not_count() -> None:
    parts = [b""] * (MAX_FRAMES - 1) + [b"z"]
    wire = bytearray()
    for i, part in enumerate(parts):
        wire += client_frame(TEXT if i == 0 else CONTINUATION, part, fin=i == len(parts) - 1)
        wire += client_frame(PING, b"")
    out = feed_all(bytes(wire))
    assert out[-2:] == [(TEXT, "z"), (PING, b"")]
    assert out.count((PING, b"")) == MAX_FRAMES


@pytest.mark.parametrize("max_frames", [1, 2, 7])
def test_the_frame_bound_is_a_parameter(max_frames: int) -> None:
    ok = fragmented(BINARY, [b"x"] * max_frames)
    assert FrameReader(LIMIT, max_frames=max_frames).feed(ok) == [(BINARY, b"x" * max_frames)]
    over = fragmented(BINARY, [b"x"] * (max_frames + 1))
    out = FrameReader(LIMIT, max_frames=max_frames).feed(over)
    assert out == [(FAIL, (1009, f"message of more than {max_frames} frames"))]


def test_the_size_limit_and_the_frame_bound_both_apply() -> None:
    """Few big frames hit the size limit, many small ones the frame bound; both say 1009."""
    out = feed_all(fragmented(TEXT, [b"x" * 600, b"y" * 401]), limit=1000)
    assert out == [(FAIL, (1009, "message too big"))]
    out = FrameReader(1000, max_frames=3).feed(fragmented(TEXT, [b"x"] * 4))
    assert out == [(FAIL, (1009, "message of more than 3 frames"))]


@pytest.mark.parametrize("end", [client_frame(CLOSE, b""), client_frame(TEXT, b"x", rsv=0x40)])
def test_a_close_or_failure_mid_message_releases_its_fragments(end: bytes) -> None:
    """The connection lingers in its close handshake: it should not keep a message too."""
    reader = FrameReader(LIMIT)
    assert reader.feed(client_frame(BINARY, b"x" * 5000, fin=False)) == []
    assert reader.buffered > 5000
    out = reader.feed(end + client_frame(CONTINUATION, b"y"))
    assert out[-1][0] in (CLOSE, FAIL) and len(out) == 1
    assert reader.buffered == 0
