"""Reading a client socket, and what the connection's end is called in metrics."""

from __future__ import annotations

import os
from typing import cast

import trio

READ_SIZE = 65536

#: Close codes to the metric's disconnect reasons (§8.5).
CLOSE_REASONS = {
    1000: "normal", 1001: "shutdown", 1002: "protocol", 1007: "protocol", 1008: "protocol",
    1009: "too_large", 1011: "internal", 4000: "room_closed", 4001: "kicked",
    4002: "slow_consumer", 4003: "replaced", 4004: "heartbeat", 4008: "rate_limited",
}


async def receive(fd: int, stream: trio.SocketStream, drained: bool = False) -> bytes:
    """The next bytes from the peer (b"" once it is gone).

    Reads the non-blocking socket directly and waits with ``wait_readable`` only when it
    is empty, or first when the caller knows it is (``drained``: epoll reports data that is
    already there, so nothing is missed). Besides saving the stream layers' work per read,
    this matters for pauses: a waiting reader is a chain of fresh coroutine objects, and
    with thousands of connections those chains are most of the young GC generation (bench
    W4); this wait is about a third the size of ``receive_some``'s.
    """
    if fd < 0:
        try:
            return cast(bytes, await stream.receive_some(READ_SIZE))
        except (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            return b""
    while True:
        if not drained:
            try:
                return os.read(fd, READ_SIZE)
            except BlockingIOError:
                pass
            except OSError:
                return b""
        drained = False
        try:
            await trio.lowlevel.wait_readable(fd)
        except (trio.ClosedResourceError, trio.BusyResourceError, OSError):
            return b""


def size_of(text: str) -> int:
    """UTF-8 bytes of a received text message (cheap for ASCII)."""
    return len(text) if text.isascii() else len(text.encode("utf-8"))
