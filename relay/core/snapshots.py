"""Views of room state sent to clients: ``room/update`` and the attach snapshots (§5.3)."""

from __future__ import annotations

from typing import Any

from .context import Ctx
from .model import SOCKETIO, Participant, Room
from .outgoing import Outgoing


def room_update_data(room: Room) -> dict[str, Any]:
    """§6.1 ``room/update``, shaped for the framing of the host's current (or last)
    connection: on Socket.IO the host and the online students only (the seed teacher UI
    shows every listed student as present); on the plain framing everyone, with status."""
    online_only = room.host.framing == SOCKETIO
    users = []
    for p in room.participants.values():
        if online_only and not p.online and not p.is_host:
            continue
        users.append(
            {
                "id": p.user_id,
                "name": p.name,
                "role": p.role,
                "status": "online" if p.online else "offline",
                "steps": {} if p.is_host else dict(p.statuses),
                "signal": None if p.is_host else p.signal,
            }
        )
    return {"id": room.room_id, "host": room.host.user_id, "users": users}


def send_room_update(ctx: Ctx, room: Room) -> None:
    ctx.seq(room, room.host, "room/update", room_update_data(room))


def sharing_snapshot_data(student: Participant) -> dict[str, Any]:
    files = [
        {"filename": name, "status": entry.status, "content": entry.content}
        for name, entry in sorted(student.files.items())
    ]
    return {"user_id": student.user_id, "files": files}


def send_host_snapshot(ctx: Ctx, room: Room) -> None:
    host = room.host
    steps = room.draft if room.draft is not None else room.steps
    if steps:
        ctx.seq(room, host, "steps/load", steps)
    if room.settings is not None:
        ctx.seq(room, host, "settings", room.settings)
    send_room_update(ctx, room)
    for student in room.students():
        if student.messages:
            ctx.seq(
                room, host, "message/user",
                {"user_id": student.user_id, "messages": list(student.messages)},
            )
    if room.sharer is not None and room.sharer in room.participants:
        sharer = room.participants[room.sharer]
        ctx.seq(room, host, "sharing/snapshot", sharing_snapshot_data(sharer))


def send_student_snapshot(ctx: Ctx, room: Room, student: Participant) -> None:
    if room.exercise:
        ctx.seq(room, student, "exercise", {"content": room.exercise})
    if room.steps:
        if room.steps_out is None:
            room.steps_out = Outgoing("steps/all", room.steps)
        ctx.seq(room, student, room.steps_out)
    if room.settings is not None:
        ctx.seq(room, student, "settings", room.settings)
    if student.statuses:
        ctx.seq(room, student, "steps/status/to_client", dict(student.statuses))
    if room.sharer == student.user_id:
        ctx.seq(room, student, "sharing/start", {})
    host_id = room.host.user_id
    for message in student.messages:
        if message["sender"] == host_id:
            ctx.seq(room, student, "message/to_client", message)
