"""What the node's parts (``listen``, ``rooms``, ``local``) use of the node.

A ``Protocol`` rather than the ``RelayServer`` class itself, so that the parts do not import
the module that composes them (no import cycle, not even one only type checkers follow).
"""

from __future__ import annotations

from typing import Any, Protocol

from relay.config import Config
from relay.core.hub import Hub
from relay.core.ids import Entropy
from relay.metrics import Metrics
from relay.ports import Connection, ConnectionHost
from relay.transport.heartbeat import HeartbeatWheel
from relay.transport.settings import TransportSettings


class Node(ConnectionHost, Protocol):
    config: Config
    settings: TransportSettings
    hub: Hub
    entropy: Entropy
    backplane: Any  # relay.ports.Backplane, with the node-side hooks of relay.server.local
    rooms: Any  # relay.server.rooms.RoomShell
    signaling: Any  # signaling.ws_rooms.SignalingHub
    signaling_conns: dict[int, Connection]
    connections: set[Any]
    heartbeat_wheel: HeartbeatWheel
    listener: Any  # relay.server.listen.Listener
    spaces: Any  # relay.server.spaces.SpaceShell
    chat: Any  # relay.server.chat.ChatShell
    polling: Any  # relay.server.polling.Polling

    @property
    def metrics(self) -> Metrics: ...

    @property
    def shutting_down(self) -> bool: ...

    def now(self) -> float: ...

    def new_conn_id(self) -> int: ...

    def codec_for(self, endpoint: str) -> Any: ...

    def health(self) -> tuple[int, dict[str, Any]]: ...

    def signaling_here(self, conn: Any, text: str | None, binary: bool) -> None: ...

    def entropy_bytes(self, n: int) -> bytes: ...

    def apply_place(self, cmd: Any) -> None: ...
