"""The stats event stream (§8.2): snapshot now, coalesced updates, keep-alives, close."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import trio

from relay.core.stats import room_stats

if TYPE_CHECKING:
    from relay.core.model import Room
    from relay.server import RelayServer

#: Seconds between ``: keep-alive`` comments on an otherwise quiet stream.
KEEPALIVE_INTERVAL = 15.0
#: Least seconds between two ``stats`` events; changes in between are coalesced.
MIN_INTERVAL = 1.0

KEEPALIVE = b": keep-alive\n\n"
CLOSED = b"event: closed\ndata: {}\n\n"


def stats_json(room: Room, wall: float) -> str:
    """The §8.3 document as compact one-line JSON."""
    return json.dumps(room_stats(room, wall), ensure_ascii=False, separators=(",", ":"))


def stats_event(room: Room, wall: float) -> bytes:
    return f"event: stats\ndata: {stats_json(room, wall)}\n\n".encode()


async def _first_of(timeout: float, *waits: Callable[[], Awaitable[Any]]) -> None:
    """Return when any of ``waits`` completes or after ``timeout`` seconds."""
    with trio.move_on_after(max(timeout, 0.0)):
        async with trio.open_nursery() as nursery:

            async def run(wait: Callable[[], Awaitable[Any]]) -> None:
                await wait()
                nursery.cancel_scope.cancel()

            for wait in waits:
                nursery.start_soon(run, wait)


async def stats_stream(server: RelayServer, room: Room) -> AsyncIterator[bytes]:
    """Yield SSE chunks for ``room`` until it is removed or the web port shuts down.

    Nothing awaits inside a cancel scope across a ``yield``: every wait happens in
    :func:`_first_of`, which returns before the next chunk is produced. Changes are
    detected through ``room.stats_version``, so one made while a chunk was being
    written is not missed.
    """
    room_id = room.room_id
    clock = trio.current_time
    sent_version = room.stats_version
    yield stats_event(room, server.hub.wall())
    last_stats = last_write = clock()

    async def change() -> None:
        # Checked in the same step that registers the waiter: a removal cannot slip between.
        if server.hub.rooms.get(room_id) is room:
            await server.wait_stats_change(room_id)

    while not server.web_shutdown.is_set():
        if server.hub.rooms.get(room_id) is not room:
            yield CLOSED
            return
        now = clock()
        if room.stats_version != sent_version:
            deadline = last_stats + MIN_INTERVAL
            if now >= deadline:
                sent_version = room.stats_version
                yield stats_event(room, server.hub.wall())
                last_stats = last_write = clock()
                continue
        else:
            deadline = last_write + KEEPALIVE_INTERVAL
            if now >= deadline:
                yield KEEPALIVE
                last_write = clock()
                continue
        await _first_of(deadline - now, change, server.web_shutdown.wait)
