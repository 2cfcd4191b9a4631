"""ChatRoom spaces benchmark (§9, issue 17): Observer Relay against a minimal `websockets` relay.

    python -m bench.chatroom [--quick] [--duration S] [--rounds N] [--workloads a,b,c]
    python -m bench.chatroom baseline --port P      # the minimal relay, started by the above

Workloads, all in one space, every client speaking the seed shape (``{"type","args"}``):

(a) fan-out: one writer ``set``s a ``generic`` topic subscribed by 100 clients (the writer is
    a subscriber too, as §9.4 requires; its echoes are not counted);
(b) 10 topics, each with 10 writers (subscribers, taking turns) and 10 more subscribers: every
    update reaches 20 connections, all counted;
(c) a service round trip (requester → relay → provider → relay → requester), one request at a
    time every 20 ms, measured while (b) runs, and alone for reference.

Writers keep at most ``--window`` updates per topic in flight (sent minus received by the
slowest subscriber of the topic), so the figure is what the server sustains, not what its
queues absorb. Values and change ids have fixed widths, so after two priming updates every
``update`` frame of a topic has the same length and receivers count bytes instead of parsing;
one probe subscriber per topic parses and reads the send time written into the value
(writer → subscriber latency).

The bar is ``baseline``: a `websockets` server (uvloop) that decodes each message with msgspec,
keeps topics, subscribers and services like a relay must, encodes each update once and writes
it to every subscriber with ``websockets.broadcast()`` — the same frames as the relay's seed
shape, with none of §2 or §9's checks. Target for (b): ≥ 0.8× its deliveries per second.

Servers run pinned to CPU 0 (``taskset``), fresh for every measurement, alternating; this
process generates the load on CPU 1. Observer Relay runs with its rate limits lifted (as in
``bench.run``) and its heartbeat interval beyond the run (its pings would break the byte
counts). Results: a table on stdout, JSON in ``bench/results/chatroom-<timestamp>.json``.
Only 127.0.0.1 is used, every step has a time limit, every process started here is stopped.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import itertools
import json
import os
import shutil
import sys
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import msgspec

from . import wire
from .loadgen import CpuWindow, ProcSampler, percentile, raise_nofile
from .run import (
    GENERATOR_CPU,
    OURS_ENV,
    PY,
    ServerKind,
    machine,
    running,
    source_digest,
    versions,
)

_json = msgspec.json.encode
_unjson = msgspec.json.decode
_now = time.monotonic_ns

RESULTS = Path(__file__).resolve().parent / "results"
SPACE = "bench"
CONNECT_TIMEOUT = 30.0
VALUE_PREFIX = b'"value":"~@'

OURS = ServerKind("ours", "Observer Relay", lambda port: [
    PY, "-m", "relay", "serve", "--host", "127.0.0.1", "--port", str(port), "--http-port", "0"],
    {**OURS_ENV, "OBSERVER_HEARTBEAT_INTERVAL": "3600", "OBSERVER_HEARTBEAT_TIMEOUT": "3600"})
BASELINE = ServerKind("websockets", "minimal websockets relay", lambda port: [
    PY, "-m", "bench.chatroom", "baseline", "--port", str(port)])


def log(text: str) -> None:
    print(text, file=sys.stderr, flush=True)


# --------------------------------------------------------------------------- the bar
async def serve_baseline(host: str, port: int) -> None:
    """The minimal relay: hello, subscribe (current value), update (set, broadcast to every
    subscriber, sender included), register_service, request/response forwarding."""
    from websockets.asyncio.server import ServerConnection, broadcast, serve

    ids = itertools.count(1)
    topics: dict[str, tuple[list[Any], set[ServerConnection]]] = {}  # name -> ([value], subs)
    services: dict[str, ServerConnection] = {}
    pending: dict[str, tuple[ServerConnection, Any]] = {}

    def frame(kind: str, args: dict[str, Any]) -> str:
        return _json({"type": kind, "args": args}).decode()

    async def handler(ws: ServerConnection) -> None:
        await ws.send(frame("hello", {"id": next(ids)}))
        mine: list[str] = []
        try:
            async for message in ws:
                if not isinstance(message, str):
                    continue
                m = _unjson(message)
                kind = m.get("type")
                a = m.get("args") or m.get("content") or {}
                if kind == "update":
                    name = a["topic_name"]
                    value, subs = topics[name]
                    if ws not in subs:
                        continue
                    change = a["change"]
                    old, value[0] = value[0], change["value"]
                    broadcast(subs, frame("update", {"topic_name": name, "change": {
                        "type": "set", "value": value[0], "old_value": old,
                        "id": change.get("id") or str(uuid.uuid4())}}))
                elif kind == "subscribe":
                    name = a["topic_name"]
                    value, subs = topics.setdefault(name, ([None], set()))
                    subs.add(ws)
                    mine.append(name)
                    await ws.send(frame("update", {"topic_name": name, "change": {
                        "type": "set", "value": value[0], "old_value": None,
                        "id": str(uuid.uuid4())}}))
                elif kind == "request":
                    provider = services.get(a["service_name"])
                    if provider is None:
                        await ws.send(frame("response", {"request_id": a["request_id"],
                                                         "response": None}))
                        continue
                    rid = str(uuid.uuid4())
                    pending[rid] = (ws, a["request_id"])
                    await provider.send(frame("request", {
                        "service_name": a["service_name"], "args": a.get("args") or {},
                        "request_id": rid}))
                elif kind == "response":
                    waiting = pending.pop(a["request_id"], None)
                    if waiting is not None:
                        await waiting[0].send(frame("response", {
                            "request_id": waiting[1], "response": a.get("response")}))
                elif kind == "register_service":
                    services.setdefault(a["service_name"], ws)
        finally:
            for name in mine:
                topics[name][1].discard(ws)
            for name in [n for n, p in services.items() if p is ws]:
                del services[name]

    async with serve(handler, host, port, compression=None, max_size=4 * 1024 * 1024,
                     max_queue=None, ping_interval=None):
        print(f"minimal websockets relay listening on ws://{host}:{port}", flush=True)
        await asyncio.Future()


# --------------------------------------------------------------------------- clients
class Conn(asyncio.Protocol):
    """One raw WebSocket client of the ChatRoom endpoint (seed shape).

    Parse mode: every message is decoded and handed to ``on_frame``; count mode: bytes are
    counted in units of ``frame_len`` (every message is an update of the same length).
    """

    def __init__(self, host: str, port: int, path: str) -> None:
        loop = asyncio.get_running_loop()
        self.host, self.port, self.path = host, port, path
        self.transport: asyncio.Transport | None = None
        self.hello: asyncio.Future[int] = loop.create_future()
        self.closed: asyncio.Future[None] = loop.create_future()
        self.upgraded = False
        self._head = b""
        self.parser = wire.FrameParser(self._on_message, self._on_control)
        self.on_frame: Callable[[Conn, bytes], None] | None = None
        self.counting = False
        self.frame_len = 0
        self.bytes_in = 0
        self.count = 0  # update frames received since the subscription's answer
        self.last_len = 0  # length of the last parsed update message
        self.on_progress: Callable[[], None] | None = None
        self.close_code: int | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.transport.write(wire.upgrade_request(self.host, self.port, self.path))

    def data_received(self, data: bytes) -> None:
        if self.counting:
            self.bytes_in += len(data)
            n = self.bytes_in // self.frame_len - self.count
            if n:
                self.count += n
                if self.on_progress is not None:
                    self.on_progress()
            return
        if not self.upgraded:
            self._head += data
            end = self._head.find(b"\r\n\r\n")
            if end < 0:
                return
            status = self._head[:self._head.find(b"\r\n")]
            data, self._head = self._head[end + 4:], b""
            if b" 101 " not in status + b" ":
                self._fail(ConnectionError(f"upgrade refused: {status!r}"))
                return
            self.upgraded = True
        if data:
            self.parser.feed(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(ConnectionError("connection lost"))
        if not self.closed.done():
            self.closed.set_result(None)

    def _fail(self, exc: Exception) -> None:
        if not self.hello.done():
            self.hello.set_exception(exc)
            self.hello.exception()

    def _on_control(self, opcode: int, payload: bytes) -> None:
        if opcode == wire.OP_PING:
            self.send(wire.client_frame(payload, wire.OP_PONG))
        elif opcode == wire.OP_CLOSE:
            self.close_code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
            self.send(wire.close_frame(1000))
            if self.transport is not None:
                self.transport.close()

    def _on_message(self, message: bytes) -> None:
        if not self.hello.done() and message.startswith(b'{"type":"hello"'):
            self.hello.set_result(int(_unjson(message)["args"]["id"]))
            return
        if self.on_frame is not None:
            self.on_frame(self, message)

    def start_counting(self, frame_len: int) -> None:
        """From now on every message is an update of ``frame_len`` bytes on the wire."""
        self.frame_len = frame_len
        left = self.parser.take_buffer()
        self.bytes_in = self.count * frame_len + len(left)
        self.counting = True

    @property
    def alive(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    def send(self, frame: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(frame)

    def send_json(self, kind: str, args: dict[str, Any]) -> None:
        self.send(wire.client_frame(_json({"type": kind, "args": args})))

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(wire.close_frame(1000))
            self.transport.close()


async def connect(host: str, port: int) -> Conn:
    loop = asyncio.get_running_loop()
    _, conn = await asyncio.wait_for(loop.create_connection(
        lambda: Conn(host, port, f"/chatroom?space={SPACE}"), host, port), CONNECT_TIMEOUT)
    await asyncio.wait_for(asyncio.shield(conn.hello), CONNECT_TIMEOUT)
    return conn


def header_len(n: int) -> int:
    return 2 if n < 126 else 4 if n < 65536 else 10


# --------------------------------------------------------------------------- topics
class Latency:
    def __init__(self) -> None:
        self.samples: list[int] = []
        self.measuring = False

    def summary(self) -> dict[str, Any]:
        values = sorted(s / 1e6 for s in self.samples)
        return {"n": len(values), "p50_ms": _r(percentile(values, 50)),
                "p99_ms": _r(percentile(values, 99)), "max_ms": _r(values[-1] if values else None)}


def _r(value: float | None) -> float | None:
    return None if value is None else round(value, 2)


@dataclass
class Topic:
    name: str
    writers: list[Conn]
    receivers: list[Conn]  # every subscriber, writers included
    counted: list[Conn]  # the receivers whose deliveries count
    probe: Conn
    sent: int = 0
    seq: itertools.count = field(default_factory=itertools.count)

    def update(self) -> None:
        """The next writer sets a fixed-width value holding the send time."""
        n = next(self.seq)
        writer = self.writers[n % len(self.writers)]
        value = f"~@{_now():020d}:{n:010d}@~"
        writer.send(wire.client_frame(
            b'{"type":"update","args":{"topic_name":"' + self.name.encode()
            + b'","change":{"type":"set","value":"' + value.encode() + b'","id":"'
            + f"{n:012d}".encode() + b'"}}}'))
        self.sent += 1

    def slowest(self) -> int:
        return min(c.count for c in self.receivers)


def probe_handler(latency: Latency, progress: asyncio.Event) -> Callable[[Conn, bytes], None]:
    def on_frame(conn: Conn, message: bytes) -> None:
        if not message.startswith(b'{"type":"update"'):
            return
        conn.count += 1
        conn.last_len = len(message)
        i = message.find(VALUE_PREFIX)
        if i >= 0 and latency.measuring:
            latency.samples.append(_now() - int(message[i + len(VALUE_PREFIX):i + 31]))
        progress.set()
    return on_frame


def setup_handler(conn: Conn, message: bytes) -> None:
    if message.startswith(b'{"type":"update"'):
        conn.count += 1
        conn.last_len = len(message)


async def wait_for(probe: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not probe():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        await asyncio.sleep(0.01)


async def make_topics(host: str, port: int, shape: list[tuple[int, int]], count_writers: bool,
                      latency: Latency, progress: asyncio.Event) -> list[Topic]:
    """Topics ``t0``… with (writers, extra subscribers) each; subscribed and primed.
    Deliveries to the writers (their echoes) count only with ``count_writers``."""
    topics = []
    for i, (n_writers, n_subs) in enumerate(shape):
        conns = await asyncio.gather(*(connect(host, port)
                                       for _ in range(n_writers + n_subs)))
        writers = list(conns[:n_writers])
        subs = list(conns[n_writers:])
        probe = subs[0]
        name = f"t{i}"
        for c in conns:
            c.on_frame = setup_handler
            c.send_json("subscribe", {"topic_name": name, "type": "generic"})
        await wait_for(lambda: all(c.count == 1 for c in conns), 30,  # noqa: B023
                       f"subscriptions to {name}")
        counted = list(conns) if count_writers else subs
        topics.append(Topic(name, writers, list(conns), counted, probe))
    # two priming updates: after them every update frame of a topic has one length
    for topic in topics:
        for c in topic.receivers:
            c.count = 0
        topic.update()
        topic.update()
    await wait_for(lambda: all(c.count == 2 for t in topics for c in t.receivers), 30,
                   "priming updates")
    for topic in topics:
        lengths = {c.last_len for c in topic.receivers}
        assert len(lengths) == 1, f"update frames of {topic.name} differ: {lengths}"
        n = lengths.pop()
        for c in topic.receivers:
            c.count = 0
            c.on_progress = progress.set
            if c is topic.probe:
                c.on_frame = probe_handler(latency, progress)
            else:
                c.start_counting(n + header_len(n))
        topic.sent = 0
    return topics


# --------------------------------------------------------------------------- services
@dataclass
class ServicePair:
    requester: Conn
    provider: Conn
    rtt: list[int] = field(default_factory=list)
    failed: int = 0
    waiting: dict[str, int] = field(default_factory=dict)
    done: asyncio.Event = field(default_factory=asyncio.Event)


async def make_service(host: str, port: int) -> ServicePair:
    provider = await connect(host, port)
    requester = await connect(host, port)
    pair = ServicePair(requester, provider)

    def on_request(conn: Conn, message: bytes) -> None:
        frame = _unjson(message)
        if frame["type"] == "request":
            args = frame["args"]
            conn.send_json("response", {"request_id": args["request_id"],
                                        "response": args["args"].get("n")})

    def on_response(conn: Conn, message: bytes) -> None:
        frame = _unjson(message)
        if frame["type"] != "response":
            return
        args = frame["args"]
        sent = pair.waiting.pop(args["request_id"], None)
        if sent is not None:
            if args.get("response") is None:
                pair.failed += 1
            else:
                pair.rtt.append(_now() - sent)
            pair.done.set()

    provider.on_frame = on_request
    requester.on_frame = on_response
    provider.send_json("register_service", {"service_name": "echo"})
    # registration is silent: wait until a request is answered (not "unknown service")
    for attempt in range(200):
        pair.done.clear()
        rid = f"warm-{attempt}"
        pair.waiting[rid] = _now()
        requester.send_json("request", {"service_name": "echo", "args": {"n": attempt},
                                        "request_id": rid})
        await asyncio.wait_for(pair.done.wait(), 10)
        if pair.rtt:
            break
        await asyncio.sleep(0.02)
    pair.rtt.clear()
    pair.failed = 0
    return pair


async def call_loop(pair: ServicePair, until: float, gap: float = 0.02) -> None:
    n = 0
    while time.monotonic() < until:
        n += 1
        rid = f"r{n}"
        pair.done.clear()
        pair.waiting[rid] = _now()
        pair.requester.send_json("request", {"service_name": "echo", "args": {"n": n},
                                             "request_id": rid})
        try:
            await asyncio.wait_for(pair.done.wait(), 10)
        except TimeoutError:
            pair.failed += 1
            pair.waiting.pop(rid, None)
        await asyncio.sleep(gap)


def rtt_summary(pair: ServicePair) -> dict[str, Any]:
    values = sorted(s / 1e6 for s in pair.rtt)
    return {"n": len(values), "failed": pair.failed, "p50_ms": _r(percentile(values, 50)),
            "p99_ms": _r(percentile(values, 99)), "max_ms": _r(values[-1] if values else None)}


# --------------------------------------------------------------------------- workloads
async def fanout(host: str, port: int, sampler: ProcSampler, shape: list[tuple[int, int]],
                 count_writers: bool, duration: float, warmup: float, window: int,
                 service: bool) -> dict[str, Any]:
    """Closed-loop updates on ``shape`` topics; deliveries/s, latency, optional service RTT."""
    latency = Latency()
    progress = asyncio.Event()
    try:
        topics = await make_topics(host, port, shape, count_writers, latency, progress)
        pair = await make_service(host, port) if service else None
    except Exception as exc:
        return {"ok": False, "error": f"setup failed: {exc!r}"}
    clients = {id(c): c for t in topics for c in t.receivers}
    if pair is not None:
        clients[id(pair.requester)] = pair.requester
        clients[id(pair.provider)] = pair.provider
    t0 = time.monotonic()
    t_measure, t_end = t0 + warmup, t0 + warmup + duration
    caller = None
    cpu: CpuWindow | None = None
    base = 0
    while True:
        now = time.monotonic()
        if now >= t_end:
            break
        if cpu is None and now >= t_measure:
            cpu = CpuWindow(sampler)
            latency.measuring = True
            base = sum(c.count for t in topics for c in t.counted)
            if pair is not None:
                caller = asyncio.ensure_future(call_loop(pair, t_end))
        for topic in topics:
            room = window - (topic.sent - topic.slowest())
            for _ in range(max(0, room)):
                topic.update()
        progress.clear()
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(progress.wait(), 1.0)
    delivered = sum(c.count for t in topics for c in t.counted) - base
    latency.measuring = False
    result: dict[str, Any] = cpu.result() if cpu else {}
    if caller is not None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(caller, 15)
    # the accounting check: once the last updates are in, every subscriber of a topic has
    # received exactly what was sent to it (bytes counted right, nothing lost or doubled)
    with contextlib.suppress(TimeoutError):
        await wait_for(lambda: all(t.slowest() >= t.sent for t in topics), 15, "drain")
    exact = all(c.count == t.sent for t in topics for c in t.receivers)
    dropped = sum(1 for c in clients.values() if not c.alive)
    seconds = result.get("seconds", duration)
    out = {"ok": dropped == 0 and exact, "exact_counts": exact, "topics": len(topics),
           "connections": len(clients),
           "deliveries_per_s": round(delivered / seconds),
           "deliveries_per_cpu_s": round(delivered / max(result.get("server_cpu_s", 0), 1e-3)),
           "updates_per_s": round(delivered / seconds / max(1, len(topics[0].counted))),
           "frame_bytes": topics[0].receivers[-1].frame_len or None,
           "latency": latency.summary(), "dropped_connections": dropped, **result}
    if pair is not None:
        out["service"] = rtt_summary(pair)
    for c in clients.values():
        c.close()
    await asyncio.sleep(0.2)
    return out


async def service_alone(host: str, port: int, sampler: ProcSampler, duration: float,
                        warmup: float) -> dict[str, Any]:
    try:
        pair = await make_service(host, port)
    except Exception as exc:
        return {"ok": False, "error": f"setup failed: {exc!r}"}
    await call_loop(pair, time.monotonic() + warmup)
    pair.rtt.clear()
    cpu = CpuWindow(sampler)
    await call_loop(pair, time.monotonic() + duration)
    out = {"ok": pair.failed == 0, "service": rtt_summary(pair), **cpu.result()}
    pair.requester.close()
    pair.provider.close()
    return out


WORKLOADS: dict[str, dict[str, Any]] = {
    "a": {"shape": [(1, 100)], "count_writers": False, "service": False,
          "label": "(a) 1 writer → 1 topic → 100 subscribers"},
    "b": {"shape": [(10, 10)] * 10, "count_writers": True, "service": True,
          "label": "(b) 10 topics × (10 writers + 10 subscribers)"},
}


async def measure_async(kind_name: str, workload: str, port: int, pid: int,
                        params: dict[str, Any]) -> dict[str, Any]:
    sampler = ProcSampler(pid)
    if workload == "c0":
        return await service_alone("127.0.0.1", port, sampler, params["duration"],
                                   params["warmup"])
    spec = WORKLOADS[workload]
    return await fanout("127.0.0.1", port, sampler, spec["shape"], spec["count_writers"],
                        params["duration"], params["warmup"], params["window"],
                        spec["service"])


def measure(kind: ServerKind, workload: str, params: dict[str, Any]) -> dict[str, Any]:
    """A fresh server pinned to CPU 0, one measurement, the server stopped."""
    import uvloop

    try:
        with running(kind) as server:
            result = uvloop.run(asyncio.wait_for(
                measure_async(kind.name, workload, server.port, server.pid, params),
                params["duration"] + params["warmup"] + 90))
            if server.proc.poll() is not None:
                result = {**result, "ok": False, "error": f"server died: {server.stderr_tail()}"}
    except (RuntimeError, TimeoutError) as exc:
        result = {"ok": False, "error": repr(exc)}
    result["server"] = kind.name
    return result


# --------------------------------------------------------------------------- report
def fmt(value: Any, unit: str = "") -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:,.1f}{unit}" if value < 1000 else f"{value:,.0f}{unit}"
    if isinstance(value, int):
        return f"{value:,}{unit}"
    return f"{value}{unit}"


def ratio(a: Any, b: Any) -> str:
    try:
        return f"{a / b:.2f}×"
    except (TypeError, ZeroDivisionError):
        return "-"


def best(runs: list[dict[str, Any]], key: str) -> dict[str, Any]:
    ok = [r for r in runs if r.get("ok")] or runs
    return max(ok, key=lambda r: r.get(key) or 0)


def table(results: dict[str, dict[str, list[dict[str, Any]]]]) -> str:
    rows = ["| Workload | Metric | Observer Relay | minimal websockets | Ratio | Target |",
            "|---|---|---|---|---|---|"]
    for w in ("a", "b"):
        if w not in results:
            continue
        o = best(results[w].get("ours", []), "deliveries_per_s")
        b = best(results[w].get("websockets", []), "deliveries_per_s")
        label = WORKLOADS[w]["label"]
        rows.append(f"| {label} | deliveries/s | {fmt(o.get('deliveries_per_s'))} "
                    f"| {fmt(b.get('deliveries_per_s'))} "
                    f"| {ratio(o.get('deliveries_per_s'), b.get('deliveries_per_s'))} "
                    f"| {'≥ 0.8×' if w == 'b' else ''} |")
        rows.append(f"| {label} | deliveries per server CPU-s "
                    f"| {fmt(o.get('deliveries_per_cpu_s'))} "
                    f"| {fmt(b.get('deliveries_per_cpu_s'))} "
                    f"| {ratio(o.get('deliveries_per_cpu_s'), b.get('deliveries_per_cpu_s'))} | |")
        lo, lb = o.get("latency", {}), b.get("latency", {})
        rows.append(f"| {label} | writer→subscriber p50 / p99 "
                    f"| {fmt(lo.get('p50_ms'))} / {fmt(lo.get('p99_ms'), ' ms')} "
                    f"| {fmt(lb.get('p50_ms'))} / {fmt(lb.get('p99_ms'), ' ms')} | | |")
        rows.append(f"| {label} | server CPU | {fmt(o.get('server_cpu_pct'), ' %')} "
                    f"| {fmt(b.get('server_cpu_pct'), ' %')} | | |")
        if w == "b":
            so, sb = o.get("service", {}), b.get("service", {})
            rows.append(f"| (c) service round trip under (b) | p50 / p99 (n, failed) "
                        f"| {fmt(so.get('p50_ms'))} / {fmt(so.get('p99_ms'), ' ms')} "
                        f"({fmt(so.get('n'))}, {fmt(so.get('failed'))}) "
                        f"| {fmt(sb.get('p50_ms'))} / {fmt(sb.get('p99_ms'), ' ms')} "
                        f"({fmt(sb.get('n'))}, {fmt(sb.get('failed'))}) | | |")
    if "c0" in results:
        def quickest(runs: list[dict[str, Any]]) -> dict[str, Any]:
            p99s = [r["service"] for r in runs if r.get("service", {}).get("p99_ms") is not None]
            return min(p99s, key=lambda s: s["p99_ms"]) if p99s else {}
        so = quickest(results["c0"].get("ours", []))
        sb = quickest(results["c0"].get("websockets", []))
        rows.append(f"| (c) service round trip, no load | p50 / p99 "
                    f"| {fmt(so.get('p50_ms'))} / {fmt(so.get('p99_ms'), ' ms')} "
                    f"| {fmt(sb.get('p50_ms'))} / {fmt(sb.get('p99_ms'), ' ms')} | | |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["baseline"]:
        parser = argparse.ArgumentParser(prog="python -m bench.chatroom baseline")
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, required=True)
        args = parser.parse_args(argv[1:])
        import uvloop
        uvloop.run(serve_baseline(args.host, args.port))
        return 0
    parser = argparse.ArgumentParser(description="ChatRoom spaces benchmark (issue 17)")
    parser.add_argument("--quick", action="store_true", help="3 s windows, one round")
    parser.add_argument("--duration", type=float, default=None, help="seconds measured")
    parser.add_argument("--warmup", type=float, default=None)
    parser.add_argument("--rounds", type=int, default=None,
                        help="measurements per server and workload (alternating order)")
    parser.add_argument("--window", type=int, default=16,
                        help="updates in flight per topic")
    parser.add_argument("--workloads", default="a,b,c0")
    parser.add_argument("--out", type=Path, default=RESULTS)
    args = parser.parse_args(argv)
    if shutil.which("taskset") is None or (os.cpu_count() or 1) < 2:
        log("need taskset and 2 CPUs (server on CPU 0, generator on CPU 1)")
        return 2
    raise_nofile()
    with contextlib.suppress(OSError):
        os.sched_setaffinity(0, {int(GENERATOR_CPU)})
    gc.disable()  # short runs; a GC pass over the clients would show up as latency
    duration = args.duration or (3.0 if args.quick else 10.0)
    warmup = args.warmup if args.warmup is not None else (1.0 if args.quick else 2.0)
    rounds = args.rounds or (1 if args.quick else 2)
    params = {"duration": duration, "warmup": warmup, "window": args.window}
    selected = [w.strip() for w in args.workloads.split(",") if w.strip()]
    started = time.strftime("%Y%m%dT%H%M%S")
    report: dict[str, Any] = {"started": started, "params": params, "rounds": rounds,
                              "machine": machine(), "versions": versions(),
                              "ours_env": OURS.env, "server_source": source_digest(),
                              "results": {}}
    results: dict[str, dict[str, list[dict[str, Any]]]] = report["results"]
    for w in selected:
        for r in range(rounds):
            order = [OURS, BASELINE] if r % 2 == 0 else [BASELINE, OURS]
            for kind in order:
                result = measure(kind, w, params)
                results.setdefault(w, {}).setdefault(kind.name, []).append(result)
                lat = result.get("latency", {})
                svc = result.get("service", {})
                log(f"  ({w}) {kind.name:10} ok={result.get('ok')} "
                    f"{result.get('deliveries_per_s', '-')} deliveries/s "
                    f"p99={lat.get('p99_ms', '-')} ms service p99={svc.get('p99_ms', '-')} ms "
                    f"server={result.get('server_cpu_pct')}% "
                    f"cpu0 other={result.get('cpu0_other_pct')}% "
                    f"steal={result.get('cpu0_steal_pct')}% {result.get('error', '')}")
    report["server_source_end"] = source_digest()
    report["machine"]["loadavg_end"] = os.getloadavg()
    report["table"] = table(results)
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"chatroom-{started}.json"
    path.write_text(json.dumps(report, indent=1) + "\n")
    print(report["table"])
    print(f"\nresults: {path}")
    if report["server_source"] != report["server_source_end"]:
        print("!! the server's source changed during this run: the measurements mix versions")
    return 0


if __name__ == "__main__":
    sys.exit(main())
