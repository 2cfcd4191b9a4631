"""An attacker's regression suite: no stranger can end the process, starve the loop or
grow memory without bound (protocol §1.1 "Failure isolation", §2, §3, §8).

Every attack goes through real sockets against the in-process server of the ``relay`` /
``start_relay`` fixtures. An exception escaping the server's tasks would crash the test's
nursery and fail the test; beyond that, every test ends with ``assert_alive``: ``/healthz``
answers on both ports, a brand-new WebSocket connection is accepted and served, and the
*canary* (a host and a student in a room of their own, connecting from another loopback
address) still carries its own traffic: the student's fresh marker reaches the host as the
host's very next frame. Nothing is proven by sleeping: each "nothing happened" is
followed by a sentinel that must arrive after it (the one sleep, in the EMFILE test, only
lets the accept loop retry so that its log rate can be measured).

Waits for a server state (``wait_for``) poll the in-process server's objects with a bound;
times (canary latencies) are printed, never asserted.
"""

from __future__ import annotations

import base64
import fcntl
import itertools
import json
import logging
import resource
import select
import socket as pysocket
from typing import Any

import pytest
import trio

from tests.attack_support import (
    CANARY_IP,
    CONTINUATION,
    KEY,
    PING,
    PONG,
    TEXT,
    Canary,
    Poller,
    Wire,
    assert_alive,
    exchange,
    http_get,
    masked,
    p99,
    poll_request,
    read_head,
    read_to_eof,
    reset,
    rss_bytes,
    send_all,
    server_errors,
    tcp,
    upgrade_head,
    wait_for,
)
from tests.attack_support import text as text_frame
from tests.support import Client, Relay, StartRelay, fails

MiB = 1024 * 1024
SIO_PATH = "/socket.io/?EIO=4&transport=websocket"
LIFTED = {"rate_limit_rate": 1e6, "rate_limit_burst": 1e6}


def no_server_errors(caplog: pytest.LogCaptureFixture) -> None:
    """No ERROR was logged: nothing the attacker did was an unexpected server failure."""
    errors = server_errors(caplog)
    assert not errors, [f"{r.name}: {r.getMessage()}" for r in errors]


def attacker_conns(relay: Relay, known: set[Any]) -> list[Any]:
    return [c for c in relay.server.connections if c not in known]


# ======================================================================================
# 1. TCP resets (and half-closes) at every stage
# ======================================================================================
STAGES = ["mid-handshake", "after-request", "after-101", "mid-frame", "sio-before-40",
          "healthz-relay-port", "healthz-web-port"]


async def _reach(relay: Relay, stage: str) -> trio.socket.SocketType:
    """Open a connection and bring it to ``stage``."""
    server = relay.server
    port = server.web_port if stage == "healthz-web-port" else server.relay_port
    sock = await tcp(port)
    if stage == "mid-handshake":
        await send_all(sock, upgrade_head()[:45])  # a partial request head
    elif stage in ("after-request", "after-101", "mid-frame"):
        await send_all(sock, upgrade_head())
        if stage != "after-request":
            head, _ = await read_head(sock)
            assert head.startswith(b"HTTP/1.1 101 "), head
        if stage == "mid-frame":
            frame = masked(TEXT, json.dumps({"event": "room/create", "data": {
                "name": "x" * 900}}).encode())
            await send_all(sock, frame[:len(frame) // 2])
    elif stage == "sio-before-40":
        await send_all(sock, upgrade_head(SIO_PATH))
        head, _ = await read_head(sock)
        assert head.startswith(b"HTTP/1.1 101 "), head
    else:
        await send_all(sock, b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n")
    return sock


@pytest.mark.parametrize("mode", ["reset", "half-close"])
@pytest.mark.parametrize("stage", STAGES)
async def test_tcp_reset_or_half_close_at_every_stage(
        relay: Relay, caplog: pytest.LogCaptureFixture, stage: str, mode: str) -> None:
    """§1.1: resetting (SO_LINGER 0) or half-closing a TCP connection at any moment of its
    life — inside the request head, between the request and the 101, right after the 101,
    in the middle of a masked frame, on a Socket.IO session before ``40``, or during a plain
    ``/healthz`` request on either port — ends only that connection: the server forgets it
    (its connection set shrinks back), logs no failure, and everyone else carries on.
    On a half-close the server must close its side too (EOF is the sentinel)."""
    canary = await Canary.open(relay)
    known = set(relay.server.connections)
    sock = await _reach(relay, stage)
    if mode == "reset":
        reset(sock)
    else:
        sock.shutdown(pysocket.SHUT_WR)
        await read_to_eof(sock)  # the server closes its side: the sentinel of a half-close
        sock.close()
    await wait_for(lambda: not attacker_conns(relay, known), what="the attacker to be gone")
    await assert_alive(relay, canary)
    no_server_errors(caplog)


async def test_slow_request_heads_are_dropped(relay: Relay, caplog: pytest.LogCaptureFixture,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """§2.1 "a head not complete within 10 s is dropped" (10 s lowered to 0.5 s here):
    50 connections that stop inside their request head, and one that keeps trickling a
    byte every 20 ms without ever finishing it, are all closed by the server (EOF on each
    is the sentinel) instead of being held for as long as the peer likes."""
    for module in ("relay.transport.http", "relay.transport.http1"):
        monkeypatch.setattr(f"{module}.HANDSHAKE_TIMEOUT", 0.5, raising=False)
    canary = await Canary.open(relay)
    head = upgrade_head()
    stalled = []
    for _ in range(50):
        sock = await tcp(relay.server.relay_port)
        await send_all(sock, head[:30])
        stalled.append(sock)
    trickler = await tcp(relay.server.relay_port)

    async def trickle() -> None:
        for i in range(len(head) - 2):  # never the final CRLF
            try:
                await send_all(trickler, head[i:i + 1])
            except (BrokenPipeError, ConnectionResetError):
                return
            await trio.sleep(0.02)

    async with trio.open_nursery() as nursery:
        nursery.start_soon(trickle)
        assert await read_to_eof(trickler, timeout=5) == b""
        nursery.cancel_scope.cancel()
    for sock in stalled:
        assert await read_to_eof(sock, timeout=5) == b""
        sock.close()
    trickler.close()
    await assert_alive(relay, canary)
    no_server_errors(caplog)


async def test_reset_while_a_replay_streams(start_relay: StartRelay,
                                            caplog: pytest.LogCaptureFixture) -> None:
    """A student resumes (``room/rejoin`` with ``last_seq`` 0) far behind — 300 messages of
    9,000 characters — on a socket with a tiny receive buffer, and resets while the server
    streams the replay (checked: its connection is still replaying). The server drops that
    connection only; the student lost nothing (a later resume replays every message in
    order) and the canary is untouched."""
    relay = await start_relay(replay_events=5000, replay_bytes=64 * MiB, **LIFTED)
    canary = await Canary.open(relay)
    host, room = await relay.host()
    student, joined = await relay.student(room["room_id"], "Ann")
    await host.expect("room/update")
    await student.aclose()
    assert (await host.expect("room/update"))["data"]["users"][1]["status"] == "offline"
    body = "x" * 9000
    for i in range(300):
        await host.send("message/to_client", {"user_id": joined["user_id"],
                                              "content": f"{i}:{body}"})
    await host.ok("steps/table", {})

    known = set(relay.server.connections)
    wire = await Wire.connect(relay.server.relay_port, rcvbuf=4096)
    await wire.send_event("room/rejoin", {**joined, "last_seq": 0}, ref=1)
    first = [json.loads(t) for t in await wire.read(count=3)]
    assert [f["event"] for f in first] == ["room/join", "rtc/config", "message/to_client"]
    [conn] = attacker_conns(relay, known)
    assert conn.replaying, "the replay should still be streaming"
    assert (await host.expect("room/update"))["data"]["users"][1]["status"] == "online"
    wire.reset()
    await wait_for(lambda: conn not in relay.server.connections, what="the reset connection")
    assert (await host.expect("room/update"))["data"]["users"][1]["status"] == "offline"

    again = await relay.client(max_message_size=64 * MiB)
    frames = await again.call("room/rejoin", {**joined, "last_seq": 0}, timeout=20)
    assert frames[-1]["data"] == {"ok": True}
    numbers = [int(f["data"]["content"].split(":")[0]) for f in frames
               if f["event"] == "message/to_client"]
    assert numbers == list(range(300))
    await assert_alive(relay, canary)
    no_server_errors(caplog)


async def _sse_events(sock: trio.socket.SocketType, want: int, buf: bytes = b""
                      ) -> tuple[list[str], bytes]:
    """Read until ``want`` complete ``event: stats`` blocks arrived; (blocks, rest)."""
    events: list[str] = []
    with trio.fail_after(5):
        while True:
            while b"\n\n" in buf:
                block, _, buf = buf.partition(b"\n\n")
                if b"event: stats" in block:
                    events.append(block.decode())
            if len(events) >= want:
                return events, buf
            chunk = await sock.recv(65536)
            assert chunk, "the stream ended"
            buf += chunk


async def _open_sse(relay: Relay, room_id: int, key: str) -> tuple[trio.socket.SocketType,
                                                                   bytes]:
    sock = await tcp(relay.server.web_port)
    await send_all(sock, f"GET /roomstats/{room_id}/events?key={key} HTTP/1.1\r\n"
                         f"Host: 127.0.0.1\r\n\r\n".encode())
    head, rest = await read_head(sock)
    assert head.startswith(b"HTTP/1.1 200"), head
    return sock, rest


async def test_reset_mid_sse_stream(relay: Relay, caplog: pytest.LogCaptureFixture) -> None:
    """A stats event stream (§8.2) is reset after its first event, and the room then
    changes (so the server has something to write to the dead stream). The web port keeps
    serving: a fresh stream gets its first event and then the change made after it."""
    canary = await Canary.open(relay)
    host, room = await relay.host()
    sock, rest = await _open_sse(relay, room["room_id"], room["stats_key"])
    await _sse_events(sock, 1, rest)
    reset(sock)
    student, _ = await relay.student(room["room_id"], "Ann")
    await host.expect("room/update")

    fresh, rest = await _open_sse(relay, room["room_id"], room["stats_key"])
    [first], rest = await _sse_events(fresh, 1, rest)
    assert '"HELP"' not in first
    await student.ok("signal", {"value": "HELP"})
    await host.expect("signal")
    [change], _ = await _sse_events(fresh, 1, rest)
    assert '"HELP"' in change
    fresh.close()
    await assert_alive(relay, canary)
    no_server_errors(caplog)


@pytest.mark.parametrize("stage", ["mid-post-body", "pending-get-reset",
                                   "pending-get-half-close", "handshake-get-reset"])
async def test_polling_session_survives_resets(relay: Relay, caplog: pytest.LogCaptureFixture,
                                               stage: str) -> None:
    """§3.2 long-polling: one Engine.IO session spans many TCP connections, so a reset of
    one of them — in the middle of a ``POST`` body, while a ``GET`` long-poll is pending,
    a half-close of a pending ``GET``, or a reset before the handshake's answer — ends
    that TCP connection only. The session goes on and loses nothing: an event posted
    afterwards is answered on the next long-poll (its failed acknowledgement is the
    sentinel)."""
    canary = await Canary.open(relay)
    port = relay.server.relay_port
    if stage == "handshake-get-reset":
        sock = await tcp(port)
        await send_all(sock, poll_request("GET"))
        reset(sock)
    poller = await Poller.open(port)
    assert (await poller.post("40")).body == b"ok"
    assert (await poller.get_until(bool))[0].startswith('40{"sid":')
    session = relay.server.polling.sessions[poller.sid]
    if stage == "mid-post-body":
        sock = await tcp(port)
        await send_all(sock, poll_request("POST", poller.sid, b'42["room/cr', length=40))
        reset(sock)
    elif stage.startswith("pending-get"):
        sock = await tcp(port)
        await send_all(sock, poll_request("GET", poller.sid))
        await wait_for(lambda: session._polling, what="the long-poll to be pending")
        if stage.endswith("reset"):
            reset(sock)
        else:
            sock.shutdown(pysocket.SHUT_WR)
            await read_to_eof(sock)  # the server closes the abandoned poll
            sock.close()
        await wait_for(lambda: not session._polling, what="the poll to be dropped")
    assert (await poller.post('427["nope",{}]')).body == b"ok"
    got = await poller.get_until(lambda g: any(p.startswith("437") for p in g))
    assert got[-1].startswith('437[{"ok":false') and "unknown_event" in got[-1], got
    assert poller.sid in relay.server.polling.sessions
    await assert_alive(relay, canary)
    no_server_errors(caplog)


# ======================================================================================
# 2. JSON nested 1,000 and 10,000 deep
# ======================================================================================
DEPTHS = [1000, 10_000]


def deep_array(depth: int) -> str:
    return "[" * depth + "]" * depth


def deep_object(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


def deep_frame(depth: int) -> str:
    """A frame whose ``data`` is nested ``depth`` deep (so its ``ref`` cannot be read)."""
    return '{"event":"room/create","ref":5,"data":' + deep_object(depth) + "}"


async def expect_error(client: Client, code: str, event: str | None = None) -> dict[str, Any]:
    """The next frame is an ``error`` with ``code`` (and no ref, no seq)."""
    frame = await client.recv()
    assert frame["event"] == "error", frame
    assert frame["data"]["code"] == code, frame
    assert frame["data"]["event"] == event, frame
    assert "ref" not in frame and "seq" not in frame, frame
    return frame


@pytest.mark.parametrize("depth", DEPTHS)
async def test_deep_json_on_observer_unbound_and_bound(relay: Relay,
                                                       caplog: pytest.LogCaptureFixture,
                                                       depth: int) -> None:
    """§3.1: text that is not usable JSON is ``bad_json`` and the connection stays open.
    JSON nested 1,000 or 10,000 deep (arrays, objects, inside a frame's ``data``) must
    not crash the decoder's caller nor close anything, unbound or bound; the sentinel is a
    valid event answered afterwards on the same connection."""
    canary = await Canary.open(relay)
    for bound in (False, True):
        if bound:
            client, _ = await relay.host()
        else:
            client = await relay.client()
        for text in (deep_array(depth), deep_object(depth), deep_frame(depth)):
            await client.send_raw(text)
            await expect_error(client, "bad_json")
        if bound:
            await client.ok("steps/table", {})
        else:
            await fails(client, "message/to_mentor", {"content": "x"}, "not_in_room")
    await assert_alive(relay, canary)
    no_server_errors(caplog)


@pytest.mark.parametrize("depth", DEPTHS)
async def test_deep_json_while_rate_limited(start_relay: StartRelay,
                                            caplog: pytest.LogCaptureFixture,
                                            depth: int) -> None:
    """§2.2: a message arriving without a token is dropped, read only for its event name
    and ref. Reading a 1,000/10,000-deep message "only for its name" must not fail either:
    the drop is answered ``rate_limited`` (event ``null``: none could be read) and a later
    dropped frame with a ref still gets its failed acknowledgement (the sentinel)."""
    relay = await start_relay(rate_limit_rate=0.2, rate_limit_burst=2,
                              rate_limit_close_after=60)
    canary = await Canary.open(relay)
    client = await relay.client()
    for _ in range(2):  # the whole burst
        await fails(client, "nope", {}, "unknown_event")
    await client.send_raw(deep_frame(depth))
    await client.send_raw(deep_array(depth))
    await client.send("nope", {}, ref="after")
    await expect_error(client, "rate_limited", None)
    ack = await client.recv()
    assert ack == {"event": "ack", "ref": "after", "data": {"ok": False, "error": {
        "code": "rate_limited", "message": ack["data"]["error"]["message"]}}}, ack
    await assert_alive(relay, canary)
    no_server_errors(caplog)


async def sio_client(relay: Relay) -> Client:
    client = await relay.client(SIO_PATH)
    opened = await client.ws.get_message()
    assert opened.startswith("0{"), opened
    return client


async def sio_next(client: Client, timeout: float = 5.0) -> str:
    """The next Socket.IO packet that is not an Engine.IO ping."""
    with trio.fail_after(timeout):
        while True:
            packet = await client.ws.get_message()
            if packet != "2":
                return packet


def sio_event(packet: str) -> tuple[str, Any]:
    assert packet.startswith("42["), packet
    name, data = json.loads(packet[2:])
    return name, data


@pytest.mark.parametrize("depth", DEPTHS)
async def test_deep_json_on_socketio(relay: Relay, caplog: pytest.LogCaptureFixture,
                                     depth: int) -> None:
    """§3.2 before and after ``40``. Before it, ``42[<deep>]`` is ignored (any packet
    before ``40`` is) and ``40<deep>`` is an invalid connect payload (``44``, the session
    may retry); the sentinel is the ``40`` that then connects. After it, ``42[<deep>]`` is
    ``bad_json``, with the failed acknowledgement when an ack id was given, and a valid
    event is still acknowledged."""
    canary = await Canary.open(relay)
    client = await sio_client(relay)
    await client.send_raw("42" + deep_array(depth))
    await client.send_raw("427" + deep_array(depth))
    await client.send_raw("40" + deep_object(depth))
    assert await sio_next(client) == '44{"message":"Invalid connect payload"}'
    await client.send_raw("40")
    assert (await sio_next(client)).startswith('40{"sid":')

    for packet in ("42" + deep_array(depth), '42["room/create",' + deep_object(depth) + "]"):
        await client.send_raw(packet)
        name, data = sio_event(await sio_next(client))
        assert (name, data["code"], data["event"]) == ("error", "bad_json", None), data
    await client.send_raw("427" + deep_array(depth))
    name, data = sio_event(await sio_next(client))
    assert (name, data["code"]) == ("error", "bad_json"), data
    ack = await sio_next(client)
    assert ack.startswith("437[") and json.loads(ack[3:])[0]["error"]["code"] == "bad_json", ack
    await client.send_raw('429["room/create",{}]')
    assert sio_event(await sio_next(client))[0] == "room/created"
    assert sio_event(await sio_next(client))[0] == "rtc/config"
    assert sio_event(await sio_next(client))[0] == "room/update"
    assert await sio_next(client) == '439[{"ok":true}]'
    await assert_alive(relay, canary)
    no_server_errors(caplog)


async def ws_recv(client: Client) -> dict[str, Any]:
    with trio.fail_after(5):
        return json.loads(await client.ws.get_message())  # type: ignore[no-any-return]


@pytest.mark.parametrize("depth", DEPTHS)
async def test_deep_json_on_ws(relay: Relay, caplog: pytest.LogCaptureFixture,
                               depth: int) -> None:
    """§7: on ``/ws`` text that is not JSON is ``ERROR {"message":"Invalid JSON"}`` and the
    connection stays open (``signaling/ws_rooms.py`` parses with ``json.loads`` and catches
    ``RecursionError``); the sentinel is a ``CREATE_ROOM`` answered afterwards."""
    canary = await Canary.open(relay)
    client = await relay.client("/ws")
    for text in (deep_array(depth), deep_object(depth),
                 '{"type":"CREATE_ROOM","username":' + deep_array(depth) + "}"):
        await client.send_raw(text)
        assert await ws_recv(client) == {"type": "ERROR", "message": "Invalid JSON"}
    await client.send_raw(json.dumps({"type": "CREATE_ROOM", "username": "Host"}))
    created = await ws_recv(client)
    assert created["type"] == "ROOM_CREATED", created
    await assert_alive(relay, canary)
    no_server_errors(caplog)


async def test_nesting_just_below_the_decoder_limit(relay: Relay,
                                                    caplog: pytest.LogCaptureFixture) -> None:
    """The depths around the decoder's limit (the limit depends on how deep the server's
    stack already is) are the dangerous ones: a value decoded at one stack depth may have
    to be measured or re-encoded deeper down. An ICE candidate (relayed unchanged, §6.8,
    §7) nested 850-995 deep must get a documented outcome at every depth — relayed
    exactly, ``invalid_payload``/``too_large``, or ``bad_json`` — never ``internal``, a
    close or a crash. (Depth alone is not a documented limit: see the report.)"""
    canary = await Canary.open(relay)
    host, room = await relay.host()
    student, _ = await relay.student(room["room_id"], "Ann")
    await host.expect("room/update")
    outcomes: dict[int, str] = {}
    for depth in range(850, 1000, 5):
        candidate = '{"a":' + "[" * depth + "]" * depth + "}"
        await student.send_raw('{"event":"rtc/ice","ref":1,"data":{"candidate":'
                               + candidate + "}}")
        first = await student.recv()
        if first["event"] == "error" and "ref" not in first:
            assert first["data"]["code"] == "bad_json", first
            outcomes[depth] = "bad_json"
            continue
        if first["event"] == "ack":
            assert first["data"] == {"ok": True}, first
            relayed = await host.expect("rtc/ice")
            assert json.dumps(relayed["data"]["candidate"], separators=(",", ":")) == candidate
            outcomes[depth] = "relayed"
            continue
        assert first["event"] == "error", first
        assert first["data"]["code"] in ("invalid_payload", "too_large"), first
        assert (await student.recv())["event"] == "ack"
        outcomes[depth] = first["data"]["code"]
    assert outcomes[850] == "relayed" and outcomes[995] == "bad_json", outcomes
    print("rtc/ice outcomes by depth:", outcomes)

    ws_host = await relay.client("/ws")
    ws_user = await relay.client("/ws")
    await ws_host.send_raw(json.dumps({"type": "CREATE_ROOM", "username": "H"}))
    roomid = (await ws_recv(ws_host))["roomid"]
    await ws_user.send_raw(json.dumps({"type": "JOIN_ROOM", "roomid": roomid,
                                       "username": "U"}))
    assert (await ws_recv(ws_user))["type"] == "ROOM_JOINED"
    assert (await ws_recv(ws_host))["type"] == "USER_JOINED"
    for depth in range(850, 1000, 5):
        candidate = '{"a":' + "[" * depth + "]" * depth + "}"
        await ws_user.send_raw('{"type":"ICE_CANDIDATE","candidate":' + candidate + "}")
        # The sentinel: a user's STOP_SHARING reaches the host after whatever the candidate
        # caused, so the candidate's outcome is known by then.
        await ws_user.send_raw('{"type":"STOP_SHARING"}')
        got = await ws_recv(ws_host)
        if got["type"] == "ICE_CANDIDATE":
            assert json.dumps(got["candidate"], separators=(",", ":")) == candidate
            got = await ws_recv(ws_host)
        else:
            error = await ws_recv(ws_user)
            assert error["message"] in ("Invalid ICE candidate", "Invalid JSON"), error
        assert got == {"type": "STOP_SHARING", "username": "U"}, got
    await assert_alive(relay, canary)
    no_server_errors(caplog)


# ======================================================================================
# 3. Huge numbers, NaN and friends
# ======================================================================================
HUGE = "9" * 400  # 400 digits: a valid JSON integer far beyond any id


async def test_huge_integers_on_observer(relay: Relay,
                                         caplog: pytest.LogCaptureFixture) -> None:
    """§0/§3.1/§4.3/§5.2: a 400-digit ``ref`` is ``bad_frame`` (echoed without its ref);
    400-digit (and hugely negative) room and user ids are integers that name nothing
    (``room_not_found``, ``user_not_found``; ``forbidden`` for a ``room_id`` that is not
    the sender's); a hugely negative ``last_seq`` is ``invalid_payload`` and a huge one is
    "ahead" (``room/resync`` then the snapshot); ``1e400``, ``NaN``, ``Infinity`` and
    ``-Infinity`` are not JSON numbers (``bad_json``). Every answer leaves the connection
    open."""
    canary = await Canary.open(relay)
    host, room = await relay.host()
    student, joined = await relay.student(room["room_id"], "Ann")
    await host.expect("room/update")
    rid = room["room_id"]
    c = await relay.client()

    for ref in (HUGE, "-" + HUGE, "9007199254740992"):
        await c.send_raw('{"event":"room/create","ref":' + ref + "}")
        await expect_error(c, "bad_frame", "room/create")
    for room_id in (HUGE, "-" + HUGE):
        await c.send_raw('{"event":"room/join","ref":1,"data":{"room_id":' + room_id + "}}")
        error = await c.recv()
        assert (error["event"], error["data"]["code"], error["ref"]) == (
            "error", "room_not_found", 1), error
        assert (await c.recv())["data"]["ok"] is False
    for user_id in (HUGE, "-" + HUGE):
        await c.send_raw(f'{{"event":"room/rehost","ref":2,"data":{{"room_id":{rid},'
                         f'"user_id":{user_id},"token":"{room["token"]}"}}}}')
        error = await c.recv()
        assert (error["data"]["code"], error["ref"]) == ("user_not_found", 2), error
        assert (await c.recv())["data"]["ok"] is False
    await c.send_raw(f'{{"event":"room/rejoin","ref":3,"data":{{"room_id":{rid},'
                     f'"user_id":{joined["user_id"]},"token":"{joined["token"]}",'
                     f'"last_seq":-{HUGE}}}}}')
    error = await c.recv()
    assert (error["data"]["code"], error["ref"]) == ("invalid_payload", 3), error
    assert (await c.recv())["data"]["ok"] is False
    for text in ("1e400", "-1e400", "NaN", "Infinity", "-Infinity",
                 '{"event":"room/join","ref":4,"data":{"room_id":1e400}}',
                 '{"event":"room/join","ref":4,"data":{"room_id":NaN}}',
                 '{"event":"room/join","ref":NaN}'):
        await c.send_raw(text)
        await expect_error(c, "bad_json")

    # Bound: ids in payloads.
    await student.send_raw('{"event":"message/to_mentor","ref":5,"data":{"content":"x",'
                           '"room_id":' + HUGE + "}}")
    assert (await student.recv())["data"]["code"] == "forbidden"
    assert (await student.recv())["data"]["ok"] is False
    for event in ("message/to_client", "room/kill"):
        body = '"content":"x",' if event == "message/to_client" else ""
        for user_id in (HUGE, "-" + HUGE):
            await host.send_raw(f'{{"event":"{event}","ref":6,"data":{{{body}'
                                f'"user_id":{user_id}}}}}')
            assert (await host.recv())["data"]["code"] == "user_not_found"
            assert (await host.recv())["data"]["ok"] is False

    # A huge last_seq is simply ahead: resync and snapshot, on the student's behalf.
    again = await relay.client()
    await again.send_raw(f'{{"event":"room/rejoin","ref":7,"data":{{"room_id":{rid},'
                         f'"user_id":{joined["user_id"]},"token":"{joined["token"]}",'
                         f'"last_seq":{HUGE}}}}}')
    frames = []
    while not frames or frames[-1]["event"] != "ack":
        frames.append(await again.recv())
    assert [f["event"] for f in frames[:3]] == ["room/join", "rtc/config", "room/resync"]
    assert frames[2]["data"] == {"reason": "ahead"}
    assert frames[-1]["data"] == {"ok": True}
    assert await student.closed() == 4003
    await fails(c, "message/to_mentor", {"content": "still open"}, "not_in_room")
    await assert_alive(relay, canary)
    no_server_errors(caplog)


async def test_huge_numbers_on_socketio_and_ws(relay: Relay,
                                               caplog: pytest.LogCaptureFixture) -> None:
    """§3.2: an ack id of 400 digits is ``bad_frame`` without an acknowledgement (no id a
    client could read back); numbers that are not JSON are ``bad_json``. §7: on ``/ws`` a
    400-digit ``roomid`` is not a string (``INVALID_ROOM_ID`` "Room ID is required") and
    ``1e400``/``NaN`` are ``Invalid JSON``. Sentinels: a valid event answered after."""
    canary = await Canary.open(relay)
    sio = await sio_client(relay)
    await sio.send_raw("40")
    assert (await sio_next(sio)).startswith('40{"sid":')
    await sio.send_raw("42" + HUGE + '["room/create",{}]')
    name, data = sio_event(await sio_next(sio))
    assert (name, data["code"], data["event"]) == ("error", "bad_frame", "room/create"), data
    for packet in ('421["room/join",{"room_id":1e400}]', '421["room/join",NaN]'):
        await sio.send_raw(packet)
        name, data = sio_event(await sio_next(sio))
        assert (name, data["code"]) == ("error", "bad_json"), data
        assert json.loads((await sio_next(sio))[3:])[0]["error"]["code"] == "bad_json"
    await sio.send_raw('422["room/join",{"room_id":' + HUGE + "}]")
    name, data = sio_event(await sio_next(sio))
    assert (name, data["code"]) == ("error", "room_not_found"), data
    assert json.loads((await sio_next(sio))[3:])[0]["error"]["code"] == "room_not_found"

    ws = await relay.client("/ws")
    await ws.send_raw('{"type":"JOIN_ROOM","roomid":' + HUGE + ',"username":"u"}')
    assert await ws_recv(ws) == {"type": "INVALID_ROOM_ID", "message": "Room ID is required"}
    for text in ('{"type":"JOIN_ROOM","roomid":1e400}', '{"type":NaN}', "Infinity",
                 '{"type":"JOIN_ROOM","roomid":' + "9" * 5000 + "}"):
        await ws.send_raw(text)
        assert await ws_recv(ws) == {"type": "ERROR", "message": "Invalid JSON"}
    await ws.send_raw(json.dumps({"type": "CREATE_ROOM", "username": "Host"}))
    assert (await ws_recv(ws))["type"] == "ROOM_CREATED"
    await assert_alive(relay, canary)
    no_server_errors(caplog)


async def test_integer_beyond_python_digit_limit(relay: Relay,
                                                 caplog: pytest.LogCaptureFixture) -> None:
    """A 5,000-digit integer is valid RFC 8259 text, but beyond CPython's default
    ``int`` conversion limit (4,300 digits): the decoder refuses it, which must come out as
    a documented answer (``bad_json``: RFC 8259 §6 lets an implementation limit the range of
    numbers) and never as an exception."""
    canary = await Canary.open(relay)
    c = await relay.client()
    await c.send_raw('{"event":"room/join","ref":1,"data":{"room_id":' + "9" * 5000 + "}}")
    await expect_error(c, "bad_json")
    await fails(c, "message/to_mentor", {"content": "x"}, "not_in_room")
    await assert_alive(relay, canary)
    no_server_errors(caplog)


# ======================================================================================
# 4. The strict handshake (§2.1)
# ======================================================================================
def _head_of_size(size: int, path: str = "/observer") -> bytes:
    """A valid upgrade head of exactly ``size`` bytes (request line to the blank line)."""
    base = upgrade_head(path, extra=b"X-Pad: \r\n")
    head = upgrade_head(path, extra=b"X-Pad: " + b"a" * (size - len(base)) + b"\r\n")
    assert len(head) == size
    return head


def _pieces(data: bytes, size: int = 97) -> list[bytes]:
    return [data[i:i + size] for i in range(0, len(data), size)]


REFUSED_HANDSHAKES: list[tuple[str, bytes | list[bytes], int]] = [
    ("key with a non-ASCII byte", upgrade_head(key=b"dGhlIHNhbXBsZSBub25jZ\xe9=="), 400),
    ("key of 15 bytes", upgrade_head(key=base64.b64encode(b"x" * 15)), 400),
    ("key of 17 bytes", upgrade_head(key=base64.b64encode(b"x" * 17)), 400),
    ("key that is not base64", upgrade_head(key="this is not a key at all"), 400),
    ("key without padding", upgrade_head(key=KEY.rstrip("=")), 400),
    ("no key", upgrade_head(key=None), 400),
    ("two keys", upgrade_head(extra=f"Sec-WebSocket-Key: {KEY}\r\n"), 400),
    ("POST upgrade", upgrade_head(method="POST", extra="Content-Length: 0\r\n"), 400),
    ("HTTP/1.0 upgrade", upgrade_head(version="1.0"), 400),
    ("upgrade with a body", upgrade_head(extra="Content-Length: 5\r\n") + b"hello", 400),
    ("60 KB head in one write", upgrade_head(extra=b"X-Pad: " + b"a" * 60_000 + b"\r\n"), 400),
    ("16 KiB + 1 head in small pieces", _pieces(_head_of_size(16 * 1024 + 1)), 400),
    ("version 12", upgrade_head(ws_version="12"), 426),
]


@pytest.mark.parametrize(("request_bytes", "status"),
                         [pytest.param(r, s, id=name) for name, r, s in REFUSED_HANDSHAKES])
async def test_strict_handshake_refusals(relay: Relay, caplog: pytest.LogCaptureFixture,
                                         request_bytes: bytes | list[bytes],
                                         status: int) -> None:
    """§2.1 "The handshake is strict": only ``GET`` over HTTP/1.1 without a body, one
    ``Sec-WebSocket-Key`` that is the base64 of exactly 16 bytes, version 13, a head of at
    most 16 KiB however it arrives; anything else is 400 (another version: 426 with
    ``Sec-WebSocket-Version: 13``). Never a 101, never a crash; the server closes after its
    answer (EOF is read) and keeps serving everyone else."""
    canary = await Canary.open(relay)
    answer = await exchange(relay.server.relay_port, request_bytes)
    assert answer.status == status, answer
    assert "sec-websocket-accept" not in answer.headers, answer
    if status == 426:
        assert answer.headers.get("sec-websocket-version") == "13", answer
    assert not [c for c in relay.server.connections if c.ip == "127.0.0.1"]
    await assert_alive(relay, canary)
    no_server_errors(caplog)


@pytest.mark.parametrize("size", [1024, 16 * 1024])
async def test_handshake_limits_accept_what_they_should(relay: Relay, size: int) -> None:
    """The control for the refusals above: a valid head of 1 KiB or of exactly 16 KiB,
    sent in small pieces, is upgraded (101) and the connection then works."""
    sock = await tcp(relay.server.relay_port)
    for piece in _pieces(_head_of_size(size)):
        await send_all(sock, piece)
    head, rest = await read_head(sock)
    assert head.startswith(b"HTTP/1.1 101 "), head
    wire = Wire(sock, rest)
    await wire.send_event("nope", {}, ref=1)
    frames = await wire.read_json(2)
    assert frames[0]["data"]["code"] == "unknown_event" and frames[1]["event"] == "ack"
    wire.close()


# ======================================================================================
# 5. Floods: bounded memory, a documented close, and the canary gets everything
# ======================================================================================
RSS_LIMIT = 64 * MiB


async def under_flood(relay: Relay, canary: Canary, flood: Any, label: str) -> None:
    """Run ``flood`` (which must end by itself, asserting its close code) while the canary
    streams 20 messages; RSS (sampled every 20 ms, the server runs in this process) must
    stay within +64 MiB. Canary latencies are printed, never asserted."""
    base = rss_bytes()
    peak = base

    async def sample() -> None:
        nonlocal peak
        while True:
            peak = max(peak, rss_bytes())
            await trio.sleep(0.02)

    async with trio.open_nursery() as outer:
        outer.start_soon(sample)
        async with trio.open_nursery() as inner:
            inner.start_soon(flood)
            latencies = await canary.stream(20)
        outer.cancel_scope.cancel()
    after = rss_bytes()
    print(f"\n{label}: canary p99 {p99(latencies) * 1000:.1f} ms, max "
          f"{max(latencies) * 1000:.1f} ms; RSS +{(peak - base) / MiB:.1f} MiB at peak, "
          f"+{(after - base) / MiB:.1f} MiB after")
    assert peak - base < RSS_LIMIT, (peak - base) / MiB
    assert after - base < RSS_LIMIT, (after - base) / MiB


async def attacker(relay: Relay, known: set[Any]) -> Any:
    """The server's connection object of the one connection opened since ``known``."""
    await wait_for(lambda: len(attacker_conns(relay, known)) == 1, what="the attacker")
    return attacker_conns(relay, known)[0]


@pytest.mark.parametrize("opcode", [PING, PONG], ids=["pings-never-read", "unsolicited-pongs"])
async def test_flood_of_control_frames(start_relay: StartRelay,
                                       caplog: pytest.LogCaptureFixture, opcode: int) -> None:
    """§2.1/§2.2: control frames cost no message token but cannot be sent without bound. A
    client sending 125-byte pings as fast as it can while never reading (its receive buffer
    is 4 KiB), or a stream of unsolicited pongs, holds at most one pending pong and is
    closed with 4008 by the control-frame bucket once it has flooded for
    ``RATE_LIMIT_CLOSE_AFTER`` seconds (``WebSocketConnection._control_allowed``); the
    close frame is parsed intact after whatever pongs were on the wire."""
    relay = await start_relay(rate_limit_rate=50, rate_limit_burst=100,
                              rate_limit_close_after=1.0)
    canary = await Canary.open(relay)
    known = set(relay.server.connections)
    wire = await Wire.connect(relay.server.relay_port, rcvbuf=4096)
    conn = await attacker(relay, known)
    batch = masked(opcode, b"p" * 125) * 64

    async def flood() -> None:
        sent = 0
        with trio.fail_after(15):
            while conn.close_code is None:
                await wire.send(batch)
                sent += 64
        assert conn.close_code == 4008, conn.close_code
        assert await wire.closed(timeout=10) == 4008
        print(f"{sent} control frames sent, {wire.pongs} pongs read back")

    await under_flood(relay, canary, flood, "control frames")
    await assert_alive(relay, canary)
    no_server_errors(caplog)


async def test_flood_of_engineio_pings_never_read(start_relay: StartRelay,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    """§2.3/§3.2: each Engine.IO ``2`` + 1 MiB payload is answered ``3`` + the same MiB. A
    client that sends them within its rate limit and never reads makes the server hold
    those answers; they go through the bounded outgoing queue, so once it is full
    (``SEND_QUEUE_BYTES`` 2 MiB here) the session is closed with 4002 (no ``41``), and
    the close frame arrives whole after the answers already on the wire."""
    relay = await start_relay(send_queue_bytes=2 * MiB)
    canary = await Canary.open(relay)
    known = set(relay.server.connections)
    wire = await Wire.connect(relay.server.relay_port, SIO_PATH, rcvbuf=4096)
    conn = await attacker(relay, known)
    ping = masked(TEXT, b"2" + b"p" * MiB)

    async def flood() -> None:
        sent = 0
        with trio.fail_after(20):
            while conn.close_code is None and sent < 150:
                await wire.send(ping)
                sent += 1
        assert conn.close_code == 4002, (conn.close_code, sent)
        assert await wire.closed(timeout=15) == 4002
        assert wire.texts[0].startswith("0{"), wire.texts[0][:50]
        assert "41" not in wire.texts
        assert all(t == "3" + "p" * MiB for t in wire.texts[1:])
        print(f"{sent} pings of 1 MiB sent, {len(wire.texts) - 1} answers read back")

    await under_flood(relay, canary, flood, "Engine.IO pings")
    await assert_alive(relay, canary)
    no_server_errors(caplog)


async def test_polling_session_that_never_polls(start_relay: StartRelay,
                                                caplog: pytest.LogCaptureFixture) -> None:
    """§2 (intro) and §2.3 for long-polling: a session that ``POST``s Engine.IO pings with
    256 KiB payloads and never ``GET``s makes the server queue the ``3`` answers; the
    session's queue is bounded like a WebSocket's (2 MiB here), so it ends as a slow
    consumer (4002) and its sid is then unknown (``400`` code 1) to POST and GET alike."""
    relay = await start_relay(send_queue_bytes=2 * MiB)
    canary = await Canary.open(relay)
    port = relay.server.relay_port
    poller = await Poller.open(port)
    session = relay.server.polling.sessions[poller.sid]
    ping = "2" + "p" * (256 * 1024)
    unknown = {"code": 1, "message": "Session ID unknown"}

    async def flood() -> None:
        posts = 0
        with trio.fail_after(20):
            while posts < 100:
                answer = await poller.post(ping)
                if answer.status != 200:
                    break
                posts += 1
        assert session.close_code == 4002, (session.close_code, posts)
        assert (answer.status, answer.json()) == (400, unknown), answer
        answer = await exchange(port, poll_request("GET", poller.sid))
        assert (answer.status, answer.json()) == (400, unknown), answer
        print(f"{posts} pings of 256 KiB accepted before 4002")

    await under_flood(relay, canary, flood, "polling session never polled")
    await assert_alive(relay, canary)
    no_server_errors(caplog)


async def test_flood_of_empty_continuation_frames(relay: Relay,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    """§2.1 "A message of more than 1,000 frames closes with 1009": empty continuations add
    nothing to a message's size but one entry each to its reassembly. A message of exactly
    1,000 frames is still handled (the control: ``unknown_event`` and its ack); endless
    empty continuations after a non-final text frame are closed with 1009."""
    canary = await Canary.open(relay)
    known = set(relay.server.connections)
    wire = await Wire.connect(relay.server.relay_port)
    conn = await attacker(relay, known)
    empty = masked(CONTINUATION, b"", fin=False)
    await wire.send(text_frame('{"event":', fin=False) + empty * 998
                    + masked(CONTINUATION, b'"nope","ref":1}'))
    frames = await wire.read_json(2)
    assert frames[0]["data"]["code"] == "unknown_event" and frames[1]["event"] == "ack"

    async def flood() -> None:
        await wire.send(text_frame("x", fin=False))
        sent = 1
        with trio.fail_after(15):
            while conn.close_code is None:
                await wire.send(empty * 250)
                sent += 250
        assert conn.close_code == 1009
        assert await wire.closed() == 1009
        print(f"{sent} frames sent before the close")

    await under_flood(relay, canary, flood, "continuations")
    await assert_alive(relay, canary)
    no_server_errors(caplog)


async def test_reader_that_never_reads_in_a_busy_room(start_relay: StartRelay,
                                                      caplog: pytest.LogCaptureFixture
                                                      ) -> None:
    """§2.3: a student that stops reading while its host sends it 8 KB messages is closed
    with 4002 once its queue bound is exceeded (50 frames / 200 KB here) instead of
    holding memory; what reached it before the close is in order, and the close frame
    comes whole after it."""
    relay = await start_relay(send_queue_frames=50, send_queue_bytes=200_000,
                              replay_events=5000, replay_bytes=64 * MiB, **LIFTED)
    canary = await Canary.open(relay)
    host, room = await relay.host()
    known = set(relay.server.connections)
    wire = await Wire.connect(relay.server.relay_port, rcvbuf=4096)
    conn = await attacker(relay, known)
    await wire.send_event("room/join", {"room_id": room["room_id"], "name": "Slow"}, ref=1)
    joined = await wire.read_json(3)
    assert joined[-1] == {"event": "ack", "ref": 1, "data": {"ok": True}}, joined
    user_id = joined[0]["data"]["user_id"]
    await host.expect("room/update")

    async def flood() -> None:
        sent = 0
        with trio.fail_after(20):
            while conn.close_code is None:
                await host.send("message/to_client", {"user_id": user_id,
                                                      "content": f"{sent}:" + "x" * 8000})
                sent += 1
                if sent % 25 == 0:
                    await host.ok("steps/table", {})
        assert conn.close_code == 4002
        got = [json.loads(t) for t in await wire.read(15, until_closed=True, bufsize=MiB)]
        assert wire.close_code == 4002
        numbers = [int(f["data"]["content"].split(":")[0]) for f in got
                   if f["event"] == "message/to_client"]
        assert numbers == list(range(len(numbers))) and len(numbers) < sent
        update = await host.expect("room/update")
        assert update["data"]["users"][1]["status"] == "offline"
        print(f"{sent} messages sent, {len(numbers)} delivered before 4002")

    await under_flood(relay, canary, flood, "slow reader")
    await assert_alive(relay, canary)
    no_server_errors(caplog)


# ======================================================================================
# 6. A host snapshot larger than the outgoing queue bound
# ======================================================================================
async def _rehost(relay: Relay, room: dict[str, Any], *, rcvbuf: int | None = None) -> Wire:
    wire = await Wire.connect(relay.server.relay_port, rcvbuf=rcvbuf)
    await wire.send_event("room/rehost", {"room_id": room["room_id"], "user_id": 1,
                                          "token": room["token"]}, ref="rehost")
    return wire


def _check_host_snapshot(frames: list[dict[str, Any]], user_id: int, count: int) -> None:
    events = [f["event"] for f in frames]
    assert events == ["rtc/config", "room/update", "message/user", "ack"], events
    assert frames[-1] == {"event": "ack", "ref": "rehost", "data": {"ok": True}}
    data = frames[2]["data"]
    assert data["user_id"] == user_id
    numbers = [int(m["content"][:4]) for m in data["messages"]]
    assert numbers == list(range(count)), (len(numbers), numbers[:3], numbers[-3:])
    assert all(len(m["content"]) == 10_000 for m in data["messages"])


async def test_host_snapshot_over_8_mib(start_relay: StartRelay,
                                        caplog: pytest.LogCaptureFixture) -> None:
    """One student makes its conversation 1,000 messages of 10,000 characters, so the host
    snapshot's ``message/user`` is a single frame of over 10 MB, more than the 8 MiB
    outgoing queue bound (§2.3) and the 8 MiB replay bound (§5.1). Every fresh
    ``room/rehost`` (five of them) must still get its complete snapshot (§5.2, §5.3; every
    message of the list) and must not be closed with 4002: the snapshot is the attach's
    replay, streamed at the reader's pace (Appendix C). The replaced connections — two of
    them had not read their snapshot yet — get their 4003 close frame after the frame in
    flight, never inside it (wsproto parses each whole stream)."""
    relay = await start_relay(**LIFTED)
    canary = await Canary.open(relay)
    host, room = await relay.host()
    student, joined = await relay.student(room["room_id"], "Ann")
    await host.expect("room/update")
    await host.aclose()
    for i in range(1000):
        await student.send("message/to_mentor", {"content": f"{i:04d}" + "y" * 9996})
    frames = await student.call("signal", {"value": "HELP"}, timeout=30)
    assert frames[-1]["data"] == {"ok": True}, frames[-1]

    previous: Wire | None = None
    for attempt in range(5):
        slow = attempt in (1, 3)  # these do not read before they are replaced
        known = set(relay.server.connections)
        wire = await _rehost(relay, room, rcvbuf=4096 if slow else None)
        conn = await attacker(relay, known)
        if previous is not None:
            await previous.closed(timeout=20)
            assert previous.close_code == 4003, previous.close_code
            events = [json.loads(t)["event"] for t in previous.texts]
            # Whatever came before the close is whole frames of the snapshot, in order.
            assert events == ["rtc/config", "room/update", "message/user", "ack"][
                :len(events)], events
            print(f"replaced rehost {attempt - 1} had read {events}")
        if slow:
            # The precondition: its >10 MB snapshot frame is stuck half written.
            await wait_for(lambda c=conn: bool(c._partial) or c._writing,
                           what="a stuck write")
        else:
            _check_host_snapshot(await wire.read_json(4, timeout=30), joined["user_id"],
                                 1000)
        previous = wire
    assert previous is not None
    previous.close()
    await assert_alive(relay, canary)
    no_server_errors(caplog)


async def test_host_asks_twice_for_a_conversation_over_8_mib(start_relay: StartRelay) -> None:
    """§6.2 ``message/user``: the host asks twice in a row for a conversation of 1,000
    messages of 10,000 characters (over 10 MB of JSON, which one student controls). Both
    answers should arrive whole, and the host should stay connected: resuming after a 4002
    cannot bring an unsequenced answer back, so a client that asks again meets the same
    close again."""
    relay = await start_relay(**LIFTED)
    host, room = await relay.host()
    student, joined = await relay.student(room["room_id"], "Ann")
    await host.expect("room/update")
    await host.aclose()
    for i in range(1000):
        await student.send("message/to_mentor", {"content": f"{i:04d}" + "y" * 9996})
    await student.call("signal", {"value": "HELP"}, timeout=30)
    wire = await _rehost(relay, room)
    _check_host_snapshot(await wire.read_json(4, timeout=30), joined["user_id"], 1000)
    for ref in (1, 2):
        await wire.send_event("message/user", {"user_id": joined["user_id"]}, ref=ref)
    frames = await wire.read_json(4, timeout=30)
    assert [f["event"] for f in frames] == ["message/user", "ack"] * 2, (
        [f["event"] for f in frames], wire.close_code)
    assert all(len(f["data"]["messages"]) == 1000 for f in frames[::2])
    wire.close()


# ======================================================================================
# 7. Per-IP caps (§2.1)
# ======================================================================================
async def test_connections_per_ip_cap(start_relay: StartRelay,
                                      caplog: pytest.LogCaptureFixture) -> None:
    """``OBSERVER_MAX_CONNECTIONS_PER_IP`` = 3: the attacker's fourth upgrade is refused
    with 429 (no 101), on every WebSocket path, and so is a fourth connection opened as a
    long-polling session; the canary, from another address, is not
    counted with it. Once one of the three closes, a new upgrade from the attacker's
    address succeeds again (the count goes down)."""
    relay = await start_relay(max_connections_per_ip=3)
    canary = await Canary.open(relay)
    port = relay.server.relay_port
    held = [await Wire.connect(port) for _ in range(3)]
    for path in ("/observer", SIO_PATH, "/ws"):
        answer = await exchange(port, upgrade_head(path))
        assert answer.status == 429, answer
        assert "sec-websocket-accept" not in answer.headers
    # A long-polling session counts as a connection too (§2 intro).
    assert (await exchange(port, poll_request("GET"))).status == 429
    held[0].close()
    await wait_for(lambda: relay.server.listener.per_ip.get("127.0.0.1") == 2,
                   what="the closed connection to be counted out")
    held[0] = await Wire.connect(port)
    await held[0].send_event("nope", {}, ref=1)
    assert (await held[0].read_json(2))[1]["event"] == "ack"
    assert (await exchange(port, upgrade_head())).status == 429
    for wire in held:
        wire.close()
    await wait_for(lambda: "127.0.0.1" not in relay.server.listener.per_ip,
                   what="every attacker connection to be counted out")
    await assert_alive(relay, canary)
    no_server_errors(caplog)


async def test_rooms_per_ip_cap(start_relay: StartRelay,
                                caplog: pytest.LogCaptureFixture) -> None:
    """``OBSERVER_MAX_ROOMS_PER_IP`` = 2: the attacker's third ``room/create`` (from a
    fresh connection) fails ``rate_limited`` and creates nothing; after one ``room/close``
    a new ``room/create`` succeeds. The canary's room (another address) is not counted."""
    relay = await start_relay(max_rooms_per_ip=2)
    canary = await Canary.open(relay)
    first, _ = await relay.host()
    await relay.host()
    rooms_before = len(relay.server.hub.rooms)
    third = await relay.client()
    await fails(third, "room/create", {"name": "Third"}, "rate_limited")
    assert len(relay.server.hub.rooms) == rooms_before
    await first.ok("room/close", {})
    frames = await third.ok("room/create", {"name": "Third"})
    assert frames[0]["event"] == "room/created"
    fourth = await relay.client()
    await fails(fourth, "room/create", {"name": "Fourth"}, "rate_limited")
    await assert_alive(relay, canary)
    no_server_errors(caplog)


# ======================================================================================
# 8. Stats endpoints: guessing room ids (§8)
# ======================================================================================
async def test_stats_guessing_is_rate_limited(relay: Relay,
                                              caplog: pytest.LogCaptureFixture) -> None:
    """§8: a 404 (unknown room) or 403 (wrong key) counts as a failed join of the client
    IP (§4.3). With ``OBSERVER_JOIN_FAILURE_LIMIT`` = 20 (default), the first 20 wrong
    guesses answer 404/403 — among them room ids of 4,301 digits, which are unknown (404),
    never a 500 or a 4,300-digit conversion error — and from the 21st request on every
    stats request from that IP answers 429 without a lookup, even with the right key:
    JSON ``{"error":"rate_limited"}`` from the API and the event stream, an HTML page with
    ``Too many requests`` from the page. Another address is not affected, and the same
    count blocks ``room/join`` from the guessing IP."""
    canary = await Canary.open(relay)
    _, room = await relay.host()
    web = relay.server.web_port
    limit = relay.server.config.join_failure_limit
    assert limit == 20
    rid, key = room["room_id"], room["stats_key"]
    missing = rid + 1 if rid < 99_999_999 else rid - 1
    huge = "9" * 4301
    not_found, forbidden = {"error": "room_not_found"}, {"error": "forbidden"}
    guesses: list[tuple[str, int, dict[str, str] | bytes]] = [
        (f"/api/rooms/{huge}/stats?key={key}", 404, not_found),
        (f"/roomstats/{huge}?key={key}", 404, f"Room # {huge} not found!".encode()),
        (f"/roomstats/{huge}/events?key={key}", 404, not_found),
    ]
    while len(guesses) < limit:
        guesses += [(f"/api/rooms/{missing}/stats?key={key}", 404, not_found),
                    (f"/api/rooms/{rid}/stats?key=wrong{len(guesses)}", 403, forbidden),
                    (f"/roomstats/{rid}", 403, b"Access denied")]
    limited = {"error": "rate_limited"}
    blocked: list[tuple[str, int, dict[str, str] | bytes]] = [
        (f"/api/rooms/{rid}/stats?key={key}", 429, limited),
        (f"/roomstats/{rid}/events?key={key}", 429, limited),
        (f"/roomstats/{rid}?key={key}", 429, b"Too many requests"),
        (f"/api/rooms/{huge}/stats", 429, limited),
    ]
    for path, status, expected in guesses[:limit] + blocked:
        answer = await http_get(web, path)
        assert answer.status == status, (path[:80], answer)
        if isinstance(expected, bytes):
            assert answer.headers["content-type"].startswith("text/html"), answer.headers
            assert expected in answer.body, (path[:80], answer.body[:300])
        else:
            assert answer.json() == expected, (path[:80], answer)
    # The blocked address cannot join either; another address still reads its stats.
    guesser = await relay.client()
    await fails(guesser, "room/join", {"room_id": rid, "name": "Eve"}, "rate_limited")
    other = await http_get(web, f"/api/rooms/{rid}/stats?key={key}", src=CANARY_IP)
    assert other.status == 200 and other.json()["room_id"] == rid, other
    await assert_alive(relay, canary)
    no_server_errors(caplog)


# ======================================================================================
# 9. Running out of descriptors (EMFILE)
# ======================================================================================
def _is_open(fd: int) -> bool:
    try:
        fcntl.fcntl(fd, fcntl.F_GETFD)  # allocates no descriptor (os.listdir would)
    except OSError:
        return False
    return True


def _limit_leaving_free(free: int) -> int:
    """The RLIMIT_NOFILE that leaves exactly ``free`` unused descriptor numbers."""
    fd = count = 0
    while True:
        if not _is_open(fd):
            count += 1
            if count == free:
                return fd + 1
        fd += 1


def _readable(socks: list[trio.socket.SocketType]) -> list[trio.socket.SocketType]:
    """The sockets with something to read (``select`` allocates no descriptor)."""
    ready, _, _ = select.select(socks, [], [], 0)
    return [s for s in socks if s in ready]


async def test_emfile_backs_off_logs_rarely_and_recovers(relay: Relay,
                                                         caplog: pytest.LogCaptureFixture
                                                         ) -> None:
    """Out of descriptors (the soft RLIMIT_NOFILE lowered to leave exactly 3 free, inside
    this process where the server runs), ``accept`` fails with EMFILE. That is a state,
    not a failure: of 16 connections exactly 3 are accepted and upgraded, the others wait
    in the backlog; the accept loop keeps running and retrying, logs at most one line per
    second about it, existing connections (the canary) keep working, and once the
    accepted ones are closed a waiting connection is accepted (its 101 is the
    sentinel)."""
    caplog.set_level(logging.INFO, logger="relay.server")
    canary = await Canary.open(relay)
    port = relay.server.relay_port
    spare = [trio.socket.socket(trio.socket.AF_INET, trio.socket.SOCK_STREAM)
             for _ in range(16)]  # made before the limit: connect() needs no descriptor

    def warnings() -> list[logging.LogRecord]:
        return [r for r in caplog.records
                if r.name == "relay.server" and "cannot accept" in r.getMessage()]

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (_limit_leaving_free(3), hard))
        for sock in spare:
            await sock.connect(("127.0.0.1", port))
            await send_all(sock, upgrade_head(key=KEY))
        await wait_for(lambda: len(_readable(spare)) == 3, what="three upgrades")
        await wait_for(lambda: bool(warnings()), what="an EMFILE warning")
        await canary.check()  # existing connections are served meanwhile
        await trio.sleep(2.2)  # let the accept loop retry (and log) for a while
        accepted = _readable(spare)
        assert len(accepted) == 3, "the server accepted beyond its descriptors"
        waiting = [s for s in spare if s not in accepted]
        times = [r.created for r in warnings()]
        assert len(times) >= 2, "the accept loop should still be retrying"
        assert len(times) <= times[-1] - times[0] + 2, times
        assert all(b - a >= 0.9 for a, b in itertools.pairwise(times)), times
        # Free descriptors: a connection waiting in the backlog is accepted and upgraded.
        for sock in accepted:
            head, _ = await read_head(sock)
            assert head.startswith(b"HTTP/1.1 101 "), head
            sock.close()
        await wait_for(lambda: bool(_readable(waiting)), what="an upgrade after EMFILE")
        head, _ = await read_head(_readable(waiting)[0])
        assert head.startswith(b"HTTP/1.1 101 "), head
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
        for sock in spare:
            sock.close()
    print(f"{len(warnings())} EMFILE warnings")
    await assert_alive(relay, canary)
    no_server_errors(caplog)
