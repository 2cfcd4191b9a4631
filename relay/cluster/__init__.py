"""Scale-out: observer rooms shared by several relay processes through Redis.

Each room is a virtual actor: exactly one node — the room's *owner*, holding its lease —
runs the room's core. Every command for the room is first appended to the room's durable
log (with the CSPRNG seed and the clock value the core will use), then applied, then
delivered: an event takes effect for everyone or for no one, and any node can rebuild
the room exactly by replaying the log after the owner died. Where things live:

- ``wire`` — every message and record that crosses Redis, typed and versioned;
- ``snapshot`` — a room as typed data; ``rebuild`` — replaying its log;
- ``owner`` — the owner's side: fenced log-then-apply, recovery of unknown outcomes,
  locating, claiming, stealing and dropping rooms;
- ``forwarding`` — events of connections whose room lives elsewhere, both ways, and
  what happens when pub/sub loses a message; ``remote`` — the owner's stand-ins;
- ``handoff`` — moving a client's socket to the owner on the same host;
- ``outboxes`` — ordered, merged, loss-reporting publishing per destination node;
- ``stats`` — room stats documents across nodes; ``signaling`` — ``/ws`` rooms;
- ``node`` — ``Cluster``, which composes them and owns their tasks.

``docs/scale-out.md`` describes the design and the failure cases.
"""

from .node import Cluster

__all__ = ["Cluster"]
