"""A room as typed data: what its owner writes to Redis every few hundred commands.

A snapshot lets a node that takes a room over replay only the log entries after it. It is
read back by other nodes, so it is plain typed data (never pickle: whoever could write to
Redis would otherwise run code on every node), versioned, and rebuilt into the core's
objects field by field. Replay buffers keep the encoded events only (their JSON text is
all the codecs need).
"""

from __future__ import annotations

from typing import Any

import msgspec

from relay.core.model import FileEntry, Participant, Room
from relay.core.outgoing import Outgoing
from relay.core.replay import ReplayBuffer
from relay.core.settings import CoreSettings

from .wire import FORMAT, WireError


class MessageState(msgspec.Struct, array_like=True, frozen=True):
    id: int
    sender: int
    receiver: int
    content: str
    created_at: str
    timestamp: str


class FileState(msgspec.Struct, array_like=True, frozen=True):
    name: str
    content: str
    status: str


class ParticipantState(msgspec.Struct, array_like=True, frozen=True):
    user_id: int
    name: str
    token: str
    is_host: bool
    online: bool
    signal: str
    statuses: dict[str, str]
    messages: list[MessageState]
    files: list[FileState]
    counter: int  # seq of the newest event ever sent to it
    events: list[tuple[str, bytes]]  # the replay buffer, oldest first: (event, payload JSON)
    # Appended with defaults, so snapshots written before them still decode.
    device: str | None = None  # the device cookie it is bound to (§4.6), as the core got it
    framing: str = "observer"  # the framing of its last attach (§4.5, room/update's shape)


class RoomState(msgspec.Struct, array_like=True, frozen=True):
    version: int
    room_id: int
    stats_key: str
    creator_ip: str
    participants: list[ParticipantState]
    next_user_id: int
    next_message_id: int
    sharer: int | None
    steps: list[dict[str, str]]
    draft: list[dict[str, str]] | None
    settings: dict[str, list[str]] | None
    exercise: str
    importing: bool
    empty_since: float | None
    stats_version: int


_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(RoomState)


def encode_room(room: Room) -> bytes:
    return _encoder.encode(RoomState(
        FORMAT, room.room_id, room.stats_key, room.creator_ip,
        [_participant(p) for p in room.participants.values()],
        room.next_user_id, room.next_message_id, room.sharer, room.steps, room.draft,
        room.settings, room.exercise, room.importing, room.empty_since, room.stats_version,
    ))


def _participant(p: Participant) -> ParticipantState:
    replay = p.replay
    events = [(out.event, out.payload) for out in replay.events_after(replay.first_seq - 1)]
    return ParticipantState(
        p.user_id, p.name, p.token, p.is_host, p.online, p.signal, dict(p.statuses),
        [MessageState(m["id"], m["sender"], m["receiver"], m["content"], m["created_at"],
                      m["timestamp"]) for m in p.messages],
        [FileState(name, f.content, f.status) for name, f in p.files.items()],
        replay.counter, events, p.device, p.framing,
    )


def decode_room(blob: bytes, settings: CoreSettings) -> Room:
    """The room a snapshot describes; ``WireError`` for anything this version did not write."""
    try:
        state = _decoder.decode(blob)
    except (msgspec.DecodeError, RecursionError) as exc:
        raise WireError(f"unreadable room snapshot: {exc}") from None
    if state.version != FORMAT:
        raise WireError(f"room snapshot of format {state.version}, expected {FORMAT}")
    _check(state)
    room = Room(
        room_id=state.room_id, stats_key=state.stats_key, creator_ip=state.creator_ip,
        next_user_id=state.next_user_id, next_message_id=state.next_message_id,
        sharer=state.sharer, steps=state.steps, draft=state.draft, settings=state.settings,
        exercise=state.exercise, importing=state.importing, empty_since=state.empty_since,
        stats_version=state.stats_version,
    )
    for ps in state.participants:
        room.participants[ps.user_id] = _rebuild(ps, settings)
    return room


def _check(state: RoomState) -> None:
    """What the types do not say but the core relies on (a snapshot written by a buggy or
    hostile writer must be refused here, not crash the core later): participant 1 is the
    host and the only one, ids are unique and below ``next_user_id``, each replay buffer's
    counter covers its events and whose payloads are JSON."""
    ids = [ps.user_id for ps in state.participants]
    if len(set(ids)) != len(ids):
        raise WireError("room snapshot: a participant appears twice")
    for ps in state.participants:
        if ps.is_host != (ps.user_id == 1):
            raise WireError("room snapshot: participant 1 and only it is the host")
        if not 1 <= ps.user_id < state.next_user_id:
            raise WireError("room snapshot: a participant id out of range")
        if ps.counter < len(ps.events):
            raise WireError("room snapshot: a replay counter below its events")
        for _event, payload in ps.events:
            try:
                msgspec.json.decode(payload)
            except (msgspec.DecodeError, RecursionError):
                raise WireError("room snapshot: an event payload is not JSON") from None
    if 1 not in ids:
        raise WireError("room snapshot: the room has no host")


def _rebuild(ps: ParticipantState, settings: CoreSettings) -> Participant:
    replay = ReplayBuffer(settings.replay_events, settings.replay_bytes)
    replay.counter = ps.counter - len(ps.events)
    for event, payload in ps.events:
        replay.append(Outgoing.encoded(event, payload))
    messages: list[dict[str, Any]] = [
        {"id": m.id, "sender": m.sender, "receiver": m.receiver, "content": m.content,
         "status": None, "created_at": m.created_at, "timestamp": m.timestamp}
        for m in ps.messages]
    files = {f.name: FileEntry(f.content, f.status, len(f.content.encode()))
             for f in ps.files}
    return Participant(
        user_id=ps.user_id, name=ps.name, token=ps.token, is_host=ps.is_host, replay=replay,
        online=ps.online, signal=ps.signal, statuses=dict(ps.statuses), messages=messages,
        files=files, files_bytes=sum(f.size for f in files.values()),
        device=ps.device, framing=ps.framing,
    )
