"""The Trio side of this node's observer rooms: who is connected, and the rooms' nurseries.

The core decides; this carries its actions out, in order: frames to the participants'
peers (``relay.ports.Peer``: a local connection, or the cluster's stand-in for one held by
another node), binding and replacing connections, closing rooms, and room-scoped work
(Notion imports, the cluster's snapshot writes and recovery) in the room's own nursery,
which is cancelled when the room goes.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import trio

from relay.core.actions import (
    Action,
    Bind,
    Counted,
    Disconnect,
    Reply,
    RoomClosed,
    RoomOpened,
    Send,
    StartImport,
    StatsChanged,
    Unbind,
)
from relay.core.errors import EventError
from relay.core.steps_import import ImportFailure
from relay.ports import Peer, Ref

from .notion_fetch import fetch_notion_tasks

if TYPE_CHECKING:
    from .base import Node

log = logging.getLogger("relay.server")

ROOM_JOBS = 8  # room-scoped jobs queued at once (one import at a time, snapshots, ...)


@dataclass(slots=True)
class RoomRuntime:
    """The Trio side of one room: a nursery for its background work."""

    jobs_send: trio.MemorySendChannel[Callable[[], Awaitable[Any]]]
    jobs_recv: trio.MemoryReceiveChannel[Callable[[], Awaitable[Any]]]
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)


class RoomShell:
    def __init__(self, node: Node) -> None:
        self.node = node
        self.hub = node.hub
        self.metrics = node.metrics
        #: The peer of each online participant: (room id, user id) -> peer.
        self.peers: dict[tuple[int, int], Peer] = {}
        self.runtimes: dict[int, RoomRuntime] = {}
        self.stats_waiters: dict[int, trio.Event] = {}
        self._nursery: trio.Nursery | None = None

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Own the rooms' nurseries until cancelled."""
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    # -- events --------------------------------------------------------------------------
    def handle_event(self, peer: Peer, event: str, data: Any, ref: Ref | None, *,
                     now: float | None = None, entropy: Any = None) -> str | None:
        """Run one event of ``peer`` through the core and carry out its actions.

        ``now`` and ``entropy`` are the command's own when it was logged (scale-out).
        Returns the error code when the event failed.
        """
        node = self.node
        outcome = self.hub.handle(peer.session, event, data,  # type: ignore[arg-type]
                                  now=node.now() if now is None else now,
                                  entropy=node.entropy if entropy is None else entropy)
        self.apply(outcome.actions, peer, event=event, ref=ref)
        if outcome.error is not None:
            err = outcome.error
            peer.send_error(err.code, err.message, event, ref)
            if ref is not None:
                peer.send_ack(ref, err)
            return err.code
        if ref is not None and not outcome.deferred:
            peer.send_ack(ref, None)
        return None

    def apply(self, actions: list[Action], sender: Peer | None, *,
              event: str | None = None, ref: Ref | None = None) -> None:
        """Carry out the core's actions in order."""
        peers = self.peers
        for action in actions:
            if isinstance(action, Send):
                peer = peers.get((action.room_id, action.user_id))
                if peer is None:
                    continue
                try:
                    if action.seq is None:
                        peer.send_event(action.out, action.after)
                    else:
                        peer.sequenced(action.out, action.seq, action.size)
                except Exception:
                    # The recipient's failure is the recipient's: the sender carries on.
                    log.exception("delivery to a connection failed; closing it with 1011")
                    peer.close(1011, "internal error")
            elif isinstance(action, Reply):
                if sender is not None:
                    sender.send_event(action.out)
            elif isinstance(action, Bind):
                assert sender is not None
                key = (action.room_id, action.user_id)
                old = peers.get(key)
                if old is not None and old is not sender:
                    old.released = True
                    old.close(4003, "replaced by a newer connection")
                sender.attach(action.cursor, action.replay_end, action.pinned)
                peers[key] = sender
            elif isinstance(action, Unbind):
                if sender is not None:
                    for key, peer in list(peers.items()):
                        if peer is sender:
                            del peers[key]
                    sender.detach()
            elif isinstance(action, Disconnect):
                peer = peers.pop((action.room_id, action.user_id), None)
                if peer is not None:
                    peer.released = True  # the core already removed the participant
                    peer.close(action.code, action.reason, flush=True)
            elif isinstance(action, RoomOpened):
                self.open_room(action.room_id)
            elif isinstance(action, RoomClosed):
                self._close_room(action)
            elif isinstance(action, StartImport):
                self._start_import(action, sender, event, ref)
            elif isinstance(action, StatsChanged):
                waiter = self.stats_waiters.pop(action.room_id, None)
                if waiter is not None:
                    waiter.set()
                self.node.backplane.stats_changed(action.room_id)
            elif isinstance(action, Counted):
                self._count(action)

    def _count(self, action: Counted) -> None:
        m = self.metrics
        if action.metric == "resumes":
            m.inc("observer_resumes", action.label, amount=action.amount)
        elif action.metric == "replayed_events":
            m.inc("observer_replayed_events", amount=action.amount)
        elif action.metric == "imports":
            source, result = action.label.split(":")
            m.inc("observer_imports", source, result, amount=action.amount)

    def replace_peer(self, old: Peer, new: Peer) -> None:
        """A session moved to another transport object (Engine.IO upgrade)."""
        session = old.session
        if session.room_id is not None and session.user_id is not None:
            key = (session.room_id, session.user_id)
            if self.peers.get(key) is old:
                self.peers[key] = new

    def connection_ended(self, peer: Peer) -> tuple[int, int] | None:
        """``peer``'s connection ended: the participant it was bound to, if it goes offline
        (not when the core already handled it: replaced, kicked, closed, moved)."""
        session = peer.session
        if not session.bound:
            return None
        assert session.room_id is not None and session.user_id is not None
        key = (session.room_id, session.user_id)
        if peer.released or self.peers.get(key) is not peer:
            session.room_id = session.user_id = None
            return None
        del self.peers[key]
        return key

    # -- rooms -------------------------------------------------------------------------
    def open_room(self, room_id: int) -> None:
        """A room lives here now (created, or rebuilt by the cluster): its nursery."""
        if room_id in self.runtimes:
            return
        log.info("room opened", extra={"room": room_id})
        send, recv = trio.open_memory_channel[Callable[[], Awaitable[Any]]](ROOM_JOBS)
        runtime = RoomRuntime(send, recv)
        self.runtimes[room_id] = runtime
        assert self._nursery is not None
        self._nursery.start_soon(self._room_task, runtime)

    async def _room_task(self, runtime: RoomRuntime) -> None:
        with runtime.scope:
            async with trio.open_nursery() as nursery, runtime.jobs_recv:
                async for job in runtime.jobs_recv:
                    nursery.start_soon(self._job, job)

    @staticmethod
    async def _job(job: Callable[[], Awaitable[Any]]) -> None:
        """One room job: its failure is logged, and ends neither the room nor the node."""
        try:
            await job()
        except Exception:
            log.exception("a room's background job failed")

    def spawn(self, room_id: int, job: Callable[[], Awaitable[Any]]) -> bool:
        """Run ``job`` in the room's nursery; False when the room is not here or busy."""
        runtime = self.runtimes.get(room_id)
        if runtime is None:
            return False
        try:
            runtime.jobs_send.send_nowait(job)
        except trio.WouldBlock:
            return False
        return True

    def _close_room(self, action: RoomClosed) -> None:
        log.info("room removed", extra={"room": action.room_id, "reason": action.reason})
        self.node.backplane.room_removed(action.room_id)
        self.forget_room(action.room_id)
        for user_id in action.user_ids:
            peer = self.peers.pop((action.room_id, user_id), None)
            if peer is not None:
                peer.released = True
                peer.close(4000, "room closed", flush=True)

    def forget_room(self, room_id: int) -> None:
        """The room is gone from this node: cancel its work, wake its stats readers."""
        runtime = self.runtimes.pop(room_id, None)
        if runtime is not None:
            runtime.scope.cancel()
        waiter = self.stats_waiters.pop(room_id, None)
        if waiter is not None:
            waiter.set()

    async def wait_stats_change(self, room_id: int) -> None:
        event = self.stats_waiters.get(room_id)
        if event is None:
            event = self.stats_waiters[room_id] = trio.Event()
        await event.wait()

    # -- imports (§6.7) ------------------------------------------------------------------
    def _start_import(self, action: StartImport, sender: Peer | None, event: str | None,
                      ref: Ref | None) -> None:
        async def job() -> None:
            await self._run_import(action.room_id, action.url, sender, event, ref)

        self.spawn(action.room_id, job)

    async def _run_import(self, room_id: int, url: str, peer: Peer | None,
                          event: str | None, ref: Ref | None) -> None:
        answered = False
        try:
            result: list[dict[str, str]] | ImportFailure
            try:
                result = await fetch_notion_tasks(url, self.node.config.notion_base_urls)
            except ImportFailure as exc:
                result = exc.with_traceback(None)  # a value now (no frame cycle)
            outcome = await self.node.backplane.import_done(room_id, result)
            if outcome is None or peer is None:
                return
            answered = True
            if outcome.error is not None:
                peer.send_error(outcome.error.code, outcome.error.message, event, ref)
                if ref is not None:
                    peer.send_ack(ref, outcome.error)
            elif ref is not None:
                peer.send_ack(ref, None)
        finally:
            if not answered and peer is not None:
                # The room closed under the import (its nursery was cancelled): the host,
                # whose connection stays open (§6.1), still gets its one answer (§3.3).
                message = "the room no longer exists"
                peer.send_error("import_failed", message, event, ref)
                if ref is not None:
                    peer.send_ack(ref, EventError("import_failed", message))
