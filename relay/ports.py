"""The seams between the parts of the relay: small ``Protocol``s, and nothing else.

Every part of the shell talks to the others through these, never by importing the server
object and reaching into its dictionaries. This module is a leaf: it imports no part of
the relay, so every part may import it. Values the core defines (an encoded event, an
error, a session) appear here as the few attributes the other side actually uses.

Who implements what:

- ``Peer`` — what the core's actions are delivered to: a client connection on this node
  (``relay.transport.observer``) or the room owner's stand-in for a connection held by
  another node (``relay.cluster.remote``).
- ``ConnectionHost`` — what a connection needs from the node it runs on (``relay.server``).
- ``Backplane`` — where a connection's events go to be applied: this process
  (``relay.server`` itself, ``memory://``) or the cluster (``relay.cluster``, ``redis://``).
- ``ClusterHost`` — what the cluster needs from the node (``relay.server``).
- ``WebHost`` and ``StatsSource`` — what the web port needs (``relay.server``).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import Any, Protocol

Ref = int | str


class Session(Protocol):
    """A connection's binding to a participant (the core's ``Session``)."""

    ip: str
    room_id: int | None
    user_id: int | None
    blocked: bool | None
    device: str | None
    framing: str

    @property
    def bound(self) -> bool: ...


class EventError(Protocol):
    """Why an event failed (the core's ``EventError``)."""

    code: str
    message: str


class Metrics(Protocol):
    """The counters a connection feeds (``relay.metrics.Metrics``)."""

    def inc(self, name: str, *labels: str, amount: float = 1) -> None: ...

    def message_in(self, endpoint: str, event: str) -> None: ...

    def message_out(self, endpoint: str, event: str) -> None: ...

    def bytes_in(self, endpoint: str, n: int) -> None: ...

    def bytes_out(self, endpoint: str, n: int) -> None: ...

    def error(self, code: str) -> None: ...

    def rate_limited(self, endpoint: str) -> None: ...


class Peer(Protocol):
    """Where the core's actions for one participant's connection are carried out.

    ``out`` is the core's encoded event (``relay.core.outgoing.Outgoing``); ``pinned`` the
    events an attach streams first (``relay.core.actions.Bind``).
    """

    endpoint: str
    #: The core already handled this connection's participant (replaced, kicked, room
    #: closed, moved): when the connection ends, it must not be reported offline.
    released: bool

    @property
    def session(self) -> Session: ...

    def send_event(self, out: Any, after: int | None = None) -> None: ...

    def sequenced(self, out: Any, seq: int, size: int) -> None: ...

    def send_error(self, code: str, message: str, event: str | None, ref: Ref | None) -> None:
        ...

    def send_ack(self, ref: Ref, error: EventError | None) -> None: ...

    def attach(self, cursor: int, replay_end: int, pinned: list[Any]) -> None: ...

    def detach(self) -> None: ...

    def close(self, code: int, reason: str, *, flush: bool = False) -> None: ...


class Connection(Protocol):
    """A client connection of this node (any endpoint)."""

    ip: str
    endpoint: str
    #: This node's id for the connection (unique while the process runs).
    conn_id: int
    #: Scale-out: the node that owns the connection's room, when that is another node.
    remote_owner: str | None

    def push(self, frame: bytes, after: int | None = None) -> None: ...

    def close(self, code: int, reason: str, *, flush: bool = False) -> None: ...


class ConnectionHost(Protocol):
    """What a connection needs from the node it runs on."""

    @property
    def metrics(self) -> Metrics: ...

    def now(self) -> float: ...

    def observer_event(self, conn: Peer, event: str, data: Any, ref: Ref | None
                       ) -> Awaitable[None] | None:
        """Apply one decoded observer event; an awaitable when it must wait (scale-out)."""

    def signaling_message(self, conn: Connection, text: str | None, binary: bool
                          ) -> Awaitable[None] | None:
        """One ``/ws`` message (``text`` None for a binary one)."""

    def connection_closed(self, conn: Connection) -> None: ...


class Backplane(Protocol):
    """Where events are applied: this process (``memory://``) or the cluster."""

    node_id: str
    available: bool
    stats: StatsSource

    async def run(self, *, task_status: Any = ...) -> None: ...

    def dispatch(self, conn: Peer, event: str, data: Any, ref: Ref | None
                 ) -> Awaitable[None] | None: ...

    def signaling(self, conn: Connection, text: str | None, binary: bool
                  ) -> Awaitable[None] | None: ...

    def connection_opened(self, conn: Connection) -> None: ...

    def connection_replaced(self, old_id: int, old: Connection, new: Connection) -> None:
        """A session moved onto another transport object (Engine.IO upgrade)."""

    def connection_closed(self, conn: Connection) -> None: ...

    def place_command(self, cmd: Any) -> None:
        """A replicated place's command: applied here, in the order of every node."""

    async def register_session(self, sid: str) -> None:
        """A polling session opened here (so that other nodes find it)."""

    def forget_session(self, sid: str) -> None: ...

    async def session_node(self, sid: str) -> str | None:
        """The live node holding polling session ``sid``, if another one does."""

    async def forward_http(self, node: str, request: Any, body: bytes, ip: str,
                           write: Any) -> bool:
        """Serve a polling request on the session's node; False if it cannot be."""

    async def give_upgrade(self, node: str, fd: int, received: bytes) -> bool:
        """Hand the socket of an upgrade for a session of ``node`` to it (same host);
        False when that is not possible."""


class StatsEntry(Protocol):
    room_id: int
    stats_key: str
    version: int
    document: dict[str, Any]


class StatsSource(Protocol):
    """Where the web port reads a room's stats (this process, or the room's owner)."""

    async def get(self, room_id: int) -> StatsEntry | None: ...

    async def wait_change(self, room_id: int) -> None:
        """Return after the room's stats may have changed (or it was removed)."""


class WebHost(Protocol):
    """What the web port (``stats_web``) needs from the node."""

    stats: StatsSource
    public_stats: bool
    relay_port: int
    chatroom_secret: str

    def space_document(self, space: str) -> tuple[int, dict[str, Any]] | None:
        """The §9.8 document of a space and its version (None: no such space)."""

    async def wait_space_change(self, space: str) -> None: ...

    def now(self) -> float: ...

    def health(self) -> tuple[int, dict[str, Any]]: ...

    def metrics_text(self) -> bytes: ...

    def join_blocked(self, ip: str) -> bool:
        """The failed-join limit of §4.3 for ``ip`` (stats lookups count too, §8)."""

    def count_join_failure(self, ip: str) -> None: ...

    def client_ip(self, peer: str, headers: Mapping[str, str]) -> str:
        """The client address of a request from ``peer`` (trusted proxies, §1.3)."""

    async def wait_shutdown(self) -> None: ...

    @property
    def shutting_down(self) -> bool: ...


class PlacesHost(Protocol):
    """What the replication of places (``relay.cluster.places``) needs from the node."""

    def apply_place(self, cmd: Any) -> None:
        """Apply one ``PlaceCommand`` to this node's replica (in the log's order)."""

    def place_alive(self, kind: str, place: str) -> bool:
        """Whether the place has state (a space that exists, a directory with sessions)."""

    def place_nodes(self) -> set[str]:
        """The nodes that have clients in some place (to notice their death)."""

    def node_gone(self, node_id: str) -> None:
        """A node died: its clients leave every place."""

    def places_lost(self) -> None:
        """The replicas missed commands: close this node's place connections (1011) and
        forget every place (they are rebuilt from the log)."""

    def place_refused(self, cmd: Any) -> None:
        """A command could not be queued: close the connection it came from (1011)."""


class ClusterHost(PlacesHost, Protocol):
    """What the cluster needs from the node: the core, delivery, and the connections."""

    hub: Any  # relay.core.hub.Hub
    signaling: Any  # signaling.ws_rooms.SignalingHub
    backplane_ok: bool

    def now(self) -> float: ...

    def handle_event(self, peer: Peer, event: str, data: Any, ref: Ref | None, *,
                     now: float | None = None, entropy: Any = None) -> str | None:
        """Run one event through the core and carry out its actions; its error code."""

    def apply(self, actions: list[Any], sender: Peer | None) -> None: ...

    def peer_of(self, room_id: int, user_id: int) -> Peer | None: ...

    def release_peer(self, room_id: int, user_id: int) -> Peer | None:
        """Forget the participant's connection without reporting it offline."""

    def room_opened(self, room_id: int) -> None:
        """A room now lives here (created or rebuilt): give it its nursery."""

    def room_dropped(self, room_id: int) -> None:
        """The room no longer lives here (it moved): cancel its work."""

    async def wait_stats_change(self, room_id: int) -> None: ...

    def spawn_in_room(self, room_id: int, job: Callable[[], Awaitable[Any]]) -> bool:
        """Run room-scoped work in the room's nursery (cancelled with the room)."""

    def codec_for(self, endpoint: str) -> Any: ...

    def deliver_signaling(self, frames: list[tuple[int, dict[str, Any]]]) -> None: ...

    def rebind_signaling(self, conn: Connection) -> None:
        """Give a ``/ws`` connection a fresh signaling id (it joined a room elsewhere)."""

    async def serve_polling(self, http: Any, request: Any, ip: str) -> bool:
        """Serve an Engine.IO polling request forwarded by another node."""

    async def adopt(self, fd: int, endpoint: str, session: dict[str, Any], event: str,
                    data: Any, ref: Ref | None) -> None:
        """Serve a client socket another node of this host handed over, from its event."""

    async def adopt_http(self, fd: int, received: bytes) -> None:
        """Serve a client socket another node of this host handed over with a request it
        read but could not answer (``received``: the head and what followed it)."""

    @property
    def shutting_down(self) -> bool: ...
