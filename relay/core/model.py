"""Observer room state: plain data, no I/O."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .outgoing import Outgoing
from .replay import ReplayBuffer

HOST_ID = 1
STATUSES = ("NONE", "IN_PROGRESS", "HELP", "DONE", "ACCEPTED")
SIGNALS = ("NONE", "IN_PROGRESS", "HELP", "DONE")
MAX_MESSAGES = 1000
#: The framings of §3, as ``Session.framing`` and ``Participant.framing`` name them.
PLAIN = "observer"
SOCKETIO = "socketio"


@dataclass(slots=True)
class FileEntry:
    content: str
    status: str  # CREATED or CHANGED: the last one applied
    size: int  # UTF-8 bytes of content


@dataclass(slots=True)
class Participant:
    user_id: int
    name: str
    token: str
    is_host: bool
    replay: ReplayBuffer
    online: bool = False
    signal: str = "NONE"
    statuses: dict[str, str] = field(default_factory=dict)
    # A student's one conversation with the host, both directions, newest kept.
    messages: list[dict[str, Any]] = field(default_factory=list)
    files: dict[str, FileEntry] = field(default_factory=dict)
    files_bytes: int = 0
    #: The device cookie of the connection that last attached it (§4.6), if it carried one.
    device: str | None = None
    #: The framing of the connection that last attached it (§4.5, §6.1 ``room/update``).
    framing: str = PLAIN

    @property
    def role(self) -> str:
        return "host" if self.is_host else "client"

    def add_message(self, message: dict[str, Any]) -> None:
        self.messages.append(message)
        if len(self.messages) > MAX_MESSAGES:
            del self.messages[0]


@dataclass(slots=True)
class Room:
    room_id: int
    stats_key: str
    #: The client IP that created the room (the per-IP room cap of §2.1 counts it).
    creator_ip: str = ""
    participants: dict[int, Participant] = field(default_factory=dict)
    next_user_id: int = 1
    next_message_id: int = 1
    sharer: int | None = None
    steps: list[dict[str, str]] = field(default_factory=list)
    #: The published steps as one encoded event, shared by every student's buffer.
    steps_out: Outgoing | None = None
    draft: list[dict[str, str]] | None = None
    settings: dict[str, list[str]] | None = None
    exercise: str = ""
    importing: bool = False
    #: Monotonic time since which no participant is online (None while someone is).
    empty_since: float | None = None
    #: Bumped on every change of the stats data, so watchers can wait for a change.
    stats_version: int = 0

    @property
    def host(self) -> Participant:
        return self.participants[HOST_ID]

    def students(self) -> list[Participant]:
        """Students by ascending user id (dicts keep insertion order = id order)."""
        return [p for p in self.participants.values() if not p.is_host]

    def name_taken(self, name: str) -> Participant | None:
        folded = name.casefold()
        for p in self.participants.values():
            if p.name.casefold() == folded:
                return p
        return None

    def online_count(self) -> int:
        return sum(1 for p in self.participants.values() if p.online)
