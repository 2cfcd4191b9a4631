"""W1 with two relay nodes + Redis against one node, in the same run (issue 7).

``python -m bench.scaleout [--quick]``: starts a private ``redis-server`` (no persistence)
on 127.0.0.1, then alternates W1 trials between (a) one node with the in-memory backplane
and (b) two nodes sharing rooms through Redis, the generator spreading its connections
round-robin over the nodes like a plain load balancer (so about half of every room's
students sit on the node that does not own the room and are forwarded). Prints a table
and writes JSON next to ``bench.run``'s results.

CPU placement: everything under test (both nodes and Redis) shares CPU 0 and the generator
has CPU 1, as in ``bench.run``. On this 2-core machine the two-node setup therefore gets no
more CPU than one node: the ratio measures what scaling out costs, not what it gains. With
one core per node the same script shows the gain.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from typing import Any

from bench import run
from bench.run import OURS, PY, ROOT, Server, ServerKind, classroom_timeout, log


@contextlib.contextmanager
def redis_server() -> Iterator[str]:
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    port = run.free_port()
    with tempfile.TemporaryDirectory(prefix="bench-redis-") as workdir:
        proc = subprocess.Popen(
            [*run.PRIORITY, "taskset", "-c", run.SERVER_CPU, binary, "--bind", "127.0.0.1",
             "--port", str(port), "--save", "", "--appendonly", "no", "--dir", workdir],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                with contextlib.suppress(OSError), socket.create_connection(
                        ("127.0.0.1", port), timeout=0.5):
                    break
                time.sleep(0.05)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            proc.terminate()
            proc.wait(5)


def node_kind(redis_url: str) -> ServerKind:
    return ServerKind("node", "Observer Relay node", OURS.argv,
                      {**OURS.env, "OBSERVER_BACKPLANE_URL": redis_url})


def trial(rooms: int, nodes: int, redis_url: str, plan: run.Plan) -> dict[str, Any]:
    params = {"rooms": rooms, "duration": plan.w1_duration, "warmup": plan.w1_warmup}
    started: list[Server] = []
    try:
        kind = OURS if nodes == 1 else node_kind(redis_url)
        for _ in range(nodes):
            server = Server(kind)
            started.append(server)
        for server in started:
            server.wait_ready()
        time.sleep(0.5)
        argv = [*run.PRIORITY, "taskset", "-c", run.GENERATOR_CPU, PY, "-m", "bench.loadgen",
                "W1", "--port", ",".join(str(s.port) for s in started), "--framing",
                "socketio", "--server-pid", str(started[0].pid), "--params", json.dumps(params)]
        done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, check=False,
                              timeout=classroom_timeout(rooms, plan.w1_duration))
        lines = done.stdout.strip().splitlines()
        if done.returncode != 0 or not lines:
            return {"ok": False, "error": done.stderr.strip()[-400:]}
        result: dict[str, Any] = json.loads(lines[-1])
        if any(s.proc.poll() is not None for s in started):
            result["ok"] = False
            result["error"] = "a node died"
        return result
    except (RuntimeError, subprocess.TimeoutExpired) as exc:
        return {"ok": False, "error": str(exc)}
    finally:
        for server in started:
            server.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--nice", type=int, default=0)
    args = parser.parse_args()
    if args.nice:
        run.PRIORITY[:] = ["nice", "-n", str(-args.nice)]
    run.raise_nofile()
    plan = run.Plan.make(args.quick)
    setups = {"1 node (memory)": 1, "2 nodes + Redis": 2}
    searches = {name: run.search_rooms(plan) for name in setups}
    trying: dict[str, int | None] = {name: next(s) for name, s in searches.items()}
    best: dict[str, int] = {}
    trials: dict[str, list[dict[str, Any]]] = {name: [] for name in setups}
    with redis_server() as redis_url:
        while any(v is not None for v in trying.values()):
            for name, nodes in setups.items():
                rooms = trying[name]
                if rooms is None:
                    continue
                result = trial(rooms, nodes, redis_url, plan)
                result["rooms"] = rooms
                trials[name].append(result)
                p99 = result.get("student_to_host", {}).get("p99_ms")
                log(f"  W1 {name:18} R={rooms:4} ok={result.get('ok')} p99={p99} ms "
                    f"lost={result.get('lost')} {result.get('error', '')}")
                try:
                    trying[name] = searches[name].send(bool(result.get("ok")))
                except StopIteration as stop:
                    best[name] = int(stop.value)
                    trying[name] = None
    one, two = best.get("1 node (memory)", 0), best.get("2 nodes + Redis", 0)
    print("| W1 setup (same run) | largest R with p99 ≤ 100 ms, nothing lost |")
    print("|---|---|")
    for name in setups:
        print(f"| {name} | {best.get(name, 0)} |")
    print(f"| ratio 2 nodes / 1 node | {two / one:.2f}× |" if one else "| ratio | - |")
    run.RESULTS.mkdir(parents=True, exist_ok=True)
    out = run.RESULTS / f"scaleout-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(json.dumps({"quick": args.quick, "max_rooms": best, "trials": trials,
                               "cpus": os.cpu_count()}, indent=1))
    log(f"wrote {out}")


if __name__ == "__main__":
    main()
