"""Engine.IO long-polling without sticky sessions (§3.2 "Across nodes").

A polling session lives on the node that answered its handshake, which registers its sid
in Redis (``kv:sio:{sid}``). A ``GET`` or ``POST`` for it that reaches another node — a
load balancer may send every request elsewhere — is forwarded to the session's node
(``HttpForward``), served there exactly as a local request (the same code, with an HTTP
connection that only captures the answer), and the answer travels back (``HttpAnswer``)
to be written to the client. A long-poll's packets count as delivered only once the
client's node says it wrote them (``HttpAck``); otherwise they go out on the next poll.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import trio

from relay.backplane.redis import BackplaneUnavailable

from .context import ClusterContext
from .wire import HttpAck, HttpAnswer, HttpForward

log = logging.getLogger("relay.cluster")

ANSWER_TIMEOUT = 60.0  # a forwarded long-poll is answered within pingInterval normally
ACK_TIMEOUT = 10.0
#: The request header fields the session's node needs to answer as if reached directly.
FORWARDED_FIELDS = ("origin", "access-control-request-headers")

Serve = Callable[[Any, Any, str], Awaitable[bool]]


class CapturedHttp:
    """The ``HttpConnection`` a forwarded request is served with: it captures the answer,
    and reports it written once the client's node says so (``HttpAck``)."""

    def __init__(self, body: bytes, acks: trio.MemoryReceiveChannel[bool]) -> None:
        self._body = body
        self._acks = acks
        self.stream: Any = None  # no client socket here (the client's node watches it)
        self.answer: tuple[int, list[tuple[str, str]], bytes] | None = None
        self.written = trio.Event()
        self.keep_alive = True

    async def body(self, limit: int) -> bytes | None:
        return self._body  # (the client's node refused bodies over the limit with 413)

    async def respond(self, status: int, headers: Sequence[tuple[str, str]], body: bytes, *,
                      close: bool = False, head: bool = False) -> bool:
        self.answer = (status, list(headers), body)
        self.written.set()
        with trio.move_on_after(ACK_TIMEOUT):
            return await self._acks.receive()
        return False


class RemoteRequest:
    """What ``relay.server.polling`` reads of a request."""

    def __init__(self, msg: HttpForward) -> None:
        self.method = msg.method
        self.query = msg.query
        self.headers = dict(msg.headers)


class PollingForwarding:
    def __init__(self, ctx: ClusterContext, serve: Serve) -> None:
        self.ctx = ctx
        self._serve = serve
        self._waits: dict[int, trio.MemorySendChannel[HttpAnswer | None]] = {}
        self._acks: dict[tuple[str, int], trio.MemorySendChannel[bool]] = {}

    # -- the session's node ----------------------------------------------------------------
    async def register(self, sid: str) -> None:
        await self.ctx.bp.kv_set(f"sio:{sid}", self.ctx.node_id.encode())

    async def forget(self, sid: str) -> None:
        try:
            await self.ctx.bp.kv_delete(f"sio:{sid}")
        except BackplaneUnavailable:
            pass  # the key then names a node that answers "unknown" for it

    async def serve_remote(self, msg: HttpForward) -> None:
        """Serve a request forwarded by the client's node and send the answer back."""
        ack_send, ack_recv = trio.open_memory_channel[bool](1)
        http = CapturedHttp(msg.body, ack_recv)
        self._acks[(msg.node, msg.wait)] = ack_send
        try:
            async with trio.open_nursery() as nursery:

                async def answer() -> None:
                    await http.written.wait()
                    assert http.answer is not None
                    status, headers, body = http.answer
                    self.ctx.outboxes.send(msg.node, HttpAnswer(msg.wait, status, headers, body))

                nursery.start_soon(answer)
                await self._serve(http, RemoteRequest(msg), msg.ip)
        finally:
            self._acks.pop((msg.node, msg.wait), None)

    def acked(self, node: str, msg: HttpAck) -> None:
        channel = self._acks.get((node, msg.wait))
        if channel is not None:
            try:
                channel.send_nowait(msg.written)
            except trio.WouldBlock:
                pass

    # -- the client's node -------------------------------------------------------------------
    async def session_node(self, sid: str) -> str | None:
        """The node holding session ``sid``, if it is another live node."""
        try:
            found = await self.ctx.bp.kv_get(f"sio:{sid}")
            if found is None:
                return None
            node = found.decode(errors="replace")
            if node != self.ctx.node_id and await self.ctx.bp.is_alive(node):
                return node
        except BackplaneUnavailable:
            pass
        return None

    async def forward(self, node: str, request: Any, body: bytes, ip: str,
                      write: Callable[[int, list[tuple[str, str]], bytes], Awaitable[bool]]
                      ) -> bool:
        """Have ``node`` serve ``request``; write its answer with ``write``. False when no
        answer came (the caller answers as for an unknown session)."""
        wait = self.ctx.wait_id()
        send, recv = trio.open_memory_channel[HttpAnswer | None](1)
        self._waits[wait] = send
        headers = [(name, request.headers[name]) for name in FORWARDED_FIELDS
                   if name in request.headers]
        try:
            if not self.ctx.outboxes.send(node, HttpForward(
                    self.ctx.node_id, wait, request.method, request.query, headers, body, ip)):
                return False
            with trio.move_on_after(ANSWER_TIMEOUT):
                answer = await recv.receive()
                if answer is None:
                    return False
                written = await write(answer.status, answer.headers, answer.body)
                self.ctx.outboxes.send(node, HttpAck(self.ctx.node_id, wait, written))
                return True
            return False
        finally:
            self._waits.pop(wait, None)

    def answered(self, msg: HttpAnswer | None, wait: int) -> None:
        waiter = self._waits.get(wait)
        if waiter is not None:
            try:
                waiter.send_nowait(msg)
            except trio.WouldBlock:
                pass

