"""Per-participant replay buffer: the newest sequenced events, bounded in count and bytes.

The buffer is also the participant's outgoing queue for sequenced events: a connection
keeps a cursor into it and its writer streams from it, so a resume after a slow-consumer
close can replay more events than the live queue would hold (protocol Appendix C).
"""

from __future__ import annotations

from .outgoing import Outgoing


class ReplayBuffer:
    """Two parallel lists with a moving head: cheap when empty (idle participants are the
    common case), O(1) indexing by seq, and amortised O(1) eviction.

    Events and their sizes are kept side by side rather than as pairs: a broadcast appends
    to every recipient's buffer, and a pair per recipient was a tuple for the cyclic GC to
    track and walk (bench W2).
    """

    __slots__ = ("_head", "_outs", "_sizes", "bytes", "counter", "max_bytes", "max_events")

    def __init__(self, max_events: int, max_bytes: int) -> None:
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.counter = 0  # seq of the newest event ever appended
        self.bytes = 0
        self._outs: list[Outgoing] = []  # events from _head on
        self._sizes: list[int] = []  # their plain sizes
        self._head = 0

    def __len__(self) -> int:
        return len(self._outs) - self._head

    @property
    def first_seq(self) -> int:
        """Seq of the oldest event still held (counter + 1 when empty)."""
        return self.counter - len(self) + 1

    def append(self, out: Outgoing) -> tuple[int, int]:
        """Give ``out`` the next seq, keep it, evict the oldest beyond the bounds."""
        self.counter = seq = self.counter + 1
        size = out.plain_size(seq)
        outs, sizes = self._outs, self._sizes
        outs.append(out)
        sizes.append(size)
        self.bytes += size
        head = self._head
        while len(outs) - head > self.max_events or (
            self.bytes > self.max_bytes and len(outs) - head > 1
        ):
            self.bytes -= sizes[head]
            outs[head] = _EVICTED  # released now, not when the list is compacted
            head += 1
        if head > 64 and head * 2 > len(outs):
            del outs[:head]
            del sizes[:head]
            head = 0
        self._head = head
        return seq, size

    def get(self, seq: int) -> tuple[Outgoing, int]:
        """The event with ``seq``; the caller checks ``first_seq <= seq <= counter``."""
        i = self._head + seq - self.first_seq
        return self._outs[i], self._sizes[i]

    def events_after(self, seq: int) -> list[Outgoing]:
        """The events with seq > ``seq``, oldest first (all held, or the newest held)."""
        start = self._head + max(0, seq + 1 - self.first_seq)
        return self._outs[start:]

    def holds_after(self, last_seq: int) -> bool:
        """True when every event with seq > ``last_seq`` is still buffered."""
        return last_seq + 1 >= self.first_seq

    def clear(self) -> None:
        self._outs.clear()
        self._sizes.clear()
        self._head = 0
        self.bytes = 0


_EVICTED = Outgoing("", None)  # stands in for evicted events until the list is compacted
