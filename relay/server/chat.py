"""The seed chat app on ``/socket.io/`` (§9.10): its sessions and its directory.

A Socket.IO session that sends ``login`` while unbound becomes a chat session; its six
events go to the directory (``relay.chat.Directory``, a sans-IO core) instead of the
observer core, and the directory's actions are carried out here: each event encoded once
(``Outgoing``, whose Socket.IO frame is cached) for all its recipients, failures answered
to the sender alone. A chat session may not send observer events and a session bound to
an observer room may not send chat events (``already_in_room``).

The directory is one per server, shared by all nodes: like a ChatRoom space
(``relay.server.spaces``) it is a replicated place — every event, disconnect and node
death is a ``PlaceCommand`` applied by every node in the order of one stream, each node
delivering to its own sessions. Users and groups live as long as their sessions; a dead
node's users leave everyone's contacts.
"""

from __future__ import annotations

import logging
import math
from collections import deque
from collections.abc import Awaitable
from typing import TYPE_CHECKING, Any

import msgspec
import trio

from relay.chat import CHAT_EVENTS, Directory
from relay.chat.actions import Action, Emit, Fail
from relay.chat.entropy import SeededEntropy
from relay.cluster.wire import PlaceCommand
from relay.core.errors import EventError
from relay.core.outgoing import Outgoing
from relay.ports import Ref

if TYPE_CHECKING:
    from .base import Node

log = logging.getLogger("relay.server")

ALREADY = "already_in_room"
KIND, PLACE = "chat", "directory"


class ChatShell:
    def __init__(self, node: Node) -> None:
        self.node = node
        self.directory = Directory()
        self.sessions: dict[str, Any] = {}  # session key -> this node's connection
        self._refs: dict[str, deque[Ref | None]] = {}  # acks owed, in command order
        #: Sessions of this node with chat commands issued and not applied yet, and what
        #: their next observer event waits for (see ``handle``).
        self._inflight: dict[str, int] = {}
        self._settled: dict[str, trio.Event] = {}
        self._wake = trio.Event()

    def key(self, conn: Any) -> str:
        """A session key unique across nodes, which the directory can never mistake for a
        user id (those are 20 characters of base64url, without ``:``)."""
        return f"{self.node.backplane.node_id}:{conn.conn_id}"

    def routes(self, conn: Any, event: str) -> bool:
        """Whether ``event`` from ``conn`` belongs to the chat app (and not the core)."""
        if conn.endpoint != "socketio":
            return False
        key = self.key(conn)
        return (event in CHAT_EVENTS or key in self._inflight
                or self.directory.is_chat_session(key))

    def handle(self, conn: Any, event: str, data: Any, ref: Ref | None
               ) -> Awaitable[None] | None:
        key = self.key(conn)
        if event not in CHAT_EVENTS:
            if key in self._inflight:
                # Its chat commands are on their way through the places' log (Redis): only
                # when they are applied is it known whether this is a chat session, and
                # the answer to this event must not overtake theirs (§3.3). The
                # connection's reader waits here, as it does for a forwarded event.
                return self._after_settled(conn, event, data, ref)
            self._fail(conn, ALREADY, "this session is a chat session", event, ref)
            return None
        if conn.session.bound:  # a chat event from a session in an observer room
            self._fail(conn, ALREADY, "this session is in an observer room", event, ref)
            return None
        self.sessions[key] = conn
        self._refs.setdefault(key, deque()).append(ref)
        self._inflight[key] = self._inflight.get(key, 0) + 1
        self._issue("handle", conn.conn_id, event, msgspec.json.encode(data).decode())
        return None

    async def _after_settled(self, conn: Any, event: str, data: Any, ref: Ref | None
                             ) -> None:
        key = self.key(conn)
        settled = self._settled.setdefault(key, trio.Event())
        await settled.wait()
        pending = self.node.observer_event(conn, event, data, ref)  # routed afresh
        if pending is not None:
            await pending

    def _settle(self, key: str) -> None:
        left = self._inflight.get(key, 0) - 1
        if left > 0:
            self._inflight[key] = left
            return
        self._inflight.pop(key, None)
        settled = self._settled.pop(key, None)
        if settled is not None:
            settled.set()

    def closed(self, conn: Any) -> None:
        key, conn_id = self.key(conn), conn.conn_id
        if self.sessions.get(key) is conn:
            del self.sessions[key]
            self._refs.pop(key, None)
            self._inflight.pop(key, None)
            settled = self._settled.pop(key, None)
            if settled is not None:
                settled.set()
            self._issue("disconnect", conn_id)

    def replaced(self, old: Any, new: Any) -> None:
        """A session moved to another transport object (Engine.IO upgrade)."""
        key = self.key(old)
        if self.sessions.get(key) is old:
            self.sessions[key] = new

    def node_gone(self, node_id: str) -> None:
        self._issue("node_gone", 0, node_id)

    def _issue(self, op: str, conn: int, arg: str = "", text: str | None = None) -> None:
        node = self.node
        node.backplane.place_command(PlaceCommand(
            KIND, PLACE, op, str(node.backplane.node_id), conn, arg, text,
            node.entropy_bytes(16), node.now()))

    def _fail(self, conn: Any, code: str, message: str, event: str, ref: Ref | None) -> None:
        conn.send_error(code, message, event, ref)
        if ref is not None:
            conn.send_ack(ref, EventError(code, message))

    # -- applying commands (every node, in the same order) ---------------------------------
    def apply(self, cmd: PlaceCommand) -> None:
        directory = self.directory
        groups = directory.group_count
        key = f"{cmd.node}:{cmd.conn}"
        entropy = SeededEntropy(cmd.seed)
        # This node's clock, not the command's: users, groups and ids depend only on the
        # commands and their seeds; time only paces ``contact`` frames, which each node
        # does for its own sessions, against the clock its timer uses.
        now = self.node.now()
        if cmd.op == "handle":
            try:
                data = msgspec.json.decode(cmd.text or "null")
            except (msgspec.DecodeError, RecursionError):
                data = None
            failed = self._carry_out(directory.handle(key, cmd.arg, data, now=now,
                                                      entropy=entropy))
            refs = self._refs.get(key) if cmd.node == str(self.node.backplane.node_id) else None
            if refs:
                ref = refs.popleft()
                conn = self.sessions.get(key)
                if ref is not None and conn is not None:
                    conn.send_ack(ref, failed)
            if cmd.node == str(self.node.backplane.node_id):
                self._settle(key)
        elif cmd.op == "disconnect":
            self._carry_out(directory.disconnect(key, now=now, entropy=entropy))
        elif cmd.op == "node_gone":
            prefix = cmd.arg + ":"
            for session in directory.sessions():
                if session.startswith(prefix):
                    self._carry_out(directory.disconnect(session, now=now,
                                                         entropy=entropy))
                    mine = (self.sessions.get(session)
                            if cmd.arg == str(self.node.backplane.node_id) else None)
                    if mine is not None:  # we were taken for dead (a stall): reconnect
                        mine.close(1011, "this node was taken for dead; reconnect")
        if cmd.node == str(self.node.backplane.node_id) and directory.group_count != groups:
            # §1.1: rooms created and removed (a chat group is one; logged by one node)
            log.info("chat group created" if directory.group_count > groups
                     else "chat group removed", extra={"groups": directory.group_count})
        if not directory.sessions():
            self.directory = Directory()  # (nothing in it matters to anyone any more)
        self._wake.set()

    def alive(self) -> bool:
        """Whether the directory has state. With no chat session left it has none that
        matters, and every replica starts over with a fresh one (so that the places' log
        need not keep its history)."""
        return bool(self.directory.sessions())

    def nodes(self) -> set[str]:
        return {key.partition(":")[0] for key in self.directory.sessions()}

    def lost(self) -> None:
        """Our replica missed commands: close our chat sessions (1011) and start over."""
        for conn in list(self.sessions.values()):
            conn.close(1011, "the chat's state was lost here; reconnect")
        self.sessions.clear()
        self._refs.clear()
        self._inflight.clear()
        for settled in self._settled.values():
            settled.set()
        self._settled.clear()
        self.directory = Directory()

    def refused(self, cmd: PlaceCommand) -> None:
        conn = self.sessions.get(f"{cmd.node}:{cmd.conn}")
        if conn is not None:
            conn.close(1011, "the backplane is not reachable; reconnect")

    def _carry_out(self, actions: list[Action]) -> EventError | None:
        failed = None
        for action in actions:
            if isinstance(action, Emit):
                out = Outgoing(action.event, action.data)
                for session in action.sessions:
                    conn = self.sessions.get(session)
                    if conn is not None:  # (another node's session, or gone)
                        conn.send_event(out)
            elif isinstance(action, Fail):
                conn = self.sessions.get(action.session)
                if conn is not None:
                    conn.send_error(action.code, action.message, action.event, None)
                failed = EventError(action.code, action.message)
        return failed

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """The directory's timer: coalesced ``contact`` frames go out when due. Pacing is
        each node's own (ticks change no user or group), so ticks are not replicated."""
        task_status.started()
        while True:
            deadline = self.directory.next_deadline()
            wait = math.inf if deadline is None else max(0.0, deadline - self.node.now())
            with trio.move_on_after(min(wait, 0.1) if deadline is not None else math.inf):
                await self._wake.wait()
            self._wake = trio.Event()
            if deadline is not None and self.node.now() >= deadline:
                try:
                    self._carry_out(self.directory.tick(self.node.now()))
                except Exception:
                    log.exception("the chat directory's timer failed")

    def users(self) -> int:
        return self.directory.user_count

    def groups(self) -> int:
        return self.directory.group_count
