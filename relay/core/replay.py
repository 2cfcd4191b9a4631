"""Per-participant replay buffer: the newest sequenced events, bounded in count and bytes.

The buffer is also the participant's outgoing queue for sequenced events: a connection
keeps a cursor into it and its writer streams from it, so a resume after a slow-consumer
close can replay more events than the live queue would hold (protocol Appendix C).
"""

from __future__ import annotations

from .outgoing import Outgoing


class ReplayBuffer:
    """A list with a moving head: cheap when empty (idle participants are the common
    case), O(1) indexing by seq, and amortised O(1) eviction."""

    __slots__ = ("_head", "_items", "bytes", "counter", "max_bytes", "max_events")

    def __init__(self, max_events: int, max_bytes: int) -> None:
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.counter = 0  # seq of the newest event ever appended
        self.bytes = 0
        self._items: list[tuple[Outgoing, int]] = []  # (event, plain size) from _head on
        self._head = 0

    def __len__(self) -> int:
        return len(self._items) - self._head

    @property
    def first_seq(self) -> int:
        """Seq of the oldest event still held (counter + 1 when empty)."""
        return self.counter - len(self) + 1

    def append(self, out: Outgoing) -> tuple[int, int]:
        """Give ``out`` the next seq, keep it, evict the oldest beyond the bounds."""
        self.counter += 1
        seq = self.counter
        size = out.plain_size(seq)
        items = self._items
        items.append((out, size))
        self.bytes += size
        while len(items) - self._head > self.max_events or (
            self.bytes > self.max_bytes and len(items) - self._head > 1
        ):
            self.bytes -= items[self._head][1]
            self._head += 1
        if self._head > 64 and self._head * 2 > len(items):
            del items[: self._head]
            self._head = 0
        return seq, size

    def get(self, seq: int) -> tuple[Outgoing, int]:
        """The event with ``seq``; the caller checks ``first_seq <= seq <= counter``."""
        return self._items[self._head + seq - self.first_seq]

    def holds_after(self, last_seq: int) -> bool:
        """True when every event with seq > ``last_seq`` is still buffered."""
        return last_seq + 1 >= self.first_seq

    def clear(self) -> None:
        self._items.clear()
        self._head = 0
        self.bytes = 0
