"""The stats event stream (§8.2): snapshot now, coalesced updates, keep-alives, close."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import TYPE_CHECKING, Any

import trio

if TYPE_CHECKING:
    from relay.ports import StatsEntry, WebHost

#: Seconds between ``: keep-alive`` comments on an otherwise quiet stream.
KEEPALIVE_INTERVAL = 15.0
#: Least seconds between two ``stats`` events; changes in between are coalesced.
MIN_INTERVAL = 1.0

KEEPALIVE = b": keep-alive\n\n"
CLOSED = b"event: closed\ndata: {}\n\n"


def stats_event(document: dict[str, Any]) -> bytes:
    """The §8.3 document as a ``stats`` event on one line."""
    data = json.dumps(document, ensure_ascii=False, separators=(",", ":"))
    return f"event: stats\ndata: {data}\n\n".encode()


async def first_of(timeout: float, *waits: Callable[[], Awaitable[Any]]) -> None:
    """Return when any of ``waits`` completes or after ``timeout`` seconds."""
    with trio.move_on_after(max(timeout, 0.0)):
        async with trio.open_nursery() as nursery:

            async def run(wait: Callable[[], Awaitable[Any]]) -> None:
                await wait()
                nursery.cancel_scope.cancel()

            for wait in waits:
                nursery.start_soon(run, wait)


async def stats_stream(host: WebHost, first: StatsEntry) -> AsyncIterator[bytes]:
    """Yield SSE chunks for a room until it is removed or the web port shuts down.

    Nothing awaits inside a cancel scope across a ``yield``: every wait happens in
    :func:`_first_of`, which returns before the next chunk is produced. Changes are
    detected through the stats version, so one made while a chunk was being written is
    not missed.
    """
    source = host.stats
    room_id = first.room_id
    clock = trio.current_time
    sent_version = first.version
    yield stats_event(first.document)
    last_stats = last_write = clock()
    while not host.shutting_down:
        entry = await source.get(room_id)
        if entry is None:
            yield CLOSED
            return
        now = clock()
        if entry.version != sent_version:
            deadline = last_stats + MIN_INTERVAL
            if now >= deadline:
                sent_version = entry.version
                yield stats_event(entry.document)
                last_stats = last_write = clock()
                continue
        else:
            deadline = last_write + KEEPALIVE_INTERVAL
            if now >= deadline:
                yield KEEPALIVE
                last_write = clock()
                continue
        await first_of(deadline - now, lambda: source.wait_change(room_id),
                        host.wait_shutdown)
