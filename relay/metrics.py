"""The relay's counters, exported in Prometheus format by the web port (§8.5).

One registry per server, so several servers in one test process never share counters.
Gauges (connections, rooms, participants) are read from live state at scrape time.
"""

from __future__ import annotations

from collections.abc import Callable

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from relay.core.registry import EVENTS

ENDPOINTS = ("observer", "socketio", "ws")
WS_TYPES = frozenset({
    "CREATE_ROOM", "JOIN_ROOM", "LEAVE_ROOM", "REQUEST_SHARING", "ALLOW_SHARING", "STOP_SHARING",
    "RCP_OFFER", "RCP_ANSWER", "ICE_CANDIDATE", "ROOM_CREATED", "ROOM_JOINED", "USER_JOINED",
    "USER_LEFT", "HOST_LEFT", "LEFT_ROOM", "INVALID_USERNAME", "INVALID_ROOM_ID", "ERROR",
})
SERVER_EVENTS = frozenset({
    "ack", "error", "room/created", "room/resync", "room/update", "room/kicked", "room/closed",
    "message", "message/user", "steps/load", "log", "alerts", "alert",
})


def _label(event: str) -> str:
    if event in EVENTS or event in SERVER_EVENTS or event in WS_TYPES:
        return event
    return "unknown"


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        r = self.registry
        self.connections = Gauge("observer_connections", "Open WebSocket connections",
                                 ["endpoint"], registry=r)
        self.opened = Counter("observer_connections_opened", "WebSocket connections opened",
                              ["endpoint"], registry=r)
        self.rooms = Gauge("observer_rooms", "Rooms", ["kind"], registry=r)
        self.participants = Gauge("observer_participants", "Observer participants",
                                  ["status"], registry=r)
        self.messages_in = Counter("observer_messages_in", "Messages received",
                                   ["endpoint", "event"], registry=r)
        self.messages_out = Counter("observer_messages_out", "Messages sent",
                                    ["endpoint", "event"], registry=r)
        self.bytes_in_c = Counter("observer_bytes_in", "Bytes received", ["endpoint"], registry=r)
        self.bytes_out_c = Counter("observer_bytes_out", "Bytes sent", ["endpoint"], registry=r)
        self.errors = Counter("observer_errors", "Errors sent", ["code"], registry=r)
        self.rate_limited_c = Counter("observer_rate_limited_frames", "Frames dropped by the "
                                      "rate limit", ["endpoint"], registry=r)
        self.disconnects = Counter("observer_disconnects", "Connections closed", ["reason"],
                                   registry=r)
        self.resumes = Counter("observer_resumes", "Attaches by resume result", ["result"],
                               registry=r)
        self.replayed = Counter("observer_replayed_events", "Events replayed on resume",
                                registry=r)
        self.imports = Counter("observer_imports", "Steps imports", ["source", "result"],
                               registry=r)
        for endpoint in ENDPOINTS:
            self.connections.labels(endpoint)
            self.opened.labels(endpoint)
        self._in_cache: dict[tuple[str, str], Callable[[], None]] = {}
        self._out_cache: dict[tuple[str, str], Callable[[], None]] = {}

    def message_in(self, endpoint: str, event: str) -> None:
        key = (endpoint, event)
        inc = self._in_cache.get(key)
        if inc is None:
            inc = self._in_cache[key] = self.messages_in.labels(endpoint, _label(event)).inc
        inc()

    def message_out(self, endpoint: str, event: str) -> None:
        key = (endpoint, event)
        inc = self._out_cache.get(key)
        if inc is None:
            inc = self._out_cache[key] = self.messages_out.labels(endpoint, _label(event)).inc
        inc()

    def bytes_in(self, endpoint: str, n: int) -> None:
        self.bytes_in_c.labels(endpoint).inc(n)

    def bytes_out(self, endpoint: str, n: int) -> None:
        self.bytes_out_c.labels(endpoint).inc(n)

    def error(self, code: str) -> None:
        self.errors.labels(code).inc()

    def rate_limited(self, endpoint: str) -> None:
        self.rate_limited_c.labels(endpoint).inc()

    def render(self) -> bytes:
        return generate_latest(self.registry)
