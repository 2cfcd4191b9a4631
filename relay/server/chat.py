"""The seed chat app on ``/socket.io/`` (§9.10): its sessions and its directory's timer.

A Socket.IO session that sends ``login`` while unbound becomes a chat session; its six
events go to the directory (``relay.chat.Directory``, a sans-IO core) instead of the
observer core, and the directory's actions are carried out here: each event encoded once
(``Outgoing``, whose Socket.IO frame is cached) for all its recipients, failures answered
to the sender alone. A chat session may not send observer events and a session bound to
an observer room may not send chat events (``already_in_room``).
"""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING, Any

import trio

from relay.chat import CHAT_EVENTS, Directory
from relay.chat.actions import Action, Emit, Fail
from relay.chat.entropy import SystemEntropy
from relay.core.errors import EventError
from relay.core.outgoing import Outgoing
from relay.ports import Ref

if TYPE_CHECKING:
    from .base import Node

log = logging.getLogger("relay.server")

ALREADY = "already_in_room"


class ChatShell:
    def __init__(self, node: Node) -> None:
        self.node = node
        self.directory = Directory()
        self.entropy = SystemEntropy()
        self.sessions: dict[str, Any] = {}  # session key -> its connection (this node's)
        self._wake = trio.Event()

    @staticmethod
    def key(conn: Any) -> str:
        """A session key the directory can never mistake for a user id (20 characters)."""
        return f"s:{conn.conn_id}"

    def routes(self, conn: Any, event: str) -> bool:
        """Whether ``event`` from ``conn`` belongs to the chat app (and not the core)."""
        return conn.endpoint == "socketio" and (
            event in CHAT_EVENTS or self.directory.is_chat_session(self.key(conn)))

    def handle(self, conn: Any, event: str, data: Any, ref: Ref | None) -> None:
        key = self.key(conn)
        if event not in CHAT_EVENTS:  # an observer event from a chat session
            self._fail(conn, ALREADY, "this session is a chat session", event, ref)
            return
        if conn.session.bound:  # a chat event from a session in an observer room
            self._fail(conn, ALREADY, "this session is in an observer room", event, ref)
            return
        self.sessions[key] = conn
        actions = self.directory.handle(key, event, data, now=self.node.now(),
                                        entropy=self.entropy)
        failed = self._carry_out(actions)
        if ref is not None:
            conn.send_ack(ref, failed)
        self._wake.set()

    def closed(self, conn: Any) -> None:
        key = self.key(conn)
        if self.sessions.get(key) is conn:
            del self.sessions[key]
            self._carry_out(self.directory.disconnect(key, now=self.node.now(),
                                                      entropy=self.entropy))
            self._wake.set()

    def replaced(self, old: Any, new: Any) -> None:
        """A session moved to another transport object (Engine.IO upgrade)."""
        key = self.key(old)
        if self.sessions.get(key) is old:
            self.sessions[key] = new

    def _fail(self, conn: Any, code: str, message: str, event: str, ref: Ref | None) -> None:
        conn.send_error(code, message, event, ref)
        if ref is not None:
            conn.send_ack(ref, EventError(code, message))

    def _carry_out(self, actions: list[Action]) -> EventError | None:
        failed = None
        for action in actions:
            if isinstance(action, Emit):
                out = Outgoing(action.event, action.data)
                for key in action.sessions:
                    conn = self.sessions.get(key)
                    if conn is not None:
                        conn.send_event(out)
            elif isinstance(action, Fail):
                conn = self.sessions.get(action.session)
                if conn is not None:
                    conn.send_error(action.code, action.message, action.event, None)
                failed = EventError(action.code, action.message)
        return failed

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """The directory's timer: coalesced ``contact`` frames go out when due."""
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
