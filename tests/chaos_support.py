"""Chaos harness: a lesson whose every event is accounted for, whatever happens meanwhile.

Participants (a host and students) send a continuous stream of ``message/to_client`` /
``message/to_mentor`` events, each with a ``ref`` and a unique marker in its content, and
record the answer of every one: ``ok`` (acknowledged), ``failed`` (failed ack, with its
code) or ``unanswered`` (the connection closed first, with the close code). A participant
whose connection closes resumes at once (``room/rehost`` / ``room/rejoin`` with its
``last_seq``) on a node picked at random, and goes on. Afterwards ``verify`` establishes
what really happened — the host's history of every conversation (``message/user``) and
what every participant received, live or replayed — and lists every answer that
disagrees with it (see ``Verdict``).

Relay nodes are started as ``tests.cluster_support.start_node`` does, with their standard
error in a file, so a failing test can show what the nodes logged.
"""

from __future__ import annotations

import itertools
import json
import os
import random
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio
from trio_websocket import ConnectionClosed, HandshakeError, connect_websocket_url

from tests.cluster_support import Node
from tests.support import Client

FOREVER = 3600.0


async def start_logged_node(nursery: trio.Nursery, redis_url: str, log_path: Path,
                            **env: str) -> Node:
    """``cluster_support.start_node``, with the node's standard error in ``log_path``."""
    environ = dict(os.environ, OBSERVER_BACKPLANE_URL=redis_url, OBSERVER_LOG_LEVEL="INFO",
                   OBSERVER_RATE_LIMIT_RATE="10000", OBSERVER_RATE_LIMIT_BURST="10000",
                   OBSERVER_JOIN_FAILURE_LIMIT="100000", **env)
    with log_path.open("ab") as log:
        process = await trio.lowlevel.open_process(
            [sys.executable, "-m", "relay", "serve", "--port", "0", "--http-port", "0"],
            stdout=subprocess.PIPE, stderr=log, env=environ)
    assert process.stdout is not None
    buffer = b""
    with trio.fail_after(20):
        while buffer.count(b"\n") < 2:
            chunk = await process.stdout.receive_some()
            assert chunk, f"the node exited during startup:\n{log_path.read_text()[-3000:]}"
            buffer += chunk
    lines = buffer.decode().splitlines()
    node = Node(process, int(lines[0].rsplit(":", 1)[1]), int(lines[1].rsplit(":", 1)[1]))

    async def reap() -> None:
        try:
            await process.wait()
        finally:
            if process.returncode is None:
                process.kill()

    nursery.start_soon(reap)
    return node


def notable_log_lines(path: Path, limit: int = 60) -> list[str]:
    """The WARNING/ERROR lines (and traceback heads) a node wrote, for failure messages."""
    if not path.exists():
        return []
    keep = [line for line in path.read_text(errors="replace").splitlines()
            if " WARNING " in line or " ERROR " in line or line.startswith("Traceback")]
    return keep[-limit:]


@dataclass(slots=True)
class Sent:
    """One event sent with a ref, and the answer it got."""

    who: str
    ref: str
    content: str
    conv: int  # the student whose conversation the message belongs to
    at: float  # trio.current_time() when it was sent
    outcome: str = "pending"  # ok | failed | unanswered | unsent
    code: Any = None  # the failed ack's code, or the close code


class Participant:
    """One participant: its connection (replaced on every resume), sends and answers."""

    def __init__(self, name: str, role: str, creds: dict[str, Any], conn: Client,
                 nursery: trio.Nursery, nodes: Callable[[], list[Node]], rng: random.Random,
                 ledger: list[Sent], targets: list[int] | None = None,
                 interval: float = 0.1) -> None:
        self.name, self.role, self.creds = name, role, creds
        self.conn: Client | None = conn
        self.nursery, self.nodes, self.rng = nursery, nodes, rng
        self.ledger = ledger
        self.targets = targets or []  # the host's students, round robin
        self.interval = interval
        self.last_seq: int | None = conn.last_seq
        self.pending: dict[str, Sent] = {}
        self.got: list[dict[str, Any]] = []  # message/to_client or /to_mentor data, in order
        self.closes: list[Any] = []
        self.attach_failures: Counter[str] = Counter()
        self.attaches = 0
        self.resyncs: list[dict[str, Any]] = []
        self.live: set[str] = set()  # contents received outside an attach's replay
        self.attached_at: list[float] = []  # when each resume succeeded
        self.attaching = False
        self.fatal: str | None = None
        self.sending = True
        self._n = 0

    # -- frames --------------------------------------------------------------------------
    def on_frame(self, frame: dict[str, Any]) -> None:
        event = frame["event"]
        if self.conn is not None and self.conn.last_seq is not None:
            self.last_seq = self.conn.last_seq
        if event == "ack":
            sent = self.pending.pop(frame.get("ref"), None)  # type: ignore[arg-type]
            if sent is not None:
                if frame["data"].get("ok"):
                    sent.outcome = "ok"
                else:
                    sent.outcome, sent.code = "failed", frame["data"]["error"]["code"]
        elif event in ("message/to_client", "message/to_mentor"):
            self.got.append(frame["data"])
            if not self.attaching:
                self.live.add(frame["data"]["content"])
        elif event == "room/resync":
            self.resyncs.append(frame["data"])

    def _connection_lost(self, code: Any) -> None:
        self.closes.append(code)
        for sent in self.pending.values():
            sent.outcome, sent.code = "unanswered", code
        self.pending.clear()
        self.conn = None

    # -- attaching -----------------------------------------------------------------------
    async def attach(self, node: Node | None = None, timeout: float = 45.0) -> bool:
        """Resume with ``last_seq`` until it succeeds; False on a definite refusal
        (``room_not_found`` and the like: recorded in ``fatal``)."""
        self.attaching = True
        try:
            return await self._attach(node, timeout)
        finally:
            self.attaching = False

    async def _attach(self, node: Node | None, timeout: float) -> bool:
        with trio.fail_after(timeout):
            while True:
                target = node or self.rng.choice(self.nodes())
                try:
                    conn = Client(await connect_websocket_url(self.nursery,
                                                              target.url + "/observer"))
                except (OSError, HandshakeError):
                    await trio.sleep(0.2)
                    continue
                conn.last_seq = self.last_seq
                self.conn = conn
                event = "room/rehost" if self.role == "host" else "room/rejoin"
                self._n += 1
                ref = f"{self.name}:attach:{self._n}"
                data = {**self.creds, "last_seq": self.last_seq or 0}
                try:
                    await conn.send(event, data, ref)
                    while True:
                        frame = await conn.recv(timeout=FOREVER)
                        self.on_frame(frame)
                        if frame["event"] == "ack" and frame.get("ref") == ref:
                            break
                except ConnectionClosed as exc:
                    self._connection_lost(_code(exc))
                    await trio.sleep(0.2)
                    continue
                if frame["data"].get("ok"):
                    self.attaches += 1
                    self.attached_at.append(trio.current_time())
                    if conn.last_seq is None:
                        conn.last_seq = self.last_seq = self.last_seq or 0
                    return True
                code = frame["data"]["error"]["code"]
                self.attach_failures[code] += 1
                await close_within(conn, 5)
                self.conn = None
                if code in ("room_not_found", "user_not_found", "bad_token", "forbidden"):
                    self.fatal = code
                    return False
                await trio.sleep(0.3)

    # -- the lesson ----------------------------------------------------------------------
    def _next_event(self) -> tuple[str, dict[str, Any], Sent]:
        self._n += 1
        ref = f"{self.name}:{self._n}"
        content = f"<{self.name}#{self._n}>"
        if self.role == "host":
            target = self.targets[self._n % len(self.targets)]
            event, data, conv = "message/to_client", {"user_id": target, "content": content}, \
                target
        else:
            event, data, conv = "message/to_mentor", {"content": content}, self.creds["user_id"]
        return event, data, Sent(self.name, ref, content, conv, trio.current_time())

    async def _sender(self, conn: Client) -> None:
        while self.sending:
            event, data, sent = self._next_event()
            self.ledger.append(sent)
            self.pending[sent.ref] = sent
            try:
                await conn.send(event, data, sent.ref)
            except ConnectionClosed:
                self.pending.pop(sent.ref, None)
                sent.outcome = "unsent"
                return
            await trio.sleep(self.interval * (0.5 + self.rng.random()))

    async def run(self) -> None:
        """Send and read until cancelled; resume whenever the connection closes."""
        while True:
            if self.conn is None and not await self.attach():
                return
            conn = self.conn
            assert conn is not None
            async with trio.open_nursery() as nursery:
                nursery.start_soon(self._sender, conn)
                try:
                    while True:
                        self.on_frame(await conn.recv(timeout=FOREVER))
                except ConnectionClosed as exc:
                    self._connection_lost(_code(exc))
                nursery.cancel_scope.cancel()

    async def settle(self, timeout: float) -> None:
        """After sending stopped: wait for the answers (or closes) of what is pending."""
        with trio.move_on_after(timeout):
            while self.pending or self.conn is None:
                await trio.sleep(0.05)


class Joiner:
    """New students joining the room one after the other, each with a fresh name; the
    answer of every ``room/join`` is recorded like an event's (``Sent.content`` = name)."""

    def __init__(self, room_id: int, nursery: trio.Nursery, nodes: Callable[[], list[Node]],
                 rng: random.Random, interval: float = 0.3) -> None:
        self.room_id, self.nursery, self.nodes, self.rng = room_id, nursery, nodes, rng
        self.interval = interval
        self.joins: list[Sent] = []
        self.anomalies: list[str] = []  # the server neither served nor closed a socket
        self.sending = True

    async def run(self) -> None:
        n = 0
        while self.sending:
            n += 1
            name = f"j{n}"
            node = self.rng.choice(self.nodes())
            try:
                with trio.fail_after(10):
                    conn = Client(await connect_websocket_url(self.nursery,
                                                              node.url + "/observer"))
            except (OSError, HandshakeError):
                await trio.sleep(0.2)
                continue
            except trio.TooSlowError:
                self.anomalies.append(f"{name}: no WebSocket handshake from port {node.port} "
                                      f"within 10 s (at {trio.current_time():.1f})")
                continue
            sent = Sent("joiner", name, name, 0, trio.current_time())
            self.joins.append(sent)
            try:
                await conn.send("room/join", {"room_id": self.room_id, "name": name}, name)
                with trio.fail_after(60):  # an attach may wait up to 30 s for its owner
                    while True:
                        frame = await conn.recv(timeout=FOREVER)
                        if frame["event"] == "ack" and frame.get("ref") == name:
                            break
                if frame["data"].get("ok"):
                    sent.outcome = "ok"
                else:
                    sent.outcome, sent.code = "failed", frame["data"]["error"]["code"]
            except ConnectionClosed as exc:
                sent.outcome, sent.code = "unanswered", _code(exc)
            except trio.TooSlowError:
                sent.outcome = "pending"
            if not await close_within(conn, 5):
                self.anomalies.append(f"{name}: port {node.port} did not answer our close "
                                      f"frame within 5 s (join {sent.outcome})")
            await trio.sleep(self.interval * (0.5 + self.rng.random()))


async def close_within(conn: Client, seconds: float) -> bool:
    """Close our end; False when the server answered neither with its close frame nor by
    closing the TCP connection in time (then the socket is aborted)."""
    with trio.move_on_after(seconds):
        await conn.aclose()
        return True
    await conn.ws._close_stream()  # give up: abort the TCP connection (private API)
    return False


async def read_until_quiet(p: Participant, quiet: float = 0.5) -> None:
    """Read what the participant's connection still delivers (no reader task running)."""
    assert p.conn is not None
    with trio.move_on_after(quiet):
        while True:
            p.on_frame(await p.conn.recv(timeout=FOREVER))


@dataclass
class Verdict:
    """What really happened, against what every event was answered."""

    counts: dict[str, int] = field(default_factory=dict)
    lies: list[str] = field(default_factory=list)  # answers that disagree with the truth
    delivery: list[str] = field(default_factory=list)  # delivered != what happened
    silent: list[str] = field(default_factory=list)  # late events not acked ok
    unanswered_present: int = 0
    unanswered_absent: int = 0
    late_landings: int = 0  # unanswered events applied after a later event of their sender
    joins: dict[str, int] = field(default_factory=dict)
    after: float | None = None  # events sent later had to be acknowledged ok

    def summary(self) -> str:
        return json.dumps({**self.counts, "joins": self.joins,
                           "unanswered_present": self.unanswered_present,
                           "unanswered_absent": self.unanswered_absent,
                           "late_landings": self.late_landings, "lies": len(self.lies),
                           "delivery_mismatches": len(self.delivery),
                           "silent_drops": len(self.silent)})


async def verify(host: Participant, students: list[Participant], ledger: list[Sent],
                 after: float | None = None, joins: list[Sent] | None = None) -> Verdict:
    """Every participant has resumed and nothing is sent any more: read the host's
    history of each conversation and compare it with every answer and every delivery;
    and the room's students (``steps/table``) with the answers of ``joins``.

    ``after``: events sent after this moment must all be acknowledged ``ok``.
    """
    assert host.conn is not None
    v = Verdict(after=after)
    if joins is not None:
        frames = await host.conn.call("steps/table", {}, timeout=30)
        for frame in frames:
            host.on_frame(frame)
        table = [f for f in frames if f["event"] == "steps/table"][-1]["data"]
        names = Counter(row["name"] for row in table)
        v.joins = dict(Counter(j.outcome for j in joins))
        for j in joins:
            present = names.get(j.content, 0)
            if present > 1 or (j.outcome == "ok" and present != 1) or (
                    j.outcome == "failed" and present):
                v.lies.append(f"room/join answered {j.outcome} {j.code!r} but the student "
                              f"is in the room {present} times: {j}")
            if j.outcome == "pending":
                v.silent.append(f"room/join never answered on an open connection: {j}")
            if after is not None and j.at > after and j.outcome != "ok":
                v.silent.append(f"room/join sent {j.at - after:.1f} s after the grace, "
                                f"answered {j.outcome} {j.code!r}: {j}")
    history: dict[int, list[dict[str, Any]]] = {}
    for st in students:
        uid = st.creds["user_id"]
        frames = await host.conn.call("message/user", {"user_id": uid}, timeout=30)
        for frame in frames:
            host.on_frame(frame)
        assert frames[-1]["data"] == {"ok": True}, frames
        reply = [f for f in frames if f["event"] == "message/user"][-1]
        history[uid] = reply["data"]["messages"]

    sent = [s for s in ledger if s.outcome != "unsent"]
    v.counts = dict(Counter(s.outcome for s in sent))
    v.counts["sent"] = len(sent)
    where: dict[str, list[tuple[int, int]]] = {}  # content -> [(conv, index)]
    for uid, messages in history.items():
        for i, m in enumerate(messages):
            where.setdefault(m["content"], []).append((uid, i))
    ours = {s.content for s in sent}
    for content in where:
        if content not in ours:
            v.lies.append(f"{content!r} is in the history but was never sent")
    by_sender: dict[str, list[Sent]] = {}
    for s in sent:
        by_sender.setdefault(s.who, []).append(s)
        found = where.get(s.content, [])
        in_conv = [i for uid, i in found if uid == s.conv]
        if len(found) != len(in_conv):
            v.lies.append(f"{s} landed in another conversation: {found}")
        if s.outcome == "ok" and len(in_conv) != 1:
            v.lies.append(f"acked ok but present {len(in_conv)} times: {s}")
        elif s.outcome == "failed" and in_conv:
            v.lies.append(f"answered {s.code!r} but present {len(in_conv)} times: {s}")
        elif s.outcome in ("unanswered", "pending"):
            if len(in_conv) > 1:
                v.lies.append(f"unanswered but present {len(in_conv)} times: {s}")
            elif in_conv:
                v.unanswered_present += 1
            else:
                v.unanswered_absent += 1
            if s.outcome == "pending":
                v.silent.append(f"never answered on a connection that stayed open: {s}")
        if after is not None and s.at > after and s.outcome != "ok":
            v.silent.append(f"sent {s.at - after:.1f} s after recovery, answered "
                            f"{s.outcome} {s.code!r}: {s}")
    # Order: within one sender, the history must keep the order of its acked events.
    for who, events in by_sender.items():
        for conv in {s.conv for s in events}:
            positions = [(where[s.content][0][1], s) for s in events if s.conv == conv
                         and s.content in where and len(where[s.content]) == 1]
            _check_order(who, positions, v)
    # Deliveries: each student got exactly the host's messages of its conversation, in
    # order, once; the host got every student's messages, in order, once.
    for st in students:
        uid = st.creds["user_id"]
        expected = [m["content"] for m in history[uid] if m["sender"] == 1]
        received = [m["content"] for m in st.got]
        if received != expected:
            v.delivery.append(f"{st.name} received {_diff(received, expected)}")
        expected = [m["content"] for m in history[uid] if m["sender"] == uid]
        received = [m["content"] for m in host.got if m["sender"] == uid]
        if received != expected:
            v.delivery.append(f"host received from {st.name} {_diff(received, expected)}")
    return v


def _code(exc: ConnectionClosed) -> Any:
    return exc.reason.code if exc.reason is not None else None


def _check_order(who: str, positions: list[tuple[int, Sent]], v: Verdict) -> None:
    for (p1, s1), (p2, s2) in itertools.pairwise(positions):
        if p1 > p2:
            if s1.outcome == "ok" and s2.outcome == "ok":
                v.lies.append(f"{who}: acked events applied out of order: {s1} / {s2}")
            else:
                v.late_landings += 1


def _diff(received: list[str], expected: list[str]) -> str:
    missing = [c for c in expected if c not in received]
    extra = [c for c in received if c not in expected]
    dupes = [c for c, n in Counter(received).items() if n > 1]
    same = [c for c in expected if c in received]
    return (f"{len(received)} messages, expected {len(expected)}: missing {missing[:10]}, "
            f"unexpected {extra[:10]}, duplicated {dupes[:10]}, "
            f"same order: {[c for c in received if c in expected] == same}")
