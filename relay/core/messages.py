"""Chat between the host and each student (§6.2)."""

from __future__ import annotations

from typing import Any

from .context import Ctx
from .lifecycle import target_student
from .model import Participant, Room
from .outgoing import Outgoing
from .payload import obj, req_int, req_str, text_len
from .registry import HOST, STUDENT, EventSpec
from .stats import iso_now

CONTENT_MAX = 10_000


def _content(data: dict[str, Any]) -> str:
    return text_len(req_str(data, "content"), 1, CONTENT_MAX, "'content'")


def _stamps(wall: float) -> tuple[str, str]:
    """``created_at`` ("HH:MM:SS", seed compatibility) and the ISO timestamp of one instant."""
    timestamp = iso_now(wall)
    return timestamp[11:19], timestamp


def _message(room: Room, sender: int, receiver: int, content: str,
             stamps: tuple[str, str]) -> dict[str, Any]:
    message = {
        "id": room.next_message_id,
        "sender": sender,
        "receiver": receiver,
        "content": content,
        "status": None,
        "created_at": stamps[0],
        "timestamp": stamps[1],
    }
    room.next_message_id += 1
    return message


def _to_student(room: Room, student: Participant, content: str, stamps: tuple[str, str],
                ctx: Ctx) -> None:
    message = _message(room, room.host.user_id, student.user_id, content, stamps)
    student.add_message(message)
    ctx.seq(room, student, Outgoing("message/to_client", message))


def _parse_to_client(ctx: Ctx, data: Any) -> tuple[int, str]:
    data = obj(data)
    return req_int(data, "user_id"), _content(data)


def to_client(ctx: Ctx, parsed: tuple[int, str]) -> None:
    assert ctx.room is not None
    user_id, content = parsed
    student = target_student(ctx.room, user_id)
    _to_student(ctx.room, student, content, _stamps(ctx.now), ctx)


def _parse_content(ctx: Ctx, data: Any) -> str:
    return _content(obj(data))


def to_all(ctx: Ctx, content: str) -> None:
    room = ctx.room
    assert room is not None
    stamps = _stamps(ctx.now)  # one instant for the whole event
    for student in room.students():
        _to_student(room, student, content, stamps, ctx)


def to_mentor(ctx: Ctx, content: str) -> None:
    room, sender = ctx.room, ctx.sender
    assert room is not None and sender is not None
    message = _message(room, sender.user_id, room.host.user_id, content,
                       _stamps(ctx.now))
    sender.add_message(message)
    ctx.to_host("message/to_mentor", message)


def _parse_user(ctx: Ctx, data: Any) -> int:
    return req_int(obj(data), "user_id")


def message_user(ctx: Ctx, user_id: int) -> None:
    assert ctx.room is not None
    student = target_student(ctx.room, user_id)
    ctx.to_host("message/user", {"user_id": user_id, "messages": list(student.messages)})


#: This module's events, in the order of the protocol's tables.
EVENTS = (
    EventSpec("message/to_client", HOST, _parse_to_client, to_client),
    EventSpec("message/to_all", HOST, _parse_content, to_all),
    EventSpec("message/to_mentor", STUDENT, _parse_content, to_mentor),
    EventSpec("message/user", HOST, _parse_user, message_user),
)
