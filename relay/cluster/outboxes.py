"""One ordered outbox per destination node: messages merged into one ``PUBLISH``.

Everything a node sends another (forwarded commands, frames, closes, results, "gone"
notices) goes through the outbox of that node, so it arrives in the order it was sent; a
sender task per destination merges what is queued when it runs into one ``Batch``.

Pub/sub is at most once, and a loss must never go unnoticed: Redis answers every
``PUBLISH`` with the number of subscribers that got it, so a batch that reached nobody
(the receiving node's subscriber is reconnecting, or the node is gone) or whose answer
was lost with the connection is reported to ``on_lost`` with the messages it carried,
and the cluster closes the connections those messages were for (their clients resume).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import trio

from relay.backplane.redis import BackplaneUnavailable, RedisBackplane

from .wire import Message, encode_batch

log = logging.getLogger("relay.cluster")

OUTBOX_MESSAGES = 10_000
MAX_MERGED = 256  # messages merged into one PUBLISH

Lost = Callable[[str, list[Message]], None]


class Outboxes:
    def __init__(self, bp: RedisBackplane, on_lost: Lost) -> None:
        self.bp = bp
        self.on_lost = on_lost
        self._queues: dict[str, trio.MemorySendChannel[Message]] = {}
        self._nursery: trio.Nursery | None = None

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    def send(self, node: str, message: Message) -> bool:
        """Queue ``message`` for ``node``'s inbox; False (and reported lost) if its outbox
        is full: a node that far behind is treated like one that lost messages."""
        queue = self._queues.get(node)
        if queue is None:
            if self._nursery is None:
                self.on_lost(node, [message])
                return False
            send, recv = trio.open_memory_channel[Message](OUTBOX_MESSAGES)
            queue = self._queues[node] = send
            self._nursery.start_soon(self._sender, node, recv)
        try:
            queue.send_nowait(message)
        except (trio.WouldBlock, trio.BrokenResourceError, trio.ClosedResourceError):
            log.warning("the outbox to node %s is full; its messages count as lost", node)
            self.on_lost(node, [message])
            return False
        return True

    def forget(self, node: str) -> None:
        """``node`` is gone: end its sender (what is queued is dropped)."""
        queue = self._queues.pop(node, None)
        if queue is not None:
            queue.close()

    @property
    def nodes(self) -> list[str]:
        return list(self._queues)

    async def _sender(self, node: str, recv: trio.MemoryReceiveChannel[Message]) -> None:
        async with recv:
            async for first in recv:
                batch = [first]
                while len(batch) < MAX_MERGED:
                    try:
                        batch.append(recv.receive_nowait())
                    except trio.WouldBlock:
                        break
                payload = encode_batch(batch)

                def answered(reply: Any, batch: list[Message] = batch) -> None:
                    if not isinstance(reply, int) or reply < 1:  # nobody, or a broken
                        self.on_lost(node, batch)  # connection (an error) before the answer

                if self.bp.publish_nowait(node, payload, answered):
                    continue
                try:  # down or backed up: wait for it (back-pressure), or fail
                    if await self.bp.publish(node, payload) < 1:
                        self.on_lost(node, batch)
                except BackplaneUnavailable:
                    self.on_lost(node, batch)
