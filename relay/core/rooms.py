"""The observer rooms of one node and the per-IP bookkeeping around them, as plain data.

The event handlers reach the registry through ``Ctx.state``; ids and tokens are drawn from
the entropy source the caller passes in (a CSPRNG, or a seeded stream when a clustered
command is replayed from its log), never from a source stored here.
"""

from __future__ import annotations

from . import ids
from .actions import Action, RoomClosed, StatsChanged
from .limits import JoinFailures
from .model import Participant, Room
from .replay import ReplayBuffer
from .settings import CoreSettings


class Rooms:
    __slots__ = ("_by_ip", "join_failures", "rooms", "settings")

    def __init__(self, settings: CoreSettings) -> None:
        self.settings = settings
        self.rooms: dict[int, Room] = {}
        self.join_failures = JoinFailures(settings.join_failure_limit)
        #: Rooms held here per creating client IP (§2.1 per-IP room cap).
        self._by_ip: dict[str, int] = {}

    def new_room(self, entropy: ids.Entropy, creator_ip: str) -> Room:
        while True:
            room_id = entropy.room_id()
            if room_id not in self.rooms:
                break
        room = Room(room_id=room_id, stats_key=entropy.token(), creator_ip=creator_ip)
        self.rooms[room_id] = room
        self._count(creator_ip, 1)
        return room

    def new_participant(self, room: Room, name: str, entropy: ids.Entropy, *,
                        is_host: bool) -> Participant:
        uid = room.next_user_id
        room.next_user_id += 1
        p = Participant(
            user_id=uid, name=name, token=entropy.token(), is_host=is_host,
            replay=ReplayBuffer(self.settings.replay_events, self.settings.replay_bytes),
        )
        room.participants[uid] = p
        return p

    def remove_room(self, room: Room, *, keep_host: bool = False,
                    reason: str = "closed") -> list[Action]:
        """Close ``room`` for good: its connections get 4000 (the host's too, unless
        ``keep_host``: ``room/close`` leaves it open, unbound), its stats readers 404."""
        if self.rooms.pop(room.room_id, None) is not None:
            self._count(room.creator_ip, -1)
        closing = tuple(uid for uid, p in room.participants.items()
                        if not (keep_host and p.is_host))
        return [RoomClosed(room.room_id, closing, reason), StatsChanged(room.room_id)]

    def adopt_room(self, room: Room) -> None:
        """A room rebuilt from the backplane joins this node (its creator's cap included)."""
        if self.rooms.get(room.room_id) is not room:
            self.drop_room(room.room_id)
            self.rooms[room.room_id] = room
            self._count(room.creator_ip, 1)

    def drop_room(self, room_id: int) -> Room | None:
        """Forget a room without closing it (it moved to another node)."""
        room = self.rooms.pop(room_id, None)
        if room is not None:
            self._count(room.creator_ip, -1)
        return room

    def room_cap_reached(self, ip: str) -> bool:
        cap = self.settings.max_rooms_per_ip
        return bool(cap) and self._by_ip.get(ip, 0) >= cap

    def _count(self, ip: str, delta: int) -> None:
        left = self._by_ip.get(ip, 0) + delta
        if left > 0:
            self._by_ip[ip] = left
        else:
            self._by_ip.pop(ip, None)
