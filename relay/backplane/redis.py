"""Redis backplane: the infrastructure layer that lets several relay nodes share rooms.

Bytes in, bytes out, no room logic. What it provides and why:

* **Node liveness** — ``or:node:{id}`` with a short PX lease, renewed periodically, so
  other nodes can tell a crashed node (``kill -9``) from a live one within a few seconds.
* **Room ownership leases** — ``or:lease:{room}`` (``SET NX PX`` semantics, Lua CAS for
  release/steal) so exactly one node runs a room at a time. All our leases are renewed in
  one pipeline; a lease we can no longer prove we hold (another owner, key gone, or Redis
  unreachable past the lease's local deadline) is reported through ``on_lease_lost``.
* **Unique ids** — ``or:id:{namespace}:{id}`` (``SET NX``), cluster-wide uniqueness.
* **Messaging** — one pub/sub connection carrying our inbox ``or:inbox:{node}`` and the
  room channels ``or:room:{room}`` we subscribed to, delivered into bounded Trio memory
  channels. Pub/sub is at-most-once: ``on_gap`` says when something may have been lost.
* **Durable room log** — a stream ``or:log:{room}`` plus a snapshot hash ``or:snap:{room}``.
* **Health** — ``available`` turns False as soon as a command times out or the connection
  drops and True again when Redis answers; every call fails within ``op_timeout`` with
  :class:`BackplaneUnavailable` instead of hanging (a paused/partitioned Redis keeps TCP
  sockets open, so without deadlines calls would hang forever).

The coredis client is opened with ``async with`` inside :meth:`RedisBackplane.run` for the
process lifetime: its pool owns an anyio task group, which must live in the caller's
Trio nursery. Keys and channels are bytes-safe and all share a prefix (default ``or:``).
Lua scripts touch keys derived from values (the steal script reads the owner's liveness
key), so this targets a single Redis (or a primary with replicas), not Redis Cluster.
"""

from __future__ import annotations

import hashlib
import logging
import math
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any, TypeVar

import anyio
import coredis
import trio
from coredis.exceptions import ConnectionError as RedisConnectionError
from coredis.exceptions import ReadOnlyError, RedisError
from coredis.retry import NoRetryPolicy
from coredis.tokens import PureToken

from .resp import Arg, ReplyError, RespPipe, RespSubscriber

log = logging.getLogger("relay.backplane")

T = TypeVar("T")
Client = coredis.Redis[bytes]

# Errors that mean "Redis cannot serve us right now" (as opposed to a bug in a command):
# unreachable, still loading (BusyLoadingError is a ConnectionError in coredis), a replica
# after a failover (READONLY), or a coredis connection closed under our feet (anyio).
_UNREACHABLE = (
    RedisConnectionError, TimeoutError, OSError, ReadOnlyError,
    anyio.ClosedResourceError, anyio.BrokenResourceError,
)

# A lease's value is its *fence*, ``<node id>/<epoch>``: the epoch (``or:epoch:{room}``)
# grows with every claim, steal and refence, so an append carrying an older fence can be
# refused by Redis itself, whenever it arrives (see _APPEND_MANY).
# KEYS[1]=lease, KEYS[2]=epoch, ARGV[1]=node id, ARGV[2]=ttl ms. Idempotent for the same
# node, so a retry after a lost reply cannot turn our own successful claim into a "no".
_CLAIM = """
local cur = redis.call('GET', KEYS[1])
if cur then
  if string.match(cur, '^(.*)/%d+$') == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return cur
  end
  return false
end
local v = ARGV[1] .. '/' .. redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], v, 'PX', ARGV[2])
return v
"""
# Renew only if still ours (never resurrect a lease that expired or moved).
_RENEW = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('PEXPIRE', KEYS[1], ARGV[2])
end
return 0
"""
_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""
# KEYS[1]=lease, KEYS[2]=epoch; ARGV[3] = liveness key prefix (the owner's liveness key is
# ARGV[3] .. owner).
_STEAL = """
local cur = redis.call('GET', KEYS[1])
if cur then
  local owner = string.match(cur, '^(.*)/%d+$') or cur
  if owner == ARGV[1] then
    redis.call('PEXPIRE', KEYS[1], ARGV[2])
    return cur
  end
  if redis.call('EXISTS', ARGV[3] .. owner) == 1 then
    return false
  end
end
local v = ARGV[1] .. '/' .. redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], v, 'PX', ARGV[2])
return v
"""
# KEYS[1]=lease, KEYS[2]=epoch, ARGV[1]=our fence, ARGV[2]=ttl ms: a new epoch for a lease
# we hold, so that none of our appends still on the way (outcome unknown) can land later.
_REFENCE = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then
  return false
end
local v = string.match(ARGV[1], '^(.*)/%d+$') .. '/' .. redis.call('INCR', KEYS[2])
redis.call('SET', KEYS[1], v, 'PX', ARGV[2])
return v
"""
# KEYS[1]=id key, ARGV[1]=token, ARGV[2]=ttl ms or '' (persistent). Idempotent per token.
_RESERVE = """
local cur = redis.call('GET', KEYS[1])
if cur == false then
  if ARGV[2] == '' then
    redis.call('SET', KEYS[1], ARGV[1])
  else
    redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  end
  return 1
end
if cur == ARGV[1] then return 1 end
return 0
"""
# Group commit, fenced: KEYS come in pairs (room log, its lease) and ARGV in pairs (the
# fence the entry was made under, the entry). An entry is appended only while its lease
# still holds that fence; otherwise its id is 0 (refused: it never happened).
_APPEND_MANY = """
local ids = {}
for i = 1, #KEYS, 2 do
  if redis.call('GET', KEYS[i + 1]) == ARGV[i] then
    ids[(i + 1) / 2] = redis.call('XADD', KEYS[i], '*', 'd', ARGV[i + 1])
  else
    ids[(i + 1) / 2] = 0
  end
end
return ids
"""
_APPEND_MANY_SHA = hashlib.sha1(_APPEND_MANY.encode()).hexdigest()  # the script's id in Redis
# KEYS[1]=snapshot hash, ARGV[1]=blob, ARGV[2]=last id. Refuses to go backwards, so a
# deposed owner that has not noticed yet cannot overwrite a newer snapshot.
_SAVE_SNAPSHOT = """
local function parse(id)
  local ms, seq = string.match(id, '^(%d+)%-?(%d*)$')
  if ms == nil then return nil end
  if seq == '' then seq = '0' end
  return tonumber(ms), tonumber(seq)
end
local old = redis.call('HGET', KEYS[1], 'last')
if old then
  local oms, oseq = parse(old)
  local nms, nseq = parse(ARGV[2])
  if oms and nms and (oms > nms or (oms == nms and oseq > nseq)) then return 0 end
end
redis.call('HSET', KEYS[1], 'blob', ARGV[1], 'last', ARGV[2])
return 1
"""


class BackplaneUnavailable(Exception):
    """Redis could not be reached (timeout, refused, dropped) within the deadline."""


class OutcomeUnknown(BackplaneUnavailable):
    """Commands were sent but no answer came: Redis may still carry them out."""


class Fenced(Exception):
    """An append was refused: the lease no longer holds the fence it was made under."""


@dataclass
class _Lease:
    ttl_ms: int
    valid_until: float  # trio clock; we may act as owner only before this
    fence: str = ""  # the lease's value in Redis: "<node>/<epoch>"


def _leaf(exc: BaseException) -> BaseException:
    """The first real error inside (nested) exception groups, for readable messages."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def _str(value: str | bytes) -> str:
    return value.decode() if isinstance(value, bytes) else value


def _bytes(value: str | bytes) -> bytes:
    return value.encode() if isinstance(value, str) else value


def _owner(fence: str) -> str:
    """The node part of a lease's value ``<node>/<epoch>``."""
    node, slash, epoch = fence.rpartition("/")
    return node if slash and epoch.isdigit() else fence


def _next_stream_id(stream_id: str) -> str:
    """The smallest stream id strictly greater than ``stream_id`` (``ms-seq``)."""
    ms, _, seq = stream_id.partition("-")
    return f"{int(ms)}-{int(seq or 0) + 1}"


class RedisBackplane:
    """A node's connection to the Redis backplane; run it with ``nursery.start(bp.run)``.

    Received messages arrive on :attr:`inbox` (``bytes``) and :attr:`room_messages`
    (``(room, bytes)``). Both are bounded; when one is full the message is **dropped**
    (counted in :attr:`dropped_inbox` / :attr:`dropped_room`) and ``on_gap`` is called —
    blocking instead would stall the single subscriber connection for every channel and
    eventually make Redis disconnect us (client-output-buffer-limit), losing more.

    ``on_gap(room)`` is called with the room name when a room message was dropped, and
    with ``None`` when an inbox message was dropped or the subscriber connection was
    re-established (anything published meanwhile may be missing: resync from the log).
    ``on_lease_lost(room)`` is called once per lease we stop holding without releasing
    it. Both callbacks run synchronously inside the backplane's tasks and must not block.
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
        self._leases: dict[str, _Lease] = {}
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

    # ------------------------------------------------------------- lifecycle

    async def run(self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED) -> None:
        """Own the Redis client until cancelled.

        Reports started after the first heartbeat and subscription attempt, so in the
        normal case the inbox is live when ``nursery.start`` returns. If Redis is down at
        startup it still starts, with ``available`` False, and keeps retrying: an
        operator's process should come up and report 503, not crash-loop.

        Cancellation is turned into an orderly stop (see :meth:`_serve`): coredis' pool
        tasks live inside this task, and cancelling them together with the subscriber
        makes its cleanup write to an already closed connection.
        """
        stop = trio.Event()
        async with trio.open_nursery() as nursery:
            try:
                await nursery.start(self._serve, stop)
                task_status.started()
                await trio.sleep_forever()
            finally:
                stop.set()

    async def _serve(
        self, stop: trio.Event, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        # Shielded so the pool outlives our workers; bounded once ``stop`` is set.
        with trio.CancelScope(shield=True) as guard:
            client: Client = coredis.Redis.from_url(
                self.url,
                stream_timeout=self.op_timeout,
                connect_timeout=self.op_timeout,
                # Retries are done here, only for idempotent operations (see _call).
                retry_policy=NoRetryPolicy(),
                client_name=f"observer-relay:{self.node_id}",
            )
            async with client:
                self._client = client
                self._scripts = {
                    name: client.register_script(src)
                    for name, src in (
                        ("claim", _CLAIM), ("release", _RELEASE), ("steal", _STEAL),
                        ("refence", _REFENCE), ("reserve", _RESERVE),
                        ("snapshot", _SAVE_SNAPSHOT),
                    )
                }
                try:
                    async with trio.open_nursery() as workers:
                        await workers.start(self._pipe.run)
                        await self._maintain_once()
                        await workers.start(self._pubsub_loop)
                        workers.start_soon(self._maintenance_loop)
                        workers.start_soon(self._lease_watchdog)
                        task_status.started()
                        await stop.wait()
                        guard.deadline = trio.current_time() + 2 * self.op_timeout
                        workers.cancel_scope.cancel()
                    # Graceful stop: drop our liveness key so peers may take over our
                    # rooms right away instead of waiting for the TTL.
                    with trio.move_on_after(min(0.5, self.op_timeout)):
                        try:
                            await client.delete([self.node_key(self.node_id)])
                        except (RedisError, *_UNREACHABLE):
                            pass
                finally:
                    self._client = None
                    self._pubsub = None
                    self._set_state(commands_ok=False, pubsub_ok=False)

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
            f"{op}: {_leaf(exc)!r}" if exc else f"{op}: timed out after {self.op_timeout}s"
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
                except _UNREACHABLE as exc:
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

    # ------------------------------------------------- liveness and leases

    async def is_alive(self, node_id: str) -> bool:
        """Whether ``node_id``'s liveness key exists (it renews it every renew_interval)."""
        key = self.node_key(node_id)
        return bool(await self._call("is_alive", lambda c: c.exists([key])))

    async def claim_room(self, room_key: str, ttl_ms: int) -> bool:
        """Take the lease if nobody holds it (or refresh it if we do); True if we hold it.

        Held leases are renewed every ``renew_interval`` while Redis is reachable.
        """
        self._check_ttl(ttl_ms)
        started = trio.current_time()
        fence = await self._script_value(
            "claim", [self.lease_key(room_key), self.epoch_key(room_key)],
            [self.node_id, ttl_ms])
        if fence is not None:
            self._leases[room_key] = _Lease(ttl_ms, started + ttl_ms / 1000, fence)
        return fence is not None

    async def owner_of(self, room_key: str) -> str | None:
        key = self.lease_key(room_key)
        value = await self._call("owner_of", lambda c: c.get(key))
        return _owner(value.decode()) if value is not None else None

    async def release_room(self, room_key: str) -> bool:
        """Delete the lease only if we still own it (CAS); True if it was ours."""
        lease = self._leases.pop(room_key, None)
        if lease is None:
            return False
        return bool(await self._script("release", self.lease_key(room_key), [lease.fence]))

    async def steal_if_dead(self, room_key: str, ttl_ms: int) -> bool:
        """Atomically take the lease if its owner's liveness key is gone (or it is free).

        True if we hold the lease afterwards (also when we already held it).
        """
        self._check_ttl(ttl_ms)
        started = trio.current_time()
        fence = await self._script_value(
            "steal", [self.lease_key(room_key), self.epoch_key(room_key)],
            [self.node_id, ttl_ms, self.node_key("")])
        if fence is not None:
            self._leases[room_key] = _Lease(ttl_ms, started + ttl_ms / 1000, fence)
        return fence is not None

    async def refence(self, room_key: str) -> bool:
        """Move a lease we hold to a new epoch: from then on Redis refuses every append we
        made under the old one, including any still on the way. False if the lease is not
        ours any more (then it is forgotten here, without ``on_lease_lost``)."""
        lease = self._leases.get(room_key)
        if lease is None:
            return False
        started = trio.current_time()
        fence = await self._script_value(
            "refence", [self.lease_key(room_key), self.epoch_key(room_key)],
            [lease.fence, lease.ttl_ms])
        if self._leases.get(room_key) is not lease:
            return False
        if fence is None:
            del self._leases[room_key]
            return False
        lease.fence = fence
        lease.valid_until = started + lease.ttl_ms / 1000
        return True

    def fence(self, room_key: str) -> str | None:
        """The fence our appends for ``room_key`` carry (None: we do not hold it)."""
        lease = self._leases.get(room_key)
        return lease.fence if lease is not None else None

    def owned_rooms(self) -> frozenset[str]:
        """The leases we currently believe we hold (locally; renewed in the background)."""
        return frozenset(self._leases)

    def holds(self, room_key: str) -> bool:
        """Whether we may still act as the owner (no I/O: check it before committing).

        True until the lease's local deadline: the start of the last successful
        claim/renewal + TTL, which is never later than the key's expiry in Redis.
        """
        lease = self._leases.get(room_key)
        return lease is not None and trio.current_time() < lease.valid_until

    def _check_ttl(self, ttl_ms: int) -> None:
        if ttl_ms <= self.renew_interval * 1000:
            raise ValueError(f"lease TTL {ttl_ms} ms must exceed renew_interval")

    async def _script(self, name: str, key: str, args: list[str | int | bytes]) -> int:
        script = self._scripts.get(name)
        if script is None:
            raise BackplaneUnavailable(f"{name}: backplane is not running")
        result = await self._call(name, lambda c: script(keys=[key], args=args))
        return int(result)

    async def _script_value(self, name: str, keys: list[str], args: list[str | int | bytes]
                            ) -> str | None:
        """A script that answers a string or nothing (a Lua ``false``)."""
        script = self._scripts.get(name)
        if script is None:
            raise BackplaneUnavailable(f"{name}: backplane is not running")
        result = await self._call(name, lambda c: script(keys=keys, args=args))
        return None if result is None else _str(result)

    async def _maintain_once(self) -> None:
        """Heartbeat + renew every lease in one pipeline round-trip."""
        rooms = list(self._leases.items())
        started = trio.current_time()

        async def pipeline(client: Client) -> tuple[Any, ...]:
            # Plain EVAL (not EVALSHA): one round-trip, and no NOSCRIPT after a restart.
            async with client.pipeline(transaction=False) as pipe:
                pipe.set(self.node_key(self.node_id), self.node_id, px=self.node_ttl_ms)
                for room, lease in rooms:
                    pipe.eval(_RENEW, [self.lease_key(room)], [lease.fence, lease.ttl_ms])
            return pipe.results or ()

        results: tuple[Any, ...] | None
        try:
            results = await self._call("heartbeat", pipeline)
        except BackplaneUnavailable:
            results = None
        except RedisError as exc:  # e.g. OOM: keep the loop alive, treat as a failed renewal
            log.error("heartbeat failed: %r", exc)
            results = None
        now = trio.current_time()
        for index, (room, lease) in enumerate(rooms):
            if self._leases.get(room) is not lease:
                continue  # released or re-claimed meanwhile
            if results is not None and results[index + 1] == 1:
                lease.valid_until = started + lease.ttl_ms / 1000
            elif results is not None or now >= lease.valid_until:
                self._lose(room)

    def _lose(self, room: str) -> None:
        del self._leases[room]
        log.warning("node %s lost the lease of %r", self.node_id, room)
        if self.on_lease_lost is not None:
            self.on_lease_lost(room)

    async def _maintenance_loop(self) -> None:
        while True:
            await trio.sleep(self.renew_interval)
            await self._maintain_once()

    async def _lease_watchdog(self) -> None:
        """Report a lease lost exactly at its local deadline when renewals keep failing.

        A failing renewal only returns after ``op_timeout``; without this, we could go on
        acting as owner after Redis expired the key and another node took the room.
        """
        while True:
            now = trio.current_time()
            for room, lease in list(self._leases.items()):
                if now >= lease.valid_until:
                    self._lose(room)
            deadlines = [lease.valid_until for lease in self._leases.values()]
            await trio.sleep_until(min([now + self.renew_interval, *deadlines]))

    # ------------------------------------------------------------ unique ids

    async def reserve_id(self, namespace: str, id_: str, ttl_ms: int | None = None) -> bool:
        """Reserve ``id_`` cluster-wide (persistent unless ``ttl_ms``); False if taken."""
        token = f"{self.node_id}:{secrets.token_hex(6)}"
        args: list[str | int | bytes] = [token, "" if ttl_ms is None else ttl_ms]
        return bool(await self._script("reserve", self._k("id", namespace, id_), args))

    async def release_id(self, namespace: str, id_: str) -> None:
        key = self._k("id", namespace, id_)
        await self._call("release_id", lambda c: c.delete([key]))

    # -------------------------------------------------------------- messaging

    async def publish(self, node_id: str, payload: bytes) -> int:
        """Send to a node's inbox; returns the number of subscribers (0: node is gone)."""
        channel = self.inbox_channel(node_id)
        return int((await self._hot("publish", [["PUBLISH", channel, payload]]))[0])

    def publish_nowait(self, node_id: str, payload: bytes,
                       on_reply: Callable[[Any], None] | None = None) -> bool:
        """``publish`` without waiting for Redis' reply; False when the connection is down
        or backed up: then ``await publish``. ``on_reply`` gets the reply when it comes
        (the receiver count: 0 means nobody got the message) or a ``ConnectionError``."""
        return self._pipe.send_nowait([["PUBLISH", self.inbox_channel(node_id), payload]],
                                      on_reply)

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

    async def publish_room(self, room: str, payload: bytes) -> int:
        """Publish once to every node subscribed to ``room``; returns the subscriber count."""
        channel = self.room_channel(room)
        return int((await self._hot("publish_room", [["PUBLISH", channel, payload]]))[0])

    async def subscribe_room(self, room: str) -> None:
        """Receive ``room``'s messages on :attr:`room_messages` (idempotent, no refcount).

        The room stays subscribed until :meth:`unsubscribe_room`, across reconnects. Raises
        :class:`BackplaneUnavailable` if the subscription could not be confirmed now; it is
        then made on the next reconnect (followed by ``on_gap(None)``).
        """
        self._rooms.add(room)
        await self._change_subscription("subscribe", room)

    async def unsubscribe_room(self, room: str) -> None:
        self._rooms.discard(room)
        try:
            await self._change_subscription("unsubscribe", room)
        except BackplaneUnavailable:
            pass  # the next connection subscribes from self._rooms only

    async def _change_subscription(self, action: str, room: str) -> None:
        channel = self.room_channel(room)
        with trio.move_on_after(self.op_timeout):
            async with self._sub_lock:
                pubsub = self._pubsub
                if pubsub is None:
                    raise BackplaneUnavailable(f"{action} {room}: subscriber not connected")
                try:
                    await pubsub.change(action, [channel])
                    return
                except Exception as exc:  # TimeoutError (no ack), ConnectionError, closed...
                    self._bounce_subscriber()
                    raise BackplaneUnavailable(f"{action} {room}: {_leaf(exc)!r}") from exc
        self._bounce_subscriber()
        raise BackplaneUnavailable(f"{action} {room}: timed out after {self.op_timeout}s")

    def _bounce_subscriber(self) -> None:
        """Reconnect the subscriber: its subscriptions are now unknown, so start over
        from ``self._rooms`` (and report the gap) rather than stay silently unsubscribed."""
        if self._session is not None:
            self._session.cancel()

    async def _pubsub_loop(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Keep one subscriber connection (inbox + rooms), resubscribing after failures.

        It is the receiving hot path (every forwarded command and every frame for our
        clients arrives here), so it runs on a lean RESP connection (see ``resp.py``);
        after a reconnect it reports the gap and the health state.
        """
        started = connected_before = False
        delay = 0.05
        inbox = self.inbox_channel(self.node_id).encode()
        room_prefix = self.room_channel("").encode()
        address = self._pipe.address
        while True:
            locked = False
            try:
                await self._sub_lock.acquire()
                locked = True
                channels = [inbox.decode(), *(self.room_channel(r) for r in self._rooms)]
                # Deadline for connecting/subscribing; also cancelled by _bounce_subscriber.
                with trio.CancelScope(deadline=trio.current_time() + self.op_timeout) as entry:
                    self._session = entry
                    stream = await address.connect(self.op_timeout, select=False)
                    async with stream:
                        sub = RespSubscriber(stream)
                        confirmed = sub.expect("subscribe", channels)
                        await sub.send("subscribe", channels)
                        while not all(event.is_set() for event in confirmed):
                            for channel, data in await sub.read():
                                self._deliver(channel, data, inbox, room_prefix)
                        entry.deadline = math.inf
                        self._pubsub = sub
                        self._sub_lock.release()
                        locked = False
                        delay = 0.05
                        if connected_before:
                            self.resubscribes += 1
                            self._notify_gap(None)
                        connected_before = True
                        self._set_state(pubsub_ok=True)
                        if not started:
                            started = True
                            task_status.started()
                        while True:
                            with trio.move_on_after(self.renew_interval):
                                for channel, data in await sub.read():
                                    self._deliver(channel, data, inbox, room_prefix)
                                continue
                            # Quiet for a while: a paused or cut-off Redis keeps the
                            # socket open, so ask, and reconnect if nothing answers.
                            with trio.fail_after(self.op_timeout):
                                await sub.send("ping")
                                for channel, data in await sub.read():
                                    self._deliver(channel, data, inbox, room_prefix)
                if entry.cancelled_caught:
                    self.last_error = "subscriber: timed out or restarted"
            except* (OSError, trio.TooSlowError, trio.BrokenResourceError,
                     trio.ClosedResourceError, ReplyError) as group:
                self.last_error = f"subscriber: {_leaf(group)!r}"
            finally:
                self._pubsub = self._session = None
                if locked:
                    self._sub_lock.release()
            self._set_state(pubsub_ok=False)
            if not started:
                started = True
                task_status.started()
            await trio.sleep(delay)
            delay = min(delay * 2, 1.0)

    def _deliver(self, channel: bytes, data: bytes, inbox: bytes, room_prefix: bytes) -> None:
        if channel == inbox:
            try:
                self._inbox_send.send_nowait(data)
            except trio.WouldBlock:
                self.dropped_inbox += 1
                self._notify_gap(None)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass
        elif channel.startswith(room_prefix):
            room = channel[len(room_prefix):].decode()
            if room not in self._rooms:
                return  # in flight when we unsubscribed
            try:
                self._room_send.send_nowait((room, data))
            except trio.WouldBlock:
                self.dropped_room += 1
                self._notify_gap(room)
            except (trio.BrokenResourceError, trio.ClosedResourceError):
                pass

    def _notify_gap(self, room: str | None) -> None:
        if self.on_gap is not None:
            self.on_gap(room)

    # ------------------------------------------------------- durable room log

    async def append(self, room: str, entry: bytes, *, maxlen: int | None = None) -> str:
        """XADD ``entry`` to the room's log; returns its stream id (``ms-seq``).

        ``maxlen`` caps the log approximately (``MAXLEN ~``): cheap, but Redis trims only
        whole stream nodes, so up to ~100 extra entries (stream-node-max-entries) remain.
        """
        key = self.log_key(room)

        def xadd(c: Client) -> Awaitable[bytes | None]:
            if maxlen is None:
                return c.xadd(key, {"d": entry})
            return c.xadd(
                key, {"d": entry}, trim_strategy=PureToken.MAXLEN, threshold=maxlen,
                trim_operator=PureToken.APPROXIMATELY,
            )

        stream_id = await self._call("append", xadd, idempotent=False)
        assert stream_id is not None
        return stream_id.decode()

    async def append_many(self, entries: Sequence[tuple[str, str, bytes]]) -> list[str | None]:
        """XADD each ``(room, fence, entry)`` to its room's log, in order, in one round trip.

        The group commit of the cluster: appends of every room that are ready at the same
        moment share one script call instead of paying a round trip each. An entry whose
        room's lease no longer holds ``fence`` is refused by Redis (None: it never
        happened). ``OutcomeUnknown`` when the call was sent and no answer came in time:
        then some or all of the entries may still land (until their rooms are refenced).
        """
        keys: list[Arg] = []
        args: list[Arg] = []
        for room, fence, entry in entries:
            keys += (self.log_key(room), self.lease_key(room))
            args += (fence, entry)
        try:
            (ids,) = await self._hot("append", [["EVALSHA", _APPEND_MANY_SHA, len(keys), *keys,
                                                 *args]], unknown=True)
        except ReplyError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
            # Not cached (first use, or Redis restarted): EVAL loads it too. NOSCRIPT
            # means nothing ran, so sending again is safe.
            (ids,) = await self._hot("append", [["EVAL", _APPEND_MANY, len(keys), *keys,
                                                 *args]], unknown=True)
        return [None if i == 0 else _str(i) for i in ids]

    async def write_stats(self, docs: Sequence[tuple[str, bytes, str, bytes]]) -> None:
        """``SET`` each ``(kv key, value)`` and publish its notice, in one round trip."""

        commands: list[list[Any]] = []
        for key, value, room, notice in docs:
            commands.append(["SET", self._k("kv", key), value])
            commands.append(["PUBLISH", self.room_channel(room), notice])
        await self._hot("write_stats", commands)

    async def kv_exist(self, keys: Sequence[str]) -> list[bool]:
        """Which of the kv ``keys`` exist, in one pipelined round trip."""
        if not keys:
            return []
        replies = await self._hot("kv_exist", [["EXISTS", self._k("kv", key)] for key in keys])
        return [bool(r) for r in replies]

    async def read_log(
        self, room: str, after_id: str | None = None, *, limit: int | None = None
    ) -> list[tuple[str, bytes]]:
        """Entries with id > ``after_id`` (all if None), oldest first, read in pages.

        Each page has its own deadline, so a long log does not trip ``op_timeout``.
        """
        key = self.log_key(room)
        out: list[tuple[str, bytes]] = []
        cursor = after_id
        while limit is None or len(out) < limit:
            count = self.log_page_size if limit is None else min(
                self.log_page_size, limit - len(out)
            )
            start = f"({cursor}" if cursor else "-"  # "(" = exclusive (Redis >= 6.2)

            def xrange(c: Client, start: str = start, count: int = count) -> Awaitable[Any]:
                return c.xrange(key, start, "+", count)

            page = await self._call("read_log", xrange)
            for item in page:
                out.append((_str(item.identifier), _bytes(item.field_values[b"d"])))
            if len(page) < count:
                break
            cursor = out[-1][0]
        return out

    async def trim_log(self, room: str, up_to_id: str) -> int:
        """Delete entries with id <= ``up_to_id`` (exact XTRIM MINID); returns how many."""
        key = self.log_key(room)
        minid = _next_stream_id(up_to_id)
        # coredis types the threshold as int, but MINID takes a stream id.
        threshold: Any = minid
        return await self._call(
            "trim_log", lambda c: c.xtrim(key, PureToken.MINID, threshold)
        )

    async def save_snapshot(self, room: str, blob: bytes, last_id: str) -> bool:
        """Store ``blob`` covering the log up to ``last_id``; False if a newer one exists."""
        return bool(await self._script("snapshot", self.snapshot_key(room), [blob, last_id]))

    async def load_snapshot(self, room: str) -> tuple[bytes, str] | None:
        key = self.snapshot_key(room)
        blob, last = await self._call("load_snapshot", lambda c: c.hmget(key, ["blob", "last"]))
        if blob is None or last is None:
            return None
        return blob, last.decode()

    async def expire_room(self, room: str, ttl_ms: int, *, kv: Sequence[str] = (),
                          ids: Sequence[tuple[str, str]] = ()) -> None:
        """Let a room's keys (log, snapshot, given kv keys and ids) expire after ``ttl_ms``
        unless touched again: a room nobody comes back to disappears by itself."""
        keys = [self.log_key(room), self.snapshot_key(room), self.epoch_key(room)]
        keys += [self._k("kv", key) for key in kv]
        keys += [self._k("id", namespace, id_) for namespace, id_ in ids]

        async def touch(c: Client) -> None:
            for key in keys:
                await c.pexpire(key, ttl_ms)

        await self._call("expire_room", touch)

    async def delete_room(self, room: str) -> None:
        """Delete the room's log, snapshot and epoch (leases and ids go separately)."""
        keys = [self.log_key(room), self.snapshot_key(room), self.epoch_key(room)]
        await self._call("delete_room", lambda c: c.delete(keys))

    # ---------------------------------------------------------------- small kv

    async def kv_set(self, key: str, value: bytes, ttl_ms: int | None = None) -> None:
        full = self._k("kv", key)
        await self._call("kv_set", lambda c: c.set(full, value, px=ttl_ms))

    async def kv_get(self, key: str) -> bytes | None:
        full = self._k("kv", key)
        return await self._call("kv_get", lambda c: c.get(full))

    async def kv_delete(self, key: str) -> None:
        full = self._k("kv", key)
        await self._call("kv_delete", lambda c: c.delete([full]))


@asynccontextmanager
async def open_redis_backplane(url: str, **kwargs: Any) -> AsyncIterator[RedisBackplane]:
    """Run a :class:`RedisBackplane` in a private nursery for the duration of the block."""
    backplane = RedisBackplane(url, **kwargs)
    async with trio.open_nursery() as nursery:
        await nursery.start(backplane.run)
        yield backplane
        nursery.cancel_scope.cancel()
