"""One WebSocket connection: reader, writer and heartbeat tasks in one nursery.

Incoming bytes are parsed by ``wsproto`` (masking, fragmentation, UTF-8, control frames);
outgoing frames are built by ``wsframe`` and written by the writer task, which sends
everything pending in one ``send_all``. The outgoing side is a bounded queue of
frames (sequenced events are queued by reference, encoded only when written), and an
attach streams its replay from the participant's replay buffer (protocol §2.3, Appendix C).
"""

from __future__ import annotations

import logging
import os
from collections import deque
from typing import TYPE_CHECKING, cast

import trio
from wsproto.connection import Connection as WsConnection
from wsproto.connection import ConnectionType
from wsproto.events import BytesMessage, CloseConnection, Ping, Pong, TextMessage
from wsproto.utilities import LocalProtocolError, RemoteProtocolError

from relay.core.model import Participant
from relay.core.outgoing import Outgoing

from . import wsframe

if TYPE_CHECKING:
    from relay.server import RelayServer

log = logging.getLogger("relay.transport")

MAX_BATCH_BYTES = 512 * 1024
CLOSE_WAIT = 2.0  # flushing closes (room closed) and waiting for the peer's close frame
CLOSE_GRACE = 5.0  # longest a write may block once the connection is closing

# Close codes to the metric's disconnect reasons.
CLOSE_REASONS = {
    1000: "normal", 1001: "shutdown", 1002: "protocol", 1007: "protocol", 1008: "protocol",
    1009: "too_large", 1011: "internal", 4000: "room_closed", 4001: "kicked",
    4002: "slow_consumer", 4003: "replaced", 4004: "heartbeat", 4008: "rate_limited",
}


class WebSocketConnection:
    """Framing, queues and lifetime shared by every endpoint; subclasses handle messages."""

    endpoint = "observer"

    def __init__(self, server: RelayServer, stream: trio.abc.Stream, ip: str,
                 trailing: bytes) -> None:
        self.server = server
        self.config = server.config
        self.stream = stream
        self.ip = ip
        self._ws = WsConnection(ConnectionType.SERVER, trailing_data=trailing)
        self._control: list[bytes] = []
        self._pre: list[bytes] = []
        self._queue: deque[tuple[bytes | tuple[Outgoing, int], int]] = deque()
        self._queue_bytes = 0
        self._wake = trio.Event()
        self._idle = False  # the writer waits for work: the fast path may write directly
        try:
            self._fd = stream.socket.fileno()  # type: ignore[attr-defined]
        except (AttributeError, OSError):
            self._fd = -1
        self._closing: tuple[int, str] | None = None
        # Frames are still taken while a flushing close drains (e.g. the ack of room/close).
        self._accepting = True
        self._flush_deadline = float("inf")
        self._send_deadline = float("inf")
        self._send_scope: trio.CancelScope | None = None
        self._closed = trio.Event()  # our close frame is out
        self._peer_closed = trio.Event()
        self._pong = trio.Event()
        self._partial: list[str | bytes] = []
        self._partial_size = 0
        self.close_code: int | None = None
        # Observer participants (unused on /ws).
        self.participant: Participant | None = None
        self.cursor = 0  # highest seq written (or skipped, on a fresh attach)
        self.replay_end = 0  # the replay streams seqs (cursor, replay_end]
        self._nursery: trio.Nursery | None = None

    # -- lifetime -----------------------------------------------------------------
    async def run(self) -> None:
        try:
            async with trio.open_nursery() as nursery:
                self._nursery = nursery
                nursery.start_soon(self._reader)
                nursery.start_soon(self._writer)
                nursery.start_soon(self._heartbeat)
                self.on_open()
                await self._closed.wait()
                # Give the peer a moment to answer our close frame, then hang up.
                with trio.move_on_after(CLOSE_WAIT):
                    await self._peer_closed.wait()
                nursery.cancel_scope.cancel()
        finally:
            with trio.CancelScope(shield=True):
                try:
                    self.on_close()
                except Exception:
                    log.exception("error while ending a connection")
                with trio.move_on_after(0.5):
                    await self.stream.aclose()

    def on_open(self) -> None:
        """Called once the tasks run (Socket.IO sends its open packet here)."""

    def on_close(self) -> None:
        """Called once when the connection is gone."""

    # -- reading ------------------------------------------------------------------
    async def _reader(self) -> None:
        max_size = self.config.max_message_size
        await self._feed(b"", max_size)  # frames that arrived with the handshake
        while not self._peer_closed.is_set():
            try:
                data = await self.stream.receive_some(65536)
            except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
                data = b""
            if not data:
                self._peer_closed.set()
                self._abort(1006, "connection lost")
                return
            await self._feed(cast(bytes, data), max_size)

    async def _feed(self, data: bytes, max_size: int) -> None:
        try:
            if data:
                self._ws.receive_data(data)
            for event in self._ws.events():
                if isinstance(event, TextMessage | BytesMessage):
                    chunk: str | bytes = bytes(event.data) if isinstance(
                        event, BytesMessage) else event.data
                    size = len(chunk) if isinstance(chunk, bytes) else size_of(chunk)
                    self._partial_size += size
                    if self._partial_size > max_size:
                        self.close(1009, "message too big")
                        self._peer_closed.set()
                        return
                    if self._closing is not None:
                        continue
                    self._partial.append(chunk)
                    if event.message_finished:
                        parts, self._partial, self._partial_size = self._partial, [], 0
                        if isinstance(event, TextMessage):
                            text = cast(str, parts[0]) if len(parts) == 1 else "".join(
                                cast(list[str], parts))
                            self.server.metrics.bytes_in(self.endpoint, size_of(text))
                            self.handle_text(text)
                        else:
                            self.handle_binary()
                        # Let other tasks (and our writer) run between messages.
                        await trio.lowlevel.checkpoint()
                elif isinstance(event, Ping):
                    self._control.append(wsframe.pong_frame(event.payload))
                    self._wake.set()
                elif isinstance(event, Pong):
                    self._pong.set()
                elif isinstance(event, CloseConnection):
                    self._peer_closed.set()
                    if self._closing is None:
                        self.close(event.code if event.code in (1000, 1001) else 1000, "bye",
                                   echo=True)
                    return
        except RemoteProtocolError as exc:
            code = int(exc.event_hint.code) if hasattr(exc.event_hint, "code") else 1002  # type: ignore[union-attr]
            self.close(code if code in (1002, 1007, 1009) else 1002, "protocol error")
            self._peer_closed.set()
        except LocalProtocolError:
            self._peer_closed.set()

    def handle_text(self, text: str) -> None:
        raise NotImplementedError

    def handle_binary(self) -> None:
        raise NotImplementedError

    # -- writing ------------------------------------------------------------------
    # Outgoing order: control frames (pongs, pings), then ``_pre`` (the reply frames of an
    # attach), then the replay range (cursor, replay_end] streamed from the participant's
    # replay buffer, then ``_queue`` in enqueue order. Only ``_queue`` counts against the
    # §2.3 bound: a replay after 4002 may be longer than the queue (Appendix C).
    def push(self, frame: bytes, after: int | None = None) -> None:
        """Queue an unsequenced frame; ``after`` <= cursor places it before the replay."""
        if not self._accepting:
            return
        if after is not None and self.cursor < self.replay_end and after <= self.cursor:
            self._pre.append(frame)
        elif not (self._idle and self._write_now(frame)):
            self._enqueue(frame, len(frame))
        self._wake.set()

    def sequenced(self, out: Outgoing, seq: int, size: int) -> None:
        """A live sequenced event for our participant (already in its replay buffer)."""
        if not self._accepting or seq <= self.replay_end:
            return
        if self._idle and self._write_now(self.encode_sequenced(out, seq)):
            self.cursor = seq
            return
        self._enqueue((out, seq), size)
        self._wake.set()

    def _write_now(self, frame: bytes) -> bool:
        """The fast path: write straight into the socket while the writer is idle.

        With nothing queued, a frame can go to the kernel from the task that produced it,
        without waking this connection's writer task: a broadcast then costs one encode
        and one non-blocking ``send`` per recipient. Whatever the kernel does not take
        becomes the writer's first frame, so order is kept.
        """
        if self._control or self._pre or self._queue or self._fd < 0:
            return False
        try:
            n = os.write(self._fd, frame)
        except BlockingIOError:
            n = 0
        except OSError:
            return False  # let the writer meet the error
        self.server.metrics.bytes_out(self.endpoint, n)
        if n < len(frame):
            self._control.append(frame[n:])
            self._wake.set()
        return True

    def _enqueue(self, item: bytes | tuple[Outgoing, int], size: int) -> None:
        if (len(self._queue) >= self.config.send_queue_frames
                or self._queue_bytes + size > self.config.send_queue_bytes):
            self.close(4002, "slow consumer")
            return
        self._queue.append((item, size))
        self._queue_bytes += size

    def attach(self, participant: Participant, cursor: int, replay_end: int) -> None:
        self.participant = participant
        self.cursor = cursor
        self.replay_end = replay_end
        self._wake.set()

    def detach(self) -> None:
        """Unbound again (room/leave): what is queued still goes out, the replay stops."""
        self.participant = None
        self.replay_end = self.cursor

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

    def _has_pending(self) -> bool:
        return bool(self._queue) or bool(self._pre) or (
            self.participant is not None and self.cursor < self.replay_end)

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
                pending = bool(self._control) or self._has_pending()
                if self._closing is not None and (
                    not pending or trio.current_time() >= self._flush_deadline
                ):
                    break
                if not pending:
                    self._wake = trio.Event()
                    self._idle = True
                    try:
                        await self._wake.wait()
                    finally:
                        self._idle = False
                    continue
                batch = self._next_batch()
                if batch:
                    data = b"".join(batch)
                    metrics.bytes_out(self.endpoint, len(data))
                    if not await self._send(data):
                        return
            assert self._closing is not None
            code, reason = self._closing
            if self.close_code != 1006:
                self._send_deadline = trio.current_time() + CLOSE_GRACE
                await self._send(self.close_preamble(code) + wsframe.close_frame(code, reason))
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            self._peer_closed.set()
        finally:
            self._closed.set()

    def close_preamble(self, code: int) -> bytes:
        return b""

    # -- closing ------------------------------------------------------------------
    def close(self, code: int, reason: str, *, flush: bool = False, echo: bool = False,
              flush_timeout: float = CLOSE_WAIT) -> None:
        """Start closing with ``code``; with ``flush``, queued frames go out first."""
        if self._closing is not None:
            return
        self._closing = (code, reason)
        self.close_code = code
        now = trio.current_time()
        if flush:
            self._flush_deadline = now + flush_timeout
        else:
            self._accepting = False
            self._flush_deadline = now
        # A write in progress (a peer that stopped reading) gets a bounded grace.
        self._send_deadline = max(self._flush_deadline, now + CLOSE_GRACE)
        if self._send_scope is not None:
            self._send_scope.deadline = self._send_deadline
            self._queue.clear()
            self._pre.clear()
            self._queue_bytes = 0
            self.participant = None
        self._wake.set()

    def _abort(self, code: int, reason: str) -> None:
        """The peer is gone: no close frame can be sent."""
        self._accepting = False
        if self._closing is None:
            self._closing = (code, reason)
            self.close_code = code
            self._flush_deadline = trio.current_time()
            self._queue.clear()
            self._pre.clear()
            self.participant = None
        self._wake.set()

    # -- heartbeat ----------------------------------------------------------------
    async def _heartbeat(self) -> None:
        interval = self.config.heartbeat_interval
        timeout = self.config.heartbeat_timeout
        n = 0
        while True:
            await trio.sleep(interval)
            n += 1
            self._pong = trio.Event()
            self._control.append(wsframe.ping_frame(str(n).encode()))
            self._wake.set()
            with trio.move_on_after(timeout):
                await self._pong.wait()
            if not self._pong.is_set():
                self.close(4004, "heartbeat timeout")
                return


def size_of(text: str) -> int:
    return len(text) if text.isascii() else len(text.encode("utf-8"))
