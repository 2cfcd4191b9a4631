"""The space inspector's JSON document (§9.8), built from a space's state.

The shell serves it as ``/api/spaces/{space}``, streams it over SSE (re-sending it when
``Space.version`` moves, at most once per second) and renders the HTML page from it.
"""

from __future__ import annotations

import datetime as dt
import math
from typing import Any

from .surface import SpaceSurface

PREVIEW_CHARS = 200


def iso_timestamp(now: float) -> str:
    """``YYYY-MM-DDTHH:MM:SS.mmmZ`` (UTC) for wall time ``now``.

    Like ``datetime.fromtimestamp`` (and the observer stats' timestamps): the time is rounded
    to the microsecond, then the milliseconds are truncated, so ``….12`` reads ``.120`` even
    though the float is a hair below it.
    """
    whole = math.floor(now)
    micros = round((now - whole) * 1e6)
    if micros >= 1_000_000:
        whole, micros = whole + 1, micros - 1_000_000
    stamp = dt.datetime.fromtimestamp(whole, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{micros // 1000:03d}Z"


def document(space: SpaceSurface, now: float) -> dict[str, Any]:
    """``{space, generated_at, clients, topics, services}``; names in code-point order."""
    pending: dict[tuple[str, int], int] = {}
    for p in space.pending.values():
        key = (p.service, p.provider)
        pending[key] = pending.get(key, 0) + 1
    topics = []
    for name in sorted(space.topics):
        topic = space.topics[name]
        topics.append({"name": name, "type": topic.type, "version": topic.version,
                       "subscribers": len(topic.subscribers), "bytes": topic.size,
                       "preview": topic.preview(PREVIEW_CHARS)})
    services = [
        {"name": name, "provider": provider, "pending": pending.get((name, provider), 0)}
        for name, provider in sorted(space.services.items())
    ]
    return {"space": space.name, "generated_at": iso_timestamp(now),
            "clients": sorted(space.clients), "topics": topics, "services": services}
