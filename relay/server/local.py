"""``memory://``: the backplane of a single process, where every room lives here.

The node talks to its backplane through ``relay.ports.Backplane`` whichever it is; this one
applies events at once, in the reading task, without awaiting: a room applies its changes
one at a time simply because Trio runs one task at a time and the core never awaits.
"""

from __future__ import annotations

from collections.abc import Awaitable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import trio

from relay.core.context import Session
from relay.core.hub import Outcome
from relay.core.stats import room_stats
from relay.core.steps_import import ImportFailure
from relay.ports import Connection, Peer, Ref

if TYPE_CHECKING:
    from .base import Node


@dataclass(frozen=True, slots=True)
class StatsEntry:
    room_id: int
    stats_key: str
    version: int
    document: dict[str, Any]


class LocalStats:
    """A room's stats read live from this process's core."""

    def __init__(self, node: Node) -> None:
        self.node = node

    async def get(self, room_id: int) -> StatsEntry | None:
        room = self.node.hub.rooms.get(room_id)
        if room is None:
            return None
        return StatsEntry(room_id, room.stats_key, room.stats_version,
                          room_stats(room, self.node.now()))

    async def wait_change(self, room_id: int) -> None:
        if room_id in self.node.hub.rooms:
            await self.node.rooms.wait_stats_change(room_id)


class LocalBackplane:
    available = True
    node_id = "local"

    def __init__(self, node: Node) -> None:
        self.node = node
        self.stats = LocalStats(node)

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()

    def dispatch(self, conn: Peer, event: str, data: Any, ref: Ref | None
                 ) -> Awaitable[None] | None:
        self.node.rooms.handle_event(conn, event, data, ref)
        return None

    def signaling(self, conn: Connection, text: str | None, binary: bool
                  ) -> Awaitable[None] | None:
        self.node.signaling_here(conn, text, binary)
        return None

    def connection_opened(self, conn: Connection) -> None:
        pass

    def connection_closed(self, conn: Connection) -> None:
        pass

    def connection_replaced(self, old_id: int, old: Connection, new: Connection) -> None:
        pass

    def place_command(self, cmd: Any) -> None:
        """Replicated places have one replica here: apply at once."""
        self.node.apply_place(cmd)

    async def register_session(self, sid: str) -> None:
        pass

    async def give_upgrade(self, node: str, fd: int, received: bytes) -> bool:
        return False

    def forget_session(self, sid: str) -> None:
        pass

    async def session_node(self, sid: str) -> str | None:
        return None  # every session lives here

    def participant_offline(self, room_id: int, user_id: int, ip: str) -> None:
        node = self.node
        session = Session(ip=ip, room_id=room_id, user_id=user_id)
        node.rooms.apply(node.hub.disconnect(session, now=node.now(), entropy=node.entropy),
                         None)

    def room_removed(self, room_id: int) -> None:
        pass

    def signaling_frame(self, signaling_id: int, frame: dict[str, Any]) -> None:
        pass  # every /ws connection is local here

    def stats_changed(self, room_id: int) -> None:
        pass

    async def import_done(self, room_id: int, result: list[dict[str, str]] | ImportFailure
                          ) -> Outcome | None:
        node = self.node
        outcome = node.hub.import_done(room_id, result, now=node.now(), entropy=node.entropy)
        node.rooms.apply(outcome.actions, None)
        return outcome
