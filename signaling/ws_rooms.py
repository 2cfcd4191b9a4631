"""The ``/ws`` screen-sharing signaling dialect (protocol §7) as a sans-IO state machine.

The transport feeds each received WebSocket message to :meth:`SignalingHub.receive` and each
closed connection to :meth:`SignalingHub.disconnect`; both return the frames to enqueue as
``(connection id, frame dict)`` pairs, in order. Keeping sockets, clocks and tasks out of here
makes every rule of §7 unit-testable and guarantees a failed send to one peer can never affect
the sender's state: the hub has already finished its state change when frames leave it.

Unlike the seed, every failure is answered with a frame and changes nothing, roles are
enforced, users learn when their host leaves, and membership is never left half-updated.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from signaling.rules import MAX_SDP_BYTES, candidate_ok, utf8_size
from signaling.ws_frames import (
    BINARY,
    HOST_CANNOT_OFFER,
    HOST_CANNOT_REQUEST,
    HOST_LEFT,
    INVALID_CANDIDATE,
    INVALID_JSON,
    INVALID_SDP,
    JOIN_FIRST,
    MESSAGE_TYPES,
    NOT_OBJECT,
    ONLY_HOST_ALLOWS,
    ONLY_HOST_ANSWERS,
    ROOM_ID_ALPHABET,
    ROOM_ID_LENGTH,
    ROOM_ID_RE,
    ROOM_ID_REQUIRED,
    ROOM_NOT_FOUND,
    ROOMLESS_TYPES,
    TOO_MANY_FAILURES,
    TYPE_REQUIRED,
    USER_NOT_FOUND,
    USERNAME_TAKEN,
    Frame,
    Outgoing,
    check_username,
    error,
    invalid_room,
    loads,
    new_room_id,
    normalise_room_id,
    peek_type,
    printable_for_echo,
    rate_limited_frame,
    type_label,
)

log = logging.getLogger("relay.server")  # §1.1: rooms created and removed, at INFO

__all__ = [
    "MESSAGE_TYPES",
    "ROOM_ID_ALPHABET",
    "ROOM_ID_LENGTH",
    "Frame",
    "HubSnapshot",
    "JoinLimiter",
    "Outgoing",
    "SignalingHub",
    "new_room_id",
    "peek_type",
    "rate_limited_frame",
    "type_label",
]


class JoinLimiter(Protocol):
    """Failed joins per client IP over a sliding window (§4.3), e.g. the observer core's
    ``relay.core.limits.JoinFailures``: ``/ws`` joins, observer joins and the web port's
    stats lookups share one counter, so guessing ids costs the same wherever it is tried."""

    def blocked(self, ip: str, now: float) -> bool: ...

    def count(self, ip: str, now: float) -> None: ...


@dataclass(eq=False)
class _Room:
    room_id: str
    host: int | None
    host_name: str | None
    users: dict[str, int] = field(default_factory=dict)
    """Username → connection id, in join order (the order ``HOST_LEFT`` is sent in)."""

    def name_taken(self, name: str, *, by_other_than: int) -> bool:
        if self.host is not None and self.host != by_other_than and self.host_name == name:
            return True
        owner = self.users.get(name)
        return owner is not None and owner != by_other_than


@dataclass(eq=False)
class _Conn:
    room: _Room | None = None
    is_host: bool = False
    name: str = ""
    ip: str | None = None  # the client IP its failed joins count for (§4.3), if known


@dataclass(frozen=True)
class HubSnapshot:
    """Counts for ``/healthz`` and metrics."""

    rooms: int
    connections: int
    hosts: int
    users: int


class SignalingHub:
    """All ``/ws`` rooms of one process.

    Calls must not interleave (trio code calling it without awaiting in between satisfies
    this); each call applies one message completely, so frames come out in the order §7 lists
    them and a failed message changes nothing.
    """

    def __init__(self, rng: Callable[[], str] | None = None,
                 limiter: JoinLimiter | None = None) -> None:
        """``rng`` draws room ids (default: :func:`new_room_id`, a CSPRNG); ``limiter``
        counts failed joins per IP (§7, §4.3); without one, joins are not limited."""
        self._rng = rng or new_room_id
        self._limiter = limiter
        self._rooms: dict[str, _Room] = {}
        self._conns: dict[int, _Conn] = {}
        self._next_conn = 1
        self._handlers: dict[str, Callable[[int, _Conn, Frame], list[Outgoing]]] = {
            "CREATE_ROOM": self._create_room,
            "JOIN_ROOM": self._join_room,
            "LEAVE_ROOM": self._leave_room,
            "REQUEST_SHARING": self._request_sharing,
            "ALLOW_SHARING": self._allow_sharing,
            "STOP_SHARING": self._stop_sharing,
            "RCP_OFFER": self._rcp_offer,
            "RCP_ANSWER": self._rcp_answer,
            "ICE_CANDIDATE": self._ice_candidate,
        }

    def draw_room_ids_with(self, rng: Callable[[], str]) -> None:
        """Draw room ids with ``rng`` from now on (scale-out: ids reserved cluster-wide)."""
        self._rng = rng

    # ------------------------------------------------------------------ connections

    def connect(self, ip: str | None = None) -> int:
        """Register a new connection (in no room) and return its id. ``ip`` is the client
        IP (§1.3) its failed joins count for; without one they are neither counted nor
        limited."""
        conn_id = self._next_conn
        self._next_conn += 1
        self._conns[conn_id] = _Conn(ip=ip)
        return conn_id

    def disconnect(self, conn_id: int) -> list[Outgoing]:
        """Forget a closed connection: ``LEAVE_ROOM`` without the ``LEFT_ROOM`` reply.

        Unknown ids are ignored so the transport may call this unconditionally in cleanup.
        """
        conn = self._conns.pop(conn_id, None)
        if conn is None:
            return []
        return self._leave(conn)

    def receive(
        self, conn_id: int, text: str | bytes | None, *, binary: bool = False,
        now: float | None = None,
    ) -> list[Outgoing]:
        """Handle one WebSocket message; ``bytes``, ``None`` or ``binary=True`` is a binary one.

        Checks run in the order of §7: frame → type → in a room → sender role → target →
        ``sdp``/``candidate``. Raises ``KeyError`` for a connection id that is not connected.
        ``now`` (seconds, any clock the limiter is fed with) is needed by the failed-join
        limit: without it a ``JOIN_ROOM`` is neither limited nor counted.
        """
        conn = self._conns[conn_id]
        if binary or not isinstance(text, str):
            return [(conn_id, error(BINARY))]
        try:
            message = loads(text)
        except (ValueError, RecursionError):
            return [(conn_id, error(INVALID_JSON))]
        if not isinstance(message, dict):
            return [(conn_id, error(NOT_OBJECT))]
        kind = message.get("type")
        if not isinstance(kind, str):
            return [(conn_id, error(TYPE_REQUIRED))]
        handler = self._handlers.get(kind)
        if handler is None:
            return [(conn_id, error(f"Unknown message type: {printable_for_echo(kind)}"))]
        if conn.room is None and kind not in ROOMLESS_TYPES:
            return [(conn_id, error(JOIN_FIRST))]
        if kind == "JOIN_ROOM":
            return self._join_room(conn_id, conn, message, now)
        return handler(conn_id, conn, message)

    # ------------------------------------------------------------------ accessors

    def room_count(self) -> int:
        """Number of live rooms (a room lives while it has a host or a user)."""
        return len(self._rooms)

    def connection_count(self) -> int:
        return len(self._conns)

    def snapshot(self) -> HubSnapshot:
        """Counts for a stats or health endpoint, taken atomically."""
        hosts = sum(1 for room in self._rooms.values() if room.host is not None)
        users = sum(len(room.users) for room in self._rooms.values())
        return HubSnapshot(
            rooms=len(self._rooms), connections=len(self._conns), hosts=hosts, users=users
        )

    def room_ids(self) -> list[str]:
        return list(self._rooms)

    def room_of(self, conn_id: int) -> str | None:
        """The room id a connection is in, or ``None``."""
        conn = self._conns.get(conn_id)
        return conn.room.room_id if conn is not None and conn.room is not None else None

    def role_of(self, conn_id: int) -> str | None:
        """``"host"``, ``"user"`` or ``None`` (no room or unknown connection)."""
        conn = self._conns.get(conn_id)
        if conn is None or conn.room is None:
            return None
        return "host" if conn.is_host else "user"

    def members(self, room_id: str) -> tuple[str | None, list[str]] | None:
        """``(host name or None if the host left, user names in join order)`` of a room."""
        room = self._rooms.get(room_id)
        if room is None:
            return None
        return (room.host_name if room.host is not None else None, list(room.users))

    # ------------------------------------------------------------------ membership

    def _new_room_id(self) -> str:
        for _ in range(10_000):
            room_id = self._rng()
            if not ROOM_ID_RE.fullmatch(room_id):
                raise ValueError(f"room id generator returned {room_id!r}")
            if room_id not in self._rooms:
                return room_id
        raise RuntimeError("room id generator keeps returning ids in use")

    def _leave(self, conn: _Conn) -> list[Outgoing]:
        """Take ``conn`` out of its room and notify the others (no reply to ``conn``)."""
        room = conn.room
        if room is None:
            return []
        out: list[Outgoing] = []
        if conn.is_host:
            room.host = None
            room.host_name = None
            out.extend((user, {"type": "HOST_LEFT"}) for user in room.users.values())
        else:
            del room.users[conn.name]
            if room.host is not None:
                out.append((room.host, {"type": "USER_LEFT", "username": conn.name}))
        conn.room, conn.is_host, conn.name = None, False, ""
        if room.host is None and not room.users:
            del self._rooms[room.room_id]
            log.info("room removed", extra={"room": room.room_id, "endpoint": "ws"})
        return out

    def _create_room(self, conn_id: int, conn: _Conn, message: Frame) -> list[Outgoing]:
        name = check_username(message)
        if not isinstance(name, str):
            return [(conn_id, name)]
        out = self._leave(conn)
        room = _Room(room_id=self._new_room_id(), host=conn_id, host_name=name)
        self._rooms[room.room_id] = room
        log.info("room opened", extra={"room": room.room_id, "endpoint": "ws"})
        conn.room, conn.is_host, conn.name = room, True, name
        out.append((conn_id, {"type": "ROOM_CREATED", "roomid": room.room_id}))
        return out

    def _join_room(self, conn_id: int, conn: _Conn, message: Frame,
                   now: float | None = None) -> list[Outgoing]:
        limiter, ip = self._limiter, conn.ip
        if limiter is None or ip is None or now is None:
            limiter = ip = now = None  # neither limited nor counted
        # At the limit every JOIN_ROOM from the IP is refused first, without a lookup.
        elif limiter.blocked(ip, now):
            return [(conn_id, invalid_room(TOO_MANY_FAILURES))]
        room_id = normalise_room_id(message.get("roomid"))
        if room_id is None:
            return [(conn_id, invalid_room(ROOM_ID_REQUIRED))]
        name = check_username(message)
        if not isinstance(name, str):
            return [(conn_id, name)]
        room = self._rooms.get(room_id)
        # The sender's own host role counts as "host left": it would leave before joining.
        if room is None or room.host is None or room.host == conn_id:
            if limiter is not None and ip is not None and now is not None:
                limiter.count(ip, now)  # a failed join of §4.3
            return [(conn_id, invalid_room(ROOM_NOT_FOUND))]
        if room.name_taken(name, by_other_than=conn_id):
            return [(conn_id, {"type": "INVALID_USERNAME", "message": USERNAME_TAKEN})]
        # Every check passed; the old membership ends under the old name.
        out = self._leave(conn)
        room.users[name] = conn_id
        conn.room, conn.is_host, conn.name = room, False, name
        # The normalised id, whatever the client sent (the seed echoed the raw one).
        out.append((conn_id, {"type": "ROOM_JOINED", "roomid": room.room_id}))
        out.append((room.host, {"type": "USER_JOINED", "username": name}))
        return out

    def _leave_room(self, conn_id: int, conn: _Conn, message: Frame) -> list[Outgoing]:
        notices = self._leave(conn)
        return [(conn_id, {"type": "LEFT_ROOM"}), *notices]

    # ------------------------------------------------------------------ relaying

    @staticmethod
    def _host_of(conn_id: int, room: _Room) -> int | Outgoing:
        """The host's connection, or the error for a user whose host has left."""
        if room.host is None:
            return (conn_id, error(HOST_LEFT))
        return room.host

    @staticmethod
    def _target_user(conn_id: int, room: _Room, message: Frame) -> int | Outgoing:
        """The user a host message names (exact match), or the ``User not found`` error."""
        target = message.get("username")
        user = room.users.get(target) if isinstance(target, str) else None
        if user is None:
            return (conn_id, error(USER_NOT_FOUND))
        return user

    @staticmethod
    def _sdp(message: Frame) -> str | None:
        sdp = message.get("sdp")
        if not isinstance(sdp, str):
            return None
        size = utf8_size(sdp)
        return sdp if size is not None and size <= MAX_SDP_BYTES else None

    def _request_sharing(self, conn_id: int, conn: _Conn, message: Frame) -> list[Outgoing]:
        assert conn.room is not None
        if conn.is_host:
            return [(conn_id, error(HOST_CANNOT_REQUEST))]
        host = self._host_of(conn_id, conn.room)
        if isinstance(host, tuple):
            return [host]
        return [(host, {"type": "REQUEST_SHARING", "username": conn.name})]

    def _allow_sharing(self, conn_id: int, conn: _Conn, message: Frame) -> list[Outgoing]:
        assert conn.room is not None
        if not conn.is_host:
            return [(conn_id, error(ONLY_HOST_ALLOWS))]
        user = self._target_user(conn_id, conn.room, message)
        if isinstance(user, tuple):
            return [user]
        return [(user, {"type": "ALLOW_SHARING"})]

    def _stop_sharing(self, conn_id: int, conn: _Conn, message: Frame) -> list[Outgoing]:
        assert conn.room is not None
        if conn.is_host:
            user = self._target_user(conn_id, conn.room, message)
            if isinstance(user, tuple):
                return [user]
            return [(user, {"type": "STOP_SHARING"})]
        host = self._host_of(conn_id, conn.room)
        if isinstance(host, tuple):
            return [host]
        return [(host, {"type": "STOP_SHARING", "username": conn.name})]

    def _rcp_offer(self, conn_id: int, conn: _Conn, message: Frame) -> list[Outgoing]:
        assert conn.room is not None
        if conn.is_host:
            return [(conn_id, error(HOST_CANNOT_OFFER))]
        host = self._host_of(conn_id, conn.room)
        if isinstance(host, tuple):
            return [host]
        sdp = self._sdp(message)
        if sdp is None:
            return [(conn_id, error(INVALID_SDP))]
        return [(host, {"type": "RCP_OFFER", "sdp": sdp, "username": conn.name})]

    def _rcp_answer(self, conn_id: int, conn: _Conn, message: Frame) -> list[Outgoing]:
        assert conn.room is not None
        if not conn.is_host:
            return [(conn_id, error(ONLY_HOST_ANSWERS))]
        user = self._target_user(conn_id, conn.room, message)
        if isinstance(user, tuple):
            return [user]
        sdp = self._sdp(message)
        if sdp is None:
            return [(conn_id, error(INVALID_SDP))]
        return [(user, {"type": "RCP_ANSWER", "sdp": sdp})]

    def _ice_candidate(self, conn_id: int, conn: _Conn, message: Frame) -> list[Outgoing]:
        assert conn.room is not None
        target = (
            self._target_user(conn_id, conn.room, message)
            if conn.is_host
            else self._host_of(conn_id, conn.room)
        )
        if isinstance(target, tuple):
            return [target]
        candidate = message.get("candidate")
        if not candidate_ok(candidate):
            return [(conn_id, error(INVALID_CANDIDATE))]
        if conn.is_host:
            return [(target, {"type": "ICE_CANDIDATE", "candidate": candidate})]
        return [(target, {"type": "ICE_CANDIDATE", "candidate": candidate, "username": conn.name})]
