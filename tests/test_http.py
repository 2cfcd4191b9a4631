"""Plain HTTP on the relay port (§1.2), /healthz on both ports (§8.4), Origin (§2.1)."""

from __future__ import annotations

import base64
import json
import os
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import trio
from trio_websocket import ConnectionRejected, open_websocket_url

from fuzz.http_head import ScriptedStream, parse
from relay.transport.http import Request, send_answer, upgrade_refusal
from tests.support import Relay, StartRelay, wait_until

TEACH = "https://teach.example.org"


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


async def http(port: int, path: str, *, method: str = "GET", upgrade: bool = False,
               headers: dict[str, str] | None = None) -> Response:
    """One raw HTTP/1.1 request to 127.0.0.1; reads the answer's head (and body)."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: 127.0.0.1:{port}"]
    if upgrade:
        key = base64.b64encode(os.urandom(16)).decode()
        lines += ["Upgrade: websocket", "Connection: Upgrade", f"Sec-WebSocket-Key: {key}",
                  "Sec-WebSocket-Version: 13"]
    else:
        lines.append("Connection: close")
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    request = ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")
    with trio.fail_after(5):
        stream = await trio.open_tcp_stream("127.0.0.1", port)
        try:
            await stream.send_all(request)
            data = b""
            while b"\r\n\r\n" not in data:
                chunk = await stream.receive_some(65536)
                if not chunk:
                    break
                data += chunk
            head, _, body = data.partition(b"\r\n\r\n")
            status_line, *header_lines = head.decode("latin-1").split("\r\n")
            status = int(status_line.split(" ")[1])
            hdrs: dict[str, str] = {}
            for line in header_lines:
                name, _, value = line.partition(":")
                hdrs[name.strip().lower()] = value.strip()
            if status != 101:
                length = hdrs.get("content-length")
                while length is not None and len(body) < int(length):
                    chunk = await stream.receive_some(65536)
                    if not chunk:
                        break
                    body += chunk
            return Response(status, hdrs, body)
        finally:
            await stream.aclose()


def port_of(relay: Relay) -> int:
    return relay.server.relay_port


def assert_404_json(r: Response) -> None:
    assert r.status == 404, r
    assert r.headers.get("content-type", "").startswith("application/json"), r
    assert isinstance(r.json(), dict)
    assert "upgrade" not in r.headers
    assert r.headers.get("cache-control") == "no-store"


# -- relay port: 404s ------------------------------------------------------------------------
UNKNOWN_PATHS = ["/", "/nope", "/index.html", "/roomstats/12345678", "/metrics",
                 "/api/rooms/1/stats", "/observerx", "/observer/x", "/ws/x", "/healthzz",
                 "/HEALTHZ", "/socket.iox"]


async def test_unknown_path_is_404_json(relay: Relay) -> None:
    for path in UNKNOWN_PATHS:
        assert_404_json(await http(port_of(relay), path))


async def test_plain_get_on_websocket_path_is_404(relay: Relay) -> None:
    for path in ["/observer", "/observer/", "/observer?x=1", "/ws", "/ws/"]:
        assert_404_json(await http(port_of(relay), path))
    assert_404_json(await http(port_of(relay), "/observer", method="POST"))


async def test_upgrade_on_non_websocket_path_is_404(relay: Relay) -> None:
    for path in ["/nope", "/healthz", "/observerx", "/observer/x", "/chatroom/x", "/metrics"]:
        assert_404_json(await http(port_of(relay), path, upgrade=True))


async def test_chatroom_paths_are_404_when_switched_off(start_relay: StartRelay) -> None:
    """v2 §9.1: ``/chatroom``, ``/chatroom/`` and ``/`` are WebSocket endpoints unless
    ``OBSERVER_CHATROOM`` is off."""
    relay = await start_relay(chatroom=False)
    for path in ["/", "/chatroom", "/chatroom/"]:
        assert_404_json(await http(port_of(relay), path, upgrade=True))


async def rejected(url: str, origin: str | None = None) -> int:
    """Status of a refused handshake made by a real WebSocket client."""
    headers = [(b"Origin", origin.encode())] if origin is not None else None
    with pytest.raises(ConnectionRejected) as info:
        async with open_websocket_url(url, extra_headers=headers):
            pass
    return info.value.status_code


async def test_upgrade_on_non_websocket_path_with_client(relay: Relay) -> None:
    assert await rejected(relay.url + "/nope") == 404


async def test_chatroom_paths_plain_get_is_404_upgrade_is_101(relay: Relay) -> None:
    for path in ["/chatroom", "/chatroom/", "/chatroom?x=1", "/"]:
        assert_404_json(await http(port_of(relay), path))
        assert (await http(port_of(relay), path, upgrade=True)).status == 101


async def test_websocket_paths_upgrade(relay: Relay) -> None:
    for path in ["/observer", "/observer/", "/observer?room=1&x=y", "/ws", "/ws/", "/ws?x=1",
                 "/chatroom", "/"]:
        r = await http(port_of(relay), path, upgrade=True)
        assert r.status == 101, path
        assert r.headers["upgrade"].lower() == "websocket"
        assert "sec-websocket-protocol" not in r.headers


async def test_404_answers_are_fast_and_server_keeps_serving(relay: Relay) -> None:
    for _ in range(20):
        assert_404_json(await http(port_of(relay), "/nope"))
    c = await relay.client()
    await c.ok("room/create", {})


# -- /healthz ----------------------------------------------------------------------------
async def health(relay: Relay) -> dict[str, Any]:
    r = await http(port_of(relay), "/healthz")
    assert r.status == 200
    assert r.headers["content-type"].startswith("application/json")
    assert r.headers.get("cache-control") == "no-store"
    body = r.json()
    assert set(body) == {"status", "rooms", "connections"}
    assert body["status"] == "ok"
    return body


async def web_health(relay: Relay) -> dict[str, Any]:
    async with httpx.AsyncClient() as client:
        r = await client.get(relay.web + "/healthz")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("application/json")
    assert r.headers.get("cache-control") == "no-store"
    body = r.json()
    assert set(body) == {"status", "rooms", "connections"}
    assert body["status"] == "ok"
    return body


async def wait_counts(relay: Relay, rooms: int, connections: int) -> None:
    """Both ports report these counts (closing connections take a moment to go)."""
    async def counts_reached() -> bool:
        got = await health(relay)
        return (got["rooms"], got["connections"]) == (rooms, connections)

    await wait_until(counts_reached, timeout=4.0, interval=0.02)
    assert await web_health(relay) == {"status": "ok", "rooms": rooms,
                                       "connections": connections}


async def test_healthz_counts(relay: Relay) -> None:
    body = await health(relay)
    assert body == {"status": "ok", "rooms": 0, "connections": 0}
    assert await web_health(relay) == body
    host, room = await relay.host()
    await wait_counts(relay, 1, 1)
    student, _ = await relay.student(room["room_id"], "Ann")
    idle = await relay.client()  # unbound connections count too
    await wait_counts(relay, 1, 3)
    # /ws signaling rooms and connections count as well.
    ws = await relay.client("/ws")
    await ws.ws.send_message(json.dumps({"type": "CREATE_ROOM", "username": "T"}))
    assert json.loads(await ws.ws.get_message())["type"] == "ROOM_CREATED"
    await wait_counts(relay, 2, 4)
    # A second observer room, and a Socket.IO connection.
    other, _ = await relay.host("Other")
    sio = await relay.client("/socket.io/?EIO=4&transport=websocket")
    assert (await sio.ws.get_message()).startswith("0{")
    await wait_counts(relay, 3, 6)
    # Closing connections: an offline student keeps its room; the /ws room goes away.
    await student.aclose()
    await idle.aclose()
    await ws.aclose()
    await sio.aclose()
    await wait_counts(relay, 2, 2)
    # Closing a room removes it (v2, §6.1: the host's connection stays open).
    await other.ok("room/close", {})
    await wait_counts(relay, 1, 2)
    await other.aclose()
    await wait_counts(relay, 1, 1)
    await host.aclose()
    await wait_counts(relay, 1, 0)


async def test_healthz_query_string(relay: Relay) -> None:
    r = await http(port_of(relay), "/healthz?probe=1")
    assert r.status == 200 and r.json()["status"] == "ok"


async def test_web_port_refuses_upgrades(relay: Relay) -> None:
    for path in ("/healthz", "/observer", "/ws", "/nope"):
        r = await http(relay.server.web_port, path, upgrade=True)
        assert r.status == 404, (path, r)
        assert r.headers.get("cache-control") == "no-store"


async def test_web_port_unknown_path(relay: Relay) -> None:
    async with httpx.AsyncClient() as client:
        r = await client.get(relay.web + "/nope")
    assert r.status_code == 404
    assert r.headers.get("cache-control") == "no-store"


# -- Origin (§2.1) ------------------------------------------------------------------------
ALLOWED = [TEACH, "http://localhost:3000"]


GOOD_ORIGINS = [TEACH, "HTTPS://TEACH.EXAMPLE.ORG", "https://Teach.Example.Org",
                "hTTps://teach.example.ORG", "http://localhost:3000", "HTTP://LOCALHOST:3000"]
BAD_ORIGINS = [
    "https://teach.example.org:8443", "https://teach.example.org:444", "http://teach.example.org",
    "wss://teach.example.org", "https://evil.example.org", "https://teach.example.org.evil.com",
    "https://evilteach.example.org", "https://sub.teach.example.org", "null", "",
    "http://localhost", "http://localhost:3001", "http://localhost:30000",
    "https://localhost:3000", "http://127.0.0.1:3000", "teach.example.org",
]


async def test_matching_origin_is_accepted(start_relay: StartRelay) -> None:
    relay = await start_relay(allowed_origins=ALLOWED)
    for origin in GOOD_ORIGINS:
        for path in ("/observer", "/ws"):
            r = await http(port_of(relay), path, upgrade=True, headers={"Origin": origin})
            assert r.status == 101, (path, origin, r)
    c = await relay.client(extra_headers=[(b"Origin", b"HTTPS://TEACH.example.org")])
    await c.ok("room/create", {})


async def test_other_origin_is_refused_403(start_relay: StartRelay) -> None:
    relay = await start_relay(allowed_origins=ALLOWED)
    for origin in BAD_ORIGINS:
        for path in ("/observer", "/observer/", "/ws", "/socket.io/?EIO=4&transport=websocket"):
            r = await http(port_of(relay), path, upgrade=True, headers={"Origin": origin})
            assert r.status == 403, (path, origin, r)
            assert "sec-websocket-accept" not in r.headers
            assert r.headers.get("upgrade", "").lower() != "websocket"
            assert r.headers.get("cache-control") == "no-store"
    # Nothing was opened.
    assert (await health(relay))["connections"] == 0


async def test_refused_origin_with_client_status(start_relay: StartRelay) -> None:
    relay = await start_relay(allowed_origins=[TEACH])
    assert await rejected(relay.url + "/observer", "https://evil.example") == 403
    assert await rejected(relay.url + "/ws/", "https://evil.example") == 403


async def test_no_origin_header_is_allowed(start_relay: StartRelay) -> None:
    relay = await start_relay(allowed_origins=[TEACH])
    r = await http(port_of(relay), "/observer", upgrade=True)
    assert r.status == 101
    c = await relay.client()
    await c.ok("room/create", {})


async def test_any_origin_without_list_or_with_star(start_relay: StartRelay) -> None:
    for origins in ([], ["*"], [TEACH, "*"]):
        relay = await start_relay(allowed_origins=origins)
        r = await http(port_of(relay), "/observer", upgrade=True,
                       headers={"Origin": "https://anything.example:1234"})
        assert r.status == 101, origins


async def test_origin_does_not_apply_to_plain_http(start_relay: StartRelay) -> None:
    relay = await start_relay(allowed_origins=[TEACH])
    r = await http(port_of(relay), "/healthz", headers={"Origin": "https://evil.example"})
    assert r.status == 200
    r = await http(port_of(relay), "/nope", upgrade=True,
                   headers={"Origin": "https://evil.example"})
    assert r.status in (403, 404)


@pytest.mark.parametrize("which", [
    "relay", "web",
])
@pytest.mark.parametrize("request_bytes", [
    b"GARBAGE\r\n\r\n", b"GET /healthz HTTP/1.1\r\nBad Header\r\n\r\n",
])
async def test_malformed_request_answer_has_no_store(relay: Relay, which: str,
                                                     request_bytes: bytes) -> None:
    """Appendix C: Cache-Control: no-store on every HTTP answer of both ports."""
    port = relay.server.relay_port if which == "relay" else relay.server.web_port
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    await stream.send_all(request_bytes)
    data = b""
    with trio.fail_after(3):
        while chunk := await stream.receive_some(4096):
            data += chunk
    await stream.aclose()
    head = data.partition(b"\r\n\r\n")[0].decode("latin-1").lower()
    assert head.startswith("http/1.1 400")
    assert "cache-control: no-store" in head


# -- the request-head reader and the strict handshake (§2.1, Appendix D) ------------------
async def raw_exchange(port: int, request_bytes: bytes) -> bytes:
    """Send raw bytes to the relay port, read until it closes."""
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    data = b""
    try:
        await stream.send_all(request_bytes)
        with trio.fail_after(5):
            while chunk := await stream.receive_some(65536):
                data += chunk
    finally:
        await stream.aclose()
    return data


async def test_unsplittable_target_and_the_relay_survives(relay: Relay) -> None:
    """``urlsplit`` raises ValueError on ``//[`` (an unterminated IPv6 literal); that once
    escaped ``read_request`` and, through the accept loop, ended the process. ``//[`` is an
    origin-form path (no such endpoint); ``http://[`` an absolute form that cannot be read."""
    data = await raw_exchange(port_of(relay), b"GET //[ HTTP/1.1\r\nHost: a\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 404 ")
    data = await raw_exchange(port_of(relay), b"GET http://[ HTTP/1.1\r\nHost: a\r\n\r\n")
    assert data.startswith(b"HTTP/1.1 400 ")
    assert (await http(port_of(relay), "/healthz")).status == 200


@pytest.mark.parametrize(("target", "path", "query"), [
    (b"//observer", "//observer", ""), (b"/observer?a=1#frag", "/observer", "a=1"),
    (b"/a#b?c", "/a", ""), (b"http://relay:8000/observer?x", "/observer", "x"), (b"*", "*", ""),
])
def test_request_target_forms(target: bytes, path: str, query: str) -> None:
    request = scripted(b"GET " + target + b" HTTP/1.1\r\nHost: a\r\n\r\n")
    assert (request.path, request.query) == (path, query)


async def test_sixty_kilobyte_head_in_one_write_is_400(relay: Relay) -> None:
    head = (b"GET /observer HTTP/1.1\r\nHost: a\r\nX-Pad: " + b"a" * 60_000 + b"\r\n\r\n")
    data = await raw_exchange(port_of(relay), head)
    assert data.startswith(b"HTTP/1.1 400 ")


KEY = "dGhlIHNhbXBsZSBub25jZQ=="
BAD_HANDSHAKE: tuple[int, list[tuple[str, str]], bytes] = (
    400, [], b'{"error":"bad_websocket_handshake"}')


def scripted(head: bytes) -> Request:
    result, sent, _ = parse([head])
    assert isinstance(result, Request) and sent == b""
    return result


def handshake_head(*, method: str = "GET", version: str = "1.1", key: str = KEY,
                   ws_version: str = "13", extra: str = "") -> bytes:
    return (f"{method} /observer HTTP/{version}\r\nHost: a\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            f"Sec-WebSocket-Version: {ws_version}\r\n{extra}\r\n").encode("latin-1")



def test_valid_handshake_passes() -> None:
    request = scripted(handshake_head())
    assert upgrade_refusal(request) is None
    assert (request.http_version, request.header_counts["sec-websocket-key"],
            request.body_announced) == ("1.1", 1, False)


@pytest.mark.parametrize("head", [
    handshake_head(key="dGhlIHNhbXBsZSBub25jZ\u00e9=="),  # a non-ASCII byte (crashed accept_key)
    handshake_head(key="dGhlIHNhbXBsZSBub25jZR=="),  # decodes, but not canonical
    handshake_head(key="dGhlIHNhbXBsZSBub25jZQ"),  # unpadded
    handshake_head(key="x"),
    handshake_head(key=base64.b64encode(b"a" * 17).decode()),
    handshake_head(extra=f"Sec-WebSocket-Key: {KEY}\r\n"),  # twice, even if equal
    handshake_head(method="POST"),
    handshake_head(method="HEAD"),
    handshake_head(version="1.0"),
    handshake_head(extra="Content-Length: 5\r\n") + b"hello",
    handshake_head(extra="Transfer-Encoding: chunked\r\n") + b"0\r\n\r\n",
    b"GET /observer HTTP/1.1\r\nHost: a\r\nUpgrade: websocket\r\nSec-WebSocket-Version: 13\r\n"
    b"Sec-WebSocket-Key: " + KEY.encode() + b"\r\n\r\n",  # no Connection: upgrade
])
def test_handshake_refused_400(head: bytes) -> None:
    assert upgrade_refusal(scripted(head)) == BAD_HANDSHAKE


@pytest.mark.parametrize("ws_version", ["12", "8", "13, 13", "", "013"])
def test_handshake_other_version_is_426(ws_version: str) -> None:
    assert upgrade_refusal(scripted(handshake_head(ws_version=ws_version))) == (
        426, [("Sec-WebSocket-Version", "13")], b'{"error":"unsupported_websocket_version"}')


def test_handshake_body_of_zero_length_is_no_body() -> None:
    assert upgrade_refusal(scripted(handshake_head(extra="Content-Length: 0\r\n"))) is None


def test_pipelined_frames_are_kept_as_trailing() -> None:
    frame = b"\x81\x80\x00\x00\x00\x00"
    assert scripted(handshake_head() + frame).trailing == frame


def test_asks_upgrade() -> None:
    assert scripted(handshake_head()).asks_upgrade
    h2c = b"GET /healthz HTTP/1.1\r\nHost: a\r\nUpgrade: h2c\r\nConnection: Upgrade\r\n\r\n"
    assert not scripted(h2c).asks_upgrade and not scripted(h2c).is_upgrade
    key_only = b"GET /observer HTTP/1.1\r\nHost: a\r\nSec-WebSocket-Key: x\r\n\r\n"
    assert scripted(key_only).asks_upgrade and not scripted(key_only).is_upgrade


def test_send_answer_writes_extra_headers() -> None:
    refusal = upgrade_refusal(scripted(handshake_head(ws_version="8")))
    assert refusal is not None
    stream = ScriptedStream([])
    trio.run(send_answer, stream, *refusal)
    head = bytes(stream.sent).partition(b"\r\n\r\n")[0].decode("latin-1")
    assert head.startswith("HTTP/1.1 426 Upgrade Required\r\n")
    assert "\r\nSec-WebSocket-Version: 13" in head and "\r\nCache-Control: no-store" in head


async def test_handshake_state_is_not_kept_by_open_connections(relay: Relay) -> None:
    """The h11 connection and request head of an upgrade are dropped once the WebSocket is
    accepted: they were held by the routing frame for the connection's lifetime, a few KiB
    per idle connection (bench W3: 13 -> 18 KiB). Each kind of endpoint is checked while
    its connection is open and answering (a round trip proves the upgrade is done)."""
    import gc

    from relay.transport.http1 import HttpConnection

    observer = await relay.client("/observer")
    chatroom = await relay.client("/chatroom")
    try:
        await observer.ok("room/create", {"name": "W3"})
        hello = json.loads(await chatroom.ws.get_message())  # the seed shape greets first
        assert hello["type"] == "hello"
        gc.collect()
        held = [o for o in gc.get_objects() if isinstance(o, HttpConnection)]
        assert held == []
    finally:
        await observer.ws.aclose()
        await chatroom.ws.aclose()
