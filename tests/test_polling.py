"""Engine.IO HTTP long-polling and the upgrade to WebSocket, packet-exact (§2, §3.2, §3.3).

Every request here is written byte by byte on a raw trio socket and every answer parsed by
hand (``tests/polling_support.py``), so that status lines, header fields and bodies are
checked exactly as the relay wrote them. The observer host is a plain-framing WebSocket
client (``tests/support.py``): its frames are sequenced, so it notices a gap or a
duplicate by itself, and its view of the student (``room/update``) is framing-independent.

Absence is always proven with a sentinel (an acknowledged event sent afterwards, whose
answer must be the next thing to arrive), never by waiting for nothing.
"""

from __future__ import annotations

import base64
import json
import re
from typing import Any

import pytest
import trio
from trio_websocket import ConnectionClosed, WebSocketConnection, connect_websocket_url

from tests.polling_support import (
    RS,
    Eio,
    HttpConn,
    Sio,
    build_request,
    eio_target,
    event_packet,
    one_request,
    parse_ack,
    parse_event,
    wait_until,
)
from tests.support import Client, Relay, StartRelay

OK = {"ok": True}
SID = re.compile(r"[A-Za-z0-9_-]{20}")
TEXT = "text/plain; charset=UTF-8"
CODE0 = b'{"code":0,"message":"Transport unknown"}'
CODE0_WS_ONLY = b'{"code":0,"message":"Only the websocket transport is supported"}'
CODE1 = b'{"code":1,"message":"Session ID unknown"}'
CODE2 = b'{"code":2,"message":"Bad handshake method"}'
CODE3 = b'{"code":3,"message":"Bad request"}'
CODE4 = b'{"code":4,"message":"Forbidden"}'
CODE5 = b'{"code":5,"message":"Unsupported protocol version"}'
KICKED = {"message": "You were removed from the room by the teacher."}


# -- helpers ---------------------------------------------------------------------------
async def student(relay: Relay, nursery: trio.Nursery, room_id: int, name: str = "Ann",
                  **extra: Any) -> tuple[Sio, dict[str, Any]]:
    """A polling student (background poller running) joined to ``room_id``; its
    ``room/join`` data (user_id, token)."""
    sio = await Sio(relay.server.relay_port).open(nursery)
    await sio.connect()
    assert await sio.call("room/join", {"room_id": room_id, "name": name, **extra}) == OK
    joined = await sio.next_event("room/join")
    return sio, joined


async def joined_student(relay: Relay, room_id: int, name: str = "Ann") -> tuple[Eio, int]:
    """A polling student joined to ``room_id`` with no GET pending and nothing queued."""
    eio = Eio(relay.server.relay_port)
    await eio.handshake()
    await eio.post_ok("40", event_packet("room/join", {"room_id": room_id, "name": name}, 1))
    packets = await eio.get_packets()
    assert packets[0].startswith("40{") and packets[-1] == '431[{"ok":true}]', packets
    joined = parse_event(packets[1])
    assert joined is not None and joined[0] == "room/join", packets
    return eio, joined[1]["user_id"]


async def status_update(host: Client, user_id: int) -> str:
    """The status of ``user_id`` in the host's next ``room/update``."""
    frame = await host.expect("room/update")
    users = {u["id"]: u for u in frame["data"]["users"]}
    return str(users[user_id]["status"])


def assert_refused(response: Any, status: int, body: bytes) -> None:
    assert (response.status, response.body) == (status, body), (response, response.body)
    assert response.header("content-type") == "application/json", response
    assert response.header("cache-control") == "no-store", response
    assert response.header("upgrade") is None


async def ws_for(relay: Relay, nursery: trio.Nursery, sid: str) -> WebSocketConnection:
    return await connect_websocket_url(nursery, relay.url + eio_target(sid, "websocket"))


async def sentinel_ack(eio: Eio, ack_id: int) -> list[str]:
    """POST an acknowledged event that fails harmlessly (``unknown_event``) and GET: the
    packets answered, which must end with its error and failed ack and hold nothing else
    unless something was queued before."""
    await eio.post_ok(event_packet("sentinel/none", {}, ack_id))
    packets = await eio.get_packets()
    error = parse_event(packets[-2])
    assert error is not None and error[0] == "error", packets
    assert (error[1]["code"], error[1]["event"]) == ("unknown_event", "sentinel/none")
    ack = parse_ack(packets[-1])
    assert ack is not None and ack[0] == ack_id and ack[1]["ok"] is False, packets
    return packets[:-2]


# -- the polling handshake ------------------------------------------------------------
async def test_handshake_answers_the_open_packet(start_relay: StartRelay) -> None:
    relay = await start_relay(sio_ping_interval=0.75, sio_ping_timeout=1.5,
                              max_message_size=123456)
    port = relay.server.relay_port
    sids = []
    for target in ("/socket.io/?EIO=4&transport=polling",
                   "/socket.io?EIO=4&transport=polling",
                   "/socket.io/?EIO=4&transport=polling&t=PAbCdEf&b64=1&custom=x"):
        response = await one_request(port, "GET", target)
        assert (response.status, response.reason) == (200, "OK"), response
        assert response.header("content-type") == TEXT
        assert response.header("cache-control") == "no-store"
        assert response.header("content-length") == str(len(response.body))
        assert response.body[:1] == b"0"
        packet = json.loads(response.body[1:])
        assert list(packet) == ["sid", "upgrades", "pingInterval", "pingTimeout", "maxPayload"]
        assert SID.fullmatch(packet["sid"]), packet
        assert packet["upgrades"] == ["websocket"]
        assert (packet["pingInterval"], packet["pingTimeout"], packet["maxPayload"]) == (
            750, 1500, 123456)
        assert packet["sid"] in relay.server.polling.sessions
        sids.append(packet["sid"])
    assert len(set(sids)) == 3 and set(relay.server.polling.sessions) == set(sids)


async def test_handshake_defaults(relay: Relay) -> None:
    eio = Eio(relay.server.relay_port)
    await eio.handshake()
    assert eio.open["pingInterval"] == 25000 and eio.open["pingTimeout"] == 20000
    assert eio.open["maxPayload"] == 4194304
    # The polling session is one connection (§2): /healthz counts it.
    response = await one_request(relay.server.relay_port, "GET", "/healthz")
    assert response.json()["connections"] == 1


async def test_handshake_sets_the_device_cookie_once(relay: Relay) -> None:
    """§4.6: the polling handshake sets the device cookie unless the request carries one."""
    response = await Eio(relay.server.relay_port).handshake()
    cookie = response.header("set-cookie")
    assert cookie is not None
    m = re.fullmatch(r"observer_device=([A-Za-z0-9_-]{22}); Path=/; Max-Age=31536000; "
                     r"HttpOnly; SameSite=Lax", cookie)
    assert m, cookie
    port = relay.server.relay_port
    again = await one_request(port, "GET", eio_target(),
                              [("Cookie", f"observer_device={m.group(1)}")])
    assert again.status == 200 and again.header("set-cookie") is None, again
    # Later requests of the session set nothing.
    eio = Eio(port)
    eio.sid = json.loads(again.body[1:])["sid"]
    assert (await eio.post("40")).header("set-cookie") is None
    assert (await eio.get()).header("set-cookie") is None


WS_KEY = [("Upgrade", "websocket"), ("Connection", "Upgrade"),
          ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="), ("Sec-WebSocket-Version", "13")]


@pytest.mark.parametrize(("query", "answer"), [
    ("?EIO=4&transport=websocket&sid=AAAAAAAAAAAAAAAAAAAA", CODE1),
    ("?EIO=3&transport=websocket", CODE5),
    ("?transport=websocket", CODE5),
    ("?EIO=4&transport=flashsocket", CODE0),
    ("?EIO=4", CODE0),
])
async def test_websocket_refusals(relay: Relay, query: str, answer: bytes) -> None:
    conn = await HttpConn.open(relay.server.relay_port)
    await conn.send(build_request("GET", "/socket.io/" + query, WS_KEY))
    response = await conn.read_response()
    assert_refused(response, 400, answer)
    assert response.status != 101
    await conn.aclose()


# -- POST and GET ---------------------------------------------------------------------
async def test_post_packets_are_handled_in_order_before_ok(relay: Relay) -> None:
    host, room = await relay.host()
    room_id = room["room_id"]
    eio = Eio(relay.server.relay_port)
    await eio.handshake()
    body = RS.join([
        "40",
        event_packet("room/join", {"room_id": room_id, "name": "Ann"}, 1),
        event_packet("message/to_mentor", {"content": "first"}, 2),
        event_packet("message/to_mentor", {"content": "second"}),
        event_packet("message/to_mentor", {"content": "third"}, 3),
    ])
    response = await eio.post(body=body.encode())
    assert (response.status, response.reason, response.body) == (200, "OK", b"ok")
    assert response.header("content-type") == TEXT
    assert response.header("cache-control") == "no-store"
    # "ok" came after the packets were handled: every answer is queued already, so one
    # GET returns them all, in order, joined by the record separator.
    response = await eio.get()
    assert response.status == 200 and response.header("content-type") == TEXT
    assert response.header("cache-control") == "no-store"
    packets = response.packets
    assert response.body.count(b"\x1e") == len(packets) - 1
    assert re.fullmatch(r'40\{"sid":"[A-Za-z0-9_-]{20}"\}', packets[0]), packets
    assert json.loads(packets[0][2:])["sid"] != eio.sid  # the Socket.IO sid is another one
    assert [(parse_event(p) or ("ack",))[0] for p in packets[1:]] == [
        "room/join", "rtc/config", "ack", "ack", "ack"], packets
    assert packets[3:] == ['431[{"ok":true}]', '432[{"ok":true}]', '433[{"ok":true}]']
    user_id = parse_event(packets[1])[1]["user_id"]
    assert await status_update(host, user_id) == "online"
    for content in ("first", "second", "third"):
        frame = await host.expect("message/to_mentor")
        assert frame["data"]["content"] == content and frame["data"]["sender"] == user_id


async def test_get_returns_queued_packets_then_waits(relay: Relay, nursery: trio.Nursery
                                                     ) -> None:
    host, room = await relay.host()
    eio, user_id = await joined_student(relay, room["room_id"])
    await host.expect("room/update")
    for i in range(3):
        await host.ok("message/to_client", {"user_id": user_id, "content": f"m{i}"})
    packets = await eio.get_packets()
    assert [parse_event(p)[0] for p in packets] == ["message/to_client"] * 3, packets
    assert [parse_event(p)[1]["content"] for p in packets] == ["m0", "m1", "m2"]

    # A GET with nothing queued waits; it is answered as soon as a packet is queued.
    answered: list[list[str]] = []

    async def long_poll() -> None:
        answered.append(await eio.get_packets())

    nursery.start_soon(long_poll)
    await wait_until(lambda: relay.server.polling.sessions[eio.sid]._polling)
    assert answered == []
    await host.ok("message/to_client", {"user_id": user_id, "content": "late"})
    await wait_until(lambda: bool(answered))
    assert [parse_event(p)[1]["content"] for p in answered[0]] == ["late"]


async def test_get_answer_fits_in_max_payload(start_relay: StartRelay) -> None:
    relay = await start_relay(max_message_size=2000)
    host, room = await relay.host()
    eio, user_id = await joined_student(relay, room["room_id"])
    await host.expect("room/update")
    for i in range(3):
        await host.ok("message/to_client", {"user_id": user_id, "content": f"{i}" * 800})
    contents: list[str] = []
    while len(contents) < 3:
        response = await eio.get()
        assert response.status == 200
        contents += [parse_event(p)[1]["content"] for p in response.packets]
        assert len(response.body) <= 2000, (len(response.body), len(response.packets))
    assert contents == [f"{i}" * 800 for i in range(3)]


async def test_abandoned_long_poll_loses_nothing(relay: Relay) -> None:
    """A client that gives up its pending GET (closes the connection) does not take
    packets with it, and its next GET is not an overlapping one."""
    host, room = await relay.host()
    eio, user_id = await joined_student(relay, room["room_id"])
    await host.expect("room/update")
    session = relay.server.polling.sessions[eio.sid]
    conn = await HttpConn.open(relay.server.relay_port)
    await conn.send(build_request("GET", eio_target(eio.sid)))
    await wait_until(lambda: session._polling)
    await conn.aclose()
    await wait_until(lambda: not session._polling)
    await host.ok("message/to_client", {"user_id": user_id, "content": "kept"})
    packets = await eio.get_packets()
    assert [parse_event(p)[1]["content"] for p in packets] == ["kept"]
    assert eio.sid in relay.server.polling.sessions


async def test_get_is_answered_with_a_ping_by_ping_interval(start_relay: StartRelay) -> None:
    relay = await start_relay(sio_ping_interval=0.4, sio_ping_timeout=5)
    eio = Eio(relay.server.relay_port)
    await eio.handshake()
    await eio.post_ok("40")
    assert (await eio.get_packets())[0].startswith("40{")
    for _ in range(3):
        started = trio.current_time()
        response = await eio.get()
        elapsed = trio.current_time() - started
        assert (response.status, response.body) == (200, b"2"), response
        assert elapsed <= 0.4 + 0.3, elapsed  # at the latest at pingInterval (+ a tick)
        await eio.post_ok("3")
    assert eio.sid in relay.server.polling.sessions


async def test_client_ping_is_answered_with_pong(relay: Relay) -> None:
    eio = Eio(relay.server.relay_port)
    await eio.handshake()
    await eio.post_ok("2", "2probe")
    assert await eio.get_packets() == ["3", "3probe"]


# -- refusals -----------------------------------------------------------------------------
REFUSALS = [
    # (method, query, body, status, answer)
    ("GET", "?EIO=4", None, 400, CODE0),
    ("GET", "?EIO=4&transport=", None, 400, CODE0),
    ("GET", "?EIO=4&transport=flashsocket", None, 400, CODE0),
    ("GET", "?EIO=4&transport=POLLING", None, 400, CODE0),
    ("GET", "?EIO=4&transport=polling&sid=AAAAAAAAAAAAAAAAAAAA", None, 400, CODE1),
    ("POST", "?EIO=4&transport=polling&sid=AAAAAAAAAAAAAAAAAAAA", b"40", 400, CODE1),
    ("GET", "?EIO=4&transport=polling&sid=", None, 400, CODE1),
    ("PUT", "?EIO=4&transport=polling", b"", 400, CODE2),
    ("DELETE", "?EIO=4&transport=polling", None, 400, CODE2),
    ("PATCH", "?EIO=4&transport=polling", b"40", 400, CODE2),
    ("POST", "?EIO=4&transport=polling", b"40", 400, CODE2),
    ("GET", "?transport=polling", None, 400, CODE5),
    ("GET", "?EIO=3&transport=polling", None, 400, CODE5),
    ("GET", "?EIO=5&transport=polling", None, 400, CODE5),
    ("GET", "?EIO=&transport=polling", None, 400, CODE5),
    # The first matching row wins (Appendix C).
    ("GET", "?EIO=3&transport=flashsocket", None, 400, CODE0),
    ("PUT", "?EIO=3&transport=polling&sid=AAAAAAAAAAAAAAAAAAAA", b"", 400, CODE1),
    ("POST", "?EIO=3&transport=polling", b"40", 400, CODE2),
    ("GET", "?transport=flashsocket&sid=AAAAAAAAAAAAAAAAAAAA", None, 400, CODE0),
]


@pytest.mark.parametrize(("method", "query", "body", "status", "answer"), REFUSALS)
async def test_refusal_table(relay: Relay, method: str, query: str, body: bytes | None,
                             status: int, answer: bytes) -> None:
    response = await one_request(relay.server.relay_port, method, "/socket.io/" + query,
                                 body=body)
    assert_refused(response, status, answer)
    assert relay.server.polling.sessions == {}


async def test_refusals_for_a_live_session(relay: Relay) -> None:
    """Rows that need a live session: another method (row 3, after row 2), a wrong version
    on a live sid (row 6), an unparsable POST body (not UTF-8: code 3)."""
    eio = Eio(relay.server.relay_port)
    await eio.handshake()
    port = relay.server.relay_port
    assert_refused(await one_request(port, "PUT", eio_target(eio.sid), body=b"40"), 400, CODE2)
    assert_refused(await one_request(port, "GET", eio_target(eio.sid, eio="3")), 400, CODE5)
    assert eio.sid in relay.server.polling.sessions  # neither ended the session
    # (Whether an unparsable body ends the session is not said; only the answer is.)
    assert_refused(await eio.post(body=b"42[\"a\",\"\xff\xfe\"]"), 400, CODE3)


async def test_polling_disabled(start_relay: StartRelay) -> None:
    relay = await start_relay(sio_polling=False)
    response = await one_request(relay.server.relay_port, "GET", eio_target())
    assert_refused(response, 400, CODE0_WS_ONLY)
    assert relay.server.polling.sessions == {}
    # The WebSocket transport is unaffected.
    ws = await connect_websocket_url(relay.nursery, relay.url + eio_target(transport="websocket"))
    packet = json.loads((await ws.get_message())[1:])
    assert packet["upgrades"] == []
    await ws.aclose()


async def test_origin_refused_with_403(start_relay: StartRelay, nursery: trio.Nursery) -> None:
    relay = await start_relay(allowed_origins=["http://good.example:8080"])
    port = relay.server.relay_port
    evil = [("Origin", "http://evil.example:8080")]
    assert_refused(await one_request(port, "GET", eio_target(), evil), 403, CODE4)
    assert_refused(await one_request(port, "OPTIONS", eio_target(), [
        *evil, ("Access-Control-Request-Method", "POST")]), 403, CODE4)
    # The port is exact; scheme and host are compared case-insensitively.
    for origin in ("http://good.example", "https://good.example:8080"):
        assert_refused(await one_request(port, "GET", eio_target(), [("Origin", origin)]),
                       403, CODE4)
    good = Eio(port, origin="HTTP://Good.Example:8080")
    await good.handshake()
    # No Origin (a non-browser client) is allowed.
    plain = Eio(port)
    await plain.handshake()
    # Every polling request of a session is checked, not only the handshake.
    assert_refused(await one_request(port, "GET", eio_target(plain.sid), evil), 403, CODE4)
    assert_refused(await one_request(port, "POST", eio_target(plain.sid), evil, b"40"),
                   403, CODE4)
    await plain.post_ok("40")
    # Row order: an unknown sid is code 1 before the Origin; the Origin before the version.
    assert_refused(await one_request(port, "GET", eio_target("A" * 20), evil), 400, CODE1)
    assert_refused(await one_request(port, "GET", eio_target(eio="3"), evil), 403, CODE4)
    # The upgrade of a polling session is refused the same way, and not upgraded.
    head = build_request("GET", eio_target(plain.sid, "websocket"), [
        *evil, ("Upgrade", "websocket"), ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="), ("Sec-WebSocket-Version", "13")])
    conn = await HttpConn.open(port)
    await conn.send(head)
    assert_refused(await conn.read_response(), 403, CODE4)
    await conn.aclose()
    assert set(relay.server.polling.sessions) == {good.sid, plain.sid}


# -- CORS --------------------------------------------------------------------------------
async def test_cors_for_an_allowed_origin(start_relay: StartRelay) -> None:
    relay = await start_relay(allowed_origins=["http://app.example:3000"])
    port = relay.server.relay_port
    origin = "http://app.example:3000"
    eio = Eio(port, origin=origin)

    def cors(response: Any) -> None:
        assert response.header("access-control-allow-origin") == origin, response
        assert response.header("access-control-allow-credentials") == "true", response
        assert response.header("vary") == "Origin", response
        assert response.header("cache-control") == "no-store", response

    cors(await eio.handshake())
    post = await eio.post("40")
    assert post.body == b"ok"
    cors(post)
    get = await eio.get()
    assert get.packets[0].startswith("40{")
    cors(get)

    preflight = await one_request(port, "OPTIONS", eio_target(eio.sid), [
        ("Origin", origin), ("Access-Control-Request-Method", "POST"),
        ("Access-Control-Request-Headers", "content-type, x-custom")])
    assert (preflight.status, preflight.reason, preflight.body) == (204, "No Content", b"")
    cors(preflight)
    assert preflight.header("access-control-allow-methods") == "GET, POST, OPTIONS"
    allowed = {h.strip().lower() for h in
               (preflight.header("access-control-allow-headers") or "").split(",")}
    assert {"content-type", "x-custom"} <= allowed, preflight
    # A preflight for the handshake (no sid) too.
    preflight = await one_request(port, "OPTIONS", eio_target(), [
        ("Origin", origin), ("Access-Control-Request-Method", "GET")])
    assert preflight.status == 204
    cors(preflight)
    assert preflight.header("access-control-allow-methods") == "GET, POST, OPTIONS"


async def test_no_cors_fields_without_origin(relay: Relay) -> None:
    response = await Eio(relay.server.relay_port).handshake()
    assert response.header("access-control-allow-origin") is None
    assert response.header("access-control-allow-credentials") is None


async def test_preflight_204_has_no_content_length(relay: Relay) -> None:
    preflight = await one_request(relay.server.relay_port, "OPTIONS", eio_target(), [
        ("Origin", "http://x.example"), ("Access-Control-Request-Method", "GET")])
    assert preflight.status == 204
    assert preflight.header("content-length") is None


# -- keep-alive -----------------------------------------------------------------------------
async def test_keep_alive_posts(relay: Relay) -> None:
    """Several POSTs of one session on one TCP connection."""
    eio = Eio(relay.server.relay_port)
    await eio.handshake()
    conn = await HttpConn.open(relay.server.relay_port)
    for packet in ("40", "2", "6", "2probe"):
        response = await eio.post(packet, conn=conn)
        assert (response.status, response.body) == (200, b"ok"), response
        assert not response.closes, response
    packets = await eio.get_packets()
    assert packets[0].startswith("40{") and packets[1:] == ["3", "3probe"], packets
    assert not await conn.closed_by_peer(0.05)
    await conn.aclose()


async def test_keep_alive_polls(relay: Relay) -> None:
    """The handshake, POSTs and long-polls of one session on one TCP connection."""
    port = relay.server.relay_port
    eio = Eio(port)
    conn = await HttpConn.open(port)
    response = await eio.handshake(conn)
    assert not response.closes
    await eio.post_ok("40", conn=conn)
    assert (await eio.get_packets(conn))[0].startswith("40{")
    await eio.post_ok("2", conn=conn)
    assert await eio.get_packets(conn) == ["3"]
    await eio.post_ok("2probe", conn=conn)
    assert await eio.get_packets(conn) == ["3probe"]
    assert not await conn.closed_by_peer(0.05)
    await conn.aclose()


# -- sessions that end -------------------------------------------------------------------
async def test_post_over_max_payload_is_413_and_ends_the_session(start_relay: StartRelay
                                                                 ) -> None:
    relay = await start_relay(max_message_size=1000)
    host, room = await relay.host()
    eio, user_id = await joined_student(relay, room["room_id"])
    assert await status_update(host, user_id) == "online"
    # A body of exactly maxPayload bytes is accepted.
    packet = event_packet("message/to_mentor", {"content": ""}, 5)
    exact = packet.replace('"content":""', '"content":"' + "x" * (1000 - len(packet)) + '"')
    assert len(exact.encode()) == 1000
    await eio.post_ok(exact)
    assert await eio.get_packets() == ['435[{"ok":true}]']
    assert len((await host.expect("message/to_mentor"))["data"]["content"]) == 1000 - len(
        packet)
    # One byte more: 413, and the session is over.
    response = await eio.post(exact + "x")
    assert response.status == 413, response
    assert await status_update(host, user_id) == "offline"
    assert_refused(await eio.get(), 400, CODE1)
    assert_refused(await eio.post("3"), 400, CODE1)
    assert eio.sid not in relay.server.polling.sessions


async def test_overlapping_get_is_400_and_ends_the_session(relay: Relay,
                                                           nursery: trio.Nursery) -> None:
    host, room = await relay.host()
    eio, user_id = await joined_student(relay, room["room_id"])
    await host.expect("room/update")
    first: list[Any] = []

    async def pending() -> None:
        first.append(await eio.get())

    nursery.start_soon(pending)
    await wait_until(lambda: relay.server.polling.sessions[eio.sid]._polling)
    assert_refused(await eio.get(), 400, CODE3)
    await wait_until(lambda: bool(first))
    assert first[0].status == 200 and first[0].body == b"1", first  # the pending one: close
    assert await status_update(host, user_id) == "offline"
    assert_refused(await eio.get(), 400, CODE1)
    assert eio.sid not in relay.server.polling.sessions


async def test_client_close_packet_ends_the_session(relay: Relay, nursery: trio.Nursery
                                                    ) -> None:
    host, room = await relay.host()
    eio, user_id = await joined_student(relay, room["room_id"])
    await host.expect("room/update")
    first: list[Any] = []

    async def pending() -> None:
        first.append(await eio.get())

    nursery.start_soon(pending)
    await wait_until(lambda: relay.server.polling.sessions[eio.sid]._polling)
    session = relay.server.polling.sessions[eio.sid]
    await eio.post_ok("1")
    await wait_until(lambda: bool(first))
    assert (first[0].status, first[0].body) == (200, b"1")
    assert session.close_code == 1000
    assert await status_update(host, user_id) == "offline"  # offline, not removed
    assert_refused(await eio.get(), 400, CODE1)
    assert eio.sid not in relay.server.polling.sessions
    assert session not in relay.server.connections


async def test_socketio_disconnect_packet_ends_the_session(relay: Relay) -> None:
    host, room = await relay.host()
    eio, user_id = await joined_student(relay, room["room_id"])
    await host.expect("room/update")
    await eio.post_ok("41")
    assert await status_update(host, user_id) == "offline"
    assert_refused(await eio.get(), 400, CODE1)


async def test_binary_packets_are_discarded(relay: Relay) -> None:
    host, room = await relay.host()
    eio, _ = await joined_student(relay, room["room_id"])
    await host.expect("room/update")
    binary = "b" + base64.b64encode(b"\x00\x01\x02binary").decode()
    await eio.post_ok(binary)
    await eio.post_ok(binary, event_packet("message/to_mentor", {"content": "after"}, 9),
                      binary)
    # Nothing answers the binary packets: the ack is the only packet.
    assert await eio.get_packets() == ['439[{"ok":true}]']
    frame = await host.expect("message/to_mentor")
    assert frame["data"]["content"] == "after"
    assert await sentinel_ack(eio, 10) == []


async def test_heartbeat_timeout_when_the_client_stops_polling(start_relay: StartRelay,
                                                               nursery: trio.Nursery) -> None:
    relay = await start_relay(sio_ping_interval=0.2, sio_ping_timeout=0.2)
    host, room = await relay.host()
    sio, joined = await student(relay, nursery, room["room_id"])
    user_id = joined["user_id"]
    session = relay.server.polling.sessions[sio.sid]
    assert await status_update(host, user_id) == "online"
    # Pings are answered for a while: the session lives on.
    await wait_until(lambda: sio.raw().count("2") >= 3)
    assert sio.sid in relay.server.polling.sessions
    sio.pause()
    await sio.stopped.wait()
    assert await status_update(host, user_id) == "offline"
    assert session.close_code == 4004
    assert_refused(await sio.eio.get(), 400, CODE1)
    assert_refused(await sio.eio.post("3"), 400, CODE1)
    assert session not in relay.server.connections
    # The student resumes with its token on a new session.
    again = await Sio(relay.server.relay_port).open(nursery)
    await again.connect()
    assert await again.call("room/rejoin", {"room_id": room["room_id"], "user_id": user_id,
                                            "token": joined["token"]}) == OK
    assert await status_update(host, user_id) == "online"


async def test_heartbeat_timeout_when_pongs_are_missing(start_relay: StartRelay,
                                                        nursery: trio.Nursery) -> None:
    relay = await start_relay(sio_ping_interval=0.2, sio_ping_timeout=0.3)
    host, room = await relay.host()
    sio, joined = await student(relay, nursery, room["room_id"])
    user_id = joined["user_id"]
    session = relay.server.polling.sessions[sio.sid]
    await host.expect("room/update")
    sio.answer_pings = False  # keeps polling, never pongs
    assert await status_update(host, user_id) == "offline"
    assert session.close_code == 4004
    await sio.stopped.wait()
    # The long-poll pending at the timeout is answered with the Engine.IO close.
    assert sio.raw()[-1] == "1" and "2" in sio.raw(), sio.raw()
    assert_refused(await sio.eio.get(), 400, CODE1)


async def test_heartbeat_timeout_without_gets_even_with_posts(start_relay: StartRelay,
                                                              nursery: trio.Nursery) -> None:
    relay = await start_relay(sio_ping_interval=0.2, sio_ping_timeout=0.2)
    host, room = await relay.host()
    eio, user_id = await joined_student(relay, room["room_id"])
    await host.expect("room/update")

    async def pong_forever() -> None:
        while True:
            response = await eio.post("3")
            if response.status != 200:
                return
            await trio.sleep(0.05)

    nursery.start_soon(pong_forever)
    assert await status_update(host, user_id) == "offline"  # (fails after 3 s)


async def test_slow_consumer_ends_the_session_and_the_student_resumes(
        start_relay: StartRelay, nursery: trio.Nursery) -> None:
    relay = await start_relay(send_queue_frames=20)
    host, room = await relay.host()
    eio = Eio(relay.server.relay_port)
    await eio.handshake()
    await eio.post_ok("40", event_packet("room/join", {"room_id": room["room_id"],
                                                         "name": "Ann"}, 1))
    joined = parse_event((await eio.get_packets())[1])[1]
    user_id = joined["user_id"]
    assert await status_update(host, user_id) == "online"
    session = relay.server.polling.sessions[eio.sid]
    # The client never GETs while the room sends more than its queue holds.
    for i in range(25):
        await host.send("message/to_client", {"user_id": user_id, "content": f"m{i}"})
    assert await status_update(host, user_id) == "offline"
    assert session.close_code == 4002
    assert_refused(await eio.get(), 400, CODE1)  # no 41: the session is simply gone
    assert eio.sid not in relay.server.polling.sessions
    # The student is offline, not removed: it resumes on a new session and loses nothing
    # (the snapshot carries every message, more than the queue holds: it is streamed).
    again = Eio(relay.server.relay_port)
    await again.handshake()
    await again.post_ok("40", event_packet("room/rejoin", {
        "room_id": room["room_id"], "user_id": user_id, "token": joined["token"]}, 1))
    received: list[str] = []
    while '431[{"ok":true}]' not in received:
        received += await again.get_packets()
    events = [parse_event(p) for p in received]
    contents = [e[1]["content"] for e in events if e is not None and e[0] == "message/to_client"]
    assert contents == [f"m{i}" for i in range(25)], received
    assert await status_update(host, user_id) == "online"


async def test_kick_sends_41_last(relay: Relay, nursery: trio.Nursery) -> None:
    host, room = await relay.host()
    eio, user_id = await joined_student(relay, room["room_id"])
    await host.expect("room/update")
    await host.ok("room/kill", {"user_id": user_id})
    packets = await eio.get_packets()
    assert packets == ['42["room/kicked",' + json.dumps(KICKED, separators=(",", ":")) + "]",
                       "41"], packets
    await wait_until(lambda: eio.sid not in relay.server.polling.sessions)
    assert_refused(await eio.get(), 400, CODE1)


async def test_room_close_sends_41_last(relay: Relay) -> None:
    host, room = await relay.host()
    eio, _ = await joined_student(relay, room["room_id"])
    await host.expect("room/update")
    await host.ok("room/close", {"room_id": room["room_id"]})
    packets = await eio.get_packets()
    assert packets == ['42["room/closed",{"message":"Room closed!"}]', "41"], packets
    await wait_until(lambda: eio.sid not in relay.server.polling.sessions)
    assert_refused(await eio.get(), 400, CODE1)


async def test_41_comes_after_everything_queued(start_relay: StartRelay) -> None:
    """Kicked with more queued than one answer holds: the 41 is the last packet answered,
    on a later poll."""
    relay = await start_relay(max_message_size=4000)
    host, room = await relay.host()
    eio, user_id = await joined_student(relay, room["room_id"])
    await host.expect("room/update")
    for i in range(8):
        await host.ok("message/to_client", {"user_id": user_id, "content": f"{i}" * 1000})
    await host.ok("room/kill", {"user_id": user_id})
    received: list[str] = []
    polls = 0
    while not received or received[-1] != "41":
        response = await eio.get()
        polls += 1
        assert response.status == 200, (received, response.body)
        received += response.packets
    assert polls >= 2  # (the queue did not fit in one answer)
    assert received.count("41") == 1
    contents = [parse_event(p)[1].get("content") for p in received[:-2]]
    assert contents == [f"{i}" * 1000 for i in range(8)]
    assert parse_event(received[-2])[0] == "room/kicked"
    assert_refused(await eio.get(), 400, CODE1)


async def test_replaced_session_gets_41(relay: Relay) -> None:
    host, room = await relay.host()
    eio = Eio(relay.server.relay_port)
    await eio.handshake()
    await eio.post_ok("40", event_packet("room/join", {"room_id": room["room_id"],
                                                         "name": "Ann"}, 1))
    packets = await eio.get_packets()
    joined = parse_event(packets[1])[1]
    await host.expect("room/update")
    newer = await relay.client()
    await newer.ok("room/rejoin", {"room_id": room["room_id"], "user_id": joined["user_id"],
                                   "token": joined["token"]})
    assert await eio.get_packets() == ["41"]
    await wait_until(lambda: eio.sid not in relay.server.polling.sessions)
    assert_refused(await eio.get(), 400, CODE1)


# -- rate limit: each packet of a POST is one message -----------------------------------------
async def test_each_posted_packet_costs_one_token(start_relay: StartRelay) -> None:
    relay = await start_relay(rate_limit_rate=0.001, rate_limit_burst=4,
                              rate_limit_close_after=60)
    eio = Eio(relay.server.relay_port)
    await eio.handshake()
    # 40 takes a token; pongs and noops do not (§2.2).
    await eio.post_ok("40", "3", "6", "3", *[event_packet("no/such", {}, i) for i in range(1, 6)])
    packets = await eio.get_packets()
    assert packets[0].startswith("40{")
    # Three tokens left: three events handled (unknown_event), two dropped unprocessed
    # (rate_limited: one error event, a failed acknowledgement each).
    seen = []
    for packet in packets[1:]:
        event, ack = parse_event(packet), parse_ack(packet)
        if event is not None:
            seen.append(("error", event[1]["code"]))
        else:
            assert ack is not None, packet
            seen.append((f"ack {ack[0]}", ack[1]["error"]["code"]))
    assert seen == [("error", "unknown_event"), ("ack 1", "unknown_event"),
                    ("error", "unknown_event"), ("ack 2", "unknown_event"),
                    ("error", "unknown_event"), ("ack 3", "unknown_event"),
                    ("error", "rate_limited"), ("ack 4", "rate_limited"),
                    ("ack 5", "rate_limited")], packets


async def test_flooding_closes_with_41_last(start_relay: StartRelay) -> None:
    relay = await start_relay(rate_limit_rate=0.001, rate_limit_burst=1,
                              rate_limit_close_after=0.2)
    eio = Eio(relay.server.relay_port)
    await eio.handshake()
    await eio.post_ok("40")
    assert (await eio.get_packets())[0].startswith("40{")
    session = relay.server.polling.sessions[eio.sid]
    await eio.post_ok(event_packet("no/such", {}))  # the first drop starts a flood period
    await trio.sleep(0.25)
    await eio.post_ok(event_packet("no/such", {}))  # a drop 0.2 s later: 4008
    assert session.close_code == 4008
    received: list[str] = []
    while not received or received[-1] != "41":
        response = await eio.get()
        assert response.status == 200, (received, response.body)
        received += response.packets
    assert [(parse_event(p) or (p, None))[0] for p in received] == ["error", "41"], received
    assert parse_event(received[0])[1]["code"] == "rate_limited"
    await wait_until(lambda: eio.sid not in relay.server.polling.sessions)
    assert_refused(await eio.get(), 400, CODE1)


# -- the upgrade ---------------------------------------------------------------------------
async def test_upgrade_packet_exact(relay: Relay, nursery: trio.Nursery) -> None:
    """2probe → 3probe, the pending GET answered with 6, 5: then everything goes on the
    WebSocket; polling on the upgraded session and a second upgrade are refused."""
    host, room = await relay.host()
    eio, user_id = await joined_student(relay, room["room_id"])
    await host.expect("room/update")
    session = relay.server.polling.sessions[eio.sid]
    pending: list[Any] = []

    async def long_poll() -> None:
        pending.append(await eio.get())

    nursery.start_soon(long_poll)
    await wait_until(lambda: session._polling)
    ws = await ws_for(relay, nursery, eio.sid)
    await ws.send_message("2probe")
    assert await ws.get_message() == "3probe"
    await wait_until(lambda: bool(pending))
    assert (pending[0].status, pending[0].body) == (200, b"6")
    # While probing, a second upgrade is refused; polling still works.
    conn = await HttpConn.open(relay.server.relay_port)
    await conn.send(build_request("GET", eio_target(eio.sid, "websocket"), [
        ("Upgrade", "websocket"), ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="), ("Sec-WebSocket-Version", "13")]))
    assert_refused(await conn.read_response(), 400, CODE3)
    await conn.aclose()
    await host.ok("message/to_client", {"user_id": user_id, "content": "queued"})
    await ws.send_message("5")
    message = parse_event(await ws.get_message())
    assert message is not None and message[1]["content"] == "queued"
    # From now on the WebSocket is the session.
    assert eio.sid not in relay.server.polling.sessions
    assert_refused(await eio.get(), 400, CODE3)
    assert_refused(await eio.post("3"), 400, CODE3)
    conn = await HttpConn.open(relay.server.relay_port)
    await conn.send(build_request("GET", eio_target(eio.sid, "websocket"), [
        ("Upgrade", "websocket"), ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="), ("Sec-WebSocket-Version", "13")]))
    assert_refused(await conn.read_response(), 400, CODE3)
    await conn.aclose()
    await ws.send_message(event_packet("message/to_mentor", {"content": "via ws"}, 3))
    assert await ws.get_message() == '433[{"ok":true}]'
    assert (await host.expect("message/to_mentor"))["data"]["content"] == "via ws"
    # Same session: the Engine.IO ping/pong works on the WebSocket; closing it makes the
    # student offline, and the sid is unknown afterwards.
    await ws.send_message("2")
    assert await ws.get_message() == "3"
    await ws.aclose()
    assert await status_update(host, user_id) == "offline"
    await wait_until(lambda: eio.sid not in relay.server.polling.upgraded)
    assert_refused(await eio.get(), 400, CODE1)


async def test_failed_probe_leaves_the_session_on_polling(start_relay: StartRelay,
                                                         nursery: trio.Nursery) -> None:
    """The probe's WebSocket goes away before the 5: the session carries on polling (the
    client falls back), nothing is lost, its heartbeat goes on."""
    relay = await start_relay(sio_ping_interval=0.3, sio_ping_timeout=2)
    host, room = await relay.host()
    eio, user_id = await joined_student(relay, room["room_id"])
    await host.expect("room/update")
    ws = await ws_for(relay, nursery, eio.sid)
    await ws.send_message("2probe")
    assert await ws.get_message() == "3probe"
    assert await eio.get_packets() == ["6"]
    await ws.aclose()
    await host.ok("message/to_client", {"user_id": user_id, "content": "after the probe"})
    packets = await eio.get_packets()
    assert [parse_event(p)[1]["content"] for p in packets] == ["after the probe"], packets
    assert await eio.get_packets() == ["2"]
    await eio.post_ok("3")
    assert await sentinel_ack(eio, 7) == []
    assert eio.sid in relay.server.polling.sessions


async def test_heartbeat_continues_after_the_upgrade(start_relay: StartRelay,
                                                     nursery: trio.Nursery) -> None:
    relay = await start_relay(sio_ping_interval=0.2, sio_ping_timeout=0.3)
    eio = Eio(relay.server.relay_port)
    await eio.handshake()
    await eio.post_ok("40")
    await eio.get_packets()
    ws = await ws_for(relay, nursery, eio.sid)
    await ws.send_message("2probe")
    assert await ws.get_message() == "3probe"
    await ws.send_message("5")
    seen: list[str] = []
    with trio.fail_after(2):
        while seen.count("2") < 3:
            seen.append(await ws.get_message())
            if seen[-1] == "2":
                await ws.send_message("3")
    await ws.aclose()


async def test_upgrade_while_events_flow_both_ways(relay: Relay, nursery: trio.Nursery
                                                   ) -> None:
    """The host keeps sending message/to_client and the student message/to_mentor (both
    numbered) while the student upgrades: every one arrives exactly once, in order, on
    whichever transport, and every acknowledgement exactly once."""
    host, room = await relay.host()
    sio, joined = await student(relay, nursery, room["room_id"])
    user_id = joined["user_id"]
    session = relay.server.polling.sessions[sio.sid]
    await host.expect("room/update")
    count = 80
    switch_at = 30
    ws_box: list[WebSocketConnection] = []
    upgraded = trio.Event()
    sent_via: dict[str, int] = {"polling": 0, "websocket": 0}

    async def host_sender() -> None:
        for i in range(count):
            await host.send("message/to_client", {"user_id": user_id, "content": f"h{i}"})
            await trio.sleep(0.004)

    async def ws_reader(ws: WebSocketConnection) -> None:
        while True:
            try:
                message = await ws.get_message()
            except ConnectionClosed:
                return
            sio.received.add("websocket", message)
            if message == "2":
                await ws.send_message("3")

    async def upgrade() -> None:
        ws = await ws_for(relay, nursery, sio.sid)
        await ws.send_message("2probe")
        assert await ws.get_message() == "3probe"
        # The client may still POST while the probe is under way.
        for j in range(3):
            await sio.eio.post_ok(event_packet("message/to_mentor", {"content": f"p{j}"},
                                               1000 + j))
            sent_via["polling"] += 1
        sio.pause()
        await sio.stopped.wait()
        assert "6" in sio.raw(), sio.raw()
        # The host keeps sending: its messages queue in the polling session, which nobody
        # polls any more; on the 5 they must go out on the WebSocket, first and in order.
        await trio.sleep(0.05)
        await wait_until(lambda: session.has_pending)
        await ws.send_message("5")
        ws_box.append(ws)
        nursery.start_soon(ws_reader, ws)
        upgraded.set()

    async def student_sender() -> None:
        for i in range(count):
            if i == switch_at:
                await upgrade()
            packet = event_packet("message/to_mentor", {"content": f"s{i}"}, 10 + i)
            if ws_box:
                await ws_box[0].send_message(packet)
                sent_via["websocket"] += 1
            else:
                await sio.eio.post_ok(packet)
                sent_via["polling"] += 1
            await trio.sleep(0.004)

    async with trio.open_nursery() as inner:
        inner.start_soon(host_sender)
        inner.start_soon(student_sender)
    expected_mentor = ([f"s{i}" for i in range(switch_at)] + [f"p{j}" for j in range(3)]
                       + [f"s{i}" for i in range(switch_at, count)])
    got_mentor: list[str] = []
    with trio.fail_after(5):
        while len(got_mentor) < len(expected_mentor):
            frame = await host.recv()
            if frame["event"] == "message/to_mentor":
                got_mentor.append(frame["data"]["content"])
            else:
                assert frame["event"] == "error" and False, frame  # nothing else expected
    assert got_mentor == expected_mentor
    acks_expected = [10 + i for i in range(switch_at)] + [1000, 1001, 1002] + [
        10 + i for i in range(switch_at, count)]

    def acks() -> list[int]:
        return [a[0] for a in (parse_ack(p) for p in sio.raw()) if a is not None and a[0] >= 10]

    def to_client() -> list[tuple[str, str]]:
        return [(via, parse_event(p)[1]["content"]) for via, p in sio.received.packets
                if (parse_event(p) or ("",))[0] == "message/to_client"]

    with trio.fail_after(5):
        while len(to_client()) < count or len(acks()) < len(acks_expected):
            await sio.received.changed.wait()
    assert [content for _, content in to_client()] == [f"h{i}" for i in range(count)]
    assert acks() == acks_expected
    assert all(parse_ack(p)[1] == OK for p in sio.raw() if parse_ack(p) is not None)
    vias = [via for via, _ in to_client()]
    assert "polling" in vias and "websocket" in vias, vias
    assert vias == sorted(vias, key=lambda v: v == "websocket"), vias  # no going back
    assert sent_via["polling"] > 0 and sent_via["websocket"] > 0
    # Sentinel: nothing else arrives after the last acknowledgement.
    ws = ws_box[0]
    before = len(sio.raw())
    await ws.send_message(event_packet("sentinel/none", {}, 5000))
    await sio.next(lambda p: p.startswith("435000["))
    tail = sio.received.packets[before:]
    assert [(via, (parse_event(p) or ("ack",))[0]) for via, p in tail] == [
        ("websocket", "error"), ("websocket", "ack")], tail
    # No error was sent to the student before the sentinel.
    assert [e for e, _ in sio.events() if e == "error"] == ["error"]
    await ws.aclose()


async def test_kick_during_the_upgrade_still_ends_with_41(relay: Relay,
                                                          nursery: trio.Nursery) -> None:
    host, room = await relay.host()
    eio, user_id = await joined_student(relay, room["room_id"])
    await host.expect("room/update")
    ws = await ws_for(relay, nursery, eio.sid)
    await ws.send_message("2probe")
    assert await ws.get_message() == "3probe"
    assert await eio.get_packets() == ["6"]  # the client pauses polling now
    await host.ok("room/kill", {"user_id": user_id})
    await ws.send_message("5")
    seen: list[str] = []
    with trio.fail_after(3):
        try:
            while True:
                seen.append(await ws.get_message())
        except ConnectionClosed as exc:
            code = exc.reason.code
    assert seen == ['42["room/kicked",' + json.dumps(KICKED, separators=(",", ":")) + "]",
                    "41"], seen
    assert code == 4001
