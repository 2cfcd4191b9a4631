"""``OBSERVER_TRUSTED_PROXIES`` (§1.3): who a request comes from behind a reverse proxy.

Every test client connects from 127.0.0.1 and plays a reverse proxy: it sends raw WebSocket
handshakes and Engine.IO polling requests with the ``X-Forwarded-For`` / ``X-Forwarded-Proto``
headers a proxy would add. With 127.0.0.1 trusted, the client IP is the last
``X-Forwarded-For`` entry that is not itself a trusted proxy — for the failed-join limit
(§4.3, and ``/ws`` ``JOIN_ROOM``, §7), the per-IP caps (§2.1) and the log lines (§1.1) — and
``X-Forwarded-Proto: https`` makes the device cookie ``Secure`` (§4.6). Without the setting,
or with the peer outside it, both headers are ignored: everything counts for 127.0.0.1.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest
import trio
from trio_websocket import connect_websocket_url

from tests.support import Client, Relay, StartRelay
from tests.test_seed_clients import COOKIE_FIELD, Http, Poller, RawSio

A = "203.0.113.7"  # two clients behind the same proxy
B = "198.51.100.9"
NO_ROOM = 10_000_000  # a room id that no test room has (checked where rooms exist)


def xff(value: str | None, proto: str | None = None) -> list[tuple[str, str]]:
    headers = []
    if value is not None:
        headers.append(("X-Forwarded-For", value))
    if proto is not None:
        headers.append(("X-Forwarded-Proto", proto))
    return headers


async def plain(relay: Relay, forwarded: str | None, path: str = "/observer") -> Client:
    return await relay.client(path, extra_headers=xff(forwarded))


async def join_fails(relay: Relay, forwarded: str | None, code: str,
                     room_id: int = NO_ROOM) -> None:
    """A fresh plain connection (behind the proxy) whose ``room/join`` fails with ``code``."""
    client = await plain(relay, forwarded)
    await client.fail("room/join", {"room_id": room_id, "name": "Eve"}, code)
    await client.aclose()


async def ws_join(relay: Relay, forwarded: str | None) -> dict[str, Any]:
    """``/ws`` ``JOIN_ROOM`` for an unknown room; the answer frame."""
    client = await plain(relay, forwarded, "/ws")
    await client.send_raw(json.dumps({"type": "JOIN_ROOM", "roomid": "zz9z", "username": "Eve"}))
    with trio.fail_after(3):
        answer = json.loads(await client.ws.get_message())
    await client.aclose()
    return dict(answer)


# -- the failed-join limit -------------------------------------------------------------------
async def test_forwarded_addresses_are_limited_separately(start_relay: StartRelay) -> None:
    relay = await start_relay(trusted_proxies=["127.0.0.1"], join_failure_limit=2)
    host, created = await relay.host()  # a real room, to show that the limit looks nothing up
    room_id = created["room_id"]
    assert room_id != NO_ROOM

    for _ in range(2):
        await join_fails(relay, A, "room_not_found")
    # A is at the limit, on any connection and framing, even for a room that exists.
    await join_fails(relay, A, "rate_limited")
    await join_fails(relay, A, "rate_limited", room_id)
    rehost = await plain(relay, A)
    await rehost.fail("room/rehost", {"room_id": room_id, "user_id": 1,
                                      "token": created["token"]}, "rate_limited")
    sio = await RawSio.open(relay.nursery, relay.url, headers=xff(A))
    await sio.emit("room/join", {"room_id": room_id, "name": "Eve"})
    assert [e["code"] for e in await sio.expect("error")] == ["rate_limited"]
    poller = await Poller(relay.server.relay_port, xff(A)).open()
    got = await poller.emit("room/join", {"room_id": room_id, "name": "Eve"})
    assert [(e, d["code"]) for e, d in got] == [("error", "rate_limited")]
    assert await ws_join(relay, A) == {"type": "INVALID_ROOM_ID",
                                       "message": "Too many failed attempts; wait a minute"}
    # Entries left of the client's are the client's own words: "6.6.6.6, A" is A; a
    # trusted hop after A ("A, 127.0.0.1") is skipped: A again.
    await join_fails(relay, f"6.6.6.6, {A}", "rate_limited", room_id)
    await join_fails(relay, f"{A}, 127.0.0.1", "rate_limited", room_id)

    # B, through the same TCP peer, has its own count: it gets the lookups A no longer gets.
    b = await plain(relay, B)
    await b.ok("room/join", {"room_id": room_id, "name": "Bea"})
    await host.expect("room/update")
    await join_fails(relay, f"{A}, {B}", "room_not_found")  # counts for B (1)
    assert await ws_join(relay, B) == {"type": "INVALID_ROOM_ID",  # B (2): the limit
                                       "message": "Room with given ID not found"}
    await join_fails(relay, B, "rate_limited", room_id)
    # Requests without the header come from the proxy itself: 127.0.0.1, not limited yet.
    await join_fails(relay, None, "room_not_found")
    me = await plain(relay, None)
    await me.ok("room/join", {"room_id": room_id, "name": "Me"})
    # An X-Forwarded-For that is not an address is not a client IP: the peer's is used.
    await join_fails(relay, "unknown", "room_not_found")
    await join_fails(relay, None, "rate_limited")


@pytest.mark.parametrize("trusted", [[], ["10.0.0.0/8", "::1"]], ids=["unset", "peer-untrusted"])
async def test_forwarded_for_is_ignored_unless_the_peer_is_trusted(
        start_relay: StartRelay, trusted: list[str]) -> None:
    relay = await start_relay(trusted_proxies=trusted, join_failure_limit=2)
    host, created = await relay.host()
    await join_fails(relay, A, "room_not_found")
    await join_fails(relay, B, "room_not_found")
    # Every failure counted for 127.0.0.1, whatever the header said.
    for forwarded in (A, B, "192.0.2.1", None):
        await join_fails(relay, forwarded, "rate_limited", created["room_id"])
    assert (await ws_join(relay, "192.0.2.1"))["message"] == (
        "Too many failed attempts; wait a minute")
    await host.aclose()


# -- per-IP caps and logs --------------------------------------------------------------------
async def test_per_ip_caps_count_the_forwarded_address(start_relay: StartRelay) -> None:
    relay = await start_relay(trusted_proxies=["127.0.0.0/8"], max_connections_per_ip=2,
                              max_rooms_per_ip=1)
    a1 = await plain(relay, A)
    a2 = await plain(relay, A)
    status, _, body = await Http.request(relay.server.relay_port, "GET", "/observer", [
        *xff(A), ("Upgrade", "websocket"), ("Connection", "Upgrade"),
        ("Sec-WebSocket-Key", "dGhlIHNhbXBsZSBub25jZQ=="), ("Sec-WebSocket-Version", "13")])
    assert (status, body) == (429, b'{"error":"too_many_connections"}')
    b1 = await plain(relay, B)  # B has its own count
    await a1.ok("room/create", {"name": "Teacher"})
    await a2.fail("room/create", {"name": "Teacher"}, "rate_limited")
    await b1.ok("room/create", {"name": "Teacher"})
    status, _, _ = await Http.request(relay.server.relay_port, "GET",
                                      "/socket.io/?EIO=4&transport=polling", xff(A))
    assert status == 429


async def test_log_lines_name_the_forwarded_address(start_relay: StartRelay,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.INFO, logger="relay")
    relay = await start_relay(trusted_proxies=["127.0.0.1"])
    client = await plain(relay, f"{A}, 127.0.0.1")
    await client.ok("room/create", {"name": "Teacher"})
    await client.aclose()
    poller = await Poller(relay.server.relay_port, xff(B)).open()
    await poller.post("1")
    untrusted = await start_relay(trusted_proxies=["10.0.0.0/8"])
    other = await untrusted.client(extra_headers=xff(A))
    await other.aclose()
    with trio.fail_after(3):
        while len([r for r in caplog.records if r.getMessage() == "connection closed"]) < 3:
            await trio.sleep(0.02)
    seen = [(r.getMessage(), getattr(r, "transport", None), getattr(r, "ip", None))
            for r in caplog.records if r.getMessage().startswith("connection ")]
    assert ("connection opened", "websocket", A) in seen
    assert ("connection closed", "websocket", A) in seen
    assert ("connection opened", "polling", B) in seen
    assert ("connection closed", "polling", B) in seen
    # The untrusted relay logged the TCP peer for the same header.
    assert seen.count(("connection opened", "websocket", "127.0.0.1")) == 1, seen


# -- X-Forwarded-Proto and the device cookie ------------------------------------------------
@pytest.mark.parametrize("trusted", [True, False])
async def test_forwarded_https_makes_the_cookie_secure(start_relay: StartRelay,
                                                      trusted: bool) -> None:
    relay = await start_relay(trusted_proxies=["127.0.0.1"] if trusted else [])
    port = relay.server.relay_port
    secure = trusted  # only a trusted proxy's word on the scheme counts

    async def upgrade(path: str, headers: list[tuple[str, str]]) -> list[str]:
        ws = await connect_websocket_url(relay.nursery, relay.url + path,
                                         extra_headers=headers)
        fields = [v.decode() for k, v in ws.handshake_headers if k == b"set-cookie"]
        await ws.aclose()
        return fields

    for path in ("/socket.io/?EIO=4&transport=websocket", "/observer"):
        for proto, want_secure in (("https", secure), ("http", False), (None, False),
                                   ("http, https", secure)):
            fields = await upgrade(path, xff(A, proto))
            assert len(fields) == 1, fields
            assert COOKIE_FIELD.match(fields[0]), fields
            assert fields[0].endswith("; Secure") is want_secure, (path, proto, fields)
            assert fields[0].count("Secure") == int(want_secure)
    poller = await Poller(port, xff(A, "https")).open()
    assert len(poller.set_cookies) == 1 and COOKIE_FIELD.match(poller.set_cookies[0])
    assert poller.set_cookies[0].endswith("; Secure") is secure
    plain_poll = await Poller(port, xff(A)).open()
    assert not plain_poll.set_cookies[0].endswith("Secure")
    # /ws sets no cookie; a request that carries a cookie gets none back.
    assert await upgrade("/ws", xff(A, "https")) == []
    value = COOKIE_FIELD.match(poller.set_cookies[0]).group(1)  # type: ignore[union-attr]
    assert await upgrade("/observer", [*xff(A, "https"),
                                       ("Cookie", f"observer_device={value}")]) == []


async def test_forwarded_for_on_several_header_lines(start_relay: StartRelay) -> None:
    """A proxy that adds its own ``X-Forwarded-For`` line after the client's (HAProxy's
    ``option forwardfor``) instead of appending to it: the lines form one list (RFC 9110
    §5.3), so the client's own line cannot name the client — on both ports."""
    relay = await start_relay(trusted_proxies=["127.0.0.1"], join_failure_limit=2)
    host, created = await relay.host()
    lines = [("X-Forwarded-For", "6.6.6.6"), ("X-Forwarded-For", A)]
    for _ in range(2):
        client = await relay.client(extra_headers=lines)
        await client.fail("room/join", {"room_id": NO_ROOM, "name": "Eve"}, "room_not_found")
        await client.aclose()
    await join_fails(relay, A, "rate_limited", created["room_id"])
    await join_fails(relay, "6.6.6.6", "room_not_found")
    web_port = relay.server.web_port
    target = f"/api/rooms/{created['room_id']}/stats?key={created['stats_key']}"
    assert (await Http.request(web_port, "GET", target, lines))[0] == 429
    assert (await Http.request(web_port, "GET", target, xff(A)))[0] == 429
    assert (await Http.request(web_port, "GET", target, xff("6.6.6.6")))[0] == 200
    # The web port's own 404s count for the client of the last line too.
    other = [("X-Forwarded-For", "6.6.6.6"), ("X-Forwarded-For", B)]
    for status in (404, 404, 429):
        assert (await Http.request(web_port, "GET", f"/api/rooms/{NO_ROOM}/stats?key=x",
                                   other))[0] == status
    await join_fails(relay, B, "rate_limited", created["room_id"])
    await host.aclose()
