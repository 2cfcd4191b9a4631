"""The sans-IO observer core: the entry points the shell calls.

``Hub.handle`` takes one decoded client event from one connection, the time and an entropy
source, and returns an ``Outcome``: the ordered actions to perform and the error, if the
event failed. Nothing in here awaits, touches a socket, reads a clock or draws randomness
of its own, so the same commands with the same times and entropy always produce the same
rooms and frames — which is what lets a clustered room be rebuilt from its log.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from . import lifecycle, steps
from .actions import Action, StartImport
from .context import Ctx, Session
from .errors import EventError
from .events import EVENT_TABLE
from .ids import Entropy
from .limits import COUNTED
from .model import Room
from .registry import HOST, STUDENT, UNBOUND, EventSpec
from .rooms import Rooms
from .settings import CoreSettings
from .steps_import import ImportFailure

log = logging.getLogger("relay.core")

#: Events that re-attach to an existing participant; their failures are counted (§4.3).
REATTACH_EVENTS = frozenset({"room/join", "room/rehost", "room/rejoin"})
#: Events that change which room a connection is bound to.
BINDING_EVENTS = REATTACH_EVENTS | {"room/create", "room/leave", "room/close"}


@dataclass(slots=True)
class Outcome:
    actions: list[Action]
    error: EventError | None = None
    #: The acknowledgement waits for a background task (Notion import).
    deferred: bool = False


class Hub:
    """Every observer room of this node, and the dispatcher of client events."""

    def __init__(self, settings: CoreSettings | None = None,
                 table: Mapping[str, EventSpec] = EVENT_TABLE) -> None:
        self.settings = settings or CoreSettings()
        self.table = table
        self.state = Rooms(self.settings)

    @property
    def rooms(self) -> dict[int, Room]:
        return self.state.rooms

    # -- entry points ---------------------------------------------------------------
    def handle(self, session: Session, event: str, data: Any, *, now: float,
               entropy: Entropy) -> Outcome:
        """Apply one client event; all or nothing."""
        spec = self.table.get(event)
        if spec is None:
            return Outcome([], EventError("unknown_event", f"unknown event {event!r}"))
        room = sender = None
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
        ctx = Ctx(self.state, session, room, sender, now=now, entropy=entropy)
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
            if (exc.code in COUNTED and event in REATTACH_EVENTS
                    and session.blocked is None):
                self.state.join_failures.count(session.ip, now)
            # The error is a value from here on; its traceback would keep every frame of
            # the handler (and what they reference) alive in a reference cycle.
            return Outcome(ctx.failure_actions, exc.with_traceback(None))
        except Exception:
            log.exception("internal error while handling %s", event)
            return Outcome([], EventError("internal", "internal server error"))
        deferred = any(isinstance(a, StartImport) for a in ctx.actions)
        return Outcome(ctx.actions, None, deferred=deferred)

    def disconnect(self, session: Session, *, now: float, entropy: Entropy) -> list[Action]:
        """The session's connection ended (not replaced): the participant goes offline."""
        if not session.bound:
            return []
        assert session.room_id is not None and session.user_id is not None
        room = self.rooms.get(session.room_id)
        participant = room.participants.get(session.user_id) if room else None
        session.room_id = session.user_id = None
        if room is None or participant is None:
            return []
        ctx = Ctx(self.state, session, room, participant, now=now, entropy=entropy)
        lifecycle.went_offline(ctx, room, participant)
        return ctx.actions

    def import_done(self, room_id: int, result: list[dict[str, str]] | ImportFailure, *,
                    now: float, entropy: Entropy) -> Outcome:
        """Feed a finished Notion import back; applied only if the room still exists."""
        room = self.rooms.get(room_id)
        if room is None:
            return Outcome([], EventError("import_failed", "the room no longer exists"))
        room.importing = False
        ctx = Ctx(self.state, Session(ip=""), room, room.host, now=now, entropy=entropy)
        try:
            if isinstance(result, ImportFailure):
                steps.import_failed(ctx, room, result.message, "notion")
            steps.import_succeeded(ctx, room, result, "notion")
        except EventError as exc:
            return Outcome(ctx.failure_actions, exc.with_traceback(None))
        return Outcome(ctx.actions)

    def expire(self, now: float) -> list[Action]:
        """Remove rooms idle for the expiry (§4.5) and forget stale failed-join windows."""
        self.state.join_failures.expire(now)
        limit = self.settings.room_idle_expiry
        actions: list[Action] = []
        for room in list(self.rooms.values()):
            if room.empty_since is not None and now - room.empty_since >= limit:
                actions.extend(self.state.remove_room(room, reason="expired"))
        return actions

    # -- the per-IP limits, for the shell (the web port's stats lookups count too) ------
    def join_blocked(self, ip: str, now: float) -> bool:
        return self.state.join_failures.blocked(ip, now)

    def count_join_failure(self, ip: str, now: float) -> None:
        self.state.join_failures.count(ip, now)
