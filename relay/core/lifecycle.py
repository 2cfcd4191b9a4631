"""Room lifecycle (§6.1), binding and resume (§4.2–§4.5, §5.2)."""

from __future__ import annotations

from typing import Any

from signaling.turn import rtc_config

from . import ids
from .actions import Bind, Disconnect, Unbind
from .context import Ctx
from .errors import EventError, invalid, too_large
from .model import SOCKETIO, Participant, Room
from .outgoing import Outgoing
from .payload import clean_name, obj, opt_int, req_int
from .registry import HOST, STUDENT, UNBOUND, EventSpec
from .snapshots import send_host_snapshot, send_room_update, send_student_snapshot
from .versions import is_outdated

NAME_LIMIT = 32
TEACHER_OFFLINE = "The teacher is offline!"
TEACHER_BACK = "The teacher reconnected!"
OUTDATED = "You have an outdated version of the plugin. Please install the latest version "


# -- shared helpers ------------------------------------------------------------------
def target_student(room: Room, user_id: int) -> Participant:
    p = room.participants.get(user_id)
    if p is None or p.is_host:
        raise EventError("user_not_found", f"no student {user_id} in this room")
    return p


def rtc_config_out(ctx: Ctx, p: Participant) -> Outgoing:
    s = ctx.state.settings
    return Outgoing(
        "rtc/config",
        rtc_config(
            p.user_id, p.is_host, stun_urls=s.stun_urls, turn_urls=s.turn_urls,
            turn_secret=s.turn_secret, turn_ttl=s.turn_ttl, now=ctx.now,
        ),
    )


def _bind(ctx: Ctx, room: Room, p: Participant, cursor: int) -> None:
    ctx.bind(Bind(room.room_id, p.user_id, cursor, p.replay.counter,
                  p.replay.events_after(cursor)), p)
    session = ctx.session
    session.room_id = room.room_id
    session.user_id = p.user_id
    # Every attach (create, join, rehost, rejoin, re-attach by name) binds the participant
    # to the device this connection carries, or to none (§4.6: the latest attach wins),
    # and records its framing (§4.5, the shape of ``room/update``).
    p.device = session.device
    p.framing = session.framing
    p.online = True
    room.empty_since = None


def same_device(carried: str | None, bound: str | None) -> bool:
    """Whether a connection carries the device cookie a participant is bound to (§4.6)."""
    return carried is not None and bound is not None and ids.same_secret(carried, bound)


def _check_join_rate(ctx: Ctx) -> None:
    blocked = ctx.session.blocked
    if blocked is None:
        blocked = ctx.state.join_failures.blocked(ctx.session.ip, ctx.now)
    if blocked:
        raise EventError("rate_limited", "too many failed attempts; try again later")


def _room(ctx: Ctx, room_id: int) -> Room:
    room = ctx.state.rooms.get(room_id)
    if room is None:
        raise EventError("room_not_found", f"room {room_id} does not exist")
    return room


def _opt_name(data: dict[str, Any]) -> str | None:
    name = data.get("name")
    if name is not None and not isinstance(name, str):
        raise invalid("'name' must be a string")
    return name


def went_offline(ctx: Ctx, room: Room, p: Participant) -> None:
    """A participant's connection ended for a reason other than leave, kill or close."""
    p.online = False
    if p.is_host:
        out = Outgoing("message", {"message": TEACHER_OFFLINE})
        for student in room.students():
            ctx.seq(room, student, out)
    else:
        send_room_update(ctx, room)
        ctx.stats_changed()
    if room.online_count() == 0:
        room.empty_since = ctx.now


# -- create / join ----------------------------------------------------------------------
def _parse_create(ctx: Ctx, data: Any) -> str:
    name = _opt_name(obj(data))
    return "Host" if name is None else clean_name(name, NAME_LIMIT)


def room_create(ctx: Ctx, name: str) -> None:
    state = ctx.state
    blocked = ctx.session.blocked  # decided (and logged) by the client's node when clustered
    if blocked if blocked is not None else state.room_cap_reached(ctx.session.ip):
        raise EventError("rate_limited", "too many open rooms from this address; close one")
    room = state.new_room(ctx.entropy, ctx.session.ip)
    host = state.new_participant(room, name, ctx.entropy, is_host=True)
    ctx.room, ctx.sender = room, host
    from .actions import RoomOpened

    ctx.actions.append(RoomOpened(room.room_id))
    _bind(ctx, room, host, 0)
    ctx.unseq(room, host, "room/created", {
        "room_id": room.room_id, "user_id": host.user_id, "token": host.token,
        "stats_key": room.stats_key,
    })
    ctx.unseq(room, host, rtc_config_out(ctx, host))
    send_room_update(ctx, room)
    ctx.stats_changed()


def _parse_join(ctx: Ctx, data: Any) -> tuple[int, str | None, str | None]:
    data = obj(data)
    room_id = req_int(data, "room_id")
    name = _opt_name(data)
    version = data.get("version")
    if version is not None:
        if not isinstance(version, str):
            raise invalid("'version' must be a string")
        if len(version) > 32:
            raise too_large("'version' is longer than 32 characters")
    return room_id, name, version


def room_join(ctx: Ctx, parsed: tuple[int, str | None, str | None]) -> None:
    room_id, raw_name, version = parsed
    _check_join_rate(ctx)
    room = _room(ctx, room_id)
    ctx.room = room
    if raw_name is None:
        name = ctx.entropy.guest_name()
        while room.name_taken(name):
            name = ctx.entropy.guest_name()
    else:
        name = clean_name(raw_name, NAME_LIMIT)
        existing = room.name_taken(name)
        if existing is not None:
            instead = _name_in_use(ctx, existing)
            if instead == "reattach":
                _attach_student(ctx, room, existing, None)
                return
            if instead is None:
                ctx.failure_actions.append(_reply_alert(
                    "ERROR", f"Username {name} is already used in room {room.room_id}!"
                ))
                raise EventError("name_taken", f"the name {name!r} is already used in this room")
            # A restarted seed plugin (§4.5): the student it was is gone for good.
            remove_student(ctx, room, existing)
    student = ctx.state.new_participant(room, name, ctx.entropy, is_host=False)
    ctx.sender = student
    _bind(ctx, room, student, 0)
    ctx.unseq(room, student, "room/join", _join_reply(room, student))
    ctx.unseq(room, student, rtc_config_out(ctx, student))
    send_student_snapshot(ctx, room, student)
    newest = ctx.state.settings.plugin_version
    if version is not None and is_outdated(version, newest):
        ctx.alert(room, student, "WARNING", OUTDATED + newest)
    send_room_update(ctx, room)
    ctx.stats_changed()


def _name_in_use(ctx: Ctx, existing: Participant) -> str | None:
    """What a ``room/join`` with the name of ``existing`` does instead of ``name_taken``:
    ``"reattach"`` to it (§4.4 item 2, §4.5 item 1), ``"replace"`` it by a new student
    (§4.5 item 2), or None (``name_taken``: the host, an online student, or, without the
    legacy mode, an offline student last attached over the plain framing)."""
    if existing.is_host or existing.online:
        return None
    if ctx.state.settings.legacy_tokenless:
        return "reattach"
    if existing.framing != SOCKETIO:
        return None
    return "reattach" if same_device(ctx.session.device, existing.device) else "replace"


def _reply_alert(kind: str, message: str) -> Any:
    from .actions import Reply

    return Reply(Outgoing("alerts", {"message": message, "type": kind}))


def _join_reply(room: Room, p: Participant) -> dict[str, Any]:
    return {"room_id": room.room_id, "user_id": p.user_id, "token": p.token}


# -- rehost / rejoin --------------------------------------------------------------------
def _parse_reattach(ctx: Ctx, data: Any) -> tuple[int, int, str | None, int | None]:
    data = obj(data)
    room_id = req_int(data, "room_id")
    user_id = req_int(data, "user_id")
    token = data.get("token")
    if token is not None and not isinstance(token, str):
        raise invalid("'token' must be a string")
    last_seq = opt_int(data, "last_seq")
    if last_seq is not None and last_seq < 0:
        raise invalid("'last_seq' must be >= 0")
    return room_id, user_id, token, last_seq


def _authenticate(
    ctx: Ctx, parsed: tuple[int, int, str | None, int | None], want_host: bool
) -> tuple[Room, Participant, int | None]:
    room_id, user_id, token, last_seq = parsed
    _check_join_rate(ctx)
    room = _room(ctx, room_id)
    p = room.participants.get(user_id)
    if p is None:
        raise EventError("user_not_found", f"no user {user_id} in room {room_id}")
    if token is None:
        # Tokenless: the legacy mode (§4.4), or the device cookie bound to it (§4.6).
        if not (ctx.state.settings.legacy_tokenless
                or same_device(ctx.session.device, p.device)):
            raise EventError("bad_token", "a token is required")
    elif not ids.same_secret(token, p.token):
        raise EventError("bad_token", "wrong token")
    if p.is_host != want_host:
        raise EventError("forbidden", "this user has another role")
    ctx.room, ctx.sender = room, p
    if ctx.session.framing == SOCKETIO:
        last_seq = None  # Socket.IO carries no seq: a last_seq is ignored (Appendix C)
    return room, p, last_seq


def _attach(ctx: Ctx, room: Room, p: Participant, last_seq: int | None,
            first: list[Outgoing]) -> str:
    """Bind and resume per §5.2; returns ``fresh``, ``replayed`` or ``resync``."""
    counter = p.replay.counter
    if last_seq is None:
        mode, cursor = "fresh", counter
    elif last_seq > counter:
        mode, cursor = "ahead", counter
    elif p.replay.holds_after(last_seq):
        mode, cursor = "replayed", last_seq
    else:
        mode, cursor = "gap", counter
    _bind(ctx, room, p, cursor)
    for out in first:
        ctx.unseq(room, p, out, after=cursor)
    if mode in ("ahead", "gap"):
        ctx.unseq(room, p, "room/resync", {"reason": mode}, after=cursor)
    result = mode if mode in ("fresh", "replayed") else "resync"
    ctx.count("resumes", result)
    if mode == "replayed":
        ctx.count("replayed_events", "", counter - cursor)
    return result


def _attach_student(ctx: Ctx, room: Room, p: Participant, last_seq: int | None) -> None:
    ctx.sender = p
    first = [Outgoing("room/join", _join_reply(room, p)), rtc_config_out(ctx, p)]
    if _attach(ctx, room, p, last_seq, first) != "replayed":
        send_student_snapshot(ctx, room, p)
    send_room_update(ctx, room)
    ctx.stats_changed()


def room_rehost(ctx: Ctx, parsed: tuple[int, int, str | None, int | None]) -> None:
    room, host, last_seq = _authenticate(ctx, parsed, want_host=True)
    was_online = host.online
    if last_seq is None and room.sharer is not None:
        sharer = room.participants.get(room.sharer)
        room.sharer = None
        if sharer is not None:
            ctx.seq(room, sharer, "sharing/end", {})
    mode = _attach(ctx, room, host, last_seq, [rtc_config_out(ctx, host)])
    if mode == "replayed":
        send_room_update(ctx, room)
    else:
        send_host_snapshot(ctx, room)
    if not was_online:
        out = Outgoing("message", {"message": TEACHER_BACK})
        for student in room.students():
            ctx.seq(room, student, out)


def room_rejoin(ctx: Ctx, parsed: tuple[int, int, str | None, int | None]) -> None:
    room, student, last_seq = _authenticate(ctx, parsed, want_host=False)
    _attach_student(ctx, room, student, last_seq)


# -- leave / kill / close -----------------------------------------------------------
def _parse_obj(ctx: Ctx, data: Any) -> None:
    obj(data)


def remove_student(ctx: Ctx, room: Room, student: Participant) -> None:
    del room.participants[student.user_id]
    if room.sharer == student.user_id:
        room.sharer = None
    send_room_update(ctx, room)
    ctx.stats_changed()
    if room.online_count() == 0:
        room.empty_since = ctx.now


def room_leave(ctx: Ctx, _: None) -> None:
    assert ctx.room is not None and ctx.sender is not None
    ctx.sender.online = False
    ctx.actions.append(Unbind())
    ctx.session.room_id = ctx.session.user_id = None
    remove_student(ctx, ctx.room, ctx.sender)


def _parse_kill(ctx: Ctx, data: Any) -> int:
    return req_int(obj(data), "user_id")


def room_kill(ctx: Ctx, user_id: int) -> None:
    room = ctx.room
    assert room is not None
    student = target_student(room, user_id)
    if student.online:
        ctx.seq(room, student, "room/kicked",
                {"message": "You were removed from the room by the teacher."})
        ctx.actions.append(Disconnect(room.room_id, student.user_id, 4001, "kicked"))
        student.online = False
    remove_student(ctx, room, student)


def room_close(ctx: Ctx, _: None) -> None:
    """§6.1: the online students get ``room/closed``; the host's connection becomes unbound
    and stays open (the shell acknowledges after these actions); the students'
    connections are closed with 4000 once flushed."""
    room = ctx.room
    assert room is not None
    closed = Outgoing("room/closed", {"message": "Room closed!"})
    for student in room.students():
        if student.online:
            ctx.seq(room, student, closed)
    ctx.actions.append(Unbind())
    ctx.session.room_id = ctx.session.user_id = None
    ctx.actions.extend(ctx.state.remove_room(room, keep_host=True))


#: This module's events, in the order of the protocol's tables.
EVENTS = (
    EventSpec("room/create", UNBOUND, _parse_create, room_create),
    EventSpec("room/join", UNBOUND, _parse_join, room_join),
    EventSpec("room/rehost", UNBOUND, _parse_reattach, room_rehost),
    EventSpec("room/rejoin", UNBOUND, _parse_reattach, room_rejoin),
    EventSpec("room/leave", STUDENT, _parse_obj, room_leave),
    EventSpec("room/kill", HOST, _parse_kill, room_kill),
    EventSpec("room/close", HOST, _parse_obj, room_close),
)
