"""Soak: lesson churn with hostile clients for N minutes, on one node and on two nodes + Redis.

    python -m bench.soak [--minutes 30] [--setups single,cluster] [--rooms 20] [--students 10]
                         [--hostile 4] [--handoff 1|0] [--seed 1]

A benchmark, not a test: it measures and reports, it does not pass or fail. For each setup —
``single`` (one node, ``memory://``) and ``cluster`` (two nodes sharing a private
``redis-server`` on a free port, clients spread over both like a plain load balancer) —
it runs for ``--minutes``:

- **lesson churn**: ``--rooms`` classrooms at once, each a host and ``--students``
  students living 1–2 minutes (shorter in short runs), then closed and replaced: chat both
  ways, code sharing (start, full sends, updates), step statuses, signals, and students
  dropping their connection (close or reset) and resuming with ``last_seq``;
- **hostile clients**, a few at a time: TCP resets at random moments (``SO_LINGER`` 0, mid
  frame too), ping floods, frames nested 10,000 deep, huge integers, readers that never read;
- **a canary room** (host on the first node, student on the last) exchanging numbered
  messages both ways: every one must arrive, once, in order (it resumes if it is closed).

Every 10 s it samples each node's RSS (``/proc/<pid>/status`` VmRSS) and open descriptors
(``/proc/<pid>/fd``); at the end it fits least-squares slopes over the second half (KiB/min,
fds/min), counts ``Traceback``/``ERROR`` lines in each node's standard error (nodes log at
WARNING), and prints a summary and writes ``bench/results/soak-<timestamp>.json``.
Everything runs on 127.0.0.1 and every process started here is stopped here.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import signal
import socket
import struct
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import msgspec

from bench import loadgen, wire
from bench.loadgen import PLAIN, STEPS, Client, percentile
from bench.run import OURS, RESULTS, Server, ServerKind, log, machine, source_digest
from bench.scaleout import node_kind, redis_server

HOST = "127.0.0.1"
SAMPLE_EVERY = 10.0
SETUPS = ("single", "cluster")
#: Default limits except the per-IP ones: every client here comes from 127.0.0.1, so the
#: hostile clients' failed joins must not lock the lessons out (and 20+ rooms are open).
NODE_ENV = {
    "OBSERVER_LOG_LEVEL": "WARNING",
    "OBSERVER_RATE_LIMIT_RATE": "50",  # the defaults (bench.run's OURS_ENV lifts them)
    "OBSERVER_RATE_LIMIT_BURST": "200",
    "OBSERVER_RATE_LIMIT_CLOSE_AFTER": "10",
    "OBSERVER_JOIN_FAILURE_LIMIT": "1000000",
    "OBSERVER_MAX_ROOMS_PER_IP": "0",
    "OBSERVER_MAX_CONNECTIONS_PER_IP": "0",
}
SINGLE = ServerKind("single", "Observer Relay (memory)", OURS.argv, NODE_ENV)
CALL_TIMEOUT = 15.0

_json = msgspec.json.encode
_unjson = msgspec.json.decode


# --------------------------------------------------------------------------- bookkeeping
@dataclass
class Tally:
    """What the generator saw; one per setup."""

    connections: Counter[str] = field(default_factory=Counter)  # made, by kind
    connect_failures: Counter[str] = field(default_factory=Counter)
    closes: Counter[str] = field(default_factory=Counter)  # "kind code" of server closes
    errors: Counter[str] = field(default_factory=Counter)  # error events by code
    failed_calls: Counter[str] = field(default_factory=Counter)  # "event: reason"
    lessons: Counter[str] = field(default_factory=Counter)
    hostile: Counter[str] = field(default_factory=Counter)  # "action outcome"
    seq_gaps: int = 0
    resyncs: int = 0


class Member:
    """A lesson participant that can drop its connection and resume with ``last_seq``."""

    def __init__(self, tally: Tally, kind: str, ports: list[int]) -> None:
        self.tally, self.kind, self.ports = tally, kind, ports
        self.client: Client | None = None
        self.room_id = 0
        self.user_id = 0
        self.token = ""
        self.last_seq = 0
        self.sharing = False  # the host made this student the room's sharer
        self.on_message: Any = None  # (member, event name, frame) for chat frames

    def _on_event(self, client: Client, name: bytes, message: bytes) -> None:
        frame = _unjson(message)
        seq = frame.get("seq")
        if seq is not None:
            if seq != self.last_seq + 1 and self.last_seq:
                self.tally.seq_gaps += 1
            self.last_seq = seq
        if name == b"error":
            self.tally.errors[str(frame["data"].get("code"))] += 1
        elif name == b"room/resync":
            self.tally.resyncs += 1
        elif self.on_message is not None:
            self.on_message(self, name, frame)

    async def connect(self, port: int | None = None) -> Client:
        try:
            client = await loadgen.connect(PLAIN, HOST, port or random.choice(self.ports),
                                           timeout=CALL_TIMEOUT)
        except Exception:
            self.tally.connect_failures[self.kind] += 1
            raise
        self.tally.connections[self.kind] += 1
        client.on_event = self._on_event
        self.client = client
        return client

    async def call(self, event: str, data: Any, reply: bytes | None = None) -> Any:
        """An acknowledged event; None (counted) when it failed or got no answer."""
        client = self.client
        if client is None or not client.alive:
            return None
        try:
            message, _ = await client.call(event, _json(data), reply, timeout=CALL_TIMEOUT)
        except Exception as exc:
            reason = str(exc).split('"code":"')[-1].split('"')[0] if "code" in str(exc) \
                else type(exc).__name__
            self.tally.failed_calls[f"{event}: {reason}"] += 1
            return None
        return client.data_of(message) if message is not None else True

    def emit(self, event: str, data: Any) -> None:
        if self.client is not None:
            self.client.emit(event, _json(data))

    async def resume(self, port: int | None = None) -> bool:
        try:
            await self.connect(port)
        except Exception:
            self.tally.lessons["resume failures"] += 1
            return False
        event = "room/rehost" if self.user_id == 1 else "room/rejoin"
        data = {"room_id": self.room_id, "user_id": self.user_id, "token": self.token,
                "last_seq": self.last_seq}
        ok = await self.call(event, data, None if self.user_id == 1 else b"room/join")
        self.tally.lessons["resumes" if ok else "resume failures"] += 1
        return ok is not None

    def drop(self, reset: bool) -> None:
        if self.client is not None:
            if reset:
                rst(self.client.transport)
            else:
                self.client.close()
            self.client = None

    def closed_code(self) -> int | None:
        """The close code if the server closed our connection (None while open)."""
        c = self.client
        if c is None or c.alive:
            return None
        return c.close_code if c.close_code is not None else 1006


def rst(transport: asyncio.BaseTransport | None) -> None:
    """Close with a TCP reset (SO_LINGER 0) instead of a FIN."""
    if transport is None:
        return
    sock = transport.get_extra_info("socket")
    with contextlib.suppress(OSError, AttributeError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()  # type: ignore[attr-defined]


# --------------------------------------------------------------------------- lessons
class Lessons:
    """Open classrooms (so hostile clients can join them) and the lesson loop."""

    def __init__(self, tally: Tally, ports: list[int], students: int, span: tuple[float, float],
                 rng: random.Random) -> None:
        self.tally, self.ports, self.students, self.span, self.rng = \
            tally, ports, students, span, rng
        self.open: set[int] = set()
        self._names = 0

    async def slot(self, until: float) -> None:
        """Run lessons back to back until ``until`` (loop time)."""
        loop = asyncio.get_running_loop()
        await asyncio.sleep(self.rng.uniform(0, self.span[0] / 2))  # stagger the slots
        while until - loop.time() > 5:  # the churn stays steady up to the end
            duration = min(self.rng.uniform(*self.span), until - loop.time())
            try:
                await self.lesson(duration)
            except Exception as exc:
                self.tally.lessons[f"aborted: {type(exc).__name__}"] += 1
                await asyncio.sleep(1)

    async def lesson(self, duration: float) -> None:
        t = self.tally
        host = Member(t, "lesson", self.ports)
        await host.connect()
        created = await host.call("room/create", {"name": "Teacher"}, b"room/created")
        if created is None:
            host.drop(False)
            return
        host.room_id, host.user_id, host.token = created["room_id"], 1, created["token"]
        await host.call("steps/all", _unjson(STEPS))
        members = await asyncio.gather(*(self._join(host.room_id) for _ in range(self.students)))
        students = [m for m in members if m is not None]
        t.lessons["opened"] += 1
        self.open.add(host.room_id)
        end = asyncio.Event()
        try:
            tasks = [asyncio.create_task(self._student(m, i, end))
                     for i, m in enumerate(students)]
            tasks.append(asyncio.create_task(self._host(host, students, end)))
            await asyncio.sleep(duration)
            end.set()
            await asyncio.gather(*tasks, return_exceptions=True)
        finally:
            self.open.discard(host.room_id)
        if host.closed_code() is not None and not await host.resume():
            t.lessons["host lost"] += 1
        closed = await host.call("room/close", {})
        t.lessons["closed" if closed else "close failed"] += 1
        await asyncio.sleep(3)  # students' connections close with 4000 within 2 s
        for m in students:
            code = m.closed_code()
            t.closes[f"lesson end {code}"] += 1
            m.drop(False)
        host.drop(False)

    async def _join(self, room_id: int) -> Member | None:
        m = Member(self.tally, "lesson", self.ports)
        self._names += 1
        name = f"s{self._names}"
        try:
            await m.connect()
        except Exception:
            return None
        joined = await m.call("room/join", {"room_id": room_id, "name": name,
                                            "version": "1.2.15"}, b"room/join")
        if joined is None:
            m.drop(False)
            return None
        m.room_id, m.user_id, m.token = room_id, joined["user_id"], joined["token"]
        return m

    async def _host(self, host: Member, students: list[Member], end: asyncio.Event) -> None:
        rng = self.rng
        sharer: Member | None = None
        n = 0
        while not end.is_set():
            await _pause(end, rng.uniform(2, 6))
            if end.is_set():
                break
            if (code := host.closed_code()) is not None:
                self.tally.closes[f"lesson {code}"] += 1
                if not await host.resume():
                    return
            n += 1
            target = rng.choice(students) if students else None
            action = rng.random()
            if action < 0.3 or target is None:
                host.emit("message/to_all", {"content": f"all {n} " + loadgen.filler(80)})
            elif action < 0.55:
                host.emit("message/to_client", {"user_id": target.user_id,
                                                "content": f"to you {n}"})
            elif action < 0.7:
                await host.call("sharing/start", {"user_id": target.user_id})
                for other in students:
                    other.sharing = other is target
                sharer = target
            elif action < 0.85:
                step = str(rng.randint(1, 4))
                host.emit("steps/status/to_client", {"user_id": target.user_id, "steps": {
                    step: rng.choice(["ACCEPTED", "NONE", "IN_PROGRESS"])}})
            elif sharer is not None:
                await host.call("sharing/snapshot", {"user_id": sharer.user_id})
            else:
                await host.call("steps/table", {})

    async def _student(self, m: Member, index: int, end: asyncio.Event) -> None:
        rng = self.rng
        n = 0
        while not end.is_set():
            await _pause(end, rng.uniform(2, 8))
            if end.is_set():
                break
            if (code := m.closed_code()) is not None:  # closed by the server: resume
                self.tally.closes[f"lesson {code}"] += 1
                if code in (4000, 4001, 4003) or not await m.resume():
                    return
            n += 1
            action = rng.random()
            if action < 0.05:  # the student's connection drops; it comes back and resumes
                m.drop(reset=rng.random() < 0.5)
                await asyncio.sleep(rng.uniform(0.5, 3))
                if not await m.resume():
                    return
            elif action < 0.45:
                m.emit("message/to_mentor", {"content": f"question {n} from {index}"})
            elif action < 0.6:
                step = str(rng.randint(1, 4))
                m.emit("steps/status/to_mentor", {step: rng.choice(
                    ["IN_PROGRESS", "HELP", "DONE"])})
            elif action < 0.7:
                m.emit("signal", {"value": rng.choice(["NONE", "IN_PROGRESS", "HELP", "DONE"])})
            elif m.sharing:
                files = [{"filename": f"src/f{k}.py", "status": "CHANGED",
                          "content": loadgen.filler(rng.randint(200, 4000), f"v{n}")}
                         for k in range(rng.randint(1, 3))]
                event = "sharing/code_send" if action < 0.75 else "sharing/code_update"
                m.emit(event, {"files": files})
            else:
                await m.call("message/to_mentor", {"content": f"acked {n}"})


async def _pause(end: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(end.wait(), seconds)


# --------------------------------------------------------------------------- canary
class Canary:
    """Numbered messages both ways in one room; each must arrive once, in order."""

    PERIOD = 0.25

    def __init__(self, tally: Tally, ports: list[int]) -> None:
        self.tally = tally
        self.host = Member(tally, "canary", ports)
        self.student = Member(tally, "canary", ports)
        self.ports = ports
        self.sent = {"to_client": 0, "to_mentor": 0}
        self.failed = Counter[str]()
        self.got = {"to_client": 0, "to_mentor": 0}
        self.out_of_order = Counter[str]()
        self.latency_ms: list[float] = []
        self.resumes = 0

    def _on_message(self, _m: Member, name: bytes, frame: dict[str, Any]) -> None:
        direction = {b"message/to_client": "to_client", b"message/to_mentor": "to_mentor"}.get(
            name)
        if direction is None:
            return
        content = frame["data"]["content"]
        if not content.startswith("canary:"):
            return
        _, number, sent_ns = content.split(":")
        if int(number) != self.got[direction] + 1:
            self.out_of_order[direction] += 1
        self.got[direction] = max(self.got[direction], int(number))
        self.latency_ms.append((time.monotonic_ns() - int(sent_ns)) / 1e6)

    async def open(self) -> None:
        h, s = self.host, self.student
        h.on_message = s.on_message = self._on_message
        await h.connect(self.ports[0])
        created = await h.call("room/create", {"name": "Canary"}, b"room/created")
        h.room_id, h.user_id, h.token = created["room_id"], 1, created["token"]
        await s.connect(self.ports[-1])
        joined = await s.call("room/join", {"room_id": h.room_id, "name": "Bird"},
                              b"room/join")
        s.room_id, s.user_id, s.token = h.room_id, joined["user_id"], joined["token"]

    async def run(self, stop: asyncio.Event) -> None:
        n = 0
        while not stop.is_set():
            n += 1
            for m, event, data in (
                    (self.host, "message/to_client", {"user_id": self.student.user_id}),
                    (self.student, "message/to_mentor", {})):
                if m.closed_code() is not None:
                    self.tally.closes[f"canary {m.closed_code()}"] += 1
                    if await m.resume():
                        self.resumes += 1
                direction = event.split("/")[1]
                self.sent[direction] += 1
                content = f"canary:{n}:{time.monotonic_ns()}"
                if await m.call(event, {**data, "content": content}) is None:
                    self.failed[direction] += 1
            await asyncio.sleep(self.PERIOD)

    def result(self) -> dict[str, Any]:
        lat = sorted(self.latency_ms)
        return {
            "expected": sum(self.sent.values()), "delivered": sum(self.got.values()),
            "by_direction": {d: {"sent": self.sent[d], "delivered": self.got[d],
                                 "out_of_order": self.out_of_order[d],
                                 "failed_acks": self.failed[d]} for d in self.sent},
            "resumes": self.resumes,
            "latency_ms": {"p50": _r(percentile(lat, 50)), "p99": _r(percentile(lat, 99)),
                           "max": _r(lat[-1] if lat else None)},
        }


# --------------------------------------------------------------------------- hostile
class Hostile:
    """One hostile action at a time per worker, on a random node."""

    def __init__(self, tally: Tally, ports: list[int], lessons: Lessons,
                 rng: random.Random, stop: asyncio.Event) -> None:
        self.tally, self.ports, self.lessons, self.rng = tally, ports, lessons, rng
        self.stop = stop

    async def worker(self) -> None:
        stop = self.stop
        actions = [self.reset_mid_frame, self.reset_in_room, self.ping_flood, self.deep_json,
                   self.huge_integers, self.never_reader]
        while not stop.is_set():
            action = self.rng.choice(actions)
            name = action.__name__
            try:
                outcome = await asyncio.wait_for(action(), 90)
            except Exception as exc:
                outcome = f"generator error {type(exc).__name__}"
            self.tally.hostile[f"{name}: {outcome}"] += 1
            await _pause(stop, self.rng.uniform(0.5, 2))

    async def _raw(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
        port = self.rng.choice(self.ports)
        reader, writer = await asyncio.open_connection(HOST, port)
        writer.write(wire.upgrade_request(HOST, port, PLAIN.path))
        head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 10)
        if b" 101 " not in head.split(b"\r\n", 1)[0] + b" ":
            raise ConnectionError(head.split(b"\r\n", 1)[0].decode(errors="replace"))
        self.tally.connections["hostile"] += 1
        return reader, writer

    async def _replies(self, reader: asyncio.StreamReader, want: int, timeout: float
                       ) -> tuple[list[bytes], int | None]:
        """Read up to ``want`` server messages; (messages, close code or None)."""
        messages: list[bytes] = []
        closed: list[int] = []

        def control(opcode: int, payload: bytes) -> None:
            if opcode == wire.OP_CLOSE:
                closed.append(int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005)

        parser = wire.FrameParser(messages.append, control)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                while len(messages) < want and not closed:
                    data = await reader.read(65536)
                    if not data:
                        closed.append(1006)
                        break
                    parser.feed(data)
        return messages, closed[0] if closed else None

    async def reset_mid_frame(self) -> str:
        _, writer = await self._raw()
        frame = PLAIN.event("message/to_mentor", _json({"content": "x" * 5000}), 1)
        writer.write(frame[: self.rng.randint(1, len(frame) - 1)])
        await writer.drain()
        await asyncio.sleep(self.rng.uniform(0, 0.5))
        rst(writer.transport)
        return "reset"

    async def reset_in_room(self) -> str:
        if not self.lessons.open:
            return "no room"
        m = Member(self.tally, "hostile", self.ports)
        await m.connect()
        room = self.rng.choice(sorted(self.lessons.open))
        joined = await m.call("room/join", {"room_id": room,
                                            "name": f"h{self.rng.randrange(10**9)}"},
                              b"room/join")
        for i in range(self.rng.randint(0, 20)):
            m.emit("message/to_mentor", {"content": f"about to vanish {i}"})
        await asyncio.sleep(self.rng.uniform(0, 2))
        m.drop(reset=True)
        return "reset after join" if joined else "reset (join failed)"

    async def ping_flood(self) -> str:
        reader, writer = await self._raw()
        ping = wire.client_frame(b"p" * 125, wire.OP_PING)
        for _ in range(200):  # 20,000 pings of 125 bytes, reading nothing meanwhile
            writer.write(ping * 100)
            await writer.drain()
        writer.write(PLAIN.event("room/leave", b"{}", 7))  # still answered?
        messages, code = await self._replies(reader, 1, 10)
        rst(writer.transport)
        if code is not None:
            return f"closed {code}"
        return "answered after" if messages else "no answer after"

    async def deep_json(self) -> str:
        reader, writer = await self._raw()
        depth = 10_000
        bodies = [
            b'{"event":"message/to_mentor","data":' + b"[" * depth + b"]" * depth
            + b',"ref":1}',
            b'{"event":"room/join","data":' + b'{"a":' * depth + b"1" + b"}" * depth
            + b',"ref":2}',
            b"[" * depth + b"]" * depth,
        ]
        for body in bodies:
            writer.write(wire.client_frame(body))
        writer.write(PLAIN.event("room/leave", b"{}", 3))
        messages, code = await self._replies(reader, 6, 10)
        rst(writer.transport)
        if code is not None:
            return f"closed {code}"
        return _answers(messages)

    async def huge_integers(self) -> str:
        reader, writer = await self._raw()
        big = str(10 ** 4000).encode()
        bodies = [
            b'{"event":"room/join","data":{"room_id":' + big + b',"name":"x"},"ref":1}',
            b'{"event":"room/rejoin","data":{"room_id":1,"user_id":' + big
            + b',"token":"x","last_seq":-' + big + b'},"ref":2}',
            b'{"event":"message/to_mentor","data":{"content":"x"},"ref":' + big + b"}",
            b'{"event":"room/join","data":{"room_id":1e999999,"name":"x"},"ref":4}',
        ]
        for body in bodies:
            writer.write(wire.client_frame(body))
        writer.write(PLAIN.event("room/leave", b"{}", 5))
        messages, code = await self._replies(reader, 9, 10)
        rst(writer.transport)
        if code is not None:
            return f"closed {code}"
        return _answers(messages)

    async def never_reader(self) -> str:
        """Joins a lesson, then reads nothing (not even pings) for up to 60 s."""
        if not self.lessons.open:
            return "no room"
        m = Member(self.tally, "hostile", self.ports)
        client = await m.connect()
        room = self.rng.choice(sorted(self.lessons.open))
        await m.call("room/join", {"room_id": room, "name": f"n{self.rng.randrange(10**9)}"},
                     b"room/join")
        assert client.transport is not None
        client.transport.pause_reading()  # from now on nothing is read, pings included
        await _pause(self.stop, 60)
        client.transport.resume_reading()
        await asyncio.sleep(2)
        code = m.closed_code()
        m.drop(reset=True)
        return "still open after 60 s" if code is None else f"closed {code}"


def _answers(messages: list[bytes]) -> str:
    """How the connection answered malformed frames: error codes, then acks."""
    codes = [_unjson(m)["data"]["code"] for m in messages if m.startswith(b'{"event":"error"')]
    acks = sum(1 for m in messages if m.startswith(b'{"event":"ack"'))
    return f"errors {'+'.join(codes)}, {acks} acks, open"


# --------------------------------------------------------------------------- sampling
def proc_sample(pid: int) -> dict[str, int] | None:
    try:
        with open(f"/proc/{pid}/status") as f:
            rss = next(int(line.split()[1]) for line in f if line.startswith("VmRSS:"))
        fds = len(os.listdir(f"/proc/{pid}/fd"))
    except (OSError, StopIteration):
        return None
    return {"rss_kib": rss, "fds": fds}


def slope_per_min(ts: list[float], ys: list[float]) -> float | None:
    """Least-squares slope of ``ys`` against ``ts`` (seconds), per minute."""
    n = len(ts)
    if n < 2:
        return None
    mt, my = sum(ts) / n, sum(ys) / n
    var = sum((t - mt) ** 2 for t in ts)
    if var == 0:
        return None
    return 60 * sum((t - mt) * (y - my) for t, y in zip(ts, ys, strict=True)) / var


def _r(value: float | None, digits: int = 1) -> float | None:
    return None if value is None else round(value, digits)


async def sampler(pids: dict[str, int], series: dict[str, dict[str, list[float]]],
                  t0: float, until: float) -> None:
    """Sample every ``SAMPLE_EVERY`` s from ``t0`` to ``until`` (the end of the churn)."""
    loop = asyncio.get_running_loop()
    while True:
        now = loop.time() - t0
        for name, pid in pids.items():
            sample = proc_sample(pid)
            if sample is not None:
                s = series.setdefault(name, {"t_s": [], "rss_kib": [], "fds": []})
                s["t_s"].append(round(now, 1))
                s["rss_kib"].append(sample["rss_kib"])
                s["fds"].append(sample["fds"])
        if loop.time() >= until:
            return
        await asyncio.sleep(min(SAMPLE_EVERY, until - loop.time()))


# --------------------------------------------------------------------------- one setup
async def soak(ports: list[int], pids: dict[str, int], minutes: float, rooms: int,
               students: int, hostile: int, seed: int) -> dict[str, Any]:
    loop = asyncio.get_running_loop()
    rng = random.Random(seed)
    tally = Tally()
    total = minutes * 60
    span = (min(60.0, total / 4), min(120.0, total / 2))
    lessons = Lessons(tally, ports, students, span, rng)
    series: dict[str, dict[str, list[float]]] = {}
    stop_churn = asyncio.Event()
    t0 = loop.time()
    sampling = asyncio.create_task(sampler(pids, series, t0, t0 + total))
    canary = Canary(tally, ports)
    await canary.open()
    canary_task = asyncio.create_task(canary.run(stop_churn))
    hostiles = [asyncio.create_task(Hostile(tally, ports, lessons, rng, stop_churn).worker())
                for _ in range(hostile)]
    slots = [asyncio.create_task(lessons.slot(t0 + total)) for _ in range(rooms)]
    await asyncio.gather(*slots)
    stop_churn.set()
    await asyncio.gather(canary_task, *hostiles, sampling)
    await asyncio.sleep(3)  # the canary's last messages
    ran = loop.time() - t0
    for m in (canary.host, canary.student):
        m.drop(False)
    await asyncio.sleep(5)  # idle: what is left after every client went away
    idle = {name: proc_sample(pid) for name, pid in pids.items()}
    return {"ran_s": round(ran, 1), "series": series, "idle_after": idle,
            "canary": canary.result(), "tally": tally}


@contextlib.contextmanager
def servers(setup: str, handoff: str = "1") -> Iterator[tuple[list[Server], dict[str, int]]]:
    """The setup's nodes (and Redis); on exit every node is stopped (its log kept)."""
    with contextlib.ExitStack() as stack:
        pids: dict[str, int] = {}
        if setup == "single":
            kinds = [SINGLE]
        else:
            url, redis_pid = stack.enter_context(redis_server(None))
            pids["redis"] = redis_pid
            kinds = [node_kind(url, {**NODE_ENV, "OBSERVER_CLUSTER_HANDOFF": handoff})] * 2
        nodes: list[Server] = []
        try:
            for i, kind in enumerate(kinds):
                node = Server(kind, cpus=None)
                nodes.append(node)
                node.wait_ready()
                pids[f"node{i}"] = node.pid
            time.sleep(0.5)
            yield nodes, pids
        finally:
            for node in nodes:
                node.stop()


def stop_and_read(node: Server) -> tuple[int | None, str]:
    """SIGTERM (a graceful stop is part of the soak), then the node's whole stderr."""
    if node.proc.poll() is None:
        node.proc.send_signal(signal.SIGTERM)
        with contextlib.suppress(Exception):
            node.proc.wait(10)
    node.errlog.seek(0)
    return node.proc.poll(), node.errlog.read().decode(errors="replace")


def run_setup(setup: str, args: argparse.Namespace) -> dict[str, Any]:
    log(f"soak: {setup}, {args.minutes} min, {args.rooms} rooms of {args.students}")
    with servers(setup, args.handoff) as (nodes, pids):
        ports = [n.port for n in nodes]
        runner = _loop_runner()
        out = runner(soak(ports, pids, args.minutes, args.rooms, args.students, args.hostile,
                          args.seed))
        logs = [stop_and_read(n) for n in nodes]
    tally: Tally = out.pop("tally")
    series = out.pop("series")
    result: dict[str, Any] = {"setup": setup, **out, "nodes": {}}
    for i, (code, text) in enumerate(logs):
        name = f"node{i}"
        lines = text.splitlines()
        errors = [line for line in lines if " ERROR " in line or "Traceback" in line]
        result["nodes"][name] = {
            "exit_code": code,
            "error_lines": sum(1 for line in lines if " ERROR " in line),
            "traceback_lines": sum(1 for line in lines if "Traceback" in line),
            "warning_lines": sum(1 for line in lines if " WARNING " in line),
            "first_errors": errors[:10],
        }
    for name, s in series.items():
        half = len(s["t_s"]) // 2
        entry = result["nodes"].setdefault(name, {})
        entry["series"] = s
        entry["rss_slope_kib_per_min"] = _r(slope_per_min(s["t_s"][half:], s["rss_kib"][half:]))
        entry["fd_slope_per_min"] = _r(slope_per_min(s["t_s"][half:], s["fds"][half:]), 2)
        entry["rss_kib_first_last"] = [s["rss_kib"][0], s["rss_kib"][-1]]
        entry["fds_first_last"] = [s["fds"][0], s["fds"][-1]]
    result["connections"] = dict(tally.connections)
    result["connect_failures"] = dict(tally.connect_failures)
    result["closes"] = dict(tally.closes.most_common())
    result["error_events"] = dict(tally.errors.most_common())
    result["failed_calls"] = dict(tally.failed_calls.most_common())
    result["lessons"] = dict(tally.lessons)
    result["hostile"] = dict(sorted(tally.hostile.items()))
    result["seq_gaps"] = tally.seq_gaps
    result["resyncs"] = tally.resyncs
    return result


def _loop_runner() -> Any:
    try:
        import uvloop
    except ImportError:
        return asyncio.run
    return uvloop.run


# --------------------------------------------------------------------------- report
def summary(report: dict[str, Any]) -> str:
    lines = [f"soak: {report['minutes']} min per setup, source {report['source']}"]
    for setup, r in report["setups"].items():
        c = r["canary"]
        lines.append(f"\n[{setup}] ran {r['ran_s']} s; connections made "
                     f"{sum(r['connections'].values())} {r['connections']}; "
                     f"lessons {r['lessons']}")
        for name, n in r["nodes"].items():
            lines.append(
                f"  {name}: RSS {n.get('rss_kib_first_last')} KiB, slope "
                f"{n.get('rss_slope_kib_per_min')} KiB/min; fds {n.get('fds_first_last')}, "
                f"slope {n.get('fd_slope_per_min')} /min; idle after "
                f"{r['idle_after'].get(name)}"
                + (f"; ERROR lines {n['error_lines']}, Traceback lines "
                   f"{n['traceback_lines']}, exit {n['exit_code']}" if "exit_code" in n else ""))
        lines.append(f"  canary: delivered {c['delivered']}/{c['expected']} "
                     f"{c['by_direction']}, resumes {c['resumes']}, latency {c['latency_ms']}")
        lines.append(f"  seq gaps {r['seq_gaps']}, resyncs {r['resyncs']}, closes {r['closes']}")
        lines.append(f"  failed calls {r['failed_calls']}; errors {r['error_events']}")
        lines.append(f"  hostile {r['hostile']}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--minutes", type=float, default=30.0, help="per setup")
    parser.add_argument("--setups", default=",".join(SETUPS))
    parser.add_argument("--rooms", type=int, default=20, help="concurrent classrooms")
    parser.add_argument("--students", type=int, default=10, help="students per classroom")
    parser.add_argument("--hostile", type=int, default=4, help="concurrent hostile clients")
    parser.add_argument("--handoff", choices=["0", "1"], default="1",
                        help="cluster: same-host socket handoff (1, the default) or "
                             "forwarding only (0, as nodes on different hosts)")
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args(argv)
    setups = [s.strip() for s in args.setups.split(",") if s.strip()]
    unknown = set(setups) - set(SETUPS)
    if unknown:
        parser.error(f"unknown setups {sorted(unknown)} (choose from {', '.join(SETUPS)})")
    loadgen.raise_nofile()
    stamp = time.strftime("%Y%m%d-%H%M%S")
    report: dict[str, Any] = {
        "started": stamp, "minutes": args.minutes, "args": vars(args),
        "source": source_digest(), "machine": machine(), "setups": {},
    }
    for setup in setups:
        report["setups"][setup] = run_setup(setup, args)
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / f"soak-{stamp}.json"
    path.write_text(json.dumps(report, indent=1))
    print(summary(report))
    print(f"\nwritten to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
