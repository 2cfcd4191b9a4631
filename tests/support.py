"""Test helpers: real WebSocket clients of a real relay server, shared by every test file.

**Proving that nothing arrived.** Never wait a short wall-clock window and call silence a
proof: on a loaded machine the frame comes after the window and the test passes by
accident. Cause a *sentinel* instead — an event whose answer is known and must come after
anything that was queued for the same connection before it — and check that nothing came
before the answer: :func:`nothing_before_sentinel` (plain, ``/ws`` and raw Socket.IO clients)
and :meth:`SioRecorder.nothing_before_sentinel` (python-socketio).

**Timers.** Idle expiry, heartbeats, rate-limit windows and the like are driven through
Trio's clock: request pytest-trio's ``autojump_clock`` fixture (the in-process relay only
uses loopback sockets, so virtual time jumps exactly when everything waits for a timer) and
``await trio.sleep(...)`` virtual seconds; wait for conditions with :func:`wait_until`.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import datetime
import inspect
import json
import logging
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, Protocol, Self

import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, connect_websocket_url

from relay.config import Config
from relay.server import RelayServer

RECV_TIMEOUT = 3.0

#: A client event that does not exist: every framing answers it at once, to the sender only,
#: with a known error (``unknown_event``; on ``/ws`` ``Unknown message type``), whether the
#: connection is bound or not, so it serves as a sentinel (see ``nothing_before_sentinel``).
SENTINEL_EVENT = "test/sentinel"


class Client:
    """A plain-framing test client over a real WebSocket (also used for ``/ws``)."""

    def __init__(self, ws: WebSocketConnection, *, dialect: str = "observer") -> None:
        self.ws = ws
        #: "observer" (plain JSON framing, §3.1) or "ws" (the signaling dialect, §7): how
        #: ``sentinel`` asks for its answer.
        self.dialect = dialect
        #: Highest seq seen; None until the first sequenced frame (a fresh attach may start
        #: anywhere), after which every seq must follow the previous one.
        self.last_seq: int | None = None
        self._ref = 0
        self._sentinels = 0

    async def send(self, event: str, data: Any = None, ref: Any = None) -> None:
        frame: dict[str, Any] = {"event": event}
        if data is not None:
            frame["data"] = data
        if ref is not None:
            frame["ref"] = ref
        await self.ws.send_message(json.dumps(frame))

    async def send_raw(self, text: str | bytes) -> None:
        await self.ws.send_message(text)

    async def send_json(self, frame: Any) -> None:
        """Send ``frame`` as one JSON text message (e.g. a ``/ws`` message)."""
        await self.ws.send_message(json.dumps(frame))

    async def recv(self, timeout: float = RECV_TIMEOUT) -> dict[str, Any]:
        with trio.fail_after(timeout):
            frame = json.loads(await self.ws.get_message())
        if "seq" in frame:
            if self.last_seq is not None:
                assert frame["seq"] == self.last_seq + 1, f"seq gap: {frame} after {self.last_seq}"
            self.last_seq = frame["seq"]
        return frame

    async def expect(self, event: str, timeout: float = RECV_TIMEOUT) -> dict[str, Any]:
        frame = await self.recv(timeout)
        assert frame["event"] == event, f"expected {event}, got {frame}"
        return frame

    async def call(self, event: str, data: Any = None, timeout: float = RECV_TIMEOUT
                   ) -> list[dict[str, Any]]:
        """Send with a ref; return every frame up to and including its ack."""
        self._ref += 1
        ref = self._ref
        await self.send(event, data, ref)
        frames = []
        while True:
            frame = await self.recv(timeout)
            frames.append(frame)
            if frame["event"] == "ack" and frame.get("ref") == ref:
                return frames

    async def ok(self, event: str, data: Any = None) -> list[dict[str, Any]]:
        """``call`` that must succeed; returns the frames before the ack."""
        frames = await self.call(event, data)
        assert frames[-1]["data"] == {"ok": True}, frames
        return frames[:-1]

    async def fail(self, event: str, data: Any, code: str) -> dict[str, Any]:
        """``call`` that must fail with ``code``; returns the error payload."""
        frames = await self.call(event, data)
        errors = [f for f in frames if f["event"] == "error"]
        assert frames[-1]["data"]["ok"] is False, frames
        assert frames[-1]["data"]["error"]["code"] == code, frames
        assert errors and errors[-1]["data"]["code"] == code, frames
        assert errors[-1]["data"]["event"] == event
        return errors[-1]["data"]

    async def sentinel(self, timeout: float = RECV_TIMEOUT) -> list[dict[str, Any]]:
        """Send a sentinel and return every frame that arrived before its answer.

        The sentinel is ``SENTINEL_EVENT`` with a ref of its own (plain framing: an
        ``unknown_event`` error then the failed ack, both checked exactly; ``/ws``: the
        ``Unknown message type`` error). A connection's frames arrive in the order they
        were queued, and the answer is queued when the sentinel is handled, so the frames
        returned are everything queued for this connection before that: anything that
        earlier events (this connection's, or others' already handled) caused for it.
        """
        self._sentinels += 1
        if self.dialect == "ws":
            await self.send_json({"type": SENTINEL_EVENT})
            answer = {"type": "ERROR", "message": f"Unknown message type: {SENTINEL_EVENT}"}
            before = []
            while (frame := await self.recv(timeout)) != answer:
                before.append(frame)
            return before
        ref = f"sentinel-{self._sentinels}"
        await self.send(SENTINEL_EVENT, ref=ref)
        before = []
        while (frame := await self.recv(timeout)).get("ref") != ref:
            before.append(frame)
        assert frame["event"] == "error" and "seq" not in frame, frame
        assert frame["data"]["code"] == "unknown_event", frame
        assert frame["data"]["event"] == SENTINEL_EVENT, frame
        ack = await self.recv(timeout)
        assert ack == {"event": "ack", "ref": ref, "data": {"ok": False, "error": {
            "code": "unknown_event", "message": frame["data"]["message"]}}}, ack
        return before

    async def nothing_before_sentinel(self) -> None:
        """Nothing more was queued for this connection (see ``sentinel``)."""
        before = await self.sentinel()
        assert before == [], f"unexpected frames before the sentinel: {before}"

    async def silent(self, timeout: float = 0.2) -> None:
        """Assert that nothing arrives for ``timeout`` seconds.

        Do not use this to prove that nothing was sent: a frame that is merely late
        (a loaded machine, a slow writer) arrives after the window and the test passes by
        accident. Use ``nothing_before_sentinel`` instead. Kept only for the files that
        still call it (tests/test_chaos.py, tests/test_cluster.py).
        """
        with trio.move_on_after(timeout):
            frame = await self.ws.get_message()
            raise AssertionError(f"unexpected frame {frame!r}")

    async def closed(self, timeout: float = RECV_TIMEOUT) -> int | None:
        """Wait for the server to close; returns the close code."""
        with trio.fail_after(timeout):
            try:
                while True:
                    await self.ws.get_message()
            except ConnectionClosed as exc:
                return exc.reason.code if exc.reason else None
        return None

    async def aclose(self) -> None:
        await self.ws.aclose()


class Relay:
    """A running server plus client factories."""

    def __init__(self, server: RelayServer, nursery: trio.Nursery) -> None:
        self.server = server
        self.nursery = nursery
        self.url = f"ws://127.0.0.1:{server.relay_port}"
        self.web = f"http://127.0.0.1:{server.web_port}"

    async def client(self, path: str = "/observer", **kw: Any) -> Client:
        ws = await self._open(path, **kw)
        return Client(ws, dialect="ws" if path.split("?")[0] in ("/ws", "/ws/") else "observer")

    async def _open(self, path: str, **kw: Any) -> WebSocketConnection:
        return await connect_websocket_url(self.nursery, self.url + path, **kw)

    async def host(self, name: str = "Teacher") -> tuple[Client, dict[str, Any]]:
        """A connected host of a new room; returns (client, room/created payload)."""
        c = await self.client()
        frames = await c.ok("room/create", {"name": name})
        return c, frames[0]["data"]

    async def student(self, room_id: int, name: str, **extra: Any) -> tuple[Client, dict[str, Any]]:
        c = await self.client()
        frames = await c.ok("room/join", {"room_id": room_id, "name": name, **extra})
        return c, frames[0]["data"]


def make_config(**overrides: Any) -> Config:
    return dataclasses.replace(Config(port=0, http_port=0), **overrides)


StartRelay = Callable[..., Awaitable[Relay]]


class RawClient:
    """A bare WebSocket client on a trio socket, for tests that must control reading.

    trio-websocket reads in the background and answers pings by itself; this one reads
    only when asked, so a test can stop reading (slow consumer) or ignore pings.
    """

    def __init__(self, stream: trio.SocketStream) -> None:
        from wsproto.connection import Connection, ConnectionType

        self.stream = stream
        self.ws = Connection(ConnectionType.CLIENT)
        self.close_code: int | None = None
        self._text: list[str] = []

    @classmethod
    async def connect(cls, port: int, path: str = "/observer", rcvbuf: int | None = None
                      ) -> RawClient:
        import socket as pysocket

        sock = trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_STREAM)
        if rcvbuf is not None:
            sock.setsockopt(pysocket.SOL_SOCKET, pysocket.SO_RCVBUF, rcvbuf)
        await sock.connect(("127.0.0.1", port))
        stream = trio.SocketStream(sock)
        await stream.send_all(
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            "Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n".encode()
        )
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = await stream.receive_some(1)
            assert chunk, "closed during handshake"
            head += chunk
        assert head.startswith(b"HTTP/1.1 101"), head
        return cls(stream)

    async def send(self, event: str, data: Any = None, ref: Any = None) -> None:
        from wsproto.events import TextMessage

        frame: dict[str, Any] = {"event": event, "data": {} if data is None else data}
        if ref is not None:
            frame["ref"] = ref
        await self.stream.send_all(self.ws.send(TextMessage(json.dumps(frame))))

    async def call(self, event: str, data: Any = None, ref: Any = "raw-call",
                   timeout: float = RECV_TIMEOUT) -> list[dict[str, Any]]:
        """Send with ``ref``; every frame up to and including its ack (an event, not a
        window: it returns once the server has handled the event)."""
        await self.send(event, data, ref)
        out: list[dict[str, Any]] = []
        with trio.fail_after(timeout):
            while not out or not (out[-1]["event"] == "ack" and out[-1].get("ref") == ref):
                got = await self.frames(timeout=timeout, count=1)
                assert got, f"no ack of {event} (close code {self.close_code}): {out}"
                out += got
        return out

    async def frames(self, timeout: float = RECV_TIMEOUT, until_closed: bool = False,
                     count: int | None = None) -> list[dict[str, Any]]:
        """Read frames until the close or ``count`` frames (``timeout`` is a failure
        bound then); without either, whatever arrives within ``timeout`` — a window, which
        proves nothing about what did not arrive (see ``nothing_before_sentinel``)."""
        from wsproto.events import CloseConnection, TextMessage

        out: list[dict[str, Any]] = []
        with trio.move_on_after(timeout):
            while True:
                for event in self.ws.events():
                    if isinstance(event, TextMessage):
                        self._text.append(event.data)
                        if event.message_finished:
                            out.append(json.loads("".join(self._text)))
                            self._text = []
                            if count is not None and len(out) >= count:
                                return out
                    elif isinstance(event, CloseConnection):
                        self.close_code = event.code
                        return out
                data = await self.stream.receive_some(65536)
                if not data:
                    return out
                self.ws.receive_data(data)
        if until_closed:
            raise AssertionError("the server did not close the connection")
        return out

    async def aclose(self) -> None:
        await self.stream.aclose()


# -- helpers shared by the event tests ----------------------------------------------

async def classroom_joined(relay: Relay, *names: str
                           ) -> tuple[Client, dict[str, Any], list[tuple[Client, dict[str, Any]]]]:
    """A host and joined students, the host's join updates drained: the host, its
    ``room/created`` data (id, token, key) and each student with its ``room/join`` data."""
    host, room = await relay.host()
    students = []
    for name in names:
        students.append(await relay.student(room["room_id"], name))
        await host.expect("room/update")
    return host, room, students


async def open_classroom(relay: Relay, *names: str
                         ) -> tuple[Client, dict[str, Any], list[Client]]:
    """A host and joined students; the host's ``room/created`` data (id, token, key)."""
    host, room, students = await classroom_joined(relay, *names)
    return host, room, [student for student, _ in students]


async def classroom(relay: Relay, *names: str) -> tuple[Client, int, list[Client]]:
    """A host and joined students; the room id."""
    host, room, students = await open_classroom(relay, *names)
    return host, room["room_id"], students


class Sentinelled(Protocol):
    async def nothing_before_sentinel(self) -> None: ...


async def nothing_before_sentinel(*clients: Sentinelled) -> None:
    """Prove that nothing more reaches ``clients`` from what has happened so far.

    Each client in turn sends a sentinel (``Client.sentinel``, ``SioRaw.sentinel``) and
    must receive nothing before its answer. This covers what an event caused on other
    connections once that event has been handled: it was acknowledged or answered, or it
    was sent by a client listed before (whose sentinel is answered before the next one is
    sent — a connection's events are handled in order). That holds on one node, where an
    event's frames for every connection are queued while it is handled; frames that cross
    nodes (the Redis backplane) may still be on their way.
    """
    for client in clients:
        await client.nothing_before_sentinel()


async def fails(client: Client, event: str, data: Any, code: str) -> dict[str, Any]:
    frames = await client.call(event, data)
    assert [f["event"] for f in frames] == ["error", "ack"], frames
    error, ack = frames
    assert error["data"]["code"] == code, frames
    assert error["data"]["event"] == event
    assert "seq" not in error
    assert ack["data"] == {"ok": False,
                           "error": {"code": code, "message": error["data"]["message"]}}
    return error["data"]


def step(name: str, content: str = "Do it", language: str = "python",
         type: str = "exercise") -> dict[str, Any]:
    """A step of §6.5 (keyword arguments for anything but the name and content)."""
    return {"name": name, "content": content, "language": language, "type": type}


async def publish(host: Client, steps: list[dict[str, Any]], *students: Client
                  ) -> list[dict[str, Any]]:
    """``steps/all`` from the host (no frame of its own); every student gets the same
    published list, which is returned."""
    assert await host.ok("steps/all", steps) == []
    published: list[dict[str, Any]] | None = None
    for s in students:
        got = await s.expect("steps/all")
        published = got["data"] if published is None else published
        assert got["data"] == published
    return published or []


ISO_TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z")


def check_message(msg: Any, *, id: int | None = None, sender: int, receiver: int,
                  content: str) -> None:
    """A Message of §6.2: exactly its keys and these values (``id`` unless None); the
    ``created_at`` is the HH:MM:SS of the ISO ``timestamp``, within 10 s of now."""
    assert isinstance(msg, dict) and set(msg) == {
        "id", "sender", "receiver", "content", "status", "created_at", "timestamp"}, msg
    assert isinstance(msg["id"], int) and (id is None or msg["id"] == id), msg
    assert (msg["sender"], msg["receiver"], msg["content"]) == (sender, receiver, content), msg
    assert msg["status"] is None
    assert ISO_TIMESTAMP.fullmatch(msg["timestamp"]), msg
    assert re.fullmatch(r"\d\d:\d\d:\d\d", msg["created_at"]), msg
    assert msg["created_at"] == msg["timestamp"][11:19]
    when = datetime.datetime.strptime(msg["timestamp"], "%Y-%m-%dT%H:%M:%S.%fZ").replace(
        tzinfo=datetime.UTC)
    assert abs((datetime.datetime.now(datetime.UTC) - when).total_seconds()) < 10, msg


async def wait_until(condition: Callable[[], bool | Awaitable[bool]], timeout: float = 5.0,
                     interval: float = 0.01) -> None:
    """Wait for ``condition`` (a function, sync or async) to hold, checking every
    ``interval`` seconds; fail after ``timeout``. For states the tests cannot be told about
    (a connection gone from the server, a request that reached a fake server)."""
    with trio.fail_after(timeout):
        while True:
            result = condition()
            if inspect.isawaitable(result):
                result = await result
            if result:
                return
            await trio.sleep(interval)


# -- raw Socket.IO over a WebSocket (Trio) ---------------------------------------------------
SIO_PATH = "/socket.io/?EIO=4&transport=websocket"
#: Ack ids of sentinels: far from the small ids that tests write into packets by hand.
SIO_SENTINEL_IDS = 900_000


class SioRaw:
    """Exact Socket.IO v5 packets over a real WebSocket of the in-process relay (no seq on
    this framing). ``recv`` returns every packet, pings (``2``) included, unless told to
    skip them."""

    def __init__(self, ws: WebSocketConnection) -> None:
        self.ws = ws
        self.ack_id = 0
        self._sentinels = 0

    @classmethod
    async def open(cls, relay: Relay, connect: bool = True) -> tuple[SioRaw, dict[str, Any]]:
        """A new session; returns it and the Engine.IO open packet's data. ``connect``
        sends ``40`` and checks the ``40{"sid":…}`` answer."""
        raw = cls(await connect_websocket_url(relay.nursery, relay.url + SIO_PATH))
        first = await raw.recv()
        assert first.startswith("0{"), first
        opened = json.loads(first[1:])
        if connect:
            await raw.send("40")
            answer = await raw.recv(pings=False)
            assert re.fullmatch(r'40\{"sid":"[A-Za-z0-9_-]{20}"\}', answer), answer
        return raw, opened

    async def recv(self, timeout: float = RECV_TIMEOUT, *, pings: bool = True) -> str:
        with trio.fail_after(timeout):
            while True:
                message = await self.ws.get_message()
                assert isinstance(message, str), message
                if pings or message != "2":
                    return message

    async def send(self, message: str | bytes) -> None:
        await self.ws.send_message(message)

    async def event(self) -> list[Any]:
        """The next packet, which must be an event: ``[name, data]``."""
        message = await self.recv()
        assert message.startswith("42["), message
        return list(json.loads(message[2:]))

    async def call(self, event: str, data: Any) -> list[tuple[str, Any]]:
        """Emit with an ack id; (event, data) pairs up to ("ack", result). Pings skipped."""
        self.ack_id += 1
        await self.send(f"42{self.ack_id}" + json.dumps([event, data]))
        out: list[tuple[str, Any]] = []
        while True:
            packet = await self.recv(pings=False)
            if packet.startswith(f"43{self.ack_id}["):
                out.append(("ack", json.loads(packet[len(f"43{self.ack_id}"):])[0]))
                return out
            assert packet.startswith("42["), packet
            name, payload = json.loads(packet[2:])
            out.append((name, payload))

    async def closed(self, timeout: float = RECV_TIMEOUT) -> tuple[int | None, list[str]]:
        """Close code, and the messages that came before it."""
        seen: list[str] = []
        with trio.fail_after(timeout):
            try:
                while True:
                    seen.append(await self.ws.get_message())  # type: ignore[arg-type]
            except ConnectionClosed as exc:
                return (exc.reason.code if exc.reason else None), seen

    async def sentinel(self, timeout: float = RECV_TIMEOUT) -> list[str]:
        """Send ``SENTINEL_EVENT`` with an ack id and return every packet (pings aside)
        that arrived before its answer (``error`` unknown_event, then the failed ack),
        which is checked exactly. A session must be connected (``40``) to be answered."""
        self._sentinels += 1
        ack_id = SIO_SENTINEL_IDS + self._sentinels
        await self.send(f"42{ack_id}" + json.dumps([SENTINEL_EVENT, {}]))
        before: list[str] = []
        while True:
            packet = await self.recv(timeout, pings=False)
            if packet.startswith('42["error",'):
                error = json.loads(packet[2:])[1]
                if error.get("event") == SENTINEL_EVENT:
                    break
            before.append(packet)
        assert error["code"] == "unknown_event", error
        ack = await self.recv(timeout, pings=False)
        assert ack == f"43{ack_id}" + json.dumps(
            [{"ok": False, "error": {"code": "unknown_event", "message": error["message"]}}],
            separators=(",", ":")), ack
        return before

    async def nothing_before_sentinel(self) -> None:
        before = await self.sentinel()
        assert before == [], f"unexpected packets before the sentinel: {before}"


# -- python-socketio (asyncio) against ``python -m relay serve`` -------------------------------
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SIO_TIMEOUT = 4.0
OK = {"ok": True}
SioEvent = tuple[str, Any]


@contextlib.contextmanager
def relay_process(**env_vars: str) -> Iterator[tuple[str, int]]:
    """``python -m relay serve`` on free ports of 127.0.0.1 (``OBSERVER_*`` from
    ``env_vars`` only); yields (host, relay port)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("OBSERVER_")}
    env.update(OBSERVER_HOST="127.0.0.1", OBSERVER_LOG_LEVEL="WARNING")
    env.update(env_vars)
    proc = subprocess.Popen(
        [sys.executable, "-m", "relay", "serve", "--port", "0", "--http-port", "0"],
        stdout=subprocess.PIPE, text=True, env=env, cwd=ROOT,
    )
    try:
        assert proc.stdout is not None
        line = proc.stdout.readline()
        m = re.fullmatch(r"observer-relay relay listening on ws://(127\.0\.0\.1):(\d+)\n", line)
        assert m, line
        assert proc.stdout.readline().startswith("observer-relay web listening on http://")
        yield m.group(1), int(m.group(2))
    finally:
        if proc.stdout is not None:
            proc.stdout.close()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def sio_url(addr: tuple[str, int]) -> str:
    return f"http://{addr[0]}:{addr[1]}"


def run_asyncio(scenario: Callable[[], Awaitable[Any]], timeout: float = 30) -> Any:
    """Run an asyncio scenario (python-socketio, websockets) in its own event loop."""
    async def bounded() -> Any:
        return await asyncio.wait_for(scenario(), timeout)

    return asyncio.run(bounded())


class Recorded:
    """Events received by one client, consumed in order by ``expect`` and ``call``."""

    def __init__(self) -> None:
        self.events: list[SioEvent] = []
        self.cursor = 0

    async def expect(self, *names: str) -> list[Any]:
        """The next ``len(names)`` events, which must have exactly these names; their data."""
        deadline = time.monotonic() + SIO_TIMEOUT
        while len(self.events) < self.cursor + len(names) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        got = self.events[self.cursor:self.cursor + len(names)]
        assert [e for e, _ in got] == list(names), (names, self.events[self.cursor:])
        self.cursor += len(names)
        return [d for _, d in got]

    async def expect_one(self, name: str) -> Any:
        return (await self.expect(name))[0]

    def take(self, end: int) -> list[SioEvent]:
        taken = self.events[self.cursor:end]
        self.cursor = end
        return taken

    async def call(self, event: str, data: Any) -> tuple[Any, list[SioEvent]]:
        """Send with an acknowledgement; the ack and the events received before it."""
        raise NotImplementedError

    async def ok(self, event: str, data: Any) -> list[SioEvent]:
        ack, before = await self.call(event, data)
        assert ack == OK, (event, ack, before)
        return before

    async def fails(self, event: str, data: Any, code: str) -> list[SioEvent]:
        """The event must fail with ``code``: its ``error`` comes last before the failed
        ack; the events before that error."""
        ack, before = await self.call(event, data)
        assert isinstance(ack, dict) and set(ack) == {"ok", "error"}, ack
        assert ack["ok"] is False and set(ack["error"]) == {"code", "message"}, ack
        assert ack["error"]["code"] == code and isinstance(ack["error"]["message"], str), ack
        assert before and before[-1][0] == "error", before
        error = before[-1][1]
        assert set(error) == {"code", "message", "event"}, error
        assert (error["code"], error["event"]) == (code, event), error
        assert isinstance(error["message"], str)
        return before[:-1]

    async def nothing_before_sentinel(self) -> None:
        """Emit ``SENTINEL_EVENT`` with an ack: the only event before its (failed) ack is
        its ``unknown_event`` error, so nothing else was queued for this client before."""
        ack, before = await self.call(SENTINEL_EVENT, {})
        assert ack == {"ok": False, "error": {"code": "unknown_event",
                                              "message": ack["error"]["message"]}}, ack
        assert [e for e, _ in before] == ["error"], f"unexpected events before it: {before}"
        assert before[0][1] == {"code": "unknown_event", "message": ack["error"]["message"],
                                "event": SENTINEL_EVENT}, before


class _PingCounter(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.count = 0

    def emit(self, record: logging.LogRecord) -> None:
        if record.getMessage().startswith("Received packet PING"):
            self.count += 1


class SioRecorder(Recorded):
    """A python-socketio client recording every event, its connects and disconnect reasons,
    and counting the Engine.IO pings it received (through its ``engineio_logger``)."""

    def __init__(self, **kw: Any) -> None:
        import socketio

        super().__init__()
        kw.setdefault("reconnection", False)
        self.pings = _PingCounter()
        eio_log = logging.getLogger(f"tests.engineio.{id(self)}")
        eio_log.setLevel(logging.INFO)
        eio_log.propagate = False
        eio_log.addHandler(self.pings)
        kw.setdefault("engineio_logger", eio_log)
        self.sio = socketio.AsyncClient(**kw)
        self.connects = 0
        self.disconnects: list[Any] = []
        self.sio.on("*", self._any)
        self.sio.on("connect", self._connect)
        self.sio.on("disconnect", self._disconnect)

    async def _any(self, event: str, *args: Any) -> None:
        self.events.append((event, args[0] if args else None))

    async def _connect(self) -> None:
        self.connects += 1

    async def _disconnect(self, reason: Any = None) -> None:
        self.disconnects.append(reason)

    async def connect(self, url: str, transports: list[str] | None = None) -> Self:
        await self.sio.connect(url, transports=transports or ["websocket"],
                               wait_timeout=SIO_TIMEOUT)
        return self

    async def emit(self, event: str, data: Any) -> None:
        await self.sio.emit(event, data)

    async def call(self, event: str, data: Any) -> tuple[Any, list[SioEvent]]:
        """Emit with an ack id; the ack and the events received before it (in order).

        The ack callback notes how many events had been recorded when the ack packet was
        handled, so events arriving after the ack are left for later ``expect`` calls.
        """
        done: asyncio.Future[tuple[Any, int]] = asyncio.get_running_loop().create_future()

        def on_ack(*args: Any) -> None:
            assert len(args) == 1, args
            done.set_result((args[0], len(self.events)))

        await self.sio.emit(event, data, callback=on_ack)
        ack, end = await asyncio.wait_for(done, SIO_TIMEOUT)
        return ack, self.take(end)

    async def disconnected(self) -> None:
        deadline = time.monotonic() + SIO_TIMEOUT
        while self.sio.connected and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert not self.sio.connected

    def will_reconnect(self) -> bool:
        """Whether python-socketio scheduled a reconnection. It reconnects only through the
        task it creates when the connection drops (not after a server ``41``), so once the
        disconnect is seen this says for good whether it ever will — no need to wait for
        its reconnection delays to pass."""
        return self.sio._reconnect_task is not None

    async def wait_pings(self, count: int) -> None:
        """Until the client has received ``count`` Engine.IO pings (and answered them)."""
        deadline = time.monotonic() + SIO_TIMEOUT + count * 2.0
        while self.pings.count < count and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert self.pings.count >= count, self.pings.count
