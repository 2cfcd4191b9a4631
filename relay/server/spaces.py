"""The Trio side of ChatRoom spaces (§9): one core per space, its connections and timer.

A space is the same kind of thing for the shell as an observer room: it exists from its
first connection until it has had none for ``OBSERVER_ROOM_IDLE_EXPIRY``, it has a nursery
for its work (the timer that fires its request and validation timeouts), and its logic is a
sans-IO core (``relay.spaces.Space``) whose ordered actions are carried out here: frames
rendered once per shape and pushed to the connections they name, metrics counted.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import trio

from relay.codecs.wsframe import text_frame
from relay.spaces.actions import Action, Counted, Deliver
from relay.spaces.entropy import SystemEntropy
from relay.spaces.names import check_space_key
from relay.spaces.settings import SpaceSettings
from relay.spaces.space import Space

if TYPE_CHECKING:
    from .base import Node

log = logging.getLogger("relay.server")


@dataclass(eq=False)
class SpaceRuntime:
    space: Space
    conns: dict[int, Any] = field(default_factory=dict)
    empty_since: float | None = None
    wake: trio.Event = field(default_factory=trio.Event)  # the timer's deadline changed
    changed: trio.Event = field(default_factory=trio.Event)  # for the inspector's stream
    scope: trio.CancelScope = field(default_factory=trio.CancelScope)


class SpaceShell:
    def __init__(self, node: Node, settings: SpaceSettings) -> None:
        self.node = node
        self.settings = settings
        self.spaces: dict[str, SpaceRuntime] = {}
        self.entropy = SystemEntropy()
        self._nursery: trio.Nursery | None = None

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as nursery:
            self._nursery = nursery
            task_status.started()
            await trio.sleep_forever()

    # -- the upgrade ----------------------------------------------------------------------
    def refusal(self, space: str | None, key: str | None) -> tuple[int, bytes] | None:
        """§9.1's refusals, in order: invalid space, wrong key, too many spaces."""
        if space is None:
            return 400, b'{"error":"invalid_space"}'
        if not check_space_key(self.node.config.chatroom_secret, space, key):
            return 403, b'{"error":"forbidden"}'
        if space not in self.spaces and len(self.spaces) >= self.settings.max_spaces:
            return 503, b'{"error":"too_many_spaces"}'
        return None

    # -- connections ------------------------------------------------------------------------
    def opened(self, conn: Any) -> None:
        """A connection of ``conn.space`` is open: it gets its client id and ``hello``."""
        runtime = self.spaces.get(conn.space)
        if runtime is None:
            runtime = self._open(conn.space)
        runtime.empty_since = None
        client_id, actions = runtime.space.connect(conn.shape, now=self.node.now(),
                                                   entropy=self.entropy)
        conn.client_id = client_id
        runtime.conns[client_id] = conn
        self._carry_out(runtime, actions)

    def message(self, conn: Any, text: str | None) -> None:
        runtime = self.spaces.get(conn.space)
        if runtime is None or conn.client_id not in runtime.conns:
            return
        space = runtime.space
        if text is None:
            actions = space.binary(conn.client_id)
        else:
            actions = space.receive(conn.client_id, text, now=self.node.now(),
                                    entropy=self.entropy)
        self._carry_out(runtime, actions)

    def rate_limited(self, conn: Any, text: str | None) -> None:
        runtime = self.spaces.get(conn.space)
        if runtime is not None and conn.client_id in runtime.conns:
            self._carry_out(runtime, runtime.space.rate_limited(conn.client_id, text))

    def closed(self, conn: Any) -> None:
        runtime = self.spaces.get(conn.space)
        client_id: int = conn.client_id
        if runtime is None or runtime.conns.get(client_id) is not conn:
            return
        del runtime.conns[client_id]
        actions = runtime.space.disconnect(client_id, now=self.node.now(), entropy=self.entropy)
        self._carry_out(runtime, actions)
        if not runtime.conns:
            runtime.empty_since = self.node.now()

    # -- spaces -----------------------------------------------------------------------------
    def _open(self, name: str) -> SpaceRuntime:
        runtime = SpaceRuntime(Space(name, self.settings))
        self.spaces[name] = runtime
        log.info("space opened", extra={"space": name})
        assert self._nursery is not None
        self._nursery.start_soon(self._timer, runtime)
        return runtime

    async def _timer(self, runtime: SpaceRuntime) -> None:
        """Fire the space's timeouts when they are due (its one background task)."""
        with runtime.scope:
            while True:
                deadline = runtime.space.next_deadline()
                with trio.move_on_at(math.inf if deadline is None
                                     else deadline - self.node.now() + trio.current_time()):
                    await runtime.wake.wait()
                    runtime.wake = trio.Event()
                    continue
                try:
                    self._carry_out(runtime, runtime.space.tick(self.node.now(), self.entropy))
                except Exception:
                    log.exception("a space's timer failed")

    def expire(self, now: float) -> None:
        """Forget spaces empty for the idle expiry (their topics and counters go too)."""
        limit = self.node.config.room_idle_expiry
        for name, runtime in list(self.spaces.items()):
            if runtime.empty_since is not None and now - runtime.empty_since >= limit:
                del self.spaces[name]
                runtime.scope.cancel()
                runtime.changed.set()
                log.info("space removed", extra={"space": name, "reason": "expired"})

    def _carry_out(self, runtime: SpaceRuntime, actions: list[Action]) -> None:
        metrics = self.node.metrics
        conns = runtime.conns
        for action in actions:
            if isinstance(action, Deliver):
                frames: dict[str, bytes] = {}  # one WebSocket frame per shape, all recipients
                for client_id in action.client_ids:
                    conn = conns.get(client_id)
                    if conn is None:
                        continue
                    frame = frames.get(conn.shape)
                    if frame is None:
                        frame = frames[conn.shape] = text_frame(action.frame.render(conn.shape))
                    metrics.message_out("chatroom", action.frame.type)
                    conn.push(frame)
            elif isinstance(action, Counted):
                if action.metric == "observer_errors_total":
                    metrics.error(action.label)
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

    def connections(self) -> int:
        return sum(len(r.conns) for r in self.spaces.values())
