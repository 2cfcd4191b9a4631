"""Room stats across nodes: the owner writes a room's §8.3 document while somebody reads it.

A room owned by the node serving the stats page is read live. Elsewhere the page, the
JSON API and the SSE stream read the document the owner writes to Redis, and ask for it:
a reader keeps ``statswant:{room}`` alive (15 s TTL, renewed every 5 s while it reads).
Once a second the owner checks which of its rooms are wanted (one pipelined round trip)
and writes, in one round trip, the document of each wanted room that changed or was not
wanted before, with a notice on the room's stats channel that wakes the readers (they
also poll every 2 s, in case a notice is lost). Building and writing every busy room's
document each second, read or not, had cost a node more than forwarding its events.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

import msgspec
import trio

from relay.backplane.redis import BackplaneUnavailable
from relay.core.stats import room_stats

from .context import ClusterContext
from .wire import FORMAT, WireError

STATS_FLUSH = 1.0  # seconds between writes of changed rooms' stats documents (§8: 1/s)
STATS_WANT_TTL = 15.0  # a reader's request for a room's stats document lasts this long
POLL_INTERVAL = 2.0  # remote stats are re-read at least this often


class StatsDoc(msgspec.Struct, array_like=True, frozen=True):
    version: int
    stats_version: int
    document: dict[str, Any]


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(StatsDoc)


def decode_doc(blob: bytes) -> StatsDoc:
    try:
        doc = _decoder.decode(blob)
    except (msgspec.DecodeError, RecursionError) as exc:
        raise WireError(f"unreadable stats document: {exc}") from None
    if doc.version != FORMAT:
        raise WireError(f"stats document of format {doc.version}")
    return doc


@dataclass(frozen=True, slots=True)
class StatsEntry:
    room_id: int
    stats_key: str
    version: int
    document: dict[str, Any]


class StatsDocuments:
    def __init__(self, ctx: ClusterContext, owned: Callable[[], Collection[int]]) -> None:
        self.ctx = ctx
        self.hub = ctx.host.hub
        self._owned = owned
        self._dirty: set[int] = set()
        self._fresh: set[int] = set()  # rooms whose document in Redis is current
        self._wanted: dict[int, float] = {}  # room -> when this node last asked
        self._write = trio.Lock()  # the loop's writes vs. a room's removal
        self._events: dict[int, trio.Event] = {}
        self._watched: set[str] = set()

    def changed(self, room_id: int) -> None:
        """Coalesced: ``run`` writes each changed room at most every STATS_FLUSH."""
        if room_id in self._owned():
            self._dirty.add(room_id)

    async def run(self) -> None:
        """Write the documents of watched rooms that changed, all in one round trip."""
        while True:
            await trio.sleep(STATS_FLUSH)
            owned = self._owned()
            self._fresh &= set(owned)
            rooms = [r for r in owned if r in self.hub.rooms]
            if not rooms:
                continue
            async with self._write:
                try:
                    wanted = await self.ctx.bp.kv_exist([f"statswant:{r}" for r in rooms])
                except BackplaneUnavailable:
                    continue
                dirty, self._dirty = self._dirty, set()
                docs, written = [], []
                for room_id, want in zip(rooms, wanted, strict=True):
                    if not want:
                        self._fresh.discard(room_id)  # its document may go stale now
                        continue
                    room = self.hub.rooms.get(room_id)
                    if room is None or room_id not in self._owned() or (
                            room_id in self._fresh and room_id not in dirty):
                        continue
                    blob = _encoder.encode(StatsDoc(FORMAT, room.stats_version,
                                                    room_stats(room, self.ctx.host.now())))
                    docs.append((f"stats:{room_id}", blob, f"stats:{room_id}", b"changed"))
                    written.append(room_id)
                if not docs:
                    continue
                try:
                    await self.ctx.bp.write_stats(docs)
                    self._fresh.update(written)
                except BackplaneUnavailable:
                    self._dirty |= dirty  # try again on the next flush

    async def removed(self, room_id: int) -> None:
        """A room of ours was closed: its document goes, its readers hear ``closed``."""
        self._dirty.discard(room_id)
        try:
            async with self._write:  # no stats write of the room may come after this
                await self.ctx.bp.kv_delete(f"stats:{room_id}")
            await self.ctx.bp.publish_room(f"stats:{room_id}", b"closed")
        except BackplaneUnavailable:
            pass

    async def want(self, room_id: int) -> None:
        """Ask the room's owner to keep its stats document current (a reader is open).

        When nobody asked for a while the document may be stale: then this waits (up to
        two flushes) for the owner to write a fresh one.
        """
        now = trio.current_time()
        last = self._wanted.get(room_id)
        if last is not None and now - last < STATS_WANT_TTL / 3:
            return
        stale = last is None or now - last >= STATS_WANT_TTL
        if len(self._wanted) > 1000:  # forget rooms nobody here reads any more
            self._wanted = {r: t for r, t in self._wanted.items() if now - t < STATS_WANT_TTL}
        self._wanted[room_id] = now
        event = self.event(room_id)
        await self.watch(room_id)
        try:
            await self.ctx.bp.kv_set(f"statswant:{room_id}", b"1",
                                     ttl_ms=int(STATS_WANT_TTL * 1000))
        except BackplaneUnavailable:
            self._wanted.pop(room_id, None)
            raise
        if stale:
            with trio.move_on_after(2.5 * STATS_FLUSH):
                await event.wait()

    async def watch(self, room_id: int) -> None:
        """Subscribe this node to a room's stats notices (for its SSE streams)."""
        channel = f"stats:{room_id}"
        if channel not in self._watched:
            self._watched.add(channel)
            try:
                await self.ctx.bp.subscribe_room(channel)
            except BackplaneUnavailable:
                self._watched.discard(channel)

    def event(self, room_id: int) -> trio.Event:
        event = self._events.get(room_id)
        if event is None:
            event = self._events[room_id] = trio.Event()
        return event

    def wake_all(self) -> None:
        """Notices may have been lost (a gap): let every reader look again."""
        events, self._events = self._events, {}
        for event in events.values():
            event.set()

    async def notices(self) -> None:
        async for channel, data in self.ctx.bp.room_messages:
            if not channel.startswith("stats:"):
                continue
            try:
                room_id = int(channel[6:])
            except ValueError:
                continue
            event = self._events.pop(room_id, None)
            if event is not None:
                event.set()
            if data == b"closed" and channel in self._watched:
                # The room is gone: stop listening (streams see it on their next read).
                self._watched.discard(channel)
                self.ctx.spawn(self.ctx.bp.unsubscribe_room, channel)


class ClusterStats:
    """A room owned here is read live; any other from the document its owner writes."""

    def __init__(self, ctx: ClusterContext, docs: StatsDocuments,
                 owned: Callable[[], Collection[int]],
                 wait_local: Callable[[int], Any]) -> None:
        self.ctx = ctx
        self.docs = docs
        self._owned = owned
        self._wait_local = wait_local

    async def get(self, room_id: int) -> StatsEntry | None:
        hub = self.ctx.host.hub
        if room_id in self._owned():
            room = hub.rooms.get(room_id)
            if room is not None:
                return StatsEntry(room_id, room.stats_key, room.stats_version,
                                  room_stats(room, self.ctx.host.now()))
        bp = self.ctx.bp
        key = await bp.kv_get(f"room:{room_id}")
        if key is None:
            return None
        await self.docs.want(room_id)
        blob = await bp.kv_get(f"stats:{room_id}")
        if blob is None:
            return None
        try:
            doc = decode_doc(blob)
        except WireError:
            return None
        return StatsEntry(room_id, key.decode(errors="replace"), doc.stats_version,
                          doc.document)

    async def wait_change(self, room_id: int) -> None:
        with trio.move_on_after(POLL_INTERVAL):
            if room_id in self._owned():
                await self._wait_local(room_id)
                return
            await self.docs.watch(room_id)
            await self.docs.event(room_id).wait()
