"""Per-event context: who sent it, in which room, and the actions it produces."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .actions import Action, Bind, Counted, Reply, Send, StatsChanged
from .ids import Entropy
from .model import Participant, Room
from .outgoing import Outgoing
from .rooms import Rooms


@dataclass(slots=True)
class Session:
    """The binding of one connection, owned by the shell, changed only by the core."""

    ip: str
    room_id: int | None = None
    user_id: int | None = None
    #: Scale-out: the per-IP limit (failed joins, or rooms for ``room/create``) as decided
    #: by the client's node, logged with the command so that a replay decides the same;
    #: None means "decide here".
    blocked: bool | None = None
    #: The device cookie this connection carries (§4.6), set by the shell from the HTTP
    #: upgrade or polling handshake; None when it carries none (or the cookie is off).
    #: The core only compares it for equality, so the shell may pass any stable digest.
    device: str | None = None
    #: The framing of this connection (§3): ``"observer"`` (plain) or ``"socketio"``.
    framing: str = "observer"

    @property
    def bound(self) -> bool:
        return self.room_id is not None


class Ctx:
    """Collects the ordered actions of one event and offers the delivery helpers."""

    __slots__ = ("actions", "binding", "bound", "entropy", "failure_actions", "now", "room",
                 "sender", "session", "state")

    def __init__(self, state: Rooms, session: Session, room: Room | None,
                 sender: Participant | None, *, now: float, entropy: Entropy) -> None:
        self.state = state
        #: The time of the event (wall-clock seconds) and where its ids and tokens come
        #: from: arguments, so that a logged command replays to exactly the same room.
        self.now = now
        self.entropy = entropy
        self.session = session
        self.room = room
        self.sender = sender
        self.actions: list[Action] = []
        #: Frames paired with a failure (§6.1 name_taken alert), sent before the error.
        self.failure_actions: list[Action] = []
        #: The participant this event binds the sender to, and its ``Bind``: sequenced
        #: events for it from then on (its snapshot) are streamed from ``Bind.pinned``.
        self.bound: Participant | None = None
        self.binding: Bind | None = None

    def bind(self, action: Bind, p: Participant) -> None:
        self.actions.append(action)
        self.bound, self.binding = p, action

    # -- deliveries ---------------------------------------------------------------
    def seq(self, room: Room, p: Participant, out: Outgoing | str, data: Any = None) -> int:
        """Deliver a sequenced event: it joins the participant's replay buffer."""
        if isinstance(out, str):
            out = Outgoing(out, data)
        seq, size = p.replay.append(out)
        if p is self.bound:
            binding = self.binding
            assert binding is not None
            binding.pinned.append(out)
            binding.replay_end = seq
        else:
            self.actions.append(Send(room.room_id, p.user_id, out, seq, seq, size))
        return seq

    def unseq(
        self, room: Room, p: Participant, out: Outgoing | str, data: Any = None,
        after: int | None = None,
    ) -> None:
        """Deliver an unsequenced event (rtc relay, replies) to the participant if online."""
        if isinstance(out, str):
            out = Outgoing(out, data)
        self.actions.append(
            Send(room.room_id, p.user_id, out, None, p.replay.counter if after is None else after)
        )

    def reply(self, event: str, data: Any) -> None:
        self.actions.append(Reply(Outgoing(event, data)))

    def alert(self, room: Room, p: Participant, kind: str, message: str) -> None:
        self.seq(room, p, "alerts", {"message": message, "type": kind})

    def to_host(self, event: str, data: Any) -> None:
        assert self.room is not None
        self.seq(self.room, self.room.host, event, data)

    def count(self, metric: str, label: str, amount: int = 1) -> None:
        self.actions.append(Counted(metric, label, amount))

    def stats_changed(self) -> None:
        assert self.room is not None
        self.room.stats_version += 1
        self.actions.append(StatsChanged(self.room.room_id))
