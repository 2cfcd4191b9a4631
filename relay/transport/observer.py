"""Observer connections over WebSocket (plain and Socket.IO framings): codec in, core out."""

from __future__ import annotations

import math
from typing import Any

import trio

from relay.codecs.base import Incoming, ObserverCodec
from relay.core.context import Session
from relay.ports import ConnectionHost

from .connection import WebSocketConnection
from .framing import ObserverFraming
from .ratelimit import RateLimiter
from .settings import TransportSettings

SIO_CONNECT_DEADLINE = 45.0


class ObserverConnection(ObserverFraming, WebSocketConnection):
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

    def close_preamble(self, code: int) -> bytes:
        preamble: bytes = self.codec.close_preamble(code)
        return preamble

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
