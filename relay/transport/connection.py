"""One WebSocket connection: the handler task reads; a writer task runs only when needed.

Incoming bytes are parsed by ``wsread`` (masking, fragmentation, UTF-8, control frames,
the size limit); outgoing frames are built by ``wsframe``. An idle connection costs one
task (its reader): frames are written straight into the socket by whichever task
produced them while nothing is queued (the fast path), a writer task is started only when
the kernel pushes back or a replay must be streamed, and heartbeats are driven by one
server-wide timer.

The outgoing side is a bounded queue of frames and references to sequenced events, and an
attach streams its replay from the participant's replay buffer (protocol §2.3, Appendix C).
"""

from __future__ import annotations

import logging
import math
import os
from collections import deque
from collections.abc import Awaitable
from typing import TYPE_CHECKING, cast

import trio

from relay.core.model import Participant
from relay.core.outgoing import Outgoing

from . import wsframe
from .heartbeat import first_ping_delay
from .wsread import BINARY, CLOSE, FAIL, PING, PONG, TEXT, FrameReader

if TYPE_CHECKING:
    from relay.server import RelayServer

log = logging.getLogger("relay.transport")

MAX_BATCH_BYTES = 512 * 1024
READ_SIZE = 65536
CLOSE_WAIT = 2.0  # flushing closes (room closed) and waiting for the peer's close frame
CLOSE_GRACE = 5.0  # longest a write may block once the connection is closing

# Close codes to the metric's disconnect reasons.
CLOSE_REASONS = {
    1000: "normal", 1001: "shutdown", 1002: "protocol", 1007: "protocol", 1008: "protocol",
    1009: "too_large", 1011: "internal", 4000: "room_closed", 4001: "kicked",
    4002: "slow_consumer", 4003: "replaced", 4004: "heartbeat", 4008: "rate_limited",
}


HANDED_OFF = (1000, "handed off")  # ``_closing`` of a socket given to another process

_NO_QUEUE: deque[tuple[bytes | tuple[Outgoing, int], int]] = deque(maxlen=0)


class WebSocketConnection:
    """Framing, queues and lifetime shared by every endpoint; subclasses handle messages.

    Slots and lazily created queues keep an idle connection small (W3 in bench/).
    """

    __slots__ = (
        "_accepting", "_close_sent", "_closing", "_control", "_fd", "_flush_deadline", "_frames",
        "_nursery", "_pings", "_pre", "_queue", "_queue_bytes",
        "_send_deadline", "_send_scope", "_writing", "close_code", "config", "cursor",
        "endpoint", "hb_interval", "hb_slot", "hb_timeout", "ip", "participant", "peer_closed",
        "ping_due", "pong_deadline", "replay_end", "server", "stream",
    )

    def __init__(self, server: RelayServer, stream: trio.SocketStream, ip: str,
                 trailing: bytes) -> None:
        self.endpoint = "observer"
        self.server = server
        self.config = server.config
        self.stream = stream
        self.ip = ip
        self._frames = FrameReader(self.config.max_message_size, trailing)
        try:
            self._fd = stream.socket.fileno()
        except (AttributeError, OSError):
            self._fd = -1
        self._nursery: trio.Nursery | None = None
        # Outgoing order: control frames (pongs, pings, a partly written frame), ``_pre``
        # (the reply frames of an attach), the replay range (cursor, replay_end] streamed
        # from the participant's replay buffer, then ``_queue`` in enqueue order. Only
        # ``_queue`` counts against the §2.3 bound.
        self._control: list[bytes] = []
        self._pre: list[bytes] = []
        self._queue = _NO_QUEUE  # replaced by a real deque on first use
        self._queue_bytes = 0
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
        # Heartbeat, driven by ``RelayServer``'s timing wheel.
        self.hb_slot = 0
        self.set_heartbeat(self.config.heartbeat_interval, self.config.heartbeat_timeout)
        self.pong_deadline = math.inf
        self._pings = 0
        # Observer participants (unused on /ws).
        self.participant: Participant | None = None
        self.cursor = 0  # highest seq written (or skipped, on a fresh attach)
        self.replay_end = 0  # the replay streams seqs (cursor, replay_end]

    # -- lifetime -----------------------------------------------------------------
    async def run(self) -> None:
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
        finally:
            with trio.CancelScope(shield=True):
                try:
                    self.on_close()
                except Exception:
                    log.exception("error while ending a connection")
                with trio.move_on_after(0.5):
                    await self.stream.aclose()

    @property
    def handed_off(self) -> bool:
        return self._closing is HANDED_OFF

    def hand_off(self) -> None:
        """The socket now belongs to another process (``relay.handoff``): stop reading,
        never write again, and end without a close frame (only our descriptor closes)."""
        self._accepting = False
        self._closing = HANDED_OFF
        self.close_code = 1000
        self.peer_closed = True

    def on_open(self) -> None:
        """Called once the connection runs (Socket.IO sends its open packet here)."""

    def on_close(self) -> None:
        """Called once when the connection is gone."""

    # -- reading ------------------------------------------------------------------
    async def _reader(self) -> None:
        await self._feed(b"")  # frames that arrived with the handshake
        drained = False
        while not self.peer_closed:
            data = await self._receive(drained)
            if not data:
                self.peer_closed = True
                self._abort(1006, "connection lost")
                return
            # A short read emptied the socket: the next read would only fail with EAGAIN.
            drained = len(data) < READ_SIZE
            await self._feed(data)

    @property
    def reader_drained(self) -> bool:
        """Nothing read from the socket is held back (no part of a frame or message)."""
        return self._frames.buffered == 0

    async def _receive(self, drained: bool = False) -> bytes:
        """The next bytes from the peer (b"" once it is gone).

        Reads the non-blocking socket directly and waits with ``wait_readable`` only when
        it is empty, or first when the caller knows it is (``drained``: epoll reports data
        that is already there, so nothing is missed). Besides saving the stream layers'
        work per read, this matters for pauses: a waiting reader is a chain of fresh
        coroutine objects, and with thousands of connections those chains are most of the
        young GC generation (bench W4); this wait is about a third the size of
        ``receive_some``'s.
        """
        fd = self._fd
        if fd < 0:
            try:
                return cast(bytes, await self.stream.receive_some(READ_SIZE))
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                return b""
        while True:
            if not drained:
                try:
                    return os.read(fd, READ_SIZE)
                except BlockingIOError:
                    pass
                except OSError:
                    return b""
            drained = False
            try:
                await trio.lowlevel.wait_readable(fd)
            except (trio.ClosedResourceError, trio.BusyResourceError, OSError):
                return b""

    async def _feed(self, data: bytes) -> None:
        for opcode, payload in self._frames.feed(data):
            if opcode == TEXT:
                if self._closing is not None:
                    continue
                self.server.metrics.bytes_in(self.endpoint, size_of(payload))
                pending = self.handle_text(payload)
                if pending is not None:
                    await pending
                # Let other connections run between messages of a busy one.
                await trio.lowlevel.checkpoint()
            elif opcode == PING:
                self.send_control(wsframe.pong_frame(payload))
            elif opcode == PONG:
                self.pong_deadline = math.inf
            elif opcode == BINARY:
                if self._closing is not None:
                    continue
                pending = self.handle_binary()
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

    def handle_text(self, text: str) -> Awaitable[None] | None:
        """Handle one message; may return an awaitable (scale-out routing)."""
        raise NotImplementedError

    def handle_binary(self) -> Awaitable[None] | None:
        raise NotImplementedError

    # -- writing ------------------------------------------------------------------
    def push(self, frame: bytes, after: int | None = None) -> None:
        """Queue an unsequenced frame; ``after`` <= cursor places it before the replay."""
        if not self._accepting:
            return
        if after is not None and self.cursor < self.replay_end and after <= self.cursor:
            self._pre.append(frame)
            self._kick()
        elif not self._write_now(frame):
            self._enqueue(frame, len(frame))

    def sequenced(self, out: Outgoing, seq: int, size: int) -> None:
        """A live sequenced event for our participant (already in its replay buffer)."""
        if not self._accepting or seq <= self.replay_end:
            return
        if self._can_write_now() and self._write_direct(self.encode_sequenced(out, seq)):
            self.cursor = seq
            return
        self._enqueue((out, seq), size)

    def send_control(self, frame: bytes) -> None:
        """A ping, pong or framing-level frame: ahead of queued events."""
        if self._closing is None and not self._write_now(frame):
            self._control.append(frame)
            self._kick()

    def _can_write_now(self) -> bool:
        return not (self._writing or self._control or self._pre or self._queue
                    or self._fd < 0 or self._closing is not None)

    def _write_now(self, frame: bytes) -> bool:
        """The fast path: write straight into the socket while nothing is pending.

        A frame then goes to the kernel from the task that produced it, without waking a
        writer task: a broadcast costs one encode (or none) and one non-blocking ``send``
        per recipient. Whatever the kernel does not take becomes the first frame of a
        writer task, so order is kept.
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
        self.server.metrics.bytes_out(self.endpoint, n)
        if n < len(frame):
            self._control.append(frame[n:])
            self._kick()
        return True

    def _enqueue(self, item: bytes | tuple[Outgoing, int], size: int) -> None:
        if (len(self._queue) >= self.config.send_queue_frames
                or self._queue_bytes + size > self.config.send_queue_bytes):
            self.close(4002, "slow consumer")
            return
        if self._queue is _NO_QUEUE:
            self._queue = deque()
        self._queue.append((item, size))
        self._queue_bytes += size
        self._kick()

    def attach(self, participant: Participant, cursor: int, replay_end: int) -> None:
        self.participant = participant
        self.cursor = cursor
        self.replay_end = replay_end
        if cursor < replay_end:
            self._kick()

    def detach(self) -> None:
        """Unbound again (room/leave): what is queued still goes out, the replay stops."""
        self.participant = None
        self.replay_end = self.cursor

    def _kick(self) -> None:
        """Make sure a writer task runs (it ends by itself once everything is out)."""
        if not self._writing and self._nursery is not None:
            self._writing = True
            self._nursery.start_soon(self._writer)

    def _has_pending(self) -> bool:
        return bool(self._control or self._pre or self._queue) or (
            self.participant is not None and self.cursor < self.replay_end)

    def _next_batch(self) -> list[bytes]:
        batch = self._control
        self._control = []
        if self._pre:
            batch.extend(self._pre)
            self._pre = []
        size = 0
        p = self.participant
        encode = self.encode_sequenced
        while p is not None and self.cursor < self.replay_end and size < MAX_BATCH_BYTES:
            seq = self.cursor + 1
            if seq < p.replay.first_seq:
                self.close(4002, "slow consumer")  # the replay fell behind eviction
                return batch
            out, _ = p.replay.get(seq)
            frame = encode(out, seq)
            batch.append(frame)
            size += len(frame)
            self.cursor = seq
        queue = self._queue
        while queue and size < MAX_BATCH_BYTES:
            item, item_size = queue.popleft()
            self._queue_bytes -= item_size
            if isinstance(item, tuple):
                out, seq = item
                frame = encode(out, seq)
                self.cursor = seq
            else:
                frame = item
            batch.append(frame)
            size += len(frame)
        return batch

    def encode_sequenced(self, out: Outgoing, seq: int) -> bytes:
        raise NotImplementedError

    async def _send(self, data: bytes) -> bool:
        """Write ``data``; False when a closing deadline cut the write short.

        A cut write leaves a partial frame on the wire, so nothing more may be sent.
        """
        with trio.CancelScope(deadline=self._send_deadline) as scope:
            self._send_scope = scope
            await self.stream.send_all(data)
        self._send_scope = None
        return not scope.cancelled_caught

    async def _writer(self) -> None:
        metrics = self.server.metrics
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
        assert self._closing is not None
        code, reason = self._closing
        if self.close_code != 1006:
            self._send_deadline = trio.current_time() + CLOSE_GRACE
            await self._send(self.close_preamble(code) + wsframe.close_frame(code, reason))
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
            self._queue.clear()
            self._pre.clear()
            self._queue_bytes = 0
            self.participant = None
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
        self._queue.clear()
        self._pre.clear()
        self._control.clear()
        self.participant = None
        self.peer_closed = True
        self._closed_out()

    # -- heartbeat (called by the server's timing wheel) ------------------------------
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


def size_of(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8"))
