"""The sans-IO observer core: every room, and the entry points the shell calls.

``Hub.handle`` takes one decoded client event from one connection and returns an
``Outcome``: the ordered actions to perform and the error, if the event failed. Nothing in
here awaits or touches a socket; time comes in through the injected clocks.
"""

from __future__ import annotations

import logging
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from . import ids
from .actions import Action, Counted, RoomClosed, StartImport, StatsChanged
from .context import Ctx, Session
from .errors import EventError
from .model import Participant, Room
from .registry import EVENTS, HOST, STUDENT, UNBOUND
from .replay import ReplayBuffer
from .steps_import import ImportFailure

log = logging.getLogger("relay.core")

JOIN_FAILURE_WINDOW = 60.0
COUNTED_FAILURES = frozenset({"room_not_found", "user_not_found", "bad_token"})
REATTACH_EVENTS = frozenset({"room/join", "room/rehost", "room/rejoin"})


@dataclass(slots=True)
class CoreSettings:
    """The configuration the core needs (a slice of ``relay.config.Config``)."""

    replay_events: int = 1000
    replay_bytes: int = 8 * 1024 * 1024
    legacy_tokenless: bool = False
    plugin_version: str = "1.2.15"
    join_failure_limit: int = 20
    room_idle_expiry: float = 7200.0
    stun_urls: list[str] = field(default_factory=list)
    turn_urls: list[str] = field(default_factory=list)
    turn_secret: str = ""
    turn_ttl: int = 86400
    max_rooms_per_ip: int = 50  # 0 = no cap


@dataclass(slots=True)
class Outcome:
    actions: list[Action]
    error: EventError | None = None
    #: The acknowledgement waits for a background task (Notion import).
    deferred: bool = False


class Hub:
    def __init__(
        self,
        settings: CoreSettings | None = None,
        *,
        monotonic: Callable[[], float] = time.monotonic,
        wall: Callable[[], float] = time.time,
    ) -> None:
        self.settings = settings or CoreSettings()
        self.monotonic = monotonic
        self.wall = wall
        #: Source of ids and tokens; the scale-out shell swaps in a seeded one per command.
        self.entropy: ids.Entropy = ids.SecureEntropy()
        self.rooms: dict[int, Room] = {}
        self._join_failures: dict[str, deque[float]] = {}
        #: Rooms held here per creating client IP (§2.1 per-IP room cap).
        self._rooms_by_ip: dict[str, int] = {}

    # -- entry points ---------------------------------------------------------------
    def handle(self, session: Session, event: str, data: Any) -> Outcome:
        """Apply one client event; all or nothing."""
        spec = EVENTS.get(event)
        if spec is None:
            return Outcome([], EventError("unknown_event", f"unknown event {event!r}"))
        room: Room | None = None
        sender: Participant | None = None
        if spec.role == UNBOUND:
            if session.bound:
                return Outcome([], EventError("already_in_room", "this connection is in a room"))
        else:
            if not session.bound:
                return Outcome([], EventError("not_in_room", "join a room first"))
            assert session.room_id is not None and session.user_id is not None
            room = self.rooms.get(session.room_id)
            sender = room.participants.get(session.user_id) if room else None
            if room is None or sender is None:  # the room went away under this connection
                session.room_id = session.user_id = None
                return Outcome([], EventError("not_in_room", "join a room first"))
            if spec.role == HOST and not sender.is_host:
                return Outcome([], EventError("not_host", "only the host may send this"))
            if spec.role == STUDENT and sender.is_host:
                return Outcome([], EventError("not_student", "only a student may send this"))
        ctx = Ctx(self, session, room, sender)
        try:
            check_room_id = (
                spec.role != UNBOUND and spec.room_id_key and isinstance(data, dict)
                and "room_id" in data
            )
            if check_room_id and type(data["room_id"]) is not int:
                raise EventError("invalid_payload", "'room_id' must be an integer")
            parsed = spec.parse(ctx, data)
            if check_room_id and room is not None and data["room_id"] != room.room_id:
                raise EventError("forbidden", "'room_id' is not your room")
            spec.apply(ctx, parsed)
        except EventError as exc:
            if (exc.code in COUNTED_FAILURES and event in REATTACH_EVENTS
                    and session.blocked is None):
                self.count_join_failure(session.ip)
            # The error is a value from here on; its traceback would keep every frame of
            # the handler (and what they reference) alive in a reference cycle.
            return Outcome(ctx.failure_actions, exc.with_traceback(None))
        except Exception:
            log.exception("internal error while handling %s", event)
            return Outcome([], EventError("internal", "internal server error"))
        return Outcome(ctx.actions, None, deferred=_is_deferred(ctx))

    def disconnect(self, session: Session) -> list[Action]:
        """The session's connection ended (not replaced): the participant goes offline."""
        if not session.bound:
            return []
        assert session.room_id is not None and session.user_id is not None
        room = self.rooms.get(session.room_id)
        participant = room.participants.get(session.user_id) if room else None
        session.room_id = session.user_id = None
        if room is None or participant is None:
            return []
        ctx = Ctx(self, session, room, participant)
        lifecycle.went_offline(ctx, room, participant)
        return ctx.actions

    def import_done(
        self, room_id: int, result: list[dict[str, str]] | ImportFailure
    ) -> Outcome:
        """Feed a finished Notion import back; applied only if the room still exists."""
        room = self.rooms.get(room_id)
        if room is None:
            return Outcome([], EventError("import_failed", "the room no longer exists"))
        room.importing = False
        ctx = Ctx(self, Session(ip=""), room, room.host)
        try:
            if isinstance(result, ImportFailure):
                steps.import_failed(ctx, room, result.message, "notion")
            steps.import_succeeded(ctx, room, result, "notion")
        except EventError as exc:
            return Outcome(ctx.failure_actions, exc.with_traceback(None))
        return Outcome(ctx.actions)

    def expire_idle(self) -> list[Action]:
        """Remove rooms that have had no online participant for the idle expiry."""
        now = self.monotonic()
        limit = self.settings.room_idle_expiry
        actions: list[Action] = []
        for room in list(self.rooms.values()):
            if room.empty_since is not None and now - room.empty_since >= limit:
                actions.extend(self.remove_room(room))
        return actions

    def remove_room(self, room: Room) -> list[Action]:
        if self.rooms.pop(room.room_id, None) is not None:
            self._count_room(room.creator_ip, -1)
        return [RoomClosed(room.room_id, tuple(room.participants)), StatsChanged(room.room_id)]

    def adopt_room(self, room: Room) -> None:
        """A room rebuilt from the backplane joins this hub (its creator's cap included)."""
        if self.rooms.get(room.room_id) is not room:
            self.rooms[room.room_id] = room
            self._count_room(room.creator_ip, 1)

    def drop_room(self, room_id: int) -> Room | None:
        """Forget a room without closing it (it moved to another node)."""
        room = self.rooms.pop(room_id, None)
        if room is not None:
            self._count_room(room.creator_ip, -1)
        return room

    def _count_room(self, ip: str, delta: int) -> None:
        left = self._rooms_by_ip.get(ip, 0) + delta
        if left > 0:
            self._rooms_by_ip[ip] = left
        else:
            self._rooms_by_ip.pop(ip, None)

    # -- helpers used by the lifecycle handlers ---------------------------------------
    def room_cap_reached(self, ip: str) -> bool:
        cap = self.settings.max_rooms_per_ip
        return bool(cap) and self._rooms_by_ip.get(ip, 0) >= cap

    def new_room(self, creator_ip: str = "") -> Room:
        while True:
            room_id = self.entropy.room_id()
            if room_id not in self.rooms:
                break
        room = Room(room_id=room_id, stats_key=self.entropy.token(), creator_ip=creator_ip)
        self.rooms[room_id] = room
        self._count_room(creator_ip, 1)
        return room

    def new_participant(self, room: Room, name: str, *, is_host: bool) -> Participant:
        uid = room.next_user_id
        room.next_user_id += 1
        p = Participant(
            user_id=uid, name=name, token=self.entropy.token(), is_host=is_host,
            replay=ReplayBuffer(self.settings.replay_events, self.settings.replay_bytes),
        )
        room.participants[uid] = p
        return p

    def join_blocked(self, ip: str) -> bool:
        window = self._join_failures.get(ip)
        if not window:
            return False
        cutoff = self.monotonic() - JOIN_FAILURE_WINDOW
        while window and window[0] <= cutoff:
            window.popleft()
        if not window:
            del self._join_failures[ip]
            return False
        return len(window) >= self.settings.join_failure_limit

    def count_join_failure(self, ip: str) -> None:
        self._join_failures.setdefault(ip, deque()).append(self.monotonic())

    def count(self, ctx: Ctx, metric: str, label: str, amount: int = 1) -> None:
        ctx.actions.append(Counted(metric, label, amount))


def _is_deferred(ctx: Ctx) -> bool:
    return any(isinstance(a, StartImport) for a in ctx.actions)


# The event modules register their handlers in ``EVENTS`` when imported.
from . import classroom, lifecycle, messages, rtc, sharing, steps  # noqa: E402, F401
