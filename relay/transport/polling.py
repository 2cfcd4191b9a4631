"""A Socket.IO session on Engine.IO HTTP long-polling (§3.2), until it upgrades.

For every rule of §2 a polling session is one connection: it is the ``Peer`` its room
delivers to, it has one rate limiter, one bounded queue (a client that stops polling is a
slow consumer) and one heartbeat. What it queues are the same frames a WebSocket session
would get — the codec's encoded WebSocket frames, built once per event for every
recipient — and a ``GET`` answers with their payloads, the Engine.IO packets, joined by
the record separator. A ``POST``'s packets are handled one by one exactly like WebSocket
messages (``relay.transport.framing``).

When the client upgrades (``2probe``/``3probe``, ``5``) the session's state — its codec
(sids), its binding, its rate limiter, and every frame not yet delivered, in order — moves
to the WebSocket connection (``take_over_by``), which from then on is the session.
"""

from __future__ import annotations

import math
from typing import Any

import trio

from relay.codecs.wsframe import text_frame, ws_payloads
from relay.core.context import Session
from relay.outbox import Outbox
from relay.ports import ConnectionHost

from .framing import ObserverFraming
from .heartbeat import first_ping_delay
from .ratelimit import RateLimiter
from .settings import SIO_CONNECT_DEADLINE, TransportSettings

CLOSE_GRACE = 5.0  # how long the last packets (the 41 of §2.5) wait for a GET to fetch them
SEPARATOR = b"\x1e"
NOOP = b"6"
CLOSE = b"1"


class PollingSession(ObserverFraming, Outbox):
    __slots__ = (
        "_closing", "_final", "_flush_deadline", "_last_poll", "_limiter", "_noop",
        "_polling", "_unsent", "_wake", "close_code", "codec", "conn_id", "connect_deadline",
        "ended", "hb_slot", "host", "ip", "issued_cookie", "opened", "ping_due",
        "pong_deadline", "released", "remote_owner", "session", "settings", "upgraded", "upgrading",
    )

    endpoint = "socketio"
    transport = "polling"
    #: A polling session has no socket of its own to hand to another node (same-host
    #: handoff moves WebSockets only): its events are forwarded instead.
    clean = False

    def __init__(self, host: ConnectionHost, settings: TransportSettings, ip: str,
                 codec: Any, device: str | None = None) -> None:
        Outbox.__init__(self)
        now = trio.current_time()
        self.host = host
        self.settings = settings
        self.opened = now  # (for the duration in the log line of its end)
        #: The device cookie this session's handshake issued (the value, which only the
        #: transport sees): its upgrade sets it again when the request does not carry it.
        self.issued_cookie: str | None = None
        self.ip = ip
        self.codec = codec
        self.session = Session(ip=ip, device=device, framing="socketio")
        self.released = False
        self.conn_id = 0
        self.remote_owner: str | None = None
        self.close_code: int | None = None
        self._limiter = RateLimiter(settings.rate_limit_rate, settings.rate_limit_burst,
                                    settings.rate_limit_close_after, now)
        self._closing: tuple[int, str] | None = None
        self._final = b""  # the packet that must be the last one answered (41)
        self._flush_deadline = math.inf
        self._unsent: list[bytes] = []  # packets of an answer that could not be written
        self._noop = False  # a probe arrived: answer the pending GET (§3.2)
        self._polling = False  # a GET is waiting
        self._wake = trio.Event()
        self._last_poll = now  # when a GET last began or ended
        self.ended = False
        self.upgrading = False  # a WebSocket probes for this session
        self.upgraded = False
        self.hb_slot = 0
        self.ping_due = now + first_ping_delay(settings.sio_ping_interval)
        self.pong_deadline = math.inf
        self.connect_deadline = now + SIO_CONNECT_DEADLINE

    # -- the Peer side (what the room sends) ---------------------------------------------
    def push(self, frame: bytes, after: int | None = None) -> None:
        if self._closing is not None and not self._flushing:
            return
        if self.before_replay(after):
            self._pre.append(frame)
            self._wake.set()
        else:
            self._enqueue(frame, len(frame))

    def sequenced(self, out: Any, seq: int, size: int) -> None:
        if (self._closing is not None and not self._flushing) or seq <= self.replay_end:
            return
        self._enqueue((out, seq), size)

    def attach(self, cursor: int, replay_end: int, pinned: list[Any]) -> None:
        super().attach(cursor, replay_end, pinned)
        self._wake.set()

    def _enqueue(self, item: bytes | tuple[Any, int], size: int) -> None:
        s = self.settings
        if not self.fits(size, s.send_queue_frames, s.send_queue_bytes):
            self.close(4002, "slow consumer")  # a client that stopped polling (§2.3)
            return
        self.enqueue(item, size)
        self._wake.set()

    @property
    def close_reason(self) -> str:
        return self._closing[1] if self._closing is not None else "connection lost"

    @property
    def _flushing(self) -> bool:
        return trio.current_time() < self._flush_deadline

    def close(self, code: int, reason: str, *, flush: bool = False,
              flush_timeout: float = 2.0) -> None:
        """End the session: what is due still goes out on the next polls (with ``flush``,
        the queue too, for a while), the ``41`` of §2.5 last; then it is over."""
        if self._closing is not None or self.ended:
            return
        self._closing = (code, reason)
        self.close_code = code
        now = trio.current_time()
        self._flush_deadline = now + flush_timeout if flush else now
        if not flush:
            self.discard()
        self._final = b"".join(ws_payloads(self.codec.close_preamble(code)))
        if not self._final and not self.has_pending and not self._unsent:
            self._end()
        self._wake.set()

    def _end(self) -> None:
        if self.ended:
            return
        self.ended = True
        self._wake.set()
        self.host.connection_closed(self)  # type: ignore[arg-type]

    # -- the HTTP side ------------------------------------------------------------------
    async def poll(self, max_payload: int) -> list[bytes] | None:
        """A ``GET``: the packets to answer with, once there are any (server pings make it
        at most ``pingInterval``). None when another ``GET`` is already waiting: that is a
        protocol error (§3.2), and the session ends."""
        if self._polling:
            self.close(1002, "overlapping long-polls")
            return None
        self._polling = True
        self._last_poll = trio.current_time()
        try:
            while not (self._unsent or self._noop or self.has_pending or self._final
                       or self.ended or self.upgraded):
                self._wake = trio.Event()
                await self._wake.wait()
            return self._take(max_payload)
        finally:
            self._polling = False
            self._last_poll = trio.current_time()

    def _take(self, max_payload: int) -> list[bytes]:
        packets, self._unsent = self._unsent, []
        if self._noop:
            self._noop = False
            packets.append(NOOP)
        # The answer stays within maxPayload (§3.2): WebSocket frames are a few bytes longer
        # than their packets, each packet a separator shorter, so counting frames is safe.
        room = max_payload - sum(len(p) + 1 for p in packets) - len(self._final) - 1
        frames: list[bytes] = []
        self.take(self.encode_sequenced, room, frames, strict=True)
        for frame in frames:
            packets.extend(ws_payloads(frame))
        if self._final and not self.has_pending:
            packets.append(self._final)
            self._final = b""
        if not packets:
            packets.append(CLOSE if self.ended or self._closing is not None else NOOP)
        return packets

    def answered(self, packets: list[bytes], written: bool) -> None:
        """The answer to a ``GET`` was written (or not: then it goes out on the next)."""
        if not written:
            self._unsent = [p for p in packets if p not in (NOOP, CLOSE)] + self._unsent
            self._wake.set()
        elif self._closing is not None and not (self._final or self.has_pending
                                                or self._unsent):
            self._end()

    async def post(self, body: bytes) -> bool:
        """A ``POST``: each packet handled in order as one message (§2); False when the
        body cannot be read (400 code 3)."""
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:
            return False
        # (A POST is not a poll: a client that POSTs and never GETs still ends, §3.2.)
        metrics = self.host.metrics
        for packet in text.split("\x1e"):
            if self.ended or self.upgraded:
                break
            metrics.bytes_in(self.endpoint, len(packet))
            # A binary packet (``b<base64>``) is discarded, as binary messages are.
            binary = packet[:1] == "b"
            pending = self.handle_binary(b"") if binary else self.handle_text(packet)
            if pending is not None:
                await pending
        return True

    def probe(self) -> None:
        """The client probes a WebSocket for this session: answer the pending GET (``6``)
        so that it can pause polling."""
        self.upgrading = True
        self._noop = True
        self._wake.set()

    def take_over_by(self, ws: Any) -> None:
        """``ws`` (a WebSocket connection of this client, after its ``5``) becomes this
        session: codec, binding, limiter and every frame not yet delivered, in order."""
        self.upgraded = True
        ws.codec = self.codec
        ws.session = self.session
        ws._limiter = self._limiter
        ws.released = self.released
        ws.remote_owner = self.remote_owner
        ws.connect_deadline = self.connect_deadline if not self.codec.connected else math.inf
        unsent = [text_frame(p) for p in self._unsent if p not in (NOOP, CLOSE)]
        ws.take_over(self, unsent)
        self.discard()
        self._unsent = []
        self._wake.set()
        if self._closing is not None:
            # The session was ending (kicked, closed, rate limited) while the client
            # upgraded: the WebSocket ends it the same way, what was due and the 41 last.
            code, reason = self._closing
            self._closing = None
            ws.close(code, reason, flush=True)

    # -- heartbeat (called by the node's timing wheel) --------------------------------
    def heartbeat_due(self) -> float:
        return min(self.ping_due, self.pong_deadline, self.connect_deadline,
                   self._last_poll + self._poll_allowance)

    @property
    def _poll_allowance(self) -> float:
        return self.settings.sio_ping_interval + self.settings.sio_ping_timeout

    def heartbeat(self, now: float) -> float:
        if self.ended or self.upgraded:
            return math.inf
        if self._closing is not None:
            if now >= self._flush_deadline + CLOSE_GRACE:
                self._end()  # nobody came for the last packets
                return math.inf
            return self._flush_deadline + CLOSE_GRACE
        if self.connect_deadline != math.inf:
            if self.codec.connected:
                self.connect_deadline = math.inf
            elif now >= self.connect_deadline:
                self.close(1008, "no namespace connect within 45 s")
                return self.heartbeat(now)
        if now >= self.pong_deadline or (
                not self._polling and now - self._last_poll >= self._poll_allowance):
            self.close(4004, "heartbeat timeout")  # no pong, or nobody polls any more
            return self.heartbeat(now)
        if now >= self.ping_due:
            self.ping_due = now + self.settings.sio_ping_interval
            if self.pong_deadline == math.inf:
                self.pong_deadline = now + self.settings.sio_ping_timeout
            self.push(self.codec.ping_frame())
        return self.heartbeat_due()
