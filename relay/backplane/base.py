"""The Redis backplane's shared ground: its errors, its state, key names, health, and the
two ways a command reaches Redis.

Every part of the backplane (leases, messaging, the room log) goes through :meth:`_call`
(coredis, with a deadline and a retry only for idempotent commands) or :meth:`_hot` (the
lean pipelined connection of ``resp.py``, for the hot path), so that each fails the same
way — :class:`BackplaneUnavailable` within ``op_timeout`` — and moves the same health
state. :class:`RedisBackplane` (``redis.py``) is the class the rest of the relay uses.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio
import coredis
import trio
from coredis.exceptions import ConnectionError as RedisConnectionError
from coredis.exceptions import ReadOnlyError

from .resp import ReplyError, RespPipe, RespSubscriber

log = logging.getLogger("relay.backplane")

T = TypeVar("T")
Client = coredis.Redis[bytes]

# Errors that mean "Redis cannot serve us right now" (as opposed to a bug in a command):
# unreachable, still loading (BusyLoadingError is a ConnectionError in coredis), a replica
# after a failover (READONLY), or a coredis connection closed under our feet (anyio).
UNREACHABLE = (
    RedisConnectionError, TimeoutError, OSError, ReadOnlyError,
    anyio.ClosedResourceError, anyio.BrokenResourceError,
)


class BackplaneUnavailable(Exception):
    """Redis could not be reached (timeout, refused, dropped) within the deadline."""


class OutcomeUnknown(BackplaneUnavailable):
    """Commands were sent but no answer came: Redis may still carry them out."""


class Fenced(Exception):
    """An append was refused: the lease no longer holds the fence it was made under."""


@dataclass
class Lease:
    ttl_ms: int
    valid_until: float  # trio clock; we may act as owner only before this
    fence: str = ""  # the lease's value in Redis: "<node>/<epoch>"


def leaf(exc: BaseException) -> BaseException:
    """The first real error inside (nested) exception groups, for readable messages."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def as_str(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def as_bytes(value: str | bytes) -> bytes:
    return value.encode() if isinstance(value, str) else value



class RedisBase:
    """The state every part of the backplane shares, and the plumbing they all use.

    The constructor's arguments and callbacks are documented on :class:`RedisBackplane`.
    """

    def __init__(
        self,
        url: str,
        *,
        node_id: str | None = None,
        prefix: str = "or:",
        op_timeout: float = 2.0,
        node_ttl_ms: int = 3000,
        renew_interval: float = 1.0,
        inbox_size: int = 1024,
        room_buffer_size: int = 4096,
        log_page_size: int = 500,
        on_lease_lost: Callable[[str], None] | None = None,
        on_gap: Callable[[str | None], None] | None = None,
    ) -> None:
        if renew_interval * 1000 >= node_ttl_ms:
            raise ValueError("renew_interval must be shorter than node_ttl_ms")
        self.url = url
        self.node_id = node_id or secrets.token_hex(8)
        self.prefix = prefix
        self.op_timeout = op_timeout
        self.node_ttl_ms = node_ttl_ms
        self.renew_interval = renew_interval
        self.log_page_size = log_page_size
        self.on_lease_lost = on_lease_lost
        self.on_gap = on_gap

        self._inbox_send, self.inbox = trio.open_memory_channel[bytes](inbox_size)
        self._room_send, self.room_messages = trio.open_memory_channel[tuple[str, bytes]](
            room_buffer_size
        )
        self.dropped_inbox = 0
        self.dropped_room = 0
        self.resubscribes = 0

        self._client: Client | None = None
        # The hot path (log appends, inbox publishes, stats writes): see resp.py.
        self._pipe = RespPipe(url, connect_timeout=op_timeout)
        self._scripts: dict[str, Any] = {}
        self._leases: dict[str, Lease] = {}
        self._rooms: set[str] = set()
        self._pubsub: RespSubscriber | None = None  # while connected
        self._session: trio.CancelScope | None = None  # the subscriber connection's scope
        self._sub_lock = trio.Lock()
        self._commands_ok = False
        self._pubsub_ok = False
        self._state_changed = trio.Event()
        self.last_error: str | None = None

    # ------------------------------------------------------------------ keys

    def _k(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    def node_key(self, node_id: str) -> str:
        return self._k("node", node_id)

    def lease_key(self, room_key: str) -> str:
        return self._k("lease", room_key)

    def inbox_channel(self, node_id: str) -> str:
        return self._k("inbox", node_id)

    def room_channel(self, room: str) -> str:
        return self._k("room", room)

    def log_key(self, room: str) -> str:
        return self._k("log", room)

    def snapshot_key(self, room: str) -> str:
        return self._k("snap", room)

    def epoch_key(self, room: str) -> str:
        return self._k("epoch", room)

    # ---------------------------------------------------------------- health

    @property
    def available(self) -> bool:
        """True while commands succeed and our subscriber connection is up."""
        return self._commands_ok and self._pubsub_ok

    async def wait_available(self, value: bool = True) -> None:
        """Wait until ``available == value``."""
        while self.available != value:
            await self._state_changed.wait()

    def _set_state(self, *, commands_ok: bool | None = None, pubsub_ok: bool | None = None) -> None:
        before = self.available
        if commands_ok is not None:
            self._commands_ok = commands_ok
        if pubsub_ok is not None:
            self._pubsub_ok = pubsub_ok
        if self.available != before:
            if self.available or self._client is None:
                log.info("backplane %s (node %s)",
                         "available" if self.available else "stopped", self.node_id)
            else:
                log.warning("backplane UNAVAILABLE (node %s): %s", self.node_id, self.last_error)
        event, self._state_changed = self._state_changed, trio.Event()
        event.set()

    def _unreachable(self, op: str, exc: BaseException | None) -> BackplaneUnavailable:
        self.last_error = (
            f"{op}: {leaf(exc)!r}" if exc else f"{op}: timed out after {self.op_timeout}s"
        )
        self._set_state(commands_ok=False)
        client = self._client
        if client is not None:
            # Connections may be half-dead (partition): drop them all so the next attempt
            # starts fresh; this also bounces the subscriber, which resubscribes.
            client.connection_pool.disconnect()
        return BackplaneUnavailable(self.last_error)

    async def _call(
        self, op: str, fn: Callable[[Client], Awaitable[T]], *, idempotent: bool = True
    ) -> T:
        """Run ``fn`` with a deadline; map unreachability to :class:`BackplaneUnavailable`.

        A ``ConnectionError`` (e.g. a socket Redis closed on restart) is retried once on a
        fresh connection, but only for idempotent operations: for XADD/PUBLISH the first
        attempt may have been executed before the reply was lost.
        """
        client = self._client
        if client is None:
            raise BackplaneUnavailable(f"{op}: backplane is not running")
        error: BaseException | None = None
        with trio.move_on_after(self.op_timeout):
            for attempt in range(2 if idempotent else 1):
                try:
                    result = await fn(client)
                except UNREACHABLE as exc:
                    error = exc
                    if isinstance(exc, TimeoutError):
                        break
                    if attempt == 0 and idempotent:
                        await trio.sleep(0.01)
                else:
                    if not self._commands_ok:
                        self._set_state(commands_ok=True)
                    return result
        raise self._unreachable(op, error)

    async def _hot(self, op: str, commands: list[list[Any]], *, unknown: bool = False
                   ) -> list[Any]:
        """Hot-path commands on the pipelined connection, with ``_call``'s failure rules.

        With ``unknown``, a failure after the commands were handed to the connection
        raises ``OutcomeUnknown`` (they may run anyway); before, ``BackplaneUnavailable``.
        """
        sent = False
        with trio.move_on_after(self.op_timeout):
            try:
                await self._pipe.wait_connected()
                waiters = self._pipe.submit(commands)
                sent = True
                replies = await self._pipe.replies(waiters)
            except OSError as exc:
                error = self._unreachable(op, exc)
                if sent and unknown:
                    raise OutcomeUnknown(str(error)) from None
                raise error from None
            for reply in replies:
                if isinstance(reply, ReplyError):
                    raise reply
            return replies
        self._pipe.reset()  # an unanswered connection is not reused: start over
        error = self._unreachable(op, None)
        if sent and unknown:
            raise OutcomeUnknown(str(error))
        raise error

    # ---------------------------------------------------------------- scripts

    async def _script(self, name: str, key: str, args: list[str | int | bytes]) -> int:
        """A script of ``scripts.REGISTERED`` that answers an integer."""
        script = self._scripts.get(name)
        if script is None:
            raise BackplaneUnavailable(f"{name}: backplane is not running")
        result = await self._call(name, lambda c: script(keys=[key], args=args))
        return int(result)
