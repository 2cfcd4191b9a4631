"""What the handler modules and the inspector see of a space: :class:`SpaceSurface`.

:class:`~relay.spaces.space.Space` dispatches client frames to ``topic_events`` and
``service_events`` and builds its inspector document in ``inspector``; those modules in
turn read and change the space that called them. Typing their ``space`` parameter against
this Protocol, which ``Space`` satisfies structurally, lets them do so without importing
``space`` — so the modules form a tree (``space`` → handlers → ``surface``), not a knot.

Only the members those modules use are listed; the attributes are plain (writable) ones,
because the handlers update the counters (``version``, ``waiting_bytes``, ...) in place.
"""

from __future__ import annotations

from typing import Any, Protocol

from .frames import ServerFrame
from .settings import SpaceSettings
from .state import Client, Pending, RequestId, Turn
from .topics import Prepared, Topic


class SpaceSurface(Protocol):
    """The state and helpers of a :class:`~relay.spaces.space.Space` its handlers use."""

    name: str
    settings: SpaceSettings
    clients: dict[int, Client]
    topics: dict[str, Topic]
    services: dict[str, int]
    """Service name → provider client id."""
    pending: dict[str, Pending]
    regular_topics: int
    space_bytes: int
    """Total size of the non-special topics' values (the 16 MiB limit)."""
    waiting_bytes: int
    """Compact JSON bytes of the changes queued behind validations, all topics."""
    version: int
    """Changes whenever the inspector document would."""

    def send(self, turn: Turn, client_id: int, frame: ServerFrame) -> None:
        """A frame for one client, if it is still connected."""

    def fail(self, turn: Turn, client: Client, code: str, message: str, message_type: str,
             body: dict[str, Any]) -> None:
        """Answer a client frame with ``error`` (echoing its names and request id)."""

    def new_topic(self, name: str, type: str) -> Topic: ...

    def apply(self, turn: Turn, topic: Topic, prepared: Prepared) -> None:
        """Commit a checked change and send ``update`` to every subscriber."""

    def status(self, turn: Turn, text: str) -> None:
        """Set ``_chatroom/server_status``."""

    def add_pending(self, pending: Pending) -> None: ...

    def finish_pending(self, request_id: str) -> Pending:
        """Forget a pending request (answered, failed, timed out or cancelled)."""
        ...

    def pending_for(self, client: Client, request_id: RequestId) -> Pending | None:
        """The request ``request_id`` pending at provider ``client``, if any."""
        ...
