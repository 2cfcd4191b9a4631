"""``/ws`` seed-dialect connections: text in, ``SignalingHub`` frames out."""

from __future__ import annotations

from collections.abc import Awaitable
from typing import TYPE_CHECKING

import trio

from relay.core.outgoing import encode_json
from signaling.ws_rooms import rate_limited_frame, type_label

from .connection import WebSocketConnection
from .wsframe import text_frame

if TYPE_CHECKING:
    from relay.server import RelayServer


class SignalingConnection(WebSocketConnection):
    __slots__ = ("_limiter", "cid", "conn_id", "remote_owner", "replaced")

    def __init__(self, server: RelayServer, stream: trio.SocketStream, ip: str,
                 trailing: bytes) -> None:
        super().__init__(server, stream, ip, trailing)
        self.endpoint = "ws"
        self.conn_id = server.signaling.connect()
        self._limiter = server.new_rate_limiter()
        self.cid = 0  # scale-out: this node's id for the connection
        self.remote_owner: str | None = None  # scale-out: the node holding our room
        self.replaced = False

    def handle_text(self, text: str) -> Awaitable[None] | None:
        return self._handle(text, binary=False)

    def handle_binary(self) -> Awaitable[None] | None:
        return self._handle(None, binary=True)

    def _handle(self, text: str | None, *, binary: bool) -> Awaitable[None] | None:
        metrics = self.server.metrics
        now = trio.current_time()
        if not self._limiter.take(now):
            metrics.rate_limited(self.endpoint)
            tell, close = self._limiter.drop(now)
            if tell:
                metrics.error("ERROR")
                self.push(text_frame(encode_json(rate_limited_frame())))
            if close:
                self.close(4008, "rate limited", flush=True, flush_timeout=0.5)
            return None
        metrics.message_in(self.endpoint, type_label(text) if text is not None else "unknown")
        cluster = self.server.cluster
        if cluster is not None:
            return cluster.ws_message(self, text, binary)
        self.server.deliver_signaling(self.server.signaling.receive(self.conn_id, text,
                                                                     binary=binary))
        return None

    def on_close(self) -> None:
        self.server.signaling_closed(self)
