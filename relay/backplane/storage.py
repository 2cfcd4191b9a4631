"""The durable side of the backplane: each room's log and snapshot, and a small kv.

A room's history is a stream ``or:log:{room}`` (appends fenced by the room's lease, many
rooms per round trip in :meth:`RoomStore.append_many` for the cluster's group commit) plus
a snapshot hash ``or:snap:{room}`` that never goes backwards, so that a new owner rebuilds
the room from the snapshot and the log entries after it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from typing import Any

from coredis.tokens import PureToken

from .base import Client, RedisBase, as_bytes, as_str
from .resp import Arg, ReplyError
from .scripts import APPEND_MANY, APPEND_MANY_SHA


def _next_stream_id(stream_id: str) -> str:
    """The smallest stream id strictly greater than ``stream_id`` (``ms-seq``)."""
    ms, _, seq = stream_id.partition("-")
    return f"{int(ms)}-{int(seq or 0) + 1}"


class RoomStore(RedisBase):
    """Room logs, snapshots and kv keys (whose room expiry and deletion go together)."""

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
            (ids,) = await self._hot("append", [["EVALSHA", APPEND_MANY_SHA, len(keys), *keys,
                                                 *args]], unknown=True)
        except ReplyError as exc:
            if not str(exc).startswith("NOSCRIPT"):
                raise
            # Not cached (first use, or Redis restarted): EVAL loads it too. NOSCRIPT
            # means nothing ran, so sending again is safe.
            (ids,) = await self._hot("append", [["EVAL", APPEND_MANY, len(keys), *keys,
                                                 *args]], unknown=True)
        return [None if i == 0 else as_str(i) for i in ids]

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
                out.append((as_str(item.identifier), as_bytes(item.field_values[b"d"])))
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

    async def kv_claim(self, key: str) -> bool:
        """Set ``key`` to our node id unless another live node holds it; True if ours."""
        return bool(await self._script("claim_kv", self._k("kv", key),
                                       [self.node_id, self.node_key("")]))

    async def kv_get(self, key: str) -> bytes | None:
        full = self._k("kv", key)
        return await self._call("kv_get", lambda c: c.get(full))

    async def kv_delete(self, key: str) -> None:
        full = self._k("kv", key)
        await self._call("kv_delete", lambda c: c.delete([full]))
