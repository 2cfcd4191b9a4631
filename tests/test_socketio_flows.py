"""The seed clients' flows over Socket.IO (§3.2, §4.4, §6, Appendix B), driven by python-socketio.

``observer_front`` (the teacher UI) and ``observer_java`` (the IntelliJ plugin 1.2.9) are
emulated with python-socketio's ``AsyncClient(transports=['websocket'])``, sending the payloads
those clients send; the plain framing (§3.1) is spoken with the ``websockets`` library. Both
are asyncio clients, so every test is a synchronous function running its own event loop
against ``python -m relay serve`` in a subprocess, one with legacy tokenless mode (§4.4) on and
one with it off. A plugin's network drop goes through a small TCP proxy on 127.0.0.1 that
resets both legs of every connection at once, with no WebSocket close handshake.

Each client records every event it receives; ``expect`` consumes the next recorded events and
checks their names in order, and ``call`` returns the events that arrived between the previous
consumption and the acknowledgement, so every frame a client receives is accounted for. A host
``call`` works as a barrier: events the server enqueued for the host earlier (because of a
student event already acknowledged) arrive before the answer to the host's later event.
"Nothing more arrived" is shown the same way, by a sentinel call (``nothing_before_sentinel``),
and "it does not reconnect" by python-socketio having scheduled no reconnection
(``will_reconnect``), never by waiting a while.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
from collections.abc import Iterator
from typing import Any

import pytest
import socketio
from websockets.asyncio.client import ClientConnection
from websockets.asyncio.client import connect as ws_connect
from websockets.exceptions import ConnectionClosed

from tests.support import (
    OK,
    Recorded,
    SioRecorder,
    check_message,
    relay_process,
    run_asyncio,
    sio_url,
)
from tests.support import SIO_TIMEOUT as TIMEOUT
from tests.support import SioEvent as Event

NEWEST = "1.2.15"
OUTDATED = ("You have an outdated version of the plugin. Please install the latest version "
            + NEWEST)
TOKEN = re.compile(r"[A-Za-z0-9_-]{22}")
REASON = socketio.AsyncClient.reason
#: v2 rules that depend on the framing of a participant's connection (§4.5 the plugin's
#: restart, §6.1 the Socket.IO shape of room/update): the core decides them from
#: ``Session.framing``, which the shell sets when it creates a session. Until it does,
#: these tests fail; strict, so that they show up the moment it does (then drop the mark).

# -- server processes ---------------------------------------------------------------------------
@pytest.fixture(scope="module")
def legacy_server() -> Iterator[tuple[str, int]]:
    with relay_process(OBSERVER_LEGACY_TOKENLESS="1", OBSERVER_PLUGIN_VERSION=NEWEST) as addr:
        yield addr


@pytest.fixture(scope="module")
def strict_server() -> Iterator[tuple[str, int]]:
    with relay_process(OBSERVER_LEGACY_TOKENLESS="0", OBSERVER_PLUGIN_VERSION=NEWEST) as addr:
        yield addr


# -- clients -----------------------------------------------------------------------------------
Sio = SioRecorder


class Plugin(Sio):
    """observer_java 1.2.9: on every ``connect`` (the first and each automatic reconnect) it
    emits ``room/join`` with its room id, its name and its version, without an ack."""

    def __init__(self, room_id: int, name: str, **kw: Any) -> None:
        kw.setdefault("reconnection", True)
        kw.setdefault("reconnection_delay", 0.1)
        kw.setdefault("reconnection_delay_max", 0.2)
        kw.setdefault("randomization_factor", 0)
        super().__init__(**kw)
        self.join = {"room_id": room_id, "name": name, "version": "1.2.9"}

    async def _connect(self) -> None:
        await super()._connect()
        await self.sio.emit("room/join", dict(self.join))


class Plain(Recorded):
    """A plain-framing (§3.1) client on ``/observer`` over the ``websockets`` library."""

    def __init__(self, ws: ClientConnection) -> None:
        super().__init__()
        self.ws = ws
        self.seqs: list[int | None] = []  # the seq of each recorded event, None if absent
        self.acks: dict[int, tuple[Any, int]] = {}
        self.close_code: int | None = None
        self._ref = 0
        self._reader = asyncio.ensure_future(self._read())

    @classmethod
    async def open(cls, addr: tuple[str, int]) -> Plain:
        ws = await ws_connect(f"ws://{addr[0]}:{addr[1]}/observer", open_timeout=TIMEOUT)
        return cls(ws)

    async def _read(self) -> None:
        try:
            async for message in self.ws:
                frame = json.loads(message)
                assert set(frame) <= {"event", "data", "seq", "ref"}, frame
                if frame["event"] == "ack":
                    self.acks[frame["ref"]] = (frame["data"], len(self.events))
                else:
                    self.events.append((frame["event"], frame["data"]))
                    self.seqs.append(frame.get("seq"))
        except ConnectionClosed:
            pass
        self.close_code = self.ws.close_code

    def seq_of(self, index: int) -> int | None:
        return self.seqs[index]

    async def emit(self, event: str, data: Any) -> None:
        await self.ws.send(json.dumps({"event": event, "data": data}))

    async def call(self, event: str, data: Any) -> tuple[Any, list[Event]]:
        self._ref += 1
        ref = self._ref
        await self.ws.send(json.dumps({"event": event, "data": data, "ref": ref}))
        deadline = time.monotonic() + TIMEOUT
        while ref not in self.acks and time.monotonic() < deadline:
            await asyncio.sleep(0.01)
        assert ref in self.acks, (event, self.events[self.cursor:])
        ack, end = self.acks[ref]
        return ack, self.take(end)

    async def closed(self) -> int | None:
        await asyncio.wait_for(self._reader, TIMEOUT)
        return self.close_code


class DropProxy:
    """A TCP proxy on 127.0.0.1 whose ``drop`` resets every connection, like a network loss.

    While it is down it resets new connections at once, so a reconnecting client keeps
    retrying until ``restore``.
    """

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.up = True
        self.transports: list[asyncio.BaseTransport] = []
        self.tasks: set[asyncio.Task[None]] = set()
        self.server: asyncio.Server | None = None
        self.port = 0

    async def start(self) -> DropProxy:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self.server.sockets[0].getsockname()[1]
        return self

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self.up:
            writer.transport.abort()
            return
        up_reader, up_writer = await asyncio.open_connection(*self.target)
        self.transports += [writer.transport, up_writer.transport]
        for src, dst in ((reader, up_writer), (up_reader, writer)):
            task = asyncio.ensure_future(self._pipe(src, dst))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)

    @staticmethod
    async def _pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
        with contextlib.suppress(ConnectionError, OSError):
            while chunk := await src.read(65536):
                dst.write(chunk)
                await dst.drain()
        dst.transport.abort()

    def drop(self) -> None:
        self.up = False
        for transport in self.transports:
            transport.abort()
        self.transports.clear()

    def restore(self) -> None:
        self.up = True

    async def aclose(self) -> None:
        self.drop()
        assert self.server is not None
        self.server.close()
        for task in list(self.tasks):
            task.cancel()


# -- checks ------------------------------------------------------------------------------------
def check_failed_ack(ack: Any, code: str) -> None:
    assert isinstance(ack, dict) and set(ack) == {"ok", "error"}, ack
    assert ack["ok"] is False and set(ack["error"]) == {"code", "message"}, ack
    assert ack["error"]["code"] == code and isinstance(ack["error"]["message"], str), ack


def check_error(data: Any, code: str, event: str | None) -> None:
    assert set(data) == {"code", "message", "event"}, data
    assert (data["code"], data["event"]) == (code, event), data
    assert isinstance(data["message"], str)


def host_entry(name: str) -> dict[str, Any]:
    return {"id": 1, "name": name, "role": "host", "status": "online", "steps": {},
            "signal": None}


def student_entry(uid: int, name: str, status: str = "online",
                  steps: dict[str, str] | None = None, signal: str = "NONE") -> dict[str, Any]:
    return {"id": uid, "name": name, "role": "client", "status": status, "steps": steps or {},
            "signal": signal}


def room_update(room_id: int, *users: dict[str, Any]) -> dict[str, Any]:
    return {"id": room_id, "host": 1, "users": list(users)}


def check_rtc_config(data: Any, polite: bool) -> None:
    assert isinstance(data, dict) and data["polite"] is polite, data
    assert isinstance(data["ice_servers"], list) and isinstance(data["ttl"], int), data


def names(events: list[Event]) -> list[str]:
    return [e for e, _ in events]


async def create_room(host: Sio | Plain, name: str) -> dict[str, Any]:
    before = await host.ok("room/create", {"name": name})
    assert names(before) == ["room/created", "rtc/config", "room/update"], before
    created = before[0][1]
    assert set(created) == {"room_id", "user_id", "token", "stats_key"}, created
    assert created["user_id"] == 1 and 10_000_000 <= created["room_id"] <= 99_999_999
    assert TOKEN.fullmatch(created["token"]) and TOKEN.fullmatch(created["stats_key"])
    check_rtc_config(before[1][1], polite=False)
    assert before[2][1] == room_update(created["room_id"], host_entry(name))
    return created


def alert(kind: str, message: str) -> dict[str, str]:
    return {"type": kind, "message": message}


# The teacher UI's task editor: slots 1-8 and "theory", HTML, in the shape observer_front sends;
# unvisited slots are not sent, visited slots left empty are sent with content "".
FRONT_STEPS: list[dict[str, str]] = [
    {"name": "1", "content": "<p>Print <b>hello</b></p>", "type": "exercise", "language": "html"},
    {"name": "2", "content": "<p>Sum a list</p>", "type": "exercise", "language": "html"},
    {"name": "3", "content": "", "type": "exercise", "language": "html"},
    {"name": "4", "content": "<p>Reverse a string</p>", "type": "exercise", "language": "html"},
    {"name": "5", "content": "", "type": "exercise", "language": "html"},
    {"name": "6", "content": "   ", "type": "exercise", "language": "html"},
    {"name": "7", "content": "", "type": "exercise", "language": "html"},
    {"name": "8", "content": "", "type": "exercise", "language": "html"},
    {"name": "theory", "content": "<h1>Loops</h1>", "type": "theory", "language": "html"},
]
PUBLISHED = [s for s in FRONT_STEPS if s["content"].strip()]
JAVA_STEPS = [
    {"name": "1", "content": "<p>Hello, World</p>", "type": "exercise", "language": "html"},
    {"name": "2", "content": "<p>FizzBuzz</p>", "type": "exercise", "language": "html"},
]


# -- observer_front ----------------------------------------------------------------------------
def test_observer_front_flow(legacy_server: tuple[str, int]) -> None:
    url = sio_url(legacy_server)

    async def scenario() -> None:
        tab = await Sio().connect(url)
        created = await create_room(tab, "Host")  # the UI always sends {name: "Host"}
        room_id = created["room_id"]

        student = await Sio().connect(url)
        before = await student.ok("room/join", {"room_id": room_id, "name": "Ann",
                                                "version": NEWEST})
        assert names(before) == ["room/join", "rtc/config"]  # up to date: no alerts
        ann = before[0][1]
        assert ann == {"room_id": room_id, "user_id": 2, "token": ann["token"]}
        check_rtc_config(before[1][1], polite=True)
        assert await tab.expect_one("room/update") == room_update(
            room_id, host_entry("Host"), student_entry(2, "Ann"))
        await student.emit("message/to_mentor", {"room_id": room_id, "content": "Task 1?"})
        question = await tab.expect_one("message/to_mentor")
        check_message(question, sender=2, receiver=1, content="Task 1?")

        # A page reload: the socket goes, and the new page rehosts without a token (§4.4).
        await tab.sio.disconnect()
        assert tab.disconnects == [REASON.CLIENT_DISCONNECT]
        assert await student.expect_one("message") == {"message": "The teacher is offline!"}
        # Legacy mode re-attaches offline *students* by name only; a present token must match.
        intruder = await Sio().connect(url)
        before = await intruder.fails("room/join", {"room_id": room_id, "name": "host"},
                                      "name_taken")
        assert names(before) == ["alerts", "alert"] and before[0][1] == before[1][1], before
        assert before[0][1]["type"] == "ERROR"
        assert before[0][1]["message"].lower() == f"username host is already used in room " \
                                                  f"{room_id}!"
        assert await intruder.fails("room/rehost", {"room_id": room_id, "user_id": 1,
                                                    "token": "A" * 22}, "bad_token") == []
        assert await intruder.fails("room/rehost", {"room_id": room_id, "user_id": 2},
                                    "forbidden") == []
        await intruder.sio.disconnect()
        host = await Sio(reconnection=True, reconnection_delay=0.1).connect(url)
        before = await host.ok("room/rehost", {"room_id": room_id, "user_id": 1})
        assert names(before) == ["rtc/config", "room/update", "message/user"], before
        check_rtc_config(before[0][1], polite=False)
        assert before[1][1] == room_update(room_id, host_entry("Host"), student_entry(2, "Ann"))
        assert before[2][1] == {"user_id": 2, "messages": [question]}
        assert await student.expect_one("message") == {"message": "The teacher reconnected!"}

        # Selecting the student: message/user, sharing/start and steps/table go together.
        before = await host.ok("message/to_client", {"user_id": 2, "room_id": room_id,
                                                     "content": "Look at line 3"})
        assert before == []  # no echo
        answer = await student.expect_one("message/to_client")
        check_message(answer, sender=1, receiver=2, content="Look at line 3")
        assert answer["id"] > question["id"]
        assert await host.ok("message/user", {"user_id": 2}) == [
            ("message/user", {"user_id": 2, "messages": [question, answer]})]
        assert await host.ok("sharing/start", {"user_id": 2, "room_id": room_id}) == []
        assert await student.expect_one("sharing/start") == {}
        files = [{"filename": "main.py", "status": "CREATED", "content": "print('hi')\n"}]
        await student.emit("sharing/code_send", {"room_id": room_id, "files": files})
        assert await host.expect_one("sharing/code_send") == {
            "room_id": room_id, "user_id": 2, "files": files}

        # The task editor publishes 1-8 + theory; empty slots are dropped silently.
        assert await host.ok("steps/all", FRONT_STEPS) == []
        assert await student.expect_one("steps/all") == PUBLISHED
        statuses = {"1": "DONE", "2": "DONE", "4": "IN_PROGRESS", "theory": "NONE"}
        assert await student.ok("steps/status/to_mentor", statuses) == []
        assert await host.expect_one("steps/status/to_mentor") == {"user_id": 2,
                                                                   "steps": statuses}

        # The UI sends one step per steps/status/to_client.
        assert await host.ok("steps/status/to_client", {"user_id": 2,
                                                        "steps": {"1": "ACCEPTED"}}) == []
        accepted = alert("SUCCESS", "Task 1 solution accepted!")
        assert await student.expect("alerts", "alert", "steps/status/to_client") == [
            accepted, accepted, {"1": "ACCEPTED"}]
        assert await host.ok("steps/status/to_client", {"user_id": 2,
                                                        "steps": {"2": "NONE"}}) == []
        declined = alert("WARNING", "Task 2 solution declined!")
        assert await student.expect("alerts", "alert", "steps/status/to_client") == [
            declined, declined, {"2": "NONE"}]
        assert await host.ok("steps/table", {}) == [("steps/table", [
            {"user_id": 2, "name": "Ann", "status": "online",
             "steps": {"1": "ACCEPTED", "2": "NONE", "4": "IN_PROGRESS", "theory": "NONE"}}])]

        # A second tab rehosts while the first is still online: the first is replaced (41, so
        # it does not reconnect), presence does not change, and the fresh rehost ends sharing.
        old_tab, host = host, await Sio(reconnection=True, reconnection_delay=0.1).connect(url)
        before = await host.ok("room/rehost", {"room_id": room_id, "user_id": 1})
        assert names(before) == ["rtc/config", "steps/load", "room/update", "message/user"]
        assert before[1][1] == PUBLISHED
        assert before[2][1] == room_update(room_id, host_entry("Host"), student_entry(
            2, "Ann", steps={"1": "ACCEPTED", "2": "NONE", "4": "IN_PROGRESS",
                             "theory": "NONE"}))
        assert before[3][1] == {"user_id": 2, "messages": [question, answer]}
        await old_tab.disconnected()
        assert old_tab.disconnects == [REASON.SERVER_DISCONNECT]
        assert await student.expect_one("sharing/end") == {}
        assert await student.ok("steps/status/to_mentor", {}) == []  # nothing else came
        # The replaced tab got its 41 first: no reconnection scheduled, nothing after it.
        assert not old_tab.will_reconnect()
        assert old_tab.connects == 1 and old_tab.events[old_tab.cursor:] == []

        # Closing: the student hears room/closed and does not reconnect (41 came first).
        # v2 (§6.1): the teacher's socket stays open, unbound, and creates the next room
        # without a page reload.
        assert await host.ok("room/close", {"room_id": room_id}) == []
        assert await student.expect_one("room/closed") == {"message": "Room closed!"}
        await student.disconnected()
        assert not student.will_reconnect()  # the 41 came first
        assert not student.sio.connected and student.connects == 1
        assert student.disconnects == [REASON.SERVER_DISCONNECT]
        assert student.events[student.cursor:] == []
        await host.nothing_before_sentinel()
        assert host.sio.connected and host.connects == 1 and host.disconnects == []
        assert await host.fails("steps/table", {}, "not_in_room") == []
        second = await create_room(host, "Host")
        assert second["room_id"] != room_id
        assert await host.ok("room/close", {"room_id": second["room_id"]}) == []
        assert host.sio.connected

    run_asyncio(scenario)


# -- observer_java -----------------------------------------------------------------------------
def test_observer_java_flow(strict_server: tuple[str, int]) -> None:
    url = sio_url(strict_server)

    async def scenario() -> None:
        host = await Sio().connect(url)
        room_id = (await create_room(host, "Teacher"))["room_id"]
        assert await host.ok("steps/all", JAVA_STEPS) == []

        plugin = await Plugin(room_id, "Bob").connect(url)
        joined, rtc, steps, alerts, singular = await plugin.expect(
            "room/join", "rtc/config", "steps/all", "alerts", "alert")
        assert joined == {"room_id": room_id, "user_id": 2, "token": joined["token"]}
        assert TOKEN.fullmatch(joined["token"])
        check_rtc_config(rtc, polite=True)
        assert steps == JAVA_STEPS
        assert alerts == singular == alert("WARNING", OUTDATED)
        assert await host.expect_one("room/update") == room_update(
            room_id, host_entry("Teacher"), student_entry(2, "Bob"))

        assert await host.ok("sharing/start", {"user_id": 2, "room_id": room_id}) == []
        assert await plugin.expect_one("sharing/start") == {}
        sent = [{"filename": "src/Main.java", "status": "CREATED", "content": "class Main {}\n"},
                {"filename": "README.md", "status": "CREATED", "content": "# Bob\n"}]
        await plugin.emit("sharing/code_send", {"room_id": room_id, "files": sent})
        assert await host.expect_one("sharing/code_send") == {
            "room_id": room_id, "user_id": 2, "files": sent}
        update = [{"filename": "src/Main.java", "status": "CHANGED", "content": "class Main{}\n"},
                  {"filename": "README.md", "status": "REMOVED"}]
        await plugin.emit("sharing/code_update", {"room_id": room_id, "files": update})
        assert await host.expect_one("sharing/code_update") == {
            "room_id": room_id, "user_id": 2,
            "files": [update[0], {"filename": "README.md", "status": "REMOVED", "content": None}]}
        assert await host.ok("sharing/snapshot", {"user_id": 2}) == [
            ("sharing/snapshot", {"user_id": 2, "files": [update[0]]})]

        await plugin.emit("message/to_mentor", {"room_id": room_id, "content": "Help, task 2"})
        check_message(await host.expect_one("message/to_mentor"), sender=2, receiver=1,
                      content="Help, task 2")

        # Toggling Help sends every step's status; a repeat changes nothing and is not forwarded.
        await plugin.emit("steps/status/to_mentor", {"1": "DONE", "2": "HELP"})
        assert await host.expect_one("steps/status/to_mentor") == {
            "user_id": 2, "steps": {"1": "DONE", "2": "HELP"}}
        await plugin.emit("steps/status/to_mentor", {"1": "DONE", "2": "HELP"})
        # The plugin's removed seed events answer unknown_event, to the plugin only.
        await plugin.emit("solution/ai", {"content": "why?", "code": "class Main {}"})
        await plugin.emit("ping", {})
        errors = await plugin.expect("error", "error")
        check_error(errors[0], "unknown_event", "solution/ai")
        check_error(errors[1], "unknown_event", "ping")
        assert await host.ok("steps/table", {}) == [("steps/table", [
            {"user_id": 2, "name": "Bob", "status": "online",
             "steps": {"1": "DONE", "2": "HELP"}}])]

        assert await host.ok("room/close", {"room_id": room_id}) == []
        assert await plugin.expect_one("room/closed") == {"message": "Room closed!"}
        await plugin.disconnected()
        assert not plugin.will_reconnect()  # so it never re-joins
        assert plugin.connects == 1 and plugin.disconnects == [REASON.SERVER_DISCONNECT]
        assert plugin.events[plugin.cursor:] == []

    run_asyncio(scenario)


# -- acknowledgements and errors ------------------------------------------------------------
def test_acks_through_call(strict_server: tuple[str, int]) -> None:
    url = sio_url(strict_server)

    async def scenario() -> None:
        client = await Sio().connect(url)
        ack = await client.sio.call("steps/table", {}, timeout=TIMEOUT)
        check_failed_ack(ack, "not_in_room")
        error = await client.expect_one("error")
        check_error(error, "not_in_room", "steps/table")

        assert await client.sio.call("room/create", {"name": "Teacher"}, timeout=TIMEOUT) == OK
        created, _, _ = await client.expect("room/created", "rtc/config", "room/update")
        room_id = created["room_id"]

        # Concurrent calls: every ack id is answered once, with its own event's result.
        results = await asyncio.gather(
            client.sio.call("steps/table", {}, timeout=TIMEOUT),
            client.sio.call("message/to_all", {"content": ""}, timeout=TIMEOUT),
            client.sio.call("no/such/event", {}, timeout=TIMEOUT),
            client.sio.call("steps/all", [], timeout=TIMEOUT),
            client.sio.call("room/create", {}, timeout=TIMEOUT),
            client.sio.call("message/to_client", {"user_id": 9, "content": "x"},
                            timeout=TIMEOUT),
        )
        assert results[0] == results[3] == OK
        check_failed_ack(results[1], "invalid_payload")
        check_failed_ack(results[2], "unknown_event")
        check_failed_ack(results[4], "already_in_room")
        check_failed_ack(results[5], "user_not_found")
        got = await client.expect("steps/table", "error", "error", "error", "error")
        assert got[0] == []
        for error, (code, event) in zip(got[1:], [
                ("invalid_payload", "message/to_all"), ("unknown_event", "no/such/event"),
                ("already_in_room", "room/create"), ("user_not_found", "message/to_client")],
                strict=True):
            check_error(error, code, event)

        # A callback ack (emit with callback=) gets the same single result argument.
        acked: asyncio.Future[tuple[Any, ...]] = asyncio.get_running_loop().create_future()
        await client.sio.emit("room/close", {"room_id": room_id},
                              callback=lambda *args: acked.set_result(args))
        assert await asyncio.wait_for(acked, TIMEOUT) == (OK,)
        # v2 (§6.1): the host's connection stays open, unbound: a sentinel is answered.
        await client.nothing_before_sentinel()
        assert client.sio.connected and client.disconnects == []
        assert await client.sio.call("room/close", {}, timeout=TIMEOUT) == {
            "ok": False, "error": {"code": "not_in_room", "message": "join a room first"}}
        check_error(await client.expect_one("error"), "not_in_room", "room/close")

    run_asyncio(scenario)


def test_errors_go_to_the_offender_only(strict_server: tuple[str, int]) -> None:
    url = sio_url(strict_server)

    async def scenario() -> None:
        host = await Sio().connect(url)
        room_id = (await create_room(host, "Teacher"))["room_id"]
        student = await Sio().connect(url)
        await student.ok("room/join", {"room_id": room_id, "name": "Ann"})
        await host.expect("room/update")

        assert await student.fails("steps/table", {}, "not_host") == []
        assert await student.fails("room/join", {"room_id": room_id}, "already_in_room") == []
        assert await student.fails("message/to_mentor", {"content": ""}, "invalid_payload") == []
        assert await student.fails("message/to_mentor", {"room_id": room_id + 1, "content": "x"},
                                   "forbidden") == []
        assert await student.fails("sharing/code_send", {"files": []}, "not_sharing") == []
        assert await host.fails("message/to_mentor", {"content": "x"}, "not_student") == []
        assert await host.fails("message/to_client", {"user_id": 1, "content": "x"},
                                "user_not_found") == []
        assert await host.fails("message/to_client", {"user_id": "2", "content": "x"},
                                "invalid_payload") == []
        assert await host.fails("sharing/start", {"user_id": 2, "room_id": str(room_id)},
                                "invalid_payload") == []
        # Without an ack id: the error event alone, to the sender alone.
        await student.emit("room/kill", {"user_id": 2})
        check_error(await student.expect_one("error"), "not_host", "room/kill")
        await host.emit("steps/all", {"not": "a list"})
        check_error(await host.expect_one("error"), "invalid_payload", "steps/all")

        # Nothing failed changed anything nor reached the other side.
        assert await host.ok("steps/table", {}) == [("steps/table", [
            {"user_id": 2, "name": "Ann", "status": "online", "steps": {}}])]
        assert await host.ok("message/user", {"user_id": 2}) == [
            ("message/user", {"user_id": 2, "messages": []})]
        assert await student.ok("steps/status/to_mentor", {}) == []
        await host.ok("room/close", {})
        assert await student.expect_one("room/closed") == {"message": "Room closed!"}

    run_asyncio(scenario)


# -- mixed framings ----------------------------------------------------------------------------
def test_plain_host_socketio_student(strict_server: tuple[str, int]) -> None:
    url = sio_url(strict_server)

    async def scenario() -> None:
        host = await Plain.open(strict_server)
        created = await create_room(host, "Teacher")
        room_id = created["room_id"]
        assert host.seqs == [None, None, 1]  # room/created, rtc/config unsequenced

        student = await Sio().connect(url)
        before = await student.ok("room/join", {"room_id": room_id, "name": "Ann",
                                                "version": "1.2.9"})
        assert names(before) == ["room/join", "rtc/config", "alerts", "alert"]
        assert before[2][1] == before[3][1] == alert("WARNING", OUTDATED)
        assert await host.expect_one("room/update") == room_update(
            room_id, host_entry("Teacher"), student_entry(2, "Ann"))
        assert host.seq_of(-1) == 2

        await student.emit("message/to_mentor", {"room_id": room_id, "content": "Hello from SIO"})
        check_message(await host.expect_one("message/to_mentor"), id=1, sender=2, receiver=1,
                      content="Hello from SIO")
        assert host.seq_of(-1) == 3
        assert await host.ok("message/to_client", {"user_id": 2, "content": "Hi from plain"}) == []
        check_message(await student.expect_one("message/to_client"), id=2, sender=1, receiver=2,
                      content="Hi from plain")

        assert await host.ok("sharing/start", {"user_id": 2}) == []
        assert await student.expect_one("sharing/start") == {}
        files = [{"filename": "a.py", "status": "CREATED", "content": "x = 1\n"}]
        assert await student.ok("sharing/code_send", {"files": files}) == []
        assert await host.expect_one("sharing/code_send") == {
            "room_id": room_id, "user_id": 2, "files": files}
        assert host.seq_of(-1) == 4

        assert await host.ok("room/close", {}) == []
        assert await student.expect_one("room/closed") == {"message": "Room closed!"}
        await student.disconnected()
        assert student.disconnects == [REASON.SERVER_DISCONNECT]
        # v2 (§6.1): the plain host's connection stays open, unbound; nothing more arrives.
        assert host.close_code is None and host.events[host.cursor:] == []
        assert await host.fails("room/close", {}, "not_in_room") == []

    run_asyncio(scenario)


def test_socketio_host_plain_student(strict_server: tuple[str, int]) -> None:
    url = sio_url(strict_server)

    async def scenario() -> None:
        host = await Sio().connect(url)
        room_id = (await create_room(host, "Teacher"))["room_id"]

        student = await Plain.open(strict_server)
        before = await student.ok("room/join", {"room_id": room_id, "name": "Ann",
                                                "version": "1.2.9"})
        # The plain framing carries `alerts` alone (the `alert` twin is Socket.IO's).
        assert names(before) == ["room/join", "rtc/config", "alerts"]
        assert before[2][1] == alert("WARNING", OUTDATED)
        assert student.seqs == [None, None, 1]
        assert await host.expect_one("room/update") == room_update(
            room_id, host_entry("Teacher"), student_entry(2, "Ann"))

        assert await student.ok("message/to_mentor", {"content": "Hello from plain"}) == []
        check_message(await host.expect_one("message/to_mentor"), id=1, sender=2, receiver=1,
                      content="Hello from plain")
        await host.emit("message/to_client", {"user_id": 2, "content": "Hi from SIO"})
        check_message(await student.expect_one("message/to_client"), id=2, sender=1, receiver=2,
                      content="Hi from SIO")
        assert student.seq_of(-1) == 2

        await host.emit("sharing/start", {"user_id": 2, "room_id": room_id})
        assert await student.expect_one("sharing/start") == {}
        files = [{"filename": "b.py", "status": "CREATED", "content": "y = 2\n"}]
        await student.emit("sharing/code_send", {"files": files})
        assert await host.expect_one("sharing/code_send") == {
            "room_id": room_id, "user_id": 2, "files": files}

        assert await host.ok("room/close", {"room_id": room_id}) == []
        assert await student.expect_one("room/closed") == {"message": "Room closed!"}
        assert student.seq_of(-1) == 4
        assert await student.closed() == 4000
        await host.nothing_before_sentinel()  # v2 (§6.1): stays open
        assert host.sio.connected and host.disconnects == []

    run_asyncio(scenario)


# -- legacy tokenless mode: the plugin's network drop ------------------------------------------
async def classroom_with_plugin(
    addr: tuple[str, int], proxy: DropProxy,
) -> tuple[Sio, Plugin, int, dict[str, Any], dict[str, Any]]:
    """A host, and a plugin (through ``proxy``) that is sharing, has statuses and a message."""
    host = await Sio().connect(sio_url(addr))
    room_id = (await create_room(host, "Teacher"))["room_id"]
    assert await host.ok("steps/all", JAVA_STEPS) == []
    plugin = await Plugin(room_id, "Ann").connect(proxy.url)
    joined, _, _, _, _ = await plugin.expect("room/join", "rtc/config", "steps/all", "alerts",
                                             "alert")
    assert joined["user_id"] == 2
    await host.expect("room/update")

    assert await host.ok("sharing/start", {"user_id": 2, "room_id": room_id}) == []
    assert await plugin.expect_one("sharing/start") == {}
    assert await host.ok("message/to_client", {"user_id": 2, "room_id": room_id,
                                               "content": "Welcome"}) == []
    message = await plugin.expect_one("message/to_client")
    assert await host.ok("steps/status/to_client", {"user_id": 2,
                                                    "steps": {"1": "ACCEPTED"}}) == []
    await plugin.expect("alerts", "alert", "steps/status/to_client")
    await plugin.emit("steps/status/to_mentor", {"1": "ACCEPTED", "2": "HELP"})
    assert await host.expect_one("steps/status/to_mentor") == {
        "user_id": 2, "steps": {"1": "ACCEPTED", "2": "HELP"}}
    return host, plugin, room_id, joined, message


async def network_drop(host: Sio, plugin: Plugin, proxy: DropProxy, room_id: int) -> None:
    """Reset the plugin's TCP connection; the host sees it offline (v2, §6.1: on Socket.IO
    room/update lists the online students only); the network comes back."""
    proxy.drop()
    assert await host.expect_one("room/update") == room_update(room_id, host_entry("Teacher"))
    deadline = time.monotonic() + TIMEOUT
    while not plugin.disconnects and time.monotonic() < deadline:
        await asyncio.sleep(0.01)
    assert plugin.disconnects == [REASON.TRANSPORT_ERROR]
    proxy.restore()


def test_legacy_plugin_rejoins_after_network_drop(legacy_server: tuple[str, int]) -> None:
    async def scenario() -> None:
        proxy = await DropProxy(legacy_server).start()
        try:
            host, plugin, room_id, joined, message = await classroom_with_plugin(
                legacy_server, proxy)

            # Legacy mode re-attaches by name only while the student is offline.
            other = await Sio().connect(sio_url(legacy_server))
            before = await other.fails("room/join", {"room_id": room_id, "name": "Ann",
                                                     "version": "1.2.9"}, "name_taken")
            taken = alert("ERROR", f"Username Ann is already used in room {room_id}!")
            assert before == [("alerts", taken), ("alert", taken)]
            await other.sio.disconnect()

            await network_drop(host, plugin, proxy, room_id)
            # The plugin reconnects by itself and re-sends room/join with its old name: it is
            # the same student again (same user id and token) and gets its snapshot (§5.3).
            got = await plugin.expect("room/join", "rtc/config", "steps/all",
                                      "steps/status/to_client", "sharing/start",
                                      "message/to_client")
            assert plugin.connects == 2
            assert got[0] == joined
            check_rtc_config(got[1], polite=True)
            assert got[2] == JAVA_STEPS
            assert got[3] == {"1": "ACCEPTED", "2": "HELP"}
            assert got[4] == {}
            assert got[5] == message
            assert await host.expect_one("room/update") == room_update(
                room_id, host_entry("Teacher"),
                student_entry(2, "Ann", "online", {"1": "ACCEPTED", "2": "HELP"}))
            # Nothing else: a re-attach sends no version alert (Appendix C).
            assert await plugin.ok("steps/status/to_mentor", {"1": "ACCEPTED", "2": "HELP"}) == []
            assert await host.ok("steps/table", {}) == [("steps/table", [
                {"user_id": 2, "name": "Ann", "status": "online",
                 "steps": {"1": "ACCEPTED", "2": "HELP"}}])]

            # It is bound again as student 2: its events reach the host.
            await plugin.emit("message/to_mentor", {"room_id": room_id, "content": "I'm back"})
            check_message(await host.expect_one("message/to_mentor"), sender=2, receiver=1,
                          content="I'm back")
            await host.ok("room/close", {"room_id": room_id})
            assert await plugin.expect_one("room/closed") == {"message": "Room closed!"}
            await plugin.disconnected()
            assert not plugin.will_reconnect()  # the 41 came first
            assert plugin.connects == 2
        finally:
            await proxy.aclose()

    run_asyncio(scenario)


def test_strict_plugin_restart_replaces_student(strict_server: tuple[str, int]) -> None:
    """§4.5 (v2): a restarted plugin re-sends room/join with its name; it keeps no device
    cookie, so the offline Socket.IO student of that name is removed for good and the
    plugin becomes a new student, as with the seed server."""
    async def scenario() -> None:
        proxy = await DropProxy(strict_server).start()
        try:
            host, plugin, room_id, joined, _ = await classroom_with_plugin(
                strict_server, proxy)
            await network_drop(host, plugin, proxy, room_id)
            got = await plugin.expect("room/join", "rtc/config", "steps/all", "alerts", "alert")
            assert plugin.connects == 2
            assert got[0]["room_id"] == room_id and got[0]["user_id"] == 3
            assert TOKEN.fullmatch(got[0]["token"]) and got[0]["token"] != joined["token"]
            assert got[2] == JAVA_STEPS and got[3] == got[4] == alert("WARNING", OUTDATED)
            # The host: the removal (as room/leave), then the new student.
            assert await host.expect("room/update", "room/update") == [
                room_update(room_id, host_entry("Teacher")),
                room_update(room_id, host_entry("Teacher"), student_entry(3, "Ann"))]
            # Nothing of the old student is left: statuses, messages, sharer role, token.
            assert await host.ok("steps/table", {}) == [("steps/table", [
                {"user_id": 3, "name": "Ann", "status": "online", "steps": {}}])]
            assert await host.ok("message/user", {"user_id": 3}) == [
                ("message/user", {"user_id": 3, "messages": []})]
            assert await plugin.fails("sharing/code_send", {"files": []}, "not_sharing") == []
            other = await Sio().connect(sio_url(strict_server))
            assert await other.fails("room/rejoin", {"room_id": room_id, "user_id": 2,
                                                     "token": joined["token"]},
                                     "user_not_found") == []
            await plugin.emit("message/to_mentor", {"room_id": room_id, "content": "new me"})
            check_message(await host.expect_one("message/to_mentor"), sender=3, receiver=1,
                          content="new me")
            await host.ok("room/close", {})
            assert await plugin.expect_one("room/closed") == {"message": "Room closed!"}
            await plugin.disconnected()
        finally:
            await proxy.aclose()

    run_asyncio(scenario)


def test_plain_offline_student_keeps_its_name(strict_server: tuple[str, int]) -> None:
    """§4.5: an offline student last attached over the plain framing (a token-aware client)
    keeps its name, whoever joins with it; its token re-attaches it."""
    async def scenario() -> None:
        host = await Sio().connect(sio_url(strict_server))
        room_id = (await create_room(host, "Teacher"))["room_id"]
        student = await Plain.open(strict_server)
        joined = (await student.ok("room/join", {"room_id": room_id, "name": "Ann"}))[0][1]
        await host.expect("room/update")
        await student.ws.close()
        await host.expect("room/update")
        for client in (await Sio().connect(sio_url(strict_server)),
                       await Plain.open(strict_server)):
            before = await client.fails("room/join", {"room_id": room_id, "name": "ANN",
                                                      "version": "1.2.9"}, "name_taken")
            assert before[0] == ("alerts", alert(
                "ERROR", f"Username ANN is already used in room {room_id}!"))
        again = await Plain.open(strict_server)
        before = await again.ok("room/rejoin", {**joined, "last_seq": 0})
        assert names(before)[:2] == ["room/join", "rtc/config"]
        assert (await host.expect_one("room/update"))["users"][1]["status"] == "online"
        await host.ok("room/close", {})

    run_asyncio(scenario)


def test_plain_host_room_update_lists_offline_students(strict_server: tuple[str, int]) -> None:
    """§6.1: the plain framing lists every student, with its status."""
    async def scenario() -> None:
        host = await Plain.open(strict_server)
        room_id = (await create_room(host, "Teacher"))["room_id"]
        student = await Sio().connect(sio_url(strict_server))
        await student.ok("room/join", {"room_id": room_id, "name": "Ann"})
        await host.expect("room/update")
        await student.sio.disconnect()
        assert await host.expect_one("room/update") == room_update(
            room_id, host_entry("Teacher"), student_entry(2, "Ann", "offline"))
        await host.ok("room/close", {})

    run_asyncio(scenario)


def test_socketio_host_room_update_lists_online_students(strict_server: tuple[str, int]
                                                          ) -> None:
    """§6.1 (v2): on Socket.IO room/update holds the host and the online students only."""
    async def scenario() -> None:
        host = await Sio().connect(sio_url(strict_server))
        room_id = (await create_room(host, "Teacher"))["room_id"]
        ann = await Plain.open(strict_server)
        await ann.ok("room/join", {"room_id": room_id, "name": "Ann"})
        await host.expect("room/update")
        bob = await Sio().connect(sio_url(strict_server))
        await bob.ok("room/join", {"room_id": room_id, "name": "Bob"})
        assert await host.expect_one("room/update") == room_update(
            room_id, host_entry("Teacher"), student_entry(2, "Ann"), student_entry(3, "Bob"))
        await ann.ws.close()
        assert await host.expect_one("room/update") == room_update(
            room_id, host_entry("Teacher"), student_entry(3, "Bob"))
        # steps/table still lists everyone, with status.
        assert [(r["user_id"], r["status"]) for _, rows in await host.ok("steps/table", {})
                for r in rows] == [(2, "offline"), (3, "online")]
        await host.ok("room/close", {})

    run_asyncio(scenario)
