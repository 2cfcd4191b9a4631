"""The two signaling dialects the peer speaks, normalised into one stream of `Event`s.

`/observer` (protocol §3.1, §6.1, §6.8) is the relay's own plain JSON framing: acknowledged
room setup, `rtc/config` with the polite role, `rtc/*` relays keyed by user id, and resumable
sessions (reconnect + `room/rehost`/`room/rejoin` with `last_seq`).  `/ws` (§7) is the seed
FastAPI dialect: usernames instead of ids, no acks, no config, no resume.  The role logic in
`roles.py` only sees `Event`s, so it is identical for both.

The shared surface is in `channel.py`, the dialects in `dialect_observer.py` and
`dialect_ws.py`; this module gathers the names the rest of the peer imports.
"""

from __future__ import annotations

from signaling.peer.channel import (
    MAX_MESSAGE,
    Event,
    PeerId,
    RoomInfo,
    Signaling,
    SignalingError,
    log,
)
from signaling.peer.dialect_observer import (
    FATAL_ATTACH_CODES,
    RESUMABLE_CODES,
    ObserverSignaling,
)
from signaling.peer.dialect_ws import WsSignaling

__all__ = [
    "FATAL_ATTACH_CODES",
    "MAX_MESSAGE",
    "RESUMABLE_CODES",
    "Event",
    "ObserverSignaling",
    "PeerId",
    "RoomInfo",
    "Signaling",
    "SignalingError",
    "WsSignaling",
    "log",
]
