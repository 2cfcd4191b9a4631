"""§7 seed signaling dialect at /ws over real sockets (rules in depth: test_ws_rooms.py)."""

from __future__ import annotations

import re

import trio

from tests.support import Relay, StartRelay


async def test_full_sharing_flow(relay: Relay) -> None:
    host = await relay.client("/ws")
    await host.send_json({"type": "CREATE_ROOM", "username": "teacher"})
    created = await host.recv()
    assert created["type"] == "ROOM_CREATED" and re.fullmatch(r"[a-z0-9]{4}", created["roomid"])
    room = created["roomid"]
    user = await relay.client("/ws/")
    await user.send_json({"type": "JOIN_ROOM", "roomid": f"  {room.upper()} ", "username": "ann"})
    assert await user.recv() == {"type": "ROOM_JOINED", "roomid": room}
    assert await host.recv() == {"type": "USER_JOINED", "username": "ann"}

    await user.send_json({"type": "REQUEST_SHARING"})
    assert await host.recv() == {"type": "REQUEST_SHARING", "username": "ann"}
    await host.send_json({"type": "ALLOW_SHARING", "username": "ann"})
    assert await user.recv() == {"type": "ALLOW_SHARING"}
    await user.send_json({"type": "RCP_OFFER", "sdp": "v=0 offer"})
    assert await host.recv() == {"type": "RCP_OFFER", "sdp": "v=0 offer", "username": "ann"}
    await host.send_json({"type": "RCP_ANSWER", "username": "ann", "sdp": "v=0 answer"})
    assert await user.recv() == {"type": "RCP_ANSWER", "sdp": "v=0 answer"}
    cand = {"candidate": "candidate:1 1 udp 1 127.0.0.1 5000 typ host", "sdpMid": "0"}
    await user.send_json({"type": "ICE_CANDIDATE", "candidate": cand, "username": "ignored"})
    assert await host.recv() == {"type": "ICE_CANDIDATE", "candidate": cand, "username": "ann"}
    await host.send_json({"type": "ICE_CANDIDATE", "username": "ann", "candidate": cand})
    assert await user.recv() == {"type": "ICE_CANDIDATE", "candidate": cand}
    await host.send_json({"type": "STOP_SHARING", "username": "ann"})
    assert await user.recv() == {"type": "STOP_SHARING"}

    # Role checks and malformed input keep the connection.
    await user.send_json({"type": "RCP_ANSWER", "username": "ann", "sdp": "x"})
    assert await user.recv() == {"type": "ERROR", "message": "Only the host can send an answer"}
    await user.send_raw("not json")
    assert await user.recv() == {"type": "ERROR", "message": "Invalid JSON"}
    await user.send_json({"type": "RCP_OFFER", "sdp": "x" * (64 * 1024 + 1)})
    assert await user.recv() == {"type": "ERROR", "message": "Invalid SDP"}
    await host.nothing_before_sentinel()

    # The host leaving tells the user; closing the connection acts as LEAVE_ROOM.
    await host.aclose()
    assert await user.recv() == {"type": "HOST_LEFT"}
    await user.send_json({"type": "REQUEST_SHARING"})
    assert await user.recv() == {"type": "ERROR", "message": "The host has left the room"}


async def test_dead_peer_does_not_end_sender(relay: Relay) -> None:
    host = await relay.client("/ws")
    await host.send_json({"type": "CREATE_ROOM", "username": "t"})
    room = (await host.recv())["roomid"]
    user = await relay.client("/ws")
    await user.send_json({"type": "JOIN_ROOM", "roomid": room, "username": "u"})
    await user.recv()
    await host.recv()
    await user.aclose()
    assert await host.recv() == {"type": "USER_LEFT", "username": "u"}
    await host.send_json({"type": "ALLOW_SHARING", "username": "u"})
    assert await host.recv() == {"type": "ERROR", "message": "User not found"}
    await host.send_json({"type": "LEAVE_ROOM"})
    assert await host.recv() == {"type": "LEFT_ROOM"}


async def test_rate_limit_error_frame(start_relay: StartRelay,
                                     autojump_clock: trio.abc.Clock) -> None:
    """Virtual time: no token comes back while the frames are sent, whatever the load."""
    relay = await start_relay(rate_limit_rate=2, rate_limit_burst=2, rate_limit_close_after=60)
    c = await relay.client("/ws")
    for _ in range(6):
        await c.send_json({"type": "LEAVE_ROOM"})
    frames = [await c.recv() for _ in range(3)]
    assert frames.count({"type": "ERROR", "message": "You must join a room first"}) == 2
    assert {"type": "ERROR", "message": "Rate limit exceeded"} in frames
    await trio.sleep(1.0)  # tokens for the sentinel; the dropped frames got one error only
    await c.nothing_before_sentinel()


async def test_healthz_counts_signaling_rooms(relay: Relay) -> None:
    import httpx

    host = await relay.client("/ws")
    await host.send_json({"type": "CREATE_ROOM", "username": "t"})
    await host.recv()
    async with httpx.AsyncClient() as http:
        body = (await http.get(relay.url.replace("ws://", "http://") + "/healthz")).json()
    assert body["rooms"] == 1 and body["connections"] == 1


async def test_failed_joins_are_limited_and_shared_with_observer_joins(
        start_relay: StartRelay) -> None:
    relay = await start_relay(join_failure_limit=3)
    host = await relay.client("/ws")
    await host.send_json({"type": "CREATE_ROOM", "username": "t"})
    room = (await host.recv())["roomid"]
    guesser = await relay.client("/ws")
    for guess in ("zzz1", "zzz2"):
        await guesser.send_json({"type": "JOIN_ROOM", "roomid": guess, "username": "g"})
        assert await guesser.recv() == {"type": "INVALID_ROOM_ID",
                                       "message": "Room with given ID not found"}
    # An observer join's room_not_found counts for the same address (§4.3).
    observer = await relay.client()
    await observer.fail("room/join", {"room_id": 12345678}, "room_not_found")
    too_many = {"type": "INVALID_ROOM_ID", "message": "Too many failed attempts; wait a minute"}
    for guess in ("zzz3", room):  # at the limit even the right id, without a lookup
        await guesser.send_json({"type": "JOIN_ROOM", "roomid": guess, "username": "g"})
        assert await guesser.recv() == too_many
    await observer.fail("room/join", {"room_id": 12345678}, "rate_limited")
    await host.nothing_before_sentinel()
