"""Replaying a room's log through the core: the same commands, seeds and times give the
same room, with the same ids, tokens, ``seq`` numbers and replay buffers."""

from __future__ import annotations

import logging

from relay.core.context import Session
from relay.core.hub import Hub
from relay.core.ids import SeededEntropy
from relay.core.steps_import import ImportFailure

from .wire import Command, Disconnected, ImportDone, WireError, decode_record, payload_value

log = logging.getLogger("relay.cluster")


def replay_entries(hub: Hub, room_id: int, entries: list[tuple[str, bytes]]) -> None:
    """Apply ``entries`` (stream id, record) of ``room_id``'s log to ``hub``, in order.

    Their actions are not carried out: whoever received them got them when they were first
    applied, and the clients catch up by resuming. An entry this version cannot read is
    logged and skipped (the room then differs from what its clients saw, which their
    resume repairs with a resync).
    """
    for stream_id, raw in entries:
        try:
            entry = decode_record(raw).entry
            if isinstance(entry, Command):
                session = Session(ip=entry.ip, room_id=entry.room, user_id=entry.user,
                                  blocked=entry.blocked, device=entry.device,
                                  framing=entry.framing)
                hub.handle(session, entry.event, payload_value(entry.data), now=entry.time,
                           entropy=SeededEntropy(entry.seed))
            elif isinstance(entry, Disconnected):
                session = Session(ip=entry.ip, room_id=entry.room, user_id=entry.user)
                hub.disconnect(session, now=entry.time, entropy=SeededEntropy(b""))
            elif isinstance(entry, ImportDone):
                result = (ImportFailure(entry.failure) if entry.failure is not None
                          else entry.tasks or [])
                hub.import_done(room_id, result, now=entry.time, entropy=SeededEntropy(b""))
        except (WireError, ValueError, RecursionError) as exc:
            log.error("room %s: log entry %s skipped: %s", room_id, stream_id, exc)
