"""What the parts of the cluster share: the node, Redis, the commit queue, the outboxes.

One object made by ``relay.cluster.node.Cluster`` and handed to each part (owner,
forwarding, stats, signaling), so that the parts need not know each other.
"""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import trio

from relay.backplane.group_commit import GroupCommit
from relay.backplane.redis import RedisBackplane
from relay.ports import ClusterHost

from .outboxes import Outboxes
from .remote import Remotes

#: How long a node waits for another node's answer to a forwarded message.
FORWARD_TIMEOUT = 10.0
#: How long finding (or claiming) a room's owner may take before an attach gives up.
LOCATE_TIMEOUT = 30.0


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


@dataclass(eq=False)
class ClusterContext:
    host: ClusterHost
    bp: RedisBackplane
    commits: GroupCommit
    outboxes: Outboxes
    remotes: Remotes
    #: This node's connections that are (or may become) forwarded, by connection id.
    local: dict[int, Any] = field(default_factory=dict)
    seeds: SeedPool = field(default_factory=SeedPool)
    _cmds: int = 0
    _waits: int = 0
    nursery: trio.Nursery | None = None

    @property
    def node_id(self) -> str:
        return self.bp.node_id

    def command_id(self) -> bytes:
        """A name for a log entry unique in the cluster: node id and a counter."""
        self._cmds += 1
        return self.bp.node_id.encode() + b":" + str(self._cmds).encode()

    def wait_id(self) -> int:
        self._waits += 1
        return self._waits

    def spawn(self, fn: Callable[..., Awaitable[Any]], *args: Any) -> None:
        if self.nursery is not None:
            self.nursery.start_soon(fn, *args)
