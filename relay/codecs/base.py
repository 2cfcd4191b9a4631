"""The codec interface: frames in, core commands out; outgoing events to frame bytes.

A codec holds no room logic. It may hold per-connection session state of its own framing
(the Socket.IO handshake), which is why one codec object serves one connection.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import msgspec

from relay.core.errors import EventError
from relay.core.outgoing import Outgoing

Ref = int | str

#: Largest integer a JS client holds exactly (``Number.MAX_SAFE_INTEGER``): plain refs and
#: Socket.IO ack ids beyond ±this are refused rather than echoed back altered.
MAX_SAFE_INTEGER = 2**53 - 1

#: What ``msgspec.json.decode`` raises for text that is not usable JSON. ``DecodeError`` covers
#: syntax, ``NaN``/``Infinity`` and numbers out of range (its subclass ``ValidationError``:
#: ``1e400``, integers beyond ``sys.get_int_max_str_digits()``). Nesting deeper than the
#: interpreter's recursion budget raises ``RecursionError``, which is *not* a ``DecodeError``;
#: the budget depends on how deep the caller's stack already is, so no fixed depth is
#: pre-scanned (that would cost every message a pass over its text) and the exception is
#: caught instead, for free on the normal path. ``UnicodeEncodeError`` is a ``str`` holding a
#: lone surrogate: the frame reader decodes strict UTF-8 and never produces one, but the
#: codecs are total over every ``str``.
JSON_ERRORS = (msgspec.DecodeError, RecursionError, UnicodeEncodeError)
#: The ``message`` of the ``bad_json`` answer to nesting too deep for the decoder.
TOO_DEEP = "JSON nested too deeply"
#: The only codes a codec's ``BadFrame`` carries (§3.4); ``unknown_event`` is the core's.
FRAME_ERROR_CODES = frozenset({"bad_json", "bad_frame"})


def json_error(exc: Exception, not_json: str) -> str:
    """The ``bad_json`` message for a decode failure: depth is named, the rest is ``not_json``."""
    return TOO_DEEP if isinstance(exc, RecursionError) else not_json


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
    """One connection's framing. Its capabilities are methods every codec has (a framing
    without a handshake or a heartbeat of its own answers ``None``), so the transport asks
    instead of sniffing attributes."""

    endpoint: str

    @property
    def connected(self) -> bool:
        """Events may flow (Socket.IO: after a valid ``40``; plain: always)."""

    def open_packet(self, upgrades: bool = False) -> bytes | None:
        """The framing's own open packet, sent first (None: the framing has none, nor a
        heartbeat of its own: the WebSocket ping is used and no namespace connect is
        awaited)."""

    def ping_frame(self) -> bytes | None:
        """The framing's heartbeat ping (None: a WebSocket ping frame)."""

    def session_ids(self) -> tuple[str | None, str | None]:
        """The framing's session ids to carry over in a handoff (Engine.IO sid, Socket.IO
        sid); ``(None, None)`` for a framing without sessions."""

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
