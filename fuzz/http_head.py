"""Fuzz harness (c): the relay port's request-head reader and the strict handshake.

Input layout: the first byte is control, the rest is what the client sends. Control bits:
``0x07`` how the peer ends after its bytes (see ``ENDINGS``), ``0xF8`` the read size (its
value squared; 0: everything in one read).

``read_request`` runs under trio with a virtual clock (``MockClock(autojump_threshold=0)``),
so the 10 s handshake timeout of a peer that stops sending costs no real time.

Invariants: ``read_request`` never raises and returns ``None`` or a ``Request``; it answers
nothing but a 400 and only when it returns ``None``; a returned head is at most 16 KiB and
its ``trailing`` bytes are exactly what followed the head in the input (a prefix of it, when
the rest had not been read yet); the result does not depend on how the bytes were split
into reads; ``upgrade_refusal`` agrees with an independent model of §2.1 (``expected``)
and every key it lets through is one ``accept_key`` can take; the Socket.IO handshake table
and the Origin check accept every parsed request.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Sequence
from typing import Any

import trio
import trio.testing

from relay.codecs.wsframe import accept_key
from relay.transport.http import (
    MAX_REQUEST_HEAD,
    Request,
    origin_allowed,
    read_request,
    upgrade_refusal,
)
from relay.transport.sio_handshake import SessionState, parse_query
from relay.transport.sio_handshake import refusal as sio_refusal

from .common import fuzz_main, split

#: How the scripted peer behaves once its bytes are read.
ENDINGS = ("eof", "reset", "closed", "oserror", "hang", "eof", "eof", "eof")
#: Where h11 ends a head: the first empty line (LF, optional CR, LF).
_HEAD_END = re.compile(rb"\n\r?\n")


class ScriptedStream(trio.abc.Stream):
    """A peer that sends fixed pieces, one per read, then ends as ``ending`` says.

    ``eof``: reads return ``b""``; ``reset``/``closed``/``oserror``: reads raise
    ``BrokenResourceError``/``ClosedResourceError``/``OSError`` (and so do writes, the
    connection being gone); ``hang``: reads block forever. Everything the server writes
    is kept in ``sent``.
    """

    def __init__(self, pieces: Sequence[bytes], ending: str = "eof") -> None:
        self._pieces = [bytes(p) for p in pieces if p]
        self._ending = ending
        self.sent = bytearray()

    def _fail(self) -> None:
        if self._ending == "reset":
            raise trio.BrokenResourceError("connection reset by peer")
        if self._ending == "closed":
            raise trio.ClosedResourceError("closed")
        if self._ending == "oserror":
            raise OSError(104, "Connection reset by peer")

    async def receive_some(self, max_bytes: int | None = None) -> bytes:
        await trio.lowlevel.checkpoint()
        if self._pieces:
            piece = self._pieces.pop(0)
            if max_bytes is not None and len(piece) > max_bytes:
                piece, rest = piece[:max_bytes], piece[max_bytes:]
                self._pieces.insert(0, rest)
            return piece
        self._fail()
        if self._ending == "hang":
            await trio.sleep_forever()
        return b""

    async def send_all(self, data: bytes | bytearray | memoryview) -> None:
        await trio.lowlevel.checkpoint()
        self._fail()
        self.sent += data

    async def wait_send_all_might_not_block(self) -> None:
        await trio.lowlevel.checkpoint()

    async def send_eof(self) -> None:
        await trio.lowlevel.checkpoint()

    async def aclose(self) -> None:
        await trio.lowlevel.checkpoint()


def parse(pieces: Sequence[bytes], ending: str = "eof") -> tuple[Request | None, bytes, float]:
    """``read_request`` on a scripted peer: (result, bytes answered, virtual seconds taken)."""
    stream = ScriptedStream(pieces, ending)
    clock = trio.testing.MockClock(autojump_threshold=0)

    async def run() -> tuple[Request | None, float]:
        start = trio.current_time()
        result = await read_request(stream)
        return result, trio.current_time() - start

    result, took = trio.run(run, clock=clock)
    return result, bytes(stream.sent), took


def canonical_key(key: str) -> bool:
    """The model's key rule: ASCII, strict base64 that re-encodes to itself, 16 bytes."""
    if not key.isascii():
        return False
    try:
        raw = base64.b64decode(key, validate=True)
    except binascii.Error:
        return False
    return len(raw) == 16 and base64.b64encode(raw).decode("ascii") == key


def _tokens(value: str | None) -> list[str]:
    return [t.strip().lower() for t in (value or "").split(",")]


def expected(request: Request) -> int | None:
    """The status §2.1 calls for (None: upgrade), computed independently of ``http.py``."""
    h = request.headers
    length = h.get("content-length")
    body = "transfer-encoding" in h or (length is not None and int(length) != 0)
    if (request.method != "GET" or request.http_version != "1.1" or body
            or "websocket" not in _tokens(h.get("upgrade"))
            or "upgrade" not in _tokens(h.get("connection"))):
        return 400
    if h.get("sec-websocket-version") != "13":
        return 426
    if request.header_counts.get("sec-websocket-key") != 1:
        return 400
    return None if canonical_key(h["sec-websocket-key"]) else 400


def check_request(request: Request) -> None:
    """Invariants of one parsed request, and of the handshake checks applied to it."""
    assert isinstance(request.method, str) and request.method
    assert isinstance(request.path, str) and isinstance(request.query, str)
    assert all(name == name.lower() for name in request.headers)
    assert request.headers.keys() == request.header_counts.keys()
    assert all(n >= 1 for n in request.header_counts.values())
    refusal = upgrade_refusal(request)
    want = expected(request)
    if refusal is None:
        assert want is None, (want, request)
        accept = accept_key(request.headers["sec-websocket-key"])
        assert len(base64.b64decode(accept, validate=True)) == 20
    else:
        status, headers, body = refusal
        assert status == want, (status, want, request)
        assert headers == ([("Sec-WebSocket-Version", "13")] if status == 426 else [])
        assert body.startswith(b'{"error":')
    answer = sio_refusal(request.method, request.is_upgrade, parse_query(request.query),
                         polling=True, state=SessionState.NONE, origin_ok=True)
    assert answer is None or (answer[0] in (400, 403) and isinstance(answer[1], bytes))
    origin = request.headers.get("origin")
    assert isinstance(origin_allowed(origin, ["https://teach.example.org:8443"]), bool)


def check_result(data: bytes, result: Any, sent: bytes) -> None:
    """What one ``read_request`` on ``data`` may return and answer."""
    if result is None:
        assert sent == b"" or sent.startswith(b"HTTP/1.1 400 Bad Request\r\n"), sent[:80]
        return
    assert isinstance(result, Request), result
    assert sent == b"", "a parsed request was answered"
    end = _HEAD_END.search(data)
    assert end is not None, "a request without an empty line"
    assert end.end() <= MAX_REQUEST_HEAD, "head over 16 KiB accepted"
    assert data[end.end():].startswith(result.trailing), "trailing bytes are not the rest"
    check_request(result)


def same_request(a: Request | None, b: Request | None) -> bool:
    """Equal but for ``trailing``, of which a split read may have seen less."""
    if a is None or b is None:
        return a is b
    return (a.method, a.path, a.query, a.headers, a.http_version, a.header_counts,
            a.body_announced) == (b.method, b.path, b.query, b.headers, b.http_version,
                                  b.header_counts, b.body_announced)


def check(data: bytes) -> None:
    if not data:
        return
    control, payload = data[0], data[1:]
    ending = ENDINGS[control & 0x07]
    size = (control >> 3) ** 2
    result, sent, took = parse(split(payload, size), ending)
    check_result(payload, result, sent)
    if ending == "hang" and result is None and not sent:
        assert took >= 10.0, "an unfinished head was dropped before the timeout"
    if size:
        whole, whole_sent, _ = parse([payload], ending)
        assert same_request(result, whole) and sent == whole_sent, "the split changed the result"
        if whole is not None and result is not None:
            assert whole.trailing.startswith(result.trailing)


def main() -> None:
    fuzz_main(check)


if __name__ == "__main__":
    main()
