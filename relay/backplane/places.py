"""The places' log: one stream ``or:places`` that every node appends to and reads in full.

Replicated places (ChatRoom spaces, the chat app's directory) have no owner: every node
keeps a replica of each and applies the same commands in the same order — the order of
this stream. Appends go on the pipelined hot-path connection (many per round trip); the
blocking ``XREAD`` has a connection of its own, since a blocked connection answers nothing
else until it returns.

Bytes in, bytes out: what a command means is the cluster's business
(``relay.cluster.places``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import trio

from .base import RedisBase, as_str
from .resp import ReplyError, RespPipe

#: How long one XREAD blocks in Redis (ms); a read returns at least this often.
READ_BLOCK_MS = 1000
#: Entries per XREAD.
READ_COUNT = 512


class PlaceLog(RedisBase):
    """Appending to, reading and trimming the places' stream."""

    _places_pipe: RespPipe

    def places_key(self) -> str:
        return self._k("places")

    def _places_reader(self) -> RespPipe:
        pipe = getattr(self, "_places_pipe", None)
        if pipe is None:
            pipe = self._places_pipe = RespPipe(self.url, connect_timeout=self.op_timeout)
        return pipe

    async def run_places_reader(
        self, *, task_status: trio.TaskStatus[None] = trio.TASK_STATUS_IGNORED
    ) -> None:
        """Own the reading connection (reconnecting with backoff) until cancelled."""
        await self._places_reader().run(task_status=task_status)

    async def places_append(self, entries: Sequence[bytes]) -> list[str]:
        """XADD each entry, in order, in one round trip; their stream ids.

        ``OutcomeUnknown`` when the commands were sent and no answer came in time (some
        may have landed: the reader's de-duplication makes a resend harmless).
        """
        key = self.places_key()
        replies = await self._hot("places_append",
                                  [["XADD", key, "*", "d", entry] for entry in entries],
                                  unknown=True)
        return [as_str(reply) for reply in replies]

    async def places_read(self, after: str) -> list[tuple[str, bytes]]:
        """The entries after stream id ``after`` (``"0"``: from the start), waiting up to
        ``READ_BLOCK_MS`` for one to arrive; ``[]`` when none did.

        Raises ``BackplaneUnavailable`` when Redis does not answer in time.
        """
        pipe = self._places_reader()
        key = self.places_key()
        with trio.move_on_after(self.op_timeout + READ_BLOCK_MS / 1000):
            try:
                await pipe.wait_connected()
                reply = await pipe.call("XREAD", "COUNT", READ_COUNT, "BLOCK", READ_BLOCK_MS,
                                        "STREAMS", key, after)
            except (OSError, ReplyError) as exc:
                raise self._unreachable("places_read", exc) from None
            return _entries(reply)
        pipe.reset()
        raise self._unreachable("places_read", None)

    async def places_first_id(self) -> str | None:
        """The id of the stream's first entry (None when it is empty or missing)."""
        reply = await self._hot("places_first", [["XRANGE", self.places_key(), "-", "+",
                                                  "COUNT", 1]])
        rows = reply[0] or []
        return as_str(rows[0][0]) if rows else None

    async def places_position(self, node_id: str, stream_id: str) -> None:
        """Record how far ``node_id``'s replicas have read (trimming never passes it)."""
        await self._hot("places_position", [["HSET", self._k("places", "pos"), node_id,
                                             stream_id]])

    async def places_positions(self) -> dict[str, str]:
        (reply,) = await self._hot("places_positions", [["HGETALL", self._k("places", "pos")]])
        pairs = reply or []
        return {as_str(k): as_str(v) for k, v in zip(pairs[::2], pairs[1::2], strict=True)}

    async def places_forget(self, node_ids: Sequence[str]) -> None:
        """Drop dead nodes' positions."""
        if node_ids:
            await self._hot("places_forget", [["HDEL", self._k("places", "pos"), *node_ids]])

    async def places_trim(self, min_id: str) -> int:
        """Drop entries older than ``min_id`` (exactly: a replica built from what stays
        must be complete for every place alive at ``min_id``)."""
        (removed,) = await self._hot("places_trim",
                                     [["XTRIM", self.places_key(), "MINID", min_id]])
        return int(removed)


def _entries(reply: Any) -> list[tuple[str, bytes]]:
    """``[[key, [[id, [field, value, ...]], ...]]]`` (or nil) → ``[(id, value), ...]``."""
    out: list[tuple[str, bytes]] = []
    for _key, rows in reply or []:
        for stream_id, fields in rows:
            values = dict(zip(fields[::2], fields[1::2], strict=True))
            data = values.get(b"d")
            if isinstance(data, bytes):
                out.append((as_str(stream_id), data))
    return out
