"""Observer connections (plain and Socket.IO framings): codec in, core out."""

from __future__ import annotations

import math
from collections.abc import Awaitable
from typing import Any

import trio

from relay.codecs.base import BadFrame, CloseRequest, Inbound, Incoming, ObserverCodec, Pong, Raw
from relay.core.context import Session
from relay.core.errors import EventError
from relay.ports import ConnectionHost, Ref
from relay.ports import EventError as ErrorLike

from .connection import WebSocketConnection
from .ratelimit import RateLimiter
from .settings import TransportSettings

SIO_CONNECT_DEADLINE = 45.0
RATE_LIMITED = "rate_limited"


class ObserverConnection(WebSocketConnection):
    __slots__ = ("_first", "_limiter", "codec", "connect_deadline", "released", "session")

    def __init__(self, host: ConnectionHost, settings: TransportSettings,
                 stream: trio.SocketStream, ip: str, trailing: bytes,
                 codec: ObserverCodec) -> None:
        super().__init__(host, settings, stream, ip, trailing)
        self.codec = codec
        self.endpoint = codec.endpoint
        self.session = Session(ip=ip)
        #: The core already handled this connection's participant (replaced, kicked, room
        #: closed, moved): when the connection ends it is not reported offline.
        self.released = False
        self._limiter = RateLimiter(settings.rate_limit_rate, settings.rate_limit_burst,
                                    settings.rate_limit_close_after, trio.current_time())
        self.connect_deadline = math.inf
        if getattr(codec, "open_packet", None) is not None:
            # Socket.IO: Engine.IO's own heartbeat and a deadline for the namespace connect.
            self.set_heartbeat(settings.sio_ping_interval, settings.sio_ping_timeout)
            self.connect_deadline = trio.current_time() + SIO_CONNECT_DEADLINE
        # Scale-out: the joining event of a connection handed over by another node of
        # this host (``relay.cluster.handoff``), handled before anything is read.
        self._first: Incoming | None = None

    def adopt(self, event: str, data: Any, ref: Any) -> None:
        """This connection arrives from another node of this host, with its first event."""
        self._first = Incoming(event, data, ref)
        if getattr(self.codec, "connected", False):
            self.connect_deadline = math.inf

    async def _reader(self) -> None:
        if self._first is not None:
            first, self._first = self._first, None
            pending = self._handle_items([first])
            if pending is not None:
                await pending
        await super()._reader()

    # -- frames out -----------------------------------------------------------------
    def encode_sequenced(self, out: Any, seq: int) -> bytes:
        self.host.metrics.message_out(self.endpoint, out.event)
        return self.codec.event_frame(out, seq if self.endpoint == "observer" else None)

    def send_event(self, out: Any, after: int | None = None) -> None:
        self.host.metrics.message_out(self.endpoint, out.event)
        self.push(self.codec.event_frame(out, None), after)

    def send_error(self, code: str, message: str, event: str | None, ref: Ref | None) -> None:
        self.host.metrics.error(code)
        self.push(self.codec.error_frame(code, message, event, ref))

    def send_ack(self, ref: Ref, error: ErrorLike | None) -> None:
        self.push(self.codec.ack_frame(ref, error))  # type: ignore[arg-type]

    def close_preamble(self, code: int) -> bytes:
        return self.codec.close_preamble(code)

    # -- frames in -------------------------------------------------------------------
    def handle_text(self, text: str) -> Awaitable[None] | None:
        codec = self.codec
        if codec.costs_token(text) and not self._limiter.take(trio.current_time()):
            self._rate_limited(text)
            return None
        return self._handle_items(codec.decode(text))

    def _handle_items(self, items: list[Inbound]) -> Awaitable[None] | None:
        """Carry out decoded items in order; an awaitable when one must wait (scale-out),
        which then carries out the rest."""
        for i, item in enumerate(items):
            if isinstance(item, Incoming):
                self.host.metrics.message_in(self.endpoint, item.event)
                pending = self.host.observer_event(self, item.event, item.data, item.ref)
                if pending is not None:
                    return self._resume(pending, items[i + 1:])
            elif isinstance(item, BadFrame):
                self.host.metrics.message_in(self.endpoint, item.event or "unknown")
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
        return None

    async def _resume(self, pending: Awaitable[None], rest: list[Inbound]) -> None:
        await pending
        more = self._handle_items(rest)
        if more is not None:
            await more

    def handle_binary(self, payload: bytes) -> None:
        if not self._limiter.take(trio.current_time()):
            self._rate_limited("")
            return
        for item in self.codec.binary():
            if isinstance(item, BadFrame):
                self.send_error(item.code, item.message, item.event, item.ref)

    def _rate_limited(self, text: str) -> None:
        event, ref = self.codec.peek(text) if text else (None, None)
        self.host.metrics.rate_limited(self.endpoint)
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
