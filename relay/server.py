"""The Trio shell around the sans-IO core: listeners, connections, rooms, shutdown.

Nursery tree::

    server nursery
     ├─ relay listener (accept loop)      connections nursery ─ per connection: nursery(
     ├─ web server (Hypercorn)                                     reader, writer, heartbeat)
     ├─ rooms nursery ─ per room: nursery(imports)
     └─ janitor (idle room expiry)

The core is applied synchronously inside the task that read the event, so a room applies
its changes one at a time without a queue hop; the ordered actions it returns are carried
out before the task yields.
"""

from __future__ import annotations

import errno
import logging
import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from typing import Any

import trio

from relay.cluster import Cluster
from relay.codecs.base import Ref
from relay.codecs.plain import PlainCodec
from relay.config import Config
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
from relay.core.context import Session
from relay.core.hub import Hub
from relay.core.ids import Entropy, SecureEntropy
from relay.core.notion_fetch import fetch_notion_tasks
from relay.core.steps_import import ImportFailure
from relay.metrics import Metrics
from relay.stats_source import ClusterStats, LocalStats, StatsSource
from signaling.ws_rooms import SignalingHub

from .transport.connection import CLOSE_REASONS, WebSocketConnection
from .transport.heartbeat import TICK, HeartbeatWheel
from .transport.http import origin_allowed, read_request, send_body, send_json, send_switching
from .transport.observer import ObserverConnection
from .transport.ratelimit import RateLimiter
from .transport.signaling import SignalingConnection
from .transport.sio_handshake import check_sio_request
from .transport.wsframe import accept_key, text_frame

log = logging.getLogger("relay.server")

#: accept() failures that mean "out of descriptors or memory for now": back off, retry.
ACCEPT_CAPACITY_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
ACCEPT_BACKOFF_MAX = 1.0

OBSERVER_PATHS = frozenset({"/observer", "/observer/"})
SIO_PATHS = frozenset({"/socket.io", "/socket.io/"})
WS_PATHS = frozenset({"/ws", "/ws/"})
SHUTDOWN_GRACE = 2.5


@dataclass(slots=True)
class RoomRuntime:
    """The Trio side of one room: a nursery for its background work."""

    jobs_send: trio.MemorySendChannel[Callable[[], Any]]
    jobs_recv: trio.MemoryReceiveChannel[Callable[[], Any]]
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)


async def _nursery_owner(*, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    """Hold a nursery open until cancelled and hand it to the caller."""
    async with trio.open_nursery() as nursery:
        task_status.started(nursery)
        await trio.sleep_forever()


class RelayServer:
    def __init__(self, config: Config) -> None:
        self.config = config
        self.metrics = Metrics(self._gauges)
        clustered = config.backplane_url.startswith("redis://")
        self.hub = Hub(config.core_settings())
        self.entropy = SecureEntropy()
        # The core's clock: wall-clock seconds that never jump (Trio's clock, offset once).
        self._epoch = time.time() - trio.current_time()
        self.cluster: Cluster | None = Cluster(self) if clustered else None
        self.stats: StatsSource = (ClusterStats(self.cluster) if self.cluster is not None
                                   else LocalStats(self))
        self.signaling = SignalingHub()
        self.conns: dict[tuple[int, int], ObserverConnection] = {}
        self.connections: set[WebSocketConnection] = set()
        self.connections_per_ip: dict[str, int] = {}
        cfg = self.config
        self.heartbeat_wheel = HeartbeatWheel(max(0.01, min(
            TICK, cfg.heartbeat_interval / 4, cfg.heartbeat_timeout / 4,
            cfg.sio_ping_interval / 4, cfg.sio_ping_timeout / 4)))
        self.ws_conns: dict[int, SignalingConnection] = {}
        self.rooms: dict[int, RoomRuntime] = {}
        self.stats_waiters: dict[int, trio.Event] = {}
        self.shutting_down = False
        self.backplane_ok = True
        self.relay_port = 0
        self.web_port = 0
        self.web_shutdown = trio.Event()
        self._connections_nursery: trio.Nursery | None = None
        self._rooms_nursery: trio.Nursery | None = None
        self._root: trio.Nursery | None = None

    def now(self) -> float:
        """Wall-clock seconds for the core, monotonic (an NTP step cannot expire rooms)."""
        return trio.current_time() + self._epoch

    # -- running ----------------------------------------------------------------------
    async def serve(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Bind both ports, report ``(relay_port, web_port)``, run until shut down."""
        from stats_web.server import serve_web

        cfg = self.config
        listeners = await trio.open_tcp_listeners(cfg.port, host=cfg.host)
        self.relay_port = listeners[0].socket.getsockname()[1]
        async with trio.open_nursery() as root:
            self._root = root
            if self.cluster is not None:
                await root.start(self.cluster.run)
            self._connections_nursery = await root.start(_nursery_owner)
            self._rooms_nursery = await root.start(_nursery_owner)
            self.web_port = await root.start(serve_web, self)
            for listener in listeners:
                root.start_soon(self._accept_loop, listener)
            root.start_soon(self._janitor)
            root.start_soon(self._heartbeats)
            task_status.started((self.relay_port, self.web_port))

    async def shutdown(self) -> None:
        """Graceful stop: no new connections, 1001 to every WebSocket, then exit."""
        if self.shutting_down:
            return
        self.shutting_down = True
        for conn in list(self.connections):
            conn.close(1001, "server shutting down")
        with trio.move_on_after(SHUTDOWN_GRACE):
            while self.connections:
                await trio.sleep(0.02)
        self.web_shutdown.set()
        for event in self.stats_waiters.values():
            event.set()
        with trio.move_on_after(1.0):
            await trio.sleep(0.05)
        if self._root is not None:
            self._root.cancel_scope.cancel()

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
                actions = self.hub.expire(self.now())
                if actions:
                    self.apply(actions, None)
            except Exception:
                log.exception("idle expiry failed; retrying at the next tick")

    # -- accepting ----------------------------------------------------------------------
    async def _accept_loop(self, listener: trio.SocketListener) -> None:
        """Accept connections for as long as the server runs.

        Running out of descriptors (EMFILE) or memory for sockets is a state, not a
        failure: back off (doubling up to a second) and retry, with one log line per
        second at most instead of a traceback per attempt.
        """
        delay = 0.01
        last_log = -math.inf
        assert self._connections_nursery is not None
        while True:
            try:
                stream = await listener.accept()
            except OSError as exc:
                if exc.errno not in ACCEPT_CAPACITY_ERRNOS:
                    raise
                now = trio.current_time()
                if now - last_log >= 1.0:
                    last_log = now
                    log.warning("cannot accept connections: %s; backing off",
                                errno.errorcode.get(exc.errno or 0, exc.errno))
                await trio.sleep(delay)
                delay = min(delay * 2, ACCEPT_BACKOFF_MAX)
                continue
            delay = 0.01
            self._connections_nursery.start_soon(self._handle_tcp, stream)

    async def _handle_tcp(self, stream: trio.SocketStream) -> None:
        """One TCP connection, from its first byte to its close: a failure boundary.

        Whatever the peer does (reset mid-handshake, garbage, silence) and whatever fails
        while serving it ends here: logged once, this socket closed, nothing else touched.
        """
        try:
            ip = sys.intern(stream.socket.getpeername()[0])  # one string per client address
        except OSError:
            ip = "?"
        try:
            await self._route(stream, ip)
        except* (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass  # the peer went away (a reset during the handshake is ordinary)
        except* Exception:
            log.exception("serving a request from %s failed", ip)
        finally:
            with trio.move_on_after(0.5) as scope:
                scope.shield = True
                await stream.aclose()

    async def _route(self, stream: trio.SocketStream, ip: str) -> None:
        request = await read_request(stream)
        if request is None:
            return
        path = request.path
        if self.shutting_down:
            await send_json(stream, 503, {"status": "shutting_down"})
            return
        if not request.is_upgrade:
            if path == "/healthz" and request.method in ("GET", "HEAD"):
                status, body = self.health()
                await send_json(stream, status, body, head=request.method == "HEAD")
            elif path in SIO_PATHS:
                answer = check_sio_request(False, request.query)
                assert answer is not None
                await send_body(stream, *answer)
            else:
                await send_json(stream, 404, {"error": "not_found"})
            return
        if path not in OBSERVER_PATHS and path not in SIO_PATHS and path not in WS_PATHS:
            await send_json(stream, 404, {"error": "not_found"})
            return
        if not origin_allowed(request.headers.get("origin"), self.config.allowed_origins):
            await send_json(stream, 403, {"error": "origin_not_allowed"})
            return
        if path in SIO_PATHS:
            answer = check_sio_request(True, request.query)
            if answer is not None:
                await send_body(stream, *answer)
                return
        key = request.headers.get("sec-websocket-key")
        if not key or request.headers.get("sec-websocket-version") != "13" or not key.isascii():
            await send_json(stream, 400, {"error": "bad_websocket_handshake"})
            return
        cap = self.config.max_connections_per_ip
        if cap and self.connections_per_ip.get(ip, 0) >= cap:
            await send_json(stream, 429, {"error": "too_many_connections"})
            return
        await send_switching(stream, accept_key(key))
        conn: WebSocketConnection
        if path in WS_PATHS:
            conn = SignalingConnection(self, stream, ip, request.trailing)
            self.ws_conns[conn.conn_id] = conn
        else:
            conn = ObserverConnection(self, stream, ip, request.trailing, self._codec(path))
        del request  # the handshake's headers are not kept for the connection's lifetime
        await self._serve(conn)

    async def _serve(self, conn: WebSocketConnection) -> None:
        if self.cluster is not None:
            conn.cid = self.cluster.new_cid()  # type: ignore[attr-defined]
            self.cluster.local[conn.cid] = conn  # type: ignore[attr-defined]
        self.connections.add(conn)
        per_ip = self.connections_per_ip
        per_ip[conn.ip] = per_ip.get(conn.ip, 0) + 1
        self.heartbeat_wheel.add(conn, conn.heartbeat_due())
        self.metrics.inc("observer_connections_opened", conn.endpoint)
        try:
            await conn.run()
        finally:
            self.connections.discard(conn)
            left = per_ip.get(conn.ip, 1) - 1
            if left > 0:
                per_ip[conn.ip] = left
            else:
                per_ip.pop(conn.ip, None)
            self.heartbeat_wheel.discard(conn)
            code = conn.close_code if conn.close_code is not None else 1006
            reason = "handed_off" if conn.handed_off else CLOSE_REASONS.get(code, "normal")
            self.metrics.inc("observer_disconnects", reason)

    async def adopt(self, conn: ObserverConnection, event: str, data: Any,
                    ref: Ref | None) -> None:
        """Serve a connection another node of this host handed over (``relay.handoff``)."""
        conn.adopt(event, data, ref)
        await self._serve(conn)  # ``conn.run`` closes the socket when it ends

    def _codec(self, path: str) -> Any:
        return self.codec_for("socketio" if path in SIO_PATHS else "observer")

    def codec_for(self, endpoint: str) -> Any:
        if endpoint == "socketio":
            from relay.codecs.socketio import SocketIOCodec

            cfg = self.config
            return SocketIOCodec(int(cfg.sio_ping_interval * 1000),
                                 int(cfg.sio_ping_timeout * 1000), cfg.max_message_size)
        return PlainCodec()

    def new_rate_limiter(self) -> RateLimiter:
        cfg = self.config
        return RateLimiter(cfg.rate_limit_rate, cfg.rate_limit_burst,
                           cfg.rate_limit_close_after, trio.current_time())

    # -- observer events ------------------------------------------------------------------
    def handle_event(self, conn: Any, event: str, data: Any, ref: Ref | None, *,
                     now: float | None = None, entropy: Entropy | None = None) -> str | None:
        """Apply one event of ``conn`` (a connection, or a cluster stand-in for one).

        ``now`` and ``entropy`` are the command's own when it replays a log entry.
        Returns the error code when the event failed.
        """
        outcome = self.hub.handle(conn.session, event, data,
                                  now=self.now() if now is None else now,
                                  entropy=self.entropy if entropy is None else entropy)
        self.apply(outcome.actions, conn, event=event, ref=ref)
        if outcome.error is not None:
            err = outcome.error
            conn.send_error(err.code, err.message, event, ref)
            if ref is not None:
                conn.send_ack(ref, err)
            return err.code
        if ref is not None and not outcome.deferred:
            conn.send_ack(ref, None)
        return None

    def apply(self, actions: list[Action], sender: Any, *,
              event: str | None = None, ref: Ref | None = None) -> None:
        """Carry out the core's actions in order."""
        conns = self.conns
        for action in actions:
            if isinstance(action, Send):
                conn = conns.get((action.room_id, action.user_id))
                if conn is None:
                    continue
                try:
                    if action.seq is None:
                        conn.send_event(action.out, action.after)
                    else:
                        conn.sequenced(action.out, action.seq, action.size)
                except Exception:
                    # The recipient's failure is the recipient's: the sender carries on.
                    log.exception("delivery to a connection failed; closing it with 1011")
                    conn.close(1011, "internal error")
            elif isinstance(action, Reply):
                if sender is not None:
                    sender.send_event(action.out)
            elif isinstance(action, Bind):
                assert sender is not None
                key = (action.room_id, action.user_id)
                old = conns.get(key)
                if old is not None and old is not sender:
                    old.replaced = True
                    old.close(4003, "replaced by a newer connection")
                room = self.hub.rooms[action.room_id]
                sender.attach(room.participants[action.user_id], action.cursor, action.replay_end,
                              action.pinned)
                conns[key] = sender
            elif isinstance(action, Unbind):
                if sender is not None and sender.participant is not None:
                    for key, conn in list(conns.items()):
                        if conn is sender:
                            del conns[key]
                    sender.detach()
            elif isinstance(action, Disconnect):
                conn = conns.pop((action.room_id, action.user_id), None)
                if conn is not None:
                    conn.replaced = True  # the core already removed the participant
                    conn.close(action.code, action.reason, flush=True)
            elif isinstance(action, RoomOpened):
                self._open_room(action.room_id)
            elif isinstance(action, RoomClosed):
                self._close_room(action)
            elif isinstance(action, StartImport):
                self._start_import(action, sender, event, ref)
            elif isinstance(action, StatsChanged):
                waiter = self.stats_waiters.pop(action.room_id, None)
                if waiter is not None:
                    waiter.set()
                if self.cluster is not None:
                    self.cluster.stats_changed(action.room_id)
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

    def _gauges(self) -> dict[str, dict[tuple[str, ...], float]]:
        """Live gauges for /metrics, read from state at scrape time."""
        by_endpoint = dict.fromkeys(("observer", "socketio", "ws"), 0.0)
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
                               ("signaling",): self.signaling.room_count()},
            "observer_participants": {("online",): online, ("offline",): offline},
        }

    def observer_closed(self, conn: ObserverConnection) -> None:
        if self.cluster is not None:
            self.cluster.local_closed(conn)
        session = conn.session
        if not session.bound:
            return
        key = (session.room_id, session.user_id)
        if conn.replaced or self.conns.get(key) is not conn:  # type: ignore[arg-type]
            session.room_id = session.user_id = None
            return
        del self.conns[key]  # type: ignore[arg-type]
        if self.cluster is not None:
            assert session.room_id is not None
            self.cluster.spawn(self.cluster.disconnected, session.room_id,
                               Session(ip=session.ip, room_id=session.room_id,
                                       user_id=session.user_id))
            session.room_id = session.user_id = None
            return
        self.apply(self.hub.disconnect(session, now=self.now(), entropy=self.entropy), None)

    # -- rooms ---------------------------------------------------------------------------
    def rooms_opened(self, room_id: int) -> None:
        """A room rebuilt from the backplane needs its Trio side too."""
        if room_id not in self.rooms:
            self._open_room(room_id)

    def _open_room(self, room_id: int) -> None:
        send, recv = trio.open_memory_channel[Callable[[], Any]](8)
        runtime = RoomRuntime(send, recv)
        self.rooms[room_id] = runtime
        assert self._rooms_nursery is not None
        self._rooms_nursery.start_soon(self._room_task, runtime)

    async def _room_task(self, runtime: RoomRuntime) -> None:
        with runtime.scope:
            async with trio.open_nursery() as nursery, runtime.jobs_recv:
                async for job in runtime.jobs_recv:
                    nursery.start_soon(job)

    def _close_room(self, action: RoomClosed) -> None:
        if self.cluster is not None:
            self.cluster.room_removed(action.room_id)
        runtime = self.rooms.pop(action.room_id, None)
        if runtime is not None:
            runtime.scope.cancel()
        for user_id in action.user_ids:
            conn = self.conns.pop((action.room_id, user_id), None)
            if conn is not None:
                conn.replaced = True
                conn.close(4000, "room closed", flush=True)
        waiter = self.stats_waiters.pop(action.room_id, None)
        if waiter is not None:
            waiter.set()

    def _start_import(self, action: StartImport, sender: ObserverConnection | None,
                      event: str | None, ref: Ref | None) -> None:
        runtime = self.rooms.get(action.room_id)
        job = partial(self._run_import, action.room_id, action.url, sender, event, ref)
        if runtime is None:
            return
        try:
            runtime.jobs_send.send_nowait(job)
        except trio.WouldBlock:
            pass

    async def _run_import(self, room_id: int, url: str, conn: ObserverConnection | None,
                          event: str | None, ref: Ref | None) -> None:
        result: list[dict[str, str]] | ImportFailure
        try:
            result = await fetch_notion_tasks(url, self.config.notion_base_urls)
        except ImportFailure as exc:
            result = exc.with_traceback(None)  # a value now (no frame cycle)
        if self.cluster is not None:
            outcome = await self.cluster.import_done(room_id, result)
            if outcome is None:
                return
        else:
            outcome = self.hub.import_done(room_id, result, now=self.now(),
                                           entropy=self.entropy)
            self.apply(outcome.actions, None)
        if conn is None:
            return
        if outcome.error is not None:
            conn.send_error(outcome.error.code, outcome.error.message, event, ref)
            if ref is not None:
                conn.send_ack(ref, outcome.error)
        elif ref is not None:
            conn.send_ack(ref, None)

    # -- /ws dialect -------------------------------------------------------------------
    def deliver_signaling(self, frames: list[tuple[int, dict[str, Any]]]) -> None:
        from relay.core.outgoing import encode_json

        for conn_id, frame in frames:
            conn = self.ws_conns.get(conn_id)
            if conn is None and self.cluster is not None:
                self.cluster.ws_stub_frame(conn_id, frame)
            if conn is not None:
                kind = frame.get("type", "unknown")
                self.metrics.message_out("ws", kind)
                if kind in ("ERROR", "INVALID_USERNAME", "INVALID_ROOM_ID"):
                    self.metrics.error(kind)
                conn.push(text_frame(encode_json(frame)))

    def signaling_closed(self, conn: SignalingConnection) -> None:
        if self.cluster is not None:
            self.cluster.ws_closed(conn)
        self.ws_conns.pop(conn.conn_id, None)
        self.deliver_signaling(self.signaling.disconnect(conn.conn_id))

    # -- views for the web port -------------------------------------------------------------
    def health(self) -> tuple[int, dict[str, Any]]:
        rooms = len(self.hub.rooms) + self.signaling.room_count()
        body = {"status": "ok", "rooms": rooms, "connections": len(self.connections)}
        if self.shutting_down:
            body["status"] = "shutting_down"
            return 503, body
        if not self.backplane_ok:
            body["status"] = "backplane_unavailable"
            return 503, body
        return 200, body

    async def wait_stats_change(self, room_id: int) -> None:
        event = self.stats_waiters.get(room_id)
        if event is None:
            event = self.stats_waiters[room_id] = trio.Event()
        await event.wait()

