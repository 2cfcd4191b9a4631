"""``/ws`` seed-dialect connections: text in, the node's ``SignalingHub`` frames out."""

from __future__ import annotations

from collections.abc import Awaitable

import trio

from relay.codecs.wsframe import text_frame
from relay.core.outgoing import encode_json
from relay.ports import ConnectionHost
from signaling.ws_rooms import rate_limited_frame

from .connection import WebSocketConnection
from .ratelimit import RateLimiter
from .settings import TransportSettings


class SignalingConnection(WebSocketConnection):
    __slots__ = ("_limiter", "signaling_id")

    def __init__(self, host: ConnectionHost, settings: TransportSettings,
                 stream: trio.SocketStream, ip: str, trailing: bytes, signaling_id: int) -> None:
        super().__init__(host, settings, stream, ip, trailing)
        self.endpoint = "ws"
        #: Its id in the node's ``SignalingHub`` (a new one when it joins a room elsewhere).
        self.signaling_id = signaling_id
        self._limiter = RateLimiter(settings.rate_limit_rate, settings.rate_limit_burst,
                                    settings.rate_limit_close_after, trio.current_time())

    def handle_text(self, text: str) -> Awaitable[None] | None:
        return self._handle(text, binary=False)

    def handle_binary(self, payload: bytes) -> Awaitable[None] | None:
        return self._handle(None, binary=True)

    def _handle(self, text: str | None, *, binary: bool) -> Awaitable[None] | None:
        metrics = self.host.metrics
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
        return self.host.signaling_message(self, text, binary)  # type: ignore[arg-type]
