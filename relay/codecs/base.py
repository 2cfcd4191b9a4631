"""The codec interface: frames in, core commands out; outgoing events to frame bytes.

A codec holds no room logic. It may hold per-connection session state of its own framing
(the Socket.IO handshake), which is why one codec object serves one connection.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

from relay.core.errors import EventError
from relay.core.outgoing import Outgoing

Ref = int | str


@dataclass(slots=True)
class Incoming:
    """A client event for the core."""

    event: str
    data: Any
    ref: Ref | None = None


@dataclass(slots=True)
class BadFrame:
    """A frame the codec could not turn into an event: answered with ``error``."""

    code: str
    message: str
    event: str | None = None
    ref: Ref | None = None


@dataclass(slots=True)
class Raw:
    """Framing-level bytes to send back at once (Socket.IO handshake, pong...)."""

    payload: bytes


@dataclass(slots=True)
class CloseRequest:
    """The framing asks to close the connection (Socket.IO ``41`` → 1000)."""

    code: int
    reason: str


@dataclass(slots=True)
class Pong:
    """A framing-level heartbeat answer arrived (Engine.IO ``3``)."""


Inbound = Incoming | BadFrame | Raw | CloseRequest | Pong


class ObserverCodec(Protocol):
    endpoint: str

    def costs_token(self, message: str) -> bool:
        """Whether a received text message is charged to the rate limit."""

    def decode(self, message: str) -> list[Inbound]: ...

    def peek(self, message: str) -> tuple[str | None, Ref | None]:
        """Event name and ref/ack id of a message dropped by the rate limit."""

    def binary(self) -> list[Inbound]:
        """What a binary WebSocket message turns into."""

    def event_frame(self, out: Outgoing, seq: int | None) -> bytes:
        """The complete WebSocket frame(s) for a server event (may be several)."""

    def ack_frame(self, ref: Ref, error: EventError | None) -> bytes: ...

    def error_frame(self, code: str, message: str, event: str | None, ref: Ref | None) -> bytes:
        ...

    def close_preamble(self, code: int) -> bytes:
        """Bytes sent before a close with ``code`` (Socket.IO ``41`` for terminal codes)."""
