"""Observer connections over WebSocket (plain and Socket.IO framings): codec in, core out."""

from __future__ import annotations

import math
from collections.abc import Awaitable
from typing import Any

import trio

from relay.codecs.base import Incoming, ObserverCodec
from relay.codecs.wsframe import text_frame
from relay.core.context import Session
from relay.ports import ConnectionHost

from .connection import WebSocketConnection
from .framing import ObserverFraming
from .ratelimit import RateLimiter
from .settings import SIO_CONNECT_DEADLINE, TransportSettings


class ObserverConnection(ObserverFraming, WebSocketConnection):
    __slots__ = ("_first", "_limiter", "codec", "connect_deadline", "polling_sid", "released",
                 "session", "upgrading")

    def __init__(self, host: ConnectionHost, settings: TransportSettings,
                 stream: trio.SocketStream, ip: str, trailing: bytes,
                 codec: ObserverCodec, device: str | None = None) -> None:
        super().__init__(host, settings, stream, ip, trailing)
        self.codec = codec
        self.endpoint = codec.endpoint
        self.session = Session(ip=ip, device=device, framing=codec.endpoint)
        #: The core already handled this connection's participant (replaced, kicked, room
        #: closed, moved): when the connection ends it is not reported offline.
        self.released = False
        self._limiter = RateLimiter(settings.rate_limit_rate, settings.rate_limit_burst,
                                    settings.rate_limit_close_after, trio.current_time())
        self.connect_deadline = math.inf
        if codec.ping_frame() is not None:
            # Socket.IO: Engine.IO's own heartbeat and a deadline for the namespace connect.
            self.set_heartbeat(settings.sio_ping_interval, settings.sio_ping_timeout)
            self.connect_deadline = trio.current_time() + SIO_CONNECT_DEADLINE
        # Scale-out: the joining event of a connection handed over by another node of
        # this host (``relay.cluster.handoff``), handled before anything is read.
        self._first: Incoming | None = None
        #: Engine.IO upgrade: the polling session this WebSocket probes for (until ``5``),
        #: and afterwards the sid of the session it became.
        self.upgrading: Any = None
        self.polling_sid: str | None = None

    def probe_for(self, session: Any) -> None:
        """This WebSocket was opened to upgrade ``session`` (§3.2): until the client's
        ``5`` it only answers probes; it sends no open packet and no pings of its own, and
        it is closed if the ``5`` does not come within pingInterval + pingTimeout."""
        self.upgrading = session
        self.ping_due = math.inf
        settings = self.settings
        self.connect_deadline = (trio.current_time() + settings.sio_ping_interval
                                 + settings.sio_ping_timeout)

    def handle_text(self, text: str) -> Awaitable[None] | None:
        if self.upgrading is None:
            return ObserverFraming.handle_text(self, text)
        session = self.upgrading
        if text[:1] == "2":  # 2probe -> 3probe; the pending GET is answered with 6
            self.push(text_frame(b"3" + text[1:].encode("utf-8", "replace")))
            session.probe()
        elif text == "5":
            self.upgrading = None
            if session.ended:
                self.close(1000, "the session ended during the upgrade")
            else:
                self.host.upgrade_session(session, self)  # type: ignore[attr-defined]
        return None  # nothing else is expected before the 5

    def take_over(self, other: Any, first: list[bytes]) -> None:  # type: ignore[override]
        super().take_over(other, first)
        self.ping_due, self.pong_deadline = other.ping_due, other.pong_deadline

    def flush(self) -> None:
        """Write what a take-over queued (the writer ends by itself when done)."""
        if self.has_pending:
            self._kick()

    def adopt(self, event: str, data: Any, ref: Any) -> None:
        """This connection arrives from another node of this host, with its first event."""
        self._first = Incoming(event, data, ref)
        if self.codec.connected:
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
        if self._first is None and self.upgrading is None:
            # (a handed-over or upgrading session: the client has its open packet)
            open_packet = self.codec.open_packet()
            if open_packet is not None:
                self.push(open_packet)  # Socket.IO: the Engine.IO open packet at once

    def heartbeat_due(self) -> float:
        return min(super().heartbeat_due(), self.connect_deadline)

    def heartbeat(self, now: float) -> float:
        if self.connect_deadline != math.inf:
            if self.codec.connected:
                self.connect_deadline = math.inf
            elif now >= self.connect_deadline:
                self.close(1008, "no upgrade within the heartbeat" if self.upgrading
                           else "no namespace connect within 45 s")
                return math.inf
        return super().heartbeat(now)

    def ping_frame(self) -> bytes:
        ping = self.codec.ping_frame()
        return ping if ping is not None else super().ping_frame()
