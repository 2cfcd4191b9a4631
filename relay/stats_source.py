"""Where the web port reads room stats from: this process's rooms, or the cluster's.

In one process the stats are computed from the live room. With the Redis backplane a room
lives on its owner node: there it is read live; on any other node the stats page and SSE
stream read the §8.3 document the owner writes to Redis (at most once a second, while
somebody reads it) and wake on the room's channel.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Protocol

import msgspec
import trio

from relay.core.stats import room_stats

if TYPE_CHECKING:
    from relay.cluster import Cluster
    from relay.server import RelayServer

#: Remote stats are re-read at least this often, in case a pub/sub notice was lost.
POLL_INTERVAL = 2.0


@dataclass(frozen=True, slots=True)
class StatsEntry:
    room_id: int
    stats_key: str
    version: int
    document: dict[str, Any]


class StatsSource(Protocol):
    async def get(self, room_id: int) -> StatsEntry | None: ...

    async def wait_change(self, room_id: int) -> None:
        """Return after the room's stats may have changed (or it was removed)."""


class LocalStats:
    def __init__(self, server: RelayServer) -> None:
        self.server = server

    async def get(self, room_id: int) -> StatsEntry | None:
        room = self.server.hub.rooms.get(room_id)
        if room is None:
            return None
        return StatsEntry(room_id, room.stats_key, room.stats_version,
                          room_stats(room, time.time()))

    async def wait_change(self, room_id: int) -> None:
        if room_id in self.server.hub.rooms:
            await self.server.wait_stats_change(room_id)


class ClusterStats:
    """A room owned here is read live; any other from the document its owner writes.

    Owners build documents only for rooms somebody reads (``Cluster.want_stats``).
    """

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.local = LocalStats(cluster.server)

    async def get(self, room_id: int) -> StatsEntry | None:
        if room_id in self.cluster.owned:
            entry = await self.local.get(room_id)
            if entry is not None:
                return entry
        bp = self.cluster.bp
        key = await bp.kv_get(f"room:{room_id}")
        if key is None:
            return None
        await self.cluster.want_stats(room_id)
        blob = await bp.kv_get(f"stats:{room_id}")
        if blob is None:
            return None
        version, document = msgspec.msgpack.decode(blob)
        return StatsEntry(room_id, key.decode(), version, document)

    async def wait_change(self, room_id: int) -> None:
        with trio.move_on_after(POLL_INTERVAL):
            if room_id in self.cluster.owned:
                await self.local.wait_change(room_id)
                return
            await self.cluster.watch_stats(room_id)
            await self.cluster.stats_event(room_id).wait()
