"""Real Socket.IO clients over Engine.IO long-polling and the upgrade (§3.2).

- python-socketio's ``AsyncClient`` (asyncio) runs in a worker thread with its own event
  loop against the in-process relay of the Trio test, so that a test can also look at the
  relay's sessions (which sid polled, which one upgraded).
- The Node.js ``socket.io-client`` 4 (installed by ``tests/test_socketio_node.py``'s
  fixture, cached between runs) runs a JS script that prints one JSON line per thing its
  sockets see: events in order, acknowledgements, the transport they opened on and every
  upgrade, heartbeats, disconnects and whether the socket would reconnect (``active``).

Each client runs the observer flows with **default options** (polling first, then the
upgrade to WebSocket) and a **whole lesson** with ``transports: ["polling"]``: chat both
ways, a 1.5 MB ``sharing/code_send``, ``steps/all`` and statuses, ``room/kill`` (the
student gets ``room/kicked`` then the ``41``, and does not reconnect) and ``room/close``.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import socketio
import trio

from tests.support import Relay, StartRelay
from tests.test_socketio_node import sio_client_module  # noqa: F401  (a fixture)

OK = {"ok": True}
TIMEOUT = 8.0
BIG_BYTES = 1_500_000
KICKED = {"message": "You were removed from the room by the teacher."}
CLOSED = {"message": "Room closed!"}
STEPS = [{"name": "Hello", "content": "Print hello", "language": "java", "type": "exercise"},
         {"name": "Loops", "content": "Write a loop", "language": "java", "type": "exercise"},
         {"name": "Reading", "content": "Read this", "language": "java", "type": "theory"}]


def big_content() -> str:
    """1.5 MB of UTF-8 (non-ASCII included), the same in the JS script."""
    unit = "abcdefghijklmnopqrstuvwxyz0123456789 é€\n"
    size = len(unit.encode())
    text = unit * (BIG_BYTES // size)
    return text + "x" * (BIG_BYTES - len(text.encode()))


def sha256(text: str) -> str:
    return hashlib.sha256(text.encode()).hexdigest()


# -- python-socketio -----------------------------------------------------------------------
class Recorder:
    """A python-socketio client recording, in order, everything its handlers see."""

    def __init__(self, **kw: Any) -> None:
        self.sio = socketio.AsyncClient(**kw)
        self.log: list[tuple[Any, ...]] = []
        self.consumed: set[int] = set()
        self.pings: list[str] = []
        self.sio.on("*", self._any)
        self.sio.on("connect", self._connect)
        self.sio.on("disconnect", self._disconnect)

    async def _any(self, event: str, *args: Any) -> None:
        self.log.append(("event", event, args[0] if args else None))

    async def _connect(self) -> None:
        self.log.append(("connect", self.sio.transport()))

    async def _disconnect(self, reason: Any = None) -> None:
        self.log.append(("disconnect", reason))

    async def connect(self, url: str, transports: list[str] | None = None) -> Recorder:
        await self.sio.connect(url, transports=transports, wait_timeout=5)
        eio = self.sio.eio
        receive = eio._receive_packet

        async def counting(pkt: Any) -> None:  # count the Engine.IO pings, by transport
            if pkt.packet_type == 2:
                self.pings.append(eio.transport())
            await receive(pkt)

        eio._receive_packet = counting
        return self

    async def call(self, event: str, data: Any) -> Any:
        return await self.sio.call(event, data, timeout=TIMEOUT)

    async def next(self, event: str) -> Any:
        """The data of the first ``event`` not yet returned."""
        deadline = asyncio.get_running_loop().time() + TIMEOUT
        while True:
            for i, entry in enumerate(self.log):
                if i not in self.consumed and entry[0] == "event" and entry[1] == event:
                    self.consumed.add(i)
                    return entry[2]
            assert asyncio.get_running_loop().time() < deadline, (event, self.log)
            await asyncio.sleep(0.01)

    async def disconnected(self) -> Any:
        deadline = asyncio.get_running_loop().time() + TIMEOUT
        while not any(e[0] == "disconnect" for e in self.log):
            assert asyncio.get_running_loop().time() < deadline, self.log
            await asyncio.sleep(0.01)
        return next(e[1] for e in self.log if e[0] == "disconnect")

    def names(self) -> list[str]:
        return [e[1] if e[0] == "event" else e[0] for e in self.log]


async def until(predicate: Callable[[], bool]) -> None:
    deadline = asyncio.get_running_loop().time() + TIMEOUT
    while not predicate():
        assert asyncio.get_running_loop().time() < deadline
        await asyncio.sleep(0.01)


async def in_asyncio(scenario: Callable[[], Awaitable[Any]], timeout: float = 60) -> Any:
    """Run an asyncio scenario in a worker thread (the relay keeps running in Trio)."""

    def run() -> Any:
        return asyncio.run(asyncio.wait_for(scenario(), timeout))

    return await trio.to_thread.run_sync(run)


def http_url(relay: Relay) -> str:
    return f"http://127.0.0.1:{relay.server.relay_port}"


async def test_python_client_default_options(relay: Relay) -> None:
    """Default options: polling first, then the upgrade; the host and student flows."""
    url = http_url(relay)
    polling = relay.server.polling

    async def scenario() -> None:
        host = await Recorder(reconnection=False).connect(url)
        student = await Recorder(reconnection=False).connect(url)
        for client in (host, student):
            # It opened on polling (the relay knew its sid as a polling session) and is
            # on the WebSocket now.
            assert client.sio.transport() == "websocket"
            assert client.sio.eio.sid in polling.upgraded
            assert client.sio.eio.sid not in polling.sessions
        assert await host.call("room/create", {"name": "Teacher"}) == OK
        created = await host.next("room/created")
        room_id = created["room_id"]
        assert host.names() == ["connect", "room/created", "rtc/config", "room/update"]

        assert await student.call("room/join", {"room_id": room_id, "name": "Ann",
                                                "version": "1.2.9"}) == OK
        joined = await student.next("room/join")
        assert student.names() == ["connect", "room/join", "rtc/config", "alerts", "alert"]
        update = await host.next("room/update")
        update = await host.next("room/update")
        assert [u["name"] for u in update["users"]] == ["Teacher", "Ann"]

        assert await student.call("message/to_mentor", {"room_id": room_id,
                                                        "content": "Stuck on task 1"}) == OK
        message = await host.next("message/to_mentor")
        assert (message["sender"], message["content"]) == (joined["user_id"], "Stuck on task 1")
        assert await host.call("message/to_client", {"user_id": joined["user_id"],
                                                     "content": "Try again"}) == OK
        message = await student.next("message/to_client")
        assert (message["sender"], message["content"]) == (1, "Try again")
        failed = await student.call("no/such/event", {})
        assert failed["ok"] is False and failed["error"]["code"] == "unknown_event"
        error = await student.next("error")
        assert error["event"] == "no/such/event"
        assert not [e for e in host.log + student.log if e[0] == "disconnect"]
        await student.sio.disconnect()
        await host.sio.disconnect()

    await in_asyncio(scenario)


async def test_python_client_default_options_survives_heartbeats(start_relay: StartRelay
                                                                 ) -> None:
    relay = await start_relay(sio_ping_interval=0.3, sio_ping_timeout=0.3)
    url = http_url(relay)

    async def scenario() -> None:
        client = await Recorder(reconnection=True, reconnection_delay=0.1).connect(url)
        assert client.sio.transport() == "websocket"
        deadline = asyncio.get_running_loop().time() + 5
        while client.pings.count("websocket") < 4:  # four heartbeats on the WebSocket
            assert asyncio.get_running_loop().time() < deadline, (client.pings, client.log)
            await asyncio.sleep(0.02)
        assert client.log == [("connect", "websocket")] or client.log == [
            ("connect", "polling")], client.log
        await client.sio.disconnect()

    await in_asyncio(scenario)


async def test_python_client_polling_only_lesson(relay: Relay) -> None:
    url = http_url(relay)
    polling = relay.server.polling
    big = big_content()
    assert len(big.encode()) == BIG_BYTES

    async def scenario() -> None:
        only = ["polling"]
        host = await Recorder(reconnection=True, reconnection_delay=0.1).connect(url, only)
        ann = await Recorder(reconnection=True, reconnection_delay=0.1).connect(url, only)
        ben = await Recorder(reconnection=True, reconnection_delay=0.1).connect(url, only)
        for client in (host, ann, ben):
            assert client.sio.transport() == "polling"
            assert client.sio.eio.sid in polling.sessions
        assert await host.call("room/create", {"name": "Teacher"}) == OK
        room_id = (await host.next("room/created"))["room_id"]
        await host.next("room/update")
        ids = {}
        for name, client in (("Ann", ann), ("Ben", ben)):
            assert await client.call("room/join", {"room_id": room_id, "name": name}) == OK
            ids[name] = (await client.next("room/join"))["user_id"]
            await host.next("room/update")

        # Chat both ways.
        for i in range(3):
            assert await ann.call("message/to_mentor", {"room_id": room_id,
                                                        "content": f"question {i}"}) == OK
            assert await host.call("message/to_client", {"user_id": ids["Ann"],
                                                         "content": f"answer {i}"}) == OK
        for i in range(3):
            message = await host.next("message/to_mentor")
            assert (message["sender"], message["content"]) == (ids["Ann"], f"question {i}")
            message = await ann.next("message/to_client")
            assert (message["receiver"], message["content"]) == (ids["Ann"], f"answer {i}")

        # A 1.5 MB code snapshot, POSTed by the student and long-polled by the host.
        assert await host.call("sharing/start", {"user_id": ids["Ann"]}) == OK
        assert await ann.next("sharing/start") == {}
        files = [{"filename": "src/Main.java", "status": "CREATED", "content": big},
                 {"filename": "README.md", "status": "CREATED", "content": "# hi"}]
        assert await ann.call("sharing/code_send", {"room_id": room_id, "files": files}) == OK
        shared = await host.next("sharing/code_send")
        assert (shared["room_id"], shared["user_id"]) == (room_id, ids["Ann"])
        assert [f["filename"] for f in shared["files"]] == ["src/Main.java", "README.md"]
        assert sha256(shared["files"][0]["content"]) == sha256(big)
        assert shared["files"][0] == files[0] and shared["files"][1] == files[1]

        # Steps and statuses.
        assert await host.call("steps/all", STEPS) == OK
        for client in (ann, ben):
            assert await client.next("steps/all") == STEPS
        assert await ann.call("steps/status/to_mentor", {"Hello": "DONE",
                                                         "Loops": "IN_PROGRESS"}) == OK
        status = await host.next("steps/status/to_mentor")
        assert status == {"user_id": ids["Ann"],
                          "steps": {"Hello": "DONE", "Loops": "IN_PROGRESS"}}
        assert await host.call("steps/status/to_client", {
            "user_id": ids["Ann"], "steps": {"Hello": "ACCEPTED"}}) == OK
        accepted = {"type": "SUCCESS", "message": "Task Hello solution accepted!"}
        assert await ann.next("alerts") == accepted
        assert await ann.next("alert") == accepted
        assert await ann.next("steps/status/to_client") == {"Hello": "ACCEPTED"}

        # room/kill: room/kicked, then the 41 (a server disconnect): no reconnection.
        ben_sid = ben.sio.eio.sid
        assert await host.call("room/kill", {"user_id": ids["Ben"]}) == OK
        assert await ben.next("room/kicked") == KICKED
        assert await ben.disconnected() == socketio.AsyncClient.reason.SERVER_DISCONNECT
        assert ben.names()[-2:] == ["room/kicked", "disconnect"], ben.log
        assert ben.sio._reconnect_task is None
        update = await host.next("room/update")
        assert [u["name"] for u in update["users"]] == ["Teacher", "Ann"]
        await until(lambda: ben_sid not in polling.sessions)  # (ends once the 41 is written)

        # room/close: room/closed, then the 41; the host's session stays.
        ann_sid = ann.sio.eio.sid
        assert await host.call("room/close", {"room_id": room_id}) == OK
        assert await ann.next("room/closed") == CLOSED
        assert await ann.disconnected() == socketio.AsyncClient.reason.SERVER_DISCONNECT
        assert ann.names()[-2:] == ["room/closed", "disconnect"], ann.log
        assert ann.sio._reconnect_task is None
        # Sentinel: the host goes on (a new room) on the same polling session; by then
        # neither student has come back.
        assert await host.call("room/create", {"name": "Teacher"}) == OK
        assert (await host.next("room/created"))["room_id"] != room_id
        assert host.sio.transport() == "polling" and host.sio.eio.sid in polling.sessions
        await until(lambda: ann_sid not in polling.sessions)
        assert set(polling.sessions) == {host.sio.eio.sid}
        assert ann.names().count("connect") == ben.names().count("connect") == 1
        for student in (ann, ben):
            await until(lambda s=student: s.sio.eio.state == "disconnected")  # (last requests)
            assert student.sio._reconnect_task is None and not student.sio.connected
        assert not [e for e in host.log if e[0] == "disconnect"]
        await host.sio.disconnect()

    await in_asyncio(scenario)


# -- Node.js socket.io-client 4 ----------------------------------------------------------
SCRIPT = r"""
const crypto = require("crypto");
const { io } = require(process.env.SIO_CLIENT_MODULE);
const [url, mode] = process.argv.slice(2);
const opts = { forceNew: true, reconnectionDelay: 100, reconnectionDelayMax: 200 };
if (mode === "polling") opts.transports = ["polling"];
const out = (line) => process.stdout.write(JSON.stringify(line) + "\n");
const sha = (text) => crypto.createHash("sha256").update(text, "utf8").digest("hex");
setTimeout(() => { out({ fatal: "timeout" }); process.exit(2); }, 40000).unref();

function bigContent() {
  const unit = "abcdefghijklmnopqrstuvwxyz0123456789 é€\n";
  const size = Buffer.byteLength(unit);
  let text = unit.repeat(Math.floor(BIG / size));
  return text + "x".repeat(BIG - Buffer.byteLength(text));
}
const BIG = 1500000;

function open(who) {
  const socket = io(url, opts);
  const seen = [];
  const waiters = [];
  const wake = () => { for (const w of waiters.splice(0)) w(); };
  socket.io.on("open", () => {
    const engine = socket.io.engine;
    out({ who, open: engine.transport.name });
    engine.on("upgrade", (transport) => {
      out({ who, upgrade: transport.name });
      seen.push(["#upgrade"]);
      wake();
    });
  });
  socket.io.on("ping", () => {
    const transport = socket.io.engine.transport.name;
    out({ who, ping: transport });
    seen.push(["#ping", transport]);
    wake();
  });
  socket.onAny((event, ...args) => {
    let data = args.length ? args[0] : null;
    if (event === "sharing/code_send") {
      data = { room_id: data.room_id, user_id: data.user_id,
               files: data.files.map((f) => ({ filename: f.filename, status: f.status,
                 sha: sha(f.content), bytes: Buffer.byteLength(f.content) })) };
    }
    out({ who, event, data, extra: args.length > 1 });
    seen.push([event, args[0]]);
    wake();
  });
  socket.on("connect", () => out({ who, connect: socket.io.engine.transport.name }));
  socket.on("disconnect", (reason) => {
    out({ who, disconnect: reason });
    seen.push(["#disconnect", reason]);
    wake();
  });
  socket.on("connect_error", (err) => out({ who, connect_error: String(err) }));
  let cursor = 0;
  socket.next = async (event) => {
    for (;;) {
      for (; cursor < seen.length; cursor++) {
        if (seen[cursor][0] === event) return seen[cursor++][1];
      }
      await new Promise((resolve) => waiters.push(resolve));
    }
  };
  socket.count = async (event, n, match = () => true) => {
    for (;;) {
      if (seen.filter((s) => s[0] === event && match(s[1])).length >= n) return;
      await new Promise((resolve) => waiters.push(resolve));
    }
  };
  socket.call = (event, data) => new Promise((resolve, reject) => {
    socket.timeout(10000).emit(event, data, (err, result) => {
      if (err) return reject(err);
      out({ who, ack: event, result });
      resolve(result);
    });
  });
  return new Promise((resolve) => socket.once("connect", () => resolve(socket)));
}

async function flows() {
  const host = await open("host");
  await host.call("room/create", { name: "Teacher" });
  const roomId = (await host.next("room/created")).room_id;
  const student = await open("student");
  await student.call("room/join", { room_id: roomId, name: "Ann", version: "1.2.9" });
  const userId = (await student.next("room/join")).user_id;
  await host.next("room/update");
  await host.next("room/update");
  await student.call("message/to_mentor", { room_id: roomId, content: "Hi from node" });
  await host.next("message/to_mentor");
  await host.call("message/to_client", { user_id: userId, room_id: roomId, content: "Hello back" });
  await student.next("message/to_client");
  await student.call("no/such/event", {});
  // both sockets upgraded by now (or this waits for it)
  await host.count("#upgrade", 1);
  await student.count("#upgrade", 1);
  await student.call("message/to_mentor", { room_id: roomId, content: "after the upgrade" });
  await host.next("message/to_mentor");
  out({ final: { host: host.io.engine.transport.name,
                 student: student.io.engine.transport.name } });
  host.disconnect(); student.disconnect();
}

async function heartbeat() {
  const socket = await open("solo");
  await socket.count("#upgrade", 1);
  // Four heartbeats on the WebSocket; a disconnect meanwhile is printed (and fails the test).
  const dropped = socket.next("#disconnect").then((reason) => {
    throw new Error(`disconnected (${reason}) instead of four heartbeats on the WebSocket`);
  });
  await Promise.race([socket.count("#ping", 4, (transport) => transport === "websocket"),
                      dropped]);
  out({ final: { connected: socket.connected, transport: socket.io.engine.transport.name } });
  socket.disconnect();
}

async function lesson() {
  const big = bigContent();
  const host = await open("host");
  await host.call("room/create", { name: "Teacher" });
  const roomId = (await host.next("room/created")).room_id;
  await host.next("room/update");
  const ann = await open("ann");
  await ann.call("room/join", { room_id: roomId, name: "Ann" });
  const annId = (await ann.next("room/join")).user_id;
  await host.next("room/update");
  const ben = await open("ben");
  await ben.call("room/join", { room_id: roomId, name: "Ben" });
  const benId = (await ben.next("room/join")).user_id;
  await host.next("room/update");

  for (let i = 0; i < 3; i++) {
    await ann.call("message/to_mentor", { room_id: roomId, content: `question ${i}` });
    await host.call("message/to_client", { user_id: annId, content: `answer ${i}` });
  }
  for (let i = 0; i < 3; i++) {
    await host.next("message/to_mentor");
    await ann.next("message/to_client");
  }

  await host.call("sharing/start", { user_id: annId });
  await ann.next("sharing/start");
  await ann.call("sharing/code_send", { room_id: roomId, files: [
    { filename: "src/Main.java", status: "CREATED", content: big },
    { filename: "README.md", status: "CREATED", content: "# hi" }] });
  const shared = await host.next("sharing/code_send");
  out({ who: "host", big: { sent: sha(big), received: sha(shared.files[0].content),
                            bytes: Buffer.byteLength(shared.files[0].content) } });

  await host.call("steps/all", STEPS);
  await ann.next("steps/all");
  await ben.next("steps/all");
  await ann.call("steps/status/to_mentor", { Hello: "DONE", Loops: "IN_PROGRESS" });
  await host.next("steps/status/to_mentor");
  await host.call("steps/status/to_client", { user_id: annId, steps: { Hello: "ACCEPTED" } });
  await ann.next("steps/status/to_client");

  await host.call("room/kill", { user_id: benId });
  await ben.next("room/kicked");
  await ben.next("#disconnect");
  await host.next("room/update");

  await host.call("room/close", { room_id: roomId });
  await ann.next("room/closed");
  await ann.next("#disconnect");
  // Sentinel: the host goes on with a new room; the students have not come back.
  await host.call("room/create", { name: "Teacher" });
  await host.next("room/created");
  out({ final: {
    host: { connected: host.connected, active: host.active,
            transport: host.io.engine.transport.name },
    ann: { connected: ann.connected, active: ann.active },
    ben: { connected: ben.connected, active: ben.active },
  } });
  host.disconnect();
  process.exit(0);
}

const STEPS = JSON.parse(process.env.STEPS);
const run = { flows, heartbeat, lesson }[process.argv[4]];
run().then(() => setTimeout(() => process.exit(0), 50))
  .catch((err) => { out({ fatal: String((err && err.stack) || err) }); process.exit(1); });
"""


async def run_node_script(relay: Relay, module: Path, tmp_path: Path, mode: str,
                          scenario: str) -> list[dict[str, Any]]:
    script = tmp_path / "polling.js"
    script.write_text(SCRIPT)
    env = dict(os.environ, SIO_CLIENT_MODULE=str(module), STEPS=json.dumps(STEPS))
    with trio.fail_after(50):
        proc = await trio.run_process(["node", str(script), http_url(relay), mode, scenario],
                                      capture_stdout=True, capture_stderr=True, check=False,
                                      env=env)
    lines = [json.loads(line) for line in proc.stdout.decode().splitlines()]
    if os.environ.get("POLLING_DEBUG"):
        print(json.dumps(lines, indent=None)[-6000:], proc.stderr.decode()[-3000:])
    assert proc.returncode == 0, (lines[-20:], proc.stderr.decode()[-3000:])
    assert not [line for line in lines if "fatal" in line or "connect_error" in line], lines
    return lines


def seen_by(lines: list[dict[str, Any]], who: str) -> list[tuple[Any, ...]]:
    """What ``who`` saw, in order (pings left out)."""
    seen: list[tuple[Any, ...]] = []
    for line in lines:
        if line.get("who") != who or "ping" in line:
            continue
        if "event" in line:
            assert line["extra"] is False, line  # one argument per server event
            seen.append((line["event"], line["data"]))
        elif "ack" in line:
            seen.append(("ack", line["ack"], line["result"]))
        elif "disconnect" in line:
            if line["disconnect"] != "io client disconnect":  # (the script's own, at the end)
                seen.append(("disconnect", line["disconnect"]))
        elif "open" in line:
            seen.append(("open", line["open"]))
        elif "upgrade" in line:
            seen.append(("upgrade", line["upgrade"]))
        elif "connect" in line:
            seen.append(("connect", line["connect"]))
        elif "big" in line:
            seen.append(("big", line["big"]))
    return seen


def final_of(lines: list[dict[str, Any]]) -> Any:
    finals = [line["final"] for line in lines if "final" in line]
    assert len(finals) == 1, lines[-10:]
    return finals[0]


def without(seen: list[tuple[Any, ...]], *kinds: str) -> list[tuple[Any, ...]]:
    return [s for s in seen if s[0] not in kinds]


async def test_node_client_default_options(relay: Relay, sio_client_module: Path,  # noqa: F811
                                           tmp_path: Path) -> None:
    lines = await run_node_script(relay, sio_client_module, tmp_path, "default", "flows")
    for who in ("host", "student"):
        seen = seen_by(lines, who)
        # Opened on polling, upgraded to the WebSocket exactly once.
        assert seen[0] == ("open", "polling"), seen
        assert [s for s in seen if s[0] == "upgrade"] == [("upgrade", "websocket")], seen
        assert not [s for s in seen if s[0] == "disconnect"], seen
    assert final_of(lines) == {"host": "websocket", "student": "websocket"}

    host = without(seen_by(lines, "host"), "open", "upgrade", "connect")
    student = without(seen_by(lines, "student"), "open", "upgrade", "connect")
    assert [h[0] for h in host[:4]] == ["room/created", "rtc/config", "room/update", "ack"]
    room_id = host[0][1]["room_id"]
    assert [s[0] for s in student[:5]] == ["room/join", "rtc/config", "alerts", "alert", "ack"]
    assert student[0][1]["room_id"] == room_id and student[4] == ("ack", "room/join", OK)
    assert host[4][0] == "room/update"
    assert [(u["name"], u["status"]) for u in host[4][1]["users"]] == [
        ("Teacher", "online"), ("Ann", "online")]
    assert student[5] == ("ack", "message/to_mentor", OK)
    assert host[5][0] == "message/to_mentor" and host[5][1]["content"] == "Hi from node"
    assert host[6] == ("ack", "message/to_client", OK)
    assert student[6][0] == "message/to_client" and student[6][1]["content"] == "Hello back"
    assert student[7][0] == "error" and student[7][1]["code"] == "unknown_event"
    assert student[8][:2] == ("ack", "no/such/event") and student[8][2]["ok"] is False
    assert student[9] == ("ack", "message/to_mentor", OK)
    assert host[7][0] == "message/to_mentor" and host[7][1]["content"] == "after the upgrade"
    assert len(host) == 8 and len(student) == 10, (host, student)


async def test_node_client_default_options_survives_heartbeats(
        start_relay: StartRelay, sio_client_module: Path, tmp_path: Path) -> None:  # noqa: F811
    relay = await start_relay(sio_ping_interval=0.3, sio_ping_timeout=0.3)
    lines = await run_node_script(relay, sio_client_module, tmp_path, "default", "heartbeat")
    seen = seen_by(lines, "solo")
    assert ("upgrade", "websocket") in seen
    assert not [s for s in seen if s[0] == "disconnect"], seen
    pings = [line["ping"] for line in lines if "ping" in line]
    assert pings.count("websocket") >= 3, pings


async def test_node_client_polling_only_lesson(relay: Relay, sio_client_module: Path,  # noqa: F811
                                               tmp_path: Path) -> None:
    lines = await run_node_script(relay, sio_client_module, tmp_path, "polling", "lesson")
    for who in ("host", "ann", "ben"):
        seen = seen_by(lines, who)
        assert seen[0] == ("open", "polling") and seen[1] == ("connect", "polling"), seen
        assert not [s for s in seen if s[0] == "upgrade"], seen
    final = final_of(lines)
    assert final == {"host": {"connected": True, "active": True, "transport": "polling"},
                     "ann": {"connected": False, "active": False},
                     "ben": {"connected": False, "active": False}}

    host = without(seen_by(lines, "host"), "open", "connect")
    ann = without(seen_by(lines, "ann"), "open", "connect")
    ben = without(seen_by(lines, "ben"), "open", "connect")
    big = next(h[1] for h in host if h[0] == "big")
    assert big["sent"] == big["received"] == sha256(big_content()) and big["bytes"] == BIG_BYTES
    shared = next(h[1] for h in host if h[0] == "sharing/code_send")
    assert [(f["filename"], f["bytes"]) for f in shared["files"]] == [
        ("src/Main.java", BIG_BYTES), ("README.md", 4)]

    names = [a[0] if a[0] != "ack" else f"ack {a[1]}" for a in ann]
    assert names == (
        ["room/join", "rtc/config", "ack room/join"]
        + ["ack message/to_mentor", "message/to_client"] * 3
        + ["sharing/start", "ack sharing/code_send", "steps/all", "ack steps/status/to_mentor",
           "alerts", "alert", "steps/status/to_client", "room/closed",
           "disconnect"]), ann
    assert [a[1]["content"] for a in ann if a[0] == "message/to_client"] == [
        f"answer {i}" for i in range(3)]
    assert ann[-2:] == [("room/closed", CLOSED), ("disconnect", "io server disconnect")]
    assert next(a[1] for a in ann if a[0] == "steps/all") == STEPS
    assert next(a[1] for a in ann if a[0] == "steps/status/to_client") == {"Hello": "ACCEPTED"}

    assert [b[0] for b in ben] == ["room/join", "rtc/config", "ack", "steps/all", "room/kicked",
                                   "disconnect"], ben
    assert ben[-2:] == [("room/kicked", KICKED), ("disconnect", "io server disconnect")]

    mentor = [h[1]["content"] for h in host if h[0] == "message/to_mentor"]
    assert mentor == [f"question {i}" for i in range(3)]
    status = next(h[1] for h in host if h[0] == "steps/status/to_mentor")
    assert status["steps"] == {"Hello": "DONE", "Loops": "IN_PROGRESS"}
    killed = host.index(("ack", "room/kill", OK))
    update = host[killed - 1]  # the room/update of the kill precedes its acknowledgement
    assert update[0] == "room/update", host[killed - 3:]
    assert [u["name"] for u in update[1]["users"]] == ["Teacher", "Ann"], update
    assert not [h for h in host if h[0] == "disconnect"]
    for who in ("ann", "ben"):
        assert [line for line in lines if line.get("who") == who and "connect" in line] == [
            {"who": who, "connect": "polling"}]
