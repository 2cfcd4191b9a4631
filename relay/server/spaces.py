"""The Trio side of ChatRoom spaces (§9): their cores, connections, timers and expiry.

A space is the same kind of thing for the shell as an observer room: it exists from its
first connection until it has had none for ``OBSERVER_ROOM_IDLE_EXPIRY``, it has a task
for its work (the timer of its request and validation timeouts), and its logic is a
sans-IO core (``relay.spaces.Space``) whose ordered actions are carried out here: frames
rendered once per shape and pushed to the connections they name, metrics counted.

Every change to a space is a ``PlaceCommand`` (connect, a message, disconnect, a tick,
expiry, a node's death) issued through the backplane and applied in ``apply``. With
``memory://`` that is immediate; with Redis the command goes through one stream that every
node reads in the same order, each applying it to its own replica of the space (with the
command's seed and time: the same state everywhere) and delivering only to its own
connections — so clients of one space may be on any nodes, and a node's death loses no
applied change (§9 "every rule holds across nodes").
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import trio

from relay.cluster.wire import PlaceCommand
from relay.codecs.wsframe import text_frame
from relay.spaces.actions import Action, Counted, Deliver
from relay.spaces.entropy import SeededEntropy
from relay.spaces.names import check_space_key
from relay.spaces.settings import SpaceSettings
from relay.spaces.space import Space

if TYPE_CHECKING:
    from .base import Node

log = logging.getLogger("relay.server")

KIND = "space"


@dataclass(eq=False)
class SpaceRuntime:
    space: Space
    #: Client ids by connection (node, connection id), of every node (the replica's view),
    #: and this node's own connections by client id.
    clients: dict[tuple[str, int], int] = field(default_factory=dict)
    conns: dict[int, Any] = field(default_factory=dict)
    empty_since: float | None = None
    expiring: bool = False  # an expire command was issued and not yet applied
    wake: trio.Event = field(default_factory=trio.Event)  # the timer's deadline changed
    changed: trio.Event = field(default_factory=trio.Event)  # for the inspector's stream
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)


class SpaceShell:
    def __init__(self, node: Node, settings: SpaceSettings) -> None:
        self.node = node
        self.settings = settings
        self.spaces: dict[str, SpaceRuntime] = {}
        self.waiting: dict[int, Any] = {}  # this node's connections whose connect is issued
        #: Spaces named by this node's upgrades and connections, from the upgrade's check
        #: until the connection ends: a space counts toward the limit from the moment an
        #: upgrade to it is accepted, not only once its connect is applied (20 upgrades to
        #: new spaces in the same instant must not all pass the check).
        self.reserved: dict[str, int] = {}
        self._nursery: trio.Nursery | None = None

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    @property
    def me(self) -> str:
        return str(self.node.backplane.node_id)

    def _issue(self, op: str, space: str, conn: int = 0, arg: str = "",
               text: str | None = None) -> None:
        node = self.node
        node.backplane.place_command(PlaceCommand(
            KIND, space, op, self.me, conn, arg, text, node.entropy_bytes(16), node.now()))

    # -- the upgrade ----------------------------------------------------------------------
    def refusal(self, space: str | None, key: str | None) -> tuple[int, bytes] | None:
        """§9.1's refusals, in order: invalid space, wrong key, too many spaces. When the
        upgrade may go ahead (None), ``space`` is reserved until ``release(space)``."""
        if space is None:
            return 400, b'{"error":"invalid_space"}'
        if not check_space_key(self.node.config.chatroom_secret, space, key):
            return 403, b'{"error":"forbidden"}'
        if space not in self.spaces and space not in self.reserved:
            names = len(self.spaces) + sum(1 for name in self.reserved
                                           if name not in self.spaces)
            if names >= self.settings.max_spaces:
                return 503, b'{"error":"too_many_spaces"}'
        self.reserved[space] = self.reserved.get(space, 0) + 1
        return None

    def release(self, space: str) -> None:
        """The upgrade or connection that ``refusal`` let through has ended."""
        left = self.reserved.get(space, 0) - 1
        if left > 0:
            self.reserved[space] = left
        else:
            self.reserved.pop(space, None)

    # -- this node's connections ---------------------------------------------------------------
    def opened(self, conn: Any) -> None:
        """A connection is open: its connect is issued (``hello`` comes when applied)."""
        self.waiting[conn.conn_id] = conn
        self._issue("connect", conn.space, conn.conn_id, conn.shape)

    def message(self, conn: Any, text: str | None) -> None:
        self._issue("receive" if text is not None else "binary", conn.space, conn.conn_id,
                    text=text)

    def rate_limited(self, conn: Any, text: str | None) -> None:
        """The rate-limit error changes nothing: answered here, not replicated."""
        runtime = self.spaces.get(conn.space)
        client_id: int = conn.client_id
        if runtime is not None and runtime.conns.get(client_id) is conn:
            self._carry_out(runtime, runtime.space.rate_limited(client_id, text))

    def closed(self, conn: Any) -> None:
        self.waiting.pop(conn.conn_id, None)
        self._issue("disconnect", conn.space, conn.conn_id)

    # -- applying commands (every node, in the same order) -------------------------------
    def apply(self, cmd: PlaceCommand) -> None:
        runtime = self.spaces.get(cmd.place)
        if runtime is None:
            if cmd.op != "connect":
                return  # (a command for a space that expired meanwhile)
            runtime = self._open(cmd.place)
        space, now = runtime.space, cmd.time
        entropy = SeededEntropy(cmd.seed)
        key = (cmd.node, cmd.conn)
        actions: list[Action] = []
        if cmd.op == "connect":
            client_id, actions = space.connect("full" if cmd.arg == "full" else "seed",
                                               now=now, entropy=entropy)
            runtime.clients[key] = client_id
            runtime.empty_since = None
            runtime.expiring = False
            if cmd.node == self.me:
                conn = self.waiting.pop(cmd.conn, None)
                if conn is not None:
                    conn.client_id = client_id
                    runtime.conns[client_id] = conn
                else:  # it closed before its connect was applied
                    self._issue("disconnect", cmd.place, cmd.conn)
        elif cmd.op in ("receive", "binary"):
            client_id = runtime.clients.get(key, 0)
            if not client_id:
                return
            actions = (space.receive(client_id, cmd.text or "", now=now, entropy=entropy)
                       if cmd.op == "receive" else space.binary(client_id))
        elif cmd.op == "disconnect":
            client_id = runtime.clients.pop(key, 0)
            if client_id:
                runtime.conns.pop(client_id, None)
                actions = space.disconnect(client_id, now=now, entropy=entropy)
        elif cmd.op == "node_gone":
            for (node, conn), client_id in list(runtime.clients.items()):
                if node == cmd.arg:
                    del runtime.clients[(node, conn)]
                    actions += space.disconnect(client_id, now=now, entropy=entropy)
                    mine = runtime.conns.pop(client_id, None) if node == self.me else None
                    if mine is not None:
                        # We were taken for dead (a stall): our client is no longer in
                        # the space anywhere; it must reconnect, not linger unheard.
                        mine.close(1011, "this node was taken for dead; reconnect")
        elif cmd.op == "tick":
            actions = space.tick(now, entropy)
        elif cmd.op == "expire":
            if space.is_empty and runtime.empty_since is not None:
                self._remove(cmd.place, runtime)
            return
        if not runtime.clients and runtime.empty_since is None:
            runtime.empty_since = now
        self._carry_out(runtime, actions, counted=cmd.node == self.me)

    def _open(self, name: str) -> SpaceRuntime:
        runtime = SpaceRuntime(Space(name, self.settings))
        self.spaces[name] = runtime
        log.info("space opened", extra={"space": name})
        assert self._nursery is not None
        self._nursery.start_soon(self._timer, name, runtime)
        return runtime

    def _remove(self, name: str, runtime: SpaceRuntime) -> None:
        del self.spaces[name]
        runtime.scope.cancel()
        runtime.changed.set()
        log.info("space removed", extra={"space": name, "reason": "expired"})

    async def _timer(self, name: str, runtime: SpaceRuntime) -> None:
        """Issue a tick when the space's next timeout is due (every node may: a tick that
        finds nothing due changes nothing)."""
        with runtime.scope:
            while True:
                deadline = runtime.space.next_deadline()
                at = math.inf if deadline is None else (
                    deadline - self.node.now() + trio.current_time())
                with trio.move_on_at(at):
                    await runtime.wake.wait()
                    runtime.wake = trio.Event()
                    continue
                self._issue("tick", name)
                await trio.sleep(0.05)  # (its application wakes us; do not spin meanwhile)

    def expire(self, now: float) -> None:
        """Forget spaces empty for the idle expiry (their topics and counters go too)."""
        limit = self.node.config.room_idle_expiry
        for name, runtime in list(self.spaces.items()):
            if (runtime.empty_since is not None and not runtime.expiring
                    and now - runtime.empty_since >= limit):
                runtime.expiring = True
                self._issue("expire", name)

    def node_gone(self, node_id: str) -> None:
        """Another node died: its clients leave every space (issued once per space)."""
        for name, runtime in self.spaces.items():
            if any(node == node_id for node, _ in runtime.clients):
                self._issue("node_gone", name, arg=node_id)

    def alive(self, name: str) -> bool:
        return name in self.spaces

    def nodes(self) -> set[str]:
        return {node for runtime in self.spaces.values() for node, _ in runtime.clients}

    def lost(self) -> None:
        """Our replicas missed commands: close our connections (their clients reconnect
        and get a consistent space) and forget every space; the log rebuilds them."""
        for runtime in self.spaces.values():
            for conn in list(runtime.conns.values()):
                conn.close(1011, "the space's state was lost here; reconnect")
            runtime.scope.cancel()
            runtime.changed.set()
        for conn in list(self.waiting.values()):
            conn.close(1011, "the space's state was lost here; reconnect")
        self.spaces.clear()

    def refused(self, cmd: PlaceCommand) -> None:
        if cmd.node != self.me:
            return
        conn = self.waiting.get(cmd.conn)
        runtime = self.spaces.get(cmd.place)
        if conn is None and runtime is not None:
            conn = next((c for c in runtime.conns.values() if c.conn_id == cmd.conn), None)
        if conn is not None:
            conn.close(1011, "the backplane is not reachable; reconnect")

    def _carry_out(self, runtime: SpaceRuntime, actions: list[Action], *,
                   counted: bool = True) -> None:
        """Deliver to this node's connections; count (and log error answers) only for a
        command this node issued, so that the cluster counts each event once."""
        metrics = self.node.metrics
        conns = runtime.conns
        for action in actions:
            if isinstance(action, Deliver):
                frames: dict[str, bytes] = {}  # one WebSocket frame per shape, all recipients
                for client_id in action.client_ids:
                    conn = conns.get(client_id)
                    if conn is None:
                        continue  # (another node's client, or gone)
                    frame = frames.get(conn.shape)
                    if frame is None:
                        frame = frames[conn.shape] = text_frame(action.frame.render(conn.shape))
                    metrics.message_out("chatroom", action.frame.type)
                    conn.push(frame)
            elif isinstance(action, Counted) and counted:
                if action.metric == "observer_errors_total":
                    metrics.error(action.label)
                    log.debug("error answer", extra={"code": action.label,
                                                     "endpoint": "chatroom",
                                                     "space": runtime.space.name})
                elif action.metric == "observer_messages_in_total":
                    metrics.message_in("chatroom", action.label)
                else:
                    metrics.inc("observer_service_requests", action.label)
        runtime.wake.set()  # the next deadline may have changed
        changed, runtime.changed = runtime.changed, trio.Event()
        changed.set()

    # -- the inspector (§9.8) ----------------------------------------------------------------
    def document(self, name: str) -> tuple[int, dict[str, Any]] | None:
        runtime = self.spaces.get(name)
        if runtime is None:
            return None
        return runtime.space.version, runtime.space.inspect(self.node.now())

    async def wait_change(self, name: str) -> None:
        runtime = self.spaces.get(name)
        if runtime is not None:
            await runtime.changed.wait()

    def count(self) -> int:
        return len(self.spaces)
