"""Steps (tasks): publishing, statuses with alerts, the table and imports (§6.5, §6.7)."""

from __future__ import annotations

from typing import Any, NoReturn

from .actions import StartImport
from .context import Ctx
from .errors import EventError, invalid, too_large
from .lifecycle import target_student
from .model import STATUSES, Room
from .outgoing import Outgoing
from .payload import max_bytes, obj, req_int, req_str
from .registry import HOST, STUDENT, EventSpec
from .steps_import import ImportFailure, markdown_to_tasks, validate_tasks

MAX_STEPS = 100
STEP_CONTENT_MAX = 256 * 1024
STUDENT_STATUSES = ("NONE", "IN_PROGRESS", "HELP", "DONE")
IMPORT_OK = "Tasks were imported successfully!"
IMPORT_BUSY = "An import is already running"


def _parse_step(item: Any) -> dict[str, str] | None:
    """One published step, or None for an empty slot (blank/missing content)."""
    if not isinstance(item, dict):
        raise invalid("each step must be an object")
    content = item.get("content")
    if content is None or (isinstance(content, str) and not content.strip()):
        return None
    if not isinstance(content, str):
        raise invalid("'content' must be a string")
    max_bytes(content, STEP_CONTENT_MAX, "'content'")
    name = req_str(item, "name").strip()
    if not name:
        raise invalid("'name' must not be empty")
    if len(name) > 32:
        raise too_large("'name' is longer than 32 characters")
    language = req_str(item, "language")
    if not language:
        raise invalid("'language' must not be empty")
    if len(language) > 32:
        raise too_large("'language' is longer than 32 characters")
    kind = item.get("type")
    if kind not in ("exercise", "theory"):
        raise invalid("'type' must be 'exercise' or 'theory'")
    return {"name": name, "content": content, "language": language, "type": kind}


def _parse_all(ctx: Ctx, data: Any) -> list[dict[str, str]]:
    if not isinstance(data, list):
        raise invalid("payload must be an array of steps")
    if len(data) > MAX_STEPS:
        raise too_large(f"at most {MAX_STEPS} steps")
    steps: list[dict[str, str]] = []
    names: set[str] = set()
    for item in data:
        step = _parse_step(item)
        if step is None:
            continue
        if step["name"] in names:
            raise invalid(f"duplicate step name {step['name']!r}")
        names.add(step["name"])
        steps.append(step)
    return steps


def steps_all(ctx: Ctx, steps: list[dict[str, str]]) -> None:
    room = ctx.room
    assert room is not None
    room.steps = steps
    room.draft = None
    names = {s["name"] for s in steps}
    out = room.steps_out = Outgoing("steps/all", steps)
    for student in room.students():
        for name in [n for n in student.statuses if n not in names]:
            del student.statuses[name]
        ctx.seq(room, student, out)
    ctx.stats_changed()


def _published(room: Room) -> set[str]:
    return {s["name"] for s in room.steps}


def _parse_status_map(ctx: Ctx, data: Any) -> dict[str, Any]:
    return obj(data)


def status_to_mentor(ctx: Ctx, statuses: dict[str, Any]) -> None:
    room, student = ctx.room, ctx.sender
    assert room is not None and student is not None
    # Entries for names that are not published steps are ignored, whatever their value
    # (§6.5: the plugin reports statuses for names of its own, e.g. ``T``).
    published = _published(room)
    statuses = {name: value for name, value in statuses.items() if name in published}
    forbidden = False
    for name, value in statuses.items():
        if value == "ACCEPTED":
            forbidden = forbidden or student.statuses.get(name) != "ACCEPTED"
        elif value not in STUDENT_STATUSES or not isinstance(value, str):
            raise invalid("a status must be NONE, IN_PROGRESS, HELP or DONE")
    if forbidden:
        raise EventError("forbidden", "only the teacher can accept a solution")
    changed = False
    for name, value in statuses.items():
        if student.statuses.get(name) == "ACCEPTED" or student.statuses.get(name) == value:
            continue
        student.statuses[name] = value
        changed = True
    if changed:
        ctx.to_host("steps/status/to_mentor",
                    {"user_id": student.user_id, "steps": dict(student.statuses)})
        ctx.stats_changed()


def _parse_to_client(ctx: Ctx, data: Any) -> tuple[int, dict[str, str]]:
    data = obj(data)
    user_id = req_int(data, "user_id")
    steps = data.get("steps")
    if not isinstance(steps, dict):
        raise invalid("'steps' must be an object")
    for value in steps.values():
        if value not in STATUSES or not isinstance(value, str):
            raise invalid("a status must be one of " + ", ".join(STATUSES))
    return user_id, steps


def status_to_client(ctx: Ctx, parsed: tuple[int, dict[str, str]]) -> None:
    room = ctx.room
    assert room is not None
    user_id, steps = parsed
    published = _published(room)
    for name in steps:
        if name not in published:
            raise invalid(f"{name!r} is not a published step")
    student = target_student(room, user_id)
    for name, value in steps.items():
        old = student.statuses.get(name, "NONE")
        if value == "ACCEPTED" and old != "ACCEPTED":
            ctx.alert(room, student, "SUCCESS", f"Task {name} solution accepted!")
        elif value == "NONE" and old == "DONE":
            ctx.alert(room, student, "WARNING", f"Task {name} solution declined!")
        student.statuses[name] = value
    ctx.seq(room, student, "steps/status/to_client", dict(steps))
    ctx.stats_changed()


def _parse_obj(ctx: Ctx, data: Any) -> None:
    obj(data)


def steps_table(ctx: Ctx, _: None) -> None:
    room = ctx.room
    assert room is not None
    table = [
        {"user_id": s.user_id, "name": s.name, "status": "online" if s.online else "offline",
         "steps": dict(s.statuses)}
        for s in room.students()
    ]
    ctx.to_host("steps/table", table)


def _parse_import(ctx: Ctx, data: Any) -> tuple[str, str]:
    data = obj(data)
    url, markdown = data.get("url"), data.get("markdown")
    if (url is None) == (markdown is None):
        raise invalid("send exactly one of 'url' or 'markdown'")
    if url is not None:
        if not isinstance(url, str):
            raise invalid("'url' must be a string")
        if len(url) > 2048:
            raise too_large("'url' is longer than 2048 characters")
        return "notion", url
    if not isinstance(markdown, str):
        raise invalid("'markdown' must be a string")
    return "markdown", max_bytes(markdown, 1024 * 1024, "'markdown'")


def steps_import(ctx: Ctx, parsed: tuple[str, str]) -> None:
    room = ctx.room
    assert room is not None
    source, value = parsed
    if room.importing:
        raise EventError("import_failed", IMPORT_BUSY)
    if source == "notion":
        room.importing = True
        ctx.actions.append(StartImport(room.room_id, value))
        return
    try:
        steps = validate_tasks(markdown_to_tasks(value))
    except ImportFailure as exc:
        import_failed(ctx, room, exc.message, "markdown")
    import_succeeded(ctx, room, steps, "markdown")


def import_succeeded(ctx: Ctx, room: Room, steps: list[dict[str, str]], source: str) -> None:
    room.draft = steps
    ctx.seq(room, room.host, "steps/load", steps)
    ctx.alert(room, room.host, "SUCCESS", IMPORT_OK)
    ctx.count("imports", f"{source}:ok")


def import_failed(ctx: Ctx, room: Room, message: str, source: str) -> NoReturn:
    """Failure: the host's ERROR alert (kept), then the ``import_failed`` error."""
    ctx.alert(room, room.host, "ERROR", message)
    ctx.count("imports", f"{source}:failed")
    ctx.failure_actions.extend(ctx.actions)
    raise EventError("import_failed", message)


#: This module's events, in the order of the protocol's tables.
EVENTS = (
    EventSpec("steps/all", HOST, _parse_all, steps_all),
    EventSpec("steps/status/to_mentor", STUDENT, _parse_status_map, status_to_mentor,
              room_id_key=False),
    EventSpec("steps/status/to_client", HOST, _parse_to_client, status_to_client),
    EventSpec("steps/table", HOST, _parse_obj, steps_table),
    EventSpec("steps/import", HOST, _parse_import, steps_import),
)
