"""A lean, pipelined RESP2 connection for the backplane's hot path.

Why not coredis here: measured on this machine (bench notes in docs/scale-out.md), a
coredis command on Trio costs 0.4–0.6 ms of CPU — its anyio task groups, cancel scopes
and typed response callbacks are built per call — while a clustered room event needs a
log append and a publish. Relaying at the rate of one node needs those at a few
microseconds each. This connection writes every command issued in the same moment in
one ``send_all`` and matches replies to callers in order; nothing else. coredis stays
for everything that is not per event (leases, scripts, snapshots, key-value reads,
subscriptions), where its checks are worth their cost.

The connection is owned by :meth:`RespPipe.run` (reconnecting with backoff); a call
made while it is down fails at once with ``ConnectionError``, like a refused socket.
"""

from __future__ import annotations

import os
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any
from urllib.parse import unquote, urlsplit

import trio

Arg = bytes | str | int


class ReplyError(Exception):
    """An error reply from Redis (``-ERR ...``, ``-NOSCRIPT ...``)."""


def encode_command(args: Sequence[Arg]) -> bytes:
    parts = [b"*%d\r\n" % len(args)]
    for arg in args:
        if isinstance(arg, str):
            arg = arg.encode()
        elif isinstance(arg, int):
            arg = b"%d" % arg
        parts.append(b"$%d\r\n" % len(arg))
        parts.append(arg)
        parts.append(b"\r\n")
    return b"".join(parts)


_INCOMPLETE = object()


class ReplyParser:
    """Incremental RESP2 reply parser: ``feed`` bytes, then take complete replies."""

    __slots__ = ("_buf", "_pos")

    def __init__(self) -> None:
        self._buf = bytearray()
        self._pos = 0

    def feed(self, data: bytes) -> None:
        if self._pos:
            del self._buf[: self._pos]
            self._pos = 0
        self._buf += data

    def replies(self) -> list[Any]:
        out: list[Any] = []
        while True:
            value, pos = self._parse(self._pos)
            if value is _INCOMPLETE:
                return out
            self._pos = pos
            out.append(value)

    def _parse(self, pos: int) -> tuple[Any, int]:
        buf = self._buf
        end = buf.find(b"\r\n", pos)
        if end < 0:
            return _INCOMPLETE, pos
        kind, line = buf[pos], bytes(buf[pos + 1:end])
        nxt = end + 2
        if kind == 43:  # +
            return line, nxt
        if kind == 45:  # -
            return ReplyError(line.decode(errors="replace")), nxt
        if kind == 58:  # :
            return int(line), nxt
        if kind == 36:  # $
            size = int(line)
            if size < 0:
                return None, nxt
            if len(buf) < nxt + size + 2:
                return _INCOMPLETE, pos
            return bytes(buf[nxt:nxt + size]), nxt + size + 2
        if kind == 42:  # *
            count = int(line)
            if count < 0:
                return None, nxt
            items = []
            for _ in range(count):
                item, nxt = self._parse(nxt)
                if item is _INCOMPLETE:
                    return _INCOMPLETE, pos
                items.append(item)
            return items, nxt
        raise ConnectionError(f"bad RESP reply type {chr(kind)!r}")


class Address:
    """Where and how to connect, from a ``redis://[user:password@]host:port/db`` URL."""

    def __init__(self, url: str) -> None:
        parts = urlsplit(url)
        self.host = parts.hostname or "127.0.0.1"
        self.port = parts.port or 6379
        self.db = int((parts.path or "/0").lstrip("/") or 0)
        self.username = unquote(parts.username) if parts.username else None
        self.password = unquote(parts.password) if parts.password else None

    async def connect(self, timeout: float, *, select: bool = True) -> trio.SocketStream:
        """A connected, authenticated stream (``SELECT``-ed unless ``select`` is False)."""
        with trio.fail_after(timeout):
            stream = await trio.open_tcp_stream(self.host, self.port)
            try:
                setup: list[list[Arg]] = []
                if self.password is not None:
                    setup.append(["AUTH", *([self.username] if self.username else []),
                                  self.password])
                if self.db and select:
                    setup.append(["SELECT", self.db])
                if setup:
                    await stream.send_all(b"".join(encode_command(c) for c in setup))
                    parser = ReplyParser()
                    replies: list[Any] = []
                    while len(replies) < len(setup):
                        data = await stream.receive_some(4096)
                        if not data:
                            raise ConnectionError("Redis closed the connection")
                        parser.feed(data)
                        replies += parser.replies()
                    for reply in replies:
                        if isinstance(reply, ReplyError):
                            raise reply
            except BaseException:
                stream.socket.close()
                raise
        return stream


class RespSubscriber:
    """A connection in subscriber mode: (un)subscribe, and the messages pushed to it.

    ``(un)subscribe`` and ``read`` may run in different tasks; writes are made by one
    caller at a time (the backplane holds its subscription lock).
    """

    def __init__(self, stream: trio.SocketStream) -> None:
        self.stream = stream
        self._parser = ReplyParser()
        self._confirm: dict[tuple[bytes, bytes], trio.Event] = {}
        self._sending = trio.Lock()

    def expect(self, action: str, channels: Sequence[str]) -> list[trio.Event]:
        """Events set when Redis confirms ``action`` for each channel (seen by ``read``)."""
        kind = action.lower().encode()
        events = []
        for channel in channels:
            event = self._confirm[(kind, channel.encode())] = trio.Event()
            events.append(event)
        return events

    async def send(self, action: str, channels: Sequence[str] = ()) -> None:
        async with self._sending:
            await self.stream.send_all(encode_command([action.upper(), *channels]))

    async def change(self, action: str, channels: Sequence[str]) -> None:
        """``SUBSCRIBE``/``UNSUBSCRIBE`` and wait until ``read`` (another task) saw it."""
        events = self.expect(action, channels)
        await self.send(action, channels)
        for event in events:
            await event.wait()

    async def read(self) -> list[tuple[bytes, bytes]]:
        """Read once; the ``(channel, data)`` messages that arrived (maybe none)."""
        data = await self.stream.receive_some(262144)
        if not data:
            raise ConnectionError("Redis closed the subscriber connection")
        self._parser.feed(data)
        messages = []
        for push in self._parser.replies():
            if isinstance(push, ReplyError):
                raise push
            if not isinstance(push, list) or len(push) < 3:
                continue
            kind = push[0]
            if kind == b"message":
                messages.append((push[1], push[2]))
            elif kind in (b"subscribe", b"unsubscribe"):
                event = self._confirm.pop((kind, push[1]), None)
                if event is not None:
                    event.set()
        return messages


class _Waiter:
    __slots__ = ("done", "value")

    def __init__(self) -> None:
        self.done = trio.Event()
        self.value: Any = None


#: Stands in the reply queue for a command sent with ``send_nowait``: its reply is dropped.
_DROP = object()
#: ``send_nowait`` refuses once this many replies are outstanding (Redis is not keeping up).
MAX_UNANSWERED = 10_000


class RespPipe:
    """One pipelined connection; ``await call(...)`` from any number of tasks.

    Like the client connections (``relay.transport.connection``), commands are written
    straight into the socket by the task that issues them while nothing is queued; the
    writer task only takes over when the kernel pushes back.
    """

    def __init__(self, url: str, connect_timeout: float = 2.0) -> None:
        self.address = Address(url)
        self.connect_timeout = connect_timeout
        self._out: list[bytes] = []
        self._pending: deque[_Waiter | object] = deque()
        self._wake = trio.Event()
        self._connection: trio.CancelScope | None = None
        self._up = trio.Event()  # set while connected
        self._fd = -1  # the connected socket's descriptor, for direct writes
        self._sending = False  # the writer task is in the middle of a send

    @property
    def connected(self) -> bool:
        return self._up.is_set()

    def reset(self) -> None:
        """Drop the connection (its pending calls fail); ``run`` opens a new one."""
        if self._connection is not None:
            self._connection.cancel()

    async def call(self, *args: Arg) -> Any:
        """Send one command; its reply (a :class:`ReplyError` reply is raised)."""
        (value,) = await self.call_many([args])
        if isinstance(value, ReplyError):
            raise value
        return value

    async def call_many(self, commands: Sequence[Sequence[Arg]]) -> list[Any]:
        """Send commands back to back; their replies in order (errors returned, not raised).

        While the connection is being re-established this waits for it: callers bound
        every call with their own deadline.
        """
        await self.wait_connected()
        return await self.replies(self.submit(commands))

    async def wait_connected(self) -> None:
        while not self.connected:
            await self._up.wait()

    def submit(self, commands: Sequence[Sequence[Arg]]) -> list[_Waiter]:
        """Hand commands to the connection (from here on they may reach Redis); their
        waiters, for ``replies``. The connection must be up (``wait_connected``)."""
        if not self.connected:
            raise ConnectionError("the connection to Redis is down")
        waiters = []
        for args in commands:
            self._out.append(encode_command(args))
            waiter = _Waiter()
            self._pending.append(waiter)
            waiters.append(waiter)
        self._write()
        return waiters

    async def replies(self, waiters: list[_Waiter]) -> list[Any]:
        for waiter in waiters:
            await waiter.done.wait()
        values = [w.value for w in waiters]
        for value in values:
            if isinstance(value, ConnectionError):
                raise value
        return values

    def send_nowait(self, commands: Sequence[Sequence[Arg]],
                    on_reply: Callable[[Any], None] | None = None) -> bool:
        """Send commands without waiting for their replies (``PUBLISH``); False when down
        or when Redis is not keeping up. ``on_reply`` is called with each reply (or a
        ``ConnectionError`` when the connection broke first: then the command may or may
        not have run), so a caller can notice a message nobody received."""
        if not self.connected or len(self._pending) >= MAX_UNANSWERED:
            return False
        for args in commands:
            self._out.append(encode_command(args))
            self._pending.append(_DROP if on_reply is None else on_reply)
        self._write()
        return True

    def _write(self) -> None:
        """Write what is queued now if the writer is idle; else leave it to the writer."""
        if self._sending or self._fd < 0:
            self._wake.set()
            return
        data = b"".join(self._out) if len(self._out) > 1 else self._out[0]
        try:
            sent = os.write(self._fd, data)
        except BlockingIOError:
            sent = 0
        except OSError:  # the writer's send fails the same way and reconnects
            self._wake.set()
            return
        self._out = [data[sent:]] if sent < len(data) else []
        if self._out:
            self._wake.set()

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
                  ) -> None:
        """Keep the connection up until cancelled; started after the first attempt."""
        delay = 0.05
        started = False
        while True:
            try:
                stream = await self.address.connect(self.connect_timeout)
                async with stream:
                    self._fd = stream.socket.fileno()
                    self._up.set()
                    delay = 0.05
                    if not started:
                        started = True
                        task_status.started()
                    try:
                        with trio.CancelScope() as self._connection:
                            async with trio.open_nursery() as nursery:
                                nursery.start_soon(self._writer, stream)
                                await self._reader(stream)
                                nursery.cancel_scope.cancel()
                    finally:
                        self._fd = -1  # before the close: the number may be reused at once
            except* (OSError, trio.TooSlowError, trio.BrokenResourceError,
                     trio.ClosedResourceError, ReplyError):
                pass  # lost, refused or refused our credentials: reconnect after a pause
            finally:
                self._connection = None
                self._sending = False
                self._fail_pending()
            if not started:
                started = True
                task_status.started()
            await trio.sleep(delay)
            delay = min(delay * 2, 1.0)

    async def _writer(self, stream: trio.SocketStream) -> None:
        while True:
            await self._wake.wait()
            self._wake = trio.Event()
            while self._out:
                data, self._out = b"".join(self._out), []
                self._sending = True
                await stream.send_all(data)
                self._sending = False

    async def _reader(self, stream: trio.SocketStream) -> None:
        parser = ReplyParser()
        while True:
            data = await stream.receive_some(262144)
            if not data:
                raise ConnectionError("Redis closed the connection")
            parser.feed(data)
            for reply in parser.replies():
                if not self._pending:
                    raise ConnectionError("a reply nobody asked for: out of step")
                waiter = self._pending.popleft()
                if waiter is _DROP:
                    continue
                if isinstance(waiter, _Waiter):
                    waiter.value = reply
                    waiter.done.set()
                else:
                    waiter(reply)  # type: ignore[operator]

    def _fail_pending(self) -> None:
        if self._up.is_set():
            self._up = trio.Event()
        self._out.clear()
        error = ConnectionError("the connection to Redis was lost")
        while self._pending:
            waiter = self._pending.popleft()
            if isinstance(waiter, _Waiter):
                waiter.value = error
                waiter.done.set()
            elif waiter is not _DROP:
                waiter(error)  # type: ignore[operator]

