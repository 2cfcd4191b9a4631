"""Chat between the host and each student (§6.2)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from .context import Ctx
from .lifecycle import target_student
from .model import Participant, Room
from .outgoing import Outgoing
from .payload import obj, req_int, req_str, text_len
from .registry import HOST, STUDENT, event

CONTENT_MAX = 10_000


def _content(data: dict[str, Any]) -> str:
    return text_len(req_str(data, "content"), 1, CONTENT_MAX, "'content'")


def _message(ctx: Ctx, room: Room, sender: int, receiver: int, content: str) -> dict[str, Any]:
    when = dt.datetime.fromtimestamp(ctx.hub.wall(), dt.UTC)
    message = {
        "id": room.next_message_id,
        "sender": sender,
        "receiver": receiver,
        "content": content,
        "status": None,
        "created_at": when.strftime("%H:%M:%S"),
        "timestamp": when.strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z",
    }
    room.next_message_id += 1
    return message


def _to_student(ctx: Ctx, room: Room, student: Participant, content: str) -> None:
    message = _message(ctx, room, room.host.user_id, student.user_id, content)
    student.add_message(message)
    ctx.seq(room, student, Outgoing("message/to_client", message))


def _parse_to_client(ctx: Ctx, data: Any) -> tuple[int, str]:
    data = obj(data)
    return req_int(data, "user_id"), _content(data)


@event("message/to_client", HOST, _parse_to_client)
def to_client(ctx: Ctx, parsed: tuple[int, str]) -> None:
    assert ctx.room is not None
    user_id, content = parsed
    _to_student(ctx, ctx.room, target_student(ctx.room, user_id), content)


def _parse_content(ctx: Ctx, data: Any) -> str:
    return _content(obj(data))


@event("message/to_all", HOST, _parse_content)
def to_all(ctx: Ctx, content: str) -> None:
    room = ctx.room
    assert room is not None
    for student in room.students():
        _to_student(ctx, room, student, content)


@event("message/to_mentor", STUDENT, _parse_content)
def to_mentor(ctx: Ctx, content: str) -> None:
    room, sender = ctx.room, ctx.sender
    assert room is not None and sender is not None
    message = _message(ctx, room, sender.user_id, room.host.user_id, content)
    sender.add_message(message)
    ctx.to_host("message/to_mentor", message)


def _parse_user(ctx: Ctx, data: Any) -> int:
    return req_int(obj(data), "user_id")


@event("message/user", HOST, _parse_user)
def message_user(ctx: Ctx, user_id: int) -> None:
    assert ctx.room is not None
    student = target_student(ctx.room, user_id)
    ctx.to_host("message/user", {"user_id": user_id, "messages": list(student.messages)})
