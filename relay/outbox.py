"""The order of one peer's outgoing frames, as plain data (no sockets, no awaits).

Protocol §3.3 and §5 fix what a participant's connection receives after an attach: the
reply frames of the attaching event first (``room/join``, ``rtc/config``, ``room/resync``),
then the events it missed or its snapshot (the *replay*, streamed from the events the
``Bind`` pinned, at the reader's pace and outside the queue bound), then live frames in
the order they were produced. A client connection on this node
(``relay.transport.connection``) and the room owner's stand-in for a connection held by
another node (``relay.cluster.remote``) both need exactly this, so both are an ``Outbox``:
they differ only in where the bytes go (a socket, or a message to the client's node).

It is a base class rather than a member object because the local connection's delivery
path is the relay's hottest code (bench W2): an extra attribute hop per frame shows.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

#: A queued live frame: bytes, or a sequenced event and its seq (encoded when written,
#: so a broadcast costs one encode per framing, not per recipient).
Item = bytes | tuple[Any, int]
Encode = Callable[[Any, int], bytes]

_NO_QUEUE: deque[tuple[Item, int]] = deque(maxlen=0)


class Outbox:
    __slots__ = ("_oversized", "_pinned", "_pre", "_queue", "_queue_bytes", "bound", "cursor",
                 "replay_end")

    def __init__(self) -> None:
        self._pre: list[bytes] = []  # the reply frames of an attach, before its replay
        self._queue = _NO_QUEUE  # live frames; a real deque on first use (idle peers)
        self._queue_bytes = 0
        self._oversized = 0  # the size of the one queued frame allowed past the byte bound
        self.bound = False  # attached to a participant
        self.cursor = 0  # highest seq handed on (or skipped, on a fresh attach)
        self.replay_end = 0  # the replay streams seqs (cursor, replay_end]
        self._pinned: list[Any] = []  # their events: seq replay_end - len + 1 ... replay_end

    # -- where a frame goes --------------------------------------------------------------
    def before_replay(self, after: int | None) -> bool:
        """Whether an unsequenced frame produced after seq ``after`` precedes the replay
        still to stream (the reply frames of an attach do)."""
        return after is not None and self.cursor < self.replay_end and after <= self.cursor

    def replayed(self, seq: int) -> bool:
        """A sequenced event the replay stream already carries (or carried)."""
        return seq <= self.replay_end

    @property
    def replaying(self) -> bool:
        return self.bound and self.cursor < self.replay_end

    def attach(self, cursor: int, replay_end: int, pinned: list[Any]) -> None:
        """Bound to a participant: stream ``pinned`` (seqs cursor+1..replay_end) first."""
        self.bound = True
        self.cursor = cursor
        self.replay_end = replay_end
        self._pinned = pinned

    def detach(self) -> None:
        """Unbound again (room/leave): what is queued still goes out, the replay stops."""
        self.bound = False
        self.replay_end = self.cursor
        self._pinned = []

    def enqueue(self, item: Item, size: int) -> None:
        if self._queue is _NO_QUEUE:
            self._queue = deque()
        self._queue.append((item, size))
        self._queue_bytes += size

    def fits(self, size: int, max_frames: int, max_bytes: int) -> bool:
        """Whether a frame of ``size`` may join the live queue (§2.3).

        One frame larger than the byte bound at a time is allowed (an answer such as
        ``message/user`` may legitimately be larger): the bound then applies to the other
        frames queued with it (protocol Appendix D). Call ``enqueue`` after a True.
        """
        if len(self._queue) >= max_frames:
            return False
        if size > max_bytes and not self._oversized:
            self._oversized = size
            return True
        return self._queue_bytes - self._oversized + size <= max_bytes

    def discard(self) -> None:
        """Drop everything not yet handed on (a close that does not flush)."""
        self._queue.clear()
        self._pre.clear()
        self._queue_bytes = 0
        self._oversized = 0
        self.bound = False
        self._pinned = []

    def take_over(self, other: Outbox, first: list[bytes]) -> None:
        """Carry on for ``other`` (a session changing transport): its attach replies,
        replay and live frames follow whatever this one holds, ``first`` ahead of them."""
        self._pre = self._pre + first + other._pre
        if other._queue:
            if self._queue is _NO_QUEUE:
                self._queue = deque()
            self._queue.extend(other._queue)
            self._queue_bytes += other._queue_bytes
            self._oversized = self._oversized or other._oversized
        self.bound = other.bound
        self.cursor = other.cursor
        self.replay_end = other.replay_end
        self._pinned = other._pinned

    @property
    def has_pending(self) -> bool:
        return bool(self._pre or self._queue) or self.replaying

    # -- taking frames out ------------------------------------------------------------------
    def take(self, encode: Encode, budget: float, batch: list[bytes], *,
             strict: bool = False) -> int:
        """Append to ``batch``, in order, the attach replies, the replay and live frames,
        until about ``budget`` bytes; returns the bytes taken.

        By default the frame that crosses ``budget`` is taken too (a socket's write size
        is a target). With ``strict`` (a long-poll answer, bounded by maxPayload) no frame
        is taken that would cross it, unless ``batch`` would otherwise stay empty (one
        frame larger than the budget still has to go out on its own).
        """
        size = 0
        if self._pre:
            if strict:
                size = sum(len(frame) for frame in self._pre)
            batch.extend(self._pre)
            self._pre = []
        pinned = self._pinned
        while self.bound and self.cursor < self.replay_end and size < budget:
            seq = self.cursor + 1
            frame = encode(pinned[len(pinned) - (self.replay_end - self.cursor)], seq)
            if strict and batch and size + len(frame) > budget:
                break
            batch.append(frame)
            size += len(frame)
            self.cursor = seq
        if pinned and self.cursor >= self.replay_end:
            self._pinned = []  # streamed: release the events
        queue = self._queue
        while queue and size < budget:
            item, item_size = queue[0]
            if isinstance(item, tuple):
                out, seq = item
                frame = encode(out, seq)
            else:
                frame, seq = item, 0
            if strict and batch and size + len(frame) > budget:
                break
            queue.popleft()
            self._queue_bytes -= item_size
            if item_size == self._oversized:
                self._oversized = 0
            if seq:
                self.cursor = seq
            batch.append(frame)
            size += len(frame)
        return size
