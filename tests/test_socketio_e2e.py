"""Socket.IO framing end to end (§3.2): python-socketio against a server process, and exact
packets over raw WebSockets against an in-process server.

python-socketio is an asyncio library, so its tests are synchronous functions that run their
own event loop against ``python -m relay serve`` in a subprocess; the raw-packet tests are Trio
tests on the in-process fixture of ``conftest.py``.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
import socketio
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, connect_websocket_url

from relay.transport import observer
from tests.support import Relay, StartRelay

PING_INTERVAL = 0.3
RECV_TIMEOUT = 3.0


# -- python-socketio against a server process --------------------------------------------------
@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("OBSERVER_")}
    env.update(OBSERVER_SIO_PING_INTERVAL=str(PING_INTERVAL), OBSERVER_SIO_PING_TIMEOUT="2",
               OBSERVER_PLUGIN_VERSION="1.2.15", OBSERVER_LOG_LEVEL="WARNING")
    proc = subprocess.Popen(
        [sys.executable, "-m", "relay", "serve", "--port", "0", "--http-port", "0"],
        stdout=subprocess.PIPE, text=True, env=env,
        cwd=os.path.dirname(os.path.dirname(os.path.abspath(__file__))),
    )
    assert proc.stdout is not None
    relay_line = proc.stdout.readline()
    web_line = proc.stdout.readline()
    m = re.fullmatch(r"observer-relay relay listening on ws://(.+):(\d+)\n", relay_line)
    assert m and web_line.startswith("observer-relay web listening"), (relay_line, web_line)
    try:
        yield f"http://{m.group(1)}:{m.group(2)}"
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class Recorder:
    """A python-socketio client that records every event, disconnect reason included."""

    def __init__(self, **kw: Any) -> None:
        self.sio = socketio.AsyncClient(**kw)
        self.events: list[tuple[str, Any]] = []
        self.disconnects: list[Any] = []
        self.sio.on("*", self._any)
        self.sio.on("disconnect", self._disconnect)

    async def _any(self, event: str, data: Any = None) -> None:
        self.events.append((event, data))

    async def _disconnect(self, reason: Any = None) -> None:
        self.disconnects.append(reason)

    async def connect(self, url: str) -> Recorder:
        await self.sio.connect(url, transports=["websocket"], wait_timeout=5)
        return self

    async def call(self, event: str, data: Any) -> tuple[Any, list[tuple[str, Any]]]:
        """Emit with an ack; return the ack and the events received before it."""
        seen = len(self.events)
        ack = await self.sio.call(event, data, timeout=RECV_TIMEOUT)
        await asyncio.sleep(0)  # let handlers of frames that preceded the ack finish
        return ack, self.events[seen:]

    async def wait_for(self, event: str) -> Any:
        deadline = time.monotonic() + RECV_TIMEOUT
        while time.monotonic() < deadline:
            for name, data in self.events:
                if name == event:
                    return data
            await asyncio.sleep(0.02)
        raise AssertionError(f"no {event!r} in {self.events}")


def run(coro: Any) -> Any:
    return asyncio.run(asyncio.wait_for(coro, 30))


OK = {"ok": True}


def test_appendix_b(server: str) -> None:
    async def scenario() -> None:
        host = await Recorder(reconnection=False).connect(server)
        assert host.sio.get_sid() != host.sio.eio.sid
        ack, before = await host.call("room/create", {"name": "Teacher"})
        assert ack == OK
        assert [e for e, _ in before] == ["room/created", "rtc/config", "room/update"]
        room_id = before[0][1]["room_id"]

        student = await Recorder(reconnection=False).connect(server)
        ack, before = await student.call(
            "room/join", {"room_id": room_id, "name": "Ann", "version": "1.2.9"}
        )
        assert ack == OK
        assert [e for e, _ in before] == ["room/join", "rtc/config", "alerts", "alert"]
        assert before[2][1] == before[3][1] == {
            "message": "You have an outdated version of the plugin. Please install the latest "
                       "version 1.2.15", "type": "WARNING"}
        update = await host.wait_for("room/update")
        assert update["id"] == room_id

        await student.sio.emit("message/to_mentor", {"room_id": room_id,
                                                     "content": "Stuck on task 1"})
        message = await host.wait_for("message/to_mentor")
        assert message["content"] == "Stuck on task 1" and "seq" not in message
        await student.sio.disconnect()
        await host.sio.disconnect()

    run(scenario())


def test_error_precedes_failed_ack(server: str) -> None:
    async def scenario() -> None:
        client = await Recorder(reconnection=False).connect(server)
        ack, before = await client.call("no/such/event", {})
        assert ack["ok"] is False and ack["error"]["code"] == "unknown_event"
        assert [(e, d["code"], d["event"]) for e, d in before] == [
            ("error", "unknown_event", "no/such/event")]
        ack, before = await client.call("room/close", {})
        assert ack["ok"] is False and ack["error"]["code"] == "not_in_room"
        await client.sio.disconnect()

    run(scenario())


def test_room_close_disconnects_without_reconnect(server: str) -> None:
    async def scenario() -> None:
        host = await Recorder(reconnection=True).connect(server)
        _, before = await host.call("room/create", {"name": "Teacher"})
        room_id = before[0][1]["room_id"]
        student = await Recorder(reconnection=True, reconnection_delay=0.1).connect(server)
        await student.call("room/join", {"room_id": room_id, "name": "Ann"})
        ack, _ = await host.call("room/close", {"room_id": room_id})
        assert ack == OK
        await student.wait_for("room/closed")
        await asyncio.sleep(1.0)  # a reconnect would have happened by now
        assert not student.sio.connected
        assert student.disconnects == [socketio.AsyncClient.reason.SERVER_DISCONNECT]
        # v2 (§6.1): the host's connection stays open, unbound.
        assert host.sio.connected and host.disconnects == []
        ack, _ = await host.call("room/create", {"name": "Teacher"})
        assert ack == OK

    run(scenario())


def test_heartbeat_keeps_session(server: str) -> None:
    async def scenario() -> None:
        client = await Recorder(reconnection=False).connect(server)
        await asyncio.sleep(PING_INTERVAL * 6)  # several ping/pong rounds
        assert client.sio.connected and client.disconnects == []
        ack, _ = await client.call("room/create", {"name": "Teacher"})
        assert ack == OK
        await client.sio.disconnect()

    run(scenario())


def test_client_disconnect_closes(server: str) -> None:
    async def connections() -> int:
        async with httpx.AsyncClient() as http:
            return int((await http.get(server + "/healthz")).json()["connections"])

    async def scenario() -> None:
        client = await Recorder(reconnection=False).connect(server)
        assert await connections() >= 1
        await client.sio.disconnect()
        deadline = time.monotonic() + RECV_TIMEOUT
        while await connections() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert await connections() == 0

    run(scenario())


def test_polling_only_and_default_clients_connect(server: str) -> None:
    """v2 (§3.2): long-polling is served; a default client polls, then upgrades."""
    async def scenario() -> None:
        for transports, final in ((["polling"], "polling"), (None, "websocket")):
            client = socketio.AsyncClient(reconnection=False)
            await client.connect(server, transports=transports, wait_timeout=5)
            assert await client.call("rtc/config", {}, timeout=5) == {
                "ok": False, "error": {"code": "not_in_room", "message": "join a room first"}}
            assert client.transport() == final
            await client.disconnect()

    run(scenario())


async def test_polling_refused_when_switched_off(start_relay: StartRelay) -> None:
    relay = await start_relay(sio_polling=False)
    status, ctype, body = await http_get(relay, "/socket.io/?EIO=4&transport=polling", False)
    assert status == 400 and ctype.startswith("application/json")
    assert json.loads(body) == {"code": 0,
                                "message": "Only the websocket transport is supported"}


# -- exact packets over raw WebSockets -------------------------------------------------------------
SIO_PATH = "/socket.io/?EIO=4&transport=websocket"


class Raw:
    def __init__(self, ws: WebSocketConnection) -> None:
        self.ws = ws

    async def recv(self, timeout: float = RECV_TIMEOUT) -> str:
        with trio.fail_after(timeout):
            message = await self.ws.get_message()
        assert isinstance(message, str)
        return message

    async def send(self, message: str | bytes) -> None:
        await self.ws.send_message(message)

    async def silent(self, timeout: float = 0.2) -> None:
        with trio.move_on_after(timeout):
            message = await self.ws.get_message()
            raise AssertionError(f"unexpected {message!r}")

    async def closed(self, timeout: float = RECV_TIMEOUT) -> tuple[int | None, list[str]]:
        """Close code, and the messages that came before it."""
        seen: list[str] = []
        with trio.fail_after(timeout):
            try:
                while True:
                    seen.append(await self.ws.get_message())  # type: ignore[arg-type]
            except ConnectionClosed as exc:
                return (exc.reason.code if exc.reason else None), seen

    async def event(self) -> list[Any]:
        message = await self.recv()
        assert message.startswith("42["), message
        return list(json.loads(message[2:]))


async def open_raw(relay: Relay, connect: bool = True) -> tuple[Raw, dict[str, Any]]:
    ws = await connect_websocket_url(relay.nursery, relay.url + SIO_PATH)
    raw = Raw(ws)
    first = await raw.recv()
    assert first.startswith("0{")
    opened = json.loads(first[1:])
    if connect:
        await raw.send("40")
        assert re.fullmatch(r'40\{"sid":"[A-Za-z0-9_-]{20}"\}', await raw.recv())
    return raw, opened


async def test_raw_session(relay: Relay) -> None:
    raw, opened = await open_raw(relay, connect=False)
    cfg = relay.server.config
    assert opened["upgrades"] == [] and opened["maxPayload"] == cfg.max_message_size
    assert opened["pingInterval"] == int(cfg.sio_ping_interval * 1000)
    assert opened["pingTimeout"] == int(cfg.sio_ping_timeout * 1000)
    assert re.fullmatch(r"[A-Za-z0-9_-]{20}", opened["sid"])

    await raw.send('420["room/create",{"name":"T"}]')  # before 40: ignored
    await raw.silent()
    await raw.send("2")
    assert await raw.recv() == "3"
    await raw.send("40[]")
    assert await raw.recv() == '44{"message":"Invalid connect payload"}'
    await raw.send("40/admin,")
    assert await raw.recv() == '44/admin,{"message":"Invalid namespace"}'
    await raw.send('40{"token":"ignored"}')
    connected = await raw.recv()
    assert connected.startswith('40{"sid":"') and opened["sid"] not in connected
    await raw.send("40")
    await raw.send("430[{}]")
    await raw.send("6")
    await raw.send(b"\x01\x02")
    await raw.silent()

    await raw.send("427[bad")
    assert await raw.event() == ["error", {"code": "bad_json", "message": "the packet is not "
                                           "valid JSON", "event": None}]
    ack = await raw.recv()
    assert ack.startswith('437[{"ok":false,"error":{"code":"bad_json"')
    await raw.send("42[]")
    error = await raw.event()
    assert error[1]["code"] == "bad_frame"
    await raw.silent()
    await raw.send('451-9["upload",{"_placeholder":true,"num":0}]')
    assert await raw.event() == ["error", {"code": "bad_frame", "message": "binary attachments "
                                           "are not supported", "event": "upload"}]
    assert (await raw.recv()).startswith('439[{"ok":false,"error":{"code":"bad_frame"')

    await raw.send('4212["room/create",{"name":"Teacher"}]')
    assert [(await raw.event())[0] for _ in range(3)] == ["room/created", "rtc/config",
                                                          "room/update"]
    assert await raw.recv() == '4312[{"ok":true}]'
    await raw.send("41")
    code, _ = await raw.closed()
    assert code == 1000


async def test_room_close_sends_41_first(relay: Relay) -> None:
    host, _ = await open_raw(relay)
    await host.send('420["room/create",{"name":"Teacher"}]')
    created = await host.event()
    room_id = created[1]["room_id"]
    while (await host.recv()) != '430[{"ok":true}]':
        pass
    student, _ = await open_raw(relay)
    await student.send(f'421["room/join",{{"room_id":{room_id},"name":"Ann"}}]')
    while (await student.recv()) != '431[{"ok":true}]':
        pass
    await host.send(f'429["room/close",{{"room_id":{room_id}}}]')
    code, seen = await student.closed()
    assert code == 4000
    assert seen[-1] == "41" and seen[-2].startswith('42["room/closed",')
    # v2 (§6.1): the host gets its ack and stays connected, unbound (no 41, no close).
    seen = [await host.recv()]
    while seen[-1] != '439[{"ok":true}]':
        seen.append(await host.recv())
    assert [m[:16] for m in seen] == ['42["room/update"', '439[{"ok":true}]']
    await host.send('4210["room/close",{}]')
    assert (await host.event())[1]["code"] == "not_in_room"
    assert json.loads((await host.recv())[4:]) == [
        {"ok": False, "error": {"code": "not_in_room", "message": "join a room first"}}]
    await host.silent()


async def test_heartbeat_timeout(start_relay: StartRelay) -> None:
    relay = await start_relay(sio_ping_interval=0.2, sio_ping_timeout=0.3)
    raw, opened = await open_raw(relay)
    assert (opened["pingInterval"], opened["pingTimeout"]) == (200, 300)
    for _ in range(3):  # answered pings keep the session
        assert await raw.recv() == "2"
        await raw.send("3")
    assert await raw.recv() == "2"
    code, seen = await raw.closed()
    assert code == 4004 and "41" not in seen


async def test_connect_deadline(start_relay: StartRelay, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(observer, "SIO_CONNECT_DEADLINE", 0.3)
    relay = await start_relay()
    raw, _ = await open_raw(relay, connect=False)
    code, _ = await raw.closed()
    assert code == 1008
    connected, _ = await open_raw(relay)
    await connected.silent(0.6)


async def test_rate_limited_acks(start_relay: StartRelay) -> None:
    relay = await start_relay(rate_limit_rate=0.01, rate_limit_burst=3)
    raw, _ = await open_raw(relay)  # the 40 took one token
    for i in range(1, 5):
        await raw.send(f'42{i}["nope",{{}}]')
    for i in (1, 2):
        assert (await raw.event())[1]["code"] == "unknown_event"
        assert (await raw.recv()).startswith(f'43{i}[{{"ok":false,"error":{{"code":"unknown_event"')
    error = await raw.event()
    assert error[1]["code"] == "rate_limited" and error[1]["event"] == "nope"
    assert (await raw.recv()).startswith('433[{"ok":false,"error":{"code":"rate_limited"')
    assert (await raw.recv()).startswith('434[{"ok":false,"error":{"code":"rate_limited"')
    await raw.send("3")  # pongs are free: no error
    await raw.send("6")
    await raw.silent()


async def http_get(relay: Relay, target: str, upgrade: bool) -> tuple[int, str, bytes]:
    port = relay.server.relay_port
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    head = f"GET {target} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n"
    if upgrade:
        head = head.replace("close", "Upgrade") + (
            "Upgrade: websocket\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            "Sec-WebSocket-Version: 13\r\n")
    await stream.send_all((head + "\r\n").encode())
    data = b""
    with trio.fail_after(RECV_TIMEOUT):
        while True:
            chunk = await stream.receive_some(65536)
            if not chunk:
                break
            data += chunk
            header, _, body = data.partition(b"\r\n\r\n")
            m = re.search(rb"content-length: *(\d+)", header, re.I)
            if m and len(body) >= int(m.group(1)):
                break
    await stream.aclose()
    header, _, body = data.partition(b"\r\n\r\n")
    status = int(header.split(b" ")[1])
    ctype = re.search(rb"content-type: *([^\r]*)", header, re.I)
    return status, ctype.group(1).decode() if ctype else "", body


@pytest.mark.parametrize(
    ("target", "upgrade", "code"),
    [("/socket.io/?EIO=4&transport=websocket", False, 0),
     ("/socket.io/?EIO=4&transport=xhr", False, 0),
     ("/socket.io?EIO=4&transport=polling", True, 0),
     ("/socket.io/?EIO=3&transport=websocket", True, 5),
     ("/socket.io/?transport=websocket", True, 5),
     ("/socket.io/?EIO=4&transport=websocket&sid=abc", True, 1)],
)
async def test_http_400(relay: Relay, target: str, upgrade: bool, code: int) -> None:
    status, ctype, body = await http_get(relay, target, upgrade)
    assert status == 400 and ctype.startswith("application/json")
    assert json.loads(body)["code"] == code
