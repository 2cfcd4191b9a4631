"""ChatRoom connections (``/chatroom``, ``/chatroom/``, ``/``; §9): text in, space frames out.

All of §2 applies as on ``/observer`` (Origin, 1009, the rate limit and 4008, the bounded
queue and 4002, the WebSocket ping heartbeat, 1001): those are the transport's. What a
message means is the space's (``relay.spaces``): the node hands each message to the
connection's space and writes back the frames the space produces.
"""

from __future__ import annotations

from collections.abc import Awaitable
from typing import Any

import trio

from relay.ports import ConnectionHost

from .connection import WebSocketConnection
from .ratelimit import RateLimiter
from .settings import TransportSettings


class ChatroomConnection(WebSocketConnection):
    __slots__ = ("_limiter", "client_id", "shape", "space")

    def __init__(self, host: ConnectionHost, settings: TransportSettings,
                 stream: trio.SocketStream, ip: str, trailing: bytes, space: str,
                 shape: str) -> None:
        super().__init__(host, settings, stream, ip, trailing)
        self.endpoint = "chatroom"
        self.space = space
        self.shape = shape  # "seed" (the seed's client) or "full" (?v=2)
        self.client_id = 0  # the space's id for this connection, from its connect
        self._limiter = RateLimiter(settings.rate_limit_rate, settings.rate_limit_burst,
                                    settings.rate_limit_close_after, trio.current_time())

    def on_open(self) -> None:
        self.host.chatroom_opened(self)  # type: ignore[attr-defined]  # (hello first)

    def handle_text(self, text: str) -> Awaitable[None] | None:
        return self._message(text)

    def handle_binary(self, payload: bytes) -> Awaitable[None] | None:
        return self._message(None)

    def _message(self, text: str | None) -> Awaitable[None] | None:
        host: Any = self.host
        now = trio.current_time()
        if not self._limiter.take(now):
            host.metrics.rate_limited(self.endpoint)
            tell, close = self._limiter.drop(now)
            if tell:
                host.chatroom_rate_limited(self, text)
            if close:
                self.close(4008, "rate limited", flush=True, flush_timeout=0.5)
            return None
        result: Awaitable[None] | None = host.chatroom_message(self, text)
        return result
