"""Load generator: raw asyncio WebSocket clients driving the observer workloads W1-W5.

Every client is an ``asyncio.Protocol`` that frames its packets by hand (``bench.wire``) and
parses server frames with one small loop, or only counts them (W2). Timed messages carry
``~@<send time ns>:<key>@~`` in their content; the receiving client (same process) finds it
with ``bytes.find`` and records the latency, and the key proves each message arrived exactly
once. The generator runs as its own process (``python -m bench.loadgen W --params JSON``,
started by ``bench.run`` on CPU 1) and prints one JSON object; it reads the server's CPU time
and RSS from ``/proc/<server pid>`` over the same window.

Students may also be Engine.IO long-polling clients (``bench.polling_client``, the same
``Client`` interface): W1P (``polling_every``) and W2P (``polling``) of issue 16.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import itertools
import json
import os
import random
import resource
import sys
import time
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, cast

import msgspec

from . import wire
from .wire import PLAIN, SOCKETIO, Framing

_json = msgspec.json.encode
_unjson = msgspec.json.decode
_now = time.monotonic_ns

MARK_OPEN = b"~@"
MARK_CLOSE = b"@~"

CONNECT_TIMEOUT = 30.0
CALL_TIMEOUT = 30.0


# --------------------------------------------------------------------------- measurements
def percentile(sorted_values: list[float], q: float) -> float | None:
    """Nearest-rank percentile of an already sorted list (``None`` when empty)."""
    if not sorted_values:
        return None
    k = max(0, min(len(sorted_values) - 1, round(q / 100 * len(sorted_values) + 0.5) - 1))
    return sorted_values[k]


def summarize(samples_ns: Iterable[int]) -> dict[str, Any]:
    """Count, p50, p99 and max of latency samples, in milliseconds."""
    values = sorted(s / 1e6 for s in samples_ns)
    return {
        "n": len(values),
        "p50_ms": _round(percentile(values, 50)),
        "p99_ms": _round(percentile(values, 99)),
        "max_ms": _round(values[-1] if values else None),
    }


def timeline(trackers: Iterable[Tracker], start_ns: int) -> list[float | None]:
    """Worst latency (ms) per second of the measured window: where a spike happened."""
    worst: dict[int, int] = {}
    for t in trackers:
        for at, lat in zip(t.arrivals, t.samples, strict=True):
            second = (at - start_ns) // 1_000_000_000
            worst[second] = max(worst.get(second, 0), lat)
    if not worst:
        return []
    return [_round(worst[i] / 1e6, 1) if i in worst else None for i in range(max(worst) + 1)]


def _round(value: float | None, digits: int = 2) -> float | None:
    return None if value is None else round(value, digits)


class ProcSampler:
    """CPU seconds and RSS of a process from ``/proc`` (the server under test)."""

    def __init__(self, pid: int | None) -> None:
        self.pid = pid
        self._tick = os.sysconf("SC_CLK_TCK")

    def cpu(self) -> float:
        if not self.pid:
            return 0.0
        with open(f"/proc/{self.pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / self._tick

    def rss(self) -> int:
        if not self.pid:
            return 0
        with open(f"/proc/{self.pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) * 1024
        return 0


def cpu_busy() -> dict[str, float]:
    """Busy seconds of each CPU (``cpu0``, ``cpu1``, ...) from ``/proc/stat``."""
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    with open("/proc/stat") as f:
        for line in f:
            if not line.startswith("cpu") or line.startswith("cpu "):
                continue
            name, *values = line.split()
            v = [int(x) for x in values]
            out[name] = (sum(v[:8]) - v[3] - v[4]) / tick  # all but idle and iowait
            out[name + "_steal"] = v[7] / tick if len(v) > 7 else 0.0
    return out


class CpuWindow:
    """Server and generator CPU share over a measured window, and what else ran.

    ``cpu0_other_pct``/``cpu1_other_pct`` is the busy time of the server's/generator's core
    not spent by them (other processes on a shared machine): a noisy neighbour shows there.
    ``cpuN_steal_pct`` is the part of it the hypervisor took from this virtual machine
    (``steal`` in ``/proc/stat``): time in which nothing of ours could run at all.
    """

    def __init__(self, server: ProcSampler) -> None:
        self.server = server
        self.t0 = time.monotonic()
        self.s0 = server.cpu()
        self.g0 = _self_cpu()
        self.c0 = cpu_busy()

    def result(self) -> dict[str, float]:
        dt = max(time.monotonic() - self.t0, 1e-9)
        server = self.server.cpu() - self.s0
        gen = _self_cpu() - self.g0
        busy = cpu_busy()
        cpu0 = busy.get("cpu0", 0.0) - self.c0.get("cpu0", 0.0)
        cpu1 = busy.get("cpu1", 0.0) - self.c0.get("cpu1", 0.0)
        return {
            "seconds": round(dt, 2),
            "server_cpu_s": round(server, 3),
            "server_cpu_pct": round(100 * server / dt, 1),
            "generator_cpu_pct": round(100 * gen / dt, 1),
            "cpu0_other_pct": round(max(0.0, 100 * (cpu0 - server) / dt), 1),
            "cpu1_other_pct": round(max(0.0, 100 * (cpu1 - gen) / dt), 1),
            **{f"{c}_steal_pct": round(100 * (busy.get(f"{c}_steal", 0.0)
                                             - self.c0.get(f"{c}_steal", 0.0)) / dt, 1)
               for c in ("cpu0", "cpu1")},
        }


def _self_cpu() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def marker(key: int) -> bytes:
    return MARK_OPEN + str(_now()).encode() + b":" + str(key).encode() + MARK_CLOSE


def read_marker(message: bytes) -> tuple[int, int] | None:
    """``(send time ns, key)`` of the first marker in a message."""
    i = message.find(MARK_OPEN)
    if i < 0:
        return None
    j = message.find(MARK_CLOSE, i)
    sent, _, key = message[i + 2:j].partition(b":")
    return int(sent), int(key)


class Tracker:
    """Latency and exactly-once accounting of keyed messages of one kind."""

    def __init__(self) -> None:
        self.pending: dict[int, bool] = {}  # key -> counts for latency (after warm-up)
        self.samples: list[int] = []
        self.arrivals: list[int] = []  # arrival time (ns) of each sample
        self.sent = 0
        self.received = 0
        self.duplicates = 0
        self.next_key = 0
        self.polled: set[int] = set()  # keys of messages with a polling client at one end
        self.polled_samples: list[int] = []

    def new(self, measured: bool, polled: bool = False) -> int:
        self.next_key += 1
        self.pending[self.next_key] = measured
        self.sent += 1
        if polled:
            self.polled.add(self.next_key)
        return self.next_key

    def got(self, message: bytes) -> None:
        found = read_marker(message)
        if found is None:
            return
        sent, key = found
        measured = self.pending.pop(key, None)
        if measured is None:
            self.duplicates += 1
            return
        self.received += 1
        if measured:
            now = _now()
            self.samples.append(now - sent)
            self.arrivals.append(now)
            if self.polled and key in self.polled:
                self.polled_samples.append(now - sent)

    def result(self) -> dict[str, Any]:
        out = summarize(self.samples)
        out.update(sent=self.sent, received=self.received, lost=len(self.pending),
                   duplicates=self.duplicates)
        return out


# --------------------------------------------------------------------------- the client
class Client(asyncio.Protocol):
    """One raw WebSocket client speaking Socket.IO or the plain framing."""

    polls = False  # Engine.IO long-polling (``bench.polling_client.PollingClient``)

    def __init__(self, framing: Framing, host: str, port: int) -> None:
        loop = asyncio.get_running_loop()
        self.framing = framing
        self.is_sio = framing is SOCKETIO
        self.host, self.port = host, port
        self.transport: asyncio.Transport | None = None
        self.ready: asyncio.Future[None] = loop.create_future()
        self.closed: asyncio.Future[int | None] = loop.create_future()
        self.upgraded = False
        self._head = b""
        self.parser = wire.FrameParser(self._on_message, self._on_control)
        self.waiters: dict[bytes, deque[asyncio.Future[bytes]]] = {}
        self.acks: dict[int, asyncio.Future[bytes]] = {}
        self._next_ack = 0
        self.on_event: Callable[[Client, bytes, bytes], None] | None = None
        self.close_code: int | None = None
        # Counting mode (W2): count occurrences of a pattern instead of parsing.
        self.count_pattern: bytes | None = None
        self.count = 0
        self._tail = b""
        self.frame_len = 0
        self.bytes_in = 0
        self.on_count: Callable[[], None] | None = None
        self.state: Any = None  # the workload's per-client data

    # -- asyncio.Protocol
    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is no subclass
        self.transport.write(wire.upgrade_request(self.host, self.port, self.framing.path))

    def data_received(self, data: bytes) -> None:
        if self.count_pattern is not None:
            self._count(data)
            return
        if not self.upgraded:
            self._head += data
            end = self._head.find(b"\r\n\r\n")
            if end < 0:
                return
            status = self._head[:self._head.find(b"\r\n")]
            data, self._head = self._head[end + 4:], b""
            if b" 101 " not in status + b" ":
                self._fail(ConnectionError(f"upgrade refused: {status.decode(errors='replace')}"))
                return
            self.upgraded = True
            if not self.is_sio and not self.ready.done():
                self.ready.set_result(None)
        if data:
            self.parser.feed(data)

    def connection_lost(self, exc: Exception | None) -> None:
        self._fail(ConnectionError("connection lost"))
        if not self.closed.done():
            self.closed.set_result(self.close_code)

    # -- frames
    def _on_control(self, opcode: int, payload: bytes) -> None:
        if opcode == wire.OP_PING:
            self.send(wire.client_frame(payload, wire.OP_PONG))
        elif opcode == wire.OP_CLOSE:
            self.close_code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
            self.send(wire.close_frame(1000))
            if self.transport is not None:
                self.transport.close()

    def _on_message(self, message: bytes) -> None:
        if self.is_sio:
            kind = message[:2]
            if kind == b"42":
                pass
            elif message == b"2":
                self.send(SOCKETIO.PONG)
                return
            elif kind == b"43":
                i = message.index(b"[")
                fut = self.acks.pop(int(message[2:i]), None)
                if fut is not None and not fut.done():
                    fut.set_result(message[i:])
                return
            elif message[:1] == b"0":
                self.send(SOCKETIO.CONNECT)
                return
            elif kind == b"40":
                if not self.ready.done():
                    self.ready.set_result(None)
                return
            else:
                return
            name = message[4:message.index(b'"', 4)]
        else:
            name = PLAIN.event_name(message) or b""
            if name == b"ack":
                frame = _unjson(message)
                fut = self.acks.pop(frame.get("ref"), None)
                if fut is not None and not fut.done():
                    fut.set_result(_json([frame.get("data")]))
                return
        waiting = self.waiters.get(name)
        if waiting:
            fut = waiting.popleft()
            if not fut.done():
                fut.set_result(message)
            return
        if self.on_event is not None:
            self.on_event(self, name, message)

    def _count(self, data: bytes) -> None:
        if self.frame_len:
            # Every counted message is the same frame, so bytes tell the count (a few bytes of
            # heartbeats never add up to a 2 KiB frame in a bounded run).
            self.bytes_in += len(data)
            n = self.bytes_in // self.frame_len - self.count
        else:
            n, self._tail = wire.count_spanning(self._tail, data, self.count_pattern or b"")
        self.count += n
        # Heartbeats still need answers: an Engine.IO ping is the text frame 81 01 "2", a
        # WebSocket ping starts with 0x89. Payloads here are ASCII JSON, so neither byte can
        # occur inside them; both are found with memchr-speed single-byte searches (a rare
        # ping split across two reads is missed, which a bounded run survives).
        if self.is_sio:
            i = data.find(b"\x01")
            while i > 0:
                if data[i - 1] == 0x81 and data[i + 1:i + 2] == b"2":
                    self.send(SOCKETIO.PONG)
                i = data.find(b"\x01", i + 1)
        i = data.find(b"\x89")
        if i >= 0 and i + 1 < len(data) and data[i + 1] < 126:
            self.send(wire.client_frame(data[i + 2:i + 2 + data[i + 1]], wire.OP_PONG))
        if n and self.on_count is not None:
            self.on_count()

    def start_counting(self, pattern: bytes, on_count: Callable[[], None] | None = None,
                       frame_len: int = 0, already: int = 0) -> None:
        """Switch to counting messages (the leftover parse buffer is counted too).

        With ``frame_len`` the count is bytes received / ``frame_len`` (every message is that
        same frame); otherwise occurrences of ``pattern``. ``already`` messages were parsed.
        """
        self.count_pattern = pattern
        self.on_count = on_count
        self.frame_len = frame_len
        self.count = already
        self.bytes_in = already * frame_len
        left = self.parser.take_buffer()
        if left:
            self._count(left)

    def _fail(self, exc: Exception) -> None:
        if not self.ready.done():
            self.ready.set_exception(exc)
            self.ready.exception()  # mark retrieved
        for fut in list(self.acks.values()):
            if not fut.done():
                fut.set_exception(exc)
                fut.exception()
        self.acks.clear()
        for queue in self.waiters.values():
            for fut in queue:
                if not fut.done():
                    fut.set_exception(exc)
                    fut.exception()
        self.waiters.clear()

    # -- sending
    @property
    def alive(self) -> bool:
        return self.transport is not None and not self.transport.is_closing()

    def send(self, frame: bytes) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(frame)

    def emit(self, event: str, data: bytes) -> None:
        self.send(self.framing.event(event, data))

    async def call(self, event: str, data: bytes, reply: bytes | None = None,
                   timeout: float = CALL_TIMEOUT) -> tuple[bytes | None, bytes]:
        """Send with an ack id; return (the ``reply`` event's message, ack JSON array)."""
        loop = asyncio.get_running_loop()
        self._next_ack += 1
        ack_id = self._next_ack
        ack: asyncio.Future[bytes] = loop.create_future()
        self.acks[ack_id] = ack
        got: asyncio.Future[bytes] | None = None
        if reply is not None:
            got = loop.create_future()
            self.waiters.setdefault(reply, deque()).append(got)
        self.send(self.framing.event(event, data, ack_id))
        async with asyncio.timeout(timeout):
            result = await ack
            if b'"ok":false' in result:
                raise RuntimeError(f"{event} failed: {result.decode(errors='replace')}")
            message = await got if got is not None else None
        return message, result

    def data_of(self, message: bytes) -> Any:
        """Decoded payload of a server event message."""
        if self.is_sio:
            return _unjson(SOCKETIO.event_data(message))
        return _unjson(message)["data"]

    def abort(self) -> None:
        if self.transport is not None:
            self.transport.abort()

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(wire.close_frame(1000))
            self.transport.close()


_round_robin = itertools.count()


def pick_port(port: int | list[int]) -> int:
    """Several ports act as a plain round-robin load balancer over relay nodes."""
    if isinstance(port, int):
        return port
    return port[next(_round_robin) % len(port)]


async def connect(framing: Framing, host: str, port: int | list[int],
                  timeout: float = CONNECT_TIMEOUT, polling: bool = False) -> Client:
    """A connected client; ``polling``: Engine.IO long-polling (``bench.polling_client``)."""
    port = pick_port(port)
    if polling:
        from .polling_client import connect_polling

        return await connect_polling(host, port, timeout)
    loop = asyncio.get_running_loop()
    _, client = await asyncio.wait_for(
        loop.create_connection(lambda: Client(framing, host, port), host, port), timeout)
    await asyncio.wait_for(asyncio.shield(client.ready), timeout)
    return client


# --------------------------------------------------------------------------- rooms
@dataclass
class Room:
    host: Client
    room_id: int
    students: list[Client] = field(default_factory=list)
    user_ids: list[int] = field(default_factory=list)
    tokens: list[str] = field(default_factory=list)


STEPS = _json([
    {"name": str(i), "content": f"<p>Task {i}</p>", "language": "html", "type": "exercise"}
    for i in range(1, 5)
])


async def make_room(framing: Framing, host: str, port: int, students: int,
                    gate: asyncio.Semaphore, tag: str, publish_steps: bool = True,
                    polls: Callable[[int], bool] | None = None) -> Room:
    """Host creates a room (and publishes steps); ``students`` students join it (student
    ``i`` on long-polling when ``polls(i)``)."""
    async with gate:
        h = await connect(framing, host, port)
        msg, _ = await h.call("room/create", _json({"name": "Teacher"}), b"room/created")
        room = Room(h, int(h.data_of(msg or b"")["room_id"]))
        if publish_steps:
            await h.call("steps/all", STEPS)

    async def join(i: int) -> tuple[Client, int, str]:
        async with gate:
            s = await connect(framing, host, port, polling=polls is not None and polls(i))
            data = _json({"room_id": room.room_id, "name": f"{tag}s{i}"})
            msg, _ = await s.call("room/join", data, b"room/join")
            reply = s.data_of(msg or b"")
            return s, int(reply["user_id"]), str(reply.get("token", ""))

    for s, uid, token in await asyncio.gather(*(join(i) for i in range(students))):
        room.students.append(s)
        room.user_ids.append(uid)
        room.tokens.append(token)
    return room


async def make_rooms(framing: Framing, host: str, port: int, rooms: int, students: int,
                     concurrency: int = 128, publish_steps: bool = True,
                     polls: Callable[[int, int], bool] | None = None) -> list[Room]:
    """``polls(room, student)``: whether that student uses long-polling (else WebSocket)."""
    gate = asyncio.Semaphore(concurrency)

    def in_room(r: int) -> Callable[[int], bool] | None:
        return None if polls is None else (lambda i: polls(r, i))

    return list(await asyncio.gather(*(
        make_room(framing, host, port, students, gate, f"r{i}", publish_steps, in_room(i))
        for i in range(rooms))))


def all_clients(rooms: list[Room]) -> list[Client]:
    return [c for r in rooms for c in (r.host, *r.students)]


def closed_count(clients: list[Client]) -> int:
    return sum(1 for c in clients if not c.alive)


async def close_all(clients: list[Client]) -> None:
    for c in clients:
        c.close()
    await asyncio.sleep(0.2)
    for c in clients:
        c.abort()


def filler(n: int, seed: str = "x") -> str:
    """ASCII text of ``n`` characters that looks a bit like code."""
    line = f"    int {seed} = compute({seed}, 42); // keep going\n"
    return (line * (n // len(line) + 1))[:n]


def split_json(template: Any, slot: str) -> tuple[bytes, bytes]:
    """Encode ``template`` once; return the bytes before and after the string ``slot``.

    The payload of a timed message is then ``before + marker + after`` (no re-encoding).
    """
    encoded = _json(template)
    i = encoded.index(slot.encode())
    return encoded[:i], encoded[i + len(slot):]


# --------------------------------------------------------------------------- W1 / W4
@dataclass
class ClassroomLoad:
    """Rates of the W1 classroom (per room, per second)."""

    update_interval: float = 1.0  # sharer: sharing/code_update ~4 KiB
    update_bytes: int = 4096
    send_interval: float = 60.0  # sharer: sharing/code_send ~200 KiB
    send_bytes: int = 200 * 1024
    chat_interval: float = 30.0  # each student: message/to_mentor
    status_interval: float = 30.0  # each student: steps/status/to_mentor
    host_chat_interval: float = 10.0  # host: message/to_client to a random student
    rtc_rooms: int = 0  # W4: rooms with a signaling pair
    rtc_interval: float = 1.0  # rtc/offer from the pair's student, answered with rtc/ice
    # The send schedule: what is due goes out each tick. Real clients are not synchronised;
    # a coarse tick would send a whole tick's traffic of every client at one instant and
    # measure the queue behind that artificial burst (W4's "burst" row keeps 50 ms for that).
    tick: float = 0.005


async def classroom(framing: Framing, host: str, port: int, sampler: ProcSampler,
                    rooms: int, duration: float, warmup: float = 2.0, drain: float = 3.0,
                    load: ClassroomLoad | None = None, polling_every: int = 0
                    ) -> dict[str, Any]:
    """W1 (and W4 with ``load.rtc_rooms``): R rooms of 1 host + 30 students.

    W1P: with ``polling_every`` k, student i of room r uses long-polling when
    (i + r) % k == 0 (k = 3: 10 of 30 per room; the sharer polls in every k-th room)."""
    load = load or ClassroomLoad()
    t_setup = time.monotonic()
    polls = None
    if polling_every:
        k = polling_every

        def polls(r: int, i: int) -> bool:
            return (i + r) % k == 0
    try:
        made = await make_rooms(framing, host, port, rooms, 30, polls=polls)
    except Exception as exc:
        return {"ok": False, "error": f"setup failed: {exc!r}", "rooms": rooms}
    setup_s = time.monotonic() - t_setup
    clients = all_clients(made)
    # Sharing: student 0 of each room shares its code.
    for r in made:
        r.host.emit("sharing/start", _json({"room_id": r.room_id, "user_id": r.user_ids[0]}))
    await asyncio.sleep(0.5)

    to_host = {"chat": Tracker(), "code_update": Tracker(), "code_send": Tracker()}
    to_student = Tracker()
    rtc_offer, rtc_ice = Tracker(), Tracker()
    status = {"sent": 0, "received": 0}
    host_events = {b"message/to_mentor": to_host["chat"].got,
                   b"sharing/code_update": to_host["code_update"].got,
                   b"sharing/code_send": to_host["code_send"].got}
    ice_before, ice_after = split_json(
        {"candidate": {"candidate": "@SLOT@ 1 udp 2122260223 127.0.0.1 50000 typ host",
                       "sdpMid": "0"}}, "@SLOT@")
    measuring = [False]

    def on_host(client: Client, name: bytes, message: bytes) -> None:
        handler = host_events.get(name)
        if handler is not None:
            handler(message)
        elif name == b"steps/status/to_mentor":
            status["received"] += 1
        elif name == b"rtc/offer":
            rtc_offer.got(message)
            room: Room = client.state
            key = rtc_ice.new(measuring[0])
            uid = room.user_ids[1]
            client.emit("rtc/ice", b'{"user_id":' + str(uid).encode() + b","
                        + ice_before[1:] + marker(key) + ice_after)

    def on_student(client: Client, name: bytes, message: bytes) -> None:
        if name == b"message/to_client":
            to_student.got(message)
        elif name == b"rtc/ice":
            rtc_ice.got(message)

    for r in made:
        r.host.on_event = on_host
        r.host.state = r
        for s in r.students:
            s.on_event = on_student

    upd_before, upd_after = split_json({"files": [{
        "filename": "src/Main.java", "status": "CHANGED",
        "content": "@SLOT@" + filler(load.update_bytes - 120)}]}, "@SLOT@")
    files = [{"filename": f"src/pkg/File{i}.java", "status": "CREATED",
              "content": ("@SLOT@" if i == 0 else "") + filler(10 * 1024, f"v{i}")}
             for i in range(max(1, load.send_bytes // (10 * 1024)))]
    send_before, send_after = split_json({"files": files}, "@SLOT@")
    chat_before, chat_after = split_json({"content": "@SLOT@ " + filler(60, "q")}, "@SLOT@")
    host_before, host_after = split_json({"content": "@SLOT@ " + filler(60, "a")}, "@SLOT@")
    sdp_before, sdp_after = split_json(
        {"sdp": "v=0\r\no=- @SLOT@ 2 IN IP4 127.0.0.1\r\n" + filler(1500, "m")}, "@SLOT@")
    statuses = ("IN_PROGRESS", "DONE")
    status_turn = {id(s): 0 for r in made for s in r.students}
    rid = {id(r): b'{"room_id":' + str(r.room_id).encode() + b"," for r in made}

    def with_room(r: Room, before: bytes) -> bytes:
        return rid[id(r)] + before[1:]

    rng = random.Random(1)
    n_students = rooms * 30
    phase = [rng.random() for _ in made]
    send_phase = [rng.random() * load.send_interval for _ in made]
    next_update = [p for p in phase]
    next_send = list(send_phase)
    next_rtc = [rng.random() for _ in made]  # the signalling pair's own phase
    acc = {"chat": 0.0, "status": 0.0, "host": 0.0}

    t0 = time.monotonic()
    t_measure = t0 + warmup
    t_end = t0 + warmup + duration
    window: CpuWindow | None = None
    measure_ns = 0
    tick = load.tick
    last = t0
    while True:
        now = time.monotonic()
        if now >= t_end:
            break
        # Rates accrue by the time that really passed: the loop may wake a little early or
        # late, and counting whole ticks per wake-up would send more than the nominal rates.
        dt, last = now - last, now
        if window is None and now >= t_measure:
            measuring[0] = True
            window = CpuWindow(sampler)
            measure_ns = _now()
        elapsed = now - t0
        measured = measuring[0]
        for i, r in enumerate(made):
            sharer = r.students[0]
            if elapsed >= next_update[i]:
                next_update[i] += load.update_interval
                key = to_host["code_update"].new(measured, sharer.polls)
                sharer.emit("sharing/code_update", with_room(r, upd_before) + marker(key)
                            + upd_after)
            if elapsed >= next_send[i]:
                next_send[i] += load.send_interval
                key = to_host["code_send"].new(measured, sharer.polls)
                sharer.emit("sharing/code_send", with_room(r, send_before) + marker(key)
                            + send_after)
            if i < load.rtc_rooms and elapsed >= next_rtc[i]:
                next_rtc[i] += load.rtc_interval
                key = rtc_offer.new(measured)
                r.students[1].emit("rtc/offer", sdp_before + marker(key) + sdp_after)
        acc["chat"] += n_students * dt / load.chat_interval
        acc["status"] += n_students * dt / load.status_interval
        acc["host"] += rooms * dt / load.host_chat_interval
        while acc["chat"] >= 1:
            acc["chat"] -= 1
            r = made[rng.randrange(rooms)]
            s = r.students[rng.randrange(30)]
            key = to_host["chat"].new(measured, s.polls)
            s.emit("message/to_mentor", with_room(r, chat_before) + marker(key) + chat_after)
        while acc["status"] >= 1:
            acc["status"] -= 1
            s = made[rng.randrange(rooms)].students[rng.randrange(30)]
            turn = status_turn[id(s)] = status_turn[id(s)] + 1
            status["sent"] += 1
            s.emit("steps/status/to_mentor", _json({"1": statuses[turn % 2]}))
        while acc["host"] >= 1:
            acc["host"] -= 1
            r = made[rng.randrange(rooms)]
            j = rng.randrange(30)
            uid = r.user_ids[j]
            key = to_student.new(measured, r.students[j].polls)
            r.host.emit("message/to_client", rid[id(r)] + b'"user_id":' + str(uid).encode()
                        + b"," + host_before[1:] + marker(key) + host_after)
        await asyncio.sleep(max(0.0, t0 + (int(elapsed / tick) + 1) * tick - time.monotonic()))
    cpu = window.result() if window else {}
    # Drain: wait until everything sent has arrived (or the drain time is over).
    trackers = [*to_host.values(), to_student, rtc_offer, rtc_ice]
    deadline = time.monotonic() + drain
    while time.monotonic() < deadline and (
            any(t.pending for t in trackers) or status["received"] < status["sent"]):
        await asyncio.sleep(0.05)
    dropped = closed_count(clients)
    result: dict[str, Any] = {
        "rooms": rooms, "connections": len(clients), "setup_s": round(setup_s, 2),
        "student_to_host": summarize(
            s for t in to_host.values() for s in t.samples),
        "kinds": {k: t.result() for k, t in to_host.items()},
        "host_to_student": to_student.result(),
        "status": status, "dropped_connections": dropped, **cpu,
        "worst_ms_per_second": timeline(to_host.values(), measure_ns) if window else [],
    }
    if polling_every:
        from .polling_client import stats

        result["polling"] = {
            "students": sum(1 for c in clients if c.polls),
            "student_to_host": summarize(
                s for t in to_host.values() for s in t.polled_samples),
            "host_to_student": summarize(to_student.polled_samples),
            **stats(clients)}
    lost = sum(len(t.pending) for t in trackers) + max(0, status["sent"] - status["received"])
    dups = sum(t.duplicates for t in trackers)
    result["lost"] = lost
    result["duplicates"] = dups
    if load.rtc_rooms:
        offer, ice = rtc_offer.result(), rtc_ice.result()
        result["rtc"] = {"offer": offer, "ice": ice,
                         "hop": summarize([*rtc_offer.samples, *rtc_ice.samples])}
    p99 = result["student_to_host"]["p99_ms"]
    result["ok"] = bool(p99 is not None and p99 <= 100.0 and lost == 0 and dups == 0
                        and dropped == 0)
    await close_all(clients)
    return result


# --------------------------------------------------------------------------- W2
async def broadcast(framing: Framing, host: str, port: int, sampler: ProcSampler,
                    students: int, duration: float, warmup: float = 2.0,
                    window: int = 16, size: int = 2048, polling: bool = False
                    ) -> dict[str, Any]:
    """W2: the host publishes ``steps/all`` (~2 KiB) in a closed loop to ``students``
    (W2P: every student on long-polling, the host on a WebSocket)."""
    try:
        (room,) = await make_rooms(framing, host, port, 1, students, publish_steps=False,
                                   polls=(lambda r, i: True) if polling else None)
    except Exception as exc:
        return {"ok": False, "error": f"setup failed: {exc!r}"}
    progress = asyncio.Event()
    pattern = framing.pattern("steps/all")
    payload = _json([{"name": "1", "content": "<p>" + filler(size - 80, "b") + "</p>",
                      "language": "html", "type": "exercise"}])
    frame = framing.event("steps/all", payload)
    # One message parsed by every student gives the exact frame the server sends; on the
    # Socket.IO wire it is the same bytes for everyone every time (no seq), so counting is
    # by bytes. The plain framing's per-recipient seq changes the length: count a pattern.
    loop = asyncio.get_running_loop()
    firsts: list[asyncio.Future[bytes]] = []
    for s in room.students:
        fut: asyncio.Future[bytes] = loop.create_future()
        s.waiters.setdefault(b"steps/all", deque()).append(fut)
        firsts.append(fut)
    room.host.send(frame)
    try:
        async with asyncio.timeout(30):
            first = await asyncio.gather(*firsts)
    except TimeoutError:
        return {"ok": False, "error": "the first steps/all did not reach every student"}
    for s, message in zip(room.students, first, strict=True):
        n = len(message)
        frame_len = n + (2 if n < 126 else 4 if n < 65536 else 10)
        if s.polls:  # (counted per long-poll answer: packets of length n joined by \x1e)
            frame_len = n
        s.start_counting(pattern, progress.set, frame_len if s.is_sio else 0, already=1)
    hostc = room.host
    counts = room.students
    sent = 1
    t0 = time.monotonic()
    t_measure = t0 + warmup
    t_end = t_measure + duration
    base = 0
    cpu: CpuWindow | None = None
    polls0 = 0
    while True:
        now = time.monotonic()
        if now >= t_end:
            break
        if cpu is None and now >= t_measure:
            cpu = CpuWindow(sampler)
            base = sum(c.count for c in counts)
            polls0 = sum(getattr(c, "polls_answered", 0) for c in counts)
        slowest = min(c.count for c in counts)
        if sent - slowest < window:
            burst = window - (sent - slowest)
            hostc.send(frame * burst)
            sent += burst
        progress.clear()
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(1.0):
                await progress.wait()
    delivered = sum(c.count for c in counts) - base
    result = cpu.result() if cpu else {}
    dropped = closed_count([hostc, *counts])
    out: dict[str, Any] = {
           "ok": dropped == 0, "students": students, "published": sent,
           "deliveries_per_s": round(delivered / result.get("seconds", duration)),
           "deliveries_per_cpu_s": round(delivered / max(result.get("server_cpu_s", 0), 1e-3)),
           "message_bytes": len(payload), "dropped_connections": dropped, **result}
    if polling:
        answers = sum(getattr(c, "polls_answered", 0) for c in counts) - polls0
        out["polling"] = {"poll_answers": answers,
                          "deliveries_per_poll": round(delivered / max(answers, 1), 2)}
    await close_all([hostc, *counts])
    return out


# --------------------------------------------------------------------------- W3
async def idle(framing: Framing, host: str, port: int, sampler: ProcSampler,
               levels: list[int], window: float, settle: float = 2.0) -> dict[str, Any]:
    """W3: joined connections idling with heartbeats; server RSS per connection, idle CPU."""
    baseline = sampler.rss()
    rooms: list[Room] = []
    out: list[dict[str, Any]] = []
    for level in levels:
        have = sum(1 + len(r.students) for r in rooms)
        need = max(0, level - have)
        t = time.monotonic()
        try:
            rooms += await make_rooms(framing, host, port, need // 31, 30)
            if need % 31:
                rooms += await make_rooms(framing, host, port, 1, need % 31 - 1)
        except Exception as exc:
            out.append({"connections": level, "ok": False, "error": f"setup failed: {exc!r}"})
            break
        setup = time.monotonic() - t
        await asyncio.sleep(settle)
        rss = sampler.rss()
        cpu = CpuWindow(sampler)
        await asyncio.sleep(window)
        clients = all_clients(rooms)
        out.append({
            "connections": len(clients), "setup_s": round(setup, 2),
            "rss_mib": round(rss / 2**20, 1),
            "bytes_per_connection": round((rss - baseline) / len(clients)),
            "dropped_connections": closed_count(clients), **cpu.result()})
    await close_all(all_clients(rooms))
    return {"ok": all(x.get("dropped_connections") == 0 for x in out),
            "baseline_rss_mib": round(baseline / 2**20, 1), "levels": out}


# --------------------------------------------------------------------------- W5
@dataclass
class Resumer:
    """One W5 student: its identity, what it has seen, and its current connection."""

    room: Room
    index: int
    client: Client
    last_seq: int = 0
    seen: set[int] = field(default_factory=set)
    first: int | None = None
    duplicates: int = 0
    seq_errors: int = 0
    resyncs: int = 0


async def reconnect_storm(host: str, port: int, sampler: ProcSampler, rooms: int,
                          rate: float = 2.0, before: float = 2.0,
                          after: float = 2.0, drain: float = 10.0) -> dict[str, Any]:
    """W5: every plain-framing student drops at once and resumes with ``last_seq``.

    The hosts keep sending ``message/to_all`` (``rate`` per room per second, content
    ``~n:<k>~`` numbered per room) before, during and after the storm; every student checks
    that its ``seq`` is continuous and that it sees every ``k`` from its first one exactly once.
    """
    try:
        made = await make_rooms(PLAIN, host, port, rooms, 30, concurrency=256,
                                publish_steps=False)
    except Exception as exc:
        return {"ok": False, "error": f"setup failed: {exc!r}"}
    sent = [0] * rooms

    def on_student(client: Client, name: bytes, message: bytes) -> None:
        st: Resumer = client.state
        if name == b"room/resync":
            st.resyncs += 1
            return
        seq_at = message.rfind(b'"seq":')
        if seq_at < 0:
            return
        seq = int(message[seq_at + 6:message.index(b"}", seq_at)])
        if seq != st.last_seq + 1:
            if seq <= st.last_seq:
                st.duplicates += 1
                return
            st.seq_errors += 1
        st.last_seq = seq
        if name == b"message/to_client":
            i = message.find(b"~n:")
            k = int(message[i + 3:message.index(b"~", i + 3)])
            if k in st.seen:
                st.duplicates += 1
            st.seen.add(k)
            if st.first is None:
                st.first = k

    resumers: list[Resumer] = []
    for r in made:
        for i, s in enumerate(r.students):
            st = Resumer(r, i, s)
            s.state = st
            s.on_event = on_student
            resumers.append(st)

    stop = asyncio.Event()

    async def hosts() -> None:
        tick = 0.05
        acc = 0.0
        order = 0
        last = time.monotonic()
        while not stop.is_set():
            now = time.monotonic()
            acc += rooms * rate * (now - last)  # by the time that passed (see classroom)
            last = now
            while acc >= 1:
                acc -= 1
                i = order % rooms
                order += 1
                sent[i] += 1
                made[i].host.emit("message/to_all", _json({"content": f"~n:{sent[i]}~ hello"}))
            await asyncio.sleep(tick)

    sender = asyncio.create_task(hosts())
    await asyncio.sleep(before)
    cpu = CpuWindow(sampler)
    # The storm: every student connection is cut at once, then all resume together.
    t_drop = time.monotonic()
    for st in resumers:
        st.client.abort()
    resumed_at: list[float] = []
    connected_at: list[float] = []
    failures: list[str] = []
    tcp0 = tcp_counters()

    async def resume(st: Resumer) -> None:
        for attempt in range(5):
            try:
                c = await connect(PLAIN, host, port)
                connected_at.append(time.monotonic() - t_drop)
                c.state = st
                c.on_event = on_student
                st.client = c
                r = st.room
                await c.call("room/rejoin", _json({
                    "room_id": r.room_id, "user_id": r.user_ids[st.index],
                    "token": r.tokens[st.index], "last_seq": st.last_seq}), b"room/join")
                resumed_at.append(time.monotonic() - t_drop)
                return
            except Exception as exc:
                if attempt == 4:
                    failures.append(repr(exc))
                await asyncio.sleep(0.2 * (attempt + 1))

    await asyncio.gather(*(resume(st) for st in resumers))
    storm_cpu = cpu.result()
    tcp1 = tcp_counters()
    await asyncio.sleep(after)
    stop.set()
    await sender
    room_index = {id(r): i for i, r in enumerate(made)}
    deadline = time.monotonic() + drain
    while time.monotonic() < deadline:
        if all(len(st.seen) >= sent[room_index[id(st.room)]] - (st.first or 1) + 1
               for st in resumers):
            break
        await asyncio.sleep(0.1)
    lost = 0
    for st in resumers:
        first = st.first or 1
        expected = set(range(first, sent[room_index[id(st.room)]] + 1))
        lost += len(expected - st.seen)
    clients = [*(r.host for r in made), *(st.client for st in resumers)]
    dropped = closed_count(clients)
    out = {
        "students": len(resumers), "messages_sent": sum(sent),
        "resumed": len(resumed_at), "failed": len(failures), "failures": failures[:5],
        "all_resumed_s": round(max(resumed_at), 3) if resumed_at else None,
        "resume_p50_s": _round(percentile(sorted(resumed_at), 50), 3),
        "connected_p50_s": _round(percentile(sorted(connected_at), 50), 3),
        "connected_max_s": _round(max(connected_at), 3) if connected_at else None,
        "tcp": {k: tcp1.get(k, 0) - v for k, v in tcp0.items()},
        "lost": lost, "duplicates": sum(st.duplicates for st in resumers),
        "seq_gaps": sum(st.seq_errors for st in resumers),
        "resyncs": sum(st.resyncs for st in resumers),
        "dropped_connections": dropped, "storm_window": storm_cpu,
    }
    out["ok"] = bool(not failures and out["lost"] == 0 and out["duplicates"] == 0
                     and out["seq_gaps"] == 0 and out["resyncs"] == 0)
    await close_all(clients)
    return out


def tcp_counters() -> dict[str, int]:
    """Kernel counters that reveal a too-short accept backlog (``/proc/net/netstat``)."""
    wanted = ("ListenOverflows", "ListenDrops", "TCPTimeouts", "TCPSynRetrans")
    out: dict[str, int] = {}
    with contextlib.suppress(OSError), open("/proc/net/netstat") as f:
        lines = f.read().splitlines()
    for names, values in zip(lines[::2], lines[1::2], strict=False):
        for name, value in zip(names.split()[1:], values.split()[1:], strict=False):
            if name in wanted:
                out[name] = int(value)
    return out


# --------------------------------------------------------------------------- CLI
def raise_nofile() -> int:
    """Raise the open-files limit as far as allowed; return the new soft limit."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for want in (1 << 20, 262144, 65536, hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (max(want, soft), max(want, hard)))
            return max(want, soft)
        except (ValueError, OSError):
            continue
    return soft


async def main_async(args: argparse.Namespace) -> dict[str, Any]:
    params: dict[str, Any] = json.loads(args.params)
    framing = wire.FRAMINGS[args.framing]
    sampler = ProcSampler(args.server_pid)
    host, port = args.host, args.port
    if args.workload in ("W1", "W4"):
        load = ClassroomLoad(**params.pop("load", {}))
        return await classroom(framing, host, port, sampler, load=load, **params)
    if args.workload == "W2":
        return await broadcast(framing, host, port, sampler, **params)
    if args.workload == "W3":
        return await idle(framing, host, port, sampler, **params)
    if args.workload == "W5":
        return await reconnect_storm(host, port, sampler, **params)
    raise SystemExit(f"unknown workload {args.workload}")


def _ports(text: str) -> int | list[int]:
    ports = [int(p) for p in text.split(",") if p.strip()]
    return ports[0] if len(ports) == 1 else ports


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("workload", choices=["W1", "W2", "W3", "W4", "W5"])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=_ports, required=True,
                        help="a port, or several comma-separated (round-robin over nodes)")
    parser.add_argument("--framing", choices=sorted(wire.FRAMINGS), default="socketio")
    parser.add_argument("--server-pid", type=int, default=0)
    parser.add_argument("--params", default="{}", help="workload keyword arguments, JSON")
    args = parser.parse_args(argv)
    raise_nofile()
    # A cyclic-GC pass over tens of thousands of client objects stalls the loop for tens to
    # hundreds of ms, which would show up as server latency: runs are short, so no GC here.
    gc.disable()
    try:
        import uvloop
    except ImportError:
        result = asyncio.run(main_async(args))
        loop_name = "asyncio"
    else:
        result = uvloop.run(main_async(args))
        loop_name = "uvloop"
    result["generator_loop"] = loop_name
    sys.stdout.write(json.dumps(result) + "\n")


if __name__ == "__main__":
    main()
