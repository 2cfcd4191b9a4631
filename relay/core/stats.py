"""Stats data shared by the stats page, its SSE stream and the JSON API (§8)."""

from __future__ import annotations

import datetime as dt
import functools
import math
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from .model import Room


def percent(done: int, total: int) -> int | None:
    """``done * 100 / total`` rounded half up; None when there is no exercise step."""
    if total == 0:
        return None
    return int((Decimal(done * 100) / Decimal(total)).quantize(Decimal(1), ROUND_HALF_UP))


def iso_now(wall: float) -> str:
    """``wall`` as ISO 8601 UTC with milliseconds, as ``datetime.fromtimestamp`` rounds it.

    Every chat message carries one, so the part up to the second is formatted once per
    second (``strftime`` was a few per cent of the relay's CPU in bench W1).
    """
    frac, whole = math.modf(wall)
    us = round(frac * 1e6)
    if us >= 1_000_000:
        whole, us = whole + 1, us - 1_000_000
    elif us < 0:
        whole, us = whole - 1, us + 1_000_000
    return f"{_second_prefix(int(whole))}{us // 1000:03d}Z"


@functools.lru_cache(maxsize=1)
def _second_prefix(second: int) -> str:
    return dt.datetime.fromtimestamp(second, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.")


def room_stats(room: Room, wall: float) -> dict[str, Any]:
    steps = [{"name": s["name"], "type": s["type"]} for s in room.steps]
    exercises = [s["name"] for s in room.steps if s["type"] == "exercise"]
    students = []
    for p in room.students():
        statuses = {s["name"]: p.statuses.get(s["name"], "NONE") for s in room.steps}
        done = sum(1 for name in exercises if statuses[name] in ("DONE", "ACCEPTED"))
        students.append({
            "user_id": p.user_id, "name": p.name,
            "status": "online" if p.online else "offline", "signal": p.signal,
            "steps": statuses, "percent": percent(done, len(exercises)),
        })
    return {"room_id": room.room_id, "generated_at": iso_now(wall), "steps": steps,
            "students": students}
