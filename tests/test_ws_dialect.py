"""§7 seed signaling dialect at /ws over real sockets (rules in depth: test_ws_rooms.py)."""

from __future__ import annotations

import json
import re
from typing import Any

import trio

from tests.support import Client, Relay, StartRelay


async def ws(relay: Relay, path: str = "/ws") -> Client:
    return await relay.client(path)


async def send(c: Client, frame: dict[str, Any]) -> None:
    await c.send_raw(json.dumps(frame))


async def recv(c: Client) -> dict[str, Any]:
    with trio.fail_after(3):
        return json.loads(await c.ws.get_message())


async def test_full_sharing_flow(relay: Relay) -> None:
    host = await ws(relay)
    await send(host, {"type": "CREATE_ROOM", "username": "teacher"})
    created = await recv(host)
    assert created["type"] == "ROOM_CREATED" and re.fullmatch(r"[a-z0-9]{4}", created["roomid"])
    room = created["roomid"]
    user = await ws(relay, "/ws/")
    await send(user, {"type": "JOIN_ROOM", "roomid": f"  {room.upper()} ", "username": "ann"})
    assert await recv(user) == {"type": "ROOM_JOINED", "roomid": room}
    assert await recv(host) == {"type": "USER_JOINED", "username": "ann"}

    await send(user, {"type": "REQUEST_SHARING"})
    assert await recv(host) == {"type": "REQUEST_SHARING", "username": "ann"}
    await send(host, {"type": "ALLOW_SHARING", "username": "ann"})
    assert await recv(user) == {"type": "ALLOW_SHARING"}
    await send(user, {"type": "RCP_OFFER", "sdp": "v=0 offer"})
    assert await recv(host) == {"type": "RCP_OFFER", "sdp": "v=0 offer", "username": "ann"}
    await send(host, {"type": "RCP_ANSWER", "username": "ann", "sdp": "v=0 answer"})
    assert await recv(user) == {"type": "RCP_ANSWER", "sdp": "v=0 answer"}
    cand = {"candidate": "candidate:1 1 udp 1 127.0.0.1 5000 typ host", "sdpMid": "0"}
    await send(user, {"type": "ICE_CANDIDATE", "candidate": cand, "username": "ignored"})
    assert await recv(host) == {"type": "ICE_CANDIDATE", "candidate": cand, "username": "ann"}
    await send(host, {"type": "ICE_CANDIDATE", "username": "ann", "candidate": cand})
    assert await recv(user) == {"type": "ICE_CANDIDATE", "candidate": cand}
    await send(host, {"type": "STOP_SHARING", "username": "ann"})
    assert await recv(user) == {"type": "STOP_SHARING"}

    # Role checks and malformed input keep the connection.
    await send(user, {"type": "RCP_ANSWER", "username": "ann", "sdp": "x"})
    assert await recv(user) == {"type": "ERROR", "message": "Only the host can send an answer"}
    await user.send_raw("not json")
    assert await recv(user) == {"type": "ERROR", "message": "Invalid JSON"}
    await send(user, {"type": "RCP_OFFER", "sdp": "x" * (64 * 1024 + 1)})
    assert await recv(user) == {"type": "ERROR", "message": "Invalid SDP"}
    await host.silent()

    # The host leaving tells the user; closing the connection acts as LEAVE_ROOM.
    await host.aclose()
    assert await recv(user) == {"type": "HOST_LEFT"}
    await send(user, {"type": "REQUEST_SHARING"})
    assert await recv(user) == {"type": "ERROR", "message": "The host has left the room"}


async def test_dead_peer_does_not_end_sender(relay: Relay) -> None:
    host = await ws(relay)
    await send(host, {"type": "CREATE_ROOM", "username": "t"})
    room = (await recv(host))["roomid"]
    user = await ws(relay)
    await send(user, {"type": "JOIN_ROOM", "roomid": room, "username": "u"})
    await recv(user)
    await recv(host)
    await user.aclose()
    assert await recv(host) == {"type": "USER_LEFT", "username": "u"}
    await send(host, {"type": "ALLOW_SHARING", "username": "u"})
    assert await recv(host) == {"type": "ERROR", "message": "User not found"}
    await send(host, {"type": "LEAVE_ROOM"})
    assert await recv(host) == {"type": "LEFT_ROOM"}


async def test_rate_limit_error_frame(start_relay: StartRelay) -> None:
    relay = await start_relay(rate_limit_rate=2, rate_limit_burst=2, rate_limit_close_after=60)
    c = await ws(relay)
    for _ in range(6):
        await send(c, {"type": "LEAVE_ROOM"})
    frames = [await recv(c) for _ in range(3)]
    assert frames.count({"type": "ERROR", "message": "You must join a room first"}) == 2
    assert {"type": "ERROR", "message": "Rate limit exceeded"} in frames
    await c.silent()


async def test_healthz_counts_signaling_rooms(relay: Relay) -> None:
    import httpx

    host = await ws(relay)
    await send(host, {"type": "CREATE_ROOM", "username": "t"})
    await recv(host)
    async with httpx.AsyncClient() as http:
        body = (await http.get(relay.url.replace("ws://", "http://") + "/healthz")).json()
    assert body["rooms"] == 1 and body["connections"] == 1


async def test_failed_joins_are_limited_and_shared_with_observer_joins(
        start_relay: StartRelay) -> None:
    relay = await start_relay(join_failure_limit=3)
    host = await ws(relay)
    await send(host, {"type": "CREATE_ROOM", "username": "t"})
    room = (await recv(host))["roomid"]
    guesser = await ws(relay)
    for guess in ("zzz1", "zzz2"):
        await send(guesser, {"type": "JOIN_ROOM", "roomid": guess, "username": "g"})
        assert await recv(guesser) == {"type": "INVALID_ROOM_ID",
                                       "message": "Room with given ID not found"}
    # An observer join's room_not_found counts for the same address (§4.3).
    observer = await relay.client()
    await observer.fail("room/join", {"room_id": 12345678}, "room_not_found")
    too_many = {"type": "INVALID_ROOM_ID", "message": "Too many failed attempts; wait a minute"}
    for guess in ("zzz3", room):  # at the limit even the right id, without a lookup
        await send(guesser, {"type": "JOIN_ROOM", "roomid": guess, "username": "g"})
        assert await recv(guesser) == too_many
    await observer.fail("room/join", {"room_id": 12345678}, "rate_limited")
    await host.silent()
