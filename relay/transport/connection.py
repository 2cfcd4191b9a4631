"""One WebSocket connection: the handler task reads; a writer task runs only when needed.

Incoming bytes are parsed by ``wsread`` (masking, fragmentation, UTF-8, control frames,
the size and frame-count limits); outgoing frames are built by ``wsframe``. An idle
connection costs one task (its reader): frames are written straight into the socket by
whichever task produced them while nothing is queued (the fast path), a writer task is
started only when the kernel pushes back or a replay must be streamed, and heartbeats are
driven by one server-wide timer.

Every byte a client can make the server hold is bounded (§2.1, §2.3): the live queue by
``send_queue_frames``/``send_queue_bytes`` (overflow closes with 4002), control replies by
construction (one pending pong, replaced by a newer one; one heartbeat ping; the rest of
one partly written frame), control frames by a token bucket of their own. Reading yields
to other tasks after every message, every ``CONTROL_BATCH`` control frames and every full
read, so no peer can hold the event loop.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Awaitable
from typing import Any

import trio

from relay.codecs import wsframe
from relay.outbox import Outbox
from relay.ports import ConnectionHost

from .heartbeat import first_ping_delay
from .ratelimit import RateLimiter
from .reading import READ_SIZE, receive, size_of
from .settings import TransportSettings
from .wsread import BINARY, CLOSE, FAIL, PING, PONG, TEXT, FrameReader

log = logging.getLogger("relay.transport")

MAX_BATCH_BYTES = 512 * 1024
CLOSE_WAIT = 2.0  # flushing closes (room closed) and waiting for the peer's close frame
CLOSE_GRACE = 5.0  # longest a write may block once the connection is closing
CONTROL_BATCH = 64  # control frames handled between two checkpoints of one reader

HANDED_OFF = (1000, "handed off")  # ``_closing`` of a socket given to another process


class WebSocketConnection(Outbox):
    """Framing, queues and lifetime shared by every endpoint; subclasses handle messages.

    Slots and lazily created queues keep an idle connection small (W3 in bench/).
    """

    __slots__ = (
        "_accepting", "_close_sent", "_closing", "_control", "_control_limiter", "_fd",
        "_flush_deadline", "_frames", "_nursery", "_partial", "_pings", "_pong",
        "_send_deadline", "_send_scope", "_wire_dirty", "_writing", "close_code", "conn_id",
        "endpoint", "hb_interval", "hb_slot", "hb_timeout", "host", "ip", "peer_closed",
        "ping_due", "pong_deadline", "remote_owner", "settings", "stream",
    )

    def __init__(self, host: ConnectionHost, settings: TransportSettings,
                 stream: trio.SocketStream, ip: str, trailing: bytes) -> None:
        super().__init__()
        self.endpoint = "observer"
        self.host = host
        self.settings = settings
        self.stream = stream
        self.ip = ip
        self.conn_id = 0  # set by the node when it starts serving the connection
        #: Scale-out: the node that owns this connection's room, when it is another node.
        self.remote_owner: str | None = None
        self._frames = FrameReader(settings.max_message_size, trailing)
        try:
            self._fd = stream.socket.fileno()
        except (AttributeError, OSError):
            self._fd = -1
        self._nursery: trio.Nursery | None = None
        # Outgoing order: the rest of a partly written frame, control frames (at most one
        # pending pong, the heartbeat ping), then the ``Outbox`` (attach replies, the
        # replay, live frames). Only the live queue counts against the §2.3 bound; the
        # rest is bounded by construction.
        self._partial = b""
        self._wire_dirty = False  # a send_all is under way: a frame may be half written
        self._pong: bytes | None = None
        self._control: list[bytes] = []
        self._control_limiter: RateLimiter | None = None  # made at the first control frame
        self._writing = False  # a writer task is running
        self._send_deadline = math.inf
        self._send_scope: trio.CancelScope | None = None
        # Closing.
        self._closing: tuple[int, str] | None = None
        self._accepting = True  # frames are still taken while a flushing close drains
        self._flush_deadline = math.inf
        self._close_sent: trio.Event | None = None
        self.peer_closed = False
        self.close_code: int | None = None
        # Heartbeat, driven by the node's timing wheel.
        self.hb_slot = 0
        self.set_heartbeat(settings.heartbeat_interval, settings.heartbeat_timeout)
        self.pong_deadline = math.inf
        self._pings = 0

    # -- lifetime -----------------------------------------------------------------
    async def run(self) -> None:
        """Serve the connection until it ends; the failure boundary of one connection.

        An unexpected exception anywhere in the connection's tasks (its reader, which also
        runs the core for its events, or its writer) is logged once with its traceback and
        ends this connection with 1011; nothing else is touched (§1.1 failure isolation).
        Cancellation passes through untouched.
        """
        try:
            try:
                async with trio.open_nursery() as nursery:
                    self._nursery = nursery
                    try:
                        self.on_open()
                        await self._reader()
                        if self._closing is not None and self._close_sent is not None:
                            with trio.move_on_after(CLOSE_GRACE):
                                await self._close_sent.wait()
                        nursery.cancel_scope.cancel()
                    finally:
                        self._nursery = None  # closed to new arrivals from here on
            except* Exception:
                log.exception("connection failed (%s, %s); closing it with 1011",
                              self.endpoint, self.ip)
                await self._fail_close()
        finally:
            with trio.CancelScope(shield=True):
                try:
                    self.on_close()
                except Exception:
                    log.exception("error while ending a connection")
                with trio.move_on_after(0.5):
                    await self.stream.aclose()

    @property
    def close_reason(self) -> str:
        return self._closing[1] if self._closing is not None else "connection lost"

    @property
    def handed_off(self) -> bool:
        return self._closing is HANDED_OFF

    @property
    def clean(self) -> bool:
        """Nothing of the connection's state lives outside the socket and its codec:
        it may move to another process (``relay.cluster.handoff``)."""
        return not (self._fd < 0 or self._writing or self._partial or self._control
                    or self._pong is not None or self.has_pending
                    or self._closing is not None or self.peer_closed
                    or self._frames.buffered)

    @property
    def fd(self) -> int:
        return self._fd

    def hand_off(self) -> None:
        """The socket now belongs to another process: stop reading, never write again,
        and end without a close frame (only our descriptor closes)."""
        self._accepting = False
        self._closing = HANDED_OFF
        self.close_code = 1000
        self.peer_closed = True

    async def _fail_close(self) -> None:
        """After a failure: a 1011 close frame if the wire is between frames, then the end."""
        self._accepting = False
        self.close_code = 1011
        self.discard()
        self._control.clear()
        if self._wire_dirty or self.peer_closed or self._fd < 0:
            return  # a frame may be half written, or nobody listens: just drop TCP
        data = self._partial + wsframe.close_frame(1011, "internal error")
        with trio.move_on_after(0.5) as scope:
            scope.shield = True
            try:
                await self.stream.send_all(data)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                pass

    def on_open(self) -> None:
        """Called once the connection runs (Socket.IO sends its open packet here)."""

    def on_close(self) -> None:
        """Called once when the connection is gone."""
        self.host.connection_closed(self)  # type: ignore[arg-type]

    # -- reading ------------------------------------------------------------------
    async def _reader(self) -> None:
        await self._feed(b"")  # frames that arrived with the handshake
        drained = False
        while not self.peer_closed:
            data = await receive(self._fd, self.stream, drained)
            if not data:
                self.peer_closed = True
                self._abort(1006, "connection lost")
                return
            # A short read emptied the socket: the next read would only fail with EAGAIN.
            drained = len(data) < READ_SIZE
            await self._feed(data)
            if not drained:
                # The next read will not wait (more is there): let other connections run
                # first, so a peer that never stops sending cannot hold the loop (§2.1).
                await trio.lowlevel.checkpoint()

    async def _feed(self, data: bytes) -> None:
        controls = 0
        for opcode, payload in self._frames.feed(data):
            if opcode == TEXT:
                if self._closing is not None:
                    continue
                self.host.metrics.bytes_in(self.endpoint, size_of(payload))
                pending = self.handle_text(payload)
                if pending is not None:
                    await pending
                # Let other connections run between messages of a busy one.
                await trio.lowlevel.checkpoint()
            elif opcode in (PING, PONG):
                if self._control_allowed():
                    if opcode == PING:
                        self.send_pong(wsframe.pong_frame(payload))
                    elif payload == str(self._pings).encode():  # answers our latest ping
                        self.pong_deadline = math.inf
                controls += 1
                if controls % CONTROL_BATCH == 0:
                    await trio.lowlevel.checkpoint()  # a stream of control frames yields too
            elif opcode == BINARY:
                if self._closing is not None:
                    continue
                pending = self.handle_binary(payload)
                if pending is not None:
                    await pending
                await trio.lowlevel.checkpoint()
            elif opcode == CLOSE:
                self.peer_closed = True
                if self._closing is None:
                    code = payload[0]
                    self.close(code if code in (1000, 1001) else 1000, "bye")
                return
            elif opcode == FAIL:
                self.peer_closed = True
                self.close(*payload)  # the reader's close code and reason
                return

    def _control_allowed(self) -> bool:
        """Control frames take no message tokens (§2.2) but have a bucket of their own.

        Without it a client could make the server answer pings as fast as it can send them.
        A control frame beyond the budget is dropped unanswered; sustained, the connection
        is closed with 4008 like any flood (protocol Appendix D).
        """
        limiter = self._control_limiter
        now = trio.current_time()
        if limiter is None:
            s = self.settings
            limiter = self._control_limiter = RateLimiter(
                s.rate_limit_rate, s.rate_limit_burst, s.rate_limit_close_after, now)
        if limiter.take(now):
            return True
        if limiter.drop(now)[1]:
            self.close(4008, "rate limited")
        return False

    def handle_text(self, text: str) -> Awaitable[None] | None:
        """Handle one message; may return an awaitable (scale-out routing)."""
        raise NotImplementedError

    def handle_binary(self, payload: bytes) -> Awaitable[None] | None:
        raise NotImplementedError

    # -- writing ------------------------------------------------------------------
    def push(self, frame: bytes, after: int | None = None) -> None:
        """Queue an unsequenced frame; ``after`` <= cursor places it before the replay."""
        if not self._accepting:
            return
        if self.before_replay(after):
            self._pre.append(frame)
            self._kick()
        elif not self._write_now(frame):
            self._enqueue(frame, len(frame))

    def sequenced(self, out: Any, seq: int, size: int) -> None:
        """A live sequenced event for our participant (already in its replay buffer)."""
        if not self._accepting or seq <= self.replay_end:
            return
        if self._can_write_now() and self._write_direct(self.encode_sequenced(out, seq)):
            self.cursor = seq
            return
        self._enqueue((out, seq), size)

    def send_control(self, frame: bytes) -> None:
        """A heartbeat ping: ahead of queued events (at most one is ever pending)."""
        if self._closing is None and not self._write_now(frame):
            self._control.append(frame)
            self._kick()

    def send_pong(self, frame: bytes) -> None:
        """A pong: ahead of queued events; a newer one replaces an unsent one (RFC 6455
        §5.5.3 allows it), so a client that pings and never reads holds one frame here."""
        if self._closing is None and not self._write_now(frame):
            self._pong = frame
            self._kick()

    def _can_write_now(self) -> bool:
        return not (self._writing or self._partial or self._control or self._pong is not None
                    or self._pre or self._queue or self._fd < 0 or self._closing is not None)

    def _write_now(self, frame: bytes) -> bool:
        """The fast path: write straight into the socket while nothing is pending.

        A frame then goes to the kernel from the task that produced it, without waking a
        writer task: a broadcast costs one encode (or none) and one non-blocking ``send``
        per recipient. Whatever the kernel does not take is finished by a writer task
        before anything else (never a frame inside a frame).
        """
        return self._can_write_now() and self._write_direct(frame)

    def _write_direct(self, frame: bytes) -> bool:
        """``_write_now`` once the caller knows that nothing is pending."""
        try:
            n = os.write(self._fd, frame)
        except BlockingIOError:
            n = 0
        except OSError:
            return False  # let a writer task meet the error
        self.host.metrics.bytes_out(self.endpoint, n)
        if n < len(frame):
            self._partial = frame[n:]  # goes first, before anything else (even a close)
            self._kick()
        return True

    def _enqueue(self, item: bytes | tuple[Any, int], size: int) -> None:
        s = self.settings
        if not self.fits(size, s.send_queue_frames, s.send_queue_bytes):
            self.close(4002, "slow consumer")
            return
        self.enqueue(item, size)
        self._kick()

    def attach(self, cursor: int, replay_end: int, pinned: list[Any]) -> None:
        super().attach(cursor, replay_end, pinned)
        if cursor < replay_end:
            self._kick()

    def _kick(self) -> None:
        """Make sure a writer task runs (it ends by itself once everything is out)."""
        if not self._writing and self._nursery is not None:
            self._writing = True
            self._nursery.start_soon(self._writer)

    def _has_pending(self) -> bool:
        return bool(self._partial or self._control or self._pong is not None
                    or self.has_pending)

    def _next_batch(self) -> list[bytes]:
        batch = [self._partial] if self._partial else []
        self._partial = b""
        if self._control:
            batch.extend(self._control)
            self._control = []
        if self._pong is not None:
            batch.append(self._pong)
            self._pong = None
        self.take(self.encode_sequenced, MAX_BATCH_BYTES, batch)
        return batch

    def encode_sequenced(self, out: Any, seq: int) -> bytes:
        raise NotImplementedError

    async def _send(self, data: bytes) -> bool:
        """Write ``data``; False when a closing deadline cut the write short.

        A cut write leaves a partial frame on the wire, so nothing more may be sent.
        """
        with trio.CancelScope(deadline=self._send_deadline) as scope:
            self._send_scope = scope
            self._wire_dirty = True
            await self.stream.send_all(data)
            self._wire_dirty = False
        self._send_scope = None
        return not scope.cancelled_caught

    async def _writer(self) -> None:
        metrics = self.host.metrics
        try:
            while True:
                pending = self._has_pending()
                if self._closing is not None:
                    if not pending or trio.current_time() >= self._flush_deadline:
                        await self._send_close()
                        return
                elif not pending:
                    return
                batch = self._next_batch()
                if batch:
                    data = b"".join(batch)
                    metrics.bytes_out(self.endpoint, len(data))
                    if not await self._send(data):
                        self._abort(self.close_code or 1006, "write timed out")
                        return
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            self._abort(self.close_code or 1006, "connection lost")
        finally:
            self._writing = False

    async def _send_close(self) -> None:
        """The close frame, after the rest of a partly written frame (never inside one)."""
        assert self._closing is not None
        code, reason = self._closing
        if self.close_code != 1006:
            self._send_deadline = trio.current_time() + CLOSE_GRACE
            data = self._partial + self.close_preamble(code) + wsframe.close_frame(code, reason)
            self._partial = b""
            await self._send(data)
        self._closed_out()

    def _closed_out(self) -> None:
        """Our close frame is out (or can't be sent): wait briefly for the peer's, then end."""
        if self._close_sent is not None:
            self._close_sent.set()
        # The connection's own nursery scope bounds the rest (no extra scope per
        # connection: idle connections are the common case, W3 in bench/).
        if self._nursery is not None:
            scope = self._nursery.cancel_scope
            if self.peer_closed:
                scope.cancel()
            else:
                scope.deadline = min(scope.deadline, trio.current_time() + CLOSE_WAIT)

    def close_preamble(self, code: int) -> bytes:
        return b""

    # -- closing ------------------------------------------------------------------
    def close(self, code: int, reason: str, *, flush: bool = False,
              flush_timeout: float = CLOSE_WAIT) -> None:
        """Start closing with ``code``; with ``flush``, queued frames go out first."""
        if self._closing is not None:
            return
        self._closing = (code, reason)
        self.close_code = code
        self._close_sent = trio.Event()
        now = trio.current_time()
        if flush:
            self._flush_deadline = now + flush_timeout
        else:
            self._accepting = False
            self._flush_deadline = now
            self.discard()
            self._control.clear()
            self._pong = None
        # A write in progress (a peer that stopped reading) gets a bounded grace.
        self._send_deadline = max(self._flush_deadline, now + CLOSE_GRACE)
        if self._send_scope is not None:
            self._send_scope.deadline = self._send_deadline
        self._kick()

    def _abort(self, code: int, reason: str) -> None:
        """The peer is gone (or the stream is unusable): no close frame can be sent."""
        self._accepting = False
        if self._closing is None:
            self._closing = (code, reason)
            self.close_code = code
        self.discard()
        self._control.clear()
        self._pong = None
        self._partial = b""
        self.peer_closed = True
        self._closed_out()

    # -- heartbeat (called by the node's timing wheel) --------------------------------
    def set_heartbeat(self, interval: float, timeout: float) -> None:
        self.hb_interval = interval
        self.hb_timeout = timeout
        self.ping_due = trio.current_time() + first_ping_delay(interval)

    def heartbeat_due(self) -> float:
        """When ``heartbeat`` has something to do next."""
        return min(self.ping_due, self.pong_deadline)

    def heartbeat(self, now: float) -> float:
        """Ping when due, close with 4004 when a pong is late; returns the next check."""
        if self._closing is not None:
            return math.inf
        if now >= self.pong_deadline:
            self.close(4004, "heartbeat timeout")
            return math.inf
        if now >= self.ping_due:
            self.ping_due = now + self.hb_interval
            if self.pong_deadline == math.inf:
                self.pong_deadline = now + self.hb_timeout
            self.send_control(self.ping_frame())
        return self.heartbeat_due()

    def ping_frame(self) -> bytes:
        self._pings += 1
        return wsframe.ping_frame(str(self._pings).encode())
