"""Engine.IO v4 long-polling client for the load generator (issue 16, protocol §3.2).

A ``PollingClient`` is a ``bench.loadgen.Client`` whose Engine.IO packets travel over
HTTP/1.1 long-polling instead of a WebSocket, on raw asyncio (uvloop) protocols like the
WebSocket clients, so the workloads drive it through the very same interface (``emit``,
``call``, ``on_event``, ``waiters``, ``start_counting``) and it talks to both servers the
same way. As a browser does, each client keeps two persistent keep-alive connections:

- the **GET connection** carries the handshake (``GET /socket.io/?EIO=4&transport=polling``,
  answered by the open packet ``0{"sid":…}``) and then one long-poll after another: as soon
  as an answer arrives its ``\\x1e``-separated packets are handled and the next ``GET`` goes
  out;
- the **POST connection** carries what the client sends. Packets queued in the same turn of
  the event loop go out as one ``POST`` body joined by ``\\x1e``; while a ``POST`` is in flight
  new packets wait and all go out in the next one as soon as its ``ok`` arrives (the
  ``writeBuffer``/``drain`` behaviour of engine.io-client).

Like a browser, a client opens a connection anew when the server has closed it while idle
(uvicorn closes keep-alive connections after 5 s without a request, the relay after 60 s)
or announced ``Connection: close`` (``Channel``); these reconnections are counted.

Pings (``2``) are answered with a ``POST`` of ``3``; ``40`` is posted right after the
handshake and the client is ready on the server's ``40{…}``. Events are built by the same
``Framing`` as the WebSocket clients' (a WebSocket frame with the zero mask key); ``send``
takes the frame's payload — the Engine.IO packet — and queues it, so no workload code knows
the transport. Requests carry no ``t`` cache-buster (both servers ignore it), no cookies and
no ``Accept-Encoding`` (so python-engineio does not gzip its answers; the relay never does).

Answers may come with ``Content-Length`` (the relay) or ``Transfer-Encoding: chunked``
(uvicorn); both are parsed. In counting mode (W2) an answer made only of identical packets
of known length is counted by its length, else packet by packet.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any, cast

import msgspec

from .loadgen import Client
from .wire import SOCKETIO

RS = b"\x1e"
PING = b"2"
PONG = b"3"
CONNECT = b"40"
CLOSE = b"1"
NOOP = b"6"
PATH = b"/socket.io/?EIO=4&transport=polling"


def frame_payload(frame: bytes) -> bytes:
    """The payload of a client WebSocket frame built by ``bench.wire.client_frame``
    (zero mask key, so the payload is stored unchanged after the 4 key bytes)."""
    n = frame[1] & 0x7F
    return frame[6:] if n < 126 else frame[8:] if n == 126 else frame[14:]


class HttpConn(asyncio.Protocol):
    """One keep-alive HTTP/1.1 client connection of a ``Channel``; one request at a time.

    Every complete answer (``Content-Length`` or chunked) goes to ``channel.answered``; the
    connection's end to ``channel.lost``.
    """

    __slots__ = ("_buf", "_chunked", "_close", "_need", "_parts", "_pos", "_start", "_status",
                 "answers", "channel", "got_bytes", "transport")

    def __init__(self, channel: Channel) -> None:
        self.channel = channel
        self.transport: asyncio.Transport | None = None
        self.answers = 0  # complete answers received on this connection
        self.got_bytes = False  # bytes of the current answer have arrived
        self._buf = b""
        self._need = -1  # end of the current body in _buf; -1: waiting for a head
        self._start = 0
        self._status = 0
        self._close = False
        self._chunked = False
        self._pos = 0
        self._parts: list[bytes] = []

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self.channel.lost(self)

    @property
    def alive(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    def write(self, data: bytes) -> None:
        self.got_bytes = False
        if self.transport is not None:
            self.transport.write(data)

    def data_received(self, data: bytes) -> None:
        self.got_bytes = True
        buf = self._buf + data if self._buf else data
        while True:
            if self._need < 0:
                end = buf.find(b"\r\n\r\n")
                if end < 0:
                    break
                self._status = int(buf[9:12])
                head = buf[:end].lower()
                start = end + 4
                self._close = b"\r\nconnection: close" in head
                i = head.find(b"\r\ncontent-length:")
                if i >= 0:
                    j = head.find(b"\r\n", i + 2)
                    self._need = start + int(head[i + 17:j if j >= 0 else end])
                    self._chunked = False
                elif b"chunked" in head:
                    self._need = start  # grows chunk by chunk
                    self._chunked = True
                    self._pos = start
                    self._parts = []
                else:
                    self._need = start  # no body (e.g. 204)
                    self._chunked = False
                self._start = start
            if self._chunked:
                done = False
                while True:
                    k = buf.find(b"\r\n", self._pos)
                    if k < 0:
                        break
                    size = int(buf[self._pos:k].split(b";", 1)[0], 16)
                    stop = k + 2 + size + 2
                    if stop > len(buf):
                        break
                    if size == 0:
                        done = True
                        self._need = stop  # (no trailers: servers here send none)
                        break
                    self._parts.append(buf[k + 2:k + 2 + size])
                    self._pos = stop
                if not done:
                    break
                body = self._parts[0] if len(self._parts) == 1 else b"".join(self._parts)
                self._parts = []
            else:
                if len(buf) < self._need:
                    break
                body = buf[self._start:self._need]
            buf = buf[self._need:]
            self._need = -1
            self.answers += 1
            self.channel.answered(self, self._status, body, self._close)
        self._buf = buf


class Channel:
    """The connection of one kind of request (GETs or POSTs) of a client, as a browser
    keeps it: kept alive between requests, and opened anew when the server closed it
    while idle (uvicorn closes a keep-alive connection after 5 s without a request) or
    after an answer with ``Connection: close``. A request whose reused connection closes
    before any byte of the answer is sent again once on a new connection (what browsers
    do for that case); any other loss with a request outstanding ends the client."""

    __slots__ = ("client", "conn", "on_answer", "pending", "reopens", "retried")

    def __init__(self, client: PollingClient, on_answer: Callable[[int, bytes], None]) -> None:
        self.client = client
        self.on_answer = on_answer
        self.conn: HttpConn | None = None
        self.pending: bytes | None = None  # the request waiting for its answer
        self.retried = False
        self.reopens = 0  # connections opened after the first

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        conn = HttpConn(self)
        await loop.create_connection(lambda: conn, self.client.host, self.client.port)
        self.conn = conn

    def request(self, data: bytes) -> None:
        self.pending = data
        self.retried = False
        conn = self.conn
        if conn is not None and conn.alive:
            conn.write(data)
        else:
            self._reopen()

    def _reopen(self) -> None:
        self.conn = None
        self.reopens += 1
        asyncio.get_running_loop().create_task(self._connect())

    async def _connect(self) -> None:
        try:
            await self.open()
        except OSError as exc:
            self.client._end(ConnectionError(f"could not reconnect: {exc!r}"))
            return
        if self.client._ended:
            self.close(abort=True)
        elif self.pending is not None and self.conn is not None:
            self.conn.write(self.pending)

    def answered(self, conn: HttpConn, status: int, body: bytes, close: bool) -> None:
        self.pending = None
        if close:  # the server closes it after this answer: the next request opens anew
            self.conn = None
            if conn.transport is not None:
                conn.transport.close()
        self.on_answer(status, body)

    def lost(self, conn: HttpConn) -> None:
        if conn is not self.conn:
            return  # (one replaced after a Connection: close)
        self.conn = None
        if self.pending is None or self.client._ended:
            return  # idle: the next request opens a new connection
        if conn.answers and not conn.got_bytes and not self.retried:
            self.retried = True
            self._reopen()
            return
        self.client._end(ConnectionError("connection lost with a request outstanding"))

    def close(self, abort: bool = False) -> None:
        conn, self.conn = self.conn, None
        if conn is not None and conn.transport is not None:
            if abort:
                conn.transport.abort()
            else:
                conn.transport.close()


class PollingClient(Client):
    """A Socket.IO client on Engine.IO long-polling (see the module docstring)."""

    polls = True

    def __init__(self, host: str, port: int) -> None:
        super().__init__(SOCKETIO, host, port)
        self.upgraded = True  # (no HTTP upgrade here: Client's WebSocket state, unused)
        self.sid = b""
        self._hostline = f"Host: {host}:{port}\r\n".encode()
        self._get_req = b""
        self._post_head = b""
        self._get = Channel(self, self._on_get)
        self._post = Channel(self, self._on_post)
        self._out: list[bytes] = []
        self._posting = False
        self._flush_soon = False
        self._ended = False
        self._handshaken = False
        self.polls_answered = 0  # long-poll answers received
        self.posts = 0  # POSTs sent
        self.packet_len = 0  # counting mode: the length of every counted packet

    async def open(self, timeout: float) -> PollingClient:
        async with asyncio.timeout(timeout):
            await self._get.open()
            await self._post.open()
            self._get.request(b"GET " + PATH + b" HTTP/1.1\r\n" + self._hostline + b"\r\n")
            await asyncio.shield(self.ready)
        return self

    # -- answers ----------------------------------------------------------------------
    def _on_get(self, status: int, body: bytes) -> None:
        if status != 200:
            self._end(ConnectionError(f"GET answered {status}: {body[:200]!r}"))
            return
        if not self._handshaken:
            self._handshaken = True
            if body[:1] != b"0":
                self._end(ConnectionError(f"no open packet: {body[:200]!r}"))
                return
            self.sid = str(msgspec.json.decode(body[1:])["sid"]).encode()
            query = PATH + b"&sid=" + self.sid
            self._get_req = b"GET " + query + b" HTTP/1.1\r\n" + self._hostline + b"\r\n"
            self._post_head = (b"POST " + query + b" HTTP/1.1\r\n" + self._hostline
                               + b"Content-Type: text/plain;charset=UTF-8\r\nContent-Length: ")
            self._queue(CONNECT)
            self._get.request(self._get_req)
            return
        self.polls_answered += 1
        if self.count_pattern is not None and self._count_body(body):
            pass
        else:
            for packet in body.split(RS):
                if packet == CLOSE:
                    self._end(ConnectionError("the server closed the session"))
                    return
                if packet == NOOP:
                    continue
                if self.count_pattern is not None:
                    if packet == PING:
                        self._queue(PONG)
                    elif packet.startswith(self.count_pattern):
                        self.count += 1
                        if self.on_count is not None:
                            self.on_count()
                else:
                    self._on_message(packet)
        if not self._ended:
            self._get.request(self._get_req)

    def _count_body(self, body: bytes) -> bool:
        """Count an answer made only of counted packets by its length (True), else False."""
        size = self.packet_len + 1
        n, rest = divmod(len(body) + 1, size)
        if rest or not n or not body.startswith(self.count_pattern or b"\0"):
            return False
        if n > 1 and body.find(b"\x1e2\x1e") >= 0:  # (JSON cannot hold a raw \x1e)
            return False
        self.count += n
        if self.on_count is not None:
            self.on_count()
        return True

    def _on_post(self, status: int, body: bytes) -> None:
        self._posting = False
        if status != 200:
            self._end(ConnectionError(f"POST answered {status}: {body[:200]!r}"))
            return
        if self._out:
            self._flush()

    def _end(self, exc: Exception) -> None:
        if self._ended:
            return
        self._ended = True
        self._fail(exc)
        self._get.close()
        self._post.close()
        if not self.closed.done():
            self.closed.set_result(self.close_code)

    # -- sending ----------------------------------------------------------------------
    def _queue(self, packet: bytes) -> None:
        self._out.append(packet)
        if not self._posting and not self._flush_soon:
            self._flush_soon = True
            asyncio.get_running_loop().call_soon(self._flush)

    def _flush(self) -> None:
        self._flush_soon = False
        if self._posting or not self._out or self._ended:
            return
        out, self._out = self._out, []
        body = out[0] if len(out) == 1 else RS.join(out)
        self._posting = True
        self.posts += 1
        self._post.request(self._post_head + str(len(body)).encode() + b"\r\n\r\n" + body)

    def send(self, frame: bytes) -> None:
        """Queue the Engine.IO packet a WebSocket ``frame`` (``bench.wire``) carries."""
        if not self._ended:
            self._queue(frame_payload(frame))

    # -- Client interface -------------------------------------------------------------
    @property
    def alive(self) -> bool:
        return not self._ended

    @property
    def reopens(self) -> int:
        """Connections opened again after the server closed an idle one."""
        return self._get.reopens + self._post.reopens

    def start_counting(self, pattern: bytes, on_count: Callable[[], None] | None = None,
                       frame_len: int = 0, already: int = 0) -> None:
        """Count messages starting with ``pattern``; ``frame_len`` is the length of every
        counted packet (0: count packet by packet)."""
        self.count_pattern = pattern
        self.on_count = on_count
        self.packet_len = frame_len or 10**9
        self.count = already

    def abort(self) -> None:
        self._ended = True
        self._get.close(abort=True)
        self._post.close(abort=True)

    def close(self) -> None:
        """Post ``1`` (the Engine.IO close) and drop the long-poll's connection."""
        if self._ended:
            return
        conn = self._post.conn
        if self._post_head and not self._posting and conn is not None and conn.alive:
            conn.write(self._post_head + b"1\r\n\r\n" + CLOSE)
        self._ended = True
        self._get.close()


async def connect_polling(host: str, port: int, timeout: float) -> PollingClient:
    client = PollingClient(host, port)
    try:
        return await client.open(timeout)
    except BaseException:
        client.abort()
        raise


def stats(clients: list[Any]) -> dict[str, int]:
    """Long-poll answers and POSTs of the polling clients among ``clients``."""
    polls = posts = reopens = 0
    for c in clients:
        if isinstance(c, PollingClient):
            polls += c.polls_answered
            posts += c.posts
            reopens += c.reopens
    return {"poll_answers": polls, "posts": posts, "reconnects": reopens}

