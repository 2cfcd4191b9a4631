"""Socket.IO framing end to end (§3.2): python-socketio against a server process, and exact
packets over raw WebSockets against an in-process server.

python-socketio is an asyncio library, so its tests are synchronous functions that run their
own event loop against ``python -m relay serve`` in a subprocess; the raw-packet tests are Trio
tests on the in-process fixture of ``conftest.py``, timers on the autojump clock.
"""

from __future__ import annotations

import asyncio
import json
import re
import time
from collections.abc import Iterator

import httpx
import pytest
import socketio
import trio

from relay.transport.settings import SIO_CONNECT_DEADLINE
from tests.support import (
    OK,
    RECV_TIMEOUT,
    Relay,
    SioRaw,
    SioRecorder,
    StartRelay,
    relay_process,
    run_asyncio,
    sio_url,
)

PING_INTERVAL = 0.3
#: Raw sessions that do not answer pings would end (4004) during the long virtual waits.
NO_PINGS = {"sio_ping_interval": 10_000.0, "sio_ping_timeout": 10_000.0}


# -- python-socketio against a server process --------------------------------------------------
@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    with relay_process(OBSERVER_SIO_PING_INTERVAL=str(PING_INTERVAL),
                       OBSERVER_SIO_PING_TIMEOUT="2", OBSERVER_PLUGIN_VERSION="1.2.15") as addr:
        yield sio_url(addr)


def test_appendix_b(server: str) -> None:
    async def scenario() -> None:
        host = await SioRecorder().connect(server)
        assert host.sio.get_sid() != host.sio.eio.sid
        ack, before = await host.call("room/create", {"name": "Teacher"})
        assert ack == OK
        assert [e for e, _ in before] == ["room/created", "rtc/config", "room/update"]
        room_id = before[0][1]["room_id"]

        student = await SioRecorder().connect(server)
        ack, before = await student.call(
            "room/join", {"room_id": room_id, "name": "Ann", "version": "1.2.9"}
        )
        assert ack == OK
        assert [e for e, _ in before] == ["room/join", "rtc/config", "alerts", "alert"]
        assert before[2][1] == before[3][1] == {
            "message": "You have an outdated version of the plugin. Please install the latest "
                       "version 1.2.15", "type": "WARNING"}
        update = await host.expect_one("room/update")
        assert update["id"] == room_id

        await student.sio.emit("message/to_mentor", {"room_id": room_id,
                                                     "content": "Stuck on task 1"})
        message = await host.expect_one("message/to_mentor")
        assert message["content"] == "Stuck on task 1" and "seq" not in message
        await student.nothing_before_sentinel()
        await host.nothing_before_sentinel()
        await student.sio.disconnect()
        await host.sio.disconnect()

    run_asyncio(scenario)


def test_error_precedes_failed_ack(server: str) -> None:
    async def scenario() -> None:
        client = await SioRecorder().connect(server)
        ack, before = await client.call("no/such/event", {})
        assert ack["ok"] is False and ack["error"]["code"] == "unknown_event"
        assert [(e, d["code"], d["event"]) for e, d in before] == [
            ("error", "unknown_event", "no/such/event")]
        ack, before = await client.call("room/close", {})
        assert ack["ok"] is False and ack["error"]["code"] == "not_in_room"
        await client.sio.disconnect()

    run_asyncio(scenario)


def test_room_close_disconnects_without_reconnect(server: str) -> None:
    async def scenario() -> None:
        host = await SioRecorder(reconnection=True).connect(server)
        _, before = await host.call("room/create", {"name": "Teacher"})
        room_id = before[0][1]["room_id"]
        student = await SioRecorder(reconnection=True, reconnection_delay=0.1).connect(server)
        await student.call("room/join", {"room_id": room_id, "name": "Ann"})
        ack, _ = await host.call("room/close", {"room_id": room_id})
        assert ack == OK
        await student.expect_one("room/closed")
        await student.disconnected()
        # The 41 came first: the client scheduled no reconnection (it never will).
        assert not student.will_reconnect() and not student.sio.connected
        assert student.disconnects == [socketio.AsyncClient.reason.SERVER_DISCONNECT]
        assert student.events[student.cursor:] == []
        # v2 (§6.1): the host's connection stays open, unbound.
        await host.nothing_before_sentinel()
        assert host.sio.connected and host.disconnects == []
        ack, _ = await host.call("room/create", {"name": "Teacher"})
        assert ack == OK

    run_asyncio(scenario)


def test_heartbeat_keeps_session(server: str) -> None:
    async def scenario() -> None:
        client = await SioRecorder().connect(server)
        await client.wait_pings(6)  # several ping/pong rounds (real time: a server process)
        assert client.sio.connected and client.disconnects == []
        ack, _ = await client.call("room/create", {"name": "Teacher"})
        assert ack == OK
        await client.sio.disconnect()

    run_asyncio(scenario)


def test_client_disconnect_closes(server: str) -> None:
    async def connections() -> int:
        async with httpx.AsyncClient() as http:
            return int((await http.get(server + "/healthz")).json()["connections"])

    async def scenario() -> None:
        client = await SioRecorder().connect(server)
        assert await connections() >= 1
        await client.sio.disconnect()
        deadline = time.monotonic() + RECV_TIMEOUT
        while await connections() and time.monotonic() < deadline:
            await asyncio.sleep(0.05)
        assert await connections() == 0

    run_asyncio(scenario)


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

    run_asyncio(scenario)


async def test_polling_refused_when_switched_off(start_relay: StartRelay) -> None:
    relay = await start_relay(sio_polling=False)
    status, ctype, body = await http_get(relay, "/socket.io/?EIO=4&transport=polling", False)
    assert status == 400 and ctype.startswith("application/json")
    assert json.loads(body) == {"code": 0,
                                "message": "Only the websocket transport is supported"}


# -- exact packets over raw WebSockets -------------------------------------------------------------
async def test_raw_session(relay: Relay) -> None:
    raw, opened = await SioRaw.open(relay, connect=False)
    cfg = relay.server.config
    assert opened["upgrades"] == [] and opened["maxPayload"] == cfg.max_message_size
    assert opened["pingInterval"] == int(cfg.sio_ping_interval * 1000)
    assert opened["pingTimeout"] == int(cfg.sio_ping_timeout * 1000)
    assert re.fullmatch(r"[A-Za-z0-9_-]{20}", opened["sid"])

    # Before 40 an event is ignored; a ping is answered, in order: nothing came before it.
    await raw.send('420["room/create",{"name":"T"}]')
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
    await raw.nothing_before_sentinel()  # all four ignored

    await raw.send("427[bad")
    assert await raw.event() == ["error", {"code": "bad_json", "message": "the packet is not "
                                           "valid JSON", "event": None}]
    ack = await raw.recv()
    assert ack.startswith('437[{"ok":false,"error":{"code":"bad_json"')
    await raw.send("42[]")
    error = await raw.event()
    assert error[1]["code"] == "bad_frame"
    await raw.nothing_before_sentinel()  # no ack id: no ack
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
    host, _ = await SioRaw.open(relay)
    await host.send('420["room/create",{"name":"Teacher"}]')
    created = await host.event()
    room_id = created[1]["room_id"]
    while (await host.recv()) != '430[{"ok":true}]':
        pass
    student, _ = await SioRaw.open(relay)
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
    await host.nothing_before_sentinel()


async def test_heartbeat_timeout(start_relay: StartRelay, autojump_clock: trio.abc.Clock
                                 ) -> None:
    relay = await start_relay(sio_ping_interval=20.0, sio_ping_timeout=30.0)
    raw, opened = await SioRaw.open(relay)
    assert (opened["pingInterval"], opened["pingTimeout"]) == (20_000, 30_000)
    for _ in range(3):  # answered pings keep the session
        sent = trio.current_time()
        assert await raw.recv(timeout=60.0) == "2"
        assert trio.current_time() - sent <= 20.0 + 0.1  # every pingInterval (and a tick)
        await raw.send("3")
    assert await raw.recv(timeout=60.0) == "2"
    unanswered = trio.current_time()
    code, seen = await raw.closed(timeout=60.0)
    assert code == 4004 and "41" not in seen
    assert 30.0 <= trio.current_time() - unanswered <= 30.0 + 0.1  # pingTimeout


async def test_connect_deadline(start_relay: StartRelay, autojump_clock: trio.abc.Clock
                                ) -> None:
    """§3.2: a session without a valid 40 is closed with 1008 after 45 s (virtual time); a
    connected one is not."""
    relay = await start_relay(**NO_PINGS)
    opened_at = trio.current_time()
    raw, _ = await SioRaw.open(relay, connect=False)
    connected, _ = await SioRaw.open(relay)
    code, _ = await raw.closed(timeout=SIO_CONNECT_DEADLINE + 5.0)
    assert code == 1008
    assert trio.current_time() - opened_at >= SIO_CONNECT_DEADLINE
    await trio.sleep(SIO_CONNECT_DEADLINE)
    await connected.nothing_before_sentinel()


async def test_rate_limited_acks(start_relay: StartRelay, autojump_clock: trio.abc.Clock
                                 ) -> None:
    """Virtual time: no token comes back while the packets are sent, whatever the load."""
    relay = await start_relay(rate_limit_rate=0.01, rate_limit_burst=3, **NO_PINGS)
    raw, _ = await SioRaw.open(relay)  # the 40 took one token
    for i in range(1, 5):
        await raw.send(f'42{i}["nope",{{}}]')
    for i in (1, 2):
        assert (await raw.event())[1]["code"] == "unknown_event"
        assert (await raw.recv()).startswith(f'43{i}[{{"ok":false,"error":{{"code":"unknown_event"')
    error = await raw.event()
    assert error[1]["code"] == "rate_limited" and error[1]["event"] == "nope"
    assert (await raw.recv()).startswith('433[{"ok":false,"error":{"code":"rate_limited"')
    assert (await raw.recv()).startswith('434[{"ok":false,"error":{"code":"rate_limited"')
    # Pongs and noops are free: a second later (so a drop would get a new rate_limited
    # error) and with the bucket still empty, they cause no error.
    await trio.sleep(1.5)
    await raw.send("3")
    await raw.send("6")
    await trio.sleep(150.0)  # one token (0.01/s) for the sentinel
    await raw.nothing_before_sentinel()


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
