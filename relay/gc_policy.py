"""How the relay process keeps CPython's cyclic garbage collector from stalling it.

The collector is generational: a collection walks every object of the generations it
collects. A relay holds thousands of connections whose state lives for hours, and every
waiting reader is a chain of fresh coroutine objects that lives until its next message —
seconds, not microseconds. Those medium-lived objects filled the young generations (a
gen0 pass over 80,000 of them took 50 ms in bench W4) and were promoted into full
collections that walked the whole heap (up to 750 ms with 10,000 connections).

The policy, measured with ``bench`` (docs/performance.md):

* after startup everything is frozen (``gc.freeze``) and the thresholds are raised;
* every ``FREEZE_INTERVAL`` the young generation is collected (cycles that were born and
  died meanwhile) and what survived is frozen, so a collection only ever walks what was
  allocated in the last few milliseconds. Frozen
  objects are still freed by reference counting as usual; only a *cycle* among them
  would wait. Connection churn, resumes, Socket.IO and plain clients leave no such
  cycles (``tests/test_gc_policy.py`` checks it), so nothing piles up;
* as a safety net, once the process has had no connection for ``SWEEP_IDLE`` seconds
  (a night, a weekend) one full collection runs over everything (cheap then).
"""

from __future__ import annotations

import gc
from collections.abc import Callable

import trio

FREEZE_INTERVAL = 0.05
SWEEP_IDLE = 60.0


def tune_gc() -> None:
    """Freeze what startup created and make the young generations' passes rarer."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(20_000, 50, 100)


def sweep() -> int:
    """One full collection over everything, frozen objects included; returns the count."""
    gc.unfreeze()
    try:
        return gc.collect()
    finally:
        gc.freeze()


async def freeze_survivors(connections: Callable[[], int]) -> None:
    """Freeze survivors every ``FREEZE_INTERVAL``; sweep once after an idle spell."""
    idle_since: float | None = None
    swept = False
    while True:
        await trio.sleep(FREEZE_INTERVAL)
        # Garbage cycles born and dead since the last tick (an exception and its
        # traceback, say) are collected before the survivors are frozen: a pass over
        # 50 ms worth of objects, a millisecond or two at full load.
        gc.collect(0)
        gc.freeze()
        now = trio.current_time()
        if connections():
            idle_since, swept = None, False
        elif idle_since is None:
            idle_since = now
        elif not swept and now - idle_since >= SWEEP_IDLE:
            swept = True
            sweep()
