"""Scale-out: observer rooms shared by several relay processes through Redis (issue 7).

Each room is a virtual actor. Exactly one node — the room's *owner*, holding its lease —
runs the room's core. Every command for the room is first appended to the room's durable
log in Redis (with the CSPRNG seed and the clock value the core will use), then applied,
then delivered: so an event takes effect for everyone (it is in the log) or for no one,
and any node can rebuild the room exactly by replaying the log through the same
deterministic core (``Hub`` with ``SeededEntropy``) after the owner died.

A client may be connected to any node. On the same host, a node that does not own the
room hands the client's socket to the owner at its join (``relay.handoff``); otherwise it
forwards the connection's events to the owner's inbox. The owner keeps a ``RemoteConn``
stand-in with the same interface as a local connection, encodes the frames with the
client's codec and publishes them back, once per node per command. Replacement (4003),
kicks and room closes are ordinary closes of those stand-ins. Nodes watch each other's
liveness keys: a dead owner's clients are closed with 1011 (reconnect and resume), and the
node that next needs the room steals the lease and rebuilds it; a dead client node's
participants go offline.
"""

from __future__ import annotations

import contextlib
import logging
import pickle
import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import msgspec
import trio

from relay.backplane.group_commit import GroupCommit
from relay.backplane.redis import BackplaneUnavailable, RedisBackplane
from relay.codecs.base import Ref
from relay.codecs.plain import PlainCodec
from relay.core.context import Session
from relay.core.errors import EventError
from relay.core.events import EVENT_TABLE
from relay.core.ids import SeededEntropy
from relay.core.model import Participant
from relay.core.outgoing import Outgoing, encode_json
from relay.core.registry import UNBOUND
from relay.core.stats import room_stats
from relay.core.steps_import import ImportFailure
from relay.handoff import Handoff
from relay.transport.wsframe import text_frame

if TYPE_CHECKING:
    from relay.server import RelayServer
    from relay.transport.observer import ObserverConnection

log = logging.getLogger("relay.cluster")

LEASE_MS = 6000
SNAPSHOT_EVERY = 500
FORWARD_TIMEOUT = 10.0
LOCATE_TIMEOUT = 30.0
WATCH_INTERVAL = 1.0
REATTACH = frozenset({"room/join", "room/rehost", "room/rejoin"})
#: Events that may change which room a connection is bound to: their sender waits for them.
BINDING = REATTACH | {"room/create", "room/leave", "room/close"}
OUTBOX_MESSAGES = 10_000
COUNTED = frozenset({"room_not_found", "user_not_found", "bad_token"})
TOUCH_INTERVAL = 30.0
FORWARD_WINDOW = 16  # a forwarded connection waits for its owner every this many commands
MAX_MERGED = 256  # inbox messages merged into one PUBLISH
STATS_FLUSH = 1.0  # seconds between writes of changed rooms' stats documents (§8: 1/s)
STATS_WANT_TTL = 15.0  # a reader's request for a room's stats document lasts this long
STARTUP_WAIT = 5.0  # a node exits 1 when Redis is not reachable within this at startup

_encode = msgspec.msgpack.encode
_decode = msgspec.msgpack.decode


def room_key(room_id: int) -> str:
    return str(room_id)


def _ignore(*_: Any) -> None:
    pass


def _unwaited(session: Session, event: str) -> bool:
    """Whether the sender's node may go on without waiting for the event's result: it
    cannot change which room the connection is in."""
    return session.bound and event not in BINDING


class SeedPool:
    """16-byte CSPRNG seeds for commands, read from the OS 4 KiB at a time.

    One ``getrandom`` system call per command showed up in profiles of a busy node.
    """

    __slots__ = ("_buf", "_pos")

    def __init__(self) -> None:
        self._buf = b""
        self._pos = 0

    def take(self) -> bytes:
        if self._pos + 16 > len(self._buf):
            self._buf, self._pos = secrets.token_bytes(4096), 0
        self._pos += 16
        return self._buf[self._pos - 16:self._pos]


@dataclass(slots=True)
class Owned:
    """A room this node owns (its commands are applied in log order by the committer)."""

    since_snapshot: int = 0
    last_id: str = "0"


class RemoteConn:
    """The owner's stand-in for a client connection held by another node.

    It offers what the shell calls on a connection (``send_event``, ``sequenced``,
    ``attach``, ``close``…) and keeps the same order rules as a real one: attach reply
    frames, then the replay range, then live frames. ``drain`` hands the encoded bytes to
    the cluster, which publishes them to the client's node after the command.
    """

    __slots__ = ("_closing", "_pinned", "_post", "_pre", "cid", "cluster", "codec", "cursor",
                 "endpoint", "node", "participant", "replaced", "replay_end", "sent", "session")

    def __init__(self, cluster: Cluster, node: str, cid: int, endpoint: str, ip: str) -> None:
        self.cluster = cluster
        self.node = node
        self.cid = cid
        self.endpoint = endpoint
        self.codec: Any = PlainCodec() if endpoint == "observer" else _sio_codec(cluster.server)
        self.session = Session(ip=ip)
        self.replaced = False
        self.sent = 0  # number of the last command received from the client's node
        self.participant: Participant | None = None
        self.cursor = 0
        self.replay_end = 0
        self._pinned: list[Outgoing] = []
        self._pre: list[bytes] = []
        self._post: list[bytes] = []
        self._closing: tuple[int, str, bool] | None = None

    def _touch(self) -> None:
        self.cluster.touched.add(self)

    def push(self, frame: bytes, after: int | None = None) -> None:
        if self._closing is not None and not self._closing[2]:
            return
        if after is not None and self.cursor < self.replay_end and after <= self.cursor:
            self._pre.append(frame)
        else:
            self._post.append(frame)
        self._touch()

    def send_event(self, out: Outgoing, after: int | None = None) -> None:
        self.push(self.codec.event_frame(out, None), after)

    def sequenced(self, out: Outgoing, seq: int, size: int) -> None:
        if seq <= self.replay_end or (self._closing is not None and not self._closing[2]):
            return
        self._post.append(self.codec.event_frame(out, seq if self.endpoint == "observer"
                                                 else None))
        self.cursor = seq
        self._touch()

    def send_error(self, code: str, message: str, event: str | None, ref: Ref | None) -> None:
        self.push(self.codec.error_frame(code, message, event, ref))

    def send_ack(self, ref: Ref, error: EventError | None) -> None:
        self.push(self.codec.ack_frame(ref, error))

    def attach(self, participant: Participant, cursor: int, replay_end: int,
               pinned: list[Outgoing]) -> None:
        self.participant = participant
        self.cursor = cursor
        self.replay_end = replay_end
        self._pinned = pinned
        self._touch()

    def detach(self) -> None:
        self.participant = None
        self.replay_end = self.cursor
        self._pinned = []

    def close(self, code: int, reason: str, *, flush: bool = False, **_: Any) -> None:
        if self._closing is not None:
            return
        self._closing = (code, reason, flush)
        if not flush:
            self._pre.clear()
            self._post.clear()
            self.participant = None
        self.cluster.remote.pop((self.node, self.cid), None)
        self._touch()

    def drain(self) -> list[Any]:
        """The items to publish for this connection: its frames in order, then a close."""
        frames = self._pre
        if self.participant is not None:
            plain = self.endpoint == "observer"
            base = self.replay_end - len(self._pinned)
            for i in range(self.cursor - base, len(self._pinned)):
                seq = base + i + 1
                frames.append(self.codec.event_frame(self._pinned[i], seq if plain else None))
            self.cursor = max(self.cursor, self.replay_end)
        self._pinned = []
        frames.extend(self._post)
        self._pre, self._post = [], []
        items: list[Any] = []
        if frames:
            items.append([self.cid, "f", b"".join(frames)])
        if self._closing is not None:
            code, reason, flush = self._closing
            items.append([self.cid, "c", code, reason, flush])
        return items


def _ws_join_target(text: str | None) -> str | None:
    """The normalised room id of a /ws JOIN_ROOM message, if that is what it is."""
    if text is None or "JOIN_ROOM" not in text:
        return None
    try:
        frame = msgspec.json.decode(text)
    except msgspec.DecodeError:
        return None
    if isinstance(frame, dict) and frame.get("type") == "JOIN_ROOM":
        room = frame.get("roomid")
        if isinstance(room, str) and room.strip():
            return room.strip().lower()
    return None


def _sio_codec(server: RelayServer) -> Any:
    from relay.codecs.socketio import SocketIOCodec

    cfg = server.config
    return SocketIOCodec(int(cfg.sio_ping_interval * 1000), int(cfg.sio_ping_timeout * 1000),
                         cfg.max_message_size)


class Cluster:
    """This node's part in a Redis-backed cluster; owned by the server's nursery."""

    def __init__(self, server: RelayServer) -> None:
        self.server = server
        self.hub = server.hub
        self.bp = RedisBackplane(server.config.backplane_url, on_lease_lost=self._lease_lost)
        self.node = self.bp.node_id
        self.owned: dict[int, Owned] = {}
        self.remote: dict[tuple[str, int], RemoteConn] = {}
        self.local: dict[int, Any] = {}  # cid -> ObserverConnection | SignalingConnection
        # /ws rooms: stand-ins on this node for connections of other nodes, by hub conn id.
        self._ws_stubs: dict[tuple[str, int], int] = {}
        self._ws_stub_of: dict[int, tuple[str, int]] = {}
        self._ws_registered: set[str] = set()
        self.touched: set[RemoteConn] = set()
        self._pending: dict[int, trio.MemorySendChannel[list[Any]]] = {}
        self._next_id = 0
        self._locks: dict[int, trio.Lock] = {}  # serialises locate/rebuild per room
        self._outboxes: dict[str, trio.MemorySendChannel[tuple[bytes, int]]] = {}
        self.commits = GroupCommit(
            self.bp.append_many, lambda: BackplaneUnavailable("the node is stopping"))
        self._stats_dirty: set[int] = set()
        self._stats_fresh: set[int] = set()  # rooms whose document in Redis is current
        self._stats_wanted: dict[int, float] = {}  # room -> when this node last asked
        #: Rooms removed here recently, while other nodes may still route to us.
        self._gone: set[int] = set()
        self._stats_write = trio.Lock()  # the stats loop's writes vs. a room's removal
        self._stats_events: dict[int, trio.Event] = {}
        self._watched: set[str] = set()
        self._next_touch = 0.0
        self._sent: dict[int, int] = {}  # cid -> commands forwarded (numbered from 1)
        self.handoff = Handoff(server, self.node) if server.config.cluster_handoff else None
        self._seeds = SeedPool()
        self._nursery: trio.Nursery | None = None

    # -- lifetime ---------------------------------------------------------------------
    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            await nursery.start(self.bp.run)
            # A node that cannot reach Redis at startup is misconfigured or early: exit 1
            # (§1.1) so that the operator or the supervisor sees it, instead of running
            # a node that answers every room event with an error.
            with trio.move_on_after(STARTUP_WAIT):
                await self.bp.wait_available()
            if not self.bp.available:
                raise BackplaneUnavailable(
                    f"cannot reach the backplane at {self.bp.url}: {self.bp.last_error}")
            if self.handoff is not None:
                await nursery.start(self.handoff.serve)
            nursery.start_soon(self.commits.run)
            nursery.start_soon(self._stats_loop)
            nursery.start_soon(self._inbox_loop)
            nursery.start_soon(self._watch_loop)
            nursery.start_soon(self._room_loop)
            task_status.started()

    def spawn(self, fn: Any, *args: Any) -> None:
        if self._nursery is not None:
            self._nursery.start_soon(fn, *args)

    def new_cid(self) -> int:
        self._next_id += 1
        return self._next_id

    def now(self) -> float:
        """A command's time: wall-clock seconds (logged, so every node replays it the same)."""
        return self.server.now()

    # -- dispatch (any node) ----------------------------------------------------------
    async def dispatch(self, conn: ObserverConnection, event: str, data: Any,
                       ref: Ref | None) -> None:
        """Route one client event to the room's owner (maybe us) and wait for it."""
        session = conn.session
        spec = EVENT_TABLE.get(event)
        room_id: int | None = session.room_id
        if room_id is None and spec is not None and spec.role == UNBOUND and event in REATTACH:
            candidate = data.get("room_id") if isinstance(data, dict) else None
            room_id = candidate if type(candidate) is int else None
        if event in REATTACH and not session.bound:
            session.blocked = self.hub.join_blocked(session.ip, self.server.now())
        if event == "room/create" and not session.bound:
            session.blocked = self.hub.state.room_cap_reached(session.ip)  # logged with the command
            try:
                await self._create(conn, data, ref)
            finally:
                session.blocked = None
            return
        if room_id is None:
            self.server.handle_event(conn, event, data, ref)  # fails without room state
            return
        # A bound connection keeps the owner it was attached through: no lookup per event.
        # If that node died, ``_forward`` closes the connection (1011) and the client
        # resumes; if it lost the room, it closes the room's connections itself.
        owner = conn.remote_owner if session.bound else None
        if owner is None:
            try:
                owner = await self._locate(room_id)
            except BackplaneUnavailable:
                self._fail(conn, event, ref, "internal", "the backplane is unavailable")
                return
        for _attempt in range(3):
            if owner is None:
                self.server.handle_event(conn, event, data, ref)  # room_not_found etc.
            elif owner == self.node:
                if _unwaited(session, event):
                    await self._run(room_id, conn, event, data, ref)
                else:
                    error = await self._run_waiting(room_id, conn, event, data, ref)
                    if event in REATTACH and error in COUNTED:
                        self.hub.count_join_failure(session.ip, self.server.now())
            elif (event in REATTACH and not session.bound and self.handoff is not None
                  and await self.handoff.give(owner, conn, event, data, ref)):
                break  # the owner runs on this host and serves the connection from now on
            elif not await self._forward(owner, conn, event, data, ref):
                # The owner died before answering an attach: find the new owner, retry.
                try:
                    owner = await self._locate(room_id)
                except BackplaneUnavailable:
                    self._fail(conn, event, ref, "internal", "the backplane is unavailable")
                    break
                continue
            break
        session.blocked = None

    def _fail(self, conn: Any, event: str, ref: Ref | None, code: str, message: str) -> None:
        conn.send_error(code, message, event, ref)
        if ref is not None:
            conn.send_ack(ref, EventError(code, message))

    async def _locate(self, room_id: int) -> str | None:
        """The owner's node id; takes over (and rebuilds) a room whose owner is gone."""
        if room_id in self.owned:
            return self.node
        lock = self._locks.setdefault(room_id, trio.Lock())
        try:
            return await self._locate_locked(room_id, lock)
        finally:
            if not lock.locked() and not lock.statistics().tasks_waiting:
                self._locks.pop(room_id, None)  # ids guessed by clients must not pile up

    async def _locate_locked(self, room_id: int, lock: trio.Lock) -> str | None:
        async with lock:
            if room_id in self.owned:
                return self.node
            key = room_key(room_id)
            with trio.move_on_after(LOCATE_TIMEOUT):
                while True:
                    # The lease first: a room's creator holds it before anyone can learn
                    # the room id, while ``room:{id}`` is written after the create reply.
                    owner = await self.bp.owner_of(key)
                    if owner is not None and owner != self.node and await self.bp.is_alive(owner):
                        return owner
                    if owner is None and await self.bp.kv_get(f"room:{room_id}") is None:
                        return None  # no such room anywhere
                    if (owner is None and await self.bp.claim_room(key, LEASE_MS)) or (
                        owner is not None and await self.bp.steal_if_dead(key, LEASE_MS)
                    ):
                        await self._rebuild(room_id)
                        return self.node
                    await trio.sleep(0.2)
            raise BackplaneUnavailable(f"room {room_id}: no owner could be found")

    # -- owner side -------------------------------------------------------------------
    def _entry(self, session: Session, event: str, data: Any, seed: bytes, now: float,
               kind: str = "cmd") -> bytes:
        return _encode({"k": kind, "ip": session.ip, "r": session.room_id,
                        "u": session.user_id, "b": session.blocked, "e": event, "d": data,
                        "s": seed, "t": now})

    async def _create(self, conn: Any, data: Any, ref: Ref | None) -> None:
        try:
            while True:
                seed = secrets.token_bytes(16)
                room_id = SeededEntropy(seed).room_id()
                if await self.bp.reserve_id("room", str(room_id)):
                    break
            await self.bp.claim_room(room_key(room_id), LEASE_MS)
            owned = self.owned[room_id] = Owned()
            now = self.now()

            def apply(stream_id: str) -> None:
                owned.last_id = stream_id
                self.server.handle_event(conn, "room/create", data, ref, now=now,
                                         entropy=SeededEntropy(seed))

            try:
                await self.commits.commit(
                    room_key(room_id),
                    self._entry(conn.session, "room/create", data, seed, now), apply)
            except BackplaneUnavailable:
                self.owned.pop(room_id, None)
                raise
            room = self.hub.rooms.get(room_id)
            if room is None:  # the payload was refused: nothing was created
                self.owned.pop(room_id, None)
                await self.bp.release_room(room_key(room_id))
                await self.bp.delete_room(room_key(room_id))
                await self.bp.release_id("room", str(room_id))
            else:
                await self.bp.kv_set(f"room:{room_id}", room.stats_key.encode())
                self.stats_changed(room_id)
            self._after_command(room_id, owned)
        except BackplaneUnavailable:
            self._fail(conn, "room/create", ref, "internal", "the backplane is unavailable")

    async def _run(self, room_id: int, conn: Any, event: str, data: Any, ref: Ref | None,
                   result: Callable[[str | None], None] = _ignore) -> None:
        """Log, then apply and deliver one command of a room we own.

        Returns once the command is queued for the log; ``result(error_code)`` runs when
        it was applied (or refused), from the committer task, in log order.
        """
        owned = self.owned.get(room_id)
        if owned is None:
            self._fail(conn, event, ref, "internal", "the room moved; try again")
            result("internal")
            return
        if not self.bp.holds(room_key(room_id)):
            # Our lease may have lapsed (cut off from Redis): never commit then.
            result(self._refuse(conn, event, ref, "the room is moving; try again"))
            return
        seed, now = self._seeds.take(), self.now()

        def done(stream_id: str) -> None:
            if self.owned.get(room_id) is not owned:  # lost meanwhile: the new owner replays it
                result(self._refuse(conn, event, ref, "the room moved; try again"))
                return
            owned.last_id = stream_id
            error = self.server.handle_event(conn, event, data, ref, now=now,
                                             entropy=SeededEntropy(seed))
            self._after_command(room_id, owned)
            result(error)

        def failed(exc: BaseException) -> None:
            result(self._refuse(conn, event, ref, "the backplane is unavailable"))

        await self.commits.submit(room_key(room_id),
                                  self._entry(conn.session, event, data, seed, now),
                                  done, failed)

    async def _run_waiting(self, room_id: int, conn: Any, event: str, data: Any,
                           ref: Ref | None) -> str | None:
        """``_run``, returning once the command was applied: its error code."""
        finished = trio.Event()
        outcome: list[str | None] = ["internal"]

        def result(error: str | None) -> None:
            outcome[0] = error
            finished.set()

        await self._run(room_id, conn, event, data, ref, result)
        await finished.wait()
        return outcome[0]

    def _refuse(self, conn: Any, event: str, ref: Ref | None, message: str) -> str:
        """Answer a command that was not committed with ``internal``, at once."""
        self._fail(conn, event, ref, "internal", message)
        self._flush()
        return "internal"

    async def disconnected(self, room_id: int, session: Session) -> None:
        """A participant's connection ended (local or remote): log it, then go offline."""
        owned = self.owned.get(room_id)
        if owned is None:
            return
        now = self.now()

        def done(stream_id: str) -> None:
            if self.owned.get(room_id) is not owned:
                return
            owned.last_id = stream_id
            self.server.apply(self.hub.disconnect(session, now=now,
                                                  entropy=SeededEntropy(b"")), None)
            self._after_command(room_id, owned)

        await self.commits.submit(room_key(room_id),
                                  self._entry(session, "", None, b"", now, "disc"),
                                  done, _ignore)

    async def import_done(self, room_id: int, result: list[dict[str, str]] | ImportFailure
                          ) -> Any:
        owned = self.owned.get(room_id)
        if owned is None:
            return None
        now = self.now()
        payload = result.message if isinstance(result, ImportFailure) else result

        def apply(stream_id: str) -> Any:
            if self.owned.get(room_id) is not owned:
                return None  # moved meanwhile: the new owner replays the entry
            owned.last_id = stream_id
            outcome = self.hub.import_done(room_id, result, now=now,
                                           entropy=SeededEntropy(b""))
            self.server.apply(outcome.actions, None)
            self._after_command(room_id, owned)
            return outcome

        entry = self._entry(Session(ip=""), "", {"fail": isinstance(result, ImportFailure),
                                                 "v": payload}, b"", now, "imp")
        try:
            return await self.commits.commit(room_key(room_id), entry, apply)
        except BackplaneUnavailable:
            return None

    def _after_command(self, room_id: int, owned: Owned) -> None:
        self._flush()
        room = self.hub.rooms.get(room_id)
        if room is None:
            return  # removed: ``room_removed`` forgets it
        owned.since_snapshot += 1
        if owned.since_snapshot >= SNAPSHOT_EVERY:
            owned.since_snapshot = 0
            # Pickled now: the snapshot must hold exactly the commands up to ``last_id``.
            self.spawn(self._snapshot, room_id, pickle.dumps(room), owned.last_id)

    def stats_changed(self, room_id: int) -> None:
        """Coalesced: ``_stats_loop`` writes each changed room at most every STATS_FLUSH."""
        if room_id in self.owned:
            self._stats_dirty.add(room_id)

    async def _stats_loop(self) -> None:
        """Write the documents of watched rooms that changed, all in one round trip.

        A document is built only for a room whose stats page, JSON API or SSE stream is
        open on some node (readers keep ``statswant:{room}`` alive, see ``want_stats``):
        building and writing every busy room's document each second cost a clustered
        node more than forwarding its events did. The page shows at most one update a
        second anyway (§8).
        """
        while True:
            await trio.sleep(STATS_FLUSH)
            self._stats_fresh &= self.owned.keys()
            rooms = [r for r in self.owned if r in self.hub.rooms]
            if not rooms:
                continue
            async with self._stats_write:
                try:
                    wanted = await self.bp.kv_exist([f"statswant:{r}" for r in rooms])
                except BackplaneUnavailable:
                    continue
                dirty, self._stats_dirty = self._stats_dirty, set()
                docs, written = [], []
                for room_id, want in zip(rooms, wanted, strict=True):
                    if not want:
                        self._stats_fresh.discard(room_id)  # its document may go stale now
                        continue
                    room = self.hub.rooms.get(room_id)
                    if room is None or room_id not in self.owned or (
                            room_id in self._stats_fresh and room_id not in dirty):
                        continue
                    blob = _encode((room.stats_version, room_stats(room, time.time())))
                    docs.append((f"stats:{room_id}", blob, f"stats:{room_id}", b"changed"))
                    written.append(room_id)
                if not docs:
                    continue
                try:
                    await self.bp.write_stats(docs)
                    self._stats_fresh.update(written)
                except BackplaneUnavailable:
                    self._stats_dirty |= dirty  # try again on the next flush

    async def want_stats(self, room_id: int) -> None:
        """Ask the room's owner to keep its stats document current (a reader is open).

        When nobody asked for a while the document may be stale: then this waits (up to
        two flushes) for the owner to write a fresh one.
        """
        now = trio.current_time()
        last = self._stats_wanted.get(room_id)
        if last is not None and now - last < STATS_WANT_TTL / 3:
            return
        stale = last is None or now - last >= STATS_WANT_TTL
        if len(self._stats_wanted) > 1000:  # forget rooms nobody here reads any more
            self._stats_wanted = {r: t for r, t in self._stats_wanted.items()
                                  if now - t < STATS_WANT_TTL}
        self._stats_wanted[room_id] = now
        event = self.stats_event(room_id)
        await self.watch_stats(room_id)
        try:
            await self.bp.kv_set(f"statswant:{room_id}", b"1", ttl_ms=int(STATS_WANT_TTL * 1000))
        except BackplaneUnavailable:
            self._stats_wanted.pop(room_id, None)
            raise
        if stale:
            with trio.move_on_after(2.5 * STATS_FLUSH):
                await event.wait()

    async def watch_stats(self, room_id: int) -> None:
        """Subscribe this node to a room's stats notices (for its SSE streams)."""
        channel = f"stats:{room_id}"
        if channel not in self._watched:
            self._watched.add(channel)
            try:
                await self.bp.subscribe_room(channel)
            except BackplaneUnavailable:
                self._watched.discard(channel)

    def stats_event(self, room_id: int) -> trio.Event:
        event = self._stats_events.get(room_id)
        if event is None:
            event = self._stats_events[room_id] = trio.Event()
        return event

    async def _room_loop(self) -> None:
        async for channel, data in self.bp.room_messages:
            if channel.startswith("stats:"):
                room_id = int(channel[6:])
                event = self._stats_events.pop(room_id, None)
                if event is not None:
                    event.set()
                if data == b"closed" and channel in self._watched:
                    # The room is gone: stop listening (streams see it on their next read).
                    self._watched.discard(channel)
                    self.spawn(self._unsubscribe, channel)

    async def _unsubscribe(self, channel: str) -> None:
        await self.bp.unsubscribe_room(channel)

    async def _snapshot(self, room_id: int, blob: bytes, last_id: str) -> None:
        try:
            if await self.bp.save_snapshot(room_key(room_id), blob, last_id):
                await self.bp.trim_log(room_key(room_id), last_id)
        except BackplaneUnavailable:
            pass

    def room_removed(self, room_id: int) -> None:
        """The core removed a room we own (closed or idle): forget it everywhere."""
        if room_id in self.owned and room_id not in self._gone:
            self._gone.add(room_id)
            self.spawn(self._forget, room_id)

    async def _forget(self, room_id: int) -> None:
        """The room was closed or expired: drop it from Redis and from this node."""
        self.owned.pop(room_id, None)
        self._stats_dirty.discard(room_id)
        try:
            await self.bp.delete_room(room_key(room_id))
            await self.bp.kv_delete(f"room:{room_id}")
            async with self._stats_write:  # no stats write of the room may come after this
                await self.bp.kv_delete(f"stats:{room_id}")
            await self.bp.publish_room(f"stats:{room_id}", b"closed")
            await self.bp.release_room(room_key(room_id))
            await self.bp.release_id("room", str(room_id))
        except BackplaneUnavailable:
            pass
        await trio.sleep(60)
        self._gone.discard(room_id)

    async def _rebuild(self, room_id: int) -> None:
        """Rebuild a room from its snapshot and log, then mark everyone offline."""
        key = room_key(room_id)
        self.hub.state.drop_room(room_id)
        snap = await self.bp.load_snapshot(key)
        after = None
        if snap is not None:
            blob, after = snap
            self.hub.state.adopt_room(pickle.loads(blob))
        entries = await self.bp.read_log(key, after)
        for _, raw in entries:
            entry = _decode(raw)
            session = Session(ip=entry["ip"], room_id=entry["r"], user_id=entry["u"],
                              blocked=entry["b"])
            now, entropy = entry["t"], SeededEntropy(entry["s"])
            if entry["k"] == "cmd":
                self.hub.handle(session, entry["e"], entry["d"], now=now, entropy=entropy)
            elif entry["k"] == "disc":
                self.hub.disconnect(session, now=now, entropy=entropy)
            elif entry["k"] == "imp":
                value = entry["d"]
                self.hub.import_done(room_id, ImportFailure(value["v"]) if value["fail"]
                                     else value["v"], now=now, entropy=entropy)
        self.owned[room_id] = Owned(last_id=entries[-1][0] if entries else after or "0")
        room = self.hub.rooms.get(room_id)
        if room is None:
            return
        self.server.rooms_opened(room_id)
        # Whoever was online was connected through the node that died (or its clients
        # were closed with 1011): they are offline until they resume.
        for p in list(room.participants.values()):
            if p.online:
                await self.disconnected(room_id, Session(ip="", room_id=room_id,
                                                         user_id=p.user_id))
        self.stats_changed(room_id)

    def _lease_lost(self, key: str) -> None:
        """Another node owns the room now (we were cut off): drop our copy."""
        room_id = int(key)
        self.owned.pop(room_id, None)
        room = self.hub.state.drop_room(room_id)
        if room is None:
            return
        for uid in list(room.participants):
            conn = self.server.conns.pop((room_id, uid), None)
            if conn is not None:
                conn.replaced = True
                conn.close(1011, "room moved to another node")
        self._flush()

    # -- forwarding ---------------------------------------------------------------------
    async def _forward(self, owner: str, conn: ObserverConnection, event: str, data: Any,
                       ref: Ref | None) -> bool:
        """Run the event on the owner's node; False when that node died before answering.

        An event of a bound connection that cannot change its binding is sent without
        waiting (the owner applies a connection's commands in the order sent and sends
        their frames back), except every ``FORWARD_WINDOW``-th, which waits for the
        owner: a connection cannot run ahead of its room by more than that.

        The caller may retry an unbound event (join/rehost/rejoin) elsewhere: re-attaching
        is idempotent. A bound connection whose owner died is closed with 1011 instead —
        the client resumes and finds the event applied (it is in the log) or not.
        """
        s = conn.session
        sent = self._sent.get(conn.cid, 0) + 1
        self._sent[conn.cid] = sent
        msg = {"t": "cmd", "from": self.node, "c": conn.cid, "n": sent, "id": 0,
               "ep": conn.endpoint, "ip": s.ip, "r": s.room_id, "u": s.user_id,
               "b": s.blocked, "e": event, "d": data, "ref": ref}
        if _unwaited(s, event) and sent % FORWARD_WINDOW:
            if not self._send_msg(owner, msg, -conn.cid):
                self._fail(conn, event, ref, "internal", "the backplane is unavailable")
            return True
        self._next_id += 1
        cmd_id = msg["id"] = self._next_id
        send, recv = trio.open_memory_channel[list[Any]](1)
        self._pending[cmd_id] = send
        try:
            if not self._send_msg(owner, msg, cmd_id):
                raise BackplaneUnavailable("the outbox to the room's node is full")
            deadline = trio.current_time() + FORWARD_TIMEOUT
            while trio.current_time() < deadline:
                with trio.move_on_after(WATCH_INTERVAL):
                    result = await recv.receive()
                    if not result:
                        raise BackplaneUnavailable("the command could not be sent")
                    room_id, user_id, error = result
                    s.room_id, s.user_id = room_id, user_id
                    conn.remote_owner = owner if room_id is not None else None
                    if event in REATTACH and error in COUNTED:
                        self.hub.count_join_failure(s.ip, self.server.now())
                    return True
                if not await self.bp.is_alive(owner):
                    break
            if s.bound:
                conn.remote_owner = None
                conn.replaced = True
                conn.close(1011, "the room's node is gone; resume")
                return True
            return False
        except BackplaneUnavailable:
            self._fail(conn, event, ref, "internal", "the backplane is unavailable")
            return True
        finally:
            self._pending.pop(cmd_id, None)

    async def _inbox_loop(self) -> None:
        async for raw in self.bp.inbox:
            try:
                msg = _decode(raw)
            except msgspec.DecodeError:
                continue
            if msg.get("t") == "many":  # several messages merged by the sender's outbox
                for inner in msg["m"]:
                    await self._inbox_message(_decode(inner))
            else:
                await self._inbox_message(msg)

    async def _inbox_message(self, msg: dict[str, Any]) -> None:
        kind = msg.get("t")
        if kind == "cmd":
            # In order, without a task per command: ``submit`` only waits while the commit
            # queue is full (then the inbox stops being read: back-pressure onto Redis).
            await self._remote_command(msg)
        elif kind == "out":
            self._deliver(msg["items"])
        elif kind == "gone":
            self._remote_gone(msg["from"], msg["c"])
        elif kind == "ws":
            self._ws_remote_message(msg)
        elif kind == "wsgone":
            self._ws_stub_gone((msg["from"], msg["c"]))

    async def _remote_command(self, msg: dict[str, Any]) -> None:
        """Run a command forwarded by another node for a room we own."""
        key = (msg["from"], msg["c"])
        rc = self.remote.get(key)
        if rc is None:
            rc = self.remote[key] = RemoteConn(self, msg["from"], msg["c"], msg["ep"], msg["ip"])
            rc.session.room_id, rc.session.user_id = msg["r"], msg["u"]
        elif msg["n"] != rc.sent + 1 and rc.session.bound:
            # A command of this connection was lost on the way (pub/sub is at most once):
            # the client must resume rather than go on with a gap.
            self._remote_gone(*key)  # offline first: the close below forgets the stand-in
            rc.close(1011, "commands were lost; resume")
            self._flush()
            return
        rc.sent = msg["n"]
        rc.session.blocked = msg["b"]
        data, cmd_id = msg["d"], msg["id"]
        room_id = rc.session.room_id if rc.session.bound else (
            data.get("room_id") if isinstance(data, dict) else None)

        def result(error: str | None) -> None:
            s = rc.session
            items = rc.drain()
            if cmd_id:
                items.append([rc.cid, "r", cmd_id, s.room_id, s.user_id, error])
            if not s.bound and self.remote.get(key) is rc:
                del self.remote[key]
            if items:
                self._send_to(rc.node, items)

        if room_id in self.owned:
            await self._run(room_id, rc, msg["e"], data, msg["ref"], result)
        elif room_id in self._gone:
            # Closed or expired here a moment ago: answer as any node will from now on.
            result(self.server.handle_event(rc, msg["e"], data, msg["ref"]))
        else:
            self._fail(rc, msg["e"], msg["ref"], "internal", "the room moved; try again")
            result("internal")

    def _flush(self) -> None:
        """Publish the frames the last command produced for remote connections."""
        if not self.touched:
            return
        by_node: dict[str, list[Any]] = {}
        for rc in self.touched:
            items = rc.drain()
            if items:
                by_node.setdefault(rc.node, []).extend(items)
        self.touched.clear()
        for node, items in by_node.items():
            self._send_to(node, items)

    def _send_to(self, node: str, items: list[Any]) -> None:
        """Queue frames, closes and results for a node's connections."""
        self._send_msg(node, {"t": "out", "items": items})

    def _send_msg(self, node: str, msg: dict[str, Any], cmd_id: int = 0) -> bool:
        """Queue a message for a node's inbox; False if its outbox is full.

        One sender task per node keeps the messages in order and merges what is queued
        into one PUBLISH; ``cmd_id`` names a forwarded command whose waiter must hear of
        a failed send.
        """
        channel = self._outboxes.get(node)
        if channel is None:
            send, recv = trio.open_memory_channel[tuple[bytes, int]](OUTBOX_MESSAGES)
            channel = self._outboxes[node] = send
            self.spawn(self._sender, node, recv)
        try:
            channel.send_nowait((_encode(msg), cmd_id))
        except trio.WouldBlock:
            log.warning("outbox to node %s is full; closing its connections", node)
            for (n, cid) in [k for k in self.remote if k[0] == node]:
                self._remote_gone(n, cid)
            return False
        return True

    async def _sender(self, node: str, recv: trio.MemoryReceiveChannel[tuple[bytes, int]]
                      ) -> None:
        async with recv:
            async for first in recv:
                batch = [first]
                while len(batch) < MAX_MERGED:
                    try:
                        batch.append(recv.receive_nowait())
                    except trio.WouldBlock:
                        break
                payload = batch[0][0] if len(batch) == 1 else _encode(
                    {"t": "many", "m": [raw for raw, _ in batch]})
                if self.bp.publish_nowait(node, payload):
                    continue
                try:  # down or backed up: wait for it (back-pressure), or fail
                    await self.bp.publish(node, payload)
                except BackplaneUnavailable:
                    for _, cmd_id in batch:
                        if cmd_id < 0:  # a command nobody waits for: its client resumes
                            conn = self.local.get(-cmd_id)
                            if conn is not None:
                                conn.remote_owner = None
                                conn.replaced = True
                                conn.close(1011, "the backplane is unavailable; resume")
                            continue
                        waiter = self._pending.get(cmd_id) if cmd_id else None
                        if waiter is not None:
                            with contextlib.suppress(trio.WouldBlock):
                                waiter.send_nowait([])

    def _deliver(self, items: list[Any]) -> None:
        """Frames, closes and command results from an owner for our connections."""
        for item in items:
            conn = self.local.get(item[0])
            if item[1] in ("r", "w"):
                waiter = self._pending.get(item[2])
                if waiter is not None:
                    try:
                        waiter.send_nowait(item[3:])
                    except trio.WouldBlock:
                        pass
                continue
            if conn is None:
                continue
            if item[1] == "f":
                conn.push(item[2])
            elif item[1] == "c":
                code, reason, flush = item[2:5]
                conn.replaced = True  # the owner already handled the participant
                conn.remote_owner = None
                conn.close(code, reason, flush=flush)

    def local_closed(self, conn: ObserverConnection) -> None:
        """A client connection of this node ended."""
        self.local.pop(conn.cid, None)
        self._sent.pop(conn.cid, None)
        owner = conn.remote_owner
        if owner is not None and not conn.replaced:
            self._send_msg(owner, {"t": "gone", "from": self.node, "c": conn.cid})


    def _remote_gone(self, node: str, cid: int) -> None:
        rc = self.remote.pop((node, cid), None)
        if rc is None or rc.replaced:
            return
        s = rc.session
        if s.room_id is None or s.user_id is None:
            return
        if self.server.conns.get((s.room_id, s.user_id)) is rc:
            del self.server.conns[(s.room_id, s.user_id)]
            self.spawn(self.disconnected, s.room_id, Session(ip=s.ip, room_id=s.room_id,
                                                             user_id=s.user_id))

    # -- /ws dialect across nodes --------------------------------------------------------
    # A /ws room lives on the node that created it (not persisted: the seed dialect has no
    # resume). A connection in no room is handled locally; JOIN_ROOM for a room of another
    # node is forwarded there, and while the connection is in that room every message is.
    async def ws_message(self, conn: Any, text: str | None, binary: bool) -> None:
        hub = self.server.signaling
        owner = conn.remote_owner
        if owner is None:
            room = _ws_join_target(text)
            if room is not None and room not in hub.room_ids():
                try:
                    found = await self.bp.kv_get(f"ws:{room}")
                    if found is not None and found.decode() != self.node and \
                            await self.bp.is_alive(found.decode()):
                        owner = found.decode()
                except BackplaneUnavailable:
                    owner = None
            if owner is None:
                frames = hub.receive(conn.conn_id, text, binary=binary)
                self.server.deliver_signaling(frames)
                self._ws_register(frames)
                return
        self._next_id += 1
        cmd_id = self._next_id
        send, recv = trio.open_memory_channel[list[Any]](1)
        self._pending[cmd_id] = send
        try:
            if not self._send_msg(owner, {"t": "ws", "from": self.node, "c": conn.cid,
                                          "id": cmd_id, "text": text, "bin": binary}, cmd_id):
                raise BackplaneUnavailable("the outbox to the room's node is full")
            with trio.move_on_after(FORWARD_TIMEOUT):
                result = await recv.receive()
                if not result:
                    raise BackplaneUnavailable("the message could not be sent")
                (in_room,) = result
                if in_room and conn.remote_owner is None:
                    # Joined a room of another node: leave ours (no LEFT_ROOM), as §7 says.
                    self.server.deliver_signaling(hub.disconnect(conn.conn_id))
                    self.server.ws_conns.pop(conn.conn_id, None)
                    conn.conn_id = hub.connect()
                    self.server.ws_conns[conn.conn_id] = conn
                conn.remote_owner = owner if in_room else None
                return
            conn.remote_owner = None
            conn.close(1011, "the room's node did not answer")
        except BackplaneUnavailable:
            conn.close(1011, "the backplane is unavailable")
        finally:
            self._pending.pop(cmd_id, None)

    def _ws_remote_message(self, msg: dict[str, Any]) -> None:
        hub = self.server.signaling
        key = (msg["from"], msg["c"])
        stub = self._ws_stubs.get(key)
        if stub is None:
            stub = self._ws_stubs[key] = hub.connect()
            self._ws_stub_of[stub] = key
        frames = hub.receive(stub, msg["text"], binary=msg["bin"])
        self.server.deliver_signaling(frames)
        self._ws_register(frames)
        in_room = hub.room_of(stub) is not None
        if not in_room:
            self._ws_stub_gone(key)
        self._send_to(key[0], [[key[1], "w", msg["id"], in_room]])

    def ws_stub_frame(self, conn_id: int, frame: dict[str, Any]) -> None:
        """A /ws frame for a connection held by another node."""
        key = self._ws_stub_of.get(conn_id)
        if key is not None:
            self._send_to(key[0], [[key[1], "f", text_frame(encode_json(frame))]])

    def _ws_stub_gone(self, key: tuple[str, int]) -> None:
        stub = self._ws_stubs.pop(key, None)
        if stub is not None:
            frames = self.server.signaling.disconnect(stub)
            self._ws_stub_of.pop(stub, None)
            self.server.deliver_signaling(frames)

    def ws_closed(self, conn: Any) -> None:
        self.local.pop(conn.cid, None)
        if conn.remote_owner is not None:
            self._send_msg(conn.remote_owner, {"t": "wsgone", "from": self.node, "c": conn.cid})

    def _ws_register(self, frames: list[tuple[int, dict[str, Any]]]) -> None:
        for _, frame in frames:
            if frame.get("type") == "ROOM_CREATED":
                room = frame["roomid"]
                self._ws_registered.add(room)
                self.spawn(self._kv_set, f"ws:{room}", self.node.encode())

    async def _kv_set(self, key: str, value: bytes) -> None:
        try:
            await self.bp.kv_set(key, value)
        except BackplaneUnavailable:
            pass

    def _touch_interval(self) -> float:
        return min(TOUCH_INTERVAL, max(WATCH_INTERVAL, self.server.config.room_idle_expiry / 2))

    async def _touch_rooms(self) -> None:
        """Keep our rooms' keys alive; a room whose owner died and that nobody resumes
        expires from Redis after the idle expiry (plus a margin)."""
        ttl = int((self.server.config.room_idle_expiry + 2 * self._touch_interval()) * 1000)
        for room_id in list(self.owned):
            await self.bp.expire_room(room_key(room_id), ttl,
                                      kv=[f"room:{room_id}", f"stats:{room_id}"],
                                      ids=[("room", str(room_id))])

    async def _ws_reconcile(self) -> None:
        """Unregister /ws rooms that no longer exist here."""
        alive = set(self.server.signaling.room_ids())
        for room in list(self._ws_registered - alive):
            self._ws_registered.discard(room)
            await self.bp.kv_delete(f"ws:{room}")

    async def _watch_loop(self) -> None:
        """Close clients of dead owners (1011), mark clients of dead nodes offline."""
        while True:
            await trio.sleep(WATCH_INTERVAL)
            try:
                owners = {c.remote_owner for c in self.local.values() if c.remote_owner}
                for owner in owners:
                    if not await self.bp.is_alive(owner):
                        for conn in list(self.local.values()):
                            if conn.remote_owner == owner:
                                conn.replaced = True
                                conn.remote_owner = None
                                conn.close(1011, "the room's node is gone; resume")
                for node in list(self._outboxes):
                    if node not in {rc.node for rc in self.remote.values()} and \
                            not await self.bp.is_alive(node):
                        self._outboxes.pop(node).close()  # its sender task ends
                for node in {rc.node for rc in self.remote.values()}:
                    if not await self.bp.is_alive(node):
                        for (n, cid) in [k for k in self.remote if k[0] == node]:
                            self._remote_gone(n, cid)
                for node in {key[0] for key in self._ws_stubs}:
                    if not await self.bp.is_alive(node):
                        for key in [k for k in self._ws_stubs if k[0] == node]:
                            self._ws_stub_gone(key)
                await self._ws_reconcile()
                if trio.current_time() >= self._next_touch:
                    self._next_touch = trio.current_time() + self._touch_interval()
                    await self._touch_rooms()
                self.server.backplane_ok = self.bp.available
            except BackplaneUnavailable:
                self.server.backplane_ok = False
