"""Helpers for ``tests/test_faults.py``: raw sockets, TCP resets, a wire-level WebSocket
client that reads only when asked, plain HTTP exchanges and the canary classroom.

Everything talks to 127.0.0.1. The canary connects from another loopback address
(``CANARY_IP``) so that the attacker's per-IP limits (connections, rooms, failed joins)
never touch it: whatever it sees is what an unrelated client of the same server sees.
"""

from __future__ import annotations

import base64
import itertools
import json
import logging
import os
import secrets
import socket as pysocket
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import trio
from trio_websocket import wrap_client_stream
from wsproto.connection import Connection, ConnectionType
from wsproto.events import CloseConnection, Ping, Pong, TextMessage

from tests.support import Client, Relay

#: The canary's source address (any 127/8 address reaches a socket bound to 127.0.0.1).
CANARY_IP = "127.0.0.2"
#: A valid Sec-WebSocket-Key (base64 of 16 bytes).
KEY = "dGhlIHNhbXBsZSBub25jZQ=="
TIMEOUT = 5.0

CONTINUATION, TEXT, BINARY, CLOSE, PING, PONG = 0x0, 0x1, 0x2, 0x8, 0x9, 0xA


# -- process -----------------------------------------------------------------------------
def rss_bytes() -> int:
    """Resident set size of this process (the server runs in it), from /proc."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def server_errors(caplog: Any) -> list[logging.LogRecord]:
    """ERROR records of the server's loggers: each is an unexpected failure (§1.1)."""
    return [r for r in caplog.records if r.levelno >= logging.ERROR
            and r.name.split(".")[0] in ("relay", "signaling", "stats_web", "hypercorn",
                                         "quart", "trio")]


async def wait_for(predicate: Callable[[], bool], timeout: float = TIMEOUT,
                   what: str = "condition") -> None:
    """Poll ``predicate`` until it holds (a bounded wait for a state, never a proof)."""
    with trio.move_on_after(timeout):
        while not predicate():
            await trio.sleep(0.01)
        return
    raise AssertionError(f"timed out waiting for {what}")


# -- frames and heads -------------------------------------------------------------------
def masked(opcode: int, payload: bytes = b"", *, fin: bool = True,
           mask: bytes = b"\x37\xfa\x21\x3d") -> bytes:
    """One masked client frame (RFC 6455 §5.2)."""
    head = bytearray([(0x80 if fin else 0) | opcode])
    n = len(payload)
    if n < 126:
        head.append(0x80 | n)
    elif n < 0x10000:
        head.append(0x80 | 126)
        head += n.to_bytes(2, "big")
    else:
        head.append(0x80 | 127)
        head += n.to_bytes(8, "big")
    stream = (mask * (n // 4 + 1))[:n]
    body = (int.from_bytes(payload, "little") ^ int.from_bytes(stream, "little")).to_bytes(
        n, "little") if n else b""
    return bytes(head) + mask + body


def text(payload: str | bytes, *, fin: bool = True) -> bytes:
    return masked(TEXT, payload.encode() if isinstance(payload, str) else payload, fin=fin)


def upgrade_head(path: str = "/observer", *, method: str = "GET", version: str = "1.1",
                 key: str | bytes | None = KEY, ws_version: str = "13",
                 extra: bytes | str = b"") -> bytes:
    """An upgrade request head; ``key=None`` leaves the key out."""
    lines = [f"{method} {path} HTTP/{version}".encode(), b"Host: 127.0.0.1",
             b"Upgrade: websocket", b"Connection: Upgrade"]
    if key is not None:
        lines.append(b"Sec-WebSocket-Key: " + (key if isinstance(key, bytes) else key.encode()))
    lines.append(f"Sec-WebSocket-Version: {ws_version}".encode())
    head = b"\r\n".join(lines) + b"\r\n"
    head += extra.encode("latin-1") if isinstance(extra, str) else extra
    return head + b"\r\n"


def random_key() -> str:
    return base64.b64encode(os.urandom(16)).decode()


# -- raw sockets ---------------------------------------------------------------------------
async def tcp(port: int, *, src: str | None = None, rcvbuf: int | None = None
              ) -> trio.socket.SocketType:
    sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_STREAM)
    if rcvbuf is not None:
        sock.setsockopt(pysocket.SOL_SOCKET, pysocket.SO_RCVBUF, rcvbuf)
    if src is not None:
        await sock.bind((src, 0))
    await sock.connect(("127.0.0.1", port))
    return sock


def reset(sock: trio.socket.SocketType) -> None:
    """Close with SO_LINGER 0: the kernel sends RST instead of FIN, dropping unsent data."""
    sock.setsockopt(pysocket.SOL_SOCKET, pysocket.SO_LINGER, struct.pack("ii", 1, 0))
    sock.close()


async def send_all(sock: trio.socket.SocketType, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = await sock.send(view)
        view = view[n:]


async def read_head(sock: trio.socket.SocketType, timeout: float = TIMEOUT
                    ) -> tuple[bytes, bytes]:
    """Read up to the end of a response head: (head, bytes that came after it)."""
    data = b""
    with trio.fail_after(timeout):
        while b"\r\n\r\n" not in data:
            chunk = await sock.recv(65536)
            assert chunk, f"closed before the end of the head: {data!r}"
            data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    return head + b"\r\n\r\n", rest


async def read_to_eof(sock: trio.socket.SocketType, timeout: float = TIMEOUT) -> bytes:
    """Everything until the server closes (fails when it does not within ``timeout``)."""
    data = b""
    with trio.fail_after(timeout):
        while True:
            try:
                chunk = await sock.recv(65536)
            except ConnectionResetError:
                return data
            if not chunk:
                return data
            data += chunk


@dataclass
class HttpAnswer:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def parse_answer(data: bytes) -> HttpAnswer:
    head, sep, body = data.partition(b"\r\n\r\n")
    assert sep, f"no complete answer: {data[:200]!r}"
    status_line, *lines = head.decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return HttpAnswer(int(status_line.split(" ")[1]), headers, body)


async def exchange(port: int, request: bytes | Sequence[bytes], *, src: str | None = None,
                   timeout: float = TIMEOUT) -> HttpAnswer:
    """Send a request (in one write, or piece by piece) and read the answer up to EOF.

    The server must close after answering (it answers ``Connection: close`` to all of
    these); a 101 is returned as soon as its head is complete.
    """
    sock = await tcp(port, src=src)
    try:
        pieces = [request] if isinstance(request, bytes) else list(request)
        for piece in pieces:
            try:
                await send_all(sock, piece)
            except (BrokenPipeError, ConnectionResetError):
                break  # the server answered early and closed
            if len(pieces) > 1:
                await trio.sleep(0)
        data = b""
        with trio.fail_after(timeout):
            while True:
                try:
                    chunk = await sock.recv(65536)
                except ConnectionResetError:
                    break
                if not chunk:
                    break
                data += chunk
                if data.startswith(b"HTTP/1.1 101 ") and b"\r\n\r\n" in data:
                    break
        return parse_answer(data)
    finally:
        sock.close()


async def http_get(port: int, path: str, *, src: str | None = None,
                   timeout: float = TIMEOUT) -> HttpAnswer:
    request = (f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n\r\n"
               ).encode("latin-1")
    return await exchange(port, request, src=src, timeout=timeout)


# -- a WebSocket client on the wire ----------------------------------------------------------
class ProtocolViolation(AssertionError):
    """The server's byte stream is not valid RFC 6455 (e.g. a frame inside a frame)."""


class Wire:
    """A WebSocket client that reads only when asked and keeps every text message as text.

    Incoming bytes are parsed by wsproto, so a server frame that breaks RFC 6455 (a close
    frame written inside another frame, a bad length) raises ``ProtocolViolation``.
    Outgoing frames are written raw (``masked``), so any malformed frame can be sent.
    """

    def __init__(self, sock: trio.socket.SocketType, leftover: bytes) -> None:
        self.sock = sock
        self.ws = Connection(ConnectionType.CLIENT)
        self.close_code: int | None = None
        self.eof = False
        self.pings = 0
        self.pongs = 0
        self.texts: list[str] = []
        self._parts: list[str] = []
        if leftover:
            self.ws.receive_data(leftover)

    @classmethod
    async def connect(cls, port: int, path: str = "/observer", *, rcvbuf: int | None = None,
                      src: str | None = None) -> Wire:
        sock = await tcp(port, src=src, rcvbuf=rcvbuf)
        await send_all(sock, upgrade_head(path, key=random_key()))
        head, rest = await read_head(sock)
        assert head.startswith(b"HTTP/1.1 101 "), head
        return cls(sock, rest)

    async def send(self, data: bytes) -> None:
        await send_all(self.sock, data)

    async def send_text(self, payload: str | bytes) -> None:
        await self.send(text(payload))

    async def send_event(self, event: str, data: Any = None, ref: Any = None) -> None:
        frame: dict[str, Any] = {"event": event}
        if data is not None:
            frame["data"] = data
        if ref is not None:
            frame["ref"] = ref
        await self.send_text(json.dumps(frame))

    def _events(self) -> list[str]:
        """Parse what is buffered; returns the text messages completed."""
        done: list[str] = []
        try:
            for event in self.ws.events():
                if isinstance(event, TextMessage):
                    self._parts.append(event.data)
                    if event.message_finished:
                        done.append("".join(self._parts))
                        self._parts = []
                elif isinstance(event, CloseConnection):
                    self.close_code = event.code
                elif isinstance(event, Ping):
                    self.pings += 1
                elif isinstance(event, Pong):
                    self.pongs += 1
        except Exception as exc:  # wsproto's RemoteProtocolError and friends
            raise ProtocolViolation(f"the server broke RFC 6455: {exc!r}") from exc
        self.texts += done
        return done

    async def read(self, timeout: float = TIMEOUT, *, count: int | None = None,
                   until_closed: bool = False, bufsize: int = 65536) -> list[str]:
        """Text messages: ``count`` of them, or all until the close frame (or EOF), or
        whatever arrives within ``timeout`` when neither is asked."""
        out: list[str] = []
        with trio.move_on_after(timeout) as scope:
            while True:
                out += self._events()
                if count is not None and len(out) >= count:
                    return out
                if self.close_code is not None or self.eof:
                    return out
                try:
                    data = await self.sock.recv(bufsize)
                except ConnectionResetError:
                    data = b""
                if not data:
                    self.eof = True
                    self.ws.receive_data(None)
                    continue
                self.ws.receive_data(data)
        if (until_closed or count is not None) and scope.cancelled_caught:
            raise AssertionError(
                f"timed out: {len(out)} messages, close {self.close_code}, last "
                f"{[t[:80] for t in out[-3:]]}")
        return out

    async def read_json(self, count: int, timeout: float = TIMEOUT) -> list[dict[str, Any]]:
        return [json.loads(t) for t in await self.read(timeout, count=count)]

    async def closed(self, timeout: float = TIMEOUT) -> int | None:
        """Read (and drop) everything until the server's close; returns its code."""
        await self.read(timeout, until_closed=True, bufsize=1 << 20)
        return self.close_code

    def reset(self) -> None:
        reset(self.sock)

    def close(self) -> None:
        self.sock.close()


# -- trio-websocket clients from another address --------------------------------------------
async def client_from(relay: Relay, path: str = "/observer", *, src: str = CANARY_IP,
                      **kw: Any) -> Client:
    """A ``tests.support.Client`` whose TCP connection comes from ``src``."""
    sock = await tcp(relay.server.relay_port, src=src)
    ws = await wrap_client_stream(relay.nursery, trio.SocketStream(sock), "127.0.0.1", path,
                                  **kw)
    return Client(ws)


_markers = itertools.count(1)


class Canary:
    """A host and a student in a room of their own, from ``CANARY_IP``.

    ``check`` is the sentinel of every test: the student sends ``message/to_mentor`` with a
    fresh marker and the host's very next frame must be exactly that message.
    """

    def __init__(self, host: Client, student: Client, room_id: int, stats_key: str) -> None:
        self.host = host
        self.student = student
        self.room_id = room_id
        self.stats_key = stats_key
        self.latencies: list[float] = []

    @classmethod
    async def open(cls, relay: Relay) -> Canary:
        host = await client_from(relay)
        created = (await host.ok("room/create", {"name": "Canary"}))[0]["data"]
        student = await client_from(relay)
        await student.ok("room/join", {"room_id": created["room_id"], "name": "Bird"})
        await host.expect("room/update")
        return cls(host, student, created["room_id"], created["stats_key"])

    async def check(self, timeout: float = TIMEOUT) -> None:
        marker = f"canary-{next(_markers)}-{secrets.token_hex(4)}"
        with trio.fail_after(timeout):
            await self.student.ok("message/to_mentor", {"content": marker})
            frame = await self.host.expect("message/to_mentor", timeout)
        assert frame["data"]["content"] == marker, frame

    async def stream(self, count: int = 20, gap: float = 0.005,
                     timeout: float = 20.0) -> list[float]:
        """``count`` messages (no refs, so the student needs no reading); the host must get
        every one, in order. Returns the latencies (reported, never asserted)."""
        tag = secrets.token_hex(4)
        sent_at: dict[str, float] = {}
        latencies: list[float] = []

        async def send() -> None:
            for i in range(count):
                content = f"stream-{tag}-{i}"
                sent_at[content] = trio.current_time()
                await self.student.send("message/to_mentor", {"content": content})
                await trio.sleep(gap)

        with trio.fail_after(timeout):
            async with trio.open_nursery() as nursery:
                nursery.start_soon(send)
                for i in range(count):
                    frame = await self.host.expect("message/to_mentor", timeout)
                    content = frame["data"]["content"]
                    assert content == f"stream-{tag}-{i}", (i, frame)
                    latencies.append(trio.current_time() - sent_at[content])
        self.latencies += latencies
        return latencies


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))] if ordered else 0.0


async def assert_alive(relay: Relay, canary: Canary) -> None:
    """The server still runs, serves /healthz on both ports, accepts and serves a brand-new
    WebSocket connection, and the canary's room still carries its own traffic."""
    server = relay.server
    assert not server.shutting_down
    for port in (server.relay_port, server.web_port):
        answer = await http_get(port, "/healthz", src=CANARY_IP)
        assert answer.status == 200, answer
        assert answer.json()["status"] == "ok", answer
    newcomer = await client_from(relay)
    await newcomer.fail("message/to_mentor", {"content": "x"}, "not_in_room")
    await newcomer.aclose()
    await canary.check()


# -- Engine.IO long-polling (§3.2) -----------------------------------------------------------
POLL_PATH = "/socket.io/?EIO=4&transport=polling"


def poll_request(method: str, sid: str | None = None, body: bytes = b"",
                 *, length: int | None = None, close: bool = True) -> bytes:
    """A polling request head (and body); ``length`` overrides the Content-Length."""
    target = POLL_PATH + (f"&sid={sid}" if sid else "")
    lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1"]
    if method == "POST":
        lines += ["Content-Type: text/plain;charset=UTF-8",
                  f"Content-Length: {len(body) if length is None else length}"]
    if close:
        lines.append("Connection: close")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


class Poller:
    """An Engine.IO polling session driven with one short HTTP connection per request."""

    def __init__(self, port: int, sid: str) -> None:
        self.port = port
        self.sid = sid

    @classmethod
    async def open(cls, port: int) -> Poller:
        answer = await exchange(port, poll_request("GET"))
        assert answer.status == 200 and answer.body.startswith(b"0{"), answer
        return cls(port, json.loads(answer.body[1:])["sid"])

    async def post(self, *packets: str | bytes) -> HttpAnswer:
        body = b"\x1e".join(p.encode() if isinstance(p, str) else p for p in packets)
        return await exchange(self.port, poll_request("POST", self.sid, body))

    async def get(self, timeout: float = TIMEOUT) -> list[str]:
        """One long-poll; its packets, Engine.IO pings (``2``) left out."""
        answer = await exchange(self.port, poll_request("GET", self.sid), timeout=timeout)
        assert answer.status == 200, answer
        return [p for p in answer.body.decode().split("\x1e") if p != "2"]

    async def get_until(self, want: Callable[[list[str]], bool],
                        timeout: float = TIMEOUT) -> list[str]:
        """Long-poll until the packets received so far satisfy ``want``."""
        got: list[str] = []
        with trio.fail_after(timeout):
            while not want(got):
                got += await self.get(timeout)
        return got
