"""Where a byte enters: the relay port's accept loop, request routing and connections.

Every TCP connection gets its own task in the connections nursery, and that task is a
failure boundary: whatever the peer does (reset mid-handshake, garbage, silence) and
whatever fails while serving it ends there — logged once, that socket closed, nothing else
touched. An accepted WebSocket becomes a connection object (``relay.transport``) that the
node serves until it ends.
"""

from __future__ import annotations

import errno
import logging
import math
import socket
import sys
from typing import TYPE_CHECKING, Any

import trio

from relay.codecs.wsframe import accept_key
from relay.ports import Ref
from relay.transport.connection import WebSocketConnection
from relay.transport.http import (
    origin_allowed,
    read_request,
    send_answer,
    send_body,
    send_json,
    send_switching,
    upgrade_refusal,
)
from relay.transport.observer import ObserverConnection
from relay.transport.reading import CLOSE_REASONS
from relay.transport.signaling import SignalingConnection
from relay.transport.sio_handshake import check_sio_request

if TYPE_CHECKING:
    from .base import Node

log = logging.getLogger("relay.server")

#: accept() failures that mean "out of descriptors or memory for now": back off, retry.
ACCEPT_CAPACITY_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
ACCEPT_BACKOFF_MAX = 1.0

OBSERVER_PATHS = frozenset({"/observer", "/observer/"})
SIO_PATHS = frozenset({"/socket.io", "/socket.io/"})
WS_PATHS = frozenset({"/ws", "/ws/"})


class Listener:
    def __init__(self, node: Node) -> None:
        self.node = node
        self.per_ip: dict[str, int] = {}  # open WebSocket connections per client IP

    async def accept_loop(self, listener: trio.SocketListener, nursery: trio.Nursery) -> None:
        """Accept connections for as long as the node runs.

        Running out of descriptors (EMFILE) or memory for sockets is a state, not a
        failure: back off (doubling up to a second) and retry, with one log line per
        second at most instead of a traceback per attempt.
        """
        delay = 0.01
        last_log = -math.inf
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
            nursery.start_soon(self.handle_tcp, stream)

    async def handle_tcp(self, stream: trio.SocketStream) -> None:
        """One TCP connection, from its first byte to its close: a failure boundary."""
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
        node = self.node
        request = await read_request(stream)
        if request is None:
            return
        path = request.path
        if node.shutting_down:
            await send_json(stream, 503, {"status": "shutting_down"})
            return
        if not request.asks_upgrade:
            if path == "/healthz" and request.method in ("GET", "HEAD"):
                status, body = node.health()
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
        if not origin_allowed(request.headers.get("origin"), node.config.allowed_origins):
            await send_json(stream, 403, {"error": "origin_not_allowed"})
            return
        if path in SIO_PATHS:
            answer = check_sio_request(True, request.query)
            if answer is not None:
                await send_body(stream, *answer)
                return
        refusal = upgrade_refusal(request)  # §2.1: 400, or 426 + Sec-WebSocket-Version: 13
        if refusal is not None:
            await send_answer(stream, *refusal)
            return
        key = request.headers["sec-websocket-key"]  # one canonical base64 key of 16 bytes
        cap = node.config.max_connections_per_ip
        if cap and self.per_ip.get(ip, 0) >= cap:
            await send_json(stream, 429, {"error": "too_many_connections"})
            return
        await send_switching(stream, accept_key(key))
        conn: WebSocketConnection
        if path in WS_PATHS:
            signaling = SignalingConnection(node, node.settings, stream, ip, request.trailing,
                                            node.signaling.connect())
            node.signaling_conns[signaling.signaling_id] = signaling
            conn = signaling
        else:
            endpoint = "socketio" if path in SIO_PATHS else "observer"
            conn = ObserverConnection(node, node.settings, stream, ip, request.trailing,
                                      node.codec_for(endpoint))
        del request  # the handshake's headers are not kept for the connection's lifetime
        await self.serve(conn)

    async def adopt(self, fd: int, endpoint: str, session: dict[str, Any], event: str,
                    data: Any, ref: Ref | None) -> None:
        """Serve a client socket another node of this host handed over (``SCM_RIGHTS``),
        starting with the joining event it brought; its address is read from the socket."""
        raw = socket.socket(fileno=fd)
        raw.setblocking(False)
        stream = trio.SocketStream(trio.socket.from_stdlib_socket(raw))
        try:
            ip = sys.intern(raw.getpeername()[0])
        except OSError:
            ip = "?"
        codec: Any = self.node.codec_for(endpoint)
        if session.get("sid") is not None:
            codec.sid = session["sid"]
            codec.socket_sid = session["socket_sid"]
        conn = ObserverConnection(self.node, self.node.settings, stream, ip, b"", codec)
        conn.adopt(event, data, ref)
        await self.serve(conn)

    async def serve(self, conn: WebSocketConnection) -> None:
        """Serve ``conn`` (accepted here or handed over by another node) until it ends."""
        node = self.node
        conn.conn_id = node.new_conn_id()
        node.connections.add(conn)
        per_ip = self.per_ip
        per_ip[conn.ip] = per_ip.get(conn.ip, 0) + 1
        node.heartbeat_wheel.add(conn, conn.heartbeat_due())
        node.metrics.inc("observer_connections_opened", conn.endpoint)
        node.backplane.connection_opened(conn)
        try:
            await conn.run()
        finally:
            node.connections.discard(conn)
            left = per_ip.get(conn.ip, 1) - 1
            if left > 0:
                per_ip[conn.ip] = left
            else:
                per_ip.pop(conn.ip, None)
            node.heartbeat_wheel.discard(conn)
            code = conn.close_code if conn.close_code is not None else 1006
            reason = "handed_off" if conn.handed_off else CLOSE_REASONS.get(code, "normal")
            node.metrics.inc("observer_disconnects", reason)

