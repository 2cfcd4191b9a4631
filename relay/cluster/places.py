"""Replicated places across nodes: the places' log, its order, its trimming, its gaps.

A ChatRoom space or the chat directory has no owning node (its clients may sit on any
node, and §9 wants every rule to hold across nodes): every node keeps a replica and
applies every ``PlaceCommand`` in the order of one Redis stream (``or:places``). A
command carries its seed and time, so replicas agree; each node delivers what a command
produces to its own connections only. A node's death loses nothing that was applied: the
others hold the same state and drop the dead node's clients (``node_gone``).

What this module guarantees, and how:

* **Order and exactly-once.** A node's commands are appended by one sender task, in
  issue order, many per round trip. A batch whose outcome is unknown (Redis paused) is
  sent again; each command carries ``(node, seq)`` and a replica skips a seq it has seen,
  so a resend never applies twice.
* **Bounded.** At most ``MAX_QUEUED`` commands wait for Redis; beyond that a command is
  refused and the node closes the connection it came from with 1011 (its client
  reconnects) instead of growing without limit or applying it out of order.
* **A new node catches up** before it serves: it replays the stream from its first entry
  (``or:places`` is trimmed so that what stays rebuilds every live place exactly).
* **Trimming.** Each replica notes the stream id at which each live place was born (its
  first command while it did not exist) and forgets it when the place dies (a space
  expires; the directory has no session left and starts over empty). Entries older than
  every live place's birth — and older than ``TRIM_AGE`` seconds, for replicas that lag —
  belong to places that no longer exist and are trimmed.
* **Gaps.** A replica that finds the stream trimmed past what it has read (it lagged
  longer than ``TRIM_AGE``) cannot be trusted: its place connections are closed with 1011
  and it is rebuilt from the stream, like a new node's.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable

import msgspec
import trio

from relay.backplane.base import BackplaneUnavailable
from relay.backplane.redis import RedisBackplane
from relay.ports import PlacesHost

from .wire import PlaceCommand, WireError, decode_place, encode_place

log = logging.getLogger("relay.cluster")

MAX_QUEUED = 10_000  # commands waiting for Redis
BATCH = 256  # commands per append round trip
RETRY = 0.2  # seconds between attempts while Redis does not answer
POSITION_INTERVAL = 5.0  # how often a node records its read position and checks for gaps
TRIM_INTERVAL = 30.0
TRIM_AGE = 300.0  # never trim entries younger than this (lagging replicas read them)


def _id_key(stream_id: str) -> tuple[int, int]:
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


class Places:
    """The node's side of the places' log: issuing, applying in order, trimming."""

    def __init__(self, host: PlacesHost, bp: RedisBackplane) -> None:
        self.host = host
        self.bp = bp
        self._queue: deque[PlaceCommand] = deque()
        self._wake = trio.Event()
        self._seq = 0
        self._seen: dict[str, int] = {}  # node -> highest seq applied
        self._last_id = "0"
        self._births: dict[tuple[str, str], str] = {}  # live place -> its first entry's id
        self._generation = 0  # bumped when the replicas are rebuilt
        self._next_trim = 0.0
        self.refused = 0
        self.applied = 0

    # -- issuing -------------------------------------------------------------------------
    def issue(self, cmd: PlaceCommand) -> None:
        if len(self._queue) >= MAX_QUEUED:
            self.refused += 1
            log.error("the places' log is not reachable and %d commands wait: refusing a "
                      "%s command (its connection closes with 1011)", MAX_QUEUED, cmd.op)
            self.host.place_refused(cmd)
            return
        self._seq += 1
        self._queue.append(msgspec.structs.replace(cmd, seq=self._seq))
        self._wake.set()

    async def sender(self) -> None:
        queue = self._queue
        while True:
            if not queue:
                await self._wake.wait()
                self._wake = trio.Event()
                continue
            batch = [queue[i] for i in range(min(BATCH, len(queue)))]
            try:
                await self.bp.places_append([encode_place(cmd) for cmd in batch])
            except BackplaneUnavailable:  # (OutcomeUnknown too: resent, applied once)
                await trio.sleep(RETRY)
                continue
            for _ in batch:
                queue.popleft()

    # -- applying ------------------------------------------------------------------------
    async def catch_up(self) -> None:
        """Replay the stream up to its end as of now (before the node serves); our read
        position is recorded first, so that no node trims what we have not read."""
        await self.bp.places_position(self.bp.node_id, self._last_id)
        while True:
            entries = await self.bp.places_read(self._last_id)
            if not entries:
                return
            self._apply_all(entries)

    async def reader(self) -> None:
        while True:
            generation = self._generation
            try:
                entries = await self.bp.places_read(self._last_id)
            except BackplaneUnavailable:
                await trio.sleep(RETRY)
                continue
            if generation == self._generation:  # (not read from before a rebuild)
                self._apply_all(entries)

    def _apply_all(self, entries: list[tuple[str, bytes]]) -> None:
        for stream_id, blob in entries:
            self._last_id = stream_id
            try:
                cmd = decode_place(blob)
            except WireError as exc:
                log.error("a places' log entry %s cannot be read (%s); skipped",
                          stream_id, exc)
                continue
            if cmd.seq <= self._seen.get(cmd.node, 0):
                continue  # a resent batch's command that had landed the first time
            self._seen[cmd.node] = cmd.seq
            place = (cmd.kind, cmd.place)
            self.host.apply_place(cmd)
            self.applied += 1
            if self.host.place_alive(cmd.kind, cmd.place):
                self._births.setdefault(place, stream_id)
            else:
                self._births.pop(place, None)

    # -- positions, trimming and gaps ----------------------------------------------------
    async def maintain(self, is_alive: Callable[[str], Awaitable[bool]]) -> None:
        while True:
            await trio.sleep(POSITION_INTERVAL)
            try:
                await self.check_once(is_alive)
            except BackplaneUnavailable:
                pass

    async def check_once(self, is_alive: Callable[[str], Awaitable[bool]]) -> None:
        bp = self.bp
        first = await bp.places_first_id()
        if (first is not None and self._last_id != "0"
                and _id_key(first) > _id_key(self._last_id)):
            self._rebuild(first)
            return
        await bp.places_position(bp.node_id, self._last_id)
        now = trio.current_time()
        if now < self._next_trim:
            return
        self._next_trim = now + TRIM_INTERVAL
        positions = await bp.places_positions()
        dead = [node for node in positions
                if node != bp.node_id and not await is_alive(node)]
        await bp.places_forget(dead)
        point = self.trim_point(int(time.time() * 1000), [
            pos for node, pos in positions.items() if node not in dead])
        if point != "0-0":
            await bp.places_trim(point)

    def _rebuild(self, first: str) -> None:
        """The stream starts after what we read (we lagged, or were taken for dead):
        entries we never applied are gone, so our replicas cannot be trusted."""
        log.error("the places' log was trimmed past this replica (read up to %s, the log "
                  "starts at %s); closing place connections and rebuilding", self._last_id,
                  first)
        self.host.places_lost()
        self._births.clear()
        self._seen.clear()
        self._last_id = "0"
        self._generation += 1

    def trim_point(self, now_ms: int, positions: list[str]) -> str:
        """The oldest entry some replica needs: the oldest live place's birth, every
        live node's read position, and nothing younger than ``TRIM_AGE``."""
        oldest = (now_ms - int(TRIM_AGE * 1000), 0)
        for stream_id in [*self._births.values(), *positions, self._last_id]:
            oldest = min(oldest, _id_key(stream_id))
        return f"{oldest[0]}-{oldest[1]}"
