"""Observer connections (plain and Socket.IO framings): codec in, core out."""

from __future__ import annotations

import math
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

import trio

from relay.codecs.base import BadFrame, CloseRequest, Incoming, ObserverCodec, Pong, Raw, Ref
from relay.core.context import Session
from relay.core.errors import EventError
from relay.core.outgoing import Outgoing

from .connection import WebSocketConnection

if TYPE_CHECKING:
    from relay.server import RelayServer

SIO_CONNECT_DEADLINE = 45.0
RATE_LIMITED = "rate_limited"


class ObserverConnection(WebSocketConnection):
    __slots__ = ("_first", "_limiter", "cid", "codec", "connect_deadline", "remote_owner",
                 "replaced", "session")

    def __init__(self, server: RelayServer, stream: trio.SocketStream, ip: str, trailing: bytes,
                 codec: ObserverCodec) -> None:
        super().__init__(server, stream, ip, trailing)
        self.codec = codec
        self.endpoint = codec.endpoint
        self.session = Session(ip=ip)
        self.replaced = False
        self._limiter = server.new_rate_limiter()
        self.connect_deadline = math.inf
        if getattr(codec, "open_packet", None) is not None:
            # Socket.IO: Engine.IO's own heartbeat and a deadline for the namespace connect.
            self.set_heartbeat(self.config.sio_ping_interval, self.config.sio_ping_timeout)
            self.connect_deadline = trio.current_time() + SIO_CONNECT_DEADLINE
        self.cid = 0  # scale-out: this node's id for the connection
        self.remote_owner: str | None = None  # scale-out: the node that owns our room
        # Scale-out: the joining event of a connection handed over by another node of
        # this host (``relay.handoff``), handled before anything is read.
        self._first: Incoming | None = None

    def adopt(self, event: str, data: Any, ref: Any) -> None:
        """This connection arrives from another node of this host, with its first event."""
        self._first = Incoming(event, data, ref)
        if getattr(self.codec, "connected", False):
            self.connect_deadline = math.inf

    async def _reader(self) -> None:
        if self._first is not None:
            first, self._first = self._first, None
            await self._dispatch([first])
        await super()._reader()

    # -- frames out -----------------------------------------------------------------
    def encode_sequenced(self, out: Outgoing, seq: int) -> bytes:
        self.server.metrics.message_out(self.endpoint, out.event)
        return self.codec.event_frame(out, seq if self.endpoint == "observer" else None)

    def send_event(self, out: Outgoing, after: int | None = None) -> None:
        self.server.metrics.message_out(self.endpoint, out.event)
        self.push(self.codec.event_frame(out, None), after)

    def send_error(self, code: str, message: str, event: str | None, ref: Ref | None) -> None:
        self.server.metrics.error(code)
        self.push(self.codec.error_frame(code, message, event, ref))

    def send_ack(self, ref: Ref, error: EventError | None) -> None:
        self.push(self.codec.ack_frame(ref, error))

    def close_preamble(self, code: int) -> bytes:
        return self.codec.close_preamble(code)

    # -- frames in -------------------------------------------------------------------
    def handle_text(self, text: str) -> Awaitable[None] | None:
        codec = self.codec
        if codec.costs_token(text) and not self._limiter.take(trio.current_time()):
            self._rate_limited(text)
            return None
        items = codec.decode(text)
        cluster = self.server.cluster
        if cluster is not None and any(isinstance(i, Incoming) for i in items):
            return self._dispatch(items)
        self._handle_items(items)
        return None

    async def _dispatch(self, items: list[Any]) -> None:
        """Scale-out: the room may live on another node, so handling awaits."""
        cluster = self.server.cluster
        assert cluster is not None
        for item in items:
            if isinstance(item, Incoming):
                self.server.metrics.message_in(self.endpoint, item.event)
                await cluster.dispatch(self, item.event, item.data, item.ref)
            else:
                self._handle_items([item])

    def _handle_items(self, items: list[Any]) -> None:
        for item in items:
            if isinstance(item, Incoming):
                self.server.metrics.message_in(self.endpoint, item.event)
                self.server.handle_event(self, item.event, item.data, item.ref)
            elif isinstance(item, BadFrame):
                self.server.metrics.message_in(self.endpoint, item.event or "unknown")
                self.send_error(item.code, item.message, item.event, item.ref)
                if item.ref is not None:
                    self.send_ack(item.ref, EventError(item.code, item.message))
            elif isinstance(item, Raw):
                # Framing answers (Engine.IO pongs with any payload a client chose, connect
                # replies) go through the bounded queue: a client that sends them and never
                # reads is a slow consumer (4002), not a memory leak.
                self.push(item.payload)
            elif isinstance(item, Pong):
                self.pong_deadline = math.inf
            elif isinstance(item, CloseRequest):
                self.close(item.code, item.reason)

    def handle_binary(self) -> None:  # type: ignore[override]
        if not self._limiter.take(trio.current_time()):
            self._rate_limited("")
            return
        for item in self.codec.binary():
            if isinstance(item, BadFrame):
                self.send_error(item.code, item.message, item.event, item.ref)

    def _rate_limited(self, text: str) -> None:
        event, ref = self.codec.peek(text) if text else (None, None)
        self.server.metrics.rate_limited(self.endpoint)
        tell, close = self._limiter.drop(trio.current_time())
        message = "rate limit exceeded; slow down"
        if tell:
            self.send_error(RATE_LIMITED, message, event, ref)
        if ref is not None:
            self.send_ack(ref, EventError(RATE_LIMITED, message))
        if close:
            self.close(4008, "rate limited", flush=True, flush_timeout=0.5)

    # -- lifetime ----------------------------------------------------------------------
    def on_open(self) -> None:
        open_packet = getattr(self.codec, "open_packet", None)
        if open_packet is not None and self._first is None:  # adopted: the client has it
            self.push(open_packet())  # Socket.IO: the Engine.IO open packet at once

    def heartbeat_due(self) -> float:
        return min(super().heartbeat_due(), self.connect_deadline)

    def heartbeat(self, now: float) -> float:
        if self.connect_deadline != math.inf:
            if getattr(self.codec, "connected", True):
                self.connect_deadline = math.inf
            elif now >= self.connect_deadline:
                self.close(1008, "no namespace connect within 45 s")
                return math.inf
        return super().heartbeat(now)

    def ping_frame(self) -> bytes:
        ping = getattr(self.codec, "ping_frame", None)
        return ping() if ping is not None else super().ping_frame()

    def on_close(self) -> None:
        self.server.observer_closed(self)
