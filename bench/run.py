"""Benchmark runner: Observer Relay against the python-socketio reference, same wire, same run.

    python -m bench.run [--quick] [--workloads W1,W2,W3,W4,W5] [--out DIR]
    python -m bench.run --workloads W1P,W2P [--w1-half OURS[,REF]]   # long-polling (issue 16)

Each measurement starts a fresh server pinned to CPU 0 (``taskset -c 0``) and a fresh load
generator (``bench.loadgen``) pinned to CPU 1; servers are measured alternately. Prints a table
and writes everything to ``bench/results/<timestamp>.json``. Only 127.0.0.1 is used, every
step has a time limit, and every process started here is stopped here.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import hashlib
import json
import os
import platform
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

PY = sys.executable
ROOT = Path(__file__).resolve().parent.parent
RESULTS = Path(__file__).resolve().parent / "results"
SERVER_CPU = "0"
GENERATOR_CPU = "1"
#: ``--nice N`` runs servers and generators at ``nice -N`` (root only), so that other work on a
#: shared machine disturbs the measurement less; 0 leaves priorities alone.
PRIORITY = ["nice", "-n", "0"]
#: ``--gc-stats`` runs servers under ``bench.gcwatch`` (records cyclic-GC pauses).
GC_STATS = [False]
#: W4's "burst" variant: the generator's sends on a 50 ms grid (its schedule before this was
#: refined), i.e. every client's next 50 ms of traffic at one instant.
BURST_TICK = 0.05

#: Observer Relay settings for load tests: the per-connection rate limit and the join-failure
#: limit are meant for hostile clients, not for one generator on 127.0.0.1.
OURS_ENV = {
    "OBSERVER_RATE_LIMIT_RATE": "1000000",
    "OBSERVER_RATE_LIMIT_BURST": "1000000",
    "OBSERVER_RATE_LIMIT_CLOSE_AFTER": "1000000",
    "OBSERVER_JOIN_FAILURE_LIMIT": "1000000",
    # Every client comes from 127.0.0.1: the per-IP caps (2,000 connections, 50 rooms by
    # default) would refuse any W1 above 50 rooms.
    "OBSERVER_MAX_CONNECTIONS_PER_IP": "0",
    "OBSERVER_MAX_ROOMS_PER_IP": "0",
    "OBSERVER_LOG_LEVEL": "WARNING",
}


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- servers
@dataclass(frozen=True)
class ServerKind:
    """How to start one server under test."""

    name: str
    label: str
    argv: Callable[[int], list[str]]
    env: dict[str, str] = field(default_factory=dict)


OURS = ServerKind("ours", "Observer Relay", lambda port: [
    PY, "-m", "relay", "serve", "--host", "127.0.0.1", "--port", str(port), "--http-port", "0"],
    OURS_ENV)
REFERENCE = ServerKind("reference", "python-socketio + uvicorn", lambda port: [
    PY, "-m", "bench.reference_server", "--port", str(port)])
BROADCAST = ServerKind("websockets", "websockets broadcast()", lambda port: [
    PY, "-m", "bench.broadcast_server", "--port", str(port)])


def source_digest() -> str:
    """Short hash of the server's source files: a run spanning an edit shows two values."""
    h = hashlib.sha256()
    for package in ("relay", "signaling", "stats_web"):
        for path in sorted((ROOT / package).rglob("*.py")):
            h.update(str(path.relative_to(ROOT)).encode())
            h.update(path.read_bytes())
    return h.hexdigest()[:12]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """A server process pinned to ``cpus`` (default ``SERVER_CPU``; None: not pinned);
    stopped by ``stop()`` (SIGTERM, then KILL)."""

    def __init__(self, kind: ServerKind, cpus: str | None = SERVER_CPU) -> None:
        self.kind = kind
        self.port = free_port()
        self.errlog = tempfile.TemporaryFile()  # noqa: SIM115 (closed in stop())
        env = {**os.environ, **kind.env, "PYTHONUNBUFFERED": "1"}
        argv = kind.argv(self.port)
        self.gc_file: str | None = None
        if GC_STATS[0]:  # argv is [python, "-m", module, ...]
            fd, self.gc_file = tempfile.mkstemp(prefix="gc-", suffix=".json")
            os.close(fd)
            argv = [*argv[:2], "bench.gcwatch", self.gc_file, *argv[2:]]
        pin = ["taskset", "-c", cpus] if cpus is not None else []
        self.proc = subprocess.Popen(
            [*PRIORITY, *pin, *argv], cwd=ROOT, env=env,
            stdout=subprocess.DEVNULL, stderr=self.errlog, start_new_session=True)

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_ready(self, timeout: float = 20.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.kind.name} exited: {self.stderr_tail()}")
            with contextlib.suppress(OSError), socket.create_connection(
                    ("127.0.0.1", self.port), timeout=0.5):
                return
            time.sleep(0.1)
        raise RuntimeError(f"{self.kind.name} did not listen within {timeout} s")

    def stderr_tail(self, n: int = 600) -> str:
        self.errlog.seek(0)
        return self.errlog.read().decode(errors="replace")[-n:]

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(6)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.errlog.close()

    def gc_stats(self) -> dict[str, Any] | None:
        """The GC pauses ``bench.gcwatch`` recorded (after ``stop()``), if enabled."""
        if self.gc_file is None:
            return None
        try:
            with open(self.gc_file) as f:
                return dict(json.load(f))
        except (OSError, ValueError):
            return None
        finally:
            os.unlink(self.gc_file)


@contextlib.contextmanager
def running(kind: ServerKind) -> Iterator[Server]:
    server = Server(kind)
    try:
        server.wait_ready()
        time.sleep(0.3)
        yield server
    finally:
        server.stop()


def loadgen(server: Server, workload: str, framing: str, params: dict[str, Any],
            timeout: float) -> dict[str, Any]:
    """Run one generator process on ``GENERATOR_CPU``; its JSON result (or an error)."""
    argv = [*PRIORITY, "taskset", "-c", GENERATOR_CPU, PY, "-m", "bench.loadgen", workload,
            "--port", str(server.port), "--framing", framing, "--server-pid", str(server.pid),
            "--params", json.dumps(params)]
    try:
        done = subprocess.run(argv, cwd=ROOT, capture_output=True, timeout=timeout, text=True,
                              check=False)
    except subprocess.TimeoutExpired:
        return {"ok": False, "error": f"generator timed out after {timeout:.0f} s"}
    lines = done.stdout.strip().splitlines()
    if done.returncode != 0 or not lines:
        return {"ok": False, "error": f"generator failed ({done.returncode}): "
                                      f"{done.stderr.strip()[-600:]}"}
    result: dict[str, Any] = json.loads(lines[-1])
    if server.proc.poll() is not None:
        result["ok"] = False
        result["error"] = f"server died: {server.stderr_tail()}"
    return result


def measure(kind: ServerKind, workload: str, framing: str, params: dict[str, Any],
            timeout: float) -> dict[str, Any]:
    """A fresh server, one generator run, the server stopped."""
    t0 = time.monotonic()
    server: Server | None = None
    try:
        with running(kind) as server:
            t1 = time.monotonic()
            result = loadgen(server, workload, framing, params, timeout)
            t2 = time.monotonic()
    except RuntimeError as exc:
        result = {"ok": False, "error": str(exc)}
    else:
        result["wall_s"] = {"server_start": round(t1 - t0, 2), "generator": round(t2 - t1, 2),
                            "server_stop": round(time.monotonic() - t2, 2)}
    result["server"] = kind.name
    result["framing"] = framing
    result["server_source"] = source_digest()
    gc_stats = server.gc_stats() if server is not None else None
    if gc_stats is not None:
        result["server_gc"] = gc_stats
    return result


def socketio_works() -> str | None:
    """``None`` if Observer Relay's ``/socket.io/`` completes a connect, else why not."""
    from . import loadgen as lg
    from .wire import SOCKETIO

    async def probe(port: int) -> None:
        client = await lg.connect(SOCKETIO, "127.0.0.1", port, timeout=5)
        await client.call("room/create", b'{"name":"probe"}', b"room/created", timeout=5)
        client.close()

    try:
        with running(OURS) as server:
            asyncio.run(probe(server.port))
    except Exception as exc:
        return repr(exc)
    return None


# --------------------------------------------------------------------------- workloads
@dataclass
class Plan:
    """Sizes and times of every workload, full or ``--quick``."""

    quick: bool
    w1_start: int = 8
    # 600 rooms = 18,600 connections: the open-files limit here is 20,000 per process (a
    # hard limit even for root in this sandbox), for the server as for the generator.
    w1_cap: int = 600
    # W1P: a polling student holds two connections (GET and POST), so a room takes 41
    # sockets on each side instead of 31: 480 rooms = 19,680 of the 20,000 open files.
    w1p_cap: int = 480
    #: W1P's "half" room counts when W1 did not run in the same invocation (--w1-half):
    #: half of each server's W1 maximum in the last full run of docs/performance.md
    #: (Observer Relay ≥ 600 → 300, the reference 128 → 64).
    w1_half: tuple[int, int] = (300, 64)
    w1_bisect: int = 2
    w1_max_trials: int = 9
    w1_duration: float = 20.0
    w1_warmup: float = 3.0
    w2_students: int = 300
    w2_duration: float = 10.0
    w2_warmup: float = 2.0
    w2_rounds: int = 2
    w3_levels: tuple[int, ...] = (1000, 5000, 10000)
    w3_window: float = 30.0
    w4_duration: float = 20.0
    w4_rtc_rooms: int = 100
    w5_rooms: int = 100

    @classmethod
    def make(cls, quick: bool) -> Plan:
        if not quick:
            return cls(quick=False)
        return cls(quick=True, w1_start=4, w1_bisect=0, w1_max_trials=2, w1_duration=3.0,
                   w1_half=(6, 6),
                   w1_warmup=1.0, w2_duration=2.0, w2_warmup=1.0, w2_rounds=1,
                   w3_levels=(1000,), w3_window=2.0, w4_duration=3.0, w4_rtc_rooms=20,
                   w5_rooms=10)


def search_rooms(plan: Plan, cap: int | None = None) -> Generator[int, bool, int]:
    """Yield room counts to try (send back whether each passed); return the largest pass."""
    cap = plan.w1_cap if cap is None else cap
    best, failed, rooms, trials = 0, None, plan.w1_start, 0
    while failed is None and rooms <= cap and trials < plan.w1_max_trials:
        trials += 1
        if (yield rooms):
            if rooms == cap:
                return rooms  # the largest R this machine can measure
            best, rooms = rooms, min(rooms * 2, cap)
        else:
            failed = rooms
    if failed is None:
        return best
    for _ in range(plan.w1_bisect):
        mid = (best + failed) // 2
        if mid in (best, failed) or trials >= plan.w1_max_trials:
            break
        trials += 1
        if (yield mid):
            best = mid
        else:
            failed = mid
    return best


def classroom_timeout(rooms: int, duration: float) -> float:
    return 60 + duration + rooms * 31 / 100


def gc_note(result: dict[str, Any]) -> str:
    """`` GC max=…`` (longest server GC pause over its life) when ``--gc-stats`` is on."""
    gc = result.get("server_gc")
    if not gc:
        return ""
    worst = max(g["max_ms"] for g in gc.values())
    long = sum(g["long_pauses"] for g in gc.values())
    return f" GC max={worst:.0f} ms ({long} ≥ 50 ms)"


def run_w1(plan: Plan, framing: dict[str, str], extra: dict[str, Any] | None = None,
           cap: int | None = None, label: str = "W1") -> dict[str, Any]:
    """Largest R with p99 student→teacher ≤ 100 ms and nothing lost, both servers alternating
    (W1P: ``extra`` = the polling students' parameters, ``cap`` its room cap)."""
    kinds = [OURS, REFERENCE]
    searches = {k.name: search_rooms(plan, cap) for k in kinds}
    trying: dict[str, int | None] = {k.name: next(searches[k.name]) for k in kinds}
    best: dict[str, int] = {}
    trials: dict[str, list[dict[str, Any]]] = {k.name: [] for k in kinds}
    while any(v is not None for v in trying.values()):
        for kind in kinds:
            rooms = trying[kind.name]
            if rooms is None:
                continue
            params = {"rooms": rooms, "duration": plan.w1_duration, "warmup": plan.w1_warmup,
                      **(extra or {})}
            result = measure(kind, "W1", framing[kind.name], params,
                             classroom_timeout(rooms, plan.w1_duration))
            trials[kind.name].append(result)
            log_w1(label, kind, rooms, result)
            try:
                trying[kind.name] = searches[kind.name].send(bool(result.get("ok")))
            except StopIteration as stop:
                best[kind.name] = int(stop.value)
                trying[kind.name] = None
    return {"max_rooms": best, "trials": trials}


def log_w1(label: str, kind: ServerKind, rooms: int, result: dict[str, Any]) -> None:
    polled = ""
    if "polling" in result:
        p = result["polling"]
        polled = (f" polling: p99={p['student_to_host']['p99_ms']} ms "
                  f"to-student p99={p['host_to_student']['p99_ms']} ms")
    log(f"  {label} {kind.name:10} R={rooms:4} ok={result.get('ok')} "
        f"p99={result.get('student_to_host', {}).get('p99_ms')} ms{polled} "
        f"lost={result.get('lost')} server={result.get('server_cpu_pct')}% "
        f"gen={result.get('generator_cpu_pct')}% steal={result.get('cpu0_steal_pct')}/"
        f"{result.get('cpu1_steal_pct')}%{gc_note(result)} {result.get('error', '')}")


#: W1P: student i of room r polls when (i + r) % 3 == 0 — 10 of each room's 30 students,
#: the sharing student (i = 0) in every third room; hosts and the others on WebSocket.
W1P_PARAMS = {"polling_every": 3}


def run_w1p(plan: Plan, framing: dict[str, str], halves: dict[str, int]) -> dict[str, Any]:
    """W1 with a third of the students on long-polling: the largest R, and p99 at ``halves``
    (half of each server's all-WebSocket W1 maximum)."""
    framing = {"ours": "socketio", "reference": "socketio"}  # (polling is Socket.IO only)
    out = run_w1(plan, framing, W1P_PARAMS, plan.w1p_cap, "W1P")
    out["cap"] = plan.w1p_cap
    out["half_rooms"] = dict(halves)
    out["at_half"] = {}
    for kind in (OURS, REFERENCE):
        rooms = min(halves[kind.name], plan.w1p_cap)
        done = [t for t in out["trials"][kind.name] if t.get("rooms") == rooms]
        if done:
            out["at_half"][kind.name] = done[0]
            continue
        params = {"rooms": rooms, "duration": plan.w1_duration, "warmup": plan.w1_warmup,
                  **W1P_PARAMS}
        result = measure(kind, "W1", framing[kind.name], params,
                         classroom_timeout(rooms, plan.w1_duration))
        log_w1("W1P@half", kind, rooms, result)
        out["at_half"][kind.name] = result
    return out


def run_w2p(plan: Plan) -> dict[str, Any]:
    """W2 to 300 students that all use long-polling (the host on WebSocket), both servers
    alternating, ``plan.w2_rounds`` rounds."""
    kinds = [OURS, REFERENCE]
    rounds: dict[str, list[dict[str, Any]]] = {}
    for r in range(plan.w2_rounds):
        for kind in (kinds if r % 2 == 0 else kinds[::-1]):
            params = {"students": plan.w2_students, "duration": plan.w2_duration,
                      "warmup": plan.w2_warmup, "polling": True}
            result = measure(kind, "W2", "socketio", params, 120 + plan.w2_duration)
            rounds.setdefault(kind.name, []).append(result)
            log(f"  W2P {kind.name:10} {result.get('deliveries_per_s')} deliveries/s "
                f"{result.get('deliveries_per_cpu_s')}/CPU-s "
                f"per poll={result.get('polling', {}).get('deliveries_per_poll')} "
                f"server={result.get('server_cpu_pct')}% gen={result.get('generator_cpu_pct')}% "
                f"other(cpu0)={result.get('cpu0_other_pct')}% steal={result.get('cpu0_steal_pct')}"
                f"/{result.get('cpu1_steal_pct')}% {result.get('error', '')}")
    best = {k: max((x.get("deliveries_per_s") or 0) for x in v) for k, v in rounds.items()}
    per_cpu = {k: max((x.get("deliveries_per_cpu_s") or 0) for x in v)
               for k, v in rounds.items()}
    return {"deliveries_per_s": best, "deliveries_per_cpu_s": per_cpu, "rounds": rounds}


def run_w2(plan: Plan, framing: dict[str, str]) -> dict[str, Any]:
    kinds: list[tuple[ServerKind, str]] = [
        (OURS, framing["ours"]), (REFERENCE, "socketio"), (BROADCAST, "socketio")]
    if framing["ours"] == "socketio":
        kinds.append((OURS, "plain"))
    rounds: dict[str, list[dict[str, Any]]] = {}
    for r in range(plan.w2_rounds):
        order = kinds if r % 2 == 0 else kinds[::-1]
        for kind, fr in order:
            params = {"students": plan.w2_students, "duration": plan.w2_duration,
                      "warmup": plan.w2_warmup}
            result = measure(kind, "W2", fr, params, 90 + plan.w2_duration)
            key = f"{kind.name}/{fr}"
            rounds.setdefault(key, []).append(result)
            log(f"  W2 {key:20} {result.get('deliveries_per_s')} deliveries/s "
                f"server={result.get('server_cpu_pct')}% gen={result.get('generator_cpu_pct')}% "
                f"other(cpu0)={result.get('cpu0_other_pct')}% {result.get('error', '')}")
    best = {key: max((x.get("deliveries_per_s") or 0) for x in runs)
            for key, runs in rounds.items()}
    per_cpu = {key: max((x.get("deliveries_per_cpu_s") or 0) for x in runs)
               for key, runs in rounds.items()}
    return {"deliveries_per_s": best, "deliveries_per_cpu_s": per_cpu, "rounds": rounds}


def run_w3(plan: Plan, framing: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    kinds = [(OURS, framing["ours"]), (REFERENCE, "socketio")]
    for kind, fr in kinds:
        params = {"levels": list(plan.w3_levels), "window": plan.w3_window}
        timeout = 120 + len(plan.w3_levels) * (plan.w3_window + 10) + max(plan.w3_levels) / 100
        result = measure(kind, "W3", fr, params, timeout)
        out[kind.name] = result
        for level in result.get("levels", []):
            log(f"  W3 {kind.name:10} {level.get('connections')} conns "
                f"{level.get('bytes_per_connection')} B/conn idle={level.get('server_cpu_pct')}% "
                f"dropped={level.get('dropped_connections')}")
        if "error" in result:
            log(f"  W3 {kind.name}: {result['error']}")
    return out


def run_w4(plan: Plan, framing: dict[str, str], w1: dict[str, Any] | None,
           rooms_override: dict[str, int] | None = None) -> dict[str, Any]:
    """Signalling hops under W1 at half each server's W1 maximum, on the generator's normal
    schedule and again with every client's sends bunched on a 50 ms grid ("burst")."""
    out: dict[str, Any] = {}
    for variant, tick in (("", None), ("_burst", BURST_TICK)):
        for kind in (OURS, REFERENCE):
            rmax = (w1 or {}).get("max_rooms", {}).get(kind.name)
            rooms = max(1, rmax // 2) if rmax else (4 if plan.quick else 16)
            rooms = (rooms_override or {}).get(kind.name, rooms)
            load: dict[str, Any] = {"rtc_rooms": min(rooms, plan.w4_rtc_rooms)}
            if tick is not None:
                load["tick"] = tick
            params = {"rooms": rooms, "duration": plan.w4_duration, "warmup": plan.w1_warmup,
                      "load": load}
            result = measure(kind, "W4", framing[kind.name], params,
                             classroom_timeout(rooms, plan.w4_duration))
            result["w1_max_rooms"] = rmax
            out[kind.name + variant] = result
            hop = result.get("rtc", {}).get("hop", {})
            log(f"  W4{variant:6} {kind.name:10} R={rooms} hop p50={hop.get('p50_ms')} "
                f"p99={hop.get('p99_ms')} ms server={result.get('server_cpu_pct')}% "
                f"steal(cpu0)={result.get('cpu0_steal_pct')}%{gc_note(result)} "
                f"{result.get('error', '')}")
    return out


def run_w5(plan: Plan) -> dict[str, Any]:
    params = {"rooms": plan.w5_rooms}
    result = measure(OURS, "W5", "plain", params, 180)
    log(f"  W5 ours {result.get('resumed')}/{result.get('students')} resumed in "
        f"{result.get('all_resumed_s')} s lost={result.get('lost')} "
        f"dup={result.get('duplicates')} {result.get('error', '')}")
    return {"ours": result}


# --------------------------------------------------------------------------- report
def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for dist in ("observer-relay", "trio", "wsproto", "msgspec", "python-socketio",
                 "python-engineio", "uvicorn", "websockets", "uvloop"):
        try:
            out[dist] = metadata.version(dist)
        except metadata.PackageNotFoundError:
            out[dist] = "not installed"
    return out


def machine() -> dict[str, Any]:
    model = ""
    with contextlib.suppress(OSError), open("/proc/cpuinfo") as f:
        for line in f:
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return {"cpu": model, "cpus": os.cpu_count(), "memory_gib": round(mem / 2**30, 1),
            "kernel": platform.release(), "os": platform.platform(),
            "loadavg": os.getloadavg()}


def fmt(value: Any, unit: str = "") -> str:
    if value is None or value == "":
        return "-"
    if isinstance(value, float):
        value = f"{value:,.1f}" if value < 1000 else f"{value:,.0f}"
    elif isinstance(value, int):
        value = f"{value:,}"
    return f"{value}{unit}"


def ratio(a: Any, b: Any) -> str:
    try:
        return f"{a / b:.2f}×"
    except (TypeError, ZeroDivisionError):
        return "-"


def table(report: dict[str, Any]) -> str:
    """The Markdown table of a report (also pasted into docs/performance.md)."""
    rows = ["| Workload | Metric | Observer Relay | python-socketio ref. | Ratio | Target |",
            "|---|---|---|---|---|---|"]
    w = report["workloads"]
    if "W1" in w:
        best = w["W1"]["max_rooms"]
        ours, ref = best.get("ours"), best.get("reference")

        def p99_at(name: str, rooms: int | None) -> Any:
            for t in w["W1"]["trials"].get(name, []):
                if t.get("rooms") == rooms and t.get("ok"):
                    return t["student_to_host"]["p99_ms"]
            return None
        rows.append(f"| W1 classroom | largest R (rooms of 31) with p99 ≤ 100 ms, 0 lost "
                    f"| {fmt(ours)} | {fmt(ref)} | {ratio(ours, ref)} | ≥ 3× |")
        rows.append(f"| W1 classroom | p99 student→teacher at that R "
                    f"| {fmt(p99_at('ours', ours), ' ms')} | {fmt(p99_at('reference', ref), ' ms')}"
                    f" | | |")
    if "W2" in w:
        d = w["W2"]["deliveries_per_s"]
        c = w["W2"]["deliveries_per_cpu_s"]
        ours_key = f"ours/{report['framing']['ours']}"
        ours, ref, ws = d.get(ours_key), d.get("reference/socketio"), d.get(
            "websockets/socketio")
        rows.append(f"| W2 broadcast | deliveries/s, 300 students, ~2 KiB steps/all "
                    f"| {fmt(ours)} | {fmt(ref)} | {ratio(ours, ref)} | ≥ 2× |")
        rows.append(f"| W2 broadcast | deliveries per server CPU-second "
                    f"| {fmt(c.get(ours_key))} | {fmt(c.get('reference/socketio'))} "
                    f"| {ratio(c.get(ours_key), c.get('reference/socketio'))} | |")
        wsc = c.get("websockets/socketio")
        rows.append(f"| W2 broadcast | vs websockets broadcast() ({fmt(ws)}/s, "
                    f"{fmt(wsc)} per CPU-s): deliveries/s, per CPU-s "
                    f"| {ratio(ours, ws)}, {ratio(c.get(ours_key), wsc)} "
                    f"| {ratio(ref, ws)}, {ratio(c.get('reference/socketio'), wsc)} | | ≥ 0.8× |")
        if "ours/plain" in d and ours_key != "ours/plain":
            rows.append(f"| W2 broadcast | Observer Relay, plain framing | {fmt(d['ours/plain'])}"
                        f" | | | |")
    if "W1P" in w:
        rows += w1p_rows(w["W1P"])
    if "W2P" in w:
        d, c = w["W2P"]["deliveries_per_s"], w["W2P"]["deliveries_per_cpu_s"]

        def per_poll(name: str) -> Any:
            runs = w["W2P"]["rounds"].get(name, [])
            top: dict[str, Any] = max(runs, key=lambda x: x.get("deliveries_per_s") or 0,
                                      default={})
            return top.get("polling", {}).get("deliveries_per_poll")
        rows.append(f"| W2P broadcast, polling | deliveries/s, 300 polling students, ~2 KiB "
                    f"steps/all | {fmt(d.get('ours'))} | {fmt(d.get('reference'))} "
                    f"| {ratio(d.get('ours'), d.get('reference'))} | ≥ 2× |")
        rows.append(f"| W2P broadcast, polling | deliveries per server CPU-second "
                    f"| {fmt(c.get('ours'))} | {fmt(c.get('reference'))} "
                    f"| {ratio(c.get('ours'), c.get('reference'))} | (≥ 2×) |")
        rows.append(f"| W2P broadcast, polling | messages per long-poll answer (best round) "
                    f"| {fmt(per_poll('ours'))} | {fmt(per_poll('reference'))} | | |")
    if "W3" in w:
        levels: dict[str, dict[int, dict[str, Any]]] = {
            name: {x["connections"]: x for x in res.get("levels", []) if "connections" in x}
            for name, res in w["W3"].items()}
        for n in sorted({n for lv in levels.values() for n in lv}):
            o, r = levels.get("ours", {}).get(n, {}), levels.get("reference", {}).get(n, {})
            ob, rb = o.get("bytes_per_connection"), r.get("bytes_per_connection")
            target = "≤ 16 KiB" if n >= 10000 else ""
            rows.append(f"| W3 idle | server memory per connection at {n:,} "
                        f"| {fmt(ob and ob / 1024, ' KiB')} | {fmt(rb and rb / 1024, ' KiB')} "
                        f"| {ratio(ob, rb)} | {target} |")
            rows.append(f"| W3 idle | idle server CPU at {n:,} "
                        f"| {fmt(o.get('server_cpu_pct'), ' %')} "
                        f"| {fmt(r.get('server_cpu_pct'), ' %')} | | |")
    if "W4" in w:
        for variant, label in (("", "hop p50 / p99"),
                               ("_burst", "hop p50 / p99, sends bunched on a 50 ms grid")):
            o, r = ({**w["W4"].get(n + variant, {}).get("rtc", {}).get("hop", {})}
                    for n in ("ours", "reference"))
            if not o and not r:
                continue
            ro = w["W4"].get("ours" + variant, {}).get("rooms")
            rr = w["W4"].get("reference" + variant, {}).get("rooms")
            rows.append(f"| W4 signaling | {label} ({fmt(ro)} / {fmt(rr)} rooms, half of "
                        f"each W1 max) "
                        f"| {fmt(o.get('p50_ms'))} / {fmt(o.get('p99_ms'), ' ms')} "
                        f"| {fmt(r.get('p50_ms'))} / {fmt(r.get('p99_ms'), ' ms')} | "
                        f"| {'p99 ≤ 10 ms' if not variant else ''} |")
    if "W5" in w:
        o = w["W5"]["ours"]
        rows.append(f"| W5 reconnect storm | {fmt(o.get('students'))} plain students: all resumed "
                    f"after | {fmt(o.get('all_resumed_s'), ' s')} | n/a | | ≤ 10 s |")
        rows.append(f"| W5 reconnect storm | lost / duplicated / seq gaps / resyncs "
                    f"| {o.get('lost')} / {o.get('duplicates')} / {o.get('seq_gaps')} / "
                    f"{o.get('resyncs')} | n/a | | 0 / 0 |")
    return "\n".join(rows)


def w1p_rows(w1p: dict[str, Any]) -> list[str]:
    best = w1p["max_rooms"]
    ours, ref = best.get("ours"), best.get("reference")
    cap = w1p.get("cap")

    def at_least(r: Any) -> str:  # the search stops at the open-files cap
        return f"≥ {fmt(r)} (cap)" if r is not None and r == cap else fmt(r)
    rows = [f"| W1P classroom, ⅓ polling | largest R with p99 ≤ 100 ms, 0 lost "
            f"| {at_least(ours)} | {at_least(ref)} "
            f"| {'≥ ' if cap in (ours,) else ''}{ratio(ours, ref)} | |"]
    half = w1p.get("at_half", {})
    o, r = half.get("ours", {}), half.get("reference", {})

    def p99(t: dict[str, Any], *path: str) -> Any:
        for k in path:
            t = t.get(k) or {}
        return t.get("p99_ms") if t else None

    def verdict(t: dict[str, Any]) -> str:
        if not t:
            return "-"
        return "✓" if t.get("ok") else "✗"
    rows.append(f"| W1P classroom, ⅓ polling | p99 student→teacher at half the all-WebSocket "
                f"W1 max ({fmt(o.get('rooms'))} / {fmt(r.get('rooms'))} rooms), 0 lost "
                f"| {fmt(p99(o, 'student_to_host'), ' ms')} {verdict(o)} "
                f"| {fmt(p99(r, 'student_to_host'), ' ms')} {verdict(r)} | | ≤ 100 ms |")
    rows.append(f"| W1P classroom, ⅓ polling | at that R: polling students' p99 "
                f"student→teacher / teacher→student "
                f"| {fmt(p99(o, 'polling', 'student_to_host'))} / "
                f"{fmt(p99(o, 'polling', 'host_to_student'), ' ms')} "
                f"| {fmt(p99(r, 'polling', 'student_to_host'))} / "
                f"{fmt(p99(r, 'polling', 'host_to_student'), ' ms')} | | |")
    rows.append(f"| W1P classroom, ⅓ polling | at that R: server CPU, generator CPU "
                f"| {fmt(o.get('server_cpu_pct'), ' %')}, {fmt(o.get('generator_cpu_pct'), ' %')} "
                f"| {fmt(r.get('server_cpu_pct'), ' %')}, {fmt(r.get('generator_cpu_pct'), ' %')}"
                f" | | |")
    return rows


# --------------------------------------------------------------------------- main
def raise_nofile() -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for want in (262144, 65536, hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (max(want, soft), max(want, hard)))
            return
        except (ValueError, OSError):
            continue


def w1_halves(plan: Plan, w1: dict[str, Any] | None, flag: str) -> dict[str, int]:
    """Half of each server's all-WebSocket W1 maximum: from W1 in this run, else
    ``--w1-half OURS[,REF]``, else the plan's documented default."""
    halves = dict(zip(("ours", "reference"), plan.w1_half, strict=True))
    source = "documented default"
    counts = [int(x) for x in flag.split(",") if x.strip()]
    if counts:
        halves.update(zip(("ours", "reference"), counts, strict=False))
        source = "--w1-half"
    if w1 is not None:
        for name, rmax in w1.get("max_rooms", {}).items():
            if rmax:
                halves[name] = max(1, rmax // 2)
        source = "W1 of this run"
    log(f"  W1P half room counts {halves} ({source})")
    return halves


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Observer Relay benchmarks (issue 6)")
    parser.add_argument("--quick", action="store_true", help="small version of each workload")
    parser.add_argument("--workloads", default="W1,W2,W3,W4,W5")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--nice", type=int, default=0, metavar="N",
                        help="run servers and generators at nice -N (needs root); for shared "
                             "machines")
    parser.add_argument("--w4-rooms", default="", metavar="OURS[,REF]",
                        help="W4's room counts instead of half of each W1 maximum")
    parser.add_argument("--w1-half", default="", metavar="OURS[,REF]",
                        help="W1P's comparison room counts when W1 is not run in the same "
                             "invocation (default: half of the last documented W1 maxima)")
    parser.add_argument("--gc-stats", action="store_true",
                        help="record the servers' cyclic-GC pauses (bench.gcwatch)")
    args = parser.parse_args(argv)
    PRIORITY[2] = str(-args.nice)
    GC_STATS[0] = args.gc_stats
    selected = [w.strip().upper() for w in args.workloads.split(",") if w.strip()]
    if shutil.which("taskset") is None:
        log("taskset not found (util-linux): cannot pin server and generator")
        return 2
    if (os.cpu_count() or 1) < 2:
        log("need 2 CPUs (server on CPU 0, generator on CPU 1)")
        return 2
    raise_nofile()
    with contextlib.suppress(OSError):
        os.sched_setaffinity(0, {int(GENERATOR_CPU)})
    plan = Plan.make(args.quick)
    started = time.strftime("%Y%m%dT%H%M%S")
    report: dict[str, Any] = {"started": started, "quick": args.quick, "nice": -args.nice,
                              "gc_stats": args.gc_stats,
                              "machine": machine(), "versions": versions(),
                              "ours_env": OURS_ENV, "workloads": {}}
    report["_source_start"] = source_digest()
    framing = {"ours": "socketio", "reference": "socketio"}
    if any(w in selected for w in ("W1", "W2", "W3", "W4", "W1P")):
        problem = socketio_works()
        if problem is not None:
            log(f"!! Observer Relay's /socket.io/ endpoint does not work yet ({problem}).\n"
                f"!! Its W1-W4 rows use the plain framing (/observer) instead: NOT the same "
                f"wire as the reference. Re-run once Socket.IO works.")
            framing["ours"] = "plain"
    report["framing"] = framing
    t0 = time.monotonic()
    w = report["workloads"]
    for name in selected:
        log(f"== {name} ({'quick' if args.quick else 'full'})")
        if name == "W1":
            w["W1"] = run_w1(plan, framing)
        elif name == "W2":
            w["W2"] = run_w2(plan, framing)
        elif name == "W3":
            w["W3"] = run_w3(plan, framing)
        elif name == "W4":
            counts = [int(x) for x in args.w4_rooms.split(",") if x.strip()]
            w["W4"] = run_w4(plan, framing, w.get("W1"),
                             dict(zip(("ours", "reference"), counts, strict=False)))
        elif name == "W5":
            w["W5"] = run_w5(plan)
        elif name == "W1P":
            w["W1P"] = run_w1p(plan, framing, w1_halves(plan, w.get("W1"), args.w1_half))
        elif name == "W2P":
            w["W2P"] = run_w2p(plan)
        else:
            log(f"unknown workload {name}")
    report["elapsed_s"] = round(time.monotonic() - t0, 1)
    report["server_source"] = {"start": report.pop("_source_start"), "end": source_digest()}
    report["machine"]["loadavg_end"] = os.getloadavg()
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{started}.json"
    report["table"] = table(report)
    path.write_text(json.dumps(report, indent=1) + "\n")
    print(report["table"])
    if report["server_source"]["start"] != report["server_source"]["end"]:
        print("!! the server's source changed during this run: the measurements mix versions "
              "(see server_source in each result)")
    print(f"\n{'quick' if args.quick else 'full'} run in {report['elapsed_s']} s; "
          f"framing {framing}; results: {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
