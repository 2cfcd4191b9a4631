"""``FrameReader`` against wsproto's server side, on random client frame sequences.

Hypothesis builds sequences of client frames (fragmented text and binary messages, pings,
pongs between fragments, closes with any code and reason, stray continuations) with random
masking keys, then breaks some of them (reserved bits, no mask, reserved opcodes, control
frames that are fragmented or too long, lengths not in their shortest form or with the top
bit set, invalid UTF-8, 1-byte close payloads). The bytes are cut at random points and fed
to the reader chunk by chunk.

The oracle is wsproto's ``FrameProtocol`` in server mode, fed one whole frame at a time so
that its verdict can be tied to a frame. The reader must yield the same messages in the same
order and fail with the same close code, except where it differs by design (module
docstring of ``relay.transport.wsread``); there the oracle applies the documented rule:

* **Limits.** wsproto has none. The reader fails with 1009 at the header of the data frame
  that takes its message over ``max_size`` bytes or ``max_frames`` frames, unless that
  header is already a protocol error (1002), which the reader checks first.
* **UTF-8 per message.** wsproto fails (1007) at the fragment where the text stops being a
  prefix of valid UTF-8; the reader fails at the message's last frame. In between, the
  reader goes on as with a binary message: it answers control frames, stops at a close, and
  reports other errors and limits. The oracle follows that by restarting wsproto inside a
  fragmented *binary* message and turning that message's end into ``FAIL 1007``.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass
from itertools import pairwise
from typing import Any

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st
from wsproto.frame_protocol import FrameProtocol, Opcode, ParseFailed

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
)
from tests.test_wsread import client_frame

Event = tuple[int, object]
DATA = (CONTINUATION, TEXT, BINARY)
FAST = settings(max_examples=200, deadline=None, database=None,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


@dataclass(frozen=True)
class Frame:
    """A generated client frame: what its header claims, and its bytes on the wire."""

    opcode: int
    fin: bool
    payload: bytes  # unmasked
    wire: bytes


# -- strategies ------------------------------------------------------------------------------

keys = st.binary(min_size=4, max_size=4)


def chance(n: int) -> st.SearchStrategy[bool]:
    """True once in ``n`` draws. (Hypothesis draws small integers as 0 about half the time,
    so ``integers(0, n - 1) == 0`` would be far likelier; False shrinks first.)"""
    return st.sampled_from([False] * (n - 1) + [True])


utf8_text = st.text(st.characters(codec="utf-8"), max_size=30).map(str.encode)


@st.composite
def text_payloads(draw: st.DrawFn) -> bytes:
    """Mostly valid UTF-8; sometimes with a byte that breaks it, or random bytes."""
    data = draw(utf8_text)
    choice = draw(st.sampled_from(["valid"] * 8 + ["random", "broken"]))
    if choice == "random":
        return draw(st.binary(max_size=12))
    if choice == "broken":
        at = draw(st.integers(0, len(data)))
        bad = draw(st.sampled_from([b"\xff", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf4\x90\x80\x80",
                                    b"\xe2\x82", b"\x80"]))
        return data[:at] + bad + data[at:]
    return data


@st.composite
def big_payloads(draw: st.DrawFn) -> bytes:
    """Sizes at the edges of the 7-, 16- and 64-bit length forms, cheap to draw."""
    size = draw(st.sampled_from([125, 126, 127, 65535, 65536, 70000]))
    seed = draw(st.binary(min_size=1, max_size=4))
    return (seed * (size // len(seed) + 1))[:size]


#: Every code a peer may send, and the invalid ones next to them; then any 16 bits.
close_codes = st.one_of(st.sampled_from([
    0, 999, 1000, 1001, 1002, 1003, 1004, 1005, 1006, 1007, 1008, 1009, 1010, 1011, 1012, 1013,
    1014, 1015, 1016, 2999, 3000, 3999, 4000, 4999, 5000, 65535]), st.integers(0, 0xFFFF))


@st.composite
def close_payloads(draw: st.DrawFn) -> bytes:
    shape = draw(st.sampled_from(["code"] * 4 + ["empty", "one byte"]))
    if shape == "empty":
        return b""
    if shape == "one byte":
        return draw(st.binary(min_size=1, max_size=1))
    return struct.pack("!H", draw(close_codes)) + draw(text_payloads())[:60]


@dataclass(frozen=True)
class Spec:
    """A frame before encoding; ``form`` is how its length is written (0: shortest)."""

    opcode: int
    fin: bool
    payload: bytes
    key: bytes | None
    rsv: int = 0
    form: int = 0  # 0 shortest, 2 or 8 bytes, -1 eight bytes with the top bit set


def encode(spec: Spec) -> Frame:
    if spec.form == -1:  # only the header can exist: the length cannot be met
        head = bytes([(0x80 if spec.fin else 0) | spec.rsv | spec.opcode, 0x80 | 127])
        wire = head + (1 << 63 | len(spec.payload)).to_bytes(8, "big") + (spec.key or b"")
        return Frame(spec.opcode, spec.fin, spec.payload, wire)
    wire = client_frame(spec.opcode, spec.payload, fin=spec.fin, rsv=spec.rsv, mask=spec.key,
                        length_bytes=spec.form or None)
    return Frame(spec.opcode, spec.fin, spec.payload, wire)


@st.composite
def controls(draw: st.DrawFn) -> list[Spec]:
    opcode = draw(st.sampled_from([PING, PONG]))
    return [Spec(opcode, True, draw(st.binary(max_size=125)), draw(keys))]


@st.composite
def messages(draw: st.DrawFn) -> list[Spec]:
    """A data message in 1 to 5 frames, cut anywhere (code points too), controls between."""
    opcode = draw(st.sampled_from([TEXT, BINARY]))
    if draw(chance(12)):
        payload = draw(big_payloads())
    elif opcode == TEXT:
        payload = draw(text_payloads())
    else:
        payload = draw(st.binary(max_size=40))
    cuts = sorted(draw(st.lists(st.integers(0, len(payload)), max_size=4)))
    bounds = [0, *cuts, len(payload)]
    pieces = [payload[a:b] for a, b in pairwise(bounds)]
    out: list[Spec] = []
    for i, piece in enumerate(pieces):
        last = i == len(pieces) - 1
        out.append(Spec(opcode if i == 0 else CONTINUATION, last, piece, draw(keys)))
        if not last and draw(st.booleans()):
            out += draw(controls())
    return out


@st.composite
def closes(draw: st.DrawFn) -> list[Spec]:
    return [Spec(CLOSE, True, draw(close_payloads()), draw(keys))]


def stray_continuations() -> st.SearchStrategy[list[Spec]]:
    return st.builds(lambda *a: [Spec(CONTINUATION, *a)], st.booleans(), st.binary(max_size=5),
                     keys)


@st.composite
def breakage(draw: st.DrawFn, spec: Spec) -> Spec:
    """``spec`` with one thing a correct client never does."""
    kind = draw(st.sampled_from(range(8)))
    if kind == 0:
        return Spec(spec.opcode, spec.fin, spec.payload, spec.key,
                    rsv=draw(st.sampled_from([0x40, 0x20, 0x10])))
    if kind == 1:
        return Spec(spec.opcode, spec.fin, spec.payload, None)
    if kind == 2:
        return Spec(draw(st.sampled_from([3, 4, 5, 6, 7, 0xB, 0xC, 0xD, 0xE, 0xF])), spec.fin,
                    spec.payload, spec.key)
    if kind == 3 and spec.opcode in (PING, PONG, CLOSE):  # fragmented control frame
        return Spec(spec.opcode, False, spec.payload, spec.key)
    if kind == 4:  # a control frame that is too long
        big = spec.payload[:126].ljust(draw(st.sampled_from([126, 127, 140])), b"!")
        return Spec(draw(st.sampled_from([PING, PONG, CLOSE])), True, big, spec.key)
    if kind == 5:  # a longer length form than needed, often just so
        form = draw(st.sampled_from([2, 8]))
        size = draw(st.sampled_from([0, 125] if form == 2 else [125, 126, 65535]))
        return Spec(spec.opcode, spec.fin, spec.payload[:size].ljust(size, b"!"), spec.key,
                    form=form)
    if kind == 6:
        return Spec(spec.opcode, spec.fin, spec.payload, spec.key, form=-1)
    # A message's frame turned into another kind: a new message inside a fragmented one,
    # a continuation of nothing, a message left open.
    return Spec(draw(st.sampled_from(DATA)), draw(st.booleans()), spec.payload, spec.key)


@st.composite
def streams(draw: st.DrawFn, broken: bool = False) -> list[Frame]:
    """Mostly well-formed traffic, so that a stream says something before it ends; with
    ``broken``, exactly one of its frames is spoiled."""
    item = st.one_of(messages(), messages(), messages(), messages(), controls(), controls(),
                     closes(), stray_continuations())
    specs = [spec for frames in draw(st.lists(item, min_size=broken, max_size=8))
             for spec in frames]
    if broken:
        at = draw(st.sampled_from(range(len(specs))))
        specs[at] = draw(breakage(specs[at]))
    return [encode(spec) for spec in specs]


@st.composite
def limits(draw: st.DrawFn, frames: list[Frame]) -> tuple[int, int]:
    """(max_size, max_frames): mostly out of reach, else at a message's size or frame count
    somewhere in ``frames``, or one below or above it."""
    sizes, counts = [], []
    size = count = 0
    for frame in frames:
        if frame.opcode in DATA:
            size, count = (size, count) if frame.opcode == CONTINUATION else (0, 0)
            size, count = size + len(frame.payload), count + 1
            sizes.append(size)
            counts.append(count)
    max_size, max_frames = 1 << 20, MAX_FRAMES
    if draw(chance(3)) and sizes:
        max_size = max(0, draw(st.sampled_from(sizes)) + draw(st.sampled_from([0, -1, 1])))
    if draw(chance(3)) and counts:
        max_frames = max(1, draw(st.sampled_from(counts)) + draw(st.sampled_from([0, -1, 1])))
    return max_size, max_frames


# -- the oracle -------------------------------------------------------------------------------

def _wsproto_server(*, inside_binary: bool = False) -> FrameProtocol:
    proto = FrameProtocol(client=False, extensions=[])
    if inside_binary:
        proto.receive_bytes(client_frame(BINARY, b"", fin=False))
        assert [f.message_finished for f in proto.received_frames()] == [False]
    return proto


def oracle(frames: list[Frame], max_size: int, max_frames: int) -> list[Event]:
    """What the reader must yield: wsproto's events, with the rules of the module docstring.

    A failure is ``(FAIL, code)``: the reader's reasons are its own words.
    """
    proto = _wsproto_server()
    out: list[Event] = []
    pieces: list[Any] = []  # of the message in progress: str for text, bytes for binary
    size = count = 0
    poisoned = False  # the text message in progress is known to be invalid UTF-8
    for frame in frames:
        proto.receive_bytes(frame.wire)
        error = None
        try:
            events = list(proto.received_frames())
        except ParseFailed as exc:
            events, error = [], int(exc.code)
        if error == 1002:
            return [*out, (FAIL, 1002)]
        if frame.opcode in DATA:  # a valid data frame header (else wsproto said 1002)
            if frame.opcode != CONTINUATION:
                size = count = 0
            size += len(frame.payload)
            count += 1
            if size > max_size or count > max_frames:
                return [*out, (FAIL, 1009)]
        if error is not None:
            assert error == 1007, error
            if frame.opcode in DATA and not frame.fin:
                poisoned = True
                proto = _wsproto_server(inside_binary=True)
                continue
            return [*out, (FAIL, 1007)]
        for event in events:
            assert event.frame_finished  # whole frames in, whole frames out
            payload: Any = event.payload  # (code, reason), str or bytes, by opcode
            if event.opcode == Opcode.CLOSE:
                return [*out, (CLOSE, (int(payload[0]), payload[1]))]
            if event.opcode in (Opcode.PING, Opcode.PONG):
                out.append((int(event.opcode), bytes(payload)))
            elif poisoned and event.message_finished:
                return [*out, (FAIL, 1007)]
            elif not poisoned:
                pieces.append(payload)
                if event.message_finished:
                    joined = "".join(pieces) if event.opcode == Opcode.TEXT else b"".join(pieces)
                    out.append((int(event.opcode), joined))
                    pieces = []
    return out


# -- feeding the reader -----------------------------------------------------------------------

def chunked(wire: bytes, cuts: list[int]) -> list[bytes]:
    bounds = [0, *sorted(c % (len(wire) + 1) for c in cuts), len(wire)]
    return [wire[a:b] for a, b in pairwise(bounds)]


def feed(reader: FrameReader, chunks: list[bytes]) -> list[Event]:
    """Feed chunk by chunk, checking the reader's promises about its end on the way."""
    out: list[Event] = []
    for chunk in chunks:
        got = reader.feed(chunk)
        if out and out[-1][0] in (FAIL, CLOSE):
            assert got == [], "parsed after a close or a failure"
        out += got
    ends = [i for i, (op, _) in enumerate(out) if op in (FAIL, CLOSE)]
    assert ends in ([], [len(out) - 1]), out
    if ends:
        assert reader.feed(client_frame(TEXT, b"more")) == []
        assert reader.buffered == 0
    return [(FAIL, ev[1][0]) if ev[0] == FAIL else ev for ev in out]  # type: ignore[index]


# -- properties -------------------------------------------------------------------------------

def agree(frames: list[Frame], bounds: tuple[int, int], cuts: list[int]) -> None:
    max_size, max_frames = bounds
    wire = b"".join(f.wire for f in frames)
    got = feed(FrameReader(max_size, max_frames=max_frames), chunked(wire, cuts))
    assert got == oracle(frames, max_size, max_frames)


cut_points = st.lists(st.integers(0, 1 << 20), max_size=12)


@FAST
@given(data=st.data(), frames=streams(), cuts=cut_points)
def test_reader_agrees_with_wsproto(data: st.DataObject, frames: list[Frame],
                                    cuts: list[int]) -> None:
    agree(frames, data.draw(limits(frames)), cuts)


@FAST
@given(data=st.data(), frames=streams(broken=True), cuts=cut_points)
def test_reader_agrees_with_wsproto_on_a_broken_frame(data: st.DataObject, frames: list[Frame],
                                                      cuts: list[int]) -> None:
    agree(frames, data.draw(limits(frames)), cuts)


@FAST
@given(before=messages(), code=close_codes,
       reason=text_payloads(), key=keys, cuts=cut_points)
def test_close_frames_agree_with_wsproto(before: list[Spec], code: int, reason: bytes,
                                         key: bytes, cuts: list[int]) -> None:
    """Every close code, valid and invalid reasons, after a message (or inside it)."""
    close = Spec(CLOSE, True, struct.pack("!H", code) + reason[:123], key)
    at = len(before) if key[0] & 1 else 1  # odd keys: before the message's last frame
    frames = [encode(spec) for spec in [*before[:at], close, *before[at:]]]
    agree(frames, (1 << 20, MAX_FRAMES), cuts)


@FAST
@given(data=st.data(), frames=streams(), cuts=cut_points, cut=st.integers(0, 1 << 20))
def test_a_cut_stream_yields_a_prefix(data: st.DataObject, frames: list[Frame],
                                      cuts: list[int], cut: int) -> None:
    """Whatever has arrived, the events so far are the start of the whole stream's events:
    nothing is reported before its frame is complete, and no failure is reported early."""
    max_size, max_frames = data.draw(limits(frames))
    wire = b"".join(f.wire for f in frames)
    part = wire[:cut % (len(wire) + 1)]
    whole = feed(FrameReader(max_size, max_frames=max_frames), [wire])
    got = feed(FrameReader(max_size, max_frames=max_frames), chunked(part, cuts))
    assert got == whole[:len(got)]


@settings(max_examples=200, deadline=None, database=None)
@given(data=st.binary(max_size=300), cuts=st.lists(st.integers(0, 400), max_size=8),
       max_size=st.integers(0, 300))
def test_garbage_never_raises_and_chunking_does_not_matter(data: bytes, cuts: list[int],
                                                           max_size: int) -> None:
    whole = feed(FrameReader(max_size), [data])
    assert feed(FrameReader(max_size), chunked(data, cuts)) == whole


@settings(max_examples=20, deadline=None, database=None)
@given(extra=st.integers(-2, 2), opcode=st.sampled_from([TEXT, BINARY]), key=keys,
       size=st.integers(0, 3))
def test_the_production_frame_bound_against_the_oracle(extra: int, opcode: int, key: bytes,
                                                       size: int) -> None:
    """Around 1,000 frames with the default bound (tiny frames, so the size limit is not met)."""
    n = MAX_FRAMES + extra
    frames = [encode(Spec(opcode if i == 0 else CONTINUATION, i == n - 1, b"a" * size, key))
              for i in range(n)]
    got = feed(FrameReader(1 << 20), [b"".join(f.wire for f in frames)])
    assert got == oracle(frames, 1 << 20, MAX_FRAMES)
    assert (got[-1][0] == FAIL) == (n > MAX_FRAMES)


@settings(max_examples=150, deadline=None, database=None)
@given(opcode=st.sampled_from([TEXT, BINARY, CONTINUATION, PING, PONG, CLOSE]),
       fin=st.booleans(), size=st.sampled_from([0, 1, 2, 100, 125, 126, 127, 65535, 65536]),
       form=st.sampled_from([0, 2, 8]), key=keys)
def test_every_length_form_agrees_with_wsproto(opcode: int, fin: bool, size: int, form: int,
                                               key: bytes) -> None:
    """Each opcode, FIN or not, at the edges of each length form, written in each form
    (after an open message when it continues one)."""
    payload = b"\x03\xe8" + b"a" * size if opcode == CLOSE else b"a" * size
    assume(form != 2 or len(payload) <= 0xFFFF)  # 16 bits cannot say more
    first = [encode(Spec(BINARY, False, b"", key))] if opcode == CONTINUATION else []
    frame = encode(Spec(opcode, fin, payload, key, form=form))
    agree([*first, frame], (1 << 20, MAX_FRAMES), [])


def test_every_close_code_agrees_with_wsproto() -> None:
    """All 65,536 codes: cheap enough to try each rather than sample."""
    key = b"\x5a\x01\xc3\x7e"
    for code in range(0x10000):
        frame = encode(Spec(CLOSE, True, struct.pack("!H", code) + b"bye", key))
        agree([frame], (1 << 20, MAX_FRAMES), [])
