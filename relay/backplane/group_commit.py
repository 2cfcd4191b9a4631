"""Group commit: the log appends of many rooms share one round trip to Redis.

Every command of a clustered room is appended to the room's log before it is applied
(see ``relay.cluster``). Paying one Redis round trip and a task switch per command made
the append the most expensive part of a clustered event. Here a command is *submitted*
with what to do once it is durable: the caller does not wait. Entries that arrive while
a round trip is in flight go together in the next ``append_many`` script call, and the
one committer task then runs their ``done`` callbacks in submission order (applying the
commands to the rooms and delivering their frames) before it sends the next batch.

So the log order is the submission order and the apply order is the log order, for every
room at once, without a lock per room; an idle node still pays exactly one round trip per
command, a busy one a fraction of one. The queue is bounded: ``submit`` waits for space
when ``max_queue`` entries are pending (back-pressure onto the connection readers and the
inbox), and ``MAX_BATCH`` caps one call.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import trio

log = logging.getLogger("relay.cluster")

MAX_BATCH = 512
MAX_QUEUE = 4096

T = TypeVar("T")
AppendMany = Callable[[Sequence[tuple[str, bytes]]], Awaitable[list[str]]]
Done = Callable[[str], None]
Failed = Callable[[BaseException], None]


class GroupCommit:
    """``submit(room, entry, done, failed)``: ``done(stream_id)`` runs once it is durable."""

    def __init__(self, append_many: AppendMany,
                 stopped: Callable[[], BaseException] = lambda: RuntimeError("stopped"),
                 max_queue: int = MAX_QUEUE) -> None:
        self._append_many = append_many
        self._stopped = stopped  # what is failed with if ``run`` ends before its batch
        self._max_queue = max_queue
        self._queue: list[tuple[str, bytes, Done, Failed]] = []
        self._wake = trio.Event()
        self._space = trio.Event()
        self._running = True

    @property
    def pending(self) -> int:
        return len(self._queue)

    async def submit(self, room: str, entry: bytes, done: Done, failed: Failed) -> None:
        """Queue one entry (waiting only while the queue is full).

        Exactly one of ``done``/``failed`` is called later, from the committer task. Once
        submitted, an entry may become durable, so its command is applied even if the
        submitting client goes away meanwhile: the log and the live room always agree.
        """
        while len(self._queue) >= self._max_queue and self._running:
            await self._space.wait()
        if not self._running:
            failed(self._stopped())
            return
        self._queue.append((room, entry, done, failed))
        self._wake.set()

    async def commit(self, room: str, entry: bytes, apply: Callable[[str], T]) -> T:
        """Submit and wait: what ``apply(stream_id)`` returned — run by the committer, in
        log order — or raise what ``append_many`` raised for the entry's batch."""
        finished = trio.Event()
        outcome: list[T] = []
        error: list[BaseException] = []

        def done(stream_id: str) -> None:
            try:
                outcome.append(apply(stream_id))
            finally:
                finished.set()

        def failed(exc: BaseException) -> None:
            error.append(exc)
            finished.set()

        await self.submit(room, entry, done, failed)
        await finished.wait()
        if error:
            raise error[0]
        if not outcome:
            raise RuntimeError("applying the committed entry failed")  # logged by ``run``
        return outcome[0]

    async def append(self, room: str, entry: bytes) -> str:
        """Submit and wait: the entry's stream id."""
        return await self.commit(room, entry, str)

    async def run(self) -> None:
        """The one task that appends and applies; runs for the node's lifetime."""
        batch: list[tuple[str, bytes, Done, Failed]] = []
        try:
            while True:
                await self._wake.wait()
                self._wake = trio.Event()
                while self._queue:
                    batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
                    self._space.set()
                    self._space = trio.Event()
                    try:
                        ids = await self._append_many([(room, entry) for room, entry, *_ in batch])
                    except Exception as exc:  # handed to every entry of the batch
                        self._fail(batch, exc)
                        batch = []
                        continue
                    for (_, _, done, _), stream_id in zip(batch, ids, strict=True):
                        try:
                            done(stream_id)
                        except Exception:  # one command's bug must not stop the node's
                            log.exception("applying a committed command failed")
                    batch = []
        finally:
            # Stopping (the node shuts down): nobody waits for an answer that cannot come.
            self._running = False
            self._space.set()
            self._fail([*batch, *self._queue], self._stopped())
            self._queue = []

    @staticmethod
    def _fail(batch: list[tuple[str, bytes, Done, Failed]], error: BaseException) -> None:
        for *_, failed in batch:
            try:
                failed(error)
            except Exception:
                log.exception("failing an uncommitted command failed")
