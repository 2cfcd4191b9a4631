"""Code sharing: one current sharer per room, stored snapshots (§6.4)."""

from __future__ import annotations

from typing import Any

from .context import Ctx
from .errors import EventError, invalid, too_large
from .lifecycle import target_student
from .model import FileEntry
from .payload import obj, req_int
from .registry import HOST, STUDENT, EventSpec
from .snapshots import sharing_snapshot_data

MAX_FILES = 2000
MAX_CONTENT_BYTES = 8 * 1024 * 1024
FILE_STATUSES = ("CREATED", "CHANGED", "REMOVED")
_CONTROL = frozenset(chr(c) for c in [*range(0x20), 0x7F])


def _parse_target(ctx: Ctx, data: Any) -> int:
    return req_int(obj(data), "user_id")


def sharing_start(ctx: Ctx, user_id: int) -> None:
    room = ctx.room
    assert room is not None
    student = target_student(room, user_id)
    previous = room.sharer
    if previous is not None and previous != user_id and previous in room.participants:
        ctx.seq(room, room.participants[previous], "sharing/end", {})
    room.sharer = user_id
    ctx.seq(room, student, "sharing/start", {})


def sharing_end(ctx: Ctx, user_id: int) -> None:
    room = ctx.room
    assert room is not None
    student = target_student(room, user_id)
    if room.sharer == user_id:
        room.sharer = None
    ctx.seq(room, student, "sharing/end", {})


def _check_filename(name: object) -> str:
    if not isinstance(name, str):
        raise invalid("'filename' must be a string")
    if not name:
        raise invalid("'filename' must not be empty")
    if len(name) > 512:
        raise too_large("'filename' is longer than 512 characters")
    if name.startswith("/") or ".." in name.split("/"):
        raise invalid("'filename' must be a relative path without '..'")
    if any(ch in _CONTROL for ch in name):
        raise invalid("'filename' must not contain control characters")
    return name


def _parse_files(ctx: Ctx, data: Any) -> list[dict[str, Any]]:
    files = obj(data).get("files")
    if not isinstance(files, list):
        raise invalid("'files' must be an array")
    if len(files) > MAX_FILES:
        raise too_large(f"at most {MAX_FILES} files")
    items: list[dict[str, Any]] = []
    for item in files:
        if not isinstance(item, dict):
            raise invalid("each file must be an object")
        filename = _check_filename(item.get("filename"))
        status = item.get("status")
        if status not in FILE_STATUSES or not isinstance(status, str):
            raise invalid("'status' must be CREATED, CHANGED or REMOVED")
        content = None
        if status != "REMOVED":
            content = item.get("content")
            if not isinstance(content, str):
                raise invalid("'content' must be a string")
        items.append({"filename": filename, "status": status, "content": content})
    return items


def _apply_files(
    base: dict[str, FileEntry], base_bytes: int, items: list[dict[str, Any]]
) -> tuple[dict[str, FileEntry], int]:
    """Apply items in order to a copy of ``base``; the byte total is kept incrementally."""
    files = dict(base)
    total = base_bytes
    for item in items:
        old = files.pop(item["filename"], None)
        if old is not None:
            total -= old.size
        if item["status"] != "REMOVED":
            content = item["content"]
            size = len(content) if content.isascii() else len(content.encode("utf-8"))
            files[item["filename"]] = FileEntry(content, item["status"], size)
            total += size
    if len(files) > MAX_FILES:
        raise too_large(f"the stored snapshot would exceed {MAX_FILES} files")
    if total > MAX_CONTENT_BYTES:
        raise too_large("the stored snapshot would exceed 8 MiB of content")
    return files, total


def _forward(
    ctx: Ctx, name: str, items: list[dict[str, Any]], base: dict[str, FileEntry], base_bytes: int,
    stored: list[dict[str, Any]] | None = None,
) -> None:
    """Store ``stored`` (default: ``items``) applied to ``base``, forward ``items``."""
    room, sender = ctx.room, ctx.sender
    assert room is not None and sender is not None
    if room.sharer != sender.user_id:
        raise EventError("not_sharing", "you are not the current sharer")
    sender.files, sender.files_bytes = _apply_files(
        base, base_bytes, items if stored is None else stored)
    ctx.to_host(name, {"room_id": room.room_id, "user_id": sender.user_id, "files": items})


def code_send(ctx: Ctx, items: list[dict[str, Any]]) -> None:
    # §6.4: a full snapshot replaces the stored one with its CREATED/CHANGED items only;
    # a REMOVED item in it deletes nothing (not even an earlier item of the same event).
    kept = [item for item in items if item["status"] != "REMOVED"]
    _forward(ctx, "sharing/code_send", items, {}, 0, kept)


def code_update(ctx: Ctx, items: list[dict[str, Any]]) -> None:
    assert ctx.sender is not None
    _forward(ctx, "sharing/code_update", items, ctx.sender.files, ctx.sender.files_bytes)


def sharing_snapshot(ctx: Ctx, user_id: int) -> None:
    assert ctx.room is not None
    student = target_student(ctx.room, user_id)
    ctx.to_host("sharing/snapshot", sharing_snapshot_data(student))


#: This module's events, in the order of the protocol's tables.
EVENTS = (
    EventSpec("sharing/start", HOST, _parse_target, sharing_start),
    EventSpec("sharing/end", HOST, _parse_target, sharing_end),
    EventSpec("sharing/code_send", STUDENT, _parse_files, code_send),
    EventSpec("sharing/code_update", STUDENT, _parse_files, code_update),
    EventSpec("sharing/snapshot", HOST, _parse_target, sharing_snapshot),
)
