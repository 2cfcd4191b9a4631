"""Engine.IO long-polling on ``/socket.io/`` (§3.2): sessions, their requests, the upgrade.

A polling session (``relay.transport.polling.PollingSession``) lives here by its sid from
the handshake (``GET`` without ``sid``) until it ends or upgrades; each ``GET``/``POST``
with its sid is served against it, on any kept-alive HTTP connection. A session counts
as one connection of its client IP (§2.1) and of ``/healthz``, and its heartbeat runs on
the node's timing wheel like every connection's.

The upgrade: a WebSocket opened with the session's sid probes (``2probe`` → ``3probe``,
and the pending ``GET`` is answered with ``6``), and on ``5`` the session moves onto it
(``upgrade``): everything not yet delivered goes out on the WebSocket first, and every
registry that knew the session (the room's peers, the backplane's connections) knows the
WebSocket instead, under the same connection id.
"""

from __future__ import annotations

import logging
import math
import socket
from typing import TYPE_CHECKING, Any

import trio

from relay.transport.clients import device_cookie, device_id, new_device_cookie, set_cookie
from relay.transport.http import origin_allowed
from relay.transport.http1 import BodyTooLarge, HttpConnection
from relay.transport.polling import SEPARATOR, PollingSession
from relay.transport.sio_handshake import (
    BAD_REQUEST,
    SID_UNKNOWN,
    SessionState,
    SioQuery,
    parse_query,
    refusal,
)

if TYPE_CHECKING:
    from relay.transport.http import Request

    from .base import Node

log = logging.getLogger("relay.server")

TEXT = ("Content-Type", "text/plain; charset=UTF-8")
JSON = ("Content-Type", "application/json")


class Polling:
    def __init__(self, node: Node) -> None:
        self.node = node
        self.sessions: dict[str, PollingSession] = {}
        #: sids of sessions that moved to a WebSocket, while that WebSocket is open.
        self.upgraded: dict[str, Any] = {}

    def state(self, sid: str | None) -> SessionState:
        if sid is None:
            return SessionState.NONE
        if sid in self.upgraded:
            return SessionState.UPGRADED
        session = self.sessions.get(sid)
        if session is None or session.ended:
            return SessionState.UNKNOWN
        return SessionState.UPGRADING if session.upgrading else SessionState.POLLING

    def cors(self, request: Request) -> tuple[list[tuple[str, str]], bool]:
        """The CORS fields of an answer to ``request``, and whether its Origin is allowed."""
        origin = request.headers.get("origin")
        if not origin_allowed(origin, self.node.config.allowed_origins):
            return [], False
        if origin is None:
            return [], True
        return [("Access-Control-Allow-Origin", origin),
                ("Access-Control-Allow-Credentials", "true"), ("Vary", "Origin")], True

    async def serve(self, http: HttpConnection, request: Request, ip: str, *,
                    forwarded: bool = False) -> bool:
        """One polling request (or its refusal); whether the connection may be reused.

        A request for a session another node holds is served there (``forwarded`` marks
        one served here for another node).
        """
        query = parse_query(request.query)
        fields, origin_ok = self.cors(request)
        state = self.state(query.sid)
        if state is SessionState.UNKNOWN and query.sid and not forwarded:
            node = await self.node.backplane.session_node(query.sid)
            if node is not None:
                return await self._forward(node, http, request, ip)
        refused = refusal(request.method, False, query, polling=self.node.config.sio_polling,
                          state=state, origin_ok=origin_ok)
        if refused is not None:
            status, body = refused
            await http.respond(status, [JSON, *fields], body)
            return False
        if request.method == "OPTIONS":
            asked = request.headers.get("access-control-request-headers")
            fields = [*fields, ("Access-Control-Allow-Methods", "GET, POST, OPTIONS")]
            if asked:
                fields.append(("Access-Control-Allow-Headers", asked))
            return await http.respond(204, fields, b"") and http.keep_alive
        if query.sid is None:
            return await self._open(http, request, ip, fields)
        session = self.sessions[query.sid]
        if request.method == "POST":
            return await self._post(http, session, fields)
        return await self._get(http, session, fields, query)

    async def _forward(self, node: str, http: HttpConnection, request: Request, ip: str
                       ) -> bool:
        body = b""
        if request.method == "POST":
            try:
                body = await http.body(self.node.settings.max_message_size) or b""
            except BodyTooLarge:
                # Refused here; the session's node ends it when its client stops polling.
                fields, _ = self.cors(request)
                await http.respond(413, [JSON, *fields], b'{"error":"payload_too_large"}',
                                   close=True)
                return False

        async def write(status: int, headers: list[tuple[str, str]], answer: bytes) -> bool:
            return await http.respond(status, headers, answer)

        if not await self.node.backplane.forward_http(node, request, body, ip, write):
            fields, _ = self.cors(request)
            await http.respond(400, [JSON, *fields], SID_UNKNOWN)
            return False
        return http.keep_alive

    async def _open(self, http: HttpConnection, request: Request, ip: str,
                    fields: list[tuple[str, str]]) -> bool:
        node = self.node
        cap = node.config.max_connections_per_ip
        if cap and node.listener.per_ip.get(ip, 0) >= cap:
            await http.respond(429, [JSON, *fields], b'{"error":"too_many_connections"}')
            return False
        codec = node.codec_for("socketio")
        device = issued = None
        if node.config.device_cookie:
            cookie = device_cookie(request.headers)
            if cookie is None:
                cookie = issued = new_device_cookie()
                fields = [*fields, set_cookie(cookie, getattr(request, "https", False))]
            device = device_id(cookie)
        session = PollingSession(node, node.settings, ip, codec, device)
        # (the upgrade sets it again for a client that did not keep it, §4.6)
        session.issued_cookie = issued
        self._register(session)
        try:
            await node.backplane.register_session(codec.sid)
        except Exception:  # (the backplane is unavailable: then only this node serves it)
            log.warning("could not register polling session; it is served by this node only")
        packet = codec.open_packet(upgrades=True)
        written = await http.respond(200, [TEXT, *fields], _payload(packet))
        if not written:
            session.close(1006, "the handshake could not be answered")
        return written and http.keep_alive

    def _register(self, session: PollingSession) -> None:
        node = self.node
        session.conn_id = node.new_conn_id()
        self.sessions[session.codec.sid] = session
        node.connections.add(session)
        per_ip = node.listener.per_ip
        per_ip[session.ip] = per_ip.get(session.ip, 0) + 1
        node.heartbeat_wheel.add(session, session.heartbeat_due())
        node.metrics.inc("observer_connections_opened", "socketio")
        node.backplane.connection_opened(session)
        log.info("connection opened", extra={"conn": session.conn_id, "endpoint": "socketio",
                                             "transport": "polling", "ip": session.ip})

    async def _post(self, http: HttpConnection, session: PollingSession,
                    fields: list[tuple[str, str]]) -> bool:
        try:
            body = await http.body(self.node.settings.max_message_size)
        except BodyTooLarge:
            await http.respond(413, [JSON, *fields], b'{"error":"payload_too_large"}',
                               close=True)
            session.close(1009, "message too big")
            return False
        if body is None:
            return False
        if not await session.post(body):
            await http.respond(400, [JSON, *fields], BAD_REQUEST)
            return False
        return await http.respond(200, [TEXT, *fields], b"ok") and http.keep_alive

    async def _get(self, http: HttpConnection, session: PollingSession,
                   fields: list[tuple[str, str]], query: SioQuery) -> bool:
        packets: list[bytes] | None = None
        async with trio.open_nursery() as nursery:

            async def watch_peer() -> None:
                """A client that gives up its long-poll (closes the connection) must not
                take packets with it: stop waiting as soon as it is gone."""
                if await _peer_gone(http.stream):
                    nursery.cancel_scope.cancel()

            if http.stream is not None:  # (None: forwarded; the client's node watches)
                nursery.start_soon(watch_peer)
            packets = await session.poll(self.node.settings.max_message_size)
            nursery.cancel_scope.cancel()
        if packets is None:  # an overlapping GET: the session ended (§3.2)
            await http.respond(400, [JSON, *fields], BAD_REQUEST)
            return False
        written = await http.respond(200, [TEXT, *fields], SEPARATOR.join(packets))
        session.answered(packets, written)
        return written and http.keep_alive

    # -- the upgrade ----------------------------------------------------------------------
    def upgrade(self, session: PollingSession, ws: Any) -> None:
        """``ws`` received ``5``: it is the session from now on (see the module docstring)."""
        node = self.node
        old_id = ws.conn_id
        session.take_over_by(ws)
        node.rooms.replace_peer(session, ws)
        node.chat.replaced(session, ws)
        ws.conn_id = session.conn_id
        node.backplane.connection_replaced(old_id, session, ws)
        self._unregister(session)
        self.upgraded[session.codec.sid] = ws
        ws.polling_sid = session.codec.sid
        # The WebSocket carries the session's heartbeat from here (it had none while
        # probing): without this the client would never be pinged again.
        node.heartbeat_wheel.add(ws, ws.heartbeat_due())
        ws.flush()

    def ended(self, conn: Any) -> None:
        """A session ended, or the WebSocket it upgraded to closed."""
        if isinstance(conn, PollingSession):
            if self.sessions.get(conn.codec.sid) is conn:
                self._unregister(conn)
            return
        sid = getattr(conn, "polling_sid", None)
        if sid is not None and self.upgraded.get(sid) is conn:
            del self.upgraded[sid]
            self.node.backplane.forget_session(sid)

    def _unregister(self, session: PollingSession) -> None:
        node = self.node
        if self.sessions.pop(session.codec.sid, None) is not None and not session.upgraded:
            node.backplane.forget_session(session.codec.sid)
        if session in node.connections:
            node.connections.discard(session)
            per_ip = node.listener.per_ip
            left = per_ip.get(session.ip, 1) - 1
            if left > 0:
                per_ip[session.ip] = left
            else:
                per_ip.pop(session.ip, None)
            node.heartbeat_wheel.discard(session)
            if session.upgraded:
                log.info("connection upgraded", extra={
                    "conn": session.conn_id, "endpoint": "socketio", "transport": "websocket",
                    "ip": session.ip})
            else:
                log.info("connection closed", extra={
                    "conn": session.conn_id, "endpoint": "socketio", "transport": "polling",
                    "ip": session.ip, "code": session.close_code or 1006,
                    "reason": session.close_reason,
                    "duration": round(trio.current_time() - session.opened, 3)})
                reason = "normal" if session.close_code in (None, 1000) else "protocol"
                node.metrics.inc("observer_disconnects", _reason(session.close_code, reason))

    def shutdown(self) -> None:
        for session in list(self.sessions.values()):
            session.close(1001, "server shutting down")


def _payload(frame: bytes) -> bytes:
    from relay.codecs.wsframe import ws_payloads

    return SEPARATOR.join(ws_payloads(frame))


def _reason(code: int | None, default: str) -> str:
    from relay.transport.reading import CLOSE_REASONS

    return CLOSE_REASONS.get(code or 1000, default)


async def _peer_gone(stream: trio.SocketStream) -> bool:
    """Wait until the peer closes its side (True) or sends more (False: a pipelined
    request, answered later with ``Connection: close``)."""
    sock = stream.socket
    try:
        await trio.lowlevel.wait_readable(sock)
        data = await sock.recv(1, socket.MSG_PEEK)  # leave it for the HTTP parser
    except (OSError, trio.ClosedResourceError, trio.BusyResourceError):
        return True
    if data:
        await trio.sleep(math.inf)  # more requests: not gone; keep waiting with the poll
    return not data
