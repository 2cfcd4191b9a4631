"""Version 2's seed-client flows (Appendix E), driven the way the real clients drive them.

``observer_java`` (the IntelliJ plugin 1.2.9) and ``observer_front`` (the teacher web UI) are
replayed with python-socketio (``transports=['websocket']``), emitting exactly what they emit
and **without acknowledgements** (neither client asks for one): the plugin sends
``room/join {room_id, name, version}`` on every ``connect`` and, whenever Help or Done is
toggled, ``steps/status/to_mentor`` with a status for every step it shows, under its own
names (``T`` for a theory step); the teacher UI sends ``room/create {name: "Host"}``,
``steps/all`` with its task editor's slots, ``room/close {room_id}``. Since nothing is
acknowledged, "nothing else arrived" is checked after a later event that must come next.

The server is ``python -m relay serve`` in the **default configuration** (the contract's
meaning of "compatible"; only the plugin version is pinned), so legacy tokenless mode is off.

The last tests run two nodes sharing a Redis: the device cookie one node issued lets a
tokenless ``room/rehost`` through the other node succeed (§4.6 "holds across nodes"), with
the cluster forwarding the client's events and with same-host socket handoff.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from typing import Any

import aiohttp
import pytest
import trio
from trio_websocket import WebSocketConnection, connect_websocket_url

from tests.cluster_support import start_node
from tests.redis_server import redis_server, redis_url  # noqa: F401  (fixtures)
from tests.support import SENTINEL_EVENT, relay_process, sio_url
from tests.support import run_asyncio as run
from tests.test_socketio_flows import (
    FRONT_STEPS,
    JAVA_STEPS,
    OUTDATED,
    PUBLISHED,
    REASON,
    TOKEN,
    DropProxy,
    Plain,
    Plugin,
    Sio,
    alert,
    check_error,
    host_entry,
    room_update,
    student_entry,
)


def check_message(msg: Any, mid: int | None, sender: int, receiver: int, content: str
                  ) -> None:
    """A Message of §6.2 (the fields this file's flows look at)."""
    assert set(msg) == {"id", "sender", "receiver", "content", "status", "created_at",
                        "timestamp"}, msg
    assert isinstance(msg["id"], int) and (mid is None or msg["id"] == mid), msg
    assert (msg["sender"], msg["receiver"], msg["content"]) == (sender, receiver, content), msg


COOKIE_FIELD = re.compile(
    r"observer_device=([A-Za-z0-9_-]{22}); Path=/; Max-Age=31536000; HttpOnly; SameSite=Lax")


@pytest.fixture(scope="module")
def server() -> Iterator[tuple[str, int]]:
    """``python -m relay serve`` with no OBSERVER_* variable but the plugin version."""
    with relay_process() as addr:
        yield addr


# -- the teacher UI and the plugin, as they talk ------------------------------------------------
async def open_room(teacher: Sio) -> int:
    """observer_front's start button: ``room/create {name: "Host"}``, no ack."""
    await teacher.emit("room/create", {"name": "Host"})
    created, _, update = await teacher.expect("room/created", "rtc/config", "room/update")
    assert created["user_id"] == 1 and TOKEN.fullmatch(created["token"])
    assert update == room_update(created["room_id"], host_entry("Host"))
    return int(created["room_id"])


async def plugin_joins(url: str, room_id: int, name: str, steps: list[dict[str, str]] | None
                       ) -> tuple[Plugin, dict[str, Any]]:
    """A plugin started by a student: it connects and sends ``room/join`` by itself."""
    plugin = Plugin(room_id, name)
    await plugin.connect(url)
    expected = ["room/join", "rtc/config"] + (["steps/all"] if steps else []) + ["alerts",
                                                                               "alert"]
    got = await plugin.expect(*expected)
    if steps:
        assert got[2] == steps
    assert got[-1] == got[-2] == alert("WARNING", OUTDATED)  # 1.2.9 < 1.2.15
    return plugin, got[0]


async def nothing_more(*clients: Sio | Plain) -> None:
    """Nothing more reaches ``clients`` from what happened so far (a sentinel event each,
    answered by its own error and failed ack only); the sentinels' events are consumed."""
    for client in clients:
        assert client.events[client.cursor:] == [], client.events[client.cursor:]
        await client.nothing_before_sentinel()


def no_errors(client: Sio | Plain) -> None:
    assert [d for e, d in client.events if e == "error"] == []


# -- §6.5: Help and Done with a theory step published ------------------------------------------
def test_plugin_help_and_done_after_the_teacher_publishes_a_theory_step(
        server: tuple[str, int]) -> None:
    url = sio_url(server)

    async def scenario() -> None:
        teacher = await Sio().connect(url)
        room_id = await open_room(teacher)
        await teacher.emit("steps/all", JAVA_STEPS)  # tasks 1 and 2
        plugin, joined = await plugin_joins(url, room_id, "Ann", JAVA_STEPS)
        uid = joined["user_id"]
        assert uid == 2
        await teacher.expect("room/update")

        # Help on task 2, before any theory step: every step's status is reported.
        await plugin.emit("steps/status/to_mentor", {"1": "NONE", "2": "HELP"})
        assert await teacher.expect_one("steps/status/to_mentor") == {
            "user_id": uid, "steps": {"1": "NONE", "2": "HELP"}}

        # The teacher publishes the task editor: slots 1-8 and the theory slot (empty slots
        # dropped). The plugin shows the theory step under its own name, "T".
        await teacher.emit("steps/all", FRONT_STEPS)
        assert await plugin.expect_one("steps/all") == PUBLISHED
        await plugin.emit("steps/status/to_mentor", {"1": "NONE", "2": "HELP", "4": "HELP",
                                                     "T": "NONE"})
        assert await teacher.expect_one("steps/status/to_mentor") == {
            "user_id": uid, "steps": {"1": "NONE", "2": "HELP", "4": "HELP"}}

        # Done on task 1, theory read ("T" DONE): only the real steps reach the teacher.
        await plugin.emit("steps/status/to_mentor", {"1": "DONE", "2": "HELP", "4": "HELP",
                                                     "T": "DONE"})
        assert await teacher.expect_one("steps/status/to_mentor") == {
            "user_id": uid, "steps": {"1": "DONE", "2": "HELP", "4": "HELP"}}

        # A report that changes only "T" changes nothing: nothing is forwarded, no error; the
        # plugin's next message is the teacher's next event.
        await plugin.emit("steps/status/to_mentor", {"1": "DONE", "2": "HELP", "4": "HELP",
                                                     "T": "HELP"})
        await plugin.emit("message/to_mentor", {"room_id": room_id, "content": "Task 2?"})
        check_message(await teacher.expect_one("message/to_mentor"), None, uid, 1, "Task 2?")

        # The teacher accepts task 1 (one step per event, as the UI sends it); the plugin
        # echoes ACCEPTED in its next full report, which is allowed for a stored ACCEPTED.
        await teacher.emit("steps/status/to_client", {"user_id": uid,
                                                      "steps": {"1": "ACCEPTED"}})
        accepted = alert("SUCCESS", "Task 1 solution accepted!")
        assert await plugin.expect("alerts", "alert", "steps/status/to_client") == [
            accepted, accepted, {"1": "ACCEPTED"}]
        await plugin.emit("steps/status/to_mentor", {"1": "ACCEPTED", "2": "DONE", "4": "HELP",
                                                     "T": "DONE"})
        assert await teacher.expect_one("steps/status/to_mentor") == {
            "user_id": uid, "steps": {"1": "ACCEPTED", "2": "DONE", "4": "HELP"}}
        ack = await teacher.sio.call("steps/table", {}, timeout=4)
        assert ack == {"ok": True}
        assert await teacher.expect_one("steps/table") == [
            {"user_id": uid, "name": "Ann", "status": "online",
             "steps": {"1": "ACCEPTED", "2": "DONE", "4": "HELP"}}]

        # The teacher unpublishes the theory step: "T" is still ignored, "theory" too.
        await teacher.emit("steps/all", [s for s in FRONT_STEPS if s["type"] == "exercise"])
        assert await plugin.expect_one("steps/all") == [s for s in PUBLISHED
                                                        if s["type"] == "exercise"]
        await plugin.emit("steps/status/to_mentor", {"1": "ACCEPTED", "2": "DONE", "4": "DONE",
                                                     "T": "DONE", "theory": "DONE"})
        assert await teacher.expect_one("steps/status/to_mentor") == {
            "user_id": uid, "steps": {"1": "ACCEPTED", "2": "DONE", "4": "DONE"}}
        no_errors(plugin)
        no_errors(teacher)
        await nothing_more(plugin, teacher)
        await teacher.emit("room/close", {"room_id": room_id})
        assert await plugin.expect_one("room/closed") == {"message": "Room closed!"}

    run(scenario)


# -- §4.5: a student restarts the plugin ------------------------------------------------------
async def restart_scenario(server: tuple[str, int], teacher_framing: str, how: str) -> None:
    url = sio_url(server)
    teacher: Sio | Plain
    if teacher_framing == "socketio":
        teacher = await Sio().connect(url)
        room_id = await open_room(teacher)
    else:  # a token-aware teacher client on the plain framing
        teacher = await Plain.open(server)
        await teacher.emit("room/create", {"name": "Host"})
        created = (await teacher.expect("room/created", "rtc/config", "room/update"))[0]
        room_id = created["room_id"]
    await teacher.emit("steps/all", JAVA_STEPS)

    proxy = await DropProxy(server).start()
    try:
        # The first run of the IDE: through a proxy that can cut it off like a killed process.
        first, joined = await plugin_joins(proxy.url if how == "killed" else url, room_id,
                                           "Ann", JAVA_STEPS)
        if how == "killed":
            first.sio.reconnection = False  # the process is gone: nothing reconnects
        old = joined["user_id"]
        assert await teacher.expect_one("room/update") == room_update(
            room_id, host_entry("Host"), student_entry(old, "Ann"))
        await teacher.emit("sharing/start", {"user_id": old, "room_id": room_id})
        assert await first.expect_one("sharing/start") == {}
        files = [{"filename": "src/Main.java", "status": "CREATED", "content": "class Main{}"}]
        await first.emit("sharing/code_send", {"room_id": room_id, "files": files})
        assert (await teacher.expect_one("sharing/code_send"))["user_id"] == old
        await first.emit("steps/status/to_mentor", {"1": "DONE", "2": "HELP"})
        await teacher.expect("steps/status/to_mentor")
        await first.emit("message/to_mentor", {"room_id": room_id, "content": "before"})
        await teacher.expect("message/to_mentor")

        # A student on the same IDE name stays online while the first runs: name_taken.
        other = await Sio().connect(url)
        await other.emit("room/join", {"room_id": room_id, "name": "ann", "version": "1.2.9"})
        taken = alert("ERROR", f"Username ann is already used in room {room_id}!")
        got = await other.expect("alerts", "alert", "error")
        assert got[:2] == [taken, taken]
        check_error(got[2], "name_taken", "room/join")
        await other.sio.disconnect()

        # The IDE closes (the plugin disconnects; its room/leave goes after the disconnect
        # and is never delivered) or is killed (TCP reset, no close handshake).
        if how == "quit":
            await first.sio.disconnect()
        else:
            proxy.drop()
        offline = (room_update(room_id, host_entry("Host")) if teacher_framing == "socketio"
                   else room_update(room_id, host_entry("Host"),
                                    student_entry(old, "Ann", "offline",
                                                  {"1": "DONE", "2": "HELP"})))
        assert await teacher.expect_one("room/update") == offline
        await first.disconnected()

        # The restarted plugin: a new socket, the same name, no cookie (python-socketio keeps
        # none for an IP host) and no token. It gets back in as a new student.
        second, rejoined = await plugin_joins(url, room_id, "Ann", JAVA_STEPS)
        new = rejoined["user_id"]
        assert new == old + 1 and rejoined["room_id"] == room_id
        assert TOKEN.fullmatch(rejoined["token"]) and rejoined["token"] != joined["token"]
        # The teacher: the old student removed for good (as room/leave), then the joiner.
        assert await teacher.expect("room/update", "room/update") == [
            room_update(room_id, host_entry("Host")),
            room_update(room_id, host_entry("Host"), student_entry(new, "Ann"))]

        # Nothing of the old student is left, and the new one works like any student.
        await second.emit("steps/status/to_mentor", {"1": "NONE", "2": "HELP"})
        assert await teacher.expect_one("steps/status/to_mentor") == {
            "user_id": new, "steps": {"1": "NONE", "2": "HELP"}}
        await second.emit("message/to_mentor", {"room_id": room_id, "content": "after"})
        check_message(await teacher.expect_one("message/to_mentor"), None, new, 1, "after")
        table = await teacher.call("steps/table", {})
        assert table[0] == {"ok": True} and table[1] == [("steps/table", [
            {"user_id": new, "name": "Ann", "status": "online",
             "steps": {"1": "NONE", "2": "HELP"}}])]
        history = await teacher.call("message/user", {"user_id": old})
        assert history[0]["ok"] is False and history[0]["error"]["code"] == "user_not_found"
        stale = await Plain.open(server)
        assert (await stale.fails("room/rejoin", {"room_id": room_id, "user_id": old,
                                                  "token": joined["token"]},
                                  "user_not_found")) == []
        await stale.ws.close()
        # Not the sharer any more: the new plugin's code is refused, to the plugin only.
        await second.emit("sharing/code_send", {"room_id": room_id, "files": files})
        check_error(await second.expect_one("error"), "not_sharing", "sharing/code_send")
        await teacher.emit("sharing/start", {"user_id": new, "room_id": room_id})
        assert await second.expect_one("sharing/start") == {}
        await second.emit("sharing/code_send", {"room_id": room_id, "files": files})
        assert (await teacher.expect_one("sharing/code_send"))["user_id"] == new
        await teacher.emit("room/close", {"room_id": room_id})
        assert await second.expect_one("room/closed") == {"message": "Room closed!"}
        await second.disconnected()
    finally:
        await proxy.aclose()


@pytest.mark.parametrize("how", ["quit", "killed"])
@pytest.mark.parametrize("teacher_framing", ["socketio", "plain"])
def test_restarted_plugin_gets_back_in(server: tuple[str, int], teacher_framing: str,
                                       how: str) -> None:
    run(lambda: restart_scenario(server, teacher_framing, how))


def test_socketio_client_keeping_cookies_is_reattached_after_a_drop(
        server: tuple[str, int]) -> None:
    """§4.5 item 1 with a real reconnecting client: python-socketio given a cookie jar that
    outlives one connection (its own aiohttp session; by default the jar lives for one
    connection only, and aiohttp keeps no cookies from an IP-address host at all) and a host
    name. Reconnecting by itself after a network drop, it re-sends ``room/join`` with its
    name and carries the device cookie bound to its offline student: re-attached (same id,
    token, statuses, snapshot), not replaced."""
    url = sio_url(server)

    async def scenario() -> None:
        proxy = await DropProxy(server).start()
        jar = aiohttp.ClientSession()
        try:
            teacher = await Sio().connect(url)
            room_id = await open_room(teacher)
            await teacher.emit("steps/all", JAVA_STEPS)
            plugin = Plugin(room_id, "Ann", http_session=jar)
            await plugin.connect(f"http://localhost:{proxy.port}")
            joined, _, _, _, _ = await plugin.expect("room/join", "rtc/config", "steps/all",
                                                     "alerts", "alert")
            assert [m.key for m in jar.cookie_jar] == ["observer_device"]
            await teacher.expect("room/update")
            await plugin.emit("steps/status/to_mentor", {"1": "HELP", "2": "NONE", "T": "NONE"})
            await teacher.expect("steps/status/to_mentor")
            proxy.drop()
            assert await teacher.expect_one("room/update") == room_update(room_id,
                                                                          host_entry("Host"))
            proxy.restore()
            got = await plugin.expect("room/join", "rtc/config", "steps/all",
                                      "steps/status/to_client")
            assert plugin.connects == 2
            assert got[0] == joined and got[3] == {"1": "HELP", "2": "NONE"}
            assert await teacher.expect_one("room/update") == room_update(
                room_id, host_entry("Host"),
                student_entry(joined["user_id"], "Ann", "online", {"1": "HELP", "2": "NONE"}))
            await teacher.emit("room/close", {})
            assert await plugin.expect_one("room/closed") == {"message": "Room closed!"}
            await plugin.disconnected()
        finally:
            await proxy.aclose()
            await jar.close()

    run(scenario)


# -- §6.1: room/update lists online students on Socket.IO, everyone on the plain framing -------
def test_room_update_shape_follows_the_teachers_framing(server: tuple[str, int]) -> None:
    url = sio_url(server)

    async def scenario() -> None:
        sio_teacher = await Sio().connect(url)
        sio_room = await open_room(sio_teacher)
        plain_teacher = await Plain.open(server)
        created = (await plain_teacher.ok("room/create", {"name": "Host"}))[0][1]
        plain_room = created["room_id"]

        plugins: dict[tuple[int, str], Plugin] = {}
        for room_id, teacher in ((sio_room, sio_teacher), (plain_room, plain_teacher)):
            for name in ("Ann", "Bob"):
                plugins[room_id, name], _ = await plugin_joins(url, room_id, name, None)
                await teacher.expect("room/update")
        both = [student_entry(2, "Ann"), student_entry(3, "Bob")]
        assert sio_teacher.events[-1][1] == room_update(sio_room, host_entry("Host"), *both)
        assert plain_teacher.events[-1][1] == room_update(plain_room, host_entry("Host"), *both)

        # Ann closes her IDE in both rooms.
        await plugins[sio_room, "Ann"].sio.disconnect()
        await plugins[plain_room, "Ann"].sio.disconnect()
        # The teacher UI shows every listed student as present: Ann is not listed.
        assert await sio_teacher.expect_one("room/update") == room_update(
            sio_room, host_entry("Host"), student_entry(3, "Bob"))
        # The plain framing lists everyone, with status.
        assert await plain_teacher.expect_one("room/update") == room_update(
            plain_room, host_entry("Host"), student_entry(2, "Ann", "offline"),
            student_entry(3, "Bob"))
        # steps/table still lists Ann on Socket.IO, offline.
        ack, before = await sio_teacher.call("steps/table", {})
        assert ack == {"ok": True}
        assert [(r["user_id"], r["status"]) for r in before[0][1]] == [(2, "offline"),
                                                                       (3, "online")]

        # The shape follows the teacher's current connection: the plain teacher moves to a
        # Socket.IO connection (rehost with its token) and from then on sees online students
        # only; the replaced plain connection is closed with 4003.
        moved = await Sio().connect(url)
        await moved.emit("room/rehost", {"room_id": plain_room, "user_id": 1,
                                         "token": created["token"]})
        got = await moved.expect("rtc/config", "room/update")
        assert got[1] == room_update(plain_room, host_entry("Host"), student_entry(3, "Bob"))
        assert await plain_teacher.closed() == 4003
        await plugins[plain_room, "Bob"].sio.disconnect()
        assert await moved.expect_one("room/update") == room_update(plain_room,
                                                                    host_entry("Host"))
        # ... and back: a plain rehost sees both offline students again.
        back = await Plain.open(server)
        before = await back.ok("room/rehost", {"room_id": plain_room, "user_id": 1,
                                               "token": created["token"]})
        assert [e for e, _ in before] == ["rtc/config", "room/update"]
        assert before[1][1] == room_update(plain_room, host_entry("Host"),
                                           student_entry(2, "Ann", "offline"),
                                           student_entry(3, "Bob", "offline"))
        await moved.disconnected()
        assert moved.disconnects == [REASON.SERVER_DISCONNECT]
        for teacher in (sio_teacher, back):
            await teacher.emit("room/close", {})

    run(scenario)


# -- §6.1: room/close leaves the teacher's socket open ------------------------------------------
def test_teacher_socket_survives_room_close_and_creates_a_second_room(
        server: tuple[str, int]) -> None:
    url = sio_url(server)

    async def scenario() -> None:
        # socket.io-client reconnects by default: a server-side disconnect would show.
        teacher = await Sio(reconnection=True, reconnection_delay=0.1).connect(url)
        first = await open_room(teacher)
        await teacher.emit("steps/all", JAVA_STEPS)
        plugin, _ = await plugin_joins(url, first, "Ann", JAVA_STEPS)
        await teacher.expect("room/update")

        await teacher.emit("room/close", {"room_id": first})
        assert await plugin.expect_one("room/closed") == {"message": "Room closed!"}
        await plugin.disconnected()
        assert not plugin.will_reconnect()  # the server's 41 came first
        assert plugin.disconnects == [REASON.SERVER_DISCONNECT] and plugin.connects == 1
        assert plugin.events[plugin.cursor:] == []
        await nothing_more(teacher)  # no disconnect, no event: the socket is just unbound
        assert teacher.sio.connected and teacher.connects == 1 and teacher.disconnects == []

        # The same socket, no reload: the next lesson.
        second = await open_room(teacher)
        assert second != first
        late = await Plugin(first, "Late").connect(url)
        check_error(await late.expect_one("error"), "room_not_found", "room/join")
        await late.sio.disconnect()
        await teacher.emit("steps/all", FRONT_STEPS)
        bob, joined = await plugin_joins(url, second, "Bob", PUBLISHED)
        assert joined["user_id"] == 2
        assert await teacher.expect_one("room/update") == room_update(
            second, host_entry("Host"), student_entry(2, "Bob"))
        await bob.emit("steps/status/to_mentor", {"1": "HELP", "2": "NONE", "4": "NONE",
                                                  "T": "NONE"})
        assert await teacher.expect_one("steps/status/to_mentor") == {
            "user_id": 2, "steps": {"1": "HELP", "2": "NONE", "4": "NONE"}}
        # The old room id is gone for the teacher too.
        await teacher.emit("message/to_client", {"user_id": 2, "room_id": first,
                                                 "content": "x"})
        check_error(await teacher.expect_one("error"), "forbidden", "message/to_client")
        await teacher.emit("room/close", {"room_id": second})
        assert await bob.expect_one("room/closed") == {"message": "Room closed!"}
        await bob.disconnected()
        assert not bob.will_reconnect()
        await nothing_more(teacher)
        assert teacher.sio.connected and teacher.connects == 1 and teacher.disconnects == []
        no_errors(plugin)
        no_errors(bob)

    run(scenario)


# -- §4.6 across nodes ---------------------------------------------------------------------------
class RawSio:
    """A bare Socket.IO-over-WebSocket client (what observer_front's socket does), whose
    handshake headers can be set and read: the ``Cookie`` a browser sends, the
    ``Set-Cookie`` the relay answers."""

    def __init__(self, ws: WebSocketConnection) -> None:
        self.ws = ws
        self.sentinels = 0
        self.set_cookies = [v.decode() for k, v in ws.handshake_headers if k == b"set-cookie"]

    @classmethod
    async def open(cls, nursery: trio.Nursery, base: str, cookie: str | None = None,
                   headers: list[tuple[str, str]] | None = None, **kw: Any) -> RawSio:
        headers = list(headers or [])
        if cookie:
            headers.append(("Cookie", f"theme=dark; observer_device={cookie}"))
        ws = await connect_websocket_url(nursery, base + "/socket.io/?EIO=4&transport=websocket",
                                         extra_headers=headers, **kw)
        self = cls(ws)
        opened = await self._packet()
        assert opened.startswith("0{") and json.loads(opened[1:])["upgrades"] == []
        await ws.send_message("40")
        connected = await self._packet()
        assert connected.startswith("40{"), connected
        return self

    @property
    def cookie(self) -> str:
        assert len(self.set_cookies) == 1, self.set_cookies
        field = self.set_cookies[0]
        m = COOKIE_FIELD.match(field)
        assert m and field[m.end():] in ("", "; Secure"), field  # Secure: over https (§4.6)
        return m.group(1)

    async def _packet(self) -> str:
        while True:
            with trio.fail_after(10):  # a cross-node rehost may wait for the room's owner
                message = await self.ws.get_message()
            assert isinstance(message, str)
            if message == "2":
                await self.ws.send_message("3")
                continue
            return message

    async def emit(self, event: str, data: Any) -> None:
        await self.ws.send_message("42" + json.dumps([event, data]))

    async def next(self) -> tuple[str, Any]:
        packet = await self._packet()
        assert packet.startswith("42["), packet
        event, data = json.loads(packet[2:])
        return event, data

    async def expect(self, *names: str) -> list[Any]:
        got = [await self.next() for _ in names]
        assert [e for e, _ in got] == list(names), got
        return [d for _, d in got]

    async def nothing_before_sentinel(self) -> None:
        """Nothing arrives before the answer to a sentinel event with an ack id: its
        ``unknown_event`` error, then the failed ack."""
        self.sentinels += 1
        ack_id = 900_000 + self.sentinels
        await self.ws.send_message(f"42{ack_id}" + json.dumps([SENTINEL_EVENT, {}]))
        event, data = await self.next()
        assert (event, data["code"], data["event"]) == ("error", "unknown_event",
                                                        SENTINEL_EVENT), (event, data)
        ack = await self._packet()
        assert ack.startswith(f"43{ack_id}["), ack

    async def aclose(self) -> None:
        await self.ws.aclose()


class Http:
    """One HTTP/1.1 request on its own TCP connection (``Connection: close``)."""

    @staticmethod
    async def request(port: int, method: str, target: str, headers: list[tuple[str, str]],
                      body: bytes = b"") -> tuple[int, list[tuple[str, str]], bytes]:
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        head = [f"{method} {target} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
        if not any(k.lower() == "connection" for k, _ in headers):
            head.append("Connection: close")
        head += [f"{k}: {v}" for k, v in headers]
        if method == "POST":
            head += ["Content-Type: text/plain;charset=UTF-8", f"Content-Length: {len(body)}"]
        async with stream:
            await stream.send_all(("\r\n".join(head) + "\r\n\r\n").encode() + body)
            data = b""
            with trio.fail_after(5):
                while chunk := await stream.receive_some(65536):
                    data += chunk
        raw_head, _, payload = data.partition(b"\r\n\r\n")
        lines = raw_head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        fields = [(k.strip().lower(), v.strip()) for k, _, v in
                  (line.partition(":") for line in lines[1:])]
        return status, fields, payload


class Poller:
    """An Engine.IO polling session (§3.2) whose every request carries the same headers."""

    def __init__(self, port: int, headers: list[tuple[str, str]]) -> None:
        self.port = port
        self.headers = headers
        self.sid = ""
        self.set_cookies: list[str] = []

    async def open(self) -> Poller:
        status, fields, body = await Http.request(
            self.port, "GET", "/socket.io/?EIO=4&transport=polling", self.headers)
        assert status == 200 and body.startswith(b"0{"), (status, body)
        self.sid = json.loads(body[1:])["sid"]
        self.set_cookies = [v for k, v in fields if k == "set-cookie"]
        await self.post("40")
        assert (await self.poll())[0].startswith("40{")
        return self

    def _target(self) -> str:
        return f"/socket.io/?EIO=4&transport=polling&sid={self.sid}"

    async def post(self, *packets: str) -> None:
        status, _, body = await Http.request(self.port, "POST", self._target(), self.headers,
                                             "\x1e".join(packets).encode())
        assert (status, body) == (200, b"ok"), (status, body)

    async def poll(self) -> list[str]:
        status, _, body = await Http.request(self.port, "GET", self._target(), self.headers)
        assert status == 200, (status, body)
        return body.decode().split("\x1e")

    async def emit(self, event: str, data: Any) -> list[Any]:
        """Send one event; the events of the next poll."""
        await self.post("42" + json.dumps([event, data]))
        return [json.loads(p[2:]) for p in await self.poll() if p.startswith("42")]


@pytest.mark.parametrize("handoff", ["0", "1"])
async def test_device_cookie_from_one_node_rehosts_through_the_other(
        nursery: trio.Nursery, redis_url: str, handoff: str) -> None:  # noqa: F811
    a = await start_node(nursery, redis_url, OBSERVER_CLUSTER_HANDOFF=handoff,
                         OBSERVER_PLUGIN_VERSION="1.2.15")
    b = await start_node(nursery, redis_url, OBSERVER_CLUSTER_HANDOFF=handoff,
                         OBSERVER_PLUGIN_VERSION="1.2.15")
    try:
        # The teacher UI on node A: the upgrade answer sets the device cookie.
        tab = await RawSio.open(nursery, a.url)
        cookie = tab.cookie
        await tab.emit("room/create", {"name": "Host"})
        created, _, _ = await tab.expect("room/created", "rtc/config", "room/update")
        room_id = created["room_id"]
        # A student (a Socket.IO client that keeps its token) through node B.
        student = await RawSio.open(nursery, b.url)
        await student.emit("room/join", {"room_id": room_id, "name": "Ann",
                                         "version": "1.2.15"})
        joined, _ = await student.expect("room/join", "rtc/config")
        assert await tab.expect("room/update") == [room_update(
            room_id, host_entry("Host"), student_entry(joined["user_id"], "Ann"))]

        # The page reloads; the load balancer sends the new page's socket to node B.
        await tab.aclose()
        assert await student.expect("message") == [{"message": "The teacher is offline!"}]
        claim = {"room_id": room_id, "user_id": 1}  # what observer_front sends: no token

        stranger = await RawSio.open(nursery, b.url)  # another browser: a new cookie
        assert stranger.cookie != cookie
        await stranger.emit("room/rehost", claim)
        error, = await stranger.expect("error")
        check_error(error, "bad_token", "room/rehost")
        await stranger.aclose()
        forged = await RawSio.open(nursery, b.url, cookie="A" * 22)  # well-formed, unbound
        assert forged.set_cookies == []
        await forged.emit("room/rehost", claim)
        check_error((await forged.expect("error"))[0], "bad_token", "room/rehost")
        await forged.aclose()

        reloaded = await RawSio.open(nursery, b.url, cookie=cookie)
        assert reloaded.set_cookies == []  # it keeps the cookie it carries
        await reloaded.emit("room/rehost", claim)
        rtc, update = await reloaded.expect("rtc/config", "room/update")
        assert rtc["polite"] is False
        assert update == room_update(room_id, host_entry("Host"),
                                     student_entry(joined["user_id"], "Ann"))
        assert await student.expect("message") == [{"message": "The teacher reconnected!"}]
        # It is the host again, across nodes: its events reach the student and back.
        await reloaded.emit("message/to_client", {"user_id": joined["user_id"],
                                                  "room_id": room_id, "content": "back"})
        msg, = await student.expect("message/to_client")
        assert (msg["sender"], msg["content"]) == (1, "back")
        await student.emit("message/to_mentor", {"room_id": room_id, "content": "hi"})
        msg, = await reloaded.expect("message/to_mentor")
        assert (msg["sender"], msg["content"]) == (joined["user_id"], "hi")

        # A tokenless rejoin of the student without its cookie still fails, on either node.
        await student.aclose()
        for node in (a, b):
            thief = await RawSio.open(nursery, node.url)
            await thief.emit("room/rejoin", {"room_id": room_id,
                                             "user_id": joined["user_id"]})
            check_error((await thief.expect("error"))[0], "bad_token", "room/rejoin")
            await thief.aclose()
        await reloaded.expect("room/update")
        await reloaded.emit("room/close", {"room_id": room_id})
        await reloaded.nothing_before_sentinel()  # no event, and the socket stays open
        await reloaded.aclose()
    finally:
        for node in (a, b):
            if node.process.returncode is None:
                node.process.terminate()


# -- §4.6 and §4.5 item 1 with the cookie, on one node -------------------------------------------
def relay_ws(server: tuple[str, int]) -> str:
    return f"ws://{server[0]}:{server[1]}"


async def test_device_cookie_latest_attach_wins(nursery: trio.Nursery,
                                                server: tuple[str, int]) -> None:
    """A teacher page on browser D1 creates the room; the teacher opens it with its token on
    browser D2 (the latest attach): from then on only D2 vouches for a tokenless rehost."""
    first = await RawSio.open(nursery, relay_ws(server))
    d1 = first.cookie
    await first.emit("room/create", {"name": "Host"})
    created, _, _ = await first.expect("room/created", "rtc/config", "room/update")
    claim = {"room_id": created["room_id"], "user_id": 1}
    laptop = await RawSio.open(nursery, relay_ws(server))
    d2 = laptop.cookie
    assert d2 != d1
    await laptop.emit("room/rehost", {**claim, "token": created["token"]})
    await laptop.expect("rtc/config", "room/update")
    await first.aclose()  # replaced (4003) anyway
    await laptop.aclose()
    old = await RawSio.open(nursery, relay_ws(server), cookie=d1)
    await old.emit("room/rehost", claim)
    check_error((await old.expect("error"))[0], "bad_token", "room/rehost")
    # A wrong token fails even with the right cookie.
    new = await RawSio.open(nursery, relay_ws(server), cookie=d2)
    await new.emit("room/rehost", {**claim, "token": "A" * 22})
    check_error((await new.expect("error"))[0], "bad_token", "room/rehost")
    await new.emit("room/rehost", claim)
    _, update = await new.expect("rtc/config", "room/update")
    assert update == room_update(created["room_id"], host_entry("Host"))
    await new.emit("room/close", {})
    await old.aclose()
    await new.aclose()


async def test_browser_student_with_its_cookie_is_reattached(nursery: trio.Nursery,
                                                             server: tuple[str, int]) -> None:
    """§4.5 item 1: a Socket.IO student joining with the name of an offline student whose
    cookie it carries gets that student back (same id and token, its snapshot); without the
    cookie it would replace it (the plugin case above)."""
    teacher = await RawSio.open(nursery, relay_ws(server))
    await teacher.emit("room/create", {"name": "Host"})
    created, _, _ = await teacher.expect("room/created", "rtc/config", "room/update")
    room_id = created["room_id"]
    await teacher.emit("steps/all", JAVA_STEPS)
    tab = await RawSio.open(nursery, relay_ws(server))
    cookie = tab.cookie
    join = {"room_id": room_id, "name": "Ann", "version": "1.2.15"}
    await tab.emit("room/join", join)
    joined, _, _ = await tab.expect("room/join", "rtc/config", "steps/all")
    await teacher.expect("room/update")
    await tab.emit("steps/status/to_mentor", {"1": "HELP", "T": "NONE"})
    assert await teacher.expect("steps/status/to_mentor") == [
        {"user_id": joined["user_id"], "steps": {"1": "HELP"}}]
    await tab.aclose()
    assert await teacher.expect("room/update") == [room_update(room_id, host_entry("Host"))]

    again = await RawSio.open(nursery, relay_ws(server), cookie=cookie)
    await again.emit("room/join", join)
    rejoined, _, steps, statuses = await again.expect("room/join", "rtc/config", "steps/all",
                                                      "steps/status/to_client")
    assert rejoined == joined and steps == JAVA_STEPS and statuses == {"1": "HELP"}
    assert await teacher.expect("room/update") == [room_update(
        room_id, host_entry("Host"), student_entry(joined["user_id"], "Ann", "online",
                                                   {"1": "HELP"}))]
    await teacher.emit("room/close", {})
    assert await again.expect("room/closed") == [{"message": "Room closed!"}]
    await teacher.aclose()


async def test_upgrade_of_a_polling_session_sets_the_cookie(nursery: trio.Nursery,
                                                            server: tuple[str, int]) -> None:
    """§4.6 sets the cookie on "every successful WebSocket upgrade and polling handshake on
    /socket.io/ ... whose request carries no device cookie"; the upgrade of a polling
    session is one. (It matters for browser pages of another origin that poll without
    credentials, socket.io-client's default: they drop the polling handshake's
    ``Set-Cookie``, but a WebSocket answer's cookie would be kept.)"""
    poller = await Poller(server[1], [("Origin", "http://127.0.0.1:1")]).open()
    assert len(poller.set_cookies) == 1 and COOKIE_FIELD.match(poller.set_cookies[0])
    ws = await connect_websocket_url(
        nursery, f"{relay_ws(server)}/socket.io/?EIO=4&transport=websocket&sid={poller.sid}",
        extra_headers=[("Origin", "http://127.0.0.1:1")])
    fields = [v.decode() for k, v in ws.handshake_headers if k == b"set-cookie"]
    await ws.send_message("2probe")
    with trio.fail_after(3):
        assert await ws.get_message() == "3probe"
    await ws.send_message("5")
    await ws.aclose()
    assert len(fields) == 1 and COOKIE_FIELD.match(fields[0]), fields


@pytest.mark.parametrize("handoff", ["0", "1"])
async def test_plugin_restart_and_online_only_updates_across_nodes(
        nursery: trio.Nursery, redis_url: str, handoff: str) -> None:  # noqa: F811
    """The framing-dependent rules (§4.5 restart, §6.1 room/update shape, §6.5 ``T``) when
    the plugin's connections reach another node than the teacher's."""
    a = await start_node(nursery, redis_url, OBSERVER_CLUSTER_HANDOFF=handoff)
    b = await start_node(nursery, redis_url, OBSERVER_CLUSTER_HANDOFF=handoff)
    try:
        teacher = await RawSio.open(nursery, a.url)
        await teacher.emit("room/create", {"name": "Host"})
        created, _, _ = await teacher.expect("room/created", "rtc/config", "room/update")
        room_id = created["room_id"]
        await teacher.emit("steps/all", JAVA_STEPS)
        join = {"room_id": room_id, "name": "Ann", "version": "1.2.9"}

        first = await RawSio.open(nursery, b.url)
        await first.emit("room/join", join)
        joined, _, _, _, _ = await first.expect("room/join", "rtc/config", "steps/all",
                                                "alerts", "alert")
        old = joined["user_id"]
        assert await teacher.expect("room/update") == [room_update(
            room_id, host_entry("Host"), student_entry(old, "Ann"))]
        await first.emit("steps/status/to_mentor", {"1": "HELP", "2": "NONE", "T": "NONE"})
        assert await teacher.expect("steps/status/to_mentor") == [
            {"user_id": old, "steps": {"1": "HELP", "2": "NONE"}}]
        await first.aclose()
        assert await teacher.expect("room/update") == [room_update(room_id,
                                                                   host_entry("Host"))]

        second = await RawSio.open(nursery, b.url)  # a new cookie: not the old student's
        await second.emit("room/join", join)
        rejoined, _, _, _, _ = await second.expect("room/join", "rtc/config", "steps/all",
                                                   "alerts", "alert")
        assert rejoined["user_id"] == old + 1 and rejoined["token"] != joined["token"]
        assert await teacher.expect("room/update", "room/update") == [
            room_update(room_id, host_entry("Host")),
            room_update(room_id, host_entry("Host"), student_entry(old + 1, "Ann"))]
        stale = await RawSio.open(nursery, a.url)
        await stale.emit("room/rejoin", {"room_id": room_id, "user_id": old,
                                         "token": joined["token"]})
        check_error((await stale.expect("error"))[0], "user_not_found", "room/rejoin")
        await stale.aclose()

        await teacher.emit("room/close", {"room_id": room_id})
        assert await second.expect("room/closed") == [{"message": "Room closed!"}]
        await teacher.emit("room/create", {"name": "Host"})
        again, _, _ = await teacher.expect("room/created", "rtc/config", "room/update")
        assert again["room_id"] != room_id
        await teacher.emit("room/close", {})
        await teacher.aclose()
    finally:
        for node in (a, b):
            if node.process.returncode is None:
                node.process.terminate()
