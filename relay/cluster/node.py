"""This node's part in a Redis-backed cluster: the ``Backplane`` of ``redis://``.

It composes the parts (see the package docstring): the owner side of rooms
(``owner``), forwarding both ways (``forwarding``), same-host handoff (``handoff``), stats
documents (``stats``) and ``/ws`` rooms (``signaling``), over the Redis infrastructure of
``relay.backplane`` (leases, the fenced log, pub/sub). It owns their tasks: the commit
queue, the outboxes, the inbox reader, the stats writer and notices, the watch loop.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable
from typing import Any

import trio

from relay.backplane.group_commit import GroupCommit
from relay.backplane.redis import BackplaneUnavailable, RedisBackplane
from relay.core.context import Session
from relay.core.hub import Outcome
from relay.core.steps_import import ImportFailure
from relay.ports import ClusterHost, Ref

from .context import ClusterContext
from .forwarding import WATCH_INTERVAL, Forwarding
from .handoff import Handoff
from .outboxes import Outboxes
from .owner import OwnerRooms, room_key
from .places import Places
from .polling import PollingForwarding
from .remote import Remotes
from .signaling import SignalingForwarding
from .stats import ClusterStats, StatsDocuments
from .wire import (
    Close,
    Forward,
    Frames,
    Gone,
    HttpAck,
    HttpAnswer,
    HttpForward,
    Message,
    Result,
    WireError,
    WsForward,
    WsGone,
    WsResult,
    decode_batch,
)

log = logging.getLogger("relay.cluster")

STARTUP_WAIT = 5.0  # a node exits 1 when Redis is not reachable within this at startup
TOUCH_INTERVAL = 30.0


class Cluster:
    """``relay.ports.Backplane`` for ``redis://``; built by ``relay.app`` for a node."""

    def __init__(self, host: ClusterHost, url: str, *, handoff: bool = True,
                 idle_expiry: float = 7200.0) -> None:
        self.host = host
        self.bp = RedisBackplane(url, on_lease_lost=self._lease_lost, on_gap=self._gap)
        self.node_id = self.bp.node_id
        commits = GroupCommit(self.bp.append_many,
                              lambda: BackplaneUnavailable("the node is stopping"))
        outboxes = Outboxes(self.bp, self._lost)
        remotes = Remotes(outboxes.send, host.codec_for)
        self.ctx = ClusterContext(host, self.bp, commits, outboxes, remotes)
        self.owner = OwnerRooms(self.ctx, self._stats_changed_owner, self._room_gone)
        self.docs = StatsDocuments(self.ctx, lambda: self.owner.owned.keys())
        self.stats = ClusterStats(self.ctx, self.docs, lambda: self.owner.owned.keys(),
                                  host.wait_stats_change)
        self.handoff = Handoff(host, self.node_id) if handoff else None
        self.forwarding = Forwarding(self.ctx, self.owner, self.handoff)
        self.signaling_fwd = SignalingForwarding(self.ctx)
        self.polling = PollingForwarding(self.ctx, host.serve_polling)
        self.places = Places(host, self.bp)
        self._gone_nodes: set[str] = set()  # dead nodes whose place clients were dropped
        self._idle_expiry = idle_expiry
        self._next_touch = 0.0

    # -- lifetime ---------------------------------------------------------------------
    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self.ctx.nursery = nursery
            # A node that cannot reach Redis at startup is misconfigured or early: exit 1
            # (§1.1) so that the operator or the supervisor sees it, instead of running
            # a node that answers every room event with an error. One deadline for the
            # whole start (a paused Redis makes each first attempt wait its op timeout).
            with trio.move_on_after(STARTUP_WAIT):
                await nursery.start(self.bp.run)
                await self.bp.wait_available()
            if not self.bp.available:
                raise BackplaneUnavailable(
                    f"cannot reach the backplane at {self.bp.url}: {self.bp.last_error}")
            await nursery.start(self.ctx.outboxes.run)
            # Replicated places: catch up with the log before serving (a new node's
            # replicas start complete), then follow it.
            await nursery.start(self.bp.run_places_reader)
            await self.places.catch_up()
            nursery.start_soon(self.places.reader)
            nursery.start_soon(self.places.sender)
            nursery.start_soon(self.places.maintain, self.bp.is_alive)
            if self.handoff is not None:
                await nursery.start(self.handoff.serve)
            nursery.start_soon(self.ctx.commits.run)
            nursery.start_soon(self.docs.run)
            nursery.start_soon(self.docs.notices)
            nursery.start_soon(self._inbox_loop)
            nursery.start_soon(self._watch_loop)
            nursery.start_soon(self.signaling_fwd.keep_ids)
            task_status.started()

    @property
    def available(self) -> bool:
        return self.bp.available

    # -- the Backplane port --------------------------------------------------------------
    def dispatch(self, conn: Any, event: str, data: Any, ref: Ref | None) -> Awaitable[None]:
        return self.forwarding.dispatch(conn, event, data, ref)

    def signaling(self, conn: Any, text: str | None, binary: bool) -> Awaitable[None]:
        return self.signaling_fwd.message(conn, text, binary)

    def signaling_frame(self, signaling_id: int, frame: dict[str, Any]) -> None:
        self.signaling_fwd.frame(signaling_id, frame)

    def connection_opened(self, conn: Any) -> None:
        self.ctx.local[conn.conn_id] = conn

    def connection_replaced(self, old_id: int, old: Any, new: Any) -> None:
        """A session moved onto another transport object (``new`` has ``old``'s id now;
        ``old_id`` was ``new``'s own)."""
        self.ctx.local.pop(old_id, None)
        self.ctx.local[new.conn_id] = new

    def connection_closed(self, conn: Any) -> None:
        if conn.endpoint == "ws":
            self.ctx.local.pop(conn.conn_id, None)
            self.signaling_fwd.closed(conn)
        else:
            self.forwarding.local_closed(conn)

    def participant_offline(self, room_id: int, user_id: int, ip: str) -> None:
        session = Session(ip=ip, room_id=room_id, user_id=user_id)
        self.ctx.spawn(self.owner.disconnected, room_id, session)

    def room_removed(self, room_id: int) -> None:
        self.owner.removed(room_id)

    def stats_changed(self, room_id: int) -> None:
        self.docs.changed(room_id)

    async def import_done(self, room_id: int, result: list[dict[str, str]] | ImportFailure
                          ) -> Outcome | None:
        return await self.owner.import_done(room_id, result)

    def place_command(self, cmd: Any) -> None:
        """A replicated place's command: appended to the places' log, applied when read."""
        self.places.issue(cmd)

    # -- polling sessions across nodes -----------------------------------------------------
    async def register_session(self, sid: str) -> None:
        await self.polling.register(sid)

    def forget_session(self, sid: str) -> None:
        self.ctx.spawn(self.polling.forget, sid)

    async def session_node(self, sid: str) -> str | None:
        return await self.polling.session_node(sid)

    async def give_upgrade(self, node: str, fd: int, received: bytes) -> bool:
        """An upgrade for a polling session of ``node``: hand it the socket (same host)."""
        if self.handoff is None:
            return False
        return await self.handoff.give_request(node, fd, received)

    async def forward_http(self, node: str, request: Any, body: bytes, ip: str,
                           write: Any) -> bool:
        return await self.polling.forward(node, request, body, ip, write)

    def _stats_changed_owner(self, room_id: int) -> None:
        self.docs.changed(room_id)

    def _room_gone(self, room_id: int) -> None:
        self.ctx.spawn(self.docs.removed, room_id)

    # -- inbox ---------------------------------------------------------------------------
    async def _inbox_loop(self) -> None:
        async for raw in self.bp.inbox:
            try:
                messages = decode_batch(raw)
            except WireError as exc:
                log.error("an inbox message cannot be read (%s); treating it as lost", exc)
                self._gap(None)
                continue
            for message in messages:
                try:
                    await self._inbox_message(message)
                except Exception:
                    log.exception("handling an inbox message failed")

    async def _inbox_message(self, msg: Message) -> None:
        if isinstance(msg, Forward):
            # In order, without a task per command: ``submit`` only waits while the commit
            # queue is full (then the inbox stops being read: back-pressure onto Redis).
            await self.forwarding.remote_command(msg)
        elif isinstance(msg, Frames | Close | Result):
            self.forwarding.delivered(msg)
        elif isinstance(msg, Gone):
            self.forwarding.remote_gone(msg.node, msg.conn)
            self.ctx.remotes.flush()
        elif isinstance(msg, WsForward):
            self.signaling_fwd.remote_message(msg)
        elif isinstance(msg, WsResult):
            self.signaling_fwd.result(msg, msg.wait)
        elif isinstance(msg, WsGone):
            self.signaling_fwd.stub_gone((msg.node, msg.conn))
        elif isinstance(msg, HttpForward):
            self.ctx.spawn(self.polling.serve_remote, msg)
        elif isinstance(msg, HttpAnswer):
            self.polling.answered(msg, msg.wait)
        elif isinstance(msg, HttpAck):
            self.polling.acked(msg.node, msg)

    # -- losses and failures -------------------------------------------------------------
    def _lost(self, node: str, messages: list[Message]) -> None:
        for msg in messages:
            if isinstance(msg, WsForward):
                self.signaling_fwd.result(None, msg.wait)
            elif isinstance(msg, HttpForward):
                self.polling.answered(None, msg.wait)
        self.forwarding.lost(node, messages)

    def _gap(self, room: str | None) -> None:
        """The subscriber may have missed messages (called inside the backplane's task)."""
        if room is None:
            self.forwarding.inbound_gap()
        self.docs.wake_all()

    def _lease_lost(self, key: str) -> None:
        self.owner.lease_lost(key)

    async def _watch_loop(self) -> None:
        """Close clients of dead owners (1011), mark clients of dead nodes offline."""
        while True:
            await trio.sleep(WATCH_INTERVAL)
            try:
                await self._watch_once()
                self.host.backplane_ok = self.bp.available
            except BackplaneUnavailable:
                self.host.backplane_ok = False

    async def _watch_once(self) -> None:
        bp = self.bp
        nodes = {c.remote_owner for c in self.ctx.local.values() if c.remote_owner}
        nodes |= self.ctx.remotes.nodes() | self.signaling_fwd.stub_nodes()
        nodes |= set(self.ctx.outboxes.nodes)
        for node in nodes:
            if node != self.node_id and not await bp.is_alive(node):
                self.forwarding.node_gone(node)
                self.signaling_fwd.node_gone(node)
        for node in self.host.place_nodes() - self._gone_nodes:
            if node != self.node_id and not await bp.is_alive(node):
                self._gone_nodes.add(node)  # (node ids are never reused)
                log.warning("node %s is gone: its clients leave spaces and the chat", node)
                self.host.node_gone(node)
        self.ctx.remotes.flush()
        await self.signaling_fwd.reconcile()
        if trio.current_time() >= self._next_touch:
            self._next_touch = trio.current_time() + self._touch_interval()
            await self._touch_rooms()

    def _touch_interval(self) -> float:
        return min(TOUCH_INTERVAL, max(WATCH_INTERVAL, self._idle_expiry / 2))

    async def _touch_rooms(self) -> None:
        """Keep our rooms' keys alive; a room whose owner died and that nobody resumes
        expires from Redis after the idle expiry (plus a margin)."""
        ttl = int((self._idle_expiry + 2 * self._touch_interval()) * 1000)
        for room_id in list(self.owner.owned):
            await self.bp.expire_room(room_key(room_id), ttl,
                                      kv=[f"room:{room_id}", f"stats:{room_id}"],
                                      ids=[("room", str(room_id))])
