"""The owner's stand-in for a client connection held by another node.

It is a ``relay.ports.Peer`` like a local connection, and keeps the same order rules (it is
the same ``relay.outbox.Outbox``): attach replies, then the replay range, then live
frames. Where a local connection writes to its socket, this one collects encoded frames
that the cluster publishes to the client's node after each command — one message per
node per command, in order.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from relay.core.context import Session
from relay.outbox import Outbox
from relay.ports import EventError, Ref

from .wire import Close, Frames, Message

#: The replay a stand-in publishes at once is not bounded by a socket: a resume of many
#: events goes out in messages of about this size.
BUDGET = 1 << 62


class RemoteConn(Outbox):
    __slots__ = ("_closing", "_touch", "codec", "conn", "endpoint", "node", "released",
                 "sent", "session")

    def __init__(self, node: str, conn: int, endpoint: str, ip: str, codec: Any,
                 touch: Callable[[RemoteConn], None]) -> None:
        super().__init__()
        self.node = node  # the client's node
        self.conn = conn  # its id for the connection
        self.endpoint = endpoint
        self.codec = codec
        self.session = Session(ip=ip)
        self.released = False
        self.sent = 0  # number of the last command received from the client's node
        self._closing: tuple[int, str, bool] | None = None
        self._touch = touch  # tells the cluster this stand-in has something to publish

    def push(self, frame: bytes, after: int | None = None) -> None:
        if self._closing is not None and not self._closing[2]:
            return
        if self.before_replay(after):
            self._pre.append(frame)
        else:
            self.enqueue(frame, len(frame))
        self._touch(self)

    def send_event(self, out: Any, after: int | None = None) -> None:
        self.push(self.codec.event_frame(out, None), after)

    def sequenced(self, out: Any, seq: int, size: int) -> None:
        if self.replayed(seq) or (self._closing is not None and not self._closing[2]):
            return
        self.enqueue((out, seq), size)
        self._touch(self)

    def send_error(self, code: str, message: str, event: str | None, ref: Ref | None) -> None:
        self.push(self.codec.error_frame(code, message, event, ref))

    def send_ack(self, ref: Ref, error: EventError | None) -> None:
        self.push(self.codec.ack_frame(ref, error))

    def attach(self, cursor: int, replay_end: int, pinned: list[Any]) -> None:
        super().attach(cursor, replay_end, pinned)
        self._touch(self)

    def close(self, code: int, reason: str, *, flush: bool = False, **_: Any) -> None:
        if self._closing is not None:
            return
        self._closing = (code, reason, flush)
        if not flush:
            self.discard()
        self._touch(self)

    @property
    def closing(self) -> bool:
        return self._closing is not None

    def drain(self) -> list[Message]:
        """What to publish for this connection now: its frames in order, then a close."""
        frames: list[bytes] = []
        self.take(self._encode, BUDGET, frames)
        out: list[Message] = []
        if frames:
            out.append(Frames(self.conn, b"".join(frames)))
        if self._closing is not None:
            code, reason, flush = self._closing
            out.append(Close(self.conn, code, reason, flush))
        return out

    def _encode(self, out: Any, seq: int) -> bytes:
        frame: bytes = self.codec.event_frame(out, seq if self.endpoint == "observer" else None)
        return frame


class Remotes:
    """The stand-ins this owner keeps, and publishing what their commands produced."""

    def __init__(self, send: Callable[[str, Message], bool], codec_for: Callable[[str], Any]
                 ) -> None:
        self._send = send
        self._codec_for = codec_for
        self.by_key: dict[tuple[str, int], RemoteConn] = {}
        self.touched: set[RemoteConn] = set()

    def get(self, node: str, conn: int) -> RemoteConn | None:
        return self.by_key.get((node, conn))

    def create(self, node: str, conn: int, endpoint: str, ip: str) -> RemoteConn:
        rc = RemoteConn(node, conn, endpoint, ip, self._codec_for(endpoint), self.touched.add)
        self.by_key[(node, conn)] = rc
        return rc

    def pop(self, node: str, conn: int) -> RemoteConn | None:
        return self.by_key.pop((node, conn), None)

    def of_node(self, node: str) -> list[RemoteConn]:
        return [rc for (n, _), rc in self.by_key.items() if n == node]

    def nodes(self) -> set[str]:
        return {n for n, _ in self.by_key}

    def flush(self) -> None:
        """Publish the frames (and closes) the last command produced for remote clients."""
        if not self.touched:
            return
        touched = list(self.touched)
        self.touched.clear()  # (the stand-ins hold this set's ``add``: keep the object)
        for rc in touched:
            for message in rc.drain():
                self._send(rc.node, message)
            if rc.closing and self.by_key.get((rc.node, rc.conn)) is rc:
                del self.by_key[(rc.node, rc.conn)]
