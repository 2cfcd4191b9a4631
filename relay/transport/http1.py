"""HTTP/1.1 on one TCP connection of the relay port, parsed and written with h11.

The relay port answers a few plain HTTP requests (``/healthz``, refusals) and Engine.IO's
long-polling requests, which come many per connection (keep-alive), and upgrades to
WebSocket. This class reads requests (and bodies) and writes responses through one h11
connection, with every bound the edge needs: a request head of at most 16 KiB however
it arrives (``relay.transport.http`` explains why h11's own limit is not enough), 10 s to
complete a head, ``KEEPALIVE_IDLE`` between requests, a body limit and deadline, and no
pipelining (a request sent before the previous answer is answered with ``Connection:
close``: answering in order is all HTTP/1.1 asks, but nothing a browser does needs it and
it would let one connection queue work without bound).
"""

from __future__ import annotations

from collections.abc import Sequence

import h11
import trio

from .http import (
    HANDSHAKE_TIMEOUT,
    MAX_REQUEST_HEAD,
    READ_SIZE,
    REASONS,
    Refused,
    Request,
    request_of,
)

KEEPALIVE_IDLE = 60.0  # seconds a kept-alive connection may wait for its next request
BODY_TIMEOUT = 10.0


class BodyTooLarge(Exception):
    pass


class HttpConnection:
    def __init__(self, stream: trio.SocketStream, received: bytes = b"") -> None:
        """``received``: bytes already read from ``stream`` (a request head another node
        of this host passed on with the socket), parsed before anything is read."""
        self.stream = stream
        self._h11 = h11.Connection(h11.SERVER, max_incomplete_event_size=MAX_REQUEST_HEAD)
        if received:
            self._h11.receive_data(received)
        self._requests = 0
        self.pipelined = False  # the client sent more than the current request

    async def next_request(self) -> Request | None:
        """The next request head; None when the peer went away, idled or sent garbage
        (garbage is answered 400 first)."""
        h = self._h11
        if self._requests:
            if h.our_state is not h11.DONE or h.their_state is not h11.DONE:
                return None
            h.start_next_cycle()
        timeout = HANDSHAKE_TIMEOUT if not self._requests else KEEPALIVE_IDLE
        self._requests += 1
        with trio.move_on_after(timeout):
            try:
                return await self._head()
            except Refused:
                await self.respond(400, [], b'{"error":"bad request"}', close=True)
        return None

    async def _head(self) -> Request | None:
        h = self._h11
        raw = bytearray(h.trailing_data[0])
        received = len(raw)
        while True:
            try:
                event = h.next_event()
            except (h11.ProtocolError, ValueError):
                raise Refused from None
            if event is h11.NEED_DATA:
                data = await self._read()
                if not data:
                    return None
                received += len(data)
                raw += data
                h.receive_data(data)
                continue
            if not isinstance(event, h11.Request):
                return None
            trailing = bytes(h.trailing_data[0])
            if received - len(trailing) > MAX_REQUEST_HEAD:
                raise Refused
            request = request_of(event, trailing)
            request.raw = bytes(raw[:len(raw) - len(trailing)])
            return request

    async def _read(self) -> bytes:
        try:
            return bytes(await self.stream.receive_some(READ_SIZE))
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            return b""

    async def body(self, limit: int) -> bytes | None:
        """The request's body (``BodyTooLarge`` beyond ``limit``); None when the peer
        went away or was too slow. Also notes a pipelined next request."""
        h = self._h11
        parts: list[bytes] = []
        size = 0
        with trio.move_on_after(BODY_TIMEOUT):
            while True:
                try:
                    event = h.next_event()
                except (h11.ProtocolError, ValueError):
                    return None
                if event is h11.NEED_DATA:
                    data = await self._read()
                    if not data:
                        return None
                    h.receive_data(data)
                    continue
                if isinstance(event, h11.Data):
                    size += len(event.data)
                    if size > limit:
                        raise BodyTooLarge
                    parts.append(bytes(event.data))
                    continue
                if isinstance(event, h11.EndOfMessage):
                    self.pipelined = bool(h.trailing_data[0])
                    return b"".join(parts)
                return None
        return None

    async def respond(self, status: int, headers: Sequence[tuple[str, str]], body: bytes, *,
                      close: bool = False, head: bool = False) -> bool:
        """One complete response; False when it could not be written (the peer is gone)."""
        h = self._h11
        # (RFC 9110 §8.6: no Content-Length in a 204 or 1xx answer)
        length = [] if status == 204 or status < 200 else [("Content-Length", str(len(body)))]
        fields = [*length, ("Cache-Control", "no-store"), *headers]
        complete = self._request_complete()
        if close or self.pipelined or not complete:
            fields.append(("Connection", "close"))
        try:
            data = h.send(h11.Response(status_code=status, headers=fields,
                                       reason=REASONS.get(status, "").encode()))
            if body and not head:
                data += h.send(h11.Data(data=body))
            data += h.send(h11.EndOfMessage())
        except h11.LocalProtocolError:
            data = _fallback(status, fields, body)
        try:
            await self.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            return False
        return True

    def _request_complete(self) -> bool:
        """Take the end of the current request if it is already here (a ``GET`` has no
        body: its end comes with its head); True when the whole request was read. A
        request whose body was not read cannot be followed by another: the answer then
        closes the connection."""
        h = self._h11
        while h.their_state is h11.SEND_BODY:
            try:
                event = h.next_event()
            except (h11.ProtocolError, ValueError):
                return False
            if isinstance(event, h11.EndOfMessage):
                self.pipelined = self.pipelined or bool(h.trailing_data[0])
                break
            if event is h11.NEED_DATA or not isinstance(event, h11.Data):
                return False
            return False  # an unread body: not worth reading to keep the connection
        return h.their_state is h11.DONE

    @property
    def keep_alive(self) -> bool:
        h = self._h11
        return (not self.pipelined and h.our_state is h11.DONE and h.their_state is h11.DONE)

    async def switch(self, headers: Sequence[tuple[str, str]]) -> bytes | None:
        """Answer 101 (the WebSocket upgrade); the bytes the client sent after its head,
        or None when the answer could not be written."""
        h = self._h11
        try:
            data = h.send(h11.InformationalResponse(status_code=101, headers=list(headers),
                                                    reason=b"Switching Protocols"))
        except h11.LocalProtocolError:
            data = _fallback(101, headers, b"", length=False)
        try:
            await self.stream.send_all(data)
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            return None
        return bytes(h.trailing_data[0])


def _fallback(status: int, headers: Sequence[tuple[str, str]], body: bytes, *,
              length: bool = True) -> bytes:
    """A response h11 will not write in its state (e.g. a 400 after a broken request)."""
    lines = [f"HTTP/1.1 {status} {REASONS.get(status, '')}"]
    lines += [f"{name}: {value}" for name, value in headers if length or
              name.lower() != "content-length"]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body
