"""One ChatRoom space: the sans-IO state machine the shell drives (§9.1–§9.8).

Every entry point takes the time (``now``, wall-clock seconds) and, where ids may be drawn,
an :class:`~relay.spaces.entropy.Entropy`; it returns the actions to carry out, in order.
Nothing here reads a clock, draws randomness or does I/O, so replaying the same calls with
the same times and entropy rebuilds the same state, ids and frames.

Due timeouts are expired at the start of every call that has entropy (``connect``,
``receive``, ``disconnect``, ``tick``), so the outcome never depends on how promptly the
shell calls :meth:`Space.tick`: a response that arrives after its request's deadline is
``unknown_request`` even if the tick has not run yet.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Mapping
from types import MappingProxyType
from typing import Any, Final

from . import frames, inspector, service_events, topic_events
from .actions import (
    ERRORS_TOTAL,
    MESSAGES_IN_TOTAL,
    SERVICE_REQUESTS_TOTAL,
    Action,
    Counted,
    Deliver,
)
from .entropy import Entropy
from .frames import ServerFrame, Shape
from .names import SERVER_STATUS, client_message_topic
from .parsing import FrameError, echoes, message_type_of, parse
from .settings import SpaceSettings
from .state import Client, Pending, RequestId, Turn
from .strings import INSERT, Edit
from .topics import Prepared, Topic

# The handler modules type their ``space`` parameter as a ``SpaceSurface`` (surface.py), a
# Protocol that ``Space`` satisfies, so they need not import this module.
Handler = Callable[["Space", Turn, Client, dict[str, Any]], None]


class Space:
    """Topics, services and client ids of one space (one instance per space per node)."""

    def __init__(self, name: str, settings: SpaceSettings | None = None) -> None:
        self.name = name
        self.settings = settings if settings is not None else SpaceSettings()
        self.clients: dict[int, Client] = {}
        self.topics: dict[str, Topic] = {}
        self.services: dict[str, int] = {}
        """Service name → provider client id."""
        self.pending: dict[str, Pending] = {}
        self.regular_topics = 0
        self.space_bytes = 0
        """Total size of the non-special topics' values (the 16 MiB limit)."""
        self.waiting_bytes = 0
        """Compact JSON bytes of the changes queued behind validations, all topics."""
        self.history_chars = 0
        """Code points of all insertions kept in string histories (``_remember``)."""
        self.version = 0
        """Changes whenever :meth:`inspect` would (the inspector's SSE stream polls it)."""
        self._next_id = 1
        self._deadlines: list[tuple[float, int, str]] = []
        self._deadline_seq = 0
        self._new_topic(SERVER_STATUS, "string", special=True)

    # -- public API -------------------------------------------------------------------------

    @property
    def is_empty(self) -> bool:
        """No connection: the shell starts the idle-expiry clock."""
        return not self.clients

    @property
    def connection_count(self) -> int:
        return len(self.clients)

    def connect(self, shape: Shape = "seed", *, now: float,
                entropy: Entropy) -> tuple[int, list[Action]]:
        """A new connection: its client id and the actions (``hello`` first)."""
        turn = Turn(now, entropy)
        self._expire(turn)
        cid = self._next_id
        self._next_id += 1
        self.clients[cid] = Client(cid, shape)
        self._new_topic(client_message_topic(cid), "string", special=True)
        turn.send((cid,), frames.hello(cid, self.name))
        self.status(turn, f"client {cid} connected")
        return cid, turn.actions

    def receive(self, client_id: int, text: str | bytes, *, now: float,
                entropy: Entropy) -> list[Action]:
        """Handle one text message of a connection (unknown ids are ignored)."""
        client = self.clients.get(client_id)
        if client is None:
            return []
        turn = Turn(now, entropy)
        self._expire(turn)
        parsed = parse(text, self.settings.max_nesting)
        if isinstance(parsed, FrameError):
            turn.count(MESSAGES_IN_TOTAL, "unknown")
            self._error_frame(turn, client_id, parsed.code, parsed.message, parsed.message_type,
                              parsed.echoes)
        else:
            turn.count(MESSAGES_IN_TOTAL, parsed.type)
            _HANDLERS[parsed.type](self, turn, client, parsed.body)
        return turn.actions

    def binary(self, client_id: int) -> list[Action]:
        """A binary message: ``bad_frame`` (§9.2)."""
        turn = Turn(0.0, None)
        if client_id in self.clients:
            turn.count(MESSAGES_IN_TOTAL, "unknown")
            self._error_frame(turn, client_id, "bad_frame", "binary messages are not frames",
                              None, None)
        return turn.actions

    def rate_limited(self, client_id: int, text: str | bytes | None = None) -> list[Action]:
        """The ``rate_limited`` error for a dropped message (the shell decides when, at most
        once per second); ``message_type`` is read from ``text`` if it is JSON."""
        turn = Turn(0.0, None)
        if client_id in self.clients:
            mtype = message_type_of(text) if text is not None else None
            self._error_frame(turn, client_id, "rate_limited", "rate limit exceeded", mtype,
                              None)
        return turn.actions

    def disconnect(self, client_id: int, *, now: float, entropy: Entropy) -> list[Action]:
        """The connection ended, for any reason: everything it held ends with it (§9.5).

        Timeouts that were due happen first (as ``timeout``, not as a disconnection), but
        nothing is delivered to the departed client any more.
        """
        client = self.clients.pop(client_id, None)
        if client is None:
            return []
        for name in client.subscriptions:
            self.topics[name].unsubscribe(client_id)
        for name in client.services:
            del self.services[name]
        turn = Turn(now, entropy)
        for name in client.services:
            self.status(turn, f"service {name} unregistered")
        self._expire(turn)
        for rid in list(client.provided):
            if rid not in self.pending:  # timed out just above
                continue
            pending = self.finish_pending(rid)
            if pending.is_validation:
                topic_events.resolve_validation(self, turn, pending, "validator_failed",
                                                "the validator disconnected")
            else:
                service_events.resolve_failure(self, turn, pending, "provider_disconnected",
                                               "the provider disconnected")
        for rid in list(client.requests.values()):
            if rid not in self.pending:  # timed out, or a call to its own service failed above
                continue
            pending = self.finish_pending(rid)
            turn.count(SERVICE_REQUESTS_TOTAL, "cancelled")
            self.note(turn, pending.provider, f"request {rid} to {pending.service} cancelled")
        del self.topics[client_message_topic(client_id)]
        self.status(turn, f"client {client_id} disconnected")
        return turn.actions

    def tick(self, now: float, entropy: Entropy) -> list[Action]:
        """Fail the requests and validations whose timeouts are due at ``now``."""
        turn = Turn(now, entropy)
        self._expire(turn)
        return turn.actions

    def next_deadline(self) -> float | None:
        """When :meth:`tick` next has something to do, or ``None``."""
        heap = self._deadlines
        while heap and heap[0][2] not in self.pending:
            heapq.heappop(heap)
        return heap[0][0] if heap else None

    def inspect(self, now: float) -> dict[str, Any]:
        """The inspector's JSON document (§9.8) as of the last call."""
        return inspector.document(self, now)

    def shape_of(self, client_id: int) -> Shape | None:
        client = self.clients.get(client_id)
        return client.shape if client is not None else None

    # -- helpers for the event modules ------------------------------------------------------

    def send(self, turn: Turn, client_id: int, frame: ServerFrame) -> None:
        """A frame for one client, if it is still connected."""
        if client_id in self.clients:
            turn.actions.append(Deliver((client_id,), frame))

    def fail(self, turn: Turn, client: Client, code: str, message: str, message_type: str,
             body: dict[str, Any]) -> None:
        """Answer a client frame with ``error`` (echoing its names and request id)."""
        self._error_frame(turn, client.id, code, message, message_type, echoes(body))

    def _error_frame(self, turn: Turn, client_id: int, code: str, message: str,
                     message_type: str | None, echo: dict[str, Any] | None) -> None:
        turn.actions.append(Deliver((client_id,), frames.error(code, message, message_type,
                                                                echo)))
        turn.actions.append(Counted(ERRORS_TOTAL, code))

    def _new_topic(self, name: str, type: str, *, special: bool = False) -> Topic:
        topic = Topic(name, type, special=special)
        self.topics[name] = topic
        if not special:
            self.regular_topics += 1
            self.space_bytes += topic.size
        self.version += 1
        return topic

    def new_topic(self, name: str, type: str) -> Topic:
        return self._new_topic(name, type)

    def apply(self, turn: Turn, topic: Topic, prepared: Prepared) -> None:
        """Commit a checked change and send ``update`` to every subscriber (§9.4 step 4)."""
        if not topic.special:
            self.space_bytes += prepared.size - topic.size
        edit = topic.commit(prepared)
        if edit is not None:
            self._remember(topic, edit)
        self.version += 1
        if topic.subscribers:
            seed, full = prepared.change_dicts(topic)
            turn.send(topic.targets, frames.update(topic.name, seed, full, topic.version))

    def _remember(self, topic: Topic, edit: Edit) -> None:
        """Keep a string edit, so that later changes made against older versions can be
        carried through it (§9.3).

        Two bounds: each topic keeps its last ``string_history`` changes, and the insertions
        kept by all topics of the space total at most ``max_history_chars`` code points
        (beyond, the edited topic forgets its oldest changes first, down to the newest). A
        client cycling large inserts and deletes could otherwise make the server hold 100
        copies of a 1 MiB text per topic. Versions that are forgotten get ``bad_version``.
        """
        history = topic.history
        history.append(edit)
        self.history_chars += edit.length if edit.kind == INSERT else 0
        limit = self.settings.max_history_chars
        while len(history) > self.settings.string_history or (
                self.history_chars > limit and len(history) > 1):
            old = history.popleft()
            if old.kind == INSERT:
                self.history_chars -= old.length

    def _server_set(self, turn: Turn, topic: Topic, text: str) -> None:
        self.apply(turn, topic, topic.server_set(text, turn.rng()))

    def status(self, turn: Turn, text: str) -> None:
        """Set ``_chatroom/server_status`` (§9.6)."""
        self._server_set(turn, self.topics[SERVER_STATUS], text)

    def note(self, turn: Turn, client_id: int, text: str) -> None:
        """Set a connected client's ``_chatroom/client_message/<id>`` (§9.6)."""
        topic = self.topics.get(client_message_topic(client_id))
        if topic is not None:
            self._server_set(turn, topic, text)

    def add_pending(self, pending: Pending) -> None:
        self.pending[pending.id] = pending
        heap = self._deadlines
        if len(heap) > 2 * len(self.pending) + 64:
            # answered requests leave their deadlines behind (lazy deletion); drop them
            # before they outnumber the live ones, so the heap stays proportional
            heap[:] = [d for d in heap if d[2] in self.pending]
            heapq.heapify(heap)
        self._deadline_seq += 1
        heapq.heappush(self._deadlines, (pending.deadline, self._deadline_seq, pending.id))
        self.clients[pending.provider].provided[pending.id] = None
        if pending.requester is not None and pending.request_id is not None:
            self.clients[pending.requester].requests[pending.request_id] = pending.id
        self.version += 1

    def finish_pending(self, request_id: str) -> Pending:
        """Forget a pending request (answered, failed, timed out or cancelled)."""
        pending = self.pending.pop(request_id)
        provider = self.clients.get(pending.provider)
        if provider is not None:
            provider.provided.pop(request_id, None)
        if pending.requester is not None:
            requester = self.clients.get(pending.requester)
            if requester is not None and pending.request_id is not None:
                requester.requests.pop(pending.request_id, None)
        self.version += 1
        return pending

    def pending_for(self, client: Client, request_id: RequestId) -> Pending | None:
        """The request ``request_id`` pending at provider ``client``, if any."""
        if not isinstance(request_id, str):
            return None
        pending = self.pending.get(request_id)
        if pending is None or pending.provider != client.id:
            return None
        return pending

    def _expire(self, turn: Turn) -> None:
        heap = self._deadlines
        while heap and heap[0][0] <= turn.now:
            _, _, rid = heapq.heappop(heap)
            if rid not in self.pending:
                continue
            pending = self.finish_pending(rid)
            if pending.is_validation:
                topic_events.resolve_validation(self, turn, pending, "validator_failed",
                                                "the validator did not answer in time")
            else:
                service_events.resolve_failure(self, turn, pending, "timeout",
                                               "the request timed out")
            self.note(turn, pending.provider, f"request {rid} to {pending.service} timed out")


_HANDLERS: Final[Mapping[str, Handler]] = MappingProxyType({
    "subscribe": topic_events.subscribe,
    "unsubscribe": topic_events.unsubscribe,
    "update": topic_events.update,
    "register_service": service_events.register_service,
    "unregister_service": service_events.unregister_service,
    "request": service_events.request,
    "response": service_events.response,
})
"""Client frame type → handler: exactly the client types of §9.2 (``parsing``)."""
