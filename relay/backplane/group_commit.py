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

**Every entry gets exactly one truthful outcome.** ``done(stream_id)``: it is in the log.
``failed(exc)``: it is not and never will be (never sent, or refused by its fence).
``unknown(exc)``: it was sent and no answer came, so it may still land; its room is then
*blocked* — later entries of that room are failed without being sent — until the owner
has found out what happened (``relay.cluster``) and calls ``unblock``: otherwise a later
entry could be appended (and applied) before an earlier one that lands late.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

import trio

from .redis import BackplaneUnavailable, Fenced, OutcomeUnknown

log = logging.getLogger("relay.cluster")

MAX_BATCH = 512
MAX_QUEUE = 4096

T = TypeVar("T")
AppendMany = Callable[[Sequence[tuple[str, str, bytes]]], Awaitable[list[str | None]]]
Done = Callable[[str], None]
Failed = Callable[[BaseException], None]


class RoomBlocked(BackplaneUnavailable):
    """Not sent: an earlier entry of the room has an unknown outcome."""


class _Entry:
    __slots__ = ("done", "entry", "failed", "fence", "room", "unknown")

    def __init__(self, room: str, fence: str, entry: bytes, done: Done, failed: Failed,
                 unknown: Failed) -> None:
        self.room, self.fence, self.entry = room, fence, entry
        self.done, self.failed, self.unknown = done, failed, unknown


class GroupCommit:
    """``submit(room, fence, entry, done, failed, unknown)``; exactly one of the three
    callbacks runs later, from the committer task."""

    def __init__(self, append_many: AppendMany,
                 stopped: Callable[[], BaseException] = lambda: RuntimeError("stopped"),
                 max_queue: int = MAX_QUEUE) -> None:
        self._append_many = append_many
        self._stopped = stopped  # what is failed with if ``run`` ends before its batch
        self._max_queue = max_queue
        self._queue: list[_Entry] = []
        self._wake = trio.Event()
        self._space = trio.Event()
        self._running = True
        self.blocked: set[str] = set()

    @property
    def pending(self) -> int:
        return len(self._queue)

    def unblock(self, room: str) -> None:
        """The room's unknown outcomes are resolved: its entries may be sent again."""
        self.blocked.discard(room)

    async def submit(self, room: str, fence: str, entry: bytes, done: Done, failed: Failed,
                     unknown: Failed | None = None) -> None:
        """Queue one entry (waiting only while the queue is full).

        Once submitted, an entry may become durable, so its command is applied even if the
        submitting client goes away meanwhile: the log and the live room always agree.
        ``unknown`` defaults to ``failed`` for callers that treat both alike.
        """
        while len(self._queue) >= self._max_queue and self._running:
            await self._space.wait()
        if not self._running:
            failed(self._stopped())
            return
        if room in self.blocked:
            failed(RoomBlocked(f"room {room} is recovering"))
            return
        self._queue.append(_Entry(room, fence, entry, done, failed, unknown or failed))
        self._wake.set()

    async def commit(self, room: str, fence: str, entry: bytes, apply: Callable[[str], T]) -> T:
        """Submit and wait: what ``apply(stream_id)`` returned — run by the committer, in
        log order — or raise what made the entry fail (``OutcomeUnknown`` included)."""
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

        await self.submit(room, fence, entry, done, failed)
        await finished.wait()
        if error:
            raise error[0]
        if not outcome:
            raise RuntimeError("applying the committed entry failed")  # logged by ``run``
        return outcome[0]

    async def run(self) -> None:
        """The one task that appends and applies; runs for the node's lifetime."""
        batch: list[_Entry] = []
        try:
            while True:
                await self._wake.wait()
                self._wake = trio.Event()
                while self._queue:
                    batch, self._queue = self._queue[:MAX_BATCH], self._queue[MAX_BATCH:]
                    self._space.set()
                    self._space = trio.Event()
                    batch = self._drop_blocked(batch)
                    if not batch:
                        continue
                    try:
                        ids = await self._append_many(
                            [(e.room, e.fence, e.entry) for e in batch])
                    except OutcomeUnknown as exc:
                        self.blocked.update(e.room for e in batch)
                        _each(batch, "unknown", exc)
                        batch = []
                        continue
                    except Exception as exc:  # nothing was appended
                        _each(batch, "failed", exc)
                        batch = []
                        continue
                    for e, stream_id in zip(batch, ids, strict=True):
                        try:
                            if stream_id is None:
                                e.failed(Fenced(f"room {e.room}: the lease moved on"))
                            else:
                                e.done(stream_id)
                        except Exception:  # one command's bug must not stop the node's
                            log.exception("applying a committed command failed")
                    batch = []
        finally:
            # Stopping (the node shuts down): nobody waits for an answer that cannot come.
            self._running = False
            self._space.set()
            _each([*batch, *self._queue], "failed", self._stopped())
            self._queue = []

    def _drop_blocked(self, batch: list[_Entry]) -> list[_Entry]:
        if not self.blocked:
            return batch
        kept = []
        for e in batch:
            if e.room in self.blocked:
                _each([e], "failed", RoomBlocked(f"room {e.room} is recovering"))
            else:
                kept.append(e)
        return kept


def _each(entries: list[_Entry], outcome: str, error: BaseException) -> None:
    for e in entries:
        try:
            getattr(e, outcome)(error)
        except Exception:
            log.exception("reporting an uncommitted command failed")
