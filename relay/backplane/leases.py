"""Node liveness, fenced room leases and cluster-wide unique ids.

A node proves it is alive by renewing ``or:node:{id}`` (short PX) and holds a room by its
lease ``or:lease:{room}``, whose value is a *fence* ``<node>/<epoch>``: appends carry it,
so Redis itself refuses the appends of an owner that was deposed (see ``scripts.py``). The
heartbeat and every lease renewal share one pipeline round trip; a lease that can no longer
be proven ours is reported through ``on_lease_lost`` exactly at its local deadline.
"""

from __future__ import annotations

import secrets
from typing import Any

import trio
from coredis.exceptions import RedisError

from . import scripts
from .base import BackplaneUnavailable, Client, Lease, RedisBase, as_str, log


def _owner(fence: str) -> str:
    """The node part of a lease's value ``<node>/<epoch>``."""
    node, slash, epoch = fence.rpartition("/")
    return node if slash and epoch.isdigit() else fence


class LeaseOps(RedisBase):
    """Liveness, leases and unique ids: the part of the backplane that decides who runs what."""

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
            [self.node_id, ttl_ms, self.node_key(self.node_id), self.node_ttl_ms])
        if fence is not None:
            self._leases[room_key] = Lease(ttl_ms, started + ttl_ms / 1000, fence)
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
            [self.node_id, ttl_ms, self.node_key(""), self.node_ttl_ms])
        if fence is not None:
            self._leases[room_key] = Lease(ttl_ms, started + ttl_ms / 1000, fence)
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

    async def _script_value(self, name: str, keys: list[str], args: list[str | int | bytes]
                            ) -> str | None:
        """A script that answers a string or nothing (a Lua ``false``)."""
        script = self._scripts.get(name)
        if script is None:
            raise BackplaneUnavailable(f"{name}: backplane is not running")
        result = await self._call(name, lambda c: script(keys=keys, args=args))
        return None if result is None else as_str(result)

    async def _maintain_once(self) -> None:
        """Heartbeat + renew every lease in one pipeline round-trip."""
        rooms = list(self._leases.items())
        started = trio.current_time()

        async def pipeline(client: Client) -> tuple[Any, ...]:
            # Plain EVAL (not EVALSHA): one round-trip, and no NOSCRIPT after a restart.
            async with client.pipeline(transaction=False) as pipe:
                pipe.set(self.node_key(self.node_id), self.node_id, px=self.node_ttl_ms)
                for room, lease in rooms:
                    pipe.eval(scripts.RENEW, [self.lease_key(room)], [lease.fence, lease.ttl_ms])
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
