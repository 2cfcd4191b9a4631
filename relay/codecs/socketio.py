"""Socket.IO v5 over Engine.IO v4 framing of the observer protocol on ``/socket.io/`` (§3.2).

Sans-IO: text messages in, ``Inbound`` items out; server events in, complete WebSocket frame
bytes out. One codec object serves one connection because it holds that session's Engine.IO
and Socket.IO state (sids, whether the client connected to ``/``). WebSocket transport only,
default namespace only, no binary attachments.

Packet grammar (one WebSocket text message = one Engine.IO packet)::

    <eio type>[<eio data>]                      eio type 0-6
    4<sio type>[<n>-][<nsp>,][<ack id>][<json>] sio type 0-6; ``<n>-`` on 45/46 only

Decisions on cases the contract leaves open (all tested in ``tests/test_socketio_codec.py``):

- **Before a valid ``40``** only Engine.IO ``1`` (close), ``2`` (ping) and ``3`` (pong) and
  ``40`` itself (including a refused namespace) do anything; every other message, unparsable
  ones included, is ignored, ``41`` too ("any packet before ``40`` is ignored"). Pongs and pings
  must work before the connect, since the heartbeat runs from the open packet on.
- **Server-only but well-formed packet types** from the client (Engine.IO ``0``, Socket.IO
  ``44``) are ignored like the client ``43`` the contract lists; only an *unparsable* type
  (empty message, ``7``, ``x``, ``4`` alone, ``47``, ``4x``) is ``bad_frame``.
- **Other namespaces**: ``40/<nsp>,…`` is refused at any time; any other packet addressed to a
  namespace other than ``/`` is ignored (the session never joined it). ``/`` written out
  (``42/,[…]``) is the default namespace.
- **``42`` bodies**: the ack id is the run of ASCII digits right after the type (and namespace);
  whatever follows must be a JSON array. So ``42abc[…]`` is ``bad_json`` without ack id,
  ``421[bad`` is ``bad_json`` with ack id 1, ``42`` / ``427`` with nothing after the id is
  ``bad_frame`` (the packet has no arguments; JSON syntax was never the problem), and an
  array that is empty or does not start with a string is ``bad_frame``. Every ``BadFrame`` of
  a ``42`` carries the ack id when one was read, so the failed acknowledgement follows.
- **Ack ids** are integers (leading zeros dropped: ``4207[…]`` is acknowledged ``437[…]``).
  One above 2**53-1 cannot round-trip through a JS client; such a packet is ``bad_frame``
  without ack id (and ``int()`` is never fed an unbounded digit run).
- **Event names** are any string, as in socket.io: the core answers names it does not know
  with ``unknown_event``. The data is the second array element, ``{}`` when absent; ``null``
  stays ``None``.
- **``45``/``46``**: always ``bad_frame`` "binary attachments are not supported", with the ack id
  when present (for ``46`` too, as §3.2 says). The event name is reported for ``45`` when the
  JSON can be read; ``46`` carries ack arguments, not an event, so its event is ``None``.
- **Client ``2<data>``** (``2probe``) is answered ``3<data>``, as Engine.IO does.
- **``40`` payload**: empty or a JSON object (auth, ignored) connects; anything else, invalid
  JSON or JSON nested too deeply included, is answered ``44{"message":"Invalid connect
  payload"}`` and the session may retry. A ``40`` on a connected session is ignored whatever
  it carries.
- **Totality**: ``decode``, ``peek`` and ``costs_token`` never raise, whatever the ``str``.
  JSON nested deeper than the decoder can follow (msgspec raises ``RecursionError``, not a
  ``DecodeError``) is ``bad_json`` "JSON nested too deeply" in a ``42`` (with its ack id), no
  event name for ``peek``/``45``, and an invalid connect payload in a ``40``.
"""

from __future__ import annotations

import re
import secrets
from typing import Any

import msgspec

from relay.core.errors import EventError
from relay.core.outgoing import Outgoing, encode_json

from .base import (
    JSON_ERRORS,
    MAX_SAFE_INTEGER,
    BadFrame,
    CloseRequest,
    Inbound,
    Incoming,
    Pong,
    Raw,
    Ref,
    json_error,
)
from .wsframe import text_frame

__all__ = ["TERMINAL_CLOSE_CODES", "SocketIOCodec", "new_sid"]

_decode = msgspec.json.decode
_RawList = list[msgspec.Raw]

#: Close codes preceded by ``41`` so that clients do not auto-reconnect (§2.5).
TERMINAL_CLOSE_CODES = frozenset({4000, 4001, 4003, 4008})
#: Largest ack id a JS client can represent exactly (``Number.MAX_SAFE_INTEGER``).
MAX_ACK_ID = MAX_SAFE_INTEGER

#: ``[<nsp>,][<ack id>]`` after the Socket.IO type (and attachment count).
_HEAD = re.compile(r"(?:(/[^,]*),?)?([0-9]*)")
#: ``<n>-`` attachment count of a binary packet.
_ATTACHMENTS = re.compile(r"[0-9]+-")

_CACHE_KEY = "socketio"
_PING = text_frame(b"2")
_PONG = text_frame(b"3")
_DISCONNECT = text_frame(b"41")
_BAD_CONNECT = text_frame(b'44{"message":"Invalid connect payload"}')
_ACK_OK = b'[{"ok":true}]'
_BINARY_MESSAGE = "binary attachments are not supported"
_NOT_JSON = "the packet is not valid JSON"


def new_sid() -> str:
    """20 random URL-safe characters (15 CSPRNG bytes, base64url)."""
    return secrets.token_urlsafe(15)


def _head(message: str, pos: int) -> tuple[str, str, str]:
    """(namespace, ack-id digits, rest) of a Socket.IO packet from ``pos``."""
    m = _HEAD.match(message, pos)
    assert m is not None  # every part of the pattern is optional
    return m.group(1) or "/", m.group(2), message[m.end():]


def _ack_id(digits: str) -> tuple[bool, int | None]:
    """(ok, ack id) from a digit run; ``ok`` is False for ids a client cannot hold."""
    if not digits:
        return True, None
    significant = digits.lstrip("0")
    if len(significant) > 16:
        return False, None
    value = int(significant or "0")
    if value > MAX_ACK_ID:
        return False, None
    return True, value


def _event_name(body: str) -> str | None:
    """The event name of a ``[name, ...]`` body, without decoding the arguments."""
    try:
        items = _decode(body, type=_RawList)
        first: Any = _decode(items[0]) if items else None
    except JSON_ERRORS:
        return None
    return first if isinstance(first, str) else None


def _bad_type(connected: bool) -> list[Inbound]:
    if not connected:
        return []
    return [BadFrame("bad_frame", "unparsable packet type")]


class SocketIOCodec:
    """Per-connection Socket.IO session: Engine.IO open, namespace connect, events, acks."""

    __slots__ = ("max_payload", "ping_interval_ms", "ping_timeout_ms", "sid", "socket_sid")

    endpoint = "socketio"

    def __init__(self, ping_interval_ms: int, ping_timeout_ms: int, max_payload: int) -> None:
        self.ping_interval_ms = int(ping_interval_ms)
        self.ping_timeout_ms = int(ping_timeout_ms)
        self.max_payload = int(max_payload)
        #: Engine.IO session id, advertised in the open packet.
        self.sid = new_sid()
        #: Socket.IO session id of the ``/`` namespace, set by the first valid ``40``.
        self.socket_sid: str | None = None

    # -- session --------------------------------------------------------------------
    @property
    def connected(self) -> bool:
        """A valid ``40`` was received: events are processed from now on."""
        return self.socket_sid is not None

    def open_packet(self, upgrades: bool = False) -> bytes:
        """The Engine.IO open packet: at once on a WebSocket session (``upgrades`` empty),
        as the answer to a polling handshake (which may upgrade to ``websocket``)."""
        body = encode_json({
            "sid": self.sid,
            "upgrades": ["websocket"] if upgrades else [],
            "pingInterval": self.ping_interval_ms,
            "pingTimeout": self.ping_timeout_ms,
            "maxPayload": self.max_payload,
        })
        return text_frame(b"0" + body)

    def ping_frame(self) -> bytes:
        """Engine.IO ping; the transport times the answering ``Pong``."""
        return _PING

    def session_ids(self) -> tuple[str | None, str | None]:
        return self.sid, self.socket_sid

    # -- inbound --------------------------------------------------------------------
    def costs_token(self, message: str) -> bool:
        """Pong and noop are free (§2.2) so that heartbeats survive a flood."""
        return message[:1] not in ("3", "6")

    def decode(self, message: str) -> list[Inbound]:
        kind = message[:1]
        if kind == "4":
            return self._socket_packet(message)
        if kind == "3":
            return [Pong()]
        if kind == "2":
            if len(message) == 1:
                return [Raw(_PONG)]
            # ("replace" only matters for a str with a lone surrogate, which UTF-8 cannot carry.)
            return [Raw(text_frame(b"3" + message[1:].encode("utf-8", "replace")))]
        if kind == "1":
            return [CloseRequest(1000, "client disconnect")]
        if kind in ("0", "5", "6"):  # open is server-only; no upgrades; noop
            return []
        return _bad_type(self.connected)

    def _socket_packet(self, message: str) -> list[Inbound]:
        sio = message[1:2]
        if sio == "0":
            return self._connect(message)
        if len(sio) != 1 or sio not in "123456":
            return _bad_type(self.connected)
        if not self.connected:
            return []
        pos = 2
        if sio in ("5", "6"):
            m = _ATTACHMENTS.match(message, pos)
            if m is not None:
                pos = m.end()
        nsp, digits, body = _head(message, pos)
        if nsp != "/":
            return []
        if sio == "2":
            return self._event(digits, body)
        if sio == "1":
            return [CloseRequest(1000, "client disconnect")]
        if sio in ("5", "6"):
            ok, ack = _ack_id(digits)
            event = _event_name(body) if sio == "5" else None
            return [BadFrame("bad_frame", _BINARY_MESSAGE, event, ack if ok else None)]
        return []  # 43 (client ack; the server never asks for one), 44 (server-only)

    def _connect(self, message: str) -> list[Inbound]:
        m = _HEAD.match(message, 2)
        assert m is not None
        nsp = m.group(1)
        if nsp is not None and nsp != "/":
            return [Raw(text_frame(
                b"44" + nsp.encode("utf-8", "replace") + b',{"message":"Invalid namespace"}'
            ))]
        if self.connected:
            return []
        # The auth payload follows the (optional) namespace; it is never read as an ack id.
        payload = message[m.start(2):] if nsp is not None else message[2:]
        if payload:
            try:
                auth = _decode(payload)
            except JSON_ERRORS:
                auth = None
            if not isinstance(auth, dict):
                return [Raw(_BAD_CONNECT)]
        self.socket_sid = new_sid()
        return [Raw(text_frame(b'40{"sid":"' + self.socket_sid.encode("ascii") + b'"}'))]

    @staticmethod
    def _event(digits: str, body: str) -> list[Inbound]:
        ok, ack = _ack_id(digits)
        if not ok:
            return [BadFrame("bad_frame", "ack id out of range", _event_name(body), None)]
        if not body:
            return [BadFrame("bad_frame", "an event packet needs [name, data]", None, ack)]
        try:
            args: Any = _decode(body)
        except JSON_ERRORS as exc:
            return [BadFrame("bad_json", json_error(exc, _NOT_JSON), None, ack)]
        if not isinstance(args, list) or not args or not isinstance(args[0], str):
            return [BadFrame("bad_frame", "an event packet must be an array starting with the "
                             "event name", None, ack)]
        return [Incoming(args[0], args[1] if len(args) > 1 else {}, ack)]

    def peek(self, message: str) -> tuple[str | None, Ref | None]:
        """Event name and ack id of a rate-limited message, as ``decode`` would read them.

        Only packets whose ``decode`` could yield an ack id give one (``42``, ``45``, ``46``
        on ``/`` of a connected session), so a dropped packet is failed-acked exactly when a
        processed one would have been acknowledged.
        """
        if not self.connected or message[:1] != "4":
            return None, None
        sio = message[1:2]
        if sio not in ("2", "5", "6"):
            return None, None
        pos = 2
        if sio != "2":
            m = _ATTACHMENTS.match(message, pos)
            if m is not None:
                pos = m.end()
        nsp, digits, body = _head(message, pos)
        if nsp != "/":
            return None, None
        ok, ack = _ack_id(digits)
        event = _event_name(body) if sio != "6" else None
        return event, ack if ok else None

    def binary(self) -> list[Inbound]:
        """Binary WebSocket messages are discarded without reply (§3.2)."""
        return []

    # -- outbound -------------------------------------------------------------------
    def event_frame(self, out: Outgoing, seq: int | None) -> bytes:
        """``42["<event>",<payload>]``, never a ``seq``; built once per event, shared by all.

        ``alerts`` is followed by the same payload as ``alert`` (the student plugin listens
        only for the singular), in the same cached bytes so that the pair cannot be split.
        """
        frame = out.cached(_CACHE_KEY)
        if frame is None:
            frame = text_frame(b"42[" + out.event_json + b"," + out.payload + b"]")
            if out.event == "alerts":
                frame += text_frame(b'42["alert",' + out.payload + b"]")
            out.remember(_CACHE_KEY, frame)
        return frame

    def ack_frame(self, ref: Ref, error: EventError | None) -> bytes:
        """``43<id>[{"ok":...}]``; ``ref`` is an ack id this codec decoded (an int)."""
        head = b"43" + str(ref).encode("utf-8")
        if error is None:
            return text_frame(head + _ACK_OK)
        body = encode_json({"ok": False, "error": {"code": error.code, "message": error.message}})
        return text_frame(head + b"[" + body + b"]")

    def error_frame(self, code: str, message: str, event: str | None, ref: Ref | None) -> bytes:
        """``42["error",{code,message,event}]``; the ack id travels in the failed ack instead."""
        body = encode_json({"code": code, "message": message, "event": event})
        return text_frame(b'42["error",' + body + b"]")

    def close_preamble(self, code: int) -> bytes:
        """``41`` before the terminal closes, so that clients do not reconnect (§2.5)."""
        return _DISCONNECT if code in TERMINAL_CLOSE_CODES else b""
