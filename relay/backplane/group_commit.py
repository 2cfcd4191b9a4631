"""Group commit: the log appends of many rooms share one round trip to Redis.

Every command of a clustered room is appended to the room's log before it is applied
(see ``relay.cluster``). Paying one Redis round trip per command made the append the
most expensive part of a clustered event. Here, appends that become ready while a
round trip is in flight wait for it and then go together in one ``append_many``
script call: under load the cost per command shrinks with the batch, and an idle node
still pays exactly one round trip. Order is kept per room because a room's owner holds
the room's lock across its append (one entry per room at a time) and the script appends
in the order given.

The queue is bounded by its callers: at most one waiting entry per owned room (the room
lock) plus the room creations in flight, and ``MAX_BATCH`` caps one call.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence

import trio

MAX_BATCH = 512

AppendMany = Callable[[Sequence[tuple[str, bytes]]], Awaitable[list[str]]]


class _Waiter:
    __slots__ = ("done", "error", "result")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.result = ""
        self.error: BaseException | None = None


class GroupCommit:
    """``await append(room, entry)`` returns the entry's stream id once it is durable."""

    def __init__(self, append_many: AppendMany,
                 stopped: Callable[[], BaseException] = lambda: RuntimeError("stopped")) -> None:
        self._append_many = append_many
        self._stopped = stopped  # what waiters get if ``run`` ends before their batch
        self._queue: list[tuple[str, bytes, _Waiter]] = []
        self._wake = trio.Event()

    async def append(self, room: str, entry: bytes) -> str:
        """Append one entry; raises what ``append_many`` raised for its batch.

        Callers shield this (and the apply that follows): once an entry is handed over
        it may become durable, so the command must then be applied, not abandoned.
        """
        waiter = _Waiter()
        self._queue.append((room, entry, waiter))
        self._wake.set()
        await waiter.done.wait()
        if waiter.error is not None:
            raise waiter.error
        return waiter.result

    async def run(self) -> None:
        """The one task that talks to Redis for appends; runs for the node's lifetime."""
        batch: list[tuple[str, bytes, _Waiter]] = []
        try:
            while True:
                await self._wake.wait()
                self._wake = trio.Event()
                while self._queue:
                    batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
                    try:
                        ids = await self._append_many(
                            [(room, entry) for room, entry, _ in batch])
                    except Exception as exc:  # handed to every waiter of the batch
                        self._fail(batch, exc)
                        continue
                    for (_, _, waiter), stream_id in zip(batch, ids, strict=True):
                        waiter.result = stream_id
                        waiter.done.set()
                    batch = []
        finally:
            # Stopping (the node shuts down): nobody waits for an answer that cannot come.
            self._fail([*batch, *self._queue], self._stopped())
            self._queue = []

    @staticmethod
    def _fail(batch: list[tuple[str, bytes, _Waiter]], error: BaseException) -> None:
        for _, _, waiter in batch:
            if not waiter.done.is_set():
                waiter.error = error
                waiter.done.set()
