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

The parts, each a mixin over :class:`~relay.backplane.base.RedisBase` (shared state, key
names, health, the deadline rules of ``_call`` and ``_hot``): ``leases.py`` (liveness,
fenced leases, unique ids), ``subscriber.py`` (messaging), ``storage.py`` (room log,
snapshots, kv), with the Lua scripts in ``scripts.py``. :class:`RedisBackplane` composes
them and owns the client's lifetime; the rest of the relay imports from here.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import coredis
import trio
from coredis.exceptions import RedisError
from coredis.retry import NoRetryPolicy

from . import scripts
from .base import UNREACHABLE, BackplaneUnavailable, Client, Fenced, OutcomeUnknown
from .leases import LeaseOps
from .places import PlaceLog
from .storage import RoomStore
from .subscriber import PubSub

__all__ = [
    "BackplaneUnavailable",
    "Fenced",
    "OutcomeUnknown",
    "RedisBackplane",
    "open_redis_backplane",
]


class RedisBackplane(LeaseOps, PubSub, RoomStore, PlaceLog):
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
                    for name, src in scripts.REGISTERED
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
                        except (RedisError, *UNREACHABLE):
                            pass
                finally:
                    self._client = None
                    self._pubsub = None
                    self._set_state(commands_ok=False, pubsub_ok=False)


@asynccontextmanager
async def open_redis_backplane(url: str, **kwargs: Any) -> AsyncIterator[RedisBackplane]:
    """Run a :class:`RedisBackplane` in a private nursery for the duration of the block."""
    backplane = RedisBackplane(url, **kwargs)
    async with trio.open_nursery() as nursery:
        await nursery.start(backplane.run)
        yield backplane
        nursery.cancel_scope.cancel()
