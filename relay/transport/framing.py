"""The observer protocol's framing side of a session, whichever transport carries it.

A client of the observer protocol is a WebSocket connection (``/observer`` or
``/socket.io/``) or an Engine.IO long-polling session (``relay.transport.polling``); for
every rule of §2 and §3 both are one connection. This mixin is what they share: decoding
messages with the codec, the rate limit (§2.2), handing events to the node, and encoding
what the core sends back (the ``relay.ports.Peer`` side). Each transport supplies
``push`` (queue a frame), ``close`` and its heartbeat.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

import trio

from relay.codecs.base import BadFrame, CloseRequest, Inbound, Incoming, Pong, Raw
from relay.core.errors import EventError
from relay.ports import EventError as ErrorLike
from relay.ports import Ref

log = logging.getLogger("relay.transport")

RATE_LIMITED = "rate_limited"


class ObserverFraming:
    __slots__ = ()

    if TYPE_CHECKING:  # supplied by the transport class this is mixed into
        host: Any
        codec: Any
        endpoint: str
        session: Any
        _limiter: Any
        pong_deadline: float

        def push(self, frame: bytes, after: int | None = None) -> None: ...

        def close(self, code: int, reason: str, *, flush: bool = False,
                  flush_timeout: float = 2.0) -> None: ...

    # -- frames out -----------------------------------------------------------------
    def encode_sequenced(self, out: Any, seq: int) -> bytes:
        self.host.metrics.message_out(self.endpoint, out.event)
        frame: bytes = self.codec.event_frame(out, seq if self.endpoint == "observer" else None)
        return frame

    def send_event(self, out: Any, after: int | None = None) -> None:
        self.host.metrics.message_out(self.endpoint, out.event)
        self.push(self.codec.event_frame(out, None), after)

    def send_error(self, code: str, message: str, event: str | None, ref: Ref | None) -> None:
        self.host.metrics.error(code)
        if log.isEnabledFor(logging.DEBUG):
            log.debug("error answer", extra={"code": code, "event": event,
                                             "conn": getattr(self, "conn_id", 0)})
        self.push(self.codec.error_frame(code, message, event, ref))

    def send_ack(self, ref: Ref, error: ErrorLike | None) -> None:
        self.push(self.codec.ack_frame(ref, error))

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
                self.pong_deadline = math.inf  # type: ignore[misc]  # (the transport's slot)
            elif isinstance(item, CloseRequest):
                self.close(item.code, item.reason)
        return None

    async def _resume(self, pending: Awaitable[None], rest: list[Inbound]) -> None:
        await pending
        more = self._handle_items(rest)
        if more is not None:
            await more

    def handle_binary(self, payload: bytes) -> Awaitable[None] | None:
        if not self._limiter.take(trio.current_time()):
            self._rate_limited("")
            return None
        for item in self.codec.binary():
            if isinstance(item, BadFrame):
                self.send_error(item.code, item.message, item.event, item.ref)
        return None

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
