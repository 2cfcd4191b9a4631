"""W1 with two relay nodes + Redis against one node, in the same run (issue 7).

``python -m bench.scaleout [--quick] [--nice N] [--node-cpu F | --shared-core]``: starts a
private ``redis-server`` (no persistence) on 127.0.0.1, then alternates W1 trials between
(a) one node with the in-memory backplane, (b) two nodes sharing rooms through Redis and
(c) the same with same-host handoff switched off, the generator spreading its
connections round-robin over the nodes like a plain load balancer (so about half of every
room's students reach the node that does not own the room: in (b) their sockets move to
the owner at the join, in (c) their events are forwarded, as between nodes on different
hosts). Prints a table and writes JSON next to ``bench.run``'s results.

Node size. Scaling out means adding nodes of the same size, so each node gets the same
CPU budget: by default every relay node runs in its own cgroup with a CPU quota of
``--node-cpu`` cores (0.5: a Kubernetes ``limits.cpu: 500m``), unpinned, on a machine
with room for two such nodes plus the generator and Redis. ``--shared-core`` instead
pins everything under test (both nodes and Redis) to CPU 0 and the generator to CPU 1, as
``bench.run`` does: then two nodes get no more CPU than one and the ratio measures the
cost of scaling out, not its gain.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench import run
from bench.run import OURS, PY, ROOT, Server, ServerKind, classroom_timeout, log

CGROUP_V1 = Path("/sys/fs/cgroup/cpu")
CGROUP_V2 = Path("/sys/fs/cgroup")
QUOTA_PERIOD_US = 10_000  # short periods: throttling stalls last at most a few ms


class CpuLimit:
    """A cgroup whose processes share a CPU quota of ``cores`` (v2 ``cpu.max`` or v1 CFS)."""

    def __init__(self, name: str, cores: float) -> None:
        quota = int(cores * QUOTA_PERIOD_US)
        if (CGROUP_V2 / "cgroup.controllers").exists():
            self.path = CGROUP_V2 / name
            self.path.mkdir(exist_ok=True)
            (self.path / "cpu.max").write_text(f"{quota} {QUOTA_PERIOD_US}")
        elif CGROUP_V1.is_dir():
            self.path = CGROUP_V1 / name
            self.path.mkdir(exist_ok=True)
            (self.path / "cpu.cfs_period_us").write_text(str(QUOTA_PERIOD_US))
            (self.path / "cpu.cfs_quota_us").write_text(str(quota))
        else:
            raise RuntimeError("no cgroup CPU controller: use --shared-core")

    def add(self, pid: int) -> None:
        (self.path / "cgroup.procs").write_text(str(pid))

    def throttled(self) -> dict[str, int]:
        """The kernel's throttling counters (how often the quota ran out)."""
        out = {}
        with contextlib.suppress(OSError):
            for line in (self.path / "cpu.stat").read_text().splitlines():
                key, _, value = line.partition(" ")
                out[key] = int(value)
        return out

    def remove(self) -> None:
        with contextlib.suppress(OSError):
            self.path.rmdir()


def cpu_seconds(pid: int) -> float:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextlib.contextmanager
def redis_server(cpus: str | None) -> Iterator[tuple[str, int]]:
    binary = shutil.which("redis-server") or "/usr/bin/redis-server"
    port = run.free_port()
    pin = ["taskset", "-c", cpus] if cpus is not None else []
    with tempfile.TemporaryDirectory(prefix="bench-redis-") as workdir:
        proc = subprocess.Popen(
            [*run.PRIORITY, *pin, binary, "--bind", "127.0.0.1", "--port", str(port),
             "--save", "", "--appendonly", "no", "--dir", workdir],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
        try:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                with contextlib.suppress(OSError), socket.create_connection(
                        ("127.0.0.1", port), timeout=0.5):
                    break
                time.sleep(0.05)
            yield f"redis://127.0.0.1:{port}/0", proc.pid
        finally:
            proc.terminate()
            proc.wait(5)


def node_kind(redis_url: str, env: dict[str, str] | None = None) -> ServerKind:
    return ServerKind("node", "Observer Relay node", OURS.argv,
                      {**OURS.env, "OBSERVER_BACKPLANE_URL": redis_url, **(env or {})})


#: name -> (nodes, extra environment of every node)
SETUPS: dict[str, tuple[int, dict[str, str]]] = {
    "1 node (memory)": (1, {}),
    "2 nodes + Redis": (2, {}),  # same host: joining clients are handed to the owner
    "2 nodes + Redis (forwarding)": (2, {"OBSERVER_CLUSTER_HANDOFF": "0"}),  # as across hosts
}


def trial(rooms: int, nodes: int, redis: tuple[str, int], plan: run.Plan,
          node_cpu: float | None, env: dict[str, str] | None = None) -> dict[str, Any]:
    params = {"rooms": rooms, "duration": plan.w1_duration, "warmup": plan.w1_warmup}
    started: list[Server] = []
    limits: list[CpuLimit] = []
    redis_url, redis_pid = redis
    try:
        kind = OURS if nodes == 1 else node_kind(redis_url, env)
        for i in range(nodes):
            server = Server(kind, cpus=None if node_cpu else run.SERVER_CPU)
            started.append(server)
            if node_cpu:
                limit = CpuLimit(f"observer-bench-{os.getpid()}-{i}", node_cpu)
                limits.append(limit)
                limit.add(server.pid)
        for server in started:
            server.wait_ready()
        time.sleep(0.5)
        pin = [] if node_cpu else ["taskset", "-c", run.GENERATOR_CPU]
        argv = [*run.PRIORITY, *pin, PY, "-m", "bench.loadgen", "W1", "--port",
                ",".join(str(s.port) for s in started), "--framing", "socketio",
                "--server-pid", str(started[0].pid), "--params", json.dumps(params)]
        cpu0 = [cpu_seconds(s.pid) for s in started] + [cpu_seconds(redis_pid)]
        t0 = time.monotonic()
        done = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, check=False,
                              timeout=classroom_timeout(rooms, plan.w1_duration))
        wall = time.monotonic() - t0
        cpu1 = [cpu_seconds(s.pid) for s in started] + [cpu_seconds(redis_pid)]
        lines = done.stdout.strip().splitlines()
        if done.returncode != 0 or not lines:
            return {"ok": False, "error": done.stderr.strip()[-400:]}
        result: dict[str, Any] = json.loads(lines[-1])
        # CPU over the whole generator run (connecting, warm-up, measuring, draining).
        used = [round((b - a) / wall * 100, 1) for a, b in zip(cpu0, cpu1, strict=True)]
        result["node_cpu_pct"] = used[:-1]
        if nodes > 1:
            result["redis_cpu_pct"] = used[-1]
        if limits:
            result["throttling"] = [limit.throttled() for limit in limits]
        if any(s.proc.poll() is not None for s in started):
            result["ok"] = False
            result["error"] = "a node died"
        return result
    except (RuntimeError, OSError, subprocess.TimeoutExpired) as exc:
        return {"ok": False, "error": str(exc)}
    finally:
        for server in started:
            server.stop()
        for limit in limits:
            limit.remove()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--nice", type=int, default=0)
    placement = parser.add_mutually_exclusive_group()
    placement.add_argument("--node-cpu", type=float, default=0.5, metavar="CORES",
                           help="CPU quota of every relay node (cgroup), default 0.5")
    placement.add_argument("--shared-core", action="store_true",
                           help="pin the nodes and Redis to CPU 0 instead (no quota)")
    parser.add_argument("--max-trials", type=int, default=0,
                        help="trials per setup (default: bench.run's plan)")
    parser.add_argument("--bisect", type=int, default=-1, help="bisection steps after a failure")
    parser.add_argument("--setups", default=",".join(SETUPS),
                        help="comma-separated subset of: " + ", ".join(SETUPS))
    args = parser.parse_args()
    if args.nice:
        run.PRIORITY[:] = ["nice", "-n", str(-args.nice)]
    node_cpu = None if args.shared_core else args.node_cpu
    run.raise_nofile()
    plan = run.Plan.make(args.quick)
    if args.max_trials:
        plan = dataclasses.replace(plan, w1_max_trials=args.max_trials)
    if args.bisect >= 0:
        plan = dataclasses.replace(plan, w1_bisect=args.bisect)
    setups = {name: SETUPS[name] for name in args.setups.split(",")}
    searches = {name: run.search_rooms(plan) for name in setups}
    trying: dict[str, int | None] = {name: next(s) for name, s in searches.items()}
    best: dict[str, int] = {}
    trials: dict[str, list[dict[str, Any]]] = {name: [] for name in setups}
    with redis_server(run.SERVER_CPU if node_cpu is None else None) as redis:
        while any(v is not None for v in trying.values()):
            for name, (nodes, env) in setups.items():
                rooms = trying[name]
                if rooms is None:
                    continue
                result = trial(rooms, nodes, redis, plan, node_cpu, env)
                result["rooms"] = rooms
                trials[name].append(result)
                p99 = result.get("student_to_host", {}).get("p99_ms")
                log(f"  W1 {name:18} R={rooms:4} ok={result.get('ok')} p99={p99} ms "
                    f"lost={result.get('lost')} node CPU={result.get('node_cpu_pct')}% "
                    f"redis CPU={result.get('redis_cpu_pct')}% {result.get('error', '')}")
                try:
                    trying[name] = searches[name].send(bool(result.get("ok")))
                except StopIteration as stop:
                    best[name] = int(stop.value)
                    trying[name] = None
    one = best.get("1 node (memory)", 0)
    size = "all on CPU 0" if node_cpu is None else f"{node_cpu} CPU per node (cgroup quota)"
    print(f"| W1 setup (same run; {size}) | largest R with p99 ≤ 100 ms, nothing lost "
          "| ratio to 1 node |")
    print("|---|---|---|")
    for name in setups:
        ratio = f"{best.get(name, 0) / one:.2f}×" if one else "-"
        print(f"| {name} | {best.get(name, 0)} | {ratio} |")
    run.RESULTS.mkdir(parents=True, exist_ok=True)
    out = run.RESULTS / f"scaleout-{time.strftime('%Y%m%dT%H%M%S')}.json"
    out.write_text(json.dumps({"quick": args.quick, "node_cpu": node_cpu, "max_rooms": best,
                               "trials": trials, "cpus": os.cpu_count(),
                               "source": run.source_digest()}, indent=1))
    log(f"wrote {out}")


if __name__ == "__main__":
    main()
