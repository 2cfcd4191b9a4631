"""``/ws`` signaling rooms across nodes.

A signaling room lives on the node that created it (registered as ``kv:ws:{room}``); the
dialect has no resume, so nothing of it is logged. A connection in no room is handled
where it is; ``JOIN_ROOM`` for a room of another node is forwarded there, and while the
connection is in that room all its messages are. The room's node keeps a stand-in id in
its ``SignalingHub`` for each such connection and sends its frames back.

Room ids are four characters (§7: 36⁴ ids), so two nodes drawing on their own would collide
within days of use. Each node keeps a few ids reserved in Redis ahead of need (``kv:ws:{id}``
holding its node id, taken only if free or held by a dead node) and its ``SignalingHub`` draws
from them synchronously; a room's key is deleted when the room is gone.
"""

from __future__ import annotations

import logging
from typing import Any

import msgspec
import trio

from relay.backplane.redis import BackplaneUnavailable
from relay.codecs.wsframe import text_frame
from relay.core.outgoing import encode_json
from signaling.ws_frames import new_room_id

from .context import FORWARD_TIMEOUT, ClusterContext
from .wire import Frames, WsForward, WsGone, WsResult

log = logging.getLogger("relay.cluster")

ID_POOL = 8  # room ids reserved ahead of need


def join_target(text: str | None) -> str | None:
    """The normalised room id of a /ws JOIN_ROOM message, if that is what it is."""
    if text is None or "JOIN_ROOM" not in text:
        return None
    try:
        frame = msgspec.json.decode(text)
    except (msgspec.DecodeError, RecursionError):
        return None
    if isinstance(frame, dict) and frame.get("type") == "JOIN_ROOM":
        room = frame.get("roomid")
        if isinstance(room, str) and room.strip():
            return room.strip().lower()
    return None


class SignalingForwarding:
    def __init__(self, ctx: ClusterContext) -> None:
        self.ctx = ctx
        self.host = ctx.host
        # Stand-ins on this node for connections of other nodes, by their signaling id.
        self._stubs: dict[tuple[str, int], int] = {}
        self._stub_of: dict[int, tuple[str, int]] = {}
        self.registered: set[str] = set()
        self._waits: dict[int, trio.MemorySendChannel[bool | None]] = {}
        self._pool: list[str] = []  # ids reserved for this node's next rooms
        self._pool_low = trio.Event()
        self._unreserved = 0  # rooms created with an id drawn without reservation
        ctx.host.signaling.draw_room_ids_with(self._take_id)

    def _take_id(self) -> str:
        self._pool_low.set()
        if self._pool:
            room = self._pool.pop()
            self.registered.add(room)  # (its key already names this node)
            return room
        self._unreserved += 1
        log.warning("no reserved /ws room id left (Redis unreachable?): drawing one without "
                    "a cluster-wide reservation")
        return new_room_id()

    async def keep_ids(self) -> None:
        """Keep ``ID_POOL`` room ids reserved for this node."""
        hub = self.host.signaling
        while True:
            while len(self._pool) < ID_POOL:
                room = new_room_id()
                if room in self._pool or room in hub.room_ids():
                    continue
                try:
                    if await self.ctx.bp.kv_claim(f"ws:{room}"):
                        self._pool.append(room)
                except BackplaneUnavailable:
                    break
            self._pool_low = trio.Event()
            with trio.move_on_after(5.0):  # (retry after an outage)
                await self._pool_low.wait()

    async def message(self, conn: Any, text: str | None, binary: bool) -> None:
        hub = self.host.signaling
        owner = conn.remote_owner
        if owner is None:
            room = join_target(text)
            if room is not None and room not in hub.room_ids():
                owner = await self._room_node(room)
            if owner is None:
                self._here(conn.signaling_id, text, binary)
                return
        wait = self.ctx.wait_id()
        send, recv = trio.open_memory_channel[bool | None](1)
        self._waits[wait] = send
        try:
            if not self.ctx.outboxes.send(owner, WsForward(self.ctx.node_id, conn.conn_id, wait,
                                                           text, binary, conn.ip)):
                raise BackplaneUnavailable("the message could not be sent")
            with trio.move_on_after(FORWARD_TIMEOUT):
                in_room = await recv.receive()
                if in_room is None:
                    raise BackplaneUnavailable("the message reached nobody")
                if in_room and conn.remote_owner is None:
                    self.host.rebind_signaling(conn)  # joined a room of another node
                conn.remote_owner = owner if in_room else None
                return
            conn.remote_owner = None
            conn.close(1011, "the room's node did not answer")
        except BackplaneUnavailable:
            conn.remote_owner = None
            conn.close(1011, "the backplane is unavailable")
        finally:
            self._waits.pop(wait, None)

    async def _room_node(self, room: str) -> str | None:
        try:
            found = await self.ctx.bp.kv_get(f"ws:{room}")
            if found is None:
                return None
            node = found.decode(errors="replace")
            if node != self.ctx.node_id and await self.ctx.bp.is_alive(node):
                return node
        except BackplaneUnavailable:
            pass
        return None

    def _here(self, signaling_id: int, text: str | None, binary: bool) -> None:
        frames = self.host.signaling.receive(signaling_id, text, binary=binary,
                                             now=self.host.now())
        self.host.deliver_signaling(frames)
        self._register(frames)

    def remote_message(self, msg: WsForward) -> None:
        """A message of another node's connection for a signaling room of ours."""
        hub = self.host.signaling
        key = (msg.node, msg.conn)
        stub = self._stubs.get(key)
        if stub is None:
            stub = self._stubs[key] = hub.connect(msg.ip or None)
            self._stub_of[stub] = key
        self._here(stub, msg.text, msg.binary)
        in_room = hub.room_of(stub) is not None
        if not in_room:
            self.stub_gone(key)
        self.ctx.outboxes.send(msg.node, WsResult(msg.wait, in_room))

    def result(self, msg: WsResult | None, wait: int) -> None:
        waiter = self._waits.get(wait)
        if waiter is not None:
            try:
                waiter.send_nowait(None if msg is None else msg.in_room)
            except trio.WouldBlock:
                pass

    def frame(self, signaling_id: int, frame: dict[str, Any]) -> None:
        """A /ws frame for a connection held by another node."""
        key = self._stub_of.get(signaling_id)
        if key is not None:
            self.ctx.outboxes.send(key[0], Frames(key[1], text_frame(encode_json(frame))))

    def stub_gone(self, key: tuple[str, int]) -> None:
        stub = self._stubs.pop(key, None)
        if stub is not None:
            frames = self.host.signaling.disconnect(stub)
            self._stub_of.pop(stub, None)
            self.host.deliver_signaling(frames)

    def closed(self, conn: Any) -> None:
        if conn.remote_owner is not None:
            self.ctx.outboxes.send(conn.remote_owner, WsGone(self.ctx.node_id, conn.conn_id))

    def node_gone(self, node: str) -> None:
        for key in [k for k in self._stubs if k[0] == node]:
            self.stub_gone(key)

    def stub_nodes(self) -> set[str]:
        return {key[0] for key in self._stubs}

    def _register(self, frames: list[tuple[int, dict[str, Any]]]) -> None:
        for _, frame in frames:
            if frame.get("type") == "ROOM_CREATED" and frame["roomid"] not in self.registered:
                room = frame["roomid"]  # (an id drawn without reservation)
                self.registered.add(room)
                self.ctx.spawn(self._kv_set, f"ws:{room}", self.ctx.node_id.encode())

    async def _kv_set(self, key: str, value: bytes) -> None:
        try:
            await self.ctx.bp.kv_set(key, value)
        except BackplaneUnavailable:
            pass

    async def reconcile(self) -> None:
        """Unregister /ws rooms that no longer exist here."""
        alive = set(self.host.signaling.room_ids())
        for room in list(self.registered - alive):
            self.registered.discard(room)
            await self.ctx.bp.kv_delete(f"ws:{room}")
