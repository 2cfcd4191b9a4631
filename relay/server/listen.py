"""Where a byte enters: the relay port's accept loop, request routing and connections.

Every TCP connection gets its own task in the connections nursery, and that task is a
failure boundary: whatever the peer does (reset mid-handshake, garbage, silence) and
whatever fails while serving it ends there — logged once, that socket closed, nothing else
touched. An accepted WebSocket becomes a connection object (``relay.transport``) that the
node serves until it ends.
"""

from __future__ import annotations

import errno
import functools
import logging
import math
import socket
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl

import msgspec
import trio

from relay.codecs.wsframe import accept_key
from relay.ports import Ref
from relay.spaces.names import space_from_query
from relay.transport.chatroom import ChatroomConnection
from relay.transport.clients import (
    client_address,
    device_cookie,
    device_id,
    new_device_cookie,
    parse_networks,
    set_cookie,
)
from relay.transport.connection import WebSocketConnection
from relay.transport.http import Request, origin_allowed, upgrade_refusal
from relay.transport.http1 import HttpConnection
from relay.transport.observer import ObserverConnection
from relay.transport.reading import CLOSE_REASONS
from relay.transport.signaling import SignalingConnection
from relay.transport.sio_handshake import SessionState, parse_query
from relay.transport.sio_handshake import refusal as sio_refusal

if TYPE_CHECKING:
    from .base import Node

log = logging.getLogger("relay.server")

#: accept() failures that mean "out of descriptors or memory for now": back off, retry.
ACCEPT_CAPACITY_ERRNOS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
ACCEPT_BACKOFF_MAX = 1.0

OBSERVER_PATHS = frozenset({"/observer", "/observer/"})
SIO_PATHS = frozenset({"/socket.io", "/socket.io/"})
WS_PATHS = frozenset({"/ws", "/ws/"})
CHATROOM_PATHS = frozenset({"/chatroom", "/chatroom/", "/"})
JSON = ("Content-Type", "application/json")

#: An accepted upgrade: the connection to serve, and what to release when it ends.
Accepted = tuple[WebSocketConnection, Callable[[], None] | None]


class Listener:
    def __init__(self, node: Node) -> None:
        self.node = node
        self.per_ip: dict[str, int] = {}  # open connections per client IP
        self.trusted = parse_networks(node.config.trusted_proxies)

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

    async def handle_tcp(self, stream: trio.SocketStream, received: bytes = b"") -> None:
        """One TCP connection, from its first byte to its close: a failure boundary.
        ``received``: bytes another node of this host read from it before handing it over."""
        try:
            ip = sys.intern(stream.socket.getpeername()[0])  # one string per client address
        except OSError:
            ip = "?"
        try:
            await self._route(stream, ip, received)
        except* (trio.BrokenResourceError, trio.ClosedResourceError, OSError):
            pass  # the peer went away (a reset during the handshake is ordinary)
        except* Exception:
            log.exception("serving a request from %s failed", ip)
        finally:
            with trio.move_on_after(0.5) as scope:
                scope.shield = True
                await stream.aclose()

    async def _route(self, stream: trio.SocketStream, peer: str, received: bytes = b""
                     ) -> None:
        """HTTP/1.1 requests on one connection (kept alive between Engine.IO polls) until it
        closes or upgrades to a WebSocket."""
        node = self.node
        http = HttpConnection(stream, received)
        while True:
            request = await http.next_request()
            if request is None:
                return
            ip, request.https = client_address(peer, request.headers, self.trusted)
            ip = sys.intern(ip)
            if node.shutting_down:
                await http.respond(503, [JSON], b'{"status":"shutting_down"}', close=True)
                return
            path = request.path
            if request.asks_upgrade:
                accepted = await self._upgrade(http, request, ip)
                # The handshake (h11's state and buffers, the request head) is not kept
                # for the connection's lifetime: a few KiB per idle connection (W3).
                del request, http
                if accepted is not None:
                    conn, release = accepted
                    try:
                        await self.serve(conn)
                    finally:
                        if release is not None:
                            release()
                return
            if path in SIO_PATHS:
                if not await node.polling.serve(http, request, ip):
                    return
            elif path == "/healthz" and request.method in ("GET", "HEAD"):
                status, body = node.health()
                if not await http.respond(status, [JSON], msgspec.json.encode(body),
                                          head=request.method == "HEAD"):
                    return
            else:  # a refusal ends the connection (only polling needs it kept alive)
                await http.respond(404, [JSON], b'{"error":"not_found"}', close=True)
                return
            if not http.keep_alive:
                return

    async def _upgrade(self, http: HttpConnection, request: Request, ip: str
                       ) -> Accepted | None:
        """Answer an upgrade request: the connection to serve (and what to release when it
        ends), or None once it was refused, handed to another node or the peer went away."""
        node = self.node
        path = request.path
        chatroom = path in CHATROOM_PATHS and node.config.chatroom
        if (path not in OBSERVER_PATHS and path not in SIO_PATHS and path not in WS_PATHS
                and not chatroom):
            await http.respond(404, [JSON], b'{"error":"not_found"}', close=True)
            return None
        origin_ok = origin_allowed(request.headers.get("origin"), node.config.allowed_origins)
        session = None
        if path in SIO_PATHS:
            query = parse_query(request.query)
            state = node.polling.state(query.sid)
            if state is SessionState.UNKNOWN and query.sid and origin_ok:
                # §3.2 across nodes: the session lives on another node. Of this host, that
                # node takes the socket and answers the upgrade itself; otherwise (another
                # host) the upgrade is refused below and the client keeps polling.
                owner = await node.backplane.session_node(query.sid)
                if owner is not None and await node.backplane.give_upgrade(
                        owner, http.stream.socket.fileno(), request.raw + request.trailing):
                    return None
            refused = sio_refusal(request.method, True, query, polling=True, state=state,
                                  origin_ok=origin_ok)
            if refused is not None:
                await http.respond(refused[0], [JSON], refused[1], close=True)
                return None
            if query.sid is not None:
                session = node.polling.sessions[query.sid]
        elif not origin_ok:
            await http.respond(403, [JSON], b'{"error":"origin_not_allowed"}', close=True)
            return None
        refusal = upgrade_refusal(request)  # §2.1: 400, or 426 + Sec-WebSocket-Version: 13
        if refusal is not None:
            status, fields, body = refusal
            await http.respond(status, [JSON, *fields], body, close=True)
            return None
        key = request.headers["sec-websocket-key"]  # one canonical base64 key of 16 bytes
        space = shape = None
        if chatroom:
            params = dict(parse_qsl(request.query, keep_blank_values=True))
            space = space_from_query(params.get("space"))
            refused = node.spaces.refusal(space, params.get("key"))
            if refused is not None:
                await http.respond(refused[0], [JSON], refused[1], close=True)
                return None
            shape = "full" if params.get("v") == "2" else "seed"
        cap = node.config.max_connections_per_ip
        if cap and self.per_ip.get(ip, 0) >= cap and session is None:
            if space is not None:
                node.spaces.release(space)
            await http.respond(429, [JSON], b'{"error":"too_many_connections"}', close=True)
            return None
        fields = [("Upgrade", "websocket"), ("Connection", "Upgrade"),
                  ("Sec-WebSocket-Accept", accept_key(key))]
        device = None
        if (path not in WS_PATHS and not chatroom and session is None
                and node.config.device_cookie):  # (§4.6: /socket.io/ and /observer only)
            cookie = device_cookie(request.headers)
            if cookie is None:
                cookie = new_device_cookie()
                fields.append(set_cookie(cookie, request.https))
            device = device_id(cookie)
        elif (session is not None and session.issued_cookie is not None
              and device_cookie(request.headers) is None):
            # An upgrade of a polling session (§4.6: every upgrade on /socket.io/ whose
            # request carries no cookie): the cookie of the session's device, again.
            fields.append(set_cookie(session.issued_cookie, request.https))
        if chatroom:
            assert space is not None and shape is not None
            # The space is reserved from its refusal check until the connection ends.
            release = functools.partial(node.spaces.release, space)
            try:
                trailing = await http.switch(fields)
                if trailing is None:
                    release()
                    return None
                return ChatroomConnection(node, node.settings, http.stream, ip, trailing,
                                          space, shape), release
            except BaseException:
                release()
                raise
        trailing = await http.switch(fields)
        if trailing is None:
            return None
        conn: WebSocketConnection
        if path in WS_PATHS:
            signaling = SignalingConnection(node, node.settings, http.stream, ip, trailing,
                                            node.signaling.connect(ip))
            node.signaling_conns[signaling.signaling_id] = signaling
            conn = signaling
        else:
            endpoint = "socketio" if path in SIO_PATHS else "observer"
            observer = ObserverConnection(node, node.settings, http.stream, ip, trailing,
                                          node.codec_for(endpoint), device)
            if session is not None:
                observer.probe_for(session)
            conn = observer
        return conn, None

    async def adopt_http(self, fd: int, received: bytes) -> None:
        """Serve a socket another node of this host handed over with a request it read
        (an upgrade for one of our polling sessions), as if accepted here."""
        raw = socket.socket(fileno=fd)
        raw.setblocking(False)
        await self.handle_tcp(trio.SocketStream(trio.socket.from_stdlib_socket(raw)), received)

    async def adopt(self, fd: int, endpoint: str, session: dict[str, Any], event: str,
                    data: Any, ref: Ref | None) -> None:
        """Serve a client socket another node of this host handed over (``SCM_RIGHTS``),
        starting with the joining event it brought. The address is read from the socket
        unless the giver (which saw the request's forwarding headers) says otherwise."""
        raw = socket.socket(fileno=fd)
        raw.setblocking(False)
        stream = trio.SocketStream(trio.socket.from_stdlib_socket(raw))
        ip = session.get("ip") or "?"
        if ip == "?":
            try:
                ip = raw.getpeername()[0]
            except OSError:
                pass
        ip = sys.intern(ip)
        codec: Any = self.node.codec_for(endpoint)
        if session.get("sid") is not None:
            codec.sid = session["sid"]
            codec.socket_sid = session["socket_sid"]
        conn = ObserverConnection(self.node, self.node.settings, stream, ip, b"", codec,
                                  session.get("device"))
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
        opened = trio.current_time()
        log.info("connection opened", extra={"conn": conn.conn_id, "endpoint": conn.endpoint,
                                             "transport": "websocket", "ip": conn.ip})
        try:
            await conn.run()
        finally:
            log.info("connection closed", extra={
                "conn": conn.conn_id, "endpoint": conn.endpoint,
                "transport": "websocket", "ip": conn.ip, "code": conn.close_code or 1006,
                "reason": conn.close_reason, "duration": round(trio.current_time() - opened, 3)})
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

