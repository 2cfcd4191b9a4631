"""Benchmark of the chat app's events (§9.10): Observer Relay against a python-socketio
reference server running the seed's events, same wire, same run.

    python -m bench.chat [--quick] [--users 2000] [--login-window 10] [--rate 200]
                         [--duration 20] [--servers ours,reference] [--rounds 1] [--out DIR]

The workload, for each server in turn (a fresh server pinned to CPU 0, a fresh generator
pinned to CPU 1, as ``bench.run`` does):

1. **Logins.** ``users`` raw Socket.IO-over-WebSocket clients (``bench.loadgen.Client``)
   connect, then log in spread evenly over ``login_window`` seconds. Measured: every
   ``contact`` frame and byte the clients receive, per login (coalescing must keep them
   bounded: a ``contact`` is as large as the directory, so one to everybody per login costs
   users² frames), the most ``contact`` frames one session got, the login-response latency,
   how long after the window the last ``contact`` arrived, server CPU and RSS. A sample of
   sessions checks that its last ``contact`` lists every user.
2. **Groups.** ``groups`` groups of ``group_size`` users are created (``create_group``).
3. **Messages.** ``rate`` messages/s for ``duration`` s among the users, ``direct_share``
   of them direct and the rest to a group, each carrying its send time; every delivery's
   latency (p50/p99/max), lost deliveries, server CPU.

Each phase has a time limit and an RSS limit for the server (``--rss-limit-mb``); a server
that cannot keep up is reported as such ("gave up") rather than waited for. The reference
server (``python -m bench.chat reference --port N``) is python-socketio's ``AsyncServer``
on uvicorn implementing the seed server's events as ``seed-systems.md`` §4.2 describes
(``yjl450/networking-project`` ``backend/server.py``): ids are sids, ``contact`` to every
connected socket after every change, ``sender`` trusted, groups deleted when 2 or fewer
members remain. Only 127.0.0.1 is used, and every process started here is stopped here.
Prints a table; writes JSON to ``bench/results/chat-<timestamp>.json``.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import random
import subprocess
import sys
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import loadgen as lg
from . import run as bench_run
from .wire import SOCKETIO

_json = lg._json
_unjson = lg._unjson
_now = time.monotonic_ns

CONNECT_CONCURRENCY = 100
MARK_OPEN, MARK_CLOSE = lg.MARK_OPEN, lg.MARK_CLOSE


# --------------------------------------------------------------------------- reference
def build_reference(ping_interval: float = 25, ping_timeout: float = 20) -> Any:
    """The seed chat server's events on python-socketio (seed-systems.md §4.2)."""
    import socketio

    sio = socketio.AsyncServer(async_mode="asgi", cors_allowed_origins="*",
                               ping_interval=ping_interval, ping_timeout=ping_timeout,
                               max_http_buffer_size=4 * 1024 * 1024)
    user: dict[str, dict[str, str]] = {}  # sid -> {sid: username}
    rooms: dict[str, dict[str, str]] = {}  # group id -> {sid: username}

    async def contact() -> None:
        await sio.emit("contact", {"person": user, "group": rooms})  # every socket

    def new_group_id(sender: str) -> str:
        gid = str(hash(str(time.time()) + sender))[:10]
        return new_group_id(sender) if gid in rooms else gid

    @sio.on("login")  # type: ignore[misc]
    async def login(sid: str, data: dict[str, Any]) -> None:
        name = data["username"]
        if any(name in entry.values() for entry in user.values()):
            await sio.emit("login-response", {"username": name, "result": "duplicate",
                                              "userid": sid}, to=sid)
            return
        user[sid] = {sid: name}
        await sio.emit("login-response", {"username": name, "result": "success",
                                          "userid": sid}, to=sid)
        await contact()

    @sio.on("message")  # type: ignore[misc]
    async def message(sid: str, data: dict[str, Any]) -> None:
        await sio.emit("message", data, room=data["receiver"], skip_sid=data["sender"])

    @sio.on("create_group")  # type: ignore[misc]
    async def create_group(sid: str, data: dict[str, Any]) -> None:
        gid = new_group_id(data["sender"])
        rooms[gid] = data["member"]
        for member in data["member"]:
            await sio.enter_room(member, gid)
        await sio.emit("update_group", {"groupid": gid, "member": rooms[gid]}, room=gid)
        await contact()

    @sio.on("join_group")  # type: ignore[misc]
    async def join_group(sid: str, data: dict[str, Any]) -> None:
        gid, sender = data["groupid"], data["sender"]
        rooms[gid][sender] = user[sender][sender]
        await sio.enter_room(sender, gid)
        await sio.emit("update_group", {"groupid": gid, "member": rooms[gid]}, room=gid)
        await contact()

    async def leave(sid: str, gid: str, sender: str) -> None:
        del rooms[gid][sender]
        if len(rooms[gid]) <= 2:
            del rooms[gid]
            await sio.emit("delete_group", {"groupid": gid}, room=gid)
            await sio.leave_room(sid, gid)
        else:
            await sio.leave_room(sid, gid)
            await sio.emit("update_group", {"groupid": gid, "member": rooms[gid]}, room=gid)

    @sio.on("leave_group")  # type: ignore[misc]
    async def leave_group(sid: str, data: dict[str, Any]) -> None:
        await leave(sid, data["groupid"], data["sender"])
        await contact()

    async def logout_sid(sid: str) -> None:
        if sid not in user:
            return
        del user[sid]
        for gid in [g for g, m in rooms.items() if sid in m]:
            await leave(sid, gid, sid)
        await contact()

    @sio.on("logout")  # type: ignore[misc]
    async def logout(sid: str, data: Any = None) -> None:
        await logout_sid(sid)

    @sio.on("disconnect")  # type: ignore[misc]
    async def disconnect(sid: str, *args: Any) -> None:
        await logout_sid(sid)

    return socketio.ASGIApp(sio)


def serve_reference(port: int) -> None:
    import uvicorn

    uvicorn.run(build_reference(), host="127.0.0.1", port=port, log_level="warning",
                ws_max_size=4 * 1024 * 1024)


REFERENCE = bench_run.ServerKind("reference", "python-socketio + uvicorn (seed events)",
                                 lambda port: [bench_run.PY, "-m", "bench.chat", "reference",
                                               "--port", str(port)])
SERVERS = {"ours": bench_run.OURS, "reference": REFERENCE}


# --------------------------------------------------------------------------- generator
class ChatClient(lg.Client):
    """A raw Socket.IO client that counts bytes and keeps its chat state."""

    def __init__(self, *args: Any, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.bytes_in_total = 0
        self.uid = ""
        self.name = ""
        self.login_sent = 0
        self.login_answered = 0
        self.contacts = 0
        self.contact_bytes = 0
        self.last_contact_at = 0
        self.keep_last_contact = False
        self.last_contact = b""

    def data_received(self, data: bytes) -> None:
        self.bytes_in_total += len(data)
        super().data_received(data)


@dataclass
class Deliveries:
    """Latency and exactly-once accounting of message deliveries."""

    pending: dict[int, int] = field(default_factory=dict)  # key -> deliveries still due
    measured: dict[int, bool] = field(default_factory=dict)
    samples: list[int] = field(default_factory=list)
    arrivals: list[int] = field(default_factory=list)
    sent: int = 0
    expected: int = 0
    received: int = 0
    unexpected: int = 0
    next_key: int = 0

    def new(self, receivers: int, measured: bool) -> int:
        self.next_key += 1
        self.pending[self.next_key] = receivers
        self.measured[self.next_key] = measured
        self.sent += 1
        self.expected += receivers
        return self.next_key

    def got(self, message: bytes) -> None:
        found = lg.read_marker(message)
        if found is None:
            return
        sent, key = found
        left = self.pending.get(key)
        if left is None:
            self.unexpected += 1
            return
        self.received += 1
        if self.measured.get(key):
            now = _now()
            self.samples.append(now - sent)
            self.arrivals.append(now)
        if left <= 1:
            del self.pending[key]
        else:
            self.pending[key] = left - 1

    def result(self) -> dict[str, Any]:
        out = lg.summarize(self.samples)
        values = sorted(v / 1e6 for v in self.samples)
        out["p90_ms"] = lg._round(lg.percentile(values, 90))
        out["p95_ms"] = lg._round(lg.percentile(values, 95))
        out["over_50ms"] = sum(1 for v in values if v > 50)
        if self.arrivals:  # the worst latency (ms) of each second: where spikes happened
            start = self.arrivals[0]
            worst: dict[int, int] = {}
            for at, lat in zip(self.arrivals, self.samples, strict=True):
                second = (at - start) // 1_000_000_000
                worst[second] = max(worst.get(second, 0), lat)
            out["worst_per_second_ms"] = [round(worst.get(i, 0) / 1e6, 1)
                                          for i in range(max(worst) + 1)]
        out.update(messages=self.sent, deliveries_expected=self.expected,
                   deliveries=self.received, lost=sum(self.pending.values()),
                   unexpected=self.unexpected)
        return out


async def open_clients(port: int, n: int) -> list[ChatClient]:
    loop = asyncio.get_running_loop()
    gate = asyncio.Semaphore(CONNECT_CONCURRENCY)

    async def one() -> ChatClient:
        async with gate:
            _, client = await asyncio.wait_for(loop.create_connection(
                lambda: ChatClient(SOCKETIO, "127.0.0.1", port), "127.0.0.1", port),
                lg.CONNECT_TIMEOUT)
            await asyncio.wait_for(asyncio.shield(client.ready), lg.CONNECT_TIMEOUT)
            return client

    return list(await asyncio.gather(*(one() for _ in range(n))))


class Limits:
    """Stops a phase when the server's RSS passes a limit or the server dies."""

    def __init__(self, sampler: lg.ProcSampler, rss_limit: int) -> None:
        self.sampler = sampler
        self.rss_limit = rss_limit
        self.peak_rss = 0
        self.reason = ""

    def exceeded(self) -> bool:
        try:
            rss = self.sampler.rss()
        except OSError:
            self.reason = "server exited"
            return True
        self.peak_rss = max(self.peak_rss, rss)
        if rss > self.rss_limit:
            self.reason = f"server RSS over {self.rss_limit >> 20} MiB"
            return True
        return False


async def chat_load(port: int, sampler: lg.ProcSampler, *, users: int, login_window: float,
                    login_drain: float, groups: int, group_size: int, rate: float,
                    duration: float, warmup: float, direct_share: float, rss_limit_mb: int,
                    seed: int = 7) -> dict[str, Any]:
    rng = random.Random(seed)
    loop = asyncio.get_running_loop()
    limits = Limits(sampler, rss_limit_mb << 20)
    out: dict[str, Any] = {"ok": True, "users": users}
    t = time.monotonic()
    clients = await open_clients(port, users)
    out["connect_s"] = round(time.monotonic() - t, 2)
    deliveries = Deliveries()
    sample = set(rng.sample(range(users), min(50, users)))
    answered = asyncio.Event()
    n_answered = 0

    def on_event(client: lg.Client, name: bytes, message: bytes) -> None:
        nonlocal n_answered
        c = client  # a ChatClient
        assert isinstance(c, ChatClient)
        if name == b"contact":
            c.contacts += 1
            c.contact_bytes += len(message)
            c.last_contact_at = _now()
            if c.keep_last_contact:
                c.last_contact = message
        elif name == b"message":
            deliveries.got(message)
        elif name == b"login-response":
            data = _unjson(SOCKETIO.event_data(message))
            c.login_answered = _now()
            if data.get("result") == "success":
                c.uid = str(data["userid"])
            n_answered += 1
            if n_answered == users:
                answered.set()

    for i, c in enumerate(clients):
        c.on_event = on_event
        c.name = f"user{i:05d}"
        c.keep_last_contact = i in sample

    # -- phase 1: logins spread over the window
    bytes0 = sum(c.bytes_in_total for c in clients)
    cpu = lg.CpuWindow(sampler)
    t0 = loop.time()
    for i, c in enumerate(clients):
        due = t0 + i * login_window / users
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        c.login_sent = _now()
        c.emit("login", _json({"username": c.name}))
        if i % 50 == 0 and limits.exceeded():
            break
    window_end = loop.time()
    window_end_ns = _now()
    sent = sum(1 for c in clients if c.login_sent)
    # Done when every login is answered and every sampled session's last contact lists
    # every user (the final state), within a limit.
    checked: dict[int, bool] = {}  # sampled client -> its last contact is final
    seen_body: dict[int, bytes] = {}

    def complete() -> int:
        for i in sample:
            body = clients[i].last_contact
            if body and seen_body.get(i) is not body:
                seen_body[i] = body
                checked[i] = len(_unjson(SOCKETIO.event_data(body))["person"]) == users
        return sum(checked.values())

    deadline = window_end + login_drain
    while loop.time() < deadline and not limits.exceeded():
        if answered.is_set() and complete() == len(sample):
            break
        await asyncio.sleep(0.2)
    phase = cpu.result()
    finals = complete()
    done = answered.is_set() and finals == len(sample) and not limits.reason
    last_contact = max(c.last_contact_at for c in clients)
    contacts = [c.contacts for c in clients]
    contact_bytes = sum(c.contact_bytes for c in clients)
    logins = sum(1 for c in clients if c.uid)
    latencies = [c.login_answered - c.login_sent for c in clients if c.login_answered]
    out["login"] = {
        "completed": done,
        "gave_up": "" if done else (limits.reason or "time limit"),
        "logins_ok": logins,
        "logins_sent": sent,
        "contact_frames_total": sum(contacts),
        # Per login sent (every login goes out within the window, answered or not): a
        # server that falls behind is not flattered by its few answered logins.
        "contact_frames_per_login": round(sum(contacts) / max(1, sent), 2),
        "contact_frames_max_per_session": max(contacts),
        "contact_bytes_per_login": round(contact_bytes / max(1, sent)),
        "bytes_in_per_login": round((sum(c.bytes_in_total for c in clients) - bytes0)
                                    / max(1, sent)),
        "last_contact_after_window_s": round((last_contact - window_end_ns) / 1e9, 2)
        if last_contact else None,
        "sampled_sessions_with_final_contact": f"{finals}/{len(sample)}",
        "login_response": lg.summarize(latencies),
        "peak_rss_mb": round(limits.peak_rss / 2**20),
        "sessions_closed_by_server": sum(1 for c in clients if not c.alive),
        "close_codes": sorted({c.close_code for c in clients
                               if not c.alive and c.close_code is not None}),
        **{k: phase[k] for k in ("seconds", "server_cpu_s", "server_cpu_pct",
                                 "generator_cpu_pct", "cpu0_other_pct", "cpu1_other_pct")},
    }
    if not done:
        out["ok"] = False
        out["error"] = f"login phase: {out['login']['gave_up']}"
        await lg.close_all(clients)  # type: ignore[arg-type]
        return out
    for c in clients:
        c.keep_last_contact = False
        c.last_contact = b""

    # -- phase 2: groups
    by_uid = {c.uid: c for c in clients}
    uids = list(by_uid)
    made: list[tuple[str, list[ChatClient]]] = []
    t = loop.time()
    for _ in range(groups):
        members = [by_uid[u] for u in rng.sample(uids, group_size)]
        creator = members[0]
        reply: asyncio.Future[bytes] = loop.create_future()
        creator.waiters.setdefault(b"update_group", deque()).append(reply)
        creator.emit("create_group", _json({"sender": creator.uid,
                                            "member": {m.uid: m.name for m in members}}))
        try:
            message = await asyncio.wait_for(reply, 60)
        except TimeoutError:
            out.update(ok=False, error="create_group: no update_group within 60 s")
            await lg.close_all(clients)  # type: ignore[arg-type]
            return out
        gid = str(_unjson(SOCKETIO.event_data(message))["groupid"])
        made.append((gid, members))
        if limits.exceeded():
            out.update(ok=False, error=f"groups: {limits.reason}")
            await lg.close_all(clients)  # type: ignore[arg-type]
            return out
    out["groups"] = {"created": len(made), "seconds": round(loop.time() - t, 2)}
    await asyncio.sleep(1.0)  # let the contacts of the group changes go out

    # -- phase 3: messages
    bytes0 = sum(c.bytes_in_total for c in clients)
    cpu = lg.CpuWindow(sampler)
    start = loop.time()
    interval = 1 / rate
    n = 0
    while True:
        due = start + n * interval
        now = loop.time()
        if due >= start + warmup + duration:
            break
        if due > now:
            await asyncio.sleep(due - now)
        measured = due >= start + warmup
        if rng.random() < direct_share or not made:
            sender, receiver = rng.sample(clients, 2)
            key = deliveries.new(1, measured)
            target = receiver.uid
        else:
            gid, members = made[rng.randrange(len(made))]
            sender = members[rng.randrange(len(members))]
            key = deliveries.new(len(members) - 1, measured)
            target = gid
        text = (lg.marker(key) + b" hello").decode()
        sender.emit("message", _json({"sender": sender.uid, "receiver": target,
                                      "message": text}))
        n += 1
        if n % 200 == 0 and limits.exceeded():
            break
    sending = loop.time() - start
    drain_until = loop.time() + 5
    while deliveries.pending and loop.time() < drain_until:
        await asyncio.sleep(0.05)
    phase = cpu.result()
    out["messages"] = {
        **deliveries.result(),
        "rate_sent": round(n / sending, 1),
        "bytes_in_per_delivery": round((sum(c.bytes_in_total for c in clients) - bytes0)
                                       / max(1, deliveries.received)),
        "peak_rss_mb": round(limits.peak_rss / 2**20),
        **{k: phase[k] for k in ("seconds", "server_cpu_s", "server_cpu_pct",
                                 "generator_cpu_pct", "cpu0_other_pct", "cpu1_other_pct")},
    }
    if limits.reason:
        out.update(ok=False, error=f"messages: {limits.reason}")
    out["closed_by_server"] = sum(1 for c in clients if not c.alive)
    await lg.close_all(clients)  # type: ignore[arg-type]
    return out


def generate(argv: list[str]) -> None:
    parser = argparse.ArgumentParser(prog="bench.chat generate")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--server-pid", type=int, default=0)
    parser.add_argument("--params", default="{}")
    args = parser.parse_args(argv)
    lg.raise_nofile()
    gc.disable()
    params = json.loads(args.params)
    sampler = lg.ProcSampler(args.server_pid)
    try:
        import uvloop
    except ImportError:
        result = asyncio.run(chat_load(args.port, sampler, **params))
    else:
        result = uvloop.run(chat_load(args.port, sampler, **params))
    sys.stdout.write(json.dumps(result) + "\n")


# --------------------------------------------------------------------------- runner
def measure(kind: bench_run.ServerKind, params: dict[str, Any], timeout: float
            ) -> dict[str, Any]:
    try:
        with bench_run.running(kind) as server:
            argv = [*bench_run.PRIORITY, "taskset", "-c", bench_run.GENERATOR_CPU,
                    bench_run.PY, "-m", "bench.chat", "generate", "--port", str(server.port),
                    "--server-pid", str(server.pid), "--params", json.dumps(params)]
            try:
                done = subprocess.run(argv, cwd=bench_run.ROOT, capture_output=True,
                                      timeout=timeout, text=True, check=False)
            except subprocess.TimeoutExpired:
                return {"ok": False, "error": f"generator timed out after {timeout:.0f} s",
                        "server": kind.name}
            lines = done.stdout.strip().splitlines()
            if done.returncode != 0 or not lines:
                return {"ok": False, "server": kind.name,
                        "error": f"generator failed ({done.returncode}): "
                                 f"{done.stderr.strip()[-800:]}"}
            result: dict[str, Any] = json.loads(lines[-1])
            if server.proc.poll() is not None:
                result.update(ok=False, error=f"server died: {server.stderr_tail()}")
    except RuntimeError as exc:
        result = {"ok": False, "error": str(exc)}
    result["server"] = kind.name
    result["server_source"] = bench_run.source_digest()
    return result


def fmt(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        return f"{value:,.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def table(results: dict[str, dict[str, Any]], params: dict[str, Any]) -> str:
    rows = [
        ("logins completed", lambda r: r.get("login", {}).get("completed")),
        ("  gave up because", lambda r: r.get("login", {}).get("gave_up") or "-"),
        ("logins answered ok", lambda r: r.get("login", {}).get("logins_ok")),
        ("contact frames / login sent",
         lambda r: r.get("login", {}).get("contact_frames_per_login")),
        ("contact frames, most to one session",
         lambda r: r.get("login", {}).get("contact_frames_max_per_session")),
        ("contact bytes / login sent",
         lambda r: r.get("login", {}).get("contact_bytes_per_login")),
        ("last contact seen after the window (s)",
         lambda r: r.get("login", {}).get("last_contact_after_window_s")),
        ("sampled sessions with the final contact",
         lambda r: r.get("login", {}).get("sampled_sessions_with_final_contact")),
        ("login-response p99 (ms)", lambda r: r.get("login", {}).get("login_response",
                                                                      {}).get("p99_ms")),
        ("server CPU, login phase (s)", lambda r: r.get("login", {}).get("server_cpu_s")),
        ("login phase length (s)", lambda r: r.get("login", {}).get("seconds")),
        ("sessions closed by the server, logins",
         lambda r: r.get("login", {}).get("sessions_closed_by_server")),
        ("server peak RSS, logins (MiB)", lambda r: r.get("login", {}).get("peak_rss_mb")),
        ("messages sent / s", lambda r: r.get("messages", {}).get("rate_sent")),
        ("deliveries", lambda r: r.get("messages", {}).get("deliveries")),
        ("deliveries lost", lambda r: r.get("messages", {}).get("lost")),
        ("message latency p50 (ms)", lambda r: r.get("messages", {}).get("p50_ms")),
        ("message latency p99 (ms)", lambda r: r.get("messages", {}).get("p99_ms")),
        ("message latency max (ms)", lambda r: r.get("messages", {}).get("max_ms")),
        ("server CPU, messages (% of a core)",
         lambda r: r.get("messages", {}).get("server_cpu_pct")),
        ("other load on the server's CPU (%)",
         lambda r: r.get("messages", {}).get("cpu0_other_pct")),
        ("bytes received / delivery",
         lambda r: r.get("messages", {}).get("bytes_in_per_delivery")),
        ("error", lambda r: r.get("error", "-")),
    ]
    names = list(results)
    width = max(len(r[0]) for r in rows) + 2
    head = (f"chat: {params['users']} users logging in over {params['login_window']} s, then "
            f"{params['rate']} messages/s for {params['duration']} s "
            f"({int(params['direct_share'] * 100)}% direct, the rest to {params['groups']} "
            f"groups of {params['group_size']})")
    lines = [head, "", "".ljust(width) + "".join(n.rjust(22) for n in names)]
    for label, get in rows:
        cells = []
        for n in names:
            try:
                cells.append(fmt(get(results[n]))[:21].rjust(22))
            except Exception:
                cells.append("-".rjust(22))
        lines.append(label.ljust(width) + "".join(cells))
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["reference"]:
        parser = argparse.ArgumentParser(prog="bench.chat reference")
        parser.add_argument("--port", type=int, required=True)
        serve_reference(parser.parse_args(argv[1:]).port)
        return
    if argv[:1] == ["generate"]:
        generate(argv[1:])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--quick", action="store_true",
                        help="300 users over 3 s, 5 s of messages")
    parser.add_argument("--users", type=int)
    parser.add_argument("--login-window", type=float)
    parser.add_argument("--login-drain", type=float, default=60.0,
                        help="seconds after the window to wait for answers and contacts")
    parser.add_argument("--groups", type=int, default=20)
    parser.add_argument("--group-size", type=int, default=5)
    parser.add_argument("--rate", type=float, default=200.0)
    parser.add_argument("--duration", type=float)
    parser.add_argument("--warmup", type=float, default=2.0)
    parser.add_argument("--direct-share", type=float, default=0.7)
    parser.add_argument("--rss-limit-mb", type=int, default=4096)
    parser.add_argument("--servers", default="ours,reference")
    parser.add_argument("--rounds", type=int, default=1,
                        help="measure each server this many times, alternating the order")
    parser.add_argument("--out", default=str(bench_run.RESULTS))
    args = parser.parse_args(argv)
    params = {
        "users": args.users or (300 if args.quick else 2000),
        "login_window": args.login_window or (3.0 if args.quick else 10.0),
        "login_drain": args.login_drain,
        "groups": args.groups, "group_size": args.group_size, "rate": args.rate,
        "duration": args.duration or (5.0 if args.quick else 20.0), "warmup": args.warmup,
        "direct_share": args.direct_share, "rss_limit_mb": args.rss_limit_mb,
    }
    timeout = (120 + params["login_window"] + params["login_drain"] + params["duration"]
               + params["warmup"] + params["groups"] * 60 / 10)
    results: dict[str, dict[str, Any]] = {}
    names = [name.strip() for name in args.servers.split(",")]
    for r in range(args.rounds):
        for name in names if r % 2 == 0 else names[::-1]:  # alternate the order
            kind = SERVERS[name]
            column = kind.name if args.rounds == 1 else f"{kind.name} #{r + 1}"
            bench_run.log(f"chat: {kind.label} ({column}) ...")
            results[column] = measure(kind, params, timeout)
            login = results[column].get("login", {})
            bench_run.log(f"  {column}: logins ok={login.get('logins_ok')} contact frames/"
                          f"login={login.get('contact_frames_per_login')} "
                          f"{results[column].get('error', '')}")
    print(table(results, params))
    out_dir = Path(args.out)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / time.strftime("chat-%Y%m%d-%H%M%S.json")
    path.write_text(json.dumps({"params": params, "results": results,
                                "machine": bench_run.machine(),
                                "versions": bench_run.versions()}, indent=2))
    bench_run.log(f"wrote {path}")


if __name__ == "__main__":
    main()
