"""One relay process: its listeners, connections, rooms, backplane and lifetime.

Nursery tree (``docs/architecture.md`` draws it with the cluster's part)::

    RelayServer.serve: root nursery
     ├─ backplane (memory: nothing; redis: relay.cluster.Cluster and its tasks)
     ├─ connections nursery ─ per TCP connection: a failure boundary (listen.Listener)
     │                         └─ per WebSocket: nursery(reader, writer while needed)
     ├─ rooms nursery ─ per observer room: nursery(imports, snapshots, recovery)
     ├─ accept loop per listening socket
     ├─ heartbeats (one timing wheel for every connection)
     └─ janitor (idle room expiry, failed-join windows)

The node implements the ports of ``relay.ports`` that the parts use to reach it
(``ConnectionHost``, ``ClusterHost``, ``WebHost``): they never reach into it otherwise.
"""

from __future__ import annotations

import logging
import secrets
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any

import trio

from relay.codecs.base import ObserverCodec
from relay.codecs.plain import PlainCodec
from relay.codecs.socketio import SocketIOCodec
from relay.codecs.wsframe import text_frame
from relay.config import Config
from relay.core.hub import Hub
from relay.core.ids import Entropy, SecureEntropy
from relay.core.outgoing import encode_json
from relay.metrics import Metrics
from relay.ports import Connection, Peer, Ref
from relay.transport.clients import client_address
from relay.transport.heartbeat import TICK, HeartbeatWheel
from signaling.ws_rooms import SignalingHub, type_label

from .chat import ChatShell
from .listen import Listener
from .local import LocalBackplane
from .polling import Polling
from .rooms import RoomShell
from .spaces import SpaceShell

log = logging.getLogger("relay.server")

SHUTDOWN_GRACE = 2.5


async def _nursery_owner(*, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    """Hold a nursery open until cancelled and hand it to the caller."""
    async with trio.open_nursery() as nursery:
        task_status.started(nursery)
        await trio.sleep_forever()


class RelayServer:
    def __init__(self, config: Config, backplane: Callable[[RelayServer], Any] | None = None
                 ) -> None:
        """``backplane`` builds the node's backplane (``relay.cli`` passes the cluster's for
        ``redis://``); the default keeps every room in this process (``memory://``)."""
        self.config = config
        self.settings = config.transport_settings()
        self._metrics = Metrics(self._gauges)
        self.hub = Hub(config.core_settings())
        self.entropy: Entropy = SecureEntropy()
        # The core's clock: wall-clock seconds that never jump (Trio's clock, offset once).
        self._epoch = time.time() - trio.current_time()
        self.signaling = SignalingHub(limiter=self.hub.state.join_failures)
        self.rooms = RoomShell(self)
        self.spaces = SpaceShell(self, config.space_settings())
        self.chat = ChatShell(self)
        self.listener = Listener(self)
        self.polling = Polling(self)
        self.connections: set[Any] = set()
        self.signaling_conns: dict[int, Connection] = {}
        self._conn_ids = 0
        cfg = self.settings
        self.heartbeat_wheel = HeartbeatWheel(max(0.01, min(
            TICK, cfg.heartbeat_interval / 4, cfg.heartbeat_timeout / 4,
            cfg.sio_ping_interval / 4, cfg.sio_ping_timeout / 4)))
        self.backplane: Any = (backplane or LocalBackplane)(self)
        self.stats = self.backplane.stats
        self.public_stats = config.public_stats
        self.chatroom_secret = config.chatroom_secret
        self._shutting_down = False
        self.backplane_ok = True
        self.relay_port = 0
        self.web_port = 0
        self.web_shutdown = trio.Event()
        self._root: trio.Nursery | None = None

    @property
    def metrics(self) -> Metrics:
        return self._metrics

    # -- running ----------------------------------------------------------------------
    def now(self) -> float:
        """Wall-clock seconds for the core, monotonic (an NTP step cannot expire rooms)."""
        return trio.current_time() + self._epoch

    async def serve(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Bind the relay port, report it, run until shut down (``relay.app`` runs the web
        port beside it)."""
        cfg = self.config
        listeners = await trio.open_tcp_listeners(cfg.port, host=cfg.host)
        self.relay_port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as root:
            self._root = root
            await root.start(self.rooms.run)
            await root.start(self.spaces.run)
            await root.start(self.chat.run)
            await root.start(self.backplane.run)
            connections = await root.start(_nursery_owner)
            for listener in listeners:
                root.start_soon(self.listener.accept_loop, listener, connections)
            root.start_soon(self._janitor)
            root.start_soon(self._heartbeats)
            task_status.started(self.relay_port)

    @property
    def shutting_down(self) -> bool:
        return self._shutting_down

    async def shutdown(self) -> None:
        """Graceful stop: no new connections, 1001 to every WebSocket, then exit."""
        if self._shutting_down:
            return
        self._shutting_down = True
        for conn in list(self.connections):
            conn.close(1001, "server shutting down")  # (a polling session: its GET says 1)
        with trio.move_on_after(SHUTDOWN_GRACE):
            while self.connections:
                await trio.sleep(0.02)
        self.web_shutdown.set()
        for event in self.rooms.stats_waiters.values():
            event.set()
        with trio.move_on_after(1.0):
            await trio.sleep(0.05)
        if self._root is not None:
            self._root.cancel_scope.cancel()

    async def wait_shutdown(self) -> None:
        await self.web_shutdown.wait()

    async def _heartbeats(self) -> None:
        """One timer for every connection's heartbeat (no task per connection)."""
        wheel = self.heartbeat_wheel
        while True:
            await trio.sleep(wheel.tick)
            wheel.advance(trio.current_time())

    async def _janitor(self) -> None:
        while True:
            await trio.sleep(0.25)
            try:
                now = self.now()
                actions = self.hub.expire(now)
                if actions:
                    self.rooms.apply(actions, None)
                self.spaces.expire(now)
            except Exception:
                log.exception("idle expiry failed; retrying at the next tick")

    def entropy_bytes(self, n: int) -> bytes:
        """A seed for a replicated command (its replicas draw the same values from it)."""
        return secrets.token_bytes(n)

    def apply_place(self, cmd: Any) -> None:
        """A replicated place's command, in the backplane's order (§9)."""
        try:
            if cmd.kind == "space":
                self.spaces.apply(cmd)
            elif cmd.kind == "chat":
                self.chat.apply(cmd)
        except Exception:
            log.exception("applying a %s command failed", cmd.kind)

    def node_gone(self, node_id: str) -> None:
        """Another node died: its clients leave the replicated places."""
        self.spaces.node_gone(node_id)
        self.chat.node_gone(node_id)

    def place_alive(self, kind: str, place: str) -> bool:
        return self.spaces.alive(place) if kind == "space" else self.chat.alive()

    def place_nodes(self) -> set[str]:
        return self.spaces.nodes() | self.chat.nodes()

    def places_lost(self) -> None:
        self.spaces.lost()
        self.chat.lost()

    def place_refused(self, cmd: Any) -> None:
        (self.spaces if cmd.kind == "space" else self.chat).refused(cmd)

    def new_conn_id(self) -> int:
        self._conn_ids += 1
        return self._conn_ids

    def codec_for(self, endpoint: str) -> ObserverCodec:
        if endpoint == "socketio":
            s = self.settings
            return SocketIOCodec(int(s.sio_ping_interval * 1000), int(s.sio_ping_timeout * 1000),
                                 s.max_message_size)
        return PlainCodec()

    # -- ConnectionHost ------------------------------------------------------------------
    def observer_event(self, conn: Peer, event: str, data: Any, ref: Ref | None
                       ) -> Awaitable[None] | None:
        if self.chat.routes(conn, event):  # the chat app's events (§9.10)
            return self.chat.handle(conn, event, data, ref)
        return self.backplane.dispatch(conn, event, data, ref)  # type: ignore[no-any-return]

    def signaling_message(self, conn: Connection, text: str | None, binary: bool
                          ) -> Awaitable[None] | None:
        self.metrics.message_in("ws", type_label(text) if text is not None else "unknown")
        return self.backplane.signaling(conn, text, binary)  # type: ignore[no-any-return]

    def chatroom_opened(self, conn: Any) -> None:
        self.spaces.opened(conn)

    def chatroom_message(self, conn: Any, text: str | None) -> None:
        self.spaces.message(conn, text)

    def chatroom_rate_limited(self, conn: Any, text: str | None) -> None:
        self.spaces.rate_limited(conn, text)

    def connection_closed(self, conn: Any) -> None:
        if conn.endpoint == "chatroom":
            self.spaces.closed(conn)
            return
        self.polling.ended(conn)
        if conn.endpoint == "socketio":
            self.chat.closed(conn)
        self.backplane.connection_closed(conn)
        if conn.endpoint == "ws":
            self.signaling_conns.pop(conn.signaling_id, None)
            self.deliver_signaling(self.signaling.disconnect(conn.signaling_id))
            return
        ended = self.rooms.connection_ended(conn)
        if ended is not None:
            room_id, user_id = ended
            conn.session.room_id = conn.session.user_id = None
            self.backplane.participant_offline(room_id, user_id, conn.session.ip)

    async def serve_polling(self, http: Any, request: Any, ip: str) -> bool:
        """A polling request another node forwarded (its session lives here)."""
        return await self.polling.serve(http, request, ip, forwarded=True)

    def upgrade_session(self, session: Any, ws: Any) -> None:
        """A polling session's WebSocket received ``5``: it is the session from now on."""
        self.polling.upgrade(session, ws)

    # -- ClusterHost -------------------------------------------------------------------
    def handle_event(self, peer: Peer, event: str, data: Any, ref: Ref | None, *,
                     now: float | None = None, entropy: Any = None) -> str | None:
        return self.rooms.handle_event(peer, event, data, ref, now=now, entropy=entropy)

    def apply(self, actions: list[Any], sender: Peer | None) -> None:
        self.rooms.apply(actions, sender)

    def peer_of(self, room_id: int, user_id: int) -> Peer | None:
        return self.rooms.peers.get((room_id, user_id))

    def release_peer(self, room_id: int, user_id: int) -> Peer | None:
        peer = self.rooms.peers.pop((room_id, user_id), None)
        if peer is not None:
            peer.released = True
        return peer

    def room_opened(self, room_id: int) -> None:
        self.rooms.open_room(room_id)

    def room_dropped(self, room_id: int) -> None:
        self.rooms.forget_room(room_id)

    def spawn_in_room(self, room_id: int, job: Callable[[], Awaitable[Any]]) -> bool:
        return self.rooms.spawn(room_id, job)

    async def wait_stats_change(self, room_id: int) -> None:
        await self.rooms.wait_stats_change(room_id)

    async def adopt(self, fd: int, endpoint: str, session: dict[str, Any], event: str,
                    data: Any, ref: Ref | None) -> None:
        await self.listener.adopt(fd, endpoint, session, event, data, ref)

    async def adopt_http(self, fd: int, received: bytes) -> None:
        await self.listener.adopt_http(fd, received)

    # -- /ws dialect -------------------------------------------------------------------
    def signaling_here(self, conn: Any, text: str | None, binary: bool) -> None:
        """A ``/ws`` message for a signaling room of this node (or none yet)."""
        self.deliver_signaling(self.signaling.receive(conn.signaling_id, text, binary=binary,
                                                      now=self.now()))

    def deliver_signaling(self, frames: list[tuple[int, dict[str, Any]]]) -> None:
        for signaling_id, frame in frames:
            conn = self.signaling_conns.get(signaling_id)
            if conn is None:
                self.backplane.signaling_frame(signaling_id, frame)
                continue
            kind = frame.get("type", "unknown")
            self.metrics.message_out("ws", kind)
            if kind in ("ERROR", "INVALID_USERNAME", "INVALID_ROOM_ID"):
                self.metrics.error(kind)
                log.debug("error answer", extra={"code": kind, "event": None,
                                                 "conn": getattr(conn, "conn_id", 0)})
            conn.push(text_frame(encode_json(frame)))

    def rebind_signaling(self, conn: Any) -> None:
        """``conn`` joined a room of another node: leave ours (no ``LEFT_ROOM``, §7)."""
        self.signaling_conns.pop(conn.signaling_id, None)
        self.deliver_signaling(self.signaling.disconnect(conn.signaling_id))
        conn.signaling_id = self.signaling.connect(conn.ip)
        self.signaling_conns[conn.signaling_id] = conn

    # -- WebHost -----------------------------------------------------------------------
    def health(self) -> tuple[int, dict[str, Any]]:
        rooms = len(self.hub.rooms) + self.signaling.room_count() + self.spaces.count()
        body = {"status": "ok", "rooms": rooms, "connections": len(self.connections)}
        if self._shutting_down:
            body["status"] = "shutting_down"
            return 503, body
        if not self.backplane_ok:
            body["status"] = "backplane_unavailable"
            return 503, body
        return 200, body

    def space_document(self, space: str) -> tuple[int, dict[str, Any]] | None:
        return self.spaces.document(space)

    async def wait_space_change(self, space: str) -> None:
        await self.spaces.wait_change(space)

    def metrics_text(self) -> bytes:
        return self.metrics.render()

    def join_blocked(self, ip: str) -> bool:
        return self.hub.join_blocked(ip, self.now())

    def count_join_failure(self, ip: str) -> None:
        self.hub.count_join_failure(ip, self.now())

    def client_ip(self, peer: str, headers: Mapping[str, str]) -> str:
        return client_address(peer, headers, self.listener.trusted)[0]

    def _gauges(self) -> dict[str, dict[tuple[str, ...], float]]:
        """Live gauges for /metrics, read from state at scrape time."""
        by_endpoint = dict.fromkeys(("observer", "socketio", "ws", "chatroom"), 0.0)
        for conn in self.connections:
            by_endpoint[conn.endpoint] += 1
        online = offline = 0
        for room in self.hub.rooms.values():
            for p in room.participants.values():
                if p.online:
                    online += 1
                else:
                    offline += 1
        return {
            "observer_connections": {(k,): v for k, v in by_endpoint.items()},
            "observer_rooms": {("observer",): len(self.hub.rooms),
                               ("signaling",): self.signaling.room_count(),
                               ("space",): self.spaces.count(),
                               ("chat_group",): self.chat.groups()},
            "observer_chat_users": {(): self.chat.users()},
            "observer_participants": {("online",): online, ("offline",): offline},
        }
