"""What the core asks of the shell: frames to deliver and I/O to perform.

The core never awaits; it returns these in order and the Trio shell carries them out in
that order, so the ordering rules of the protocol are decided here, in plain Python.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .outgoing import Outgoing


@dataclass(slots=True)
class Send:
    """A frame for a participant's connection (if it is online).

    Sequenced frames (``seq`` set) are already in the participant's replay buffer; the shell
    only wakes the connection. Unsequenced frames go after every sequenced frame with seq
    <= ``after``.
    """

    room_id: int
    user_id: int
    out: Outgoing
    seq: int | None
    after: int
    size: int = 0  # a sequenced frame's plain size (the replay buffer's measure)


@dataclass(slots=True)
class Reply:
    """A frame for the connection that sent the event, bound or not, never sequenced."""

    out: Outgoing


@dataclass(slots=True)
class Bind:
    """Bind the sender's connection to a participant.

    Its writer streams the events with seq in (``cursor``, ``replay_end``] before any live
    frame; the stream does not count against the outgoing queue bound (Appendix C, replay
    after 4002). ``pinned`` holds exactly those events: the missed ones taken from the
    replay buffer at the bind, then the snapshot the same event produced (the core extends
    ``replay_end`` as it adds them). Holding them here rather than reading the buffer
    later is what lets a snapshot larger than the replay buffer reach the client: the
    buffer may already have evicted its first events before the writer gets to them.
    """

    room_id: int
    user_id: int
    cursor: int
    replay_end: int
    pinned: list[Outgoing] = field(default_factory=list)


@dataclass(slots=True)
class Unbind:
    """The sender's connection is unbound again but stays open (``room/leave``)."""


@dataclass(slots=True)
class Disconnect:
    """Close a participant's connection after its queued frames (kick: 4001)."""

    room_id: int
    user_id: int
    code: int
    reason: str


@dataclass(slots=True)
class RoomOpened:
    room_id: int


@dataclass(slots=True)
class RoomClosed:
    """Close every connection of the room with 4000 once flushed, then forget it."""

    room_id: int
    user_ids: tuple[int, ...]
    reason: str = "closed"  # or "expired"

@dataclass(slots=True)
class StartImport:
    """Fetch a Notion page in the room's nursery, then feed ``Hub.import_done`` back."""

    room_id: int
    url: str


@dataclass(slots=True)
class StatsChanged:
    room_id: int


@dataclass(slots=True)
class Counted:
    """A metric event the shell records (resumes, imports...)."""

    metric: str
    label: str
    amount: int = 1


Action = (
    Send | Reply | Bind | Unbind | Disconnect | RoomOpened | RoomClosed | StartImport
    | StatsChanged | Counted
)
