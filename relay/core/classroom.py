"""Settings, the legacy exercise events, signals and client error logs (§6.3, §6.6)."""

from __future__ import annotations

from typing import Any

from .context import Ctx
from .errors import EventError, invalid
from .lifecycle import target_student
from .model import SIGNALS
from .outgoing import Outgoing
from .payload import max_bytes, obj, opt_int, req_int, req_str
from .registry import HOST, STUDENT, EventSpec
from .settings_parser import parse_files_to_ignore

KIB = 1024


def _broadcast(ctx: Ctx, name: str, data: Any) -> None:
    room = ctx.room
    assert room is not None
    out = Outgoing(name, data)
    for student in room.students():
        ctx.seq(room, student, out)


def _parse_settings(ctx: Ctx, data: Any) -> str:
    return max_bytes(req_str(obj(data), "files_to_ignore"), 64 * KIB, "'files_to_ignore'")


def settings(ctx: Ctx, text: str) -> None:
    assert ctx.room is not None
    ctx.room.settings = parse_files_to_ignore(text)
    _broadcast(ctx, "settings", ctx.room.settings)


def _parse_exercise(ctx: Ctx, data: Any) -> str:
    data = obj(data)
    if data.get("content") is None:
        return ""
    return max_bytes(req_str(data, "content"), 256 * KIB, "'content'")


def exercise(ctx: Ctx, content: str) -> None:
    assert ctx.room is not None
    ctx.room.exercise = content
    _broadcast(ctx, "exercise", {"content": content})


def _parse_feedback(ctx: Ctx, data: Any) -> tuple[int, bool]:
    data = obj(data)
    user_id = req_int(data, "user_id")
    accepted = data.get("accepted")
    if not isinstance(accepted, bool):
        raise invalid("'accepted' must be a boolean")
    return user_id, accepted


def exercise_feedback(ctx: Ctx, parsed: tuple[int, bool]) -> None:
    assert ctx.room is not None
    student = target_student(ctx.room, parsed[0])
    ctx.seq(ctx.room, student, "exercise/feedback", {"accepted": parsed[1]})


def _parse_obj(ctx: Ctx, data: Any) -> None:
    obj(data)


def exercise_reset(ctx: Ctx, _: None) -> None:
    _broadcast(ctx, "exercise/reset", {})


def _own_user_id(ctx: Ctx, data: dict[str, Any]) -> int | None:
    return opt_int(data, "user_id")


def _check_own(ctx: Ctx, user_id: int | None) -> None:
    assert ctx.sender is not None
    if user_id is not None and user_id != ctx.sender.user_id:
        raise EventError("forbidden", "'user_id' is not yours")


def _parse_signal(ctx: Ctx, data: Any) -> tuple[str, int | None]:
    data = obj(data)
    value = data.get("value")
    if value not in SIGNALS or not isinstance(value, str):
        raise invalid("'value' must be one of " + ", ".join(SIGNALS))
    return value, _own_user_id(ctx, data)


def signal(ctx: Ctx, parsed: tuple[str, int | None]) -> None:
    value, user_id = parsed
    _check_own(ctx, user_id)
    assert ctx.sender is not None
    ctx.sender.signal = value
    ctx.to_host("signal", {"user_id": ctx.sender.user_id, "value": value})
    ctx.stats_changed()


def _parse_client_error(ctx: Ctx, data: Any) -> tuple[list[str], int | None]:
    data = obj(data)
    lines: list[str] = []
    raw: list[str] = []
    content = data.get("content")
    if isinstance(content, list):
        if not all(isinstance(item, str) for item in content):
            raise invalid("'content' items must be strings")
        raw.extend(content)
        if content:
            lines.append("\n".join(content))
    elif isinstance(content, str):
        raw.append(content)
        lines.append(content)
    elif content is not None:
        raise invalid("'content' must be a string or an array of strings")
    for key, label in (("path", "Path: "), ("function", "Function: ")):
        value = data.get(key)
        if value is None:
            continue
        if not isinstance(value, str):
            raise invalid(f"'{key}' must be a string")
        raw.append(value)
        lines.append(label + value)
    max_bytes("".join(raw), 64 * KIB, "the error report")
    return lines, _own_user_id(ctx, data)


def error_from_client(ctx: Ctx, parsed: tuple[list[str], int | None]) -> None:
    lines, user_id = parsed
    _check_own(ctx, user_id)
    sender = ctx.sender
    assert sender is not None
    header = f"Error from {sender.name} (user {sender.user_id})"
    ctx.to_host("log", {"message": "\n".join([header, *lines])})


#: This module's events, in the order of the protocol's tables.
EVENTS = (
    EventSpec("settings", HOST, _parse_settings, settings),
    EventSpec("exercise", HOST, _parse_exercise, exercise),
    EventSpec("exercise/feedback", HOST, _parse_feedback, exercise_feedback),
    EventSpec("exercise/reset", HOST, _parse_obj, exercise_reset),
    EventSpec("signal", STUDENT, _parse_signal, signal),
    EventSpec("error/from_client", STUDENT, _parse_client_error, error_from_client),
)
