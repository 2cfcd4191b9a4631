"""Run a Python module with its cyclic-GC pauses recorded (``bench.run --gc-stats``).

    python -m bench.gcwatch OUT.json MODULE [ARGS...]

Adds a ``gc.callbacks`` hook (two clock reads per collection) and writes, at most once a
second and at exit, per generation: collections, total and longest pause, and how many
pauses lasted 50 ms or more. The module runs unchanged, as ``python -m MODULE ARGS``.
"""

from __future__ import annotations

import atexit
import gc
import json
import runpy
import sys
import time
from typing import Any

LONG_MS = 50.0


def main() -> None:
    if len(sys.argv) < 3:
        raise SystemExit(__doc__)
    out, module, args = sys.argv[1], sys.argv[2], sys.argv[3:]
    stats: dict[int, dict[str, Any]] = {
        g: {"collections": 0, "total_ms": 0.0, "max_ms": 0.0, "long_pauses": 0}
        for g in range(3)}
    state = {"start": 0.0, "written": 0.0}

    def write() -> None:
        rounded = {f"gen{g}": {k: round(v, 1) if isinstance(v, float) else v
                               for k, v in s.items()} for g, s in stats.items()}
        with open(out, "w") as f:
            json.dump(rounded, f)

    def callback(phase: str, info: dict[str, int]) -> None:
        now = time.perf_counter()
        if phase == "start":
            state["start"] = now
            return
        ms = (now - state["start"]) * 1000
        s = stats[info["generation"]]
        s["collections"] += 1
        s["total_ms"] += ms
        s["max_ms"] = max(s["max_ms"], ms)
        if ms >= LONG_MS:
            s["long_pauses"] += 1
        if now - state["written"] > 1.0:
            state["written"] = now
            write()

    gc.callbacks.append(callback)
    atexit.register(write)
    sys.argv = [module, *args]
    runpy.run_module(module, run_name="__main__", alter_sys=True)


if __name__ == "__main__":
    main()
