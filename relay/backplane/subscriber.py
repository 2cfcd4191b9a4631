"""Messaging: publishing to nodes and rooms, and the one subscriber connection receiving them.

Pub/sub is at-most-once. One lean RESP connection (``resp.py``) carries our inbox and every
room channel we subscribed to, delivered into bounded Trio memory channels; a full channel
drops the message and reports the gap (``on_gap``) rather than stall the connection for all
of them, and a reconnect resubscribes from ``_rooms`` and reports a gap too.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import trio

from .base import BackplaneUnavailable, RedisBase, leaf
from .resp import ReplyError, RespSubscriber


class PubSub(RedisBase):
    """Publish to a node's inbox or a room's channel; receive ours on one connection."""

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
                    raise BackplaneUnavailable(f"{action} {room}: {leaf(exc)!r}") from exc
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
                self.last_error = f"subscriber: {leaf(group)!r}"
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
