"""Raw Engine.IO long-polling clients for the polling tests (§3.2).

Everything here writes requests byte by byte on trio sockets and parses the answers by
hand, so that a test sees exactly what the relay put on the wire: status line, header
fields (with their repetitions and order), body. Nothing is retried or smoothed over.

- ``HttpConn``: one TCP connection; ``request`` writes one request and reads one answer;
  ``closed_by_peer`` tells whether the server closed the connection.
- ``Eio``: an Engine.IO session by its sid: ``handshake``, ``get`` (a long-poll, answered
  packets as a list), ``post``. Each request opens its own TCP connection unless a
  connection is passed, so that these helpers do not depend on keep-alive (a test of its
  own checks keep-alive).
- ``Sio``: Socket.IO on top of an ``Eio`` session: a background poller that records every
  packet the session receives (answering pings), ``connect`` / ``emit`` / waits.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import trio

TIMEOUT = 5.0
RS = "\x1e"
SIO_PATH = "/socket.io/"


@dataclass
class Response:
    status: int
    reason: str
    fields: list[tuple[str, str]]  # (lower-case name, value), in order, repeated as sent
    body: bytes
    raw_head: bytes = b""

    def header(self, name: str) -> str | None:
        """The value of ``name``; asserts that the field appears at most once."""
        values = self.headers(name)
        assert len(values) <= 1, (name, self.fields)
        return values[0] if values else None

    def headers(self, name: str) -> list[str]:
        return [v for n, v in self.fields if n == name.lower()]

    @property
    def text(self) -> str:
        return self.body.decode("utf-8")

    def json(self) -> Any:
        return json.loads(self.body)

    @property
    def packets(self) -> list[str]:
        return self.text.split(RS)

    @property
    def closes(self) -> bool:
        return "close" in (self.header("connection") or "").lower()


class PeerClosed(Exception):
    """The server closed the connection before a complete answer."""


class HttpConn:
    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self.buffer = b""
        self.eof = False

    @classmethod
    async def open(cls, port: int) -> HttpConn:
        return cls(await trio.open_tcp_stream("127.0.0.1", port))

    async def send(self, data: bytes) -> None:
        await self.stream.send_all(data)

    async def _fill(self) -> bool:
        if self.eof:
            return False
        try:
            data = await self.stream.receive_some(65536)
        except (trio.BrokenResourceError, trio.ClosedResourceError):
            data = b""
        if not data:
            self.eof = True
            return False
        self.buffer += data
        return True

    async def read_response(self, timeout: float = TIMEOUT) -> Response:
        with trio.fail_after(timeout):
            while b"\r\n\r\n" not in self.buffer:
                if not await self._fill():
                    raise PeerClosed(self.buffer)
            head, self.buffer = self.buffer.split(b"\r\n\r\n", 1)
            lines = head.decode("latin-1").split("\r\n")
            version, status, reason = [*lines[0].split(" ", 2), ""][:3]
            assert version == "HTTP/1.1", lines[0]
            fields = []
            for line in lines[1:]:
                name, _, value = line.partition(":")
                fields.append((name.strip().lower(), value.strip()))
            lengths = [v for n, v in fields if n == "content-length"]
            if lengths:
                length = int(lengths[0])
                while len(self.buffer) < length:
                    if not await self._fill():
                        raise PeerClosed(head + b"\r\n\r\n" + self.buffer)
                body, self.buffer = self.buffer[:length], self.buffer[length:]
            elif int(status) in (101, 204, 304):
                body = b""
            else:
                while await self._fill():
                    pass
                body, self.buffer = self.buffer, b""
        return Response(int(status), reason, fields, body, head)

    async def request(self, method: str, target: str, headers: Iterable[tuple[str, str]] = (),
                      body: bytes | None = None, timeout: float = TIMEOUT) -> Response:
        await self.send(build_request(method, target, headers, body))
        return await self.read_response(timeout)

    async def closed_by_peer(self, timeout: float = TIMEOUT) -> bool:
        """Whether the server closes the connection within ``timeout`` (nothing else
        may arrive meanwhile)."""
        with trio.move_on_after(timeout):
            while await self._fill():
                pass
            assert self.buffer == b"", self.buffer
            return True
        return False

    async def aclose(self) -> None:
        with trio.move_on_after(1):
            await self.stream.aclose()


def build_request(method: str, target: str, headers: Iterable[tuple[str, str]] = (),
                  body: bytes | None = None) -> bytes:
    lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{name}: {value}" for name, value in headers]
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (body or b"")


def eio_target(sid: str | None = None, transport: str = "polling", eio: str | None = "4",
               extra: str = "") -> str:
    params = []
    if eio is not None:
        params.append(f"EIO={eio}")
    if transport is not None:
        params.append(f"transport={transport}")
    if sid is not None:
        params.append(f"sid={sid}")
    query = "&".join(params) + extra
    return SIO_PATH + ("?" + query if query else "")


async def one_request(port: int, method: str, target: str,
                      headers: Iterable[tuple[str, str]] = (), body: bytes | None = None,
                      timeout: float = TIMEOUT) -> Response:
    """One request on a fresh connection (closed afterwards)."""
    conn = await HttpConn.open(port)
    try:
        return await conn.request(method, target, headers, body, timeout)
    finally:
        await conn.aclose()


def event_packet(event: str, data: Any = None, ack: int | None = None) -> str:
    args: list[Any] = [event] if data is None else [event, data]
    return "42" + ("" if ack is None else str(ack)) + json.dumps(args, separators=(",", ":"))


def parse_event(packet: str) -> tuple[str, Any] | None:
    """(event, data) of a server ``42[...]`` packet, else None."""
    if not packet.startswith("42["):
        return None
    args = json.loads(packet[2:])
    return args[0], (args[1] if len(args) > 1 else None)


def parse_ack(packet: str) -> tuple[int, Any] | None:
    """(ack id, result) of a server ``43<id>[...]`` packet, else None."""
    if not packet.startswith("43"):
        return None
    digits = ""
    for ch in packet[2:]:
        if not ch.isdigit():
            break
        digits += ch
    return int(digits), json.loads(packet[2 + len(digits):])[0]


class Eio:
    """An Engine.IO polling session, request by request."""

    def __init__(self, port: int, origin: str | None = None) -> None:
        self.port = port
        self.origin = origin
        self.sid: str | None = None
        self.open: dict[str, Any] = {}

    def _headers(self, extra: Iterable[tuple[str, str]] = ()) -> list[tuple[str, str]]:
        headers = [("Origin", self.origin)] if self.origin else []
        return [*headers, *extra]

    async def handshake(self, conn: HttpConn | None = None) -> Response:
        target = eio_target()
        if conn is None:
            response = await one_request(self.port, "GET", target, self._headers())
        else:
            response = await conn.request("GET", target, self._headers())
        assert response.status == 200, response
        assert response.body[:1] == b"0", response.body
        self.open = json.loads(response.body[1:])
        self.sid = self.open["sid"]
        return response

    async def get(self, conn: HttpConn | None = None, timeout: float = TIMEOUT) -> Response:
        target = eio_target(self.sid)
        if conn is None:
            return await one_request(self.port, "GET", target, self._headers(), timeout=timeout)
        return await conn.request("GET", target, self._headers(), timeout=timeout)

    async def get_packets(self, conn: HttpConn | None = None, timeout: float = TIMEOUT
                          ) -> list[str]:
        response = await self.get(conn, timeout)
        assert response.status == 200, (response, response.body)
        assert response.header("content-type") == "text/plain; charset=UTF-8", response
        return response.packets

    async def post(self, *packets: str, conn: HttpConn | None = None, body: bytes | None = None,
                   timeout: float = TIMEOUT) -> Response:
        data = RS.join(packets).encode("utf-8") if body is None else body
        headers = self._headers([("Content-Type", "text/plain;charset=UTF-8")])
        target = eio_target(self.sid)
        if conn is None:
            return await one_request(self.port, "POST", target, headers, data, timeout)
        return await conn.request("POST", target, headers, data, timeout)

    async def post_ok(self, *packets: str, conn: HttpConn | None = None) -> None:
        response = await self.post(*packets, conn=conn)
        assert (response.status, response.body) == (200, b"ok"), (response, response.body)


@dataclass
class Received:
    packets: list[tuple[str, str]] = field(default_factory=list)  # (transport, packet)
    changed: trio.Event = field(default_factory=trio.Event)

    def add(self, transport: str, packet: str) -> None:
        self.packets.append((transport, packet))
        self.changed.set()
        self.changed = trio.Event()


class Sio:
    """A Socket.IO client over an ``Eio`` polling session, with a background poller.

    Every packet received is recorded as ``(transport, packet)``. Pings (``2``) are
    answered by a ``POST`` of ``3`` (unless ``answer_pings`` is off). The poller stops
    when a GET is refused, when it gets ``1`` or a noop after ``pause()``.
    """

    def __init__(self, port: int, origin: str | None = None) -> None:
        self.eio = Eio(port, origin)
        self.received = Received()
        self.answer_pings = True
        self.polling = False
        self.refused: Response | None = None
        self._pause = False
        self._consumed: set[int] = set()
        self._ack = 0
        self.stopped = trio.Event()

    @property
    def sid(self) -> str:
        assert self.eio.sid is not None
        return self.eio.sid

    async def open(self, nursery: trio.Nursery, *, poll: bool = True) -> Sio:
        await self.eio.handshake()
        if poll:
            self.start(nursery)
        return self

    def start(self, nursery: trio.Nursery) -> None:
        self.polling = True
        self.stopped = trio.Event()
        nursery.start_soon(self._poller)

    def pause(self) -> None:
        """Stop polling after the pending GET returns (as an upgrading client does)."""
        self._pause = True

    async def _poller(self) -> None:
        try:
            while True:
                response = await self.eio.get(timeout=60)
                if response.status != 200:
                    self.refused = response
                    return
                ended = False
                for packet in response.packets:
                    self.received.add("polling", packet)
                    if packet == "2" and self.answer_pings:
                        await self.eio.post_ok("3")
                    if packet == "1":
                        ended = True
                if ended or self._pause:
                    return
        finally:
            self.polling = False
            self.stopped.set()

    async def connect(self) -> str:
        await self.eio.post_ok("40")
        packet = await self.next(lambda p: p.startswith("40"))
        return str(json.loads(packet[2:])["sid"])

    async def next(self, match: Callable[[str], bool], timeout: float = TIMEOUT) -> str:
        """The first packet received that matches and that no earlier ``next`` returned."""
        with trio.fail_after(timeout):
            while True:
                packets = self.received.packets
                for i in range(len(packets)):
                    if i not in self._consumed and match(packets[i][1]):
                        self._consumed.add(i)
                        return packets[i][1]
                await self.received.changed.wait()

    async def next_event(self, event: str, timeout: float = TIMEOUT) -> Any:
        packet = await self.next(lambda p: (parse_event(p) or ("",))[0] == event, timeout)
        parsed = parse_event(packet)
        assert parsed is not None
        return parsed[1]

    async def emit(self, event: str, data: Any = None, *, ack: bool = False) -> int | None:
        ack_id = None
        if ack:
            self._ack += 1
            ack_id = self._ack
        await self.eio.post_ok(event_packet(event, data, ack_id))
        return ack_id

    async def call(self, event: str, data: Any = None, timeout: float = TIMEOUT) -> Any:
        """Emit with an ack id; the ack's result."""
        ack_id = await self.emit(event, data, ack=True)
        packet = await self.next(lambda p: (parse_ack(p) or (None,))[0] == ack_id, timeout)
        parsed = parse_ack(packet)
        assert parsed is not None
        return parsed[1]

    def events(self, transport: str | None = None) -> list[tuple[str, Any]]:
        out = []
        for via, packet in self.received.packets:
            parsed = parse_event(packet)
            if parsed is not None and (transport is None or via == transport):
                out.append(parsed)
        return out

    def raw(self) -> list[str]:
        return [p for _, p in self.received.packets]


async def wait_until(predicate: Callable[[], bool], timeout: float = TIMEOUT,
                     step: float = 0.01) -> None:
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(step)

