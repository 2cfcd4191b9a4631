"""Events of a connection whose room lives on another node, both ways.

Client side (``dispatch``): find the room's owner (maybe us), hand a joining client's
socket to it when it runs on this host (``handoff``), or forward the event to its inbox.
Events that can change which room a connection is in wait for their ``Result``; the
others do not (the owner applies a connection's commands in the order they were sent,
and acks and errors come back on the connection's own stream of frames), except every
``FORWARD_WINDOW``-th, so a connection cannot run ahead of its room by more than that.

Owner side (``remote_command``): run a forwarded command through ``OwnerRooms`` with a
``RemoteConn`` stand-in, and send back its frames and, when waited for, its result.

Losses are never silent: forwarded commands are numbered per connection and a gap closes
the connection with 1011 (its client resumes); a message that reached nobody is reported
by the outboxes (``lost``), and a reconnect of our subscriber (``inbound_gap``) closes
every connection whose messages may have been missed.
"""

from __future__ import annotations

import logging
from typing import Any

import trio

from relay.backplane.redis import BackplaneUnavailable
from relay.core.hub import BINDING_EVENTS, REATTACH_EVENTS
from relay.core.limits import COUNTED
from relay.ports import Peer, Ref

from .context import FORWARD_TIMEOUT, LOCATE_TIMEOUT, ClusterContext
from .handoff import Handoff
from .owner import OwnerRooms
from .wire import Close, Forward, Frames, Gone, Message, Result, payload_text, payload_value

log = logging.getLogger("relay.cluster")

FORWARD_WINDOW = 16  # a forwarded connection waits for its owner every this many commands
WATCH_INTERVAL = 1.0
RETRY_PAUSE = 0.25


def _unwaited(peer: Peer, event: str) -> bool:
    """Whether the sender's node may go on without waiting for the event's result: it
    cannot change which room the connection is in."""
    return peer.session.bound and event not in BINDING_EVENTS


class Forwarding:
    def __init__(self, ctx: ClusterContext, owner: OwnerRooms, handoff: Handoff | None) -> None:
        self.ctx = ctx
        self.host = ctx.host
        self.owner = owner
        self.handoff = handoff
        self._sent: dict[int, int] = {}  # connection id -> commands forwarded (from 1)
        self._waits: dict[int, trio.MemorySendChannel[Result | None]] = {}

    # -- client side -----------------------------------------------------------------------
    async def dispatch(self, conn: Any, event: str, data: Any, ref: Ref | None) -> None:
        """Route one client event to the room's owner (maybe us) and wait for it."""
        session = conn.session
        room_id: int | None = session.room_id
        if room_id is None and event in REATTACH_EVENTS:
            candidate = data.get("room_id") if isinstance(data, dict) else None
            room_id = candidate if type(candidate) is int else None
        hub, now = self.host.hub, self.host.now()
        try:
            if event in REATTACH_EVENTS and not session.bound:
                session.blocked = hub.join_blocked(session.ip, now)
            if event == "room/create" and not session.bound:
                session.blocked = hub.state.room_cap_reached(session.ip)
                await self.owner.create(conn, data, ref)
                return
            if room_id is None:
                self.host.handle_event(conn, event, data, ref)  # fails without room state
                return
            await self._route(conn, room_id, event, data, ref)
        finally:
            session.blocked = None

    async def _route(self, conn: Any, room_id: int, event: str, data: Any,
                     ref: Ref | None) -> None:
        session = conn.session
        # A bound connection keeps the owner it was attached through: no lookup per event.
        owner = conn.remote_owner if session.bound else None
        if owner is None:
            try:
                owner = await self.owner.locate(room_id)
            except BackplaneUnavailable:
                self.owner.refuse(conn, event, ref, "the backplane is unavailable")
                return
        deadline = trio.current_time() + LOCATE_TIMEOUT
        while True:
            if owner is None:
                self.host.handle_event(conn, event, data, ref)  # room_not_found etc.
            elif owner == self.ctx.node_id:
                if _unwaited(conn, event):
                    await self.owner.run(room_id, conn, event, data, ref)
                else:
                    error = await self.owner.run_waiting(room_id, conn, event, data, ref)
                    if event in REATTACH_EVENTS and error in COUNTED:
                        self.host.hub.count_join_failure(session.ip, self.host.now())
            elif (event in REATTACH_EVENTS and not session.bound and self.handoff is not None
                  and await self.handoff.give(owner, conn, event, data, ref)):
                return  # the owner runs on this host and serves the connection from now on
            elif not await self._forward(owner, conn, event, data, ref):
                # Not applied there (its node died, or the event reached nobody): find the
                # room's owner again — a dead owner's lease is taken over within seconds —
                # and retry; attaching is idempotent.
                if trio.current_time() >= deadline:
                    self.owner.refuse(conn, event, ref, "the room's node cannot be reached")
                    return
                await trio.sleep(RETRY_PAUSE)
                try:
                    owner = await self.owner.locate(room_id)
                except BackplaneUnavailable:
                    self.owner.refuse(conn, event, ref, "the backplane is unavailable")
                    return
                continue
            return

    async def _forward(self, owner: str, conn: Any, event: str, data: Any,
                       ref: Ref | None) -> bool:
        """Run the event on the owner's node; False when it was not applied there and may
        be retried elsewhere (only an unbound connection's attach is retried: attaching is
        idempotent). A bound connection whose owner died or lost the event is closed with
        1011 instead: the client resumes and finds the event applied (logged) or not."""
        s = conn.session
        sent = self._sent.get(conn.conn_id, 0) + 1
        self._sent[conn.conn_id] = sent
        waited = not _unwaited(conn, event) or sent % FORWARD_WINDOW == 0
        wait = self.ctx.wait_id() if waited else 0
        message = Forward(self.ctx.node_id, conn.conn_id, sent, wait, conn.endpoint, s.ip,
                          s.room_id, s.user_id, s.blocked, event, payload_text(data), ref,
                          s.framing, s.device)
        if not waited:
            self.ctx.outboxes.send(owner, message)  # a loss closes the connection (lost)
            return True
        send, recv = trio.open_memory_channel[Result | None](1)
        self._waits[wait] = send
        try:
            if not self.ctx.outboxes.send(owner, message):
                return self._not_delivered(conn)
            deadline = trio.current_time() + FORWARD_TIMEOUT
            while trio.current_time() < deadline:
                with trio.move_on_after(WATCH_INTERVAL):
                    result = await recv.receive()
                    if result is None:  # the message reached nobody
                        return self._not_delivered(conn)
                    s.room_id, s.user_id = result.room, result.user
                    conn.remote_owner = owner if result.room is not None else None
                    if event in REATTACH_EVENTS and result.error in COUNTED:
                        self.host.hub.count_join_failure(s.ip, self.host.now())
                    return True
                try:
                    if not await self.ctx.bp.is_alive(owner):
                        break
                except BackplaneUnavailable:
                    pass
            return self._not_delivered(conn)
        finally:
            self._waits.pop(wait, None)

    def _not_delivered(self, conn: Any) -> bool:
        if conn.session.bound:
            self.close_forwarded(conn, "the room's node is gone; resume")
            return True
        return False

    def close_forwarded(self, conn: Any, reason: str) -> None:
        conn.remote_owner = None
        conn.released = True  # the owner (or its successor) handles the participant
        conn.close(1011, reason)

    # -- messages for our connections --------------------------------------------------------
    def delivered(self, message: Frames | Close | Result) -> None:
        if isinstance(message, Result):
            waiter = self._waits.get(message.wait)
            if waiter is not None:
                try:
                    waiter.send_nowait(message)
                except trio.WouldBlock:
                    pass
            return
        conn = self.ctx.local.get(message.conn)
        if conn is None:
            return
        if isinstance(message, Frames):
            conn.push(message.frames)
        else:
            conn.released = True  # the owner already handled the participant
            conn.remote_owner = None
            conn.close(message.code, message.reason, flush=message.flush)

    def local_closed(self, conn: Any) -> None:
        """A client connection of this node ended."""
        self.ctx.local.pop(conn.conn_id, None)
        self._sent.pop(conn.conn_id, None)
        owner = conn.remote_owner
        if owner is not None and not conn.released:
            self.ctx.outboxes.send(owner, Gone(self.ctx.node_id, conn.conn_id))

    # -- owner side ----------------------------------------------------------------------------
    async def remote_command(self, msg: Forward) -> None:
        """Run a command forwarded by another node for a room we own."""
        remotes = self.ctx.remotes
        rc = remotes.get(msg.node, msg.conn)
        if rc is None and msg.room is not None and msg.event not in REATTACH_EVENTS:
            # A bound connection whose stand-in we dropped: its node was taken for dead
            # (a stall, a Redis hiccup) and its participant went offline here, but it is
            # alive and the connection still thinks it is attached. It must resume, not
            # go on half attached (its room's events would reach only its replay buffer).
            self.ctx.outboxes.send(msg.node, Close(msg.conn, 1011,
                                                   "the room lost this connection; resume",
                                                   False))
            if msg.wait:  # (not applied: the close comes first anyway)
                self.ctx.outboxes.send(msg.node, Result(msg.wait, msg.room, msg.user,
                                                        "internal"))
            self.ctx.remotes.flush()
            return
        if rc is None:
            rc = remotes.create(msg.node, msg.conn, msg.endpoint, msg.ip)
            rc.session.room_id, rc.session.user_id = msg.room, msg.user
        elif msg.n != rc.sent + 1 and rc.session.bound:
            # A command of this connection was lost on the way: the client must resume
            # rather than go on with a gap.
            self.remote_gone(msg.node, msg.conn)  # offline first: the close forgets it
            rc.close(1011, "commands were lost; resume")
            remotes.flush()
            return
        rc.sent = msg.n
        rc.session.blocked = msg.blocked
        rc.session.framing, rc.session.device = msg.framing, msg.device
        try:
            data = payload_value(msg.data)
        except (ValueError, RecursionError):
            data = None  # cannot happen for what a node sends; the core refuses it
        room_id = rc.session.room_id if rc.session.bound else (
            data.get("room_id") if isinstance(data, dict) else None)

        def result(error: str | None) -> None:
            s = rc.session
            if msg.wait:
                self.ctx.outboxes.send(rc.node, Result(msg.wait, s.room_id, s.user_id, error))
            if not s.bound and remotes.get(rc.node, rc.conn) is rc:
                remotes.pop(rc.node, rc.conn)
            remotes.flush()

        if type(room_id) is int and room_id in self.owner.owned:
            await self.owner.run(room_id, rc, msg.event, data, msg.ref, result)
        elif type(room_id) is int and room_id in self.owner.gone:
            # Closed or expired here a moment ago: answer as any node will from now on.
            remotes.flush()
            result(self.host.handle_event(rc, msg.event, data, msg.ref))
        else:
            result(self.owner.refuse(rc, msg.event, msg.ref, "the room moved; try again"))

    def remote_gone(self, node: str, conn: int) -> None:
        """A forwarded connection ended (or must be treated as gone): its participant goes
        offline, as a logged command."""
        rc = self.ctx.remotes.pop(node, conn)
        if rc is None or rc.released:
            return
        s = rc.session
        if s.room_id is None or s.user_id is None:
            return
        if self.host.peer_of(s.room_id, s.user_id) is rc:
            self.host.release_peer(s.room_id, s.user_id)
            self.ctx.spawn(self.owner.disconnected, s.room_id,
                           type(s)(ip=s.ip, room_id=s.room_id, user_id=s.user_id))

    # -- losses ------------------------------------------------------------------------------
    def lost(self, node: str, messages: list[Message]) -> None:
        """Messages to ``node`` reached nobody: close whatever depended on them."""
        for message in messages:
            if isinstance(message, Forward):
                waiter = self._waits.get(message.wait) if message.wait else None
                if waiter is not None:
                    try:
                        waiter.send_nowait(None)
                    except trio.WouldBlock:
                        pass
                else:
                    conn = self.ctx.local.get(message.conn)
                    if conn is not None:
                        self.close_forwarded(conn, "an event was lost on the way; resume")
            elif isinstance(message, (Frames, Close)):
                rc = self.ctx.remotes.get(node, message.conn)
                if rc is not None:
                    self.remote_gone(node, message.conn)
                    rc.close(1011, "frames were lost on the way; resume")
        self.ctx.remotes.flush()

    def inbound_gap(self) -> None:
        """Our subscriber reconnected (or dropped a message): anything sent to us meanwhile
        may be lost, so every connection that depends on our inbox is closed with 1011 —
        ours that are forwarded, and the stand-ins of other nodes' clients."""
        for conn in list(self.ctx.local.values()):
            if conn.remote_owner is not None:
                self.close_forwarded(conn, "messages from the room's node were lost; resume")
        for waiter in list(self._waits.values()):
            try:
                waiter.send_nowait(None)
            except trio.WouldBlock:
                pass
        for rc in list(self.ctx.remotes.by_key.values()):
            self.remote_gone(rc.node, rc.conn)
            rc.close(1011, "commands may have been lost; resume")
        self.ctx.remotes.flush()

    def node_gone(self, node: str) -> None:
        """``node`` died: its clients' participants go offline; ours forwarded there
        resume elsewhere."""
        for conn in list(self.ctx.local.values()):
            if conn.remote_owner == node:
                self.close_forwarded(conn, "the room's node is gone; resume")
        for rc in self.ctx.remotes.of_node(node):
            self.remote_gone(rc.node, rc.conn)
        self.ctx.outboxes.forget(node)
