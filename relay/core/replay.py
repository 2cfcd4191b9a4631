"""Per-participant replay buffer: the newest sequenced events, bounded in count and bytes.

The buffer is also the participant's outgoing queue for sequenced events: a connection
keeps a cursor into it and its writer streams from it, so a resume after a slow-consumer
close can replay more events than the live queue would hold (protocol Appendix C).
"""

from __future__ import annotations

from collections import deque

from .outgoing import Outgoing


class ReplayBuffer:
    __slots__ = ("_items", "bytes", "counter", "max_bytes", "max_events")

    def __init__(self, max_events: int, max_bytes: int) -> None:
        self.max_events = max_events
        self.max_bytes = max_bytes
        self.counter = 0  # seq of the newest event ever appended
        self.bytes = 0
        self._items: deque[tuple[Outgoing, int]] = deque()  # (event, plain size)

    @property
    def first_seq(self) -> int:
        """Seq of the oldest event still held (counter + 1 when empty)."""
        return self.counter - len(self._items) + 1

    def append(self, out: Outgoing) -> tuple[int, int]:
        """Give ``out`` the next seq, keep it, evict the oldest beyond the bounds."""
        self.counter += 1
        seq = self.counter
        size = out.plain_size(seq)
        self._items.append((out, size))
        self.bytes += size
        while len(self._items) > self.max_events or (
            self.bytes > self.max_bytes and len(self._items) > 1
        ):
            _, old = self._items.popleft()
            self.bytes -= old
        return seq, size

    def get(self, seq: int) -> tuple[Outgoing, int]:
        """The event with ``seq``; the caller checks ``first_seq <= seq <= counter``."""
        return self._items[seq - self.first_seq]

    def holds_after(self, last_seq: int) -> bool:
        """True when every event with seq > ``last_seq`` is still buffered."""
        return last_seq + 1 >= self.first_seq

    def clear(self) -> None:
        self._items.clear()
        self.bytes = 0
