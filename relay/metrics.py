"""The relay's counters, exported in Prometheus text format by the web port (§8.5).

Hot-path counting is a dict increment; the Prometheus families are built only when
``/metrics`` is scraped (a custom collector), so metrics cost almost nothing per message.
One registry per server, so several servers in one test process never share counters.
Gauges (connections, rooms, participants) are read from live state at scrape time.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric

from relay.core.events import EVENT_TABLE

ENDPOINTS = ("observer", "socketio", "ws", "chatroom")
WS_TYPES = frozenset({
    "CREATE_ROOM", "JOIN_ROOM", "LEAVE_ROOM", "REQUEST_SHARING", "ALLOW_SHARING", "STOP_SHARING",
    "RCP_OFFER", "RCP_ANSWER", "ICE_CANDIDATE", "ROOM_CREATED", "ROOM_JOINED", "USER_JOINED",
    "USER_LEFT", "HOST_LEFT", "LEFT_ROOM", "INVALID_USERNAME", "INVALID_ROOM_ID", "ERROR",
})
SERVER_EVENTS = frozenset({
    "ack", "error", "room/created", "room/resync", "room/update", "room/kicked", "room/closed",
    "message", "message/user", "steps/load", "log", "alerts", "alert",
})

# name -> (help, label names)
COUNTERS: dict[str, tuple[str, tuple[str, ...]]] = {
    "observer_connections_opened": ("WebSocket connections opened", ("endpoint",)),
    "observer_messages_in": ("WebSocket messages received", ("endpoint", "event")),
    "observer_messages_out": ("WebSocket messages sent", ("endpoint", "event")),
    "observer_bytes_in": ("Bytes received in WebSocket messages", ("endpoint",)),
    "observer_bytes_out": ("Bytes written to WebSocket connections", ("endpoint",)),
    "observer_errors": ("Error answers sent", ("code",)),
    "observer_rate_limited_frames": ("Frames dropped by the rate limit", ("endpoint",)),
    "observer_disconnects": ("WebSocket connections closed", ("reason",)),
    "observer_resumes": ("Attaches by resume result", ("result",)),
    "observer_replayed_events": ("Events replayed on resume", ()),
    "observer_imports": ("Steps imports", ("source", "result")),
    "observer_service_requests": ("ChatRoom service requests by result", ("result",)),
}
#: ChatRoom frame types (§9.2), client and server.
#: The chat app's events (§9.10), both directions (§9.11: the ``event`` label gains them).
CHAT_APP_EVENTS = frozenset({
    "login", "message", "create_group", "join_group", "leave_group", "logout",
    "login-response", "contact", "update_group", "delete_group",
})
CHATROOM_TYPES = frozenset({
    "hello", "subscribe", "unsubscribe", "update", "reject_update", "register_service",
    "unregister_service", "request", "response", "error",
})


def event_label(event: str) -> str:
    """A documented event name or ``/ws`` type, else ``unknown`` (bounded label set)."""
    if (event in EVENT_TABLE or event in SERVER_EVENTS or event in WS_TYPES
            or event in CHATROOM_TYPES or event in CHAT_APP_EVENTS):
        return event
    return "unknown"


class Metrics:
    def __init__(self, gauges: Callable[[], dict[str, dict[tuple[str, ...], float]]]
                 | None = None) -> None:
        self.counts: dict[tuple[str, tuple[str, ...]], float] = defaultdict(float)
        # The counter keys of messages out, by endpoint and event: a broadcast counts one
        # message per recipient, so the label and key are not rebuilt each time.
        self._out_keys: dict[str, dict[str, tuple[str, tuple[str, ...]]]] = defaultdict(dict)
        self._gauges = gauges
        self.registry = CollectorRegistry()
        self.registry.register(self)  # type: ignore[arg-type]
        for endpoint in ENDPOINTS:
            self.counts[("observer_connections_opened", (endpoint,))] += 0

    def inc(self, name: str, *labels: str, amount: float = 1) -> None:
        self.counts[(name, labels)] += amount

    # Shorthands for the hot paths.
    def message_in(self, endpoint: str, event: str) -> None:
        self.counts[("observer_messages_in", (endpoint, event_label(event)))] += 1

    def message_out(self, endpoint: str, event: str) -> None:
        keys = self._out_keys[endpoint]
        key = keys.get(event)
        if key is None:
            key = keys[event] = ("observer_messages_out", (endpoint, event_label(event)))
        self.counts[key] += 1

    def bytes_in(self, endpoint: str, n: int) -> None:
        self.counts[("observer_bytes_in", (endpoint,))] += n

    def bytes_out(self, endpoint: str, n: int) -> None:
        self.counts[("observer_bytes_out", (endpoint,))] += n

    def error(self, code: str) -> None:
        self.counts[("observer_errors", (code,))] += 1

    def rate_limited(self, endpoint: str) -> None:
        self.counts[("observer_rate_limited_frames", (endpoint,))] += 1

    def value(self, name: str, *labels: str) -> float:
        return self.counts.get((name, labels), 0)

    # -- prometheus_client collector protocol --------------------------------------
    def collect(self) -> Iterator[Metric]:
        families: dict[str, CounterMetricFamily] = {}
        for name, (doc, label_names) in COUNTERS.items():
            families[name] = CounterMetricFamily(name, doc, labels=list(label_names))
        for (name, labels), value in sorted(self.counts.items()):
            families[name].add_metric(list(labels), value)
        yield from families.values()
        if self._gauges is None:
            return
        docs = {"observer_connections": ("Open WebSocket connections", ["endpoint"]),
                "observer_rooms": ("Rooms", ["kind"]),
                "observer_participants": ("Observer participants", ["status"]),
                "observer_chat_users": ("Users logged in to the chat app", [])}
        for name, samples in self._gauges().items():
            doc, names = docs[name]
            gauge = GaugeMetricFamily(name, doc, labels=names)
            for labels, value in samples.items():
                gauge.add_metric(list(labels), value)
            yield gauge

    def render(self) -> bytes:
        return generate_latest(self.registry)

    def describe(self) -> list[Any]:
        return []
