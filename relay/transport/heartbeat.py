"""A timing wheel for every connection's heartbeat, driven by one server-wide timer.

Why a wheel: walking every connection once a second and pinging all that are due turns
connections opened together (a building reconnecting after a Wi-Fi blip, a load test's
ramp) into one burst of thousands of pings, then thousands of pongs, which stalls every
room for tens of milliseconds and floods the young GC generation with freshly suspended
readers. The wheel keeps each connection in the slot of its next check, so a tick of
``TICK`` seconds touches only the connections that are due; connections also start
their first ping at a random phase (see ``first_ping_delay``) so their pings stay spread
out for the rest of their lives.
"""

from __future__ import annotations

import logging
import math
import random
from typing import Protocol

log = logging.getLogger("relay.transport")


class Beating(Protocol):
    """What the wheel needs from a connection."""

    hb_slot: int

    def heartbeat(self, now: float) -> float:
        """Ping, time out or check deadlines; returns when to be called next (inf: never)."""
        ...

    def close(self, code: int, reason: str) -> None:
        """Used when ``heartbeat`` failed unexpectedly (1011)."""
        ...


TICK = 0.05


def first_ping_delay(interval: float) -> float:
    """The first ping after the upgrade comes in the second half of the interval.

    Later pings follow every ``interval`` seconds, so a random first phase spreads the
    pings of connections that were opened in the same instant over half an interval.
    """
    return interval * (0.5 + 0.5 * random.random())  # spreading, not secrecy


class HeartbeatWheel:
    """Slots of connections by due time; ``advance(now)`` calls the ones that are due.

    A connection due more than one revolution ahead stays in its slot until the wheel
    comes round to the right revolution, so any horizon works; removal is O(1) through
    the connection's ``hb_slot``.
    """

    __slots__ = ("_due", "_next_tick", "_slots", "tick")

    def __init__(self, tick: float = TICK, slots: int = 1024) -> None:
        self.tick = tick
        self._slots: list[dict[Beating, None]] = [{} for _ in range(slots)]
        self._due: dict[Beating, float] = {}
        self._next_tick: int | None = None  # the first tick index not processed yet

    def __len__(self) -> int:
        return len(self._due)

    def add(self, conn: Beating, due: float) -> None:
        self.discard(conn)
        if due == math.inf:
            return
        self._due[conn] = due
        index = math.ceil(due / self.tick)
        if self._next_tick is not None and index < self._next_tick:
            index = self._next_tick  # already past: the next advance calls it
        conn.hb_slot = index % len(self._slots)
        self._slots[conn.hb_slot][conn] = None

    def discard(self, conn: Beating) -> None:
        if self._due.pop(conn, None) is not None:
            self._slots[conn.hb_slot].pop(conn, None)

    def advance(self, now: float) -> None:
        """Call every connection due at ``now`` and file it under its next check."""
        last = math.floor(now / self.tick)
        first = last if self._next_tick is None else self._next_tick
        # After a long stall, one revolution covers every slot.
        first = max(first, last - len(self._slots) + 1)
        self._next_tick = last + 1  # re-filed connections land after this tick
        for index in range(first, last + 1):
            slot = self._slots[index % len(self._slots)]
            if not slot:
                continue
            for conn in list(slot):
                due = self._due[conn]
                if due > now:
                    continue  # a later revolution
                del slot[conn], self._due[conn]
                try:
                    due = conn.heartbeat(now)
                except Exception:
                    # One connection's failure must not stop every connection's heartbeat.
                    log.exception("a heartbeat failed; closing that connection with 1011")
                    conn.close(1011, "internal error")
                    continue
                self.add(conn, due)
