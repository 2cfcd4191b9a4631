"""The owner's side of a room: log, then apply, then deliver; and every answer truthful.

Each room has one owner node at a time, the holder of its lease. Every command for the
room (a client event, a connection ending, an import result) is appended to the room's
log before it is applied, with the CSPRNG seed and the clock value the core then uses, so
replaying the log rebuilds the room exactly (``rebuild``). Appends are *fenced*: each
carries the lease's fence (``<node>/<epoch>``) and Redis refuses it if the lease moved on.

An append whose answer never came (Redis paused, the connection cut) may still land. Then
the room stops taking commands and ``_recover`` finds out: it moves the lease to a new
epoch — from then on no append of the old epoch can land, whenever it arrives — reads the
log back and applies exactly the entries that landed, in log order, answering the others
as not applied. If it cannot find out within ``RECOVER_DEADLINE``, nothing is answered:
the room is dropped here and its connections closed with 1011, and the clients resume and
learn the truth from ``seq``. An event is never answered ``internal`` while it may still
take effect.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import trio

from relay.backplane.redis import BackplaneUnavailable, Fenced
from relay.core.context import Session
from relay.core.errors import EventError
from relay.core.hub import Outcome
from relay.core.ids import SeededEntropy
from relay.core.steps_import import ImportFailure
from relay.ports import Peer, Ref

from .context import LOCATE_TIMEOUT, ClusterContext
from .rebuild import replay_entries
from .snapshot import decode_room, encode_room
from .wire import (
    Command,
    Disconnected,
    Entry,
    ImportDone,
    WireError,
    decode_record,
    encode_record,
    payload_text,
)

log = logging.getLogger("relay.cluster")

LEASE_MS = 6000
SNAPSHOT_EVERY = 500
RECOVER_DEADLINE = 10.0
GONE_FOR = 60.0  # a removed room answers as removed here while other nodes may route to us

Result = Callable[[str | None], None]


def room_key(room_id: int) -> str:
    return str(room_id)


def _ignore(_: str | None) -> None:
    pass


@dataclass(slots=True, eq=False)
class _Pending:
    """A command sent to Redis whose outcome is unknown."""

    cmd: bytes
    apply: Callable[[str], None]
    refuse: Callable[[], None]
    peer: Peer | None


@dataclass(slots=True, eq=False)
class Owned:
    """A room this node owns (its commands are applied in log order by the committer)."""

    last_id: str = "0"
    since_snapshot: int = 0
    #: Commands whose outcome is unknown, in submission order; the room takes no new
    #: command until they are resolved.
    unresolved: list[_Pending] | None = None


class OwnerRooms:
    def __init__(self, ctx: ClusterContext, stats_changed: Callable[[int], None],
                 room_removed: Callable[[int], None]) -> None:
        self.ctx = ctx
        self.host = ctx.host
        self.hub = ctx.host.hub
        self.owned: dict[int, Owned] = {}
        #: Rooms removed here recently, while other nodes may still route to us.
        self.gone: set[int] = set()
        self._stats_changed = stats_changed
        self._removed = room_removed
        self._locks: dict[int, trio.Lock] = {}  # serialises locate/rebuild per room

    # -- commands ----------------------------------------------------------------------
    async def run(self, room_id: int, peer: Peer, event: str, data: Any, ref: Ref | None,
                  result: Result = _ignore, *, seed: bytes | None = None) -> None:
        """Log, then apply and deliver one event of a room we own.

        Returns once the command is queued for the log; ``result(error_code)`` runs when
        it was applied or refused (``"internal"``: it was not and will not be applied).
        """
        owned = self.owned.get(room_id)
        if owned is None:
            result(self.refuse(peer, event, ref, "the room moved; try again"))
            return
        s = peer.session
        if seed is None:
            seed = self.ctx.seeds.take()
        now = self.host.now()
        entry = Command(s.ip, s.room_id, s.user_id, s.blocked, event, payload_text(data),
                        seed, now, s.framing, s.device)

        def apply(stream_id: str) -> None:
            owned.last_id = stream_id
            error = self.host.handle_event(peer, event, data, ref, now=now,
                                           entropy=SeededEntropy(seed))
            self._after_command(room_id, owned)
            result(error)

        def refuse() -> None:
            result(self.refuse(peer, event, ref, "the backplane is unavailable; try again"))

        await self._submit(room_id, owned, entry, apply, refuse, peer)

    async def run_waiting(self, room_id: int, peer: Peer, event: str, data: Any,
                          ref: Ref | None, *, seed: bytes | None = None) -> str | None:
        """``run``, returning once the command was applied or refused: its error code.

        If its outcome cannot be known, the peer is closed (1011) and this returns
        ``"internal"`` without anything having been answered.
        """
        finished = trio.Event()
        outcome: list[str | None] = ["internal"]

        def result(error: str | None) -> None:
            outcome[0] = error
            finished.set()

        await self.run(room_id, peer, event, data, ref, result, seed=seed)
        with trio.move_on_after(RECOVER_DEADLINE + LOCATE_TIMEOUT):
            await finished.wait()
        return outcome[0]

    def refuse(self, peer: Peer, event: str, ref: Ref | None, message: str) -> str:
        """Answer a command that was not and will not be applied with ``internal``."""
        peer.send_error("internal", message, event, ref)
        if ref is not None:
            peer.send_ack(ref, EventError("internal", message))
        self.ctx.remotes.flush()
        return "internal"

    async def disconnected(self, room_id: int, session: Session) -> None:
        """A participant's connection ended (local or remote): log it, then go offline."""
        owned = self.owned.get(room_id)
        if owned is None or session.room_id is None or session.user_id is None:
            return
        now = self.host.now()
        entry = Disconnected(session.ip, session.room_id, session.user_id, now)

        def apply(stream_id: str) -> None:
            owned.last_id = stream_id
            self.host.apply(self.hub.disconnect(session, now=now, entropy=SeededEntropy(b"")),
                            None)
            self._after_command(room_id, owned)

        await self._submit(room_id, owned, entry, apply, lambda: None, None)

    async def import_done(self, room_id: int, result: list[dict[str, str]] | ImportFailure
                          ) -> Outcome | None:
        owned = self.owned.get(room_id)
        if owned is None:
            return None
        now = self.host.now()
        failure = result.message if isinstance(result, ImportFailure) else None
        entry = ImportDone(failure, None if failure is not None else result,  # type: ignore[arg-type]
                           now)
        finished = trio.Event()
        outcome: list[Outcome] = []

        def apply(stream_id: str) -> None:
            owned.last_id = stream_id
            done = self.hub.import_done(room_id, result, now=now, entropy=SeededEntropy(b""))
            self.host.apply(done.actions, None)
            self._after_command(room_id, owned)
            outcome.append(done)
            finished.set()

        await self._submit(room_id, owned, entry, apply, finished.set, None)
        await finished.wait()
        return outcome[0] if outcome else None

    async def _submit(self, room_id: int, owned: Owned, entry: Entry,
                      apply: Callable[[str], None], refuse: Callable[[], None],
                      peer: Peer | None) -> None:
        key = room_key(room_id)
        fence = self.ctx.bp.fence(key)
        if fence is None or not self.ctx.bp.holds(key) or owned.unresolved is not None:
            # Our lease may have lapsed (cut off from Redis), or an earlier command's
            # outcome is still being found out: nothing is sent, so "not applied" is true.
            refuse()
            return
        cmd = self.ctx.command_id()
        pending = _Pending(cmd, apply, refuse, peer)

        def done(stream_id: str) -> None:
            if self.owned.get(room_id) is not owned:
                refuse()  # lost meanwhile: the new owner replays it from the log
                return
            apply(stream_id)

        def failed(exc: BaseException) -> None:
            refuse()
            if isinstance(exc, Fenced):
                self.lease_lost(key)

        def unknown(exc: BaseException) -> None:
            if self.owned.get(room_id) is not owned:
                if peer is not None:
                    peer.close(1011, "the outcome of an event is unknown; resume")
                return
            if owned.unresolved is None:
                owned.unresolved = []
                self._start_recovery(room_id, owned)
            owned.unresolved.append(pending)

        await self.ctx.commits.submit(key, fence, encode_record(cmd, entry), done, failed,
                                      unknown)

    def _start_recovery(self, room_id: int, owned: Owned) -> None:
        async def job() -> None:
            await self._recover(room_id, owned)

        if not self.host.spawn_in_room(room_id, job):
            self.ctx.spawn(job)

    async def _recover(self, room_id: int, owned: Owned) -> None:
        """Find out which of the room's unknown commands landed; see the module docstring."""
        key = room_key(room_id)
        entries: list[tuple[str, bytes]] | None = None
        try:
            with trio.move_on_after(RECOVER_DEADLINE):
                while self.owned.get(room_id) is owned:
                    try:
                        if not await self.ctx.bp.refence(key):
                            break  # the lease moved: the new owner has the truth
                        entries = await self.ctx.bp.read_log(key, owned.last_id)
                        break
                    except BackplaneUnavailable:
                        await trio.sleep(0.25)
        finally:
            pending, owned.unresolved = owned.unresolved or [], None
            self.ctx.commits.unblock(key)
            if entries is not None and self.owned.get(room_id) is owned:
                self._resolve(pending, entries)
            else:
                for p in pending:
                    if p.peer is not None:
                        p.peer.close(1011, "the outcome of an event is unknown; resume")
                if self.owned.get(room_id) is owned:
                    log.warning("room %s: could not find out what happened to %d commands; "
                                "dropping it here (its clients resume)", room_id, len(pending))
                    self.drop(room_id, "the room's state is being recovered; resume")

    def _resolve(self, pending: list[_Pending], entries: list[tuple[str, bytes]]) -> None:
        landed: dict[bytes, str] = {}
        for stream_id, raw in entries:
            try:
                landed[decode_record(raw).cmd] = stream_id
            except WireError as exc:
                log.error("unreadable log entry %s: %s", stream_id, exc)
        for p in pending:
            found = landed.get(p.cmd)
            if found is None:
                p.refuse()
            else:
                p.apply(found)

    def _after_command(self, room_id: int, owned: Owned) -> None:
        self.ctx.remotes.flush()
        room = self.hub.rooms.get(room_id)
        if room is None:
            return  # removed: ``removed`` forgets it
        owned.since_snapshot += 1
        if owned.since_snapshot >= SNAPSHOT_EVERY:
            owned.since_snapshot = 0
            # Encoded now: the snapshot must hold exactly the commands up to ``last_id``.
            blob, last_id = encode_room(room), owned.last_id

            async def write() -> None:
                await self._snapshot(room_id, blob, last_id)

            self.host.spawn_in_room(room_id, write)

    async def _snapshot(self, room_id: int, blob: bytes, last_id: str) -> None:
        try:
            if await self.ctx.bp.save_snapshot(room_key(room_id), blob, last_id):
                await self.ctx.bp.trim_log(room_key(room_id), last_id)
        except BackplaneUnavailable:
            pass

    # -- ownership -----------------------------------------------------------------------
    async def locate(self, room_id: int) -> str | None:
        """The owner's node id; takes over (and rebuilds) a room whose owner is gone."""
        if room_id in self.owned:
            return self.ctx.node_id
        lock = self._locks.setdefault(room_id, trio.Lock())
        try:
            async with lock:
                return await self._locate(room_id)
        finally:
            if not lock.locked() and not lock.statistics().tasks_waiting:
                self._locks.pop(room_id, None)  # ids guessed by clients must not pile up

    async def _locate(self, room_id: int) -> str | None:
        if room_id in self.owned:
            return self.ctx.node_id
        bp, key = self.ctx.bp, room_key(room_id)
        with trio.move_on_after(LOCATE_TIMEOUT):
            while True:
                # The lease first: a room's creator holds it before anyone can learn the
                # room id, while ``room:{id}`` is written after the create reply.
                owner = await bp.owner_of(key)
                if owner is not None and owner != self.ctx.node_id and await bp.is_alive(owner):
                    return owner
                if owner is None and await bp.kv_get(f"room:{room_id}") is None:
                    return None  # no such room anywhere
                if (owner is None and await bp.claim_room(key, LEASE_MS)) or (
                        owner is not None and await bp.steal_if_dead(key, LEASE_MS)):
                    return self.ctx.node_id if await self._rebuild(room_id) else None
                await trio.sleep(0.2)
        raise BackplaneUnavailable(f"room {room_id}: no owner could be found")

    async def create(self, peer: Peer, data: Any, ref: Ref | None) -> None:
        """``room/create``: the room lives here, under an id reserved cluster-wide.

        The core draws the room id from the command's seed, so the seed is drawn first
        and its id reserved before the command is logged and run with that seed.
        """
        bp = self.ctx.bp
        try:
            while True:
                seed = self.ctx.seeds.take()
                room_id = SeededEntropy(seed).room_id()
                if await bp.reserve_id("room", str(room_id)):
                    break
            await bp.claim_room(room_key(room_id), LEASE_MS)
        except BackplaneUnavailable:
            self.refuse(peer, "room/create", ref, "the backplane is unavailable; try again")
            return
        self.owned[room_id] = Owned()
        await self.run_waiting(room_id, peer, "room/create", data, ref, seed=seed)
        room = self.hub.rooms.get(room_id)
        try:
            if room is None:  # refused (nothing was created), or dropped
                if self.owned.pop(room_id, None) is not None:
                    await bp.release_room(room_key(room_id))
                    await bp.delete_room(room_key(room_id))
                    await bp.release_id("room", str(room_id))
            else:
                await bp.kv_set(f"room:{room_id}", room.stats_key.encode())
                self._stats_changed(room_id)
        except BackplaneUnavailable:
            pass  # the lease lapses by itself; the room expires with its keys

    async def _rebuild(self, room_id: int) -> bool:
        """Rebuild a room from its snapshot and log, then mark everyone offline."""
        bp, key = self.ctx.bp, room_key(room_id)
        self.hub.state.drop_room(room_id)
        snap = await bp.load_snapshot(key)
        after = None
        if snap is not None:
            blob, after = snap
            try:
                self.hub.state.adopt_room(decode_room(blob, self.hub.settings))
            except WireError as exc:
                log.error("room %s: its snapshot cannot be read (%s); the room is lost",
                          room_id, exc)
                await bp.release_room(key)
                return False
        entries = await bp.read_log(key, after)
        replay_entries(self.hub, room_id, entries)
        self.owned[room_id] = Owned(last_id=entries[-1][0] if entries else after or "0")
        room = self.hub.rooms.get(room_id)
        if room is None:
            return True
        self.host.room_opened(room_id)
        # Whoever was online was connected through the node that died (or its clients
        # were closed with 1011): they are offline until they resume.
        for p in list(room.participants.values()):
            if p.online:
                await self.disconnected(room_id, Session(ip="", room_id=room_id,
                                                         user_id=p.user_id))
        self._stats_changed(room_id)
        return True

    def lease_lost(self, key: str) -> None:
        """Another node owns the room now (or may): drop our copy, close its connections."""
        try:
            room_id = int(key)
        except ValueError:
            return
        self.drop(room_id, "room moved to another node")

    def drop(self, room_id: int, reason: str) -> None:
        owned = self.owned.pop(room_id, None)
        room = self.hub.state.drop_room(room_id)
        if owned is not None and owned.unresolved:
            for p in owned.unresolved:
                if p.peer is not None:
                    p.peer.close(1011, reason)
        if room is not None:
            for uid in list(room.participants):
                peer = self.host.release_peer(room_id, uid)
                if peer is not None:
                    peer.close(1011, reason)
        self.host.room_dropped(room_id)
        self.ctx.remotes.flush()

    def removed(self, room_id: int) -> None:
        """The core removed a room we own (closed or idle): forget it everywhere."""
        if room_id in self.owned and room_id not in self.gone:
            self.gone.add(room_id)
            self.owned.pop(room_id, None)
            self._removed(room_id)
            self.ctx.spawn(self._forget, room_id)

    async def _forget(self, room_id: int) -> None:
        """The room was closed or expired: drop it from Redis (the stats part is done by
        the stats documents' owner), then stop answering for it after a while."""
        bp, key = self.ctx.bp, room_key(room_id)
        try:
            await bp.delete_room(key)
            await bp.kv_delete(f"room:{room_id}")
            await bp.release_room(key)
            await bp.release_id("room", str(room_id))
        except BackplaneUnavailable:
            pass
        await trio.sleep(GONE_FOR)
        self.gone.discard(room_id)
